//! Any bytes from a peer, in any split, at any state: decoding and the session never panic,
//! and a session that ends on them has sent a NOTIFICATION or received one.
#![no_main]

use std::{net::Ipv4Addr, time::Duration};

use herald_domain::Family;
use herald_bgp::{
    Config, Session, State,
    session::{Action, Event, Input},
    wire,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks where the bytes are split; the rest is what the peer sends.
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let _ = wire::decode(bytes);
    let mut session = Session::new(Config {
        local_asn: 64513,
        peer_asn: 64512,
        router_id: Ipv4Addr::new(192, 0, 2, 1),
        hold_time: 90,
        keepalive_time: None,
        connect_retry: Duration::from_secs(1),
        family: Family::Ipv4,
        graceful_restart: Some(120),
    });
    session.handle(Input::Start);
    session.handle(Input::Connected { local: "192.0.2.1".parse().unwrap() });
    let cut = usize::from(split).min(bytes.len());
    let mut actions = session.handle(Input::Received(&bytes[..cut]));
    actions.extend(session.handle(Input::Received(&bytes[cut..])));
    if session.state() == State::Active {
        let told = actions.iter().any(|a| {
            matches!(
                a,
                Action::Report(Event::NotificationSent(_) | Event::NotificationReceived(_))
            )
        });
        assert!(told, "a session ended without a NOTIFICATION: {actions:?}");
    }
});
