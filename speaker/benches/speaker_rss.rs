//! Speaker memory with 1,000 Services: three real speakers in node namespaces, the real API
//! server and controller, 1,000 single-stack IPv6 Services of `type: LoadBalancer` (each with
//! an EndpointSlice from the real kube-controller-manager, three ready Pods behind all of
//! them). Once every address is announced (1,000 ServiceL2Status records), prints each
//! speaker's resident memory (VmRSS) and peak (VmHWM), and how long it took.
//!
//! `cargo bench -p herald-speaker --bench speaker_rss` (`HERALD_BENCH_SERVICES`, default 1,000).
//! `HERALD_BENCH_SPEAKER=metallb` runs MetalLB's speakers and controller instead (built from its
//! Go module by `tests/metallb/build`), counting MetalLB's own ServiceL2Status records.

use std::time::{Duration, Instant};

use herald_tests::metallb::Speakers;
use herald_tests::wait_for;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let count: usize = std::env::var("HERALD_BENCH_SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let metallb = std::env::var("HERALD_BENCH_SPEAKER").as_deref() == Ok("metallb");
    let (lan, speakers) = Speakers::lan("bench-rss", metallb, &["2001:db8::1:0/112"]).await?;
    for i in 0..3 {
        lan.pod(&format!("web-{i}"), "web", i, true).await?;
    }
    let start = Instant::now();
    lan.many_web_services(count, speakers.class()).await?;
    println!(
        "{count} Services created in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    wait_for(
        &format!("{count} addresses announced"),
        Duration::from_secs(600),
        || async {
            let records: usize = speakers
                .announced_by_node(&lan)
                .map_err(|e| e.to_string())?
                .values()
                .sum();
            if records == count {
                Ok(())
            } else {
                Err(format!("{records} records"))
            }
        },
    )
    .await?;
    println!(
        "all {count} addresses announced (ServiceL2Status written) {:.1} s after the first create",
        start.elapsed().as_secs_f64()
    );
    // Let allocations settle after the burst before reading memory.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let owned = speakers.announced_by_node(&lan)?;
    for (node, rss, hwm) in lan.speaker_memory()? {
        let owned = owned.get(&node).copied().unwrap_or_default();
        println!("{node}: owns {owned} addresses; VmRSS {rss} kB, VmHWM {hwm} kB");
    }
    Ok(())
}
