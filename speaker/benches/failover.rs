//! Layer-2 failover, end to end, in network namespaces with the real API server:
//!
//! - SIGKILL of the announcing speaker -> the first gratuitous ARP from the new owner, as the
//!   client's interface sees it (tcpdump timestamps);
//! - `externalTrafficPolicy: Local`: the only ready endpoint moves to another node (two Pod
//!   status patches) -> the first gratuitous ARP from that node. This includes the
//!   kube-controller-manager updating the EndpointSlice and the watch delivering it; and,
//!   split out, from the moment the bench's own watch sees the moved EndpointSlice to that
//!   GARP (the speaker's share: it gets the same watch event at about the same time).
//!
//! `cargo bench -p herald-speaker --bench failover` (`HERALD_BENCH_RUNS`, default 10).
//! `HERALD_BENCH_SPEAKER=metallb` measures MetalLB's speakers and controller instead (built from
//! its Go module by `tests/metallb/build`, memberlist on the nodes' addresses), in the same
//! namespaces, the same way.
//! Prints every run, the median and the maximum. Timing never decides a test; see
//! `docs/benchmarks.md` for recorded figures.

use std::{
    net::IpAddr,
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt;
use herald_api::service::ready_endpoint_nodes;
use herald_tests::metallb::Speakers;
use herald_tests::world::{Lan, POOL, TIMEOUT};
use herald_tests::{Process, bench, wait_for};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{
    Api,
    runtime::{WatchStreamExt, watcher},
};

/// Captures ARP on the client's interface with epoch timestamps.
fn capture(lan: &Lan, label: &str) -> anyhow::Result<Process> {
    let mut cmd = Command::new("tcpdump");
    cmd.args(["-l", "-n", "-tt", "-e", "-i", "eth0", "arp"]);
    let process = lan.client_host.spawn(label, cmd)?;
    // tcpdump says "listening on" once it captures.
    std::thread::sleep(Duration::from_millis(500));
    Ok(process)
}

/// The time of the first gratuitous ARP for `ip` from a MAC other than `old_mac` in the
/// capture, in seconds since the epoch.
fn first_garp(log: &str, ip: IpAddr, old_mac: &str) -> Option<f64> {
    // A request for `ip` from `ip`; tcpdump shows the target MAC when it is not zero
    // (MetalLB's say ff:ff:ff:ff:ff:ff): "who-has IP (MAC) tell IP".
    let (asks, tells) = (format!("Request who-has {ip} "), format!(" tell {ip},"));
    log.lines()
        .filter(|line| line.contains(&asks) && line.contains(&tells))
        .find_map(|line| {
            let mut words = line.split_whitespace();
            let at: f64 = words.next()?.parse().ok()?;
            let mac = words.next()?;
            (mac != old_mac).then_some(at)
        })
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

async fn wait_garp(lan: &Lan, capture: &Process, ip: IpAddr, old: usize) -> anyhow::Result<f64> {
    let old_mac = lan.nodes[old].link.mac.clone();
    Ok(
        wait_for("a gratuitous ARP from the new owner", TIMEOUT, || async {
            first_garp(&capture.log(), ip, &old_mac).ok_or_else(|| "none yet".to_owned())
        })
        .await?,
    )
}

/// Prints seconds as milliseconds.
fn summary(what: &str, seconds: Vec<f64>) {
    bench::summary(what, "ms", seconds.iter().map(|s| s * 1000.0).collect());
}

async fn sigkill(runs: usize, metallb: bool) -> anyhow::Result<Vec<f64>> {
    let (mut lan, speakers) = Speakers::lan("bench-kill", metallb, &POOL).await?;
    for i in 0..lan.nodes.len() {
        lan.pod(&format!("web-{i}"), "web", i, true).await?;
    }
    lan.service_of_class("web", "web", "Cluster", false, speakers.class())?;
    let ip = lan.ingress("web", 1).await?[0];
    let mut results = Vec::new();
    for run in 0..runs {
        let owner = lan.resolve(ip).await?;
        let tcpdump = capture(&lan, &format!("tcpdump-kill-{run}"))?;
        let killed_at = now();
        lan.nodes[owner].speaker.as_mut().expect("running").kill();
        let garp = wait_garp(&lan, &tcpdump, ip, owner).await?;
        results.push(garp - killed_at);
        drop(tcpdump);
        // Back to three speakers; let ownership settle before the next run.
        speakers.start(&mut lan, owner)?;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    Ok(results)
}

/// When the bench's own watch saw each version of the EndpointSlices of the namespace, with
/// the nodes of their ready endpoints: the moment the endpoint move reached watchers.
fn watch_slices(lan: &Lan) -> tokio::sync::mpsc::UnboundedReceiver<(f64, Vec<String>)> {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let api: Api<EndpointSlice> = Api::namespaced(lan.client.clone(), lan.ns.name());
    tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).touched_objects());
        while let Some(Ok(slice)) = events.next().await {
            let ready: Vec<String> = ready_endpoint_nodes(&slice).map(str::to_owned).collect();
            if sender.send((now(), ready)).is_err() {
                return;
            }
        }
    });
    receiver
}

async fn local_move(runs: usize, metallb: bool) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let (lan, speakers) = Speakers::lan("bench-local", metallb, &POOL).await?;
    lan.pod("web-0", "web", 0, true).await?;
    lan.pod("web-1", "web", 1, false).await?;
    lan.service_of_class("web", "web", "Local", false, speakers.class())?;
    let ip = lan.ingress("web", 1).await?[0];
    let mut slices = watch_slices(&lan);
    let (mut totals, mut speaker_shares) = (Vec::new(), Vec::new());
    let mut from = 0;
    for run in 0..runs {
        assert_eq!(lan.resolve(ip).await?, from);
        let to = 1 - from;
        let tcpdump = capture(&lan, &format!("tcpdump-local-{run}"))?;
        while slices.try_recv().is_ok() {}
        let moved_at = now();
        lan.set_ready(&format!("web-{to}"), true, to).await?;
        lan.set_ready(&format!("web-{from}"), false, from).await?;
        let garp = wait_garp(&lan, &tcpdump, ip, from).await?;
        // The first version of the slice with the endpoint on `to` only.
        let to_node = lan.nodes[to].name.clone();
        let mut seen = None;
        while let Ok((at, ready)) = slices.try_recv() {
            if seen.is_none() && ready == [to_node.clone()] {
                seen = Some(at);
            }
        }
        totals.push(garp - moved_at);
        if let Some(at) = seen {
            speaker_shares.push(garp - at);
        }
        drop(tcpdump);
        from = to;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Ok((totals, speaker_shares))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs = bench::runs();
    let metallb = std::env::var("HERALD_BENCH_SPEAKER").as_deref() == Ok("metallb");
    let who = if metallb { "MetalLB: " } else { "" };
    summary(
        &format!("{who}SIGKILL of the owner -> first GARP from the new owner"),
        sigkill(runs, metallb).await?,
    );
    let (totals, speaker_shares) = local_move(runs, metallb).await?;
    summary(
        &format!("{who}Local policy: endpoint moved -> first GARP from its node"),
        totals,
    );
    summary(
        &format!("{who}Local policy: EndpointSlice change seen by a watch -> first GARP"),
        speaker_shares,
    );
    Ok(())
}
