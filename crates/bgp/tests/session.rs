//! The session state machine driven by hand: no socket, no clock.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use herald_bgp::{
    Config, Notification, RouteAttributes, Session, State,
    session::{Action, Event, Input, Timer},
    wire::{self, Capabilities, Message, Open},
};
use herald_domain::{Family, Prefix};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

fn config() -> Config {
    Config {
        local_asn: 64513,
        peer_asn: 64512,
        router_id: Ipv4Addr::new(192, 0, 2, 1),
        hold_time: 90,
        keepalive_time: None,
        connect_retry: Duration::from_secs(1),
        family: Family::Ipv4,
        graceful_restart: None,
    }
}

fn peer_open(asn: u32, hold_time: u16) -> Vec<u8> {
    wire::encode_open(&Open {
        asn,
        hold_time,
        router_id: Ipv4Addr::new(192, 0, 2, 254),
        capabilities: Capabilities {
            four_octet_as: Some(asn),
            families: [Family::Ipv4].into_iter().collect(),
            route_refresh: true,
            graceful_restart: None,
        },
    })
}

fn sent(actions: &[Action]) -> Vec<Message> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(bytes) => Some(wire::decode(bytes).unwrap().unwrap().0),
            _ => None,
        })
        .collect()
}

fn notifications_sent(actions: &[Action]) -> Vec<Notification> {
    sent(actions)
        .into_iter()
        .filter_map(|m| match m {
            Message::Notification(n) => Some(n),
            _ => None,
        })
        .collect()
}

fn armed(actions: &[Action], timer: Timer) -> Option<Duration> {
    actions.iter().rev().find_map(|a| match a {
        Action::Arm(t, d) if *t == timer => Some(*d),
        _ => None,
    })
}

fn route(ip: [u8; 4]) -> (Prefix, RouteAttributes) {
    (
        Prefix::new(IpAddr::V4(Ipv4Addr::from(ip)), 32),
        RouteAttributes::default(),
    )
}

/// A session brought to Established, and the actions of the last step.
fn established(routes: BTreeMap<Prefix, RouteAttributes>) -> (Session, Vec<Action>) {
    let mut session = Session::new(config());
    session.set_routes(routes);
    assert_eq!(session.handle(Input::Start)[0], Action::Connect);
    let actions = session.handle(Input::Connected { local: LOCAL });
    assert!(matches!(sent(&actions)[..], [Message::Open(_)]));
    assert_eq!(session.state(), State::OpenSent);
    let actions = session.handle(Input::Received(&peer_open(64512, 30)));
    assert!(matches!(sent(&actions)[..], [Message::Keepalive]));
    assert_eq!(armed(&actions, Timer::Hold), Some(Duration::from_secs(30)));
    assert_eq!(
        armed(&actions, Timer::Keepalive),
        Some(Duration::from_secs(10))
    );
    assert_eq!(session.state(), State::OpenConfirm);
    let actions = session.handle(Input::Received(&wire::encode_keepalive()));
    assert_eq!(session.state(), State::Established);
    (session, actions)
}

#[test]
fn a_session_comes_up_and_sends_its_routes_then_end_of_rib() {
    let routes = [route([192, 0, 2, 64]), route([192, 0, 2, 65])].into();
    let (session, actions) = established(routes);
    let messages = sent(&actions);
    assert_eq!(messages.len(), 2, "{messages:?}");
    let Message::Update(update) = &messages[0] else {
        panic!("{messages:?}")
    };
    assert_eq!(
        update.announced, 2,
        "both routes share attributes: one UPDATE"
    );
    assert!(matches!(&messages[1], Message::Update(u) if u.end_of_rib == Some(Family::Ipv4)));
    assert_eq!(session.advertised().len(), 2);
    let next_hop = session.advertised().values().next().unwrap().next_hop;
    assert_eq!(
        next_hop, LOCAL,
        "the next hop is this end of the connection"
    );
    assert_eq!(
        session.advertised().values().next().unwrap().as_path,
        vec![64513]
    );
}

#[test]
fn only_the_difference_is_sent_when_routes_change() {
    let (mut session, _) = established([route([192, 0, 2, 64]), route([192, 0, 2, 65])].into());
    let attrs = RouteAttributes {
        communities: vec![0xfde8_0064],
        ..RouteAttributes::default()
    };
    let wanted = [
        route([192, 0, 2, 64]),
        (Prefix::new("192.0.2.66".parse().unwrap(), 32), attrs),
    ]
    .into();
    let messages = sent(&session.set_routes(wanted));
    let summaries: Vec<_> = messages
        .iter()
        .map(|m| match m {
            Message::Update(u) => (u.withdrawn, u.announced),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        summaries,
        vec![(1, 0), (0, 1)],
        "withdraw .65, announce .66"
    );
    assert!(
        sent(&session.set_routes(session_routes(&session))).is_empty(),
        "nothing changed, nothing sent"
    );
}

fn session_routes(session: &Session) -> BTreeMap<Prefix, RouteAttributes> {
    session
        .advertised()
        .iter()
        .map(|(p, a)| {
            (
                *p,
                RouteAttributes {
                    communities: a.communities.clone(),
                    ..RouteAttributes::default()
                },
            )
        })
        .collect()
}

#[test]
fn a_peer_of_the_wrong_as_is_refused_with_bad_peer_as() {
    let mut session = Session::new(config());
    session.handle(Input::Start);
    session.handle(Input::Connected { local: LOCAL });
    let actions = session.handle(Input::Received(&peer_open(64999, 90)));
    assert_eq!(notifications_sent(&actions), vec![Notification::open(2)]);
    assert!(actions.contains(&Action::Close));
    assert_eq!(session.state(), State::Active);
    let wait = armed(&actions, Timer::ConnectRetry).expect("a retry");
    assert!(
        (Duration::from_millis(750)..=Duration::from_secs(1)).contains(&wait),
        "{wait:?}"
    );
}

#[test]
fn an_unacceptable_hold_time_is_refused() {
    let mut session = Session::new(config());
    session.handle(Input::Start);
    session.handle(Input::Connected { local: LOCAL });
    let actions = session.handle(Input::Received(&peer_open(64512, 2)));
    assert_eq!(notifications_sent(&actions), vec![Notification::open(6)]);
}

#[test]
fn the_hold_timer_ends_a_silent_session_and_it_connects_again() {
    let (mut session, _) = established([route([192, 0, 2, 64])].into());
    let actions = session.handle(Input::Timer(Timer::Hold));
    assert_eq!(
        notifications_sent(&actions),
        vec![Notification::hold_timer_expired()]
    );
    assert_eq!(session.state(), State::Active);
    assert!(
        session.advertised().is_empty(),
        "a new session starts from nothing"
    );
    let actions = session.handle(Input::Timer(Timer::ConnectRetry));
    assert_eq!(actions[0], Action::Connect);
}

/// The waits of `seed`'s session after seven failures in a row.
fn retry_waits(seed: u64) -> Vec<Duration> {
    let mut session = Session::new(config()).with_jitter_seed(seed);
    session.handle(Input::Start);
    let mut waits = Vec::new();
    for _ in 0..7 {
        let actions = session.handle(Input::ConnectFailed);
        waits.push(armed(&actions, Timer::ConnectRetry).unwrap());
        session.handle(Input::Timer(Timer::ConnectRetry));
    }
    waits
}

#[test]
fn each_failure_in_a_row_doubles_the_wait_up_to_the_cap_less_a_random_quarter() {
    let nominal = [1, 2, 4, 8, 16, 30, 30].map(Duration::from_secs);
    let mut first_waits = Vec::new();
    for seed in 0..50 {
        let waits = retry_waits(seed);
        for (wait, nominal) in waits.iter().zip(nominal) {
            assert!(
                *wait <= nominal && *wait >= nominal.mul_f64(0.75),
                "seed {seed}: {wait:?} for {nominal:?}"
            );
        }
        first_waits.push(waits[0]);
    }
    first_waits.sort();
    first_waits.dedup();
    assert!(
        first_waits.len() > 25,
        "sessions of different seeds retry at different times (RFC 4271 §10): {first_waits:?}"
    );
}

#[test]
fn a_malformed_message_ends_in_a_notification_and_a_clean_reconnect() {
    let (mut session, _) = established(BTreeMap::new());
    let mut garbage = wire::encode_keepalive();
    garbage[18] = 9; // no such message type
    let actions = session.handle(Input::Received(&garbage));
    assert_eq!(
        notifications_sent(&actions),
        vec![Notification::header(3, vec![9])]
    );
    assert_eq!(session.state(), State::Active);
    session.handle(Input::Timer(Timer::ConnectRetry));
    session.handle(Input::Connected { local: LOCAL });
    assert_eq!(
        session.state(),
        State::OpenSent,
        "the next connection starts clean"
    );
}

#[test]
fn a_message_split_across_reads_is_reassembled() {
    let mut session = Session::new(config());
    session.handle(Input::Start);
    session.handle(Input::Connected { local: LOCAL });
    let open = peer_open(64512, 90);
    assert!(session.handle(Input::Received(&open[..7])).is_empty());
    let actions = session.handle(Input::Received(&open[7..]));
    assert!(matches!(sent(&actions)[..], [Message::Keepalive]));
}

#[test]
fn an_administrative_stop_sends_cease_and_a_graceful_one_sends_nothing() {
    let (mut session, _) = established(BTreeMap::new());
    let actions = session.handle(Input::Stop { graceful: false });
    assert_eq!(notifications_sent(&actions), vec![Notification::cease(2)]);
    assert_eq!(session.state(), State::Idle);
    let (mut session, _) = established(BTreeMap::new());
    let actions = session.handle(Input::Stop { graceful: true });
    assert!(sent(&actions).is_empty());
    assert!(actions.contains(&Action::Close));
}

#[test]
fn a_route_refresh_sends_every_route_again() {
    let (mut session, _) = established([route([192, 0, 2, 64])].into());
    let actions = session.handle(Input::Received(&wire::encode_route_refresh(Family::Ipv4)));
    assert!(matches!(&sent(&actions)[..], [Message::Update(u)] if u.announced == 1));
}

#[test]
fn ibgp_routes_carry_local_pref_and_an_empty_as_path() {
    let mut session = Session::new(Config {
        peer_asn: 64513,
        ..config()
    });
    session.set_routes([route([192, 0, 2, 64])].into());
    session.handle(Input::Start);
    session.handle(Input::Connected { local: LOCAL });
    session.handle(Input::Received(&peer_open(64513, 90)));
    let actions = session.handle(Input::Received(&wire::encode_keepalive()));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Report(Event::UpdatesSent { advertised: 1, .. })))
    );
    let attrs = session.advertised().values().next().unwrap();
    assert_eq!(attrs.local_pref, Some(100));
    assert!(attrs.as_path.is_empty());
}

#[test]
fn an_ipv6_session_needs_the_peer_to_carry_ipv6() {
    let mut session = Session::new(Config {
        family: Family::Ipv6,
        ..config()
    });
    session.handle(Input::Start);
    session.handle(Input::Connected {
        local: "2001:db8::1".parse().unwrap(),
    });
    let actions = session.handle(Input::Received(&peer_open(64512, 90)));
    let refused = notifications_sent(&actions);
    assert_eq!((refused[0].code, refused[0].subcode), (2, 7));
}
