//! Herald's BFD (crates/bfd: the session machine and its tokio driver) against FRR's bfdd in
//! network namespaces, over IPv4 and IPv6 on one link: sessions come Up with the agreed
//! intervals, junk and packets from further than one hop are dropped and counted, a frozen
//! bfdd is declared down within the detection time, a cut link is seen by the router within
//! its detection time, both come back, and a session removed here is AdminDown there.

use std::{
    net::{IpAddr, UdpSocket},
    sync::Arc,
    time::{Duration, Instant},
};

use herald_bfd::{
    Config, ControlPacket, Diagnostic, State,
    driver::{Counters, Endpoint, Peer, SessionHandle},
    packet::SINGLE_HOP_PORT,
};
use herald_tests::{
    Topology,
    routers::{BfdTimers, BgpConfig, BgpDaemon, BgpNeighbor, BgpRouter},
    wait_for,
};
use nix::sys::signal::Signal;

const INTERVAL: Duration = Duration::from_millis(100);
/// Both sides: 3 x 100 ms.
const DETECTION: Duration = Duration::from_millis(300);
const COME_UP: Duration = Duration::from_secs(20);

fn all_ours(sessions: &[SessionHandle], state: State) -> Result<(), String> {
    let states: Vec<State> = sessions.iter().map(|s| s.status.borrow().state).collect();
    if states.iter().all(|s| *s == state) {
        Ok(())
    } else {
        Err(format!("ours: {states:?}"))
    }
}

fn all_frr(router: &BgpRouter, up: bool) -> Result<Vec<herald_tests::routers::BfdPeer>, String> {
    let peers = router.bfd_peers().map_err(|e| e.to_string())?;
    if peers.len() == 2 && peers.iter().all(|p| p.up == up) {
        Ok(peers)
    } else {
        Err(format!("FRR's: {peers:?}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herald_bfd_and_frr_bfdd_come_up_and_each_detects_the_other_gone_within_the_detection_time()
-> anyhow::Result<()> {
    let topology = Topology::new()?;
    let lan = topology.lan()?;
    let node = topology.host("node")?;
    let router_host = topology.host("router")?;
    let node_link = lan.attach(&node, 1)?;
    let router_link = lan.attach(&router_host, 254)?;
    let timers = BfdTimers {
        interval: INTERVAL,
        multiplier: 3,
    };
    let neighbors = [IpAddr::V4(node_link.ipv4), IpAddr::V6(node_link.ipv6)]
        .map(|address| BgpNeighbor {
            bfd: Some(timers),
            ..BgpNeighbor::new(address, 64513)
        })
        .to_vec();
    let router = BgpRouter::start(
        &router_host,
        BgpDaemon::Frr,
        &BgpConfig {
            asn: 64512,
            router_id: router_link.ipv4,
            neighbors,
            originate: Vec::new(),
            graceful_restart: false,
        },
    )?;

    // Herald's side runs in the node's namespace, on its own runtime, until told to stop.
    let (ready, started) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let peers = [IpAddr::V4(router_link.ipv4), IpAddr::V6(router_link.ipv6)];
    let herald = node.thread(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let endpoint = Endpoint::spawn();
            let mut sessions = Vec::new();
            for address in peers {
                let peer = Peer {
                    address,
                    source: None,
                    multihop: false,
                    minimum_ttl: 255,
                };
                let config = Config {
                    desired_min_tx: INTERVAL,
                    required_min_rx: INTERVAL,
                    detect_mult: 3,
                    passive: false,
                };
                match endpoint.add(peer, config).await {
                    Ok(session) => sessions.push(session),
                    Err(e) => {
                        let _ = ready.send(Err(e.to_string()));
                        return;
                    }
                }
            }
            let _ = ready.send(Ok((endpoint.counters.clone(), sessions)));
            let _ = stopped.await;
        });
    });
    let (counters, sessions): (Arc<Counters>, Vec<SessionHandle>) = started
        .recv_timeout(Duration::from_secs(10))?
        .map_err(anyhow::Error::msg)?;

    wait_for("both sessions Up on both sides", COME_UP, || async {
        all_ours(&sessions, State::Up)?;
        all_frr(&router, true).map(drop)
    })
    .await?;
    for session in &sessions {
        let status = session.status.borrow().clone();
        assert_eq!(status.transmit_interval, Some(INTERVAL), "{status:?}");
        assert_eq!(status.detection_time, Some(DETECTION), "{status:?}");
    }

    // Junk, and a well-formed packet from the router with TTL 64 (as if from further away):
    // dropped and counted, the sessions untouched.
    let target = (node_link.ipv4, SINGLE_HOP_PORT);
    router_host
        .thread(move || -> std::io::Result<()> {
            let socket = UdpSocket::bind("0.0.0.0:49999")?;
            socket.set_ttl(255)?;
            socket.send_to(b"junk", target)?;
            socket.send_to(&[0xff; 24], target)?;
            socket.set_ttl(64)?;
            let packet = ControlPacket {
                diagnostic: Diagnostic::None,
                state: State::Down,
                poll: false,
                final_: false,
                control_plane_independent: false,
                demand: false,
                detect_mult: 3,
                my_discriminator: 7,
                your_discriminator: 0,
                desired_min_tx_us: 1_000_000,
                required_min_rx_us: 1_000_000,
                required_min_echo_rx_us: 0,
            };
            socket.send_to(&packet.encode(), target)?;
            Ok(())
        })
        .join()
        .expect("the sender thread")??;
    wait_for(
        "the three datagrams to be dropped",
        Duration::from_secs(5),
        || async {
            let dropped = counters.dropped();
            let wanted = [("short", 1), ("version", 1), ("ttl", 1)];
            if wanted
                .iter()
                .all(|(reason, n)| dropped.get(reason) == Some(n))
            {
                Ok(())
            } else {
                Err(format!("dropped: {dropped:?}"))
            }
        },
    )
    .await?;
    all_ours(&sessions, State::Up).map_err(anyhow::Error::msg)?;

    // The router's bfdd frozen: Herald declares it down when the detection time passes.
    let bfdd = router.bfd_daemon().expect("bfdd runs");
    let frozen_at = Instant::now();
    bfdd.signal(Signal::SIGSTOP)?;
    wait_for(
        "Herald to declare the frozen router down",
        Duration::from_secs(5),
        || async { all_ours(&sessions, State::Down) },
    )
    .await?;
    let detected = frozen_at.elapsed();
    eprintln!("bfdd frozen -> Herald's sessions down: {detected:?}");
    for session in &sessions {
        assert_eq!(
            session.status.borrow().local_diagnostic,
            Diagnostic::ControlDetectionTimeExpired
        );
    }
    assert!(
        detected < DETECTION + Duration::from_millis(400),
        "frozen -> down took {detected:?}"
    );
    bfdd.signal(Signal::SIGCONT)?;
    wait_for("both sides Up again after the thaw", COME_UP, || async {
        all_ours(&sessions, State::Up)?;
        all_frr(&router, true).map(drop)
    })
    .await?;

    // The node's cable cut: the router declares Herald down within its detection time.
    let cut_at = Instant::now();
    node_link.set_connected(false)?;
    let peers = wait_for(
        "FRR to declare the cut node down",
        Duration::from_secs(5),
        || async { all_frr(&router, false) },
    )
    .await?;
    let seen = cut_at.elapsed();
    eprintln!("node cut -> FRR's sessions down (seen by polling vtysh): {seen:?}; {peers:?}");
    assert!(
        peers
            .iter()
            .all(|p| p.diagnostic == "control detection time expired"),
        "{peers:?}"
    );
    // vtysh answers in tens of milliseconds; the margin covers it.
    assert!(
        seen < DETECTION + Duration::from_millis(700),
        "cut -> down at the router took {seen:?}"
    );
    node_link.set_connected(true)?;
    wait_for(
        "both sides Up again after the cable is back",
        COME_UP,
        || async {
            all_ours(&sessions, State::Up)?;
            all_frr(&router, true).map(drop)
        },
    )
    .await?;

    // A session removed here is taken down on purpose: the router is told, not left to time out.
    drop(sessions);
    let peers = wait_for(
        "FRR to hear the sessions are down on purpose",
        Duration::from_secs(5),
        || async { all_frr(&router, false) },
    )
    .await?;
    assert!(
        peers
            .iter()
            .all(|p| p.remote_diagnostic.contains("administratively down")),
        "{peers:?}"
    );
    let _ = stop.send(());
    herald.join().expect("Herald's thread")?;
    Ok(())
}
