//! The `established` fuzz target's property (`fuzz/harness/established.rs`) on every test
//! run: arbitrary bytes from a router in a live session, in any split, with timers between,
//! never panic the session, what it sends always decodes, and it leaves Established only with
//! a NOTIFICATION. The fuzzer explores further by coverage (`fuzz/README.md`).

#[path = "../fuzz/harness/established.rs"]
mod harness;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use herald_bgp::{
    Notification,
    wire::{self, PathAttributes},
};
use herald_domain::{Family, Prefix};
use proptest::prelude::*;

/// Messages a router sends in a live session, to build inputs from: KEEPALIVE, UPDATEs
/// announcing and withdrawing IPv4 and IPv6 prefixes, End-of-RIB, ROUTE-REFRESH and a
/// NOTIFICATION.
fn router_messages() -> Vec<Vec<u8>> {
    let attributes = PathAttributes {
        next_hop: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 254)),
        as_path: vec![64512],
        local_pref: None,
        communities: vec![(65000 << 16) | 100],
        extended_communities: vec![wire::link_bandwidth(64512, 1000.0)],
        large_communities: vec![[64512, 1, 2]],
    };
    let v4 = Prefix::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 0)), 24);
    let v6 = Prefix::new(
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0)),
        48,
    );
    let mut messages = vec![
        wire::encode_keepalive(),
        wire::encode_end_of_rib(Family::Ipv4),
        wire::encode_end_of_rib(Family::Ipv6),
        wire::encode_route_refresh(Family::Ipv4),
        wire::encode_notification(&Notification::hold_timer_expired()),
    ];
    messages.extend(wire::encode_announcements(&attributes, &[v4, v6], true));
    messages.extend(wire::encode_withdrawals(&[v4, v6]));
    messages
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn arbitrary_bytes_in_an_established_session_never_panic_it(
        data in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        harness::run(&data);
    }

    #[test]
    fn valid_messages_with_arbitrary_bytes_after_them_never_panic_it(
        split in any::<u8>(),
        timers in 0u8..4,
        picks in proptest::collection::vec(0usize..16, 1..6),
        tail in proptest::collection::vec(any::<u8>(), 0..100),
    ) {
        let messages = router_messages();
        let mut data = vec![split, timers];
        for pick in picks {
            data.extend_from_slice(&messages[pick % messages.len()]);
        }
        data.extend_from_slice(&tail);
        harness::run(&data);
    }
}

#[test]
fn the_seeds_run_as_the_fuzzer_starts_from_them() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/established");
    for seed in std::fs::read_dir(dir).expect("seeds") {
        harness::run(&std::fs::read(seed.expect("a seed").path()).expect("readable"));
    }
    assert_eq!(harness::established().advertised().len(), 2);
}
