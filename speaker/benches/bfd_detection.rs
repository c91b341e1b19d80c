//! How fast a router stops sending traffic to a dead node: BFD against the BGP hold time.
//!
//! Two nodes and a real FRR (bgpd, bfdd and zebra, which installs the routes in its kernel),
//! the example Service `web` on both nodes, so the router's kernel route to its address has two
//! next hops. Each run freezes n1's speaker (SIGSTOP: the process is alive, its sockets open, it
//! says nothing, as a hung or partitioned node) and measures from that moment until n1's next
//! hop is gone from the router's kernel route (`ip route show`, polled every few milliseconds),
//! then thaws it and waits until the route has both next hops again; the freezes fall 1.0 to
//! 1.9 s after the route came back, spread evenly over the keepalive interval. Two setups, one after the
//! other, each in its own namespaces and with its own router:
//!
//! 1. BFD at 100 ms x 3 on both sides (a BFDProfile on the BGPPeers, `bfd` on FRR's
//!    neighbors), with a BGP hold time of 90 s;
//! 2. no BFD, and the shortest hold time BGP allows, 3 s (RFC 4271; the CRD refuses less).
//!
//! `cargo bench -p herald-speaker --bench bfd_detection` (`HERALD_BENCH_RUNS`, default 10)

use std::{
    collections::BTreeSet,
    net::IpAddr,
    time::{Duration, Instant},
};

use herald_domain::Prefix;
use herald_tests::{
    bench,
    datapath::kernel_next_hops,
    netns::Host,
    routers::{BfdTimers, BgpDaemon},
    world::{BGP_POOL, Lan, NODE_ASN, RouterOptions},
};
use nix::sys::signal::Signal;
use serde_json::json;

/// Longest wait for a route to change, in any run.
const WAIT: Duration = Duration::from_secs(60);

/// One way of running the sessions: the router's options and the BGPPeers' spec, with the
/// BFDProfile it names, if any.
struct Setup {
    name: &'static str,
    router: RouterOptions,
    profile: Option<serde_json::Value>,
    peer: serde_json::Value,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs = bench::runs();
    let bfd = Setup {
        name: "bfd",
        router: RouterOptions {
            bfd: Some(BfdTimers {
                interval: Duration::from_millis(100),
                multiplier: 3,
            }),
            ..RouterOptions::default()
        },
        profile: Some(
            json!({"receiveInterval": 100, "transmitInterval": 100, "detectMultiplier": 3}),
        ),
        peer: json!({"holdTime": "90s"}),
    };
    let hold = Setup {
        name: "hold",
        router: RouterOptions::default(),
        profile: None,
        peer: json!({"holdTime": "3s"}),
    };
    let with_bfd = frozen_until_gone(bfd, runs).await?;
    let with_hold_time = frozen_until_gone(hold, runs).await?;
    bench::summary(
        "BFD 100 ms x 3 (hold time 90 s): n1 frozen -> its next hop gone from FRR's kernel route",
        "ms",
        with_bfd,
    );
    bench::summary(
        "no BFD, hold time 3 s: n1 frozen -> its next hop gone from FRR's kernel route",
        "ms",
        with_hold_time,
    );
    Ok(())
}

/// Builds the world of `setup` and makes `runs` runs in it: the time from n1's speaker frozen
/// to its next hop gone from the router's kernel, in milliseconds, per run.
async fn frozen_until_gone(setup: Setup, runs: usize) -> anyhow::Result<Vec<f64>> {
    let mut lan = Lan::with_pool(&format!("bench-bfd-{}", setup.name), 2, &BGP_POOL).await?;
    lan.stop_layer2()?;
    let (router, router_link) = lan.router(BgpDaemon::Frr, NODE_ASN, setup.router)?;
    let mut peer = setup.peer;
    let bfd = setup.profile.is_some();
    if let Some(timers) = setup.profile {
        let name = format!("{}-fast", lan.ns.name());
        lan.apply_owned(
            &json!({"apiVersion": "herald.dev/v1alpha1", "kind": "BFDProfile",
            "metadata": {"name": name}, "spec": timers}),
        )?;
        peer["bfdProfile"] = json!(name);
    }
    lan.bgp_peers(&router_link, NODE_ASN, peer)?;
    lan.bgp_advertise(json!({}))?;
    lan.start_speakers()?;
    let ip = lan.web_on_every_node(false).await?[0];
    let prefix = Prefix::host(ip).to_string();
    let both = lan.next_hops(ip, &[0, 1]);
    let without_n1 = lan.next_hops(ip, &[1]);
    let speaker = lan.nodes[0].speaker.as_ref().expect("started above");
    let mut samples = Vec::with_capacity(runs);
    for run in 0..runs {
        kernel_route_via(router.host(), &prefix, &both).await?;
        if bfd {
            // The router acts on BFD Down only for a session that has been Up.
            router.wait_bfd_up(4, WAIT).await?;
        }
        // A node dies at any moment, not just after its last message: spread the freezes
        // over a second, past the 1 s between keepalives of a 3 s hold time.
        tokio::time::sleep(Duration::from_millis(1000 + (run as u64 * 100) % 1000)).await;
        let frozen = Instant::now();
        speaker.signal(Signal::SIGSTOP)?;
        let gone = kernel_route_via(router.host(), &prefix, &without_n1).await;
        speaker.signal(Signal::SIGCONT)?;
        samples.push(gone?.saturating_duration_since(frozen).as_secs_f64() * 1000.0);
    }
    Ok(samples)
}

/// Polls `host`'s kernel route to `prefix` until its next hops are exactly `hops` (within
/// [`WAIT`]): the moment that was seen.
async fn kernel_route_via(
    host: &Host,
    prefix: &str,
    hops: &BTreeSet<IpAddr>,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + WAIT;
    loop {
        let now: BTreeSet<IpAddr> = kernel_next_hops(host, prefix)?
            .into_iter()
            .map(|(gateway, _)| gateway)
            .collect();
        if &now == hops {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "{prefix} in {}'s kernel: via {now:?}, not {hops:?}",
                host.name()
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
