//! What the controller says about an IPAddressPool in its status, computed from the allocator's
//! answers alone, and about a configuration object, from its [`Verdict`] (pure: the loop
//! writes either when it differs from what the object has).
//!
//! ```text
//!   usage (assigned / available per family) ─┐
//!   why the spec is unusable, if it is ─────┼─► pool_status ─► IPAddressPoolStatus
//!   pools sharing addresses with it ────────┤     counts, conditions Ready, Valid, Overlapping
//!   the status it has now (transition times)┘
//! ```

use herald_api::{
    IPAddressPoolStatus,
    conditions::{ConfigurationStatus, READY, reasons},
};
use herald_domain::Family;
use herald_ipam::PoolUsage;
use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

use crate::judge::Verdict;

/// What the allocator and the pool check say about one pool.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolFacts<'a> {
    pub(crate) name: &'a str,
    pub(crate) usage: &'a PoolUsage,
    /// Why its spec cannot be used, when it cannot.
    pub(crate) invalid: Option<&'a str>,
    /// Pairs of pools that share addresses (any pools; those naming this one count).
    pub(crate) overlaps: &'a [(String, String)],
}

/// The status pool `facts.name` should have. A condition whose status is what it was in
/// `previous` keeps its transition time; one that is new or changed gets `now`.
pub(crate) fn pool_status(
    facts: PoolFacts<'_>,
    previous: &IPAddressPoolStatus,
    now: Timestamp,
) -> IPAddressPoolStatus {
    let count = |n: u128| i64::try_from(n).unwrap_or(i64::MAX);
    let mut conditions = Vec::new();
    // Ready: its addresses can be given out (`kubectl wait --for=condition=Ready`).
    conditions.push(match facts.invalid {
        Some(error) => condition(READY, false, reasons::INVALID_SPEC, error, now),
        None => condition(
            READY,
            true,
            reasons::IN_EFFECT,
            "its addresses are given to Services",
            now,
        ),
    });
    if let Some(error) = facts.invalid {
        conditions.push(condition("Valid", false, "InvalidSpec", error, now));
    }
    let others: Vec<&str> = facts
        .overlaps
        .iter()
        .filter_map(|(a, b)| {
            (a == facts.name)
                .then_some(b.as_str())
                .or_else(|| (b == facts.name).then_some(a.as_str()))
        })
        .collect();
    conditions.push(if others.is_empty() {
        condition(
            "Overlapping",
            false,
            "NoOverlap",
            "no other pool shares addresses with this one",
            now,
        )
    } else {
        condition(
            "Overlapping",
            true,
            "SharesAddresses",
            &format!(
                "shares addresses with IPAddressPool {}; each address is still given to one Service only",
                others.join(", ")
            ),
            now,
        )
    });
    keep_transition_times(&mut conditions, &previous.conditions);
    let usage = facts.usage;
    IPAddressPoolStatus {
        assigned_ipv4: count(usage.assigned(Family::Ipv4)),
        available_ipv4: count(usage.available(Family::Ipv4)),
        assigned_ipv6: count(usage.assigned(Family::Ipv6)),
        // A string: an IPv6 pool may hold more than 2^63 addresses.
        available_ipv6: usage.available(Family::Ipv6).to_string(),
        conditions,
    }
}

/// The status a configuration object should have after `verdict`, at `now` (a `Ready`
/// condition whose status is what it was in `previous` keeps its transition time).
pub(crate) fn configuration_status(
    verdict: &Verdict,
    previous: &ConfigurationStatus,
    now: Timestamp,
) -> ConfigurationStatus {
    let mut ready = condition(
        READY,
        verdict.in_effect(),
        verdict.reason,
        &verdict.message,
        now,
    );
    ready.observed_generation = verdict.generation;
    let mut conditions = vec![ready];
    keep_transition_times(&mut conditions, &previous.conditions);
    ConfigurationStatus { conditions }
}

/// A condition whose status is what it was in `previous` keeps its transition time.
fn keep_transition_times(conditions: &mut [Condition], previous: &[Condition]) {
    for c in conditions {
        if let Some(old) = previous
            .iter()
            .find(|o| o.type_ == c.type_ && o.status == c.status)
        {
            c.last_transition_time = old.last_transition_time.clone();
        }
    }
}

fn condition(type_: &str, status: bool, reason: &str, message: &str, now: Timestamp) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        last_transition_time: Time(now),
        observed_generation: None,
    }
}

#[cfg(test)]
mod tests {
    use herald_domain::ServiceKey;
    use herald_ipam::{Allocator, Pool, ServiceRequest};

    use super::*;

    fn usage_of(pools: &[(&str, &[&str])], services: usize) -> (Allocator, Vec<(String, String)>) {
        let mut allocator = Allocator::new();
        let pools: Vec<Pool> = pools
            .iter()
            .map(|(name, ranges)| {
                let ranges: Vec<String> = ranges.iter().map(|r| (*r).to_owned()).collect();
                Pool::parse(name, &ranges).expect("valid pool")
            })
            .collect();
        let report = allocator.set_pools(pools);
        for i in 0..services {
            allocator
                .assign(&ServiceRequest::new(ServiceKey::new("ns", format!("s{i}"))))
                .expect("room");
        }
        (allocator, report.overlaps)
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).expect("in range")
    }

    #[test]
    fn counts_come_from_the_allocator_and_ipv6_may_exceed_64_bits() {
        let (allocator, overlaps) = usage_of(&[("lan", &["192.0.2.64/30", "2001:db8::/56"])], 3);
        let usage = allocator.usage("lan").expect("known pool");
        let facts = PoolFacts {
            name: "lan",
            usage: &usage,
            invalid: None,
            overlaps: &overlaps,
        };
        let status = pool_status(facts, &IPAddressPoolStatus::default(), at(1));
        assert_eq!((status.assigned_ipv4, status.available_ipv4), (3, 1));
        assert_eq!(status.assigned_ipv6, 0);
        assert_eq!(status.available_ipv6, (1u128 << 72).to_string());
        let types: Vec<(&str, &str)> = status
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(types, [("Ready", "True"), ("Overlapping", "False")]);
    }

    #[test]
    fn overlapping_pools_name_each_other_and_a_bad_spec_is_not_valid() {
        let (allocator, overlaps) =
            usage_of(&[("a", &["192.0.2.0/28"]), ("b", &["192.0.2.8/29"])], 0);
        let usage = allocator.usage("a").expect("known pool");
        let facts = PoolFacts {
            name: "b",
            usage: &usage,
            invalid: Some("spec.addresses[1]: \"x\" is not an address range"),
            overlaps: &overlaps,
        };
        let status = pool_status(facts, &IPAddressPoolStatus::default(), at(1));
        let ready = &status.conditions[0];
        assert_eq!(
            (ready.type_.as_str(), ready.status.as_str()),
            ("Ready", "False")
        );
        let valid = &status.conditions[1];
        assert_eq!(
            (valid.type_.as_str(), valid.status.as_str()),
            ("Valid", "False")
        );
        assert!(valid.message.contains("spec.addresses[1]"), "{valid:?}");
        assert_eq!(ready.message, valid.message);
        let overlapping = &status.conditions[2];
        assert_eq!(overlapping.status, "True");
        assert!(
            overlapping.message.contains("IPAddressPool a;"),
            "{overlapping:?}"
        );
    }

    #[test]
    fn a_condition_keeps_its_transition_time_until_its_status_changes() {
        let (allocator, overlaps) = usage_of(&[("lan", &["192.0.2.64/30"])], 0);
        let usage = allocator.usage("lan").expect("known pool");
        let facts = PoolFacts {
            name: "lan",
            usage: &usage,
            invalid: None,
            overlaps: &overlaps,
        };
        let first = pool_status(facts, &IPAddressPoolStatus::default(), at(1));
        let again = pool_status(facts, &first, at(50));
        assert_eq!(again, first, "nothing changed, so nothing to write");
        let shared = [("lan".to_owned(), "other".to_owned())];
        let changed = pool_status(
            PoolFacts {
                overlaps: &shared,
                ..facts
            },
            &first,
            at(60),
        );
        assert_eq!(changed.conditions[1].last_transition_time, Time(at(60)));
        assert_eq!(
            changed.conditions[0].last_transition_time,
            Time(at(1)),
            "Ready did not change"
        );
    }
}
