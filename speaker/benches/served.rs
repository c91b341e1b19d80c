//! Served traffic, end to end: a client's requests answered by Pods through the real
//! kube-proxy on every node (`herald_tests::datapath`), with real speakers, the real API server
//! and controller, and for BGP FRR with zebra installing routes in its kernel.
//!
//! - Layer-2 failover under traffic: 100 requests a second (a new connection each, 100 ms
//!   timeout) to a Cluster Service while the announcing node dies (its speaker SIGKILLed and
//!   its cable cut at the same moment; its own Pod unready beforehand): requests lost and the
//!   longest gap between answered requests, per run.
//! - BGP, `externalTrafficPolicy: Local`: the last local endpoint of n1 turns unready ->
//!   requests go only to the other nodes: from the Pod status patch to the last request that
//!   failed or was answered through n1 (100 requests a second, 100 ms timeout, 4 s).
//! - Per-Pod spread under Local, 3 Pods on n1 and 1 on n2, 1,000 flows from the outside
//!   client through the router (L4 hash), with `weightByLocalEndpoints` and without.
//!
//! `cargo build --release -p herald-controller -p herald-speaker --bins` first, then
//! `cargo bench -p herald-speaker --bench served` (`HERALD_BENCH_RUNS`, default 10). Prints
//! every run, the median and the maximum. Timing never decides a test; see
//! `docs/benchmarks.md` for recorded figures.

use std::{net::SocketAddr, time::Duration};

use herald_tests::world::{Lan, Routed, spread, wait_all_served};
use herald_tests::{bench, datapath};
use serde_json::json;

const INTERVAL: Duration = Duration::from_millis(10);
const REQUEST_TIMEOUT: Duration = Duration::from_millis(100);

/// One layer-2 failover under traffic: (requests lost, longest gap in ms, requests sent).
async fn l2_failover(run: usize) -> anyhow::Result<(f64, f64, usize)> {
    let mut lan = Lan::new(&format!("bench-served-{run}"), 3).await?;
    lan.serve_traffic().await?;
    lan.start_speakers()?;
    let (ip, owner, _pods) = lan.web_with_a_spare_owner().await?;
    let link = lan.nodes[owner].link.clone();
    let mut speaker = lan.nodes[owner].speaker.take().expect("running");
    let mut killed = false;
    let results = datapath::request_loop(
        &lan.client_host,
        SocketAddr::new(ip, 8765),
        INTERVAL,
        Duration::from_secs(6),
        REQUEST_TIMEOUT,
        |at| {
            if !killed && at >= Duration::from_secs(2) {
                speaker.kill();
                let _ = link.set_connected(false);
                killed = true;
            }
        },
    );
    let lost = results.iter().filter(|s| s.reply.is_err()).count();
    let gap = datapath::longest_gap(&results);
    Ok((lost as f64, gap.as_secs_f64() * 1000.0, results.len()))
}

/// One BGP Local move: ms from n1's last endpoint unready to the last request that failed or
/// reached n1's Pod.
async fn bgp_local_unready(routed: &Routed, run: usize) -> anyhow::Result<f64> {
    let lan = &routed.lan;
    let names: Vec<String> = (0..3).map(|i| format!("web-{run}-{i}")).collect();
    let mut pods = Vec::new();
    for (i, name) in names.iter().enumerate() {
        pods.push(lan.serving_pod(name, &format!("web-{run}"), i).await?);
    }
    let service = format!("web-{run}");
    lan.service(&service, &service, "Local", false)?;
    let ip = lan.ingress(&service, 1).await?[0];
    wait_all_served(&routed.outside.host, ip, 3, None).await?;
    let start = std::time::Instant::now();
    pods[0].set_ready(&lan.client, lan.ns.name(), false).await?;
    let patched = start.elapsed();
    let results = datapath::request_loop(
        &routed.outside.host,
        SocketAddr::new(ip, 8765),
        INTERVAL,
        Duration::from_secs(4),
        REQUEST_TIMEOUT,
        |_| {},
    );
    let last_bad = results
        .iter()
        .filter(|s| match &s.reply {
            Ok(reply) => reply.pod == names[0],
            Err(_) => true,
        })
        .map(|s| s.at + patched)
        .max()
        .unwrap_or_default();
    lan.kubectl(&["delete", "service", &service])?;
    Ok(last_bad.as_secs_f64() * 1000.0)
}

/// Per-Pod shares of 1,000 flows, with and without weights.
async fn spread_with_and_without_weights() -> anyhow::Result<()> {
    let routed = Routed::new("bench-spread", json!({"weightByLocalEndpoints": true})).await?;
    let lan = &routed.lan;
    let mut pods = Vec::new();
    for (name, node) in [("web-0", 0), ("web-1", 0), ("web-2", 0), ("web-3", 1)] {
        pods.push(lan.serving_pod(name, "web", node).await?);
    }
    lan.service("web", "web", "Local", true)?;
    let ips = lan.ingress("web", 2).await?;
    for weights in [true, false] {
        lan.bgp_advertise(json!({"weightByLocalEndpoints": weights}))?;
        // Let the new attributes reach the router's kernel.
        tokio::time::sleep(Duration::from_secs(3)).await;
        for &ip in &ips {
            wait_all_served(&routed.outside.host, ip, 4, None).await?;
            let (per_pod, _) = spread(&routed.outside.host, ip, 1000)?;
            let shares: Vec<String> = per_pod
                .iter()
                .map(|(pod, n)| format!("{pod} {:.1} %", *n as f64 / 10.0))
                .collect();
            println!(
                "spread, 3 Pods on n1 and 1 on n2, {ip}, {} weights, 1,000 flows: {}",
                if weights { "with" } else { "without" },
                shares.join(", ")
            );
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs = bench::runs();
    let (mut lost, mut gaps) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let (l, g, sent) = l2_failover(run).await?;
        println!("layer-2 failover run {run}: {l} of {sent} requests lost, longest gap {g:.0} ms");
        lost.push(l);
        gaps.push(g);
    }
    bench::summary(
        "layer-2 failover under traffic: requests lost (100/s)",
        "requests",
        lost,
    );
    bench::summary(
        "layer-2 failover under traffic: longest gap between answers",
        "ms",
        gaps,
    );

    let routed = Routed::new("bench-local", json!({})).await?;
    let mut moves = Vec::new();
    for run in 0..runs {
        let ms = bgp_local_unready(&routed, run).await?;
        println!(
            "BGP Local run {run}: requests only to the other nodes {ms:.0} ms after n1's endpoint went unready"
        );
        moves.push(ms);
    }
    bench::summary(
        "BGP Local: last local endpoint unready -> requests only to the remaining nodes",
        "ms",
        moves,
    );
    drop(routed);
    spread_with_and_without_weights().await
}
