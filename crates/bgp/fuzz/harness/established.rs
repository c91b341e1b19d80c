//! The harness of the `established` fuzz target, shared with the proptest that runs it on
//! every `tests/run` (`crates/bgp/tests/established.rs`): a session is brought to Established
//! with a router first, so that what follows is read as a live session reads it (UPDATEs,
//! ROUTE-REFRESH, KEEPALIVEs, NOTIFICATIONs), not refused as an early OPEN.
//!
//! ```text
//!   data = [split, timers, bytes...]
//!   Start, Connected, the router's OPEN, its KEEPALIVE ──► Established, routes sent
//!   bytes[..split] ─ (timers & 1: the keepalive timer fires) ─ bytes[split..]
//!   (timers & 2: the hold timer fires)
//! ```
//!
//! Checked: nothing panics; everything the session sends decodes; a session that leaves
//! Established has sent a NOTIFICATION or received one; one that stays keeps advertising the
//! routes it was given.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use herald_bgp::{
    Config, RouteAttributes, Session, State,
    session::{Action, Event, Input, Timer},
    wire::{self, Capabilities, GracefulRestart, Open},
};
use herald_domain::{Family, Prefix};

/// Runs one input through a session in Established; panics when a property fails.
pub(crate) fn run(data: &[u8]) {
    let [split, timers, bytes @ ..] = data else {
        return;
    };
    let mut session = established();
    let routes = session.advertised().clone();
    let cut = usize::from(*split).min(bytes.len());
    let mut actions = session.handle(Input::Received(&bytes[..cut]));
    if timers & 1 != 0 {
        actions.extend(session.handle(Input::Timer(Timer::Keepalive)));
    }
    actions.extend(session.handle(Input::Received(&bytes[cut..])));
    if timers & 2 != 0 {
        actions.extend(session.handle(Input::Timer(Timer::Hold)));
    }
    for action in &actions {
        if let Action::Send(sent) = action {
            assert!(
                matches!(wire::decode(sent), Ok(Some((_, used))) if used == sent.len()),
                "the session sent what does not decode: {sent:?}"
            );
        }
    }
    if session.state() == State::Established {
        assert_eq!(
            session.advertised(),
            &routes,
            "what the peer sends never changes what this side advertises"
        );
    } else {
        let told = actions.iter().any(|a| {
            matches!(
                a,
                Action::Report(Event::NotificationSent(_) | Event::NotificationReceived(_))
            )
        });
        assert!(
            told,
            "the session left Established without a NOTIFICATION: {actions:?}"
        );
    }
}

/// A session with a router (AS 64512, IPv4, four-octet AS, route refresh, graceful restart)
/// in Established, with two routes advertised.
pub(crate) fn established() -> Session {
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
    let routes: BTreeMap<Prefix, RouteAttributes> = [64, 65]
        .into_iter()
        .map(|last| {
            let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, last));
            (Prefix::new(ip, 32), RouteAttributes::default())
        })
        .collect();
    session.set_routes(routes);
    session.handle(Input::Start);
    session.handle(Input::Connected {
        local: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
    });
    session.handle(Input::Received(&router_open()));
    session.handle(Input::Received(&wire::encode_keepalive()));
    assert_eq!(session.state(), State::Established);
    session
}

/// The router's OPEN.
fn router_open() -> Vec<u8> {
    wire::encode_open(&Open {
        asn: 64512,
        hold_time: 90,
        router_id: Ipv4Addr::new(192, 0, 2, 254),
        capabilities: Capabilities {
            four_octet_as: Some(64512),
            families: [Family::Ipv4].into_iter().collect(),
            route_refresh: true,
            graceful_restart: Some(GracefulRestart {
                restarting: false,
                restart_time: 120,
                families: vec![(Family::Ipv4, true)],
            }),
        },
    })
}
