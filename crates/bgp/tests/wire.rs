//! The codec: what it encodes is read back by an independent decoder (zettabgp), and what it
//! decodes from a peer never panics, whatever the bytes.

use std::net::{IpAddr, Ipv4Addr};

use herald_bgp::wire::{
    self, Capabilities, GracefulRestart, Message, Notification, Open, PathAttributes,
};
use herald_domain::{Family, Prefix};
use proptest::prelude::*;
use zettabgp::{
    BgpMessage, BgpSessionParams, BgpTransportMode,
    message::{attributes::BgpAttrItem, update::BgpUpdateMessage},
    prelude::BgpAddrs,
};

fn zetta_update(bytes: &[u8], mode: BgpTransportMode) -> BgpUpdateMessage {
    let mut params = BgpSessionParams::new(64512, 90, mode, Ipv4Addr::new(192, 0, 2, 254), vec![]);
    params.has_as32bit = true;
    params.fuzzy_pathid = false;
    let mut update = BgpUpdateMessage::new();
    update
        .decode_from(&params, &bytes[wire::HEADER..])
        .expect("zettabgp reads it");
    update
}

fn attributes(next_hop: &str) -> PathAttributes {
    PathAttributes {
        next_hop: next_hop.parse().unwrap(),
        as_path: vec![64513],
        local_pref: None,
        communities: vec![(65000 << 16) | 100],
        extended_communities: vec![wire::link_bandwidth(64513, 250_000.0)],
        large_communities: vec![[65000, 1, 2]],
    }
}

#[test]
fn ipv4_routes_are_read_back_by_zettabgp_with_every_attribute() {
    let prefixes = [
        Prefix::new("192.0.2.64".parse().unwrap(), 32),
        Prefix::new("198.51.100.0".parse().unwrap(), 24),
    ];
    let messages = wire::encode_announcements(&attributes("192.0.2.1"), &prefixes, true);
    assert_eq!(messages.len(), 1);
    let update = zetta_update(&messages[0], BgpTransportMode::IPv4);
    let BgpAddrs::IPV4U(nlri) = &update.updates else {
        panic!("{update:?}")
    };
    let read: Vec<String> = nlri
        .iter()
        .map(|a| format!("{}/{}", a.addr, a.prefixlen))
        .collect();
    assert_eq!(read, ["192.0.2.64/32", "198.51.100.0/24"]);
    assert_eq!(
        update.get_attr_nexthop().unwrap().value.to_string(),
        "192.0.2.1"
    );
    let text = format!("{:?}", update.attrs);
    assert!(text.contains("64513"), "{text}");
    assert_eq!(
        update
            .get_attr_communitylist()
            .unwrap()
            .value
            .iter()
            .next()
            .unwrap()
            .value,
        (65000 << 16) | 100
    );
    let large = update
        .get_attr_largecommunitylist()
        .unwrap()
        .value
        .iter()
        .next()
        .unwrap()
        .clone();
    assert_eq!((large.ga, large.ldp1, large.ldp2), (65000, 1, 2));
    assert!(
        update
            .attrs
            .iter()
            .any(|a| matches!(a, BgpAttrItem::ExtCommunityList(_)))
    );
}

#[test]
fn ipv6_routes_travel_in_mp_reach_nlri_with_their_next_hop() {
    let prefixes = [Prefix::new("2001:db8::4:1".parse().unwrap(), 128)];
    let messages = wire::encode_announcements(&attributes("2001:db8::1"), &prefixes, true);
    let update = zetta_update(&messages[0], BgpTransportMode::IPv6);
    let mp = update.get_mpupdates().expect("MP_REACH_NLRI");
    assert_eq!(format!("{}", mp.nexthop), "2001:db8::1");
    let BgpAddrs::IPV6U(nlri) = &mp.addrs else {
        panic!("{mp:?}")
    };
    assert_eq!(nlri[0].addr.to_string(), "2001:db8::4:1");
    let withdrawals = wire::encode_withdrawals(&prefixes);
    let update = zetta_update(&withdrawals[0], BgpTransportMode::IPv6);
    assert!(update.get_mpwithdraws().is_some());
}

#[test]
fn a_thousand_routes_fit_in_few_updates_each_within_the_limit() {
    let prefixes: Vec<Prefix> = (0..1000u32)
        .map(|i| Prefix::new(IpAddr::V4(Ipv4Addr::from(0xc000_0200 + i)), 32))
        .collect();
    let messages = wire::encode_announcements(&attributes("192.0.2.1"), &prefixes, true);
    assert!(messages.iter().all(|m| m.len() <= wire::MAX_MESSAGE));
    assert_eq!(messages.len(), 2, "5 octets per /32: about 800 per message");
    let announced: usize = messages
        .iter()
        .map(|m| match wire::decode(m).unwrap().unwrap().0 {
            Message::Update(u) => u.announced,
            other => panic!("{other:?}"),
        })
        .sum();
    assert_eq!(announced, 1000);
    let withdrawals = wire::encode_withdrawals(&prefixes);
    assert!(withdrawals.iter().all(|m| m.len() <= wire::MAX_MESSAGE));
}

#[test]
fn an_open_round_trips_with_its_capabilities() {
    let open = Open {
        asn: 4_200_000_001,
        hold_time: 90,
        router_id: Ipv4Addr::new(192, 0, 2, 1),
        capabilities: Capabilities {
            four_octet_as: Some(4_200_000_001),
            families: [Family::Ipv4, Family::Ipv6].into_iter().collect(),
            route_refresh: true,
            graceful_restart: Some(GracefulRestart {
                restarting: true,
                restart_time: 120,
                families: vec![(Family::Ipv4, true)],
            }),
        },
    };
    let bytes = wire::encode_open(&open);
    assert_eq!(
        &bytes[20..22],
        &[0x5b, 0xa0],
        "AS_TRANS in the 2-octet field"
    );
    assert_eq!(
        wire::decode(&bytes),
        Ok(Some((Message::Open(open), bytes.len())))
    );
}

#[test]
fn an_open_with_capabilities_herald_does_not_know_is_accepted() {
    // FRR's hostname capability (73) and extended message (6), among known ones.
    let mut params = vec![2, 6, 1, 4, 0, 1, 0, 1];
    params.extend_from_slice(&[2, 10, 73, 8, 6, b'r', b'o', b'u', b't', b'e', b'r', 0]);
    params.extend_from_slice(&[2, 2, 6, 0]);
    let mut body = vec![4, 0xfc, 0x00, 0, 90, 192, 0, 2, 254, params.len() as u8];
    body.extend_from_slice(&params);
    let mut bytes = vec![0xff; 16];
    bytes.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    bytes.push(1);
    bytes.extend_from_slice(&body);
    let Ok(Some((Message::Open(open), _))) = wire::decode(&bytes) else {
        panic!()
    };
    assert_eq!(open.asn, 64512);
    assert!(open.capabilities.families.contains(&Family::Ipv4));
}

#[test]
fn header_errors_carry_the_rfc_4271_codes() {
    let mut bytes = wire::encode_keepalive();
    bytes[3] = 0;
    assert_eq!(wire::decode(&bytes), Err(Notification::header(1, vec![])));
    let mut bytes = wire::encode_keepalive();
    bytes[17] = 18;
    assert_eq!(
        wire::decode(&bytes),
        Err(Notification::header(2, vec![0, 18]))
    );
    let mut bytes = wire::encode_keepalive();
    bytes[17] = 20;
    assert_eq!(
        wire::decode(&bytes),
        Err(Notification::header(2, vec![0, 20])),
        "a KEEPALIVE is 19 octets"
    );
    let mut bytes = wire::encode_open(&Open {
        asn: 64512,
        hold_time: 90,
        router_id: Ipv4Addr::new(192, 0, 2, 1),
        capabilities: Capabilities::default(),
    });
    bytes[19] = 3;
    assert_eq!(
        wire::decode(&bytes),
        Err(Notification::new(2, 1, vec![0, 4]))
    );
}

#[test]
fn an_update_whose_attribute_overruns_is_malformed() {
    let good = wire::encode_announcements(
        &attributes("192.0.2.1"),
        &[Prefix::new("192.0.2.64".parse().unwrap(), 32)],
        true,
    );
    let mut bytes = good[0].clone();
    // The first attribute (ORIGIN) claims 200 octets.
    bytes[19 + 4 + 2] = 200;
    let error = wire::decode(&bytes).unwrap_err();
    assert_eq!(error.code, 3);
}

#[test]
fn end_of_rib_markers_are_recognised() {
    for family in [Family::Ipv4, Family::Ipv6] {
        let bytes = wire::encode_end_of_rib(family);
        let Ok(Some((Message::Update(u), _))) = wire::decode(&bytes) else {
            panic!()
        };
        assert_eq!(u.end_of_rib, Some(family));
    }
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = wire::decode(&bytes);
    }

    #[test]
    fn decoding_a_valid_header_with_an_arbitrary_body_never_panics(
        kind in 1u8..=5,
        body in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut bytes = vec![0xff; 16];
        bytes.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
        bytes.push(kind);
        bytes.extend_from_slice(&body);
        let _ = wire::decode(&bytes);
    }

    #[test]
    fn prefixes_round_trip_through_updates(bits in any::<u32>(), length in 0u8..=32) {
        let prefix = Prefix::new(IpAddr::V4(Ipv4Addr::from(bits)), length);
        let messages = wire::encode_announcements(&attributes("192.0.2.1"), &[prefix], true);
        let update = zetta_update(&messages[0], BgpTransportMode::IPv4);
        let BgpAddrs::IPV4U(nlri) = &update.updates else { panic!() };
        prop_assert_eq!(IpAddr::V4(nlri[0].addr), prefix.address());
        prop_assert_eq!(nlri[0].prefixlen, prefix.length());
    }
}
