//! Which speakers renew their heartbeat through the API server: a second, slower view of who
//! is alive, beside gossip ([`crate::Members::heartbeating`]).
//!
//! Each speaker renews a Lease of its own every [`RENEW_EVERY`]. A speaker counts another as
//! heartbeating while that Lease's renew time changed, on this speaker's own clock, less than
//! [`EXPIRES_AFTER`] ago: nodes' clocks need not agree. A Lease seen for the first time is
//! aged by the wall clock (its renew time against now), so that a Lease left by a speaker that
//! died long ago does not count as alive when this speaker starts.
//!
//! Sans-IO: the speaker hands in what its watch of the Leases holds and the time; the tracker
//! says who is heartbeating.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

/// How often a speaker renews its heartbeat: one write to the API server per node every 5 s
/// (twice the kubelet's node Leases, which are renewed every 10 s).
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
/// How long after its last renewal was seen a speaker stops counting as heartbeating: three
/// renewals missed, so one slow write does not count as death. This is how long survivors
/// wait before they take over from most of the speakers dying at once.
pub const EXPIRES_AFTER: Duration = Duration::from_secs(20);

/// One speaker's heartbeat, as one watch shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewal {
    /// The node whose speaker renews it.
    pub node: String,
    /// The renew time as written (compared for change only).
    pub renewed: String,
    /// How old the renew time is by this node's wall clock (used the first time only).
    pub age: Duration,
}

/// When each heartbeat was last seen to change.
#[derive(Debug, Default)]
pub struct Heartbeats {
    seen: BTreeMap<String, (String, Instant)>,
}

impl Heartbeats {
    /// Takes the heartbeats the watch holds at `now`; heartbeats gone from it are forgotten.
    pub fn observe(&mut self, renewals: impl IntoIterator<Item = Renewal>, now: Instant) {
        let mut seen = BTreeMap::new();
        for renewal in renewals {
            let changed_at = match self.seen.remove(&renewal.node) {
                Some((renewed, at)) if renewed == renewal.renewed => at,
                Some(_) => now,
                None => now.checked_sub(renewal.age).unwrap_or(now),
            };
            seen.insert(renewal.node, (renewal.renewed, changed_at));
        }
        self.seen = seen;
    }

    /// The nodes whose speakers renewed their heartbeat less than [`EXPIRES_AFTER`] before
    /// `now`.
    pub fn alive(&self, now: Instant) -> BTreeSet<String> {
        self.seen
            .iter()
            .filter(|(_, (_, at))| now.saturating_duration_since(*at) < EXPIRES_AFTER)
            .map(|(node, _)| node.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renewal(node: &str, renewed: &str, age_secs: u64) -> Renewal {
        Renewal {
            node: node.to_owned(),
            renewed: renewed.to_owned(),
            age: Duration::from_secs(age_secs),
        }
    }

    #[test]
    fn a_heartbeat_counts_while_it_changes_and_expires_when_it_stops() {
        let start = Instant::now();
        let mut heartbeats = Heartbeats::default();
        heartbeats.observe([renewal("n1", "t0", 0), renewal("n2", "t0", 0)], start);
        assert_eq!(heartbeats.alive(start).len(), 2);
        // n1 renews; n2 stopped.
        let later = start + Duration::from_secs(9);
        heartbeats.observe([renewal("n1", "t9", 0), renewal("n2", "t0", 9)], later);
        let past = start + EXPIRES_AFTER + Duration::from_secs(1);
        assert_eq!(heartbeats.alive(past), BTreeSet::from(["n1".to_owned()]));
    }

    #[test]
    fn a_heartbeat_left_long_ago_is_not_alive_when_first_seen() {
        let now = Instant::now() + Duration::from_secs(3_600);
        let mut heartbeats = Heartbeats::default();
        heartbeats.observe([renewal("gone", "t-600", 600), renewal("n1", "t", 1)], now);
        assert_eq!(heartbeats.alive(now), BTreeSet::from(["n1".to_owned()]));
    }

    #[test]
    fn clocks_need_not_agree_after_the_first_sight() {
        // n1's clock runs an hour behind: its renew times look old, but they change.
        let start = Instant::now() + Duration::from_secs(7_200);
        let mut heartbeats = Heartbeats::default();
        heartbeats.observe([renewal("n1", "a", 3_600)], start);
        assert!(
            heartbeats.alive(start).is_empty(),
            "first sight: aged by the clock"
        );
        let next = start + RENEW_EVERY;
        heartbeats.observe([renewal("n1", "b", 3_600)], next);
        assert_eq!(
            heartbeats.alive(next).len(),
            1,
            "a change counts on our clock"
        );
    }

    #[test]
    fn a_deleted_heartbeat_is_forgotten_at_once() {
        let now = Instant::now();
        let mut heartbeats = Heartbeats::default();
        heartbeats.observe([renewal("n1", "t", 0)], now);
        heartbeats.observe([], now);
        assert!(heartbeats.alive(now).is_empty());
    }
}
