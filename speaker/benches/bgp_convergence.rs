//! BGP convergence and scale against a real gobgpd, with the real API server, controller and
//! kube-controller-manager, and three real speakers in node namespaces. Prints:
//!
//! 1. IP assigned -> route in the router's RIB: from the moment the bench's own watch sees the
//!    Service's address in its status (as the speaker's watch would) to the moment
//!    `gobgp monitor` shows the best path (`HERALD_BENCH_RUNS` Services, default 10).
//! 2. Last local endpoint gone -> route withdrawn: from the Pod readiness patch (the kubelet's
//!    part) to the withdrawal in the RIB, through the EndpointSlice controller (same runs).
//! 3. 1,000 Services advertised (`HERALD_BENCH_SERVICES`): from the BGPAdvertisement's creation,
//!    with every Service already allocated and its EndpointSlice written, to the last route in
//!    the RIB, and the UPDATE messages one speaker sent for them.
//! 4. Each speaker's resident memory (VmRSS) and peak (VmHWM) with those routes.
//!
//! `cargo bench -p herald-speaker --bench bgp_convergence`
//!
//! `HERALD_BENCH_SPEAKER=metallb` runs 1 and 2 with MetalLB's speakers and controller instead
//! (built from its Go module by `tests/metallb/build`; its native BGP, IPv4 sessions), the same
//! way.

use std::{
    collections::BTreeSet,
    net::IpAddr,
    time::{Duration, Instant},
};

use futures::StreamExt;
use herald_domain::Family;
use herald_tests::metallb::Speakers;
use herald_tests::world::RouterOptions;
use herald_tests::{bench, routers::BgpDaemon, wait_for};
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{
    Api,
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;

const NODE_ASN: u32 = 64513;
const WAIT: Duration = Duration::from_secs(30);

/// Watches Service `name` until its status has an address: the address, and when the watch
/// saw it.
async fn first_address(services: Api<Service>, name: String) -> anyhow::Result<(IpAddr, Instant)> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = std::pin::pin!(watcher(services, config).applied_objects());
    while let Some(service) = stream.next().await {
        let ip = service?
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|lb| lb.ingress)
            .and_then(|ingress| ingress.first()?.ip.as_deref()?.parse().ok());
        if let Some(ip) = ip {
            return Ok((ip, Instant::now()));
        }
    }
    anyhow::bail!("the watch of Service {name} ended")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs = bench::runs();
    let count: usize = std::env::var("HERALD_BENCH_SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let metallb = std::env::var("HERALD_BENCH_SPEAKER").as_deref() == Ok("metallb");
    // MetalLB's native BGP refuses a pool with IPv6 (its whole configuration, not the pool).
    let pool: &[&str] = if metallb {
        &["203.0.113.0/24"]
    } else {
        &["203.0.113.0/24", "2001:db8:3::/112"]
    };
    let (lan, speakers) = Speakers::lan("bench-bgp", metallb, pool).await?;
    lan.stop_layer2()?;
    let (router, router_link) = lan.router(BgpDaemon::Gobgp, NODE_ASN, RouterOptions::default())?;
    let sessions = match &speakers {
        Speakers::Herald => {
            lan.bgp_peers(&router_link, NODE_ASN, json!({}))?;
            lan.bgp_advertise(json!({}))?;
            6
        }
        Speakers::Metallb(metallb) => {
            metallb.stop_layer2(&lan)?;
            metallb.peer_with(&lan, &router_link, NODE_ASN)?;
            3
        }
    };
    wait_for("every session up", WAIT, || async {
        let up = router.established_peers().map_err(|e| e.to_string())?.len();
        if up == sessions {
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
        // The moment the address is in the status, as a watch (like the speaker's) sees it.
        let assignment = tokio::spawn(first_address(services.clone(), name.clone()));
        lan.service_of_class(&name, &name, "Local", false, speakers.class())?;
        let (ip, assigned) = assignment.await??;
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
    println!("  median {:.1} ms", bench::median(&mut announce));
    println!("last local endpoint not ready -> route withdrawn, {runs} runs (ms): {withdraw:.1?}");
    println!("  median {:.1} ms", bench::median(&mut withdraw));
    drop(monitor);
    if metallb {
        return Ok(());
    }

    // 3: many Services, allocated while no advertisement selects them, then advertised at once.
    lan.kubectl(&[
        "delete",
        "bgpadvertisement",
        &format!("{}-bgp", lan.ns.name()),
    ])?;
    for i in 0..3 {
        lan.pod(&format!("web-{i}"), "web", i, true).await?;
    }
    lan.many_web_services(count, None).await?;
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
    // Every Service must have its ready endpoints (EndpointSlices from kube-controller-manager,
    // which writes them at its own pace) before the advertisement, or the time measured is
    // the EndpointSlice controller's.
    let slices: Api<EndpointSlice> = Api::namespaced(lan.client.clone(), lan.ns.name());
    wait_for(
        &format!("{count} EndpointSlices with endpoints"),
        Duration::from_secs(600),
        || async {
            let list = slices
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            let ready = list
                .items
                .iter()
                .filter(|s| {
                    s.metadata
                        .name
                        .as_deref()
                        .is_some_and(|n| n.starts_with("web-"))
                })
                .filter(|s| s.endpoints.as_ref().is_some_and(|e| !e.is_empty()))
                .count();
            if ready >= count {
                Ok(())
            } else {
                Err(format!("{ready}"))
            }
        },
    )
    .await?;
    let v6_peer = format!(
        "herald_speaker_bgp_updates_sent_total{{peer=\"{}-v6\"}}",
        lan.ns.name()
    );
    let updates_before = lan.metric(0, &v6_peer).unwrap_or(0.0);
    let advertised_metric = v6_peer.replace("updates_sent_total", "prefixes_advertised");
    let monitor = router.monitor(Family::Ipv6)?;
    let start = Instant::now();
    lan.bgp_advertise(json!({}))?;
    // The speaker's share: until n1 reports every prefix sent (its metric, read as fast as
    // `curl` allows).
    let mut speaker_done = None;
    while start.elapsed() < Duration::from_secs(120) {
        if lan.metric(0, &advertised_metric).unwrap_or(0.0) >= count as f64 {
            speaker_done = Some(start.elapsed());
            break;
        }
    }
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
    if let Some(done) = speaker_done {
        println!(
            "  n1 had sent all {count} prefixes {:.0} ms after the BGPAdvertisement was created (its metric; read by polling)",
            done.as_secs_f64() * 1000.0
        );
    }

    // 4: memory with those routes.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for (node, rss, hwm) in lan.speaker_memory()? {
        println!("{node}: VmRSS {rss} kB, VmHWM {hwm} kB");
    }
    Ok(())
}
