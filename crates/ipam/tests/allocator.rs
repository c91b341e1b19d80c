//! The allocator's behaviour as the controller relies on it.

use std::{collections::BTreeSet, net::IpAddr};

use herald_domain::{Family, IpFamilyPolicy, LabelSelector, Labels, Port, ServiceKey};
use herald_ipam::{
    AllocationError, Allocator, Backend, Pool, ServiceAllocation, ServiceRequest, SharingConflict,
};

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

fn pool(name: &str, addresses: &[&str]) -> Pool {
    Pool::parse(name, addresses).expect("valid pool")
}

fn service(name: &str) -> ServiceRequest {
    ServiceRequest::new(ServiceKey::new("default", name))
}

fn tcp(ports: &[u16]) -> BTreeSet<Port> {
    ports
        .iter()
        .map(|&port| Port {
            protocol: "TCP".into(),
            port,
        })
        .collect()
}

fn sharing(name: &str, key: &str, ports: &[u16]) -> ServiceRequest {
    ServiceRequest {
        sharing_key: Some(key.into()),
        ports: tcp(ports),
        ..service(name)
    }
}

fn allocator(pools: Vec<Pool>) -> Allocator {
    let mut allocator = Allocator::new();
    allocator.set_pools(pools);
    allocator
}

#[test]
fn services_get_the_lowest_free_addresses_in_turn() {
    let mut a = allocator(vec![pool("lan", &["192.0.2.64/30"])]);
    let first = a.assign(&service("a")).expect("free address");
    let second = a.assign(&service("b")).expect("free address");
    assert_eq!(first.ips, [ip("192.0.2.64")]);
    assert_eq!(first.pool.as_deref(), Some("lan"));
    assert_eq!(second.ips, [ip("192.0.2.65")]);
    let usage = a.usage("lan").expect("pool exists");
    assert_eq!(usage.assigned(Family::Ipv4), 2);
    assert_eq!(usage.available(Family::Ipv4), 2);
}

#[test]
fn assigning_again_is_idempotent() {
    let mut a = allocator(vec![pool("lan", &["192.0.2.64/30"])]);
    let first = a.assign(&service("a")).expect("free address");
    assert_eq!(a.assign(&service("a")), Ok(first));
    assert_eq!(a.usage("lan").expect("pool").assigned(Family::Ipv4), 1);
}

#[test]
fn a_released_address_is_reused() {
    let mut a = allocator(vec![pool("lan", &["192.0.2.64/31"])]);
    a.assign(&service("a")).expect("first");
    a.assign(&service("b")).expect("second");
    assert!(matches!(
        a.assign(&service("c")),
        Err(AllocationError::Exhausted { .. })
    ));
    let released = a.release(&ServiceKey::new("default", "a")).expect("held");
    assert_eq!(released.ips, [ip("192.0.2.64")]);
    assert_eq!(a.assign(&service("c")).expect("reused").ips, released.ips);
}

#[test]
fn an_exhausted_pool_says_which_family_and_pools() {
    let mut a = allocator(vec![pool("lan", &["192.0.2.64/32"])]);
    a.assign(&service("a")).expect("first");
    let err = a.assign(&service("b")).expect_err("full");
    assert_eq!(err.to_string(), "no free IPv4 address in pool \"lan\"");
}

#[test]
fn avoid_buggy_ips_skips_dot_zero_and_dot_255() {
    let mut lan = pool("lan", &["192.0.2.255-192.0.3.1"]);
    lan.avoid_buggy_ips = true;
    let mut a = allocator(vec![lan]);
    assert_eq!(
        a.assign(&service("a")).expect("free").ips,
        [ip("192.0.3.1")]
    );
    let mut asks_for_buggy = service("b");
    asks_for_buggy.requested = vec![ip("192.0.3.0")];
    assert_eq!(
        a.assign(&asks_for_buggy),
        Err(AllocationError::BuggyAddress {
            ip: ip("192.0.3.0"),
            pool: "lan".into()
        })
    );
}

#[test]
fn the_annotation_pool_is_the_only_one_used_even_without_auto_assign() {
    let mut reserved = pool("reserved", &["203.0.113.0/30"]);
    reserved.auto_assign = false;
    let mut a = allocator(vec![pool("lan", &["192.0.2.64/30"]), reserved]);
    assert_eq!(
        a.assign(&service("a")).expect("auto").pool.as_deref(),
        Some("lan")
    );
    let named = ServiceRequest {
        pool: Some("reserved".into()),
        ..service("b")
    };
    assert_eq!(a.assign(&named).expect("named").ips, [ip("203.0.113.0")]);
    let unknown = ServiceRequest {
        pool: Some("nope".into()),
        ..service("c")
    };
    assert_eq!(
        a.assign(&unknown),
        Err(AllocationError::UnknownPool {
            pool: "nope".into()
        })
    );
}

#[test]
fn pools_are_tried_by_priority_then_restriction_then_name() {
    let restricted = |name: &str, address: &str, priority: Option<i32>| {
        let mut p = pool(name, &[address]);
        p.allocation = Some(ServiceAllocation {
            priority,
            namespaces: vec!["default".into()],
            ..Default::default()
        });
        p
    };
    let mut a = allocator(vec![
        pool("a-open", &["192.0.2.1/32"]),
        restricted("b-no-priority", "192.0.2.2/32", None),
        restricted("c-priority-20", "192.0.2.3/32", Some(20)),
        restricted("d-priority-10", "192.0.2.4/32", Some(10)),
    ]);
    let order: Vec<String> = ["s1", "s2", "s3", "s4"]
        .into_iter()
        .map(|s| {
            a.assign(&service(s))
                .expect("free")
                .pool
                .expect("from a pool")
        })
        .collect();
    assert_eq!(
        order,
        ["d-priority-10", "c-priority-20", "b-no-priority", "a-open"]
    );
}

#[test]
fn service_allocation_keeps_other_namespaces_and_labels_out() {
    let mut team = pool("team", &["192.0.2.0/30"]);
    team.allocation = Some(ServiceAllocation {
        namespace_selectors: vec![LabelSelector {
            match_labels: Labels::from([("team".into(), "web".into())]),
            ..Default::default()
        }],
        service_selectors: vec![LabelSelector {
            match_labels: Labels::from([("expose".into(), "yes".into())]),
            ..Default::default()
        }],
        ..Default::default()
    });
    let mut a = allocator(vec![team]);
    let web = |labels: &[(&str, &str)]| ServiceRequest {
        namespace_labels: Labels::from([("team".into(), "web".into())]),
        labels: labels
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        ..service("x")
    };
    assert_eq!(a.assign(&web(&[])), Err(AllocationError::NoEligiblePool));
    assert!(a.assign(&web(&[("expose", "yes")])).is_ok());
    let mut other_namespace = web(&[("expose", "yes")]);
    other_namespace.key = ServiceKey::new("db", "x");
    other_namespace.namespace_labels = Labels::new();
    assert_eq!(
        a.assign(&other_namespace),
        Err(AllocationError::NoEligiblePool)
    );
}

#[test]
fn a_requested_address_is_given_when_free_and_refused_clearly_otherwise() {
    let mut a = allocator(vec![pool("lan", &["192.0.2.64/28"])]);
    let asks = |name: &str, address: &str| ServiceRequest {
        requested: vec![ip(address)],
        ..service(name)
    };
    assert_eq!(
        a.assign(&asks("a", "192.0.2.70")).expect("free").ips,
        [ip("192.0.2.70")]
    );
    assert_eq!(
        a.assign(&asks("b", "192.0.2.70")),
        Err(AllocationError::InUse {
            ip: ip("192.0.2.70"),
            holder: ServiceKey::new("default", "a"),
            conflict: SharingConflict::HolderDoesNotShare,
        })
    );
    let outside = a.assign(&asks("c", "198.51.100.7")).expect_err("outside");
    assert_eq!(
        outside.to_string(),
        "requested address 198.51.100.7 is not in any IPAddressPool"
    );
    // The lowest free address skips the requested one.
    let next: Vec<IpAddr> = (0..7)
        .map(|i| a.assign(&service(&format!("auto{i}"))).expect("free").ips[0])
        .collect();
    assert!(!next.contains(&ip("192.0.2.70")));
}

#[test]
fn a_new_requested_address_moves_the_service_and_a_failed_move_keeps_the_old_one() {
    let mut a = allocator(vec![pool("lan", &["192.0.2.64/28"])]);
    a.assign(&service("a")).expect("free");
    let mut moved = service("a");
    moved.requested = vec![ip("192.0.2.75")];
    assert_eq!(a.assign(&moved).expect("free").ips, [ip("192.0.2.75")]);
    assert_eq!(a.holders(ip("192.0.2.64")), &[] as &[ServiceKey]);
    moved.requested = vec![ip("203.0.113.1")];
    assert!(a.assign(&moved).is_err());
    assert_eq!(
        a.assignment(&ServiceKey::new("default", "a"))
            .expect("kept")
            .ips,
        [ip("192.0.2.75")]
    );
}

#[test]
fn services_with_the_same_key_and_no_common_port_share_an_address() {
    let mut a = allocator(vec![pool("lan", &["192.0.2.64/28"])]);
    let web = a.assign(&sharing("web", "k", &[80])).expect("free");
    let tls = a.assign(&sharing("tls", "k", &[443])).expect("shared");
    assert_eq!(web.ips, tls.ips);
    assert_eq!(a.holders(web.ips[0]).len(), 2);
    // Same port: a fresh address instead.
    let clash = a.assign(&sharing("clash", "k", &[80])).expect("another");
    assert_ne!(clash.ips, web.ips);
    // The address is free again only when both sharers are gone.
    a.release(&ServiceKey::new("default", "web"));
    assert_eq!(a.holders(web.ips[0]).len(), 1);
    a.release(&ServiceKey::new("default", "tls"));
    assert_eq!(a.assign(&service("next")).expect("free").ips, web.ips);
}

#[test]
fn sharing_is_refused_for_other_keys_other_backends_and_clashing_ports() {
    let mut a = allocator(vec![pool("lan", &["192.0.2.64/28"])]);
    let held = a.assign(&sharing("web", "k", &[80])).expect("free").ips[0];
    let asks = |mut r: ServiceRequest| {
        r.requested = vec![held];
        r
    };
    let conflict = |a: &mut Allocator, r| match a.assign(&asks(r)) {
        Err(AllocationError::InUse { conflict, .. }) => conflict,
        other => panic!("expected a conflict, got {other:?}"),
    };
    assert_eq!(
        conflict(&mut a, sharing("x", "other", &[81])),
        SharingConflict::DifferentKey {
            holder: "k".into(),
            requester: "other".into()
        }
    );
    assert_eq!(
        conflict(&mut a, sharing("x", "k", &[80])),
        SharingConflict::PortClash {
            protocol: "TCP".into(),
            port: 80
        }
    );
    let local = ServiceRequest {
        backend: Backend::Local {
            selector: Labels::from([("app".into(), "web".into())]),
        },
        ..sharing("x", "k", &[81])
    };
    assert_eq!(conflict(&mut a, local), SharingConflict::DifferentBackend);
    assert_eq!(
        conflict(&mut a, service("x")),
        SharingConflict::RequesterDoesNotShare
    );
}

#[test]
fn local_services_share_only_with_the_same_selector() {
    let mut a = allocator(vec![pool("lan", &["192.0.2.64/28"])]);
    let local = |name: &str, app: &str, port: u16| ServiceRequest {
        backend: Backend::Local {
            selector: Labels::from([("app".into(), app.into())]),
        },
        ..sharing(name, "k", &[port])
    };
    let first = a.assign(&local("a", "web", 80)).expect("free");
    assert_eq!(
        a.assign(&local("b", "web", 443)).expect("shared").ips,
        first.ips
    );
    assert_ne!(
        a.assign(&local("c", "db", 5432)).expect("own").ips,
        first.ips
    );
}

#[test]
fn dual_stack_follows_the_family_policy() {
    let mut a = allocator(vec![
        pool("v4only", &["192.0.2.0/31"]),
        pool("z-dual", &["192.0.2.64/30", "2001:db8:1::/126"]),
    ]);
    let dual = |name: &str, policy| ServiceRequest {
        families: vec![Family::Ipv6, Family::Ipv4],
        family_policy: policy,
        ..service(name)
    };
    // RequireDualStack skips the IPv4-only pool and lists the IPv6 address first, as the
    // Service's ipFamilies do.
    let required = a
        .assign(&dual("r", IpFamilyPolicy::RequireDualStack))
        .expect("both");
    assert_eq!(required.ips, [ip("2001:db8:1::"), ip("192.0.2.64")]);
    assert_eq!(required.pool.as_deref(), Some("z-dual"));
    // PreferDualStack takes what the first pool offers.
    let preferred = a
        .assign(&dual("p", IpFamilyPolicy::PreferDualStack))
        .expect("one");
    assert_eq!(preferred.ips, [ip("192.0.2.0")]);
    // SingleStack IPv6 takes the first family only.
    let single = a
        .assign(&dual("s", IpFamilyPolicy::SingleStack))
        .expect("v6");
    assert_eq!(single.ips, [ip("2001:db8:1::1")]);
    // A requested address of a family the Service does not have is refused.
    let wrong = ServiceRequest {
        requested: vec![ip("2001:db8:1::3")],
        ..service("w")
    };
    assert!(matches!(
        a.assign(&wrong),
        Err(AllocationError::WrongFamily { .. })
    ));
}

#[test]
fn editing_a_pool_never_moves_a_live_service() {
    let mut a = allocator(vec![pool("lan", &["192.0.2.64/30"])]);
    let held = a.assign(&service("a")).expect("free");
    let report = a.set_pools(vec![pool("lan", &["192.0.2.128/30"])]);
    assert_eq!(
        report.outside_pools,
        [(ip("192.0.2.64"), vec![ServiceKey::new("default", "a")])]
    );
    assert_eq!(a.assign(&service("a")), Ok(held.clone()));
    // Nobody else gets it while it is held, even after it is back in a pool.
    a.set_pools(vec![pool("lan", &["192.0.2.64/30"])]);
    assert_ne!(a.assign(&service("b")).expect("free").ips, held.ips);
    assert_eq!(a.usage("lan").expect("pool").assigned(Family::Ipv4), 2);
}

#[test]
fn overlapping_pools_are_reported_and_never_hand_out_an_address_twice() {
    let mut a = Allocator::new();
    let report = a.set_pools(vec![
        pool("a", &["192.0.2.64/31"]),
        pool("b", &["192.0.2.65-192.0.2.66"]),
    ]);
    assert_eq!(report.overlaps, [("a".to_owned(), "b".to_owned())]);
    let ips: Vec<IpAddr> = (0..3)
        .map(|i| a.assign(&service(&format!("s{i}"))).expect("free").ips[0])
        .collect();
    assert_eq!(ips, [ip("192.0.2.64"), ip("192.0.2.65"), ip("192.0.2.66")]);
    assert_eq!(a.usage("b").expect("pool").available(Family::Ipv4), 0);
}

#[test]
fn restoring_from_status_refuses_a_second_claim_on_one_address() {
    let mut a = allocator(vec![pool("lan", &["192.0.2.64/28"])]);
    let restored = a
        .restore(&service("a"), &[ip("192.0.2.70")])
        .expect("first claim");
    assert_eq!(restored.pool.as_deref(), Some("lan"));
    assert!(matches!(
        a.restore(&service("b"), &[ip("192.0.2.70")]),
        Err(AllocationError::InUse { .. })
    ));
    // A refused restore of a Service that already holds something keeps what it held.
    a.restore(&service("b"), &[ip("192.0.2.71")]).expect("free");
    assert!(a.restore(&service("b"), &[ip("192.0.2.70")]).is_err());
    assert_eq!(
        a.assignment(&ServiceKey::new("default", "b"))
            .map(|x| x.ips.clone()),
        Some(vec![ip("192.0.2.71")])
    );
    // Addresses outside every pool are kept too: the Service is live.
    let outside = a
        .restore(&service("c"), &[ip("203.0.113.9")])
        .expect("kept");
    assert_eq!(outside.pool, None);
}

#[test]
fn a_slash_64_pool_is_counted_without_overflow() {
    let mut a = allocator(vec![pool("v6", &["2001:db8:1::/64"])]);
    let v6 = ServiceRequest {
        families: vec![Family::Ipv6],
        ..service("a")
    };
    a.assign(&v6).expect("free");
    let usage = a.usage("v6").expect("pool");
    assert_eq!(usage.assigned(Family::Ipv6), 1);
    assert_eq!(usage.available(Family::Ipv6), (1u128 << 64) - 1);
}

/// The pool's representation follows its ranges, not its addresses: a `/0` that avoids buggy
/// addresses is set up and allocated from at once (it used to be one interval per /24, 16.7
/// million of them, which ran the controller out of memory).
#[test]
fn whole_address_spaces_are_pools_like_any_other() {
    let mut everything = pool("everything", &["0.0.0.0/0", "::/0"]);
    everything.avoid_buggy_ips = true;
    let mut v6 = pool("v6", &["2001:db8:2::/64"]);
    v6.avoid_buggy_ips = true;
    v6.auto_assign = false;
    let mut a = allocator(vec![everything, v6]);

    for (name, expected) in [("a", "0.0.0.1"), ("b", "0.0.0.2")] {
        assert_eq!(a.assign(&service(name)).expect("free").ips, [ip(expected)]);
    }
    let usage = a.usage("everything").expect("pool");
    assert_eq!(usage.available(Family::Ipv4), (1 << 32) - 2 * (1 << 24) - 2);

    let v6_request = |name: &str, pool: Option<&str>| ServiceRequest {
        families: vec![Family::Ipv6],
        pool: pool.map(String::from),
        ..service(name)
    };
    assert_eq!(
        a.assign(&v6_request("c", None)).expect("free").ips,
        [ip("::")]
    );
    // IPv6 has no buggy addresses: a /64 ending in ::ff or ::100 hands them out like any other.
    let mut asks_for_ff = v6_request("d", Some("v6"));
    asks_for_ff.requested = vec![ip("2001:db8:2::ff")];
    assert_eq!(
        a.assign(&asks_for_ff).expect("free").ips,
        [ip("2001:db8:2::ff")]
    );
    assert_eq!(
        a.assign(&v6_request("e", Some("v6"))).expect("free").ips,
        [ip("2001:db8:2::")]
    );
    assert_eq!(
        a.usage("v6").expect("pool").available(Family::Ipv6),
        (1u128 << 64) - 2
    );
    // 2^128 addresses less the three in use (those of "v6" overlap "everything").
    assert_eq!(
        a.usage("everything").expect("pool").available(Family::Ipv6),
        u128::MAX - 2
    );
}

#[test]
fn a_pool_edit_keeps_a_service_that_names_the_pool_but_a_new_pool_name_moves_it() {
    let mut a = allocator(vec![
        pool("lan", &["192.0.2.64/30"]),
        pool("dmz", &["203.0.113.0/30"]),
    ]);
    let named = |p: &str| ServiceRequest {
        pool: Some(p.into()),
        ..service("a")
    };
    let held = a.assign(&named("lan")).expect("free");
    a.set_pools(vec![
        pool("lan", &["192.0.2.128/30"]),
        pool("dmz", &["203.0.113.0/30"]),
    ]);
    assert_eq!(
        a.assign(&named("lan")),
        Ok(held),
        "the pool edit does not move it"
    );
    let moved = a
        .assign(&named("dmz"))
        .expect("the user asked for another pool");
    assert_eq!(moved.ips, [ip("203.0.113.0")]);
    assert_eq!(moved.pool.as_deref(), Some("dmz"));
}
