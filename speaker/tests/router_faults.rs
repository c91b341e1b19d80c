//! Router faults (#16, scenario 5), with real speakers in node namespaces:
//! - FRR reset (`clear bgp *`) and killed and started again, several times: every session
//!   comes back, the routes are sent again, no speaker exits;
//! - a hostile peer (this test, on TCP port 179 of a host on the LAN) answers the speaker with
//!   malformed and unacceptable OPENs, UPDATEs and headers: each gets the NOTIFICATION RFC 4271
//!   names, the speaker connects again later, and its session with a real FRR beside it never
//!   drops a route.

use std::{
    collections::BTreeSet,
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use herald_bgp::wire::{self, Capabilities, Message, Notification, Open, codes::error};
use herald_domain::Family;
use herald_tests::routers::BgpDaemon;
use herald_tests::world::{BGP_POOL, Lan, NODE_ASN, ROUTER_ASN, RouterOptions, TIMEOUT};
use serde_json::json;

/// The IPv4 next hops a Cluster Service's address should have: every node.
fn every_node(lan: &Lan) -> BTreeSet<IpAddr> {
    lan.nodes.iter().map(|n| IpAddr::V4(n.link.ipv4)).collect()
}

/// Every speaker still runs.
fn speakers_run(lan: &mut Lan) -> anyhow::Result<()> {
    for node in &mut lan.nodes {
        let speaker = node.speaker.as_mut().expect("started");
        anyhow::ensure!(speaker.is_running(), "the speaker of {} exited", node.name);
    }
    Ok(())
}

#[tokio::test]
async fn router_resets_and_restarts_bring_every_route_back_and_no_speaker_exits()
-> anyhow::Result<()> {
    let mut lan = Lan::with_pool("router-restart", 2, &BGP_POOL).await?;
    lan.stop_layer2()?;
    let (mut router, link) = lan.router(BgpDaemon::Frr, NODE_ASN, RouterOptions::default())?;
    lan.bgp_peers(&link, NODE_ASN, json!({}))?;
    lan.bgp_advertise(json!({}))?;
    lan.start_speakers()?;
    let ips = lan.web_on_every_node(false).await?;
    let hops = every_node(&lan);
    for &ip in &ips {
        router.wait_next_hops(ip, &hops, TIMEOUT).await?;
    }

    let mut slowest = [Duration::ZERO; 2];
    let rounds = 3;
    for round in 0..rounds {
        // A hard reset of every session: the router sends a Cease and drops its routes.
        let reset = Instant::now();
        router.vtysh("clear bgp *")?;
        for &ip in &ips {
            router.wait_next_hops(ip, &hops, TIMEOUT).await?;
        }
        slowest[0] = slowest[0].max(reset.elapsed());
        // A crash: every FRR process killed, no NOTIFICATION; then started again.
        let crash = Instant::now();
        router = router.restart()?;
        for &ip in &ips {
            router.wait_next_hops(ip, &hops, TIMEOUT).await?;
        }
        slowest[1] = slowest[1].max(crash.elapsed());
        speakers_run(&mut lan)?;
        println!("round {round}: reset and crash survived");
    }
    let logs = lan.speaker_logs();
    assert!(!logs.contains("panicked"), "{logs}");
    println!(
        "{rounds} resets and {rounds} crashes of FRR with 2 nodes: every route back within {:?} \
         after a reset and {:?} after a crash (including FRR's start), 0 speaker exits",
        slowest[0], slowest[1]
    );
    Ok(())
}

/// What the hostile peer does once the speaker has connected and sent its OPEN.
#[derive(Debug, Clone, Copy)]
enum Hostility {
    /// Bytes that are no BGP header.
    Junk,
    OpenVersion3,
    OpenHoldTimeOne,
    OpenWrongAs,
    /// Established first, then an UPDATE whose attribute runs past the message.
    UpdateAttributeTooLong,
    /// Established first, then an UPDATE announcing a /33.
    UpdatePrefixTooLong,
    /// Established first, then a header that says 5,000 bytes.
    LengthTooLarge,
    /// Established first, then message type 9.
    UnknownType,
}

impl Hostility {
    /// The NOTIFICATION (code, subcode) RFC 4271 §6 names for it.
    fn expected(self) -> (u8, u8) {
        use error::{header, open, update};
        match self {
            Hostility::Junk => (error::MESSAGE_HEADER, header::CONNECTION_NOT_SYNCHRONIZED),
            Hostility::OpenVersion3 => (error::OPEN_MESSAGE, open::UNSUPPORTED_VERSION_NUMBER),
            Hostility::OpenHoldTimeOne => (error::OPEN_MESSAGE, open::UNACCEPTABLE_HOLD_TIME),
            Hostility::OpenWrongAs => (error::OPEN_MESSAGE, open::BAD_PEER_AS),
            Hostility::UpdateAttributeTooLong => {
                (error::UPDATE_MESSAGE, update::ATTRIBUTE_LENGTH_ERROR)
            }
            Hostility::UpdatePrefixTooLong => {
                (error::UPDATE_MESSAGE, update::INVALID_NETWORK_FIELD)
            }
            Hostility::LengthTooLarge => (error::MESSAGE_HEADER, header::BAD_MESSAGE_LENGTH),
            Hostility::UnknownType => (error::MESSAGE_HEADER, header::BAD_MESSAGE_TYPE),
        }
    }

    fn needs_established(self) -> bool {
        matches!(
            self,
            Hostility::UpdateAttributeTooLong
                | Hostility::UpdatePrefixTooLong
                | Hostility::LengthTooLarge
                | Hostility::UnknownType
        )
    }

    /// The bytes it sends.
    fn bytes(self, open: &[u8]) -> Vec<u8> {
        let with_header = |kind: u8, body: &[u8]| {
            let mut message = vec![0xff; 16];
            let length = u16::try_from(19 + body.len()).expect("short");
            message.extend_from_slice(&length.to_be_bytes());
            message.push(kind);
            message.extend_from_slice(body);
            message
        };
        let mut open = open.to_vec();
        match self {
            Hostility::Junk => vec![0u8; 40],
            Hostility::OpenVersion3 => {
                open[19] = 3;
                open
            }
            Hostility::OpenHoldTimeOne => {
                open[22..24].copy_from_slice(&1u16.to_be_bytes());
                open
            }
            Hostility::OpenWrongAs => hostile_open(65_000),
            // Withdrawn length 0; attributes length 4: ORIGIN (flags 0x40, type 1) claiming
            // 9 bytes of value where 1 follows.
            Hostility::UpdateAttributeTooLong => with_header(2, &[0, 0, 0, 4, 0x40, 1, 9, 0]),
            // No withdrawn, no attributes, NLRI 33/ 192.0.2.0.
            Hostility::UpdatePrefixTooLong => with_header(2, &[0, 0, 0, 0, 33, 192, 0, 2, 0, 0]),
            Hostility::LengthTooLarge => {
                let mut message = with_header(4, &[]);
                message[16..18].copy_from_slice(&5_000u16.to_be_bytes());
                message
            }
            Hostility::UnknownType => with_header(9, &[]),
        }
    }
}

/// An acceptable OPEN from the hostile peer, but with AS `asn`.
fn hostile_open(asn: u32) -> Vec<u8> {
    wire::encode_open(&Open {
        asn,
        hold_time: 90,
        router_id: Ipv4Addr::new(192, 0, 2, 250),
        capabilities: Capabilities {
            four_octet_as: Some(asn),
            families: BTreeSet::from([Family::Ipv4]),
            route_refresh: true,
            graceful_restart: None,
        },
    })
}

/// The next message from the speaker (`None` when it closed the connection).
fn next_message(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> anyhow::Result<Option<Message>> {
    loop {
        if let Some((message, used)) = wire::decode(buffer)
            .map_err(|n| anyhow::anyhow!("the speaker sent a malformed message: {n:?}"))?
        {
            buffer.drain(..used);
            return Ok(Some(message));
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Serves one connection of the speaker with `hostility`: the NOTIFICATION it answered with.
fn provoke(stream: &mut TcpStream, hostility: Hostility) -> anyhow::Result<Notification> {
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut buffer = Vec::new();
    let Some(Message::Open(_)) = next_message(stream, &mut buffer)? else {
        anyhow::bail!("the speaker did not open with an OPEN");
    };
    let open = hostile_open(ROUTER_ASN);
    if hostility.needs_established() {
        stream.write_all(&open)?;
        stream.write_all(&wire::encode_keepalive())?;
        // Its KEEPALIVE, then its routes (or nothing yet).
        let Some(Message::Keepalive) = next_message(stream, &mut buffer)? else {
            anyhow::bail!("the speaker did not confirm the OPEN");
        };
    }
    stream.write_all(&hostility.bytes(&open))?;
    while let Some(message) = next_message(stream, &mut buffer)? {
        if let Message::Notification(notification) = message {
            return Ok(notification);
        }
    }
    anyhow::bail!("the speaker closed without a NOTIFICATION")
}

/// Accepts the speaker's next connection within `within`.
fn accept(listener: &TcpListener, within: Duration) -> anyhow::Result<TcpStream> {
    let deadline = Instant::now() + within;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                return Ok(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "the speaker did not connect again"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[tokio::test]
async fn a_hostile_peer_gets_notifications_and_harms_no_other_session() -> anyhow::Result<()> {
    let mut lan = Lan::with_pool("hostile-peer", 1, &BGP_POOL).await?;
    lan.stop_layer2()?;
    let (router, link) = lan.router(BgpDaemon::Frr, NODE_ASN, RouterOptions::default())?;
    lan.bgp_peers(&link, NODE_ASN, json!({}))?;
    lan.bgp_advertise(json!({}))?;
    // The hostile peer: a host on the LAN that this test speaks for.
    let hostile = lan.topology.host("hostile")?;
    let hostile_link = lan.lan.attach(&hostile, 250)?;
    let address = SocketAddr::new(IpAddr::V4(hostile_link.ipv4), 179);
    let listener = hostile
        .thread(move || -> std::io::Result<TcpListener> {
            let listener = TcpListener::bind(address)?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the listener thread panicked"))???;
    lan.apply_owned(&json!({
        "apiVersion": "herald.dev/v1alpha1", "kind": "BGPPeer",
        "metadata": {"name": format!("{}-hostile", lan.ns.name())},
        "spec": {"myASN": NODE_ASN, "peerASN": ROUTER_ASN,
                 "peerAddress": hostile_link.ipv4.to_string(),
                 "nodeSelectors": [{"matchLabels": {"herald.dev/test": lan.ns.name()}}]},
    }))?;
    lan.start_speakers()?;
    let ips = lan.web_on_every_node(false).await?;
    let hops = every_node(&lan);
    for &ip in &ips {
        router.wait_next_hops(ip, &hops, TIMEOUT).await?;
    }

    // Open cases and Established ones alternate, so that the speaker's back-off (doubling
    // after each failure, reset when a session is established) stays short.
    let cases = [
        Hostility::Junk,
        Hostility::UpdateAttributeTooLong,
        Hostility::OpenVersion3,
        Hostility::UpdatePrefixTooLong,
        Hostility::OpenHoldTimeOne,
        Hostility::LengthTooLarge,
        Hostility::OpenWrongAs,
        Hostility::UnknownType,
    ];
    let peer =
        tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<(Hostility, Notification)>> {
            let mut answers = Vec::new();
            for hostility in cases {
                let mut stream = accept(&listener, Duration::from_secs(60))?;
                answers.push((hostility, provoke(&mut stream, hostility)?));
            }
            Ok(answers)
        });
    // Meanwhile the real router keeps its session and every route.
    let mut checks = 0;
    while !peer.is_finished() {
        for &ip in &ips {
            let hops_now = router.next_hops(ip)?;
            anyhow::ensure!(
                hops_now == hops,
                "{ip} via {hops_now:?} while the hostile peer runs"
            );
            checks += 1;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let answers = peer.await??;
    for (hostility, notification) in &answers {
        assert_eq!(
            (notification.code, notification.subcode),
            hostility.expected(),
            "{hostility:?}: {notification:?}"
        );
    }
    speakers_run(&mut lan)?;
    println!(
        "{} hostile exchanges, each answered with its NOTIFICATION and followed by a new \
         connection; {checks} route checks at the real router all intact; 0 speaker exits",
        answers.len()
    );
    Ok(())
}
