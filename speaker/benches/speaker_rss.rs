//! Speaker memory with 1,000 Services: three real speakers in node namespaces, the real API
//! server and controller, 1,000 single-stack IPv6 Services of `type: LoadBalancer` (each with
//! an EndpointSlice from the real kube-controller-manager, three ready Pods behind all of
//! them). Once every address is announced (1,000 ServiceL2Status records), prints each
//! speaker's resident memory (VmRSS) and peak (VmHWM), and how long it took.
//!
//! `cargo bench -p herald-speaker --bench speaker_rss` (`HERALD_BENCH_SERVICES`, default 1,000).

use std::time::{Duration, Instant};

use herald_tests::wait_for;
use herald_tests::world::Lan;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let count: usize = std::env::var("HERALD_BENCH_SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let mut lan = Lan::with_pool("bench-rss", 3, &["2001:db8::1:0/112"]).await?;
    lan.start_speakers()?;
    for i in 0..3 {
        lan.pod(&format!("web-{i}"), "web", i, true).await?;
    }
    let start = Instant::now();
    lan.many_web_services(count).await?;
    println!(
        "{count} Services created in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    wait_for(
        &format!("{count} addresses announced"),
        Duration::from_secs(600),
        || async {
            let records = lan.records().map_err(|e| e.to_string())?.len();
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
    for (node, rss, hwm) in lan.speaker_memory()? {
        let owned = lan
            .records()?
            .iter()
            .filter(|r| r.split_whitespace().nth(1) == Some(node.as_str()))
            .count();
        println!("{node}: owns {owned} addresses; VmRSS {rss} kB, VmHWM {hwm} kB");
    }
    Ok(())
}
