//! BGP convergence and scale against a real gobgpd, with the real API server, controller and
//! kube-controller-manager, and three real speakers in node namespaces. Prints:
//!
//! 1. IP assigned -> route in the router's RIB: from the moment a watch sees the Service's
//!    address in its status to the moment `gobgp monitor` shows the best path (`HERALD_BENCH_RUNS`
//!    Services, default 10).
//! 2. Last local endpoint gone -> route withdrawn: from the Pod readiness patch (the kubelet's
//!    part) to the withdrawal in the RIB, through the EndpointSlice controller (same runs).
//! 3. 1,000 Services advertised (`HERALD_BENCH_SERVICES`): from the BGPAdvertisement's creation,
//!    with every Service already allocated, to the last route in the RIB, and the UPDATE
//!    messages one speaker sent for them.
//! 4. Each speaker's resident memory (VmRSS) and peak (VmHWM) with those routes.
//!
//! `cargo bench -p herald-speaker --bench bgp_convergence`

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    collections::BTreeSet,
    net::IpAddr,
    time::{Duration, Instant},
};

use common::{Lan, RouterOptions};
use futures::{StreamExt, stream};
use herald_tests::{
    routers::{BgpDaemon, Family},
    wait_for,
};
use k8s_openapi::api::core::v1::Service;
use kube::{Api, api::PostParams};
use serde_json::json;

const NODE_ASN: u32 = 64513;
const WAIT: Duration = Duration::from_secs(30);

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::var("HERALD_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let count: usize = std::env::var("HERALD_BENCH_SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let mut lan = Lan::with_pool("bench-bgp", 3, &["203.0.113.0/24", "2001:db8:3::/112"]).await?;
    lan.stop_layer2()?;
    let (router, router_link) = lan.router(BgpDaemon::Gobgp, NODE_ASN, RouterOptions::default())?;
    lan.bgp_peers(&router_link, NODE_ASN, json!({}))?;
    lan.bgp_advertise(json!({}))?;
    lan.start_speakers()?;
    wait_for("every session up", WAIT, || async {
        let up = router.established_peers().map_err(|e| e.to_string())?.len();
        if up == 6 {
            Ok(())
        } else {
            Err(format!("{up} sessions"))
        }
    })
    .await?;
    let services: Api<Service> = Api::namespaced(lan.client.clone(), lan.ns.name());

    // 1 and 2: one Local Service per run, its only endpoint on n2.
    let monitor = router.monitor(Family::Ipv4)?;
    let (mut announce, mut withdraw) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let name = format!("timed-{run}");
        lan.pod(&name, &name, 1, true).await?;
        lan.service(&name, &name, "Local", false)?;
        let ip: IpAddr = lan.ingress(&name, 1).await?[0];
        // The moment the address is in the status, as a watch (like the speaker's) sees it.
        let assigned = Instant::now();
        let prefix = format!("{ip}/32");
        let seen = monitor
            .wait_for(&prefix, false, WAIT)
            .ok_or_else(|| anyhow::anyhow!("no route to {prefix} in the RIB"))?;
        announce.push(seen.at.saturating_duration_since(assigned).as_secs_f64() * 1000.0);
        let gone = Instant::now();
        lan.set_ready(&name, false, 1).await?;
        let seen = monitor
            .wait_for(&prefix, true, WAIT)
            .ok_or_else(|| anyhow::anyhow!("{prefix} not withdrawn"))?;
        withdraw.push(seen.at.saturating_duration_since(gone).as_secs_f64() * 1000.0);
        lan.kubectl(&["delete", "service", &name])?;
    }
    println!("IP assigned -> route in gobgpd's RIB, {runs} runs (ms): {announce:.1?}");
    println!("  median {:.1} ms", median(&mut announce));
    println!("last local endpoint not ready -> route withdrawn, {runs} runs (ms): {withdraw:.1?}");
    println!("  median {:.1} ms", median(&mut withdraw));
    drop(monitor);

    // 3: many Services, allocated while no advertisement selects them, then advertised at once.
    lan.kubectl(&[
        "delete",
        "bgpadvertisement",
        &format!("{}-bgp", lan.ns.name()),
    ])?;
    for i in 0..3 {
        lan.pod(&format!("web-{i}"), "web", i, true).await?;
    }
    let created: Vec<kube::Result<Service>> = stream::iter(0..count)
        .map(|i| {
            let services = services.clone();
            async move {
                let service: Service = serde_json::from_value(json!({
                    "metadata": {"name": format!("web-{i}")},
                    "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
                             "ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack",
                             "ports": [{"port": 8765, "targetPort": 9376}]},
                }))
                .expect("a valid Service");
                services.create(&PostParams::default(), &service).await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for result in created {
        result?;
    }
    wait_for(
        &format!("{count} addresses allocated"),
        Duration::from_secs(300),
        || async {
            let list = services
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            let allocated = list
                .items
                .iter()
                .filter(|s| {
                    s.status
                        .as_ref()
                        .and_then(|s| s.load_balancer.as_ref())
                        .and_then(|l| l.ingress.as_ref())
                        .is_some_and(|i| !i.is_empty())
                })
                .count();
            if allocated >= count {
                Ok(())
            } else {
                Err(format!("{allocated}"))
            }
        },
    )
    .await?;
    let v6_peer = format!(
        "herald_speaker_bgp_updates_sent_total{{peer=\"{}-v6\"}}",
        lan.ns.name()
    );
    let updates_before = lan.metric(0, &v6_peer).unwrap_or(0.0);
    let monitor = router.monitor(Family::Ipv6)?;
    let start = Instant::now();
    lan.bgp_advertise(json!({}))?;
    let mut prefixes = BTreeSet::new();
    let mut last = start;
    while prefixes.len() < count {
        let change = monitor
            .changes
            .recv_timeout(Duration::from_secs(120))
            .map_err(|_| anyhow::anyhow!("only {} of {count} routes arrived", prefixes.len()))?;
        if !change.withdrawn && prefixes.insert(change.prefix) {
            last = change.at;
        }
    }
    // Let the metric catch up with the last UPDATE.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let updates = lan.metric(0, &v6_peer)? - updates_before;
    println!(
        "{count} Services advertised: all routes in gobgpd's RIB {:.0} ms after the BGPAdvertisement was created; n1 sent {updates} UPDATE messages for them",
        last.saturating_duration_since(start).as_secs_f64() * 1000.0
    );

    // 4: memory with those routes.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for node in &lan.nodes {
        let pid = node.speaker.as_ref().map(|p| p.pid()).unwrap_or_default();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_owned())
                .unwrap_or_default()
        };
        println!(
            "{}: VmRSS {} kB, VmHWM {} kB",
            node.name,
            field("VmRSS:"),
            field("VmHWM:")
        );
    }
    Ok(())
}
