//! The tokio driver over real TCP on loopback, with the test playing the router: the session
//! comes up, routes arrive, malformed bytes end in a NOTIFICATION and a clean reconnect,
//! stopping withdraws and sends Cease, and the last NOTIFICATION is kept until Established.

use std::{collections::BTreeMap, net::Ipv4Addr, sync::Arc, time::Duration};

use herald_bgp::{
    Config, Notification, RouteAttributes, State,
    driver::{self, Transport},
    wire::{self, Capabilities, Message, Open},
};
use herald_domain::{Family, Prefix};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    time::timeout,
};

const WAIT: Duration = Duration::from_secs(10);

/// The router's end of one connection.
struct Peer {
    stream: TcpStream,
    inbox: Vec<u8>,
}

impl Peer {
    async fn accept(listener: &TcpListener) -> Peer {
        let (stream, _) = timeout(WAIT, listener.accept())
            .await
            .expect("a connection")
            .expect("accepted");
        Peer {
            stream,
            inbox: Vec::new(),
        }
    }

    /// The next message, or `None` when the speaker closed the connection.
    async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some((message, used)) =
                wire::decode(&self.inbox).expect("the speaker sends valid messages")
            {
                self.inbox.drain(..used);
                return Some(message);
            }
            let mut buf = [0u8; 4096];
            let n = timeout(WAIT, self.stream.read(&mut buf))
                .await
                .expect("a message in time")
                .ok()?;
            if n == 0 {
                return None;
            }
            self.inbox.extend_from_slice(&buf[..n]);
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("written");
    }

    /// Answers the speaker's OPEN and KEEPALIVE; returns what followed up to End-of-RIB.
    async fn establish(&mut self) -> Vec<Message> {
        assert!(matches!(self.next().await, Some(Message::Open(_))));
        self.send(&wire::encode_open(&Open {
            asn: 64512,
            hold_time: 9,
            router_id: Ipv4Addr::new(192, 0, 2, 254),
            capabilities: Capabilities {
                four_octet_as: Some(64512),
                families: [Family::Ipv4].into_iter().collect(),
                route_refresh: true,
                graceful_restart: None,
            },
        }))
        .await;
        assert_eq!(self.next().await, Some(Message::Keepalive));
        self.send(&wire::encode_keepalive()).await;
        let mut after = Vec::new();
        loop {
            let message = self.next().await.expect("routes then End-of-RIB");
            let end = matches!(&message, Message::Update(u) if u.end_of_rib.is_some());
            after.push(message);
            if end {
                return after;
            }
        }
    }
}

fn routes() -> BTreeMap<Prefix, RouteAttributes> {
    [(
        Prefix::new("203.0.113.64".parse().unwrap(), 32),
        RouteAttributes::default(),
    )]
    .into()
}

async fn start() -> (TcpListener, driver::Handle) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let handle = driver::spawn(
        "router".into(),
        Config {
            local_asn: 64513,
            peer_asn: 64512,
            router_id: Ipv4Addr::new(192, 0, 2, 1),
            hold_time: 90,
            keepalive_time: None,
            connect_retry: Duration::from_millis(100),
            family: Family::Ipv4,
            graceful_restart: None,
        },
        Transport {
            peer: listener.local_addr().expect("bound"),
            source: None,
            ttl: 64,
            password: None,
        },
        routes(),
        Arc::new(|_| {}),
    );
    (listener, handle)
}

async fn wait_state(handle: &mut driver::Handle, state: State) {
    timeout(WAIT, handle.status.wait_for(|s| s.state == state))
        .await
        .expect("in time")
        .expect("running");
}

#[tokio::test]
async fn the_session_comes_up_over_tcp_and_sends_its_routes() {
    let (listener, mut handle) = start().await;
    let mut peer = Peer::accept(&listener).await;
    let after = peer.establish().await;
    assert!(
        matches!(&after[0], Message::Update(u) if u.announced == 1),
        "{after:?}"
    );
    wait_state(&mut handle, State::Established).await;
    assert_eq!(handle.status.borrow().advertised, 1);
    // The negotiated hold time is 9 s: a KEEPALIVE every 3 s.
    assert_eq!(peer.next().await, Some(Message::Keepalive));
    handle.set_routes(BTreeMap::new());
    assert!(matches!(peer.next().await, Some(Message::Update(u)) if u.withdrawn == 1));
}

#[tokio::test]
async fn malformed_bytes_end_in_a_notification_and_a_clean_reconnect() {
    let (listener, mut handle) = start().await;
    let mut peer = Peer::accept(&listener).await;
    peer.establish().await;
    let mut garbage = wire::encode_keepalive();
    garbage[0] = 0; // a broken marker: connection not synchronised
    peer.send(&garbage).await;
    assert_eq!(
        peer.next().await,
        Some(Message::Notification(Notification::header(1, Vec::new())))
    );
    assert_eq!(peer.next().await, None, "then the speaker closes");
    // It connects again and starts over: OPEN, then every route again.
    let mut again = Peer::accept(&listener).await;
    let after = again.establish().await;
    assert!(matches!(&after[0], Message::Update(u) if u.announced == 1));
    wait_state(&mut handle, State::Established).await;
    assert!(handle.status.borrow().last_error.is_none());
}

/// Stopping withdraws every route and then sends Cease, so the router moves traffic to its
/// other paths while the session still stands; a graceful stop (a restart with graceful
/// restart) closes at once and leaves the routes to the router's restart timer.
#[tokio::test]
async fn stopping_withdraws_then_sends_cease_unless_graceful() {
    let (listener, handle) = start().await;
    let mut peer = Peer::accept(&listener).await;
    peer.establish().await;
    handle.stop(false).await;
    assert!(
        matches!(peer.next().await, Some(Message::Update(u)) if u.withdrawn == 1 && u.announced == 0),
        "the route withdrawn first"
    );
    assert_eq!(
        peer.next().await,
        Some(Message::Notification(Notification::cease(2)))
    );
    let (listener, handle) = start().await;
    let mut peer = Peer::accept(&listener).await;
    peer.establish().await;
    handle.stop(true).await;
    assert_eq!(peer.next().await, None, "closed without a NOTIFICATION");
}

/// A router that refuses the speaker's AS: the NOTIFICATION stays in the status, with the
/// time it was first seen, through the retries whose connections the router drops without a
/// word; establishing clears it.
#[tokio::test]
async fn the_last_notification_outlives_later_transport_errors_until_established() {
    let (listener, mut handle) = start().await;
    let mut refusing = Peer::accept(&listener).await;
    assert!(matches!(refusing.next().await, Some(Message::Open(_))));
    let bad_peer_as = Notification::new(
        wire::codes::error::OPEN_MESSAGE,
        wire::codes::error::open::BAD_PEER_AS,
        Vec::new(),
    );
    refusing
        .send(&wire::encode_notification(&bad_peer_as))
        .await;
    drop(refusing);
    let kept = |status: &driver::Status| {
        status
            .last_notification
            .as_ref()
            .map(|n| (n.text.clone(), n.at))
    };
    let first = timeout(
        WAIT,
        handle.status.wait_for(|s| s.last_notification.is_some()),
    )
    .await
    .expect("in time")
    .expect("running")
    .clone();
    let (text, at) = kept(&first).expect("a NOTIFICATION");
    assert_eq!(
        text,
        "received NOTIFICATION open-message-error, bad peer AS (2/2)"
    );
    // Two retries, each dropped by the router as soon as it connects.
    for _ in 0..2 {
        let dropped = Peer::accept(&listener).await;
        drop(dropped);
        timeout(WAIT, handle.status.wait_for(|s| s.last_error.is_some()))
            .await
            .expect("in time")
            .expect("running");
    }
    let status = handle.status.borrow().clone();
    assert_eq!(kept(&status), Some((text, at)), "the root cause stays");
    assert_ne!(status.state, State::Established);

    let mut good = Peer::accept(&listener).await;
    good.establish().await;
    wait_state(&mut handle, State::Established).await;
    let status = handle.status.borrow().clone();
    assert_eq!((status.last_error, status.last_notification), (None, None));
}
