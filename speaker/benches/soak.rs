//! Soak (issue 16, scenario 6): churn for a bounded time with three real speakers in node
//! namespaces, the real API server and controller, layer 2 and BGP (gobgpd), sampling each
//! process's resident memory (VmRSS) and open file descriptors. Each round creates
//! `HERALD_SOAK_SERVICES` Services (default 20), waits until every address is announced
//! (its ServiceL2Status records) and routed (gobgpd's RIB), deletes them all and waits until
//! every Service (the controller gives back its finalizer) and record is gone. What it prints: one line per sample, then per process the median of
//! the first quarter of the run (after warm-up) against the median of the last quarter.
//!
//! `cargo bench -p herald-speaker --bench soak` (`HERALD_SOAK_SECONDS`, default 1,800;
//! `HERALD_SOAK_ROUNDS`, at most, default 10,000).

use std::time::{Duration, Instant};

use herald_domain::Family;
use herald_tests::{
    bench::median,
    routers::BgpDaemon,
    wait_for,
    world::{Lan, TIMEOUT},
};

/// Resident memory in kB and open file descriptors of process `pid`.
fn sample(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    Ok((rss, fds as f64))
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds = env("HERALD_SOAK_SECONDS", 1_800);
    let max_rounds = env("HERALD_SOAK_ROUNDS", 10_000);
    let count = env("HERALD_SOAK_SERVICES", 20) as usize;
    let mut lan = Lan::with_pool("soak", 3, &["2001:db8::1:0/112"]).await?;
    let (router, _link) = lan.peered_router(BgpDaemon::Gobgp)?;
    lan.start_speakers()?;
    for i in 0..3 {
        lan.pod(&format!("pod-{i}"), "web", i, true).await?;
    }
    let processes: Vec<(String, u32)> = lan
        .nodes
        .iter()
        .map(|n| {
            (
                format!("speaker {}", n.name),
                n.speaker.as_ref().map_or(0, |p| p.pid()),
            )
        })
        .chain([("controller".to_owned(), lan.controller.pid())])
        .collect();
    let mut samples: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); processes.len()];
    let start = Instant::now();
    let mut rounds = 0;
    while start.elapsed() < Duration::from_secs(seconds) && rounds < max_rounds {
        lan.many_web_services(count, None).await?;
        wait_for("every address announced and routed", TIMEOUT, || async {
            let records = lan.records().map_err(|e| e.to_string())?.len();
            let routes = router.routes(Family::Ipv6).map_err(|e| e.to_string())?;
            let routed = routes
                .iter()
                .filter(|r| r.prefix.starts_with("2001:db8::1:"))
                .count();
            // Every node advertises every Cluster Service: one path per node.
            if records == count && routed == 3 * count {
                Ok(())
            } else {
                Err(format!("{records} records, {routed} paths"))
            }
        })
        .await?;
        lan.kubectl(&["delete", "services", "--all", "--wait=false"])?;
        wait_for("every Service and record gone", TIMEOUT, || async {
            let records = lan.records().map_err(|e| e.to_string())?.len();
            let services = lan
                .kubectl(&["get", "services", "-o", "name"])
                .map_err(|e| e.to_string())?;
            if records == 0 && services.trim().is_empty() {
                Ok(())
            } else {
                Err(format!("{records} records, Services: {services}"))
            }
        })
        .await?;
        rounds += 1;
        let at = start.elapsed().as_secs_f64();
        for (i, (what, pid)) in processes.iter().enumerate() {
            let (rss, fds) = sample(*pid)?;
            samples[i].push((at, rss, fds));
            println!("t={at:.0}s round {rounds}: {what}: VmRSS {rss} kB, {fds} fds");
        }
    }
    println!(
        "{rounds} rounds of {count} Services created, announced, routed and deleted in {:.0} s",
        start.elapsed().as_secs_f64()
    );
    for ((what, _), series) in processes.iter().zip(&samples) {
        let quarter = (series.len() / 4).max(1);
        let of = |part: &[(f64, f64, f64)], pick: fn(&(f64, f64, f64)) -> f64| {
            median(&mut part.iter().map(pick).collect::<Vec<_>>())
        };
        let (first, last) = (&series[..quarter], &series[series.len() - quarter..]);
        println!(
            "{what}: VmRSS median {:.0} kB in the first quarter, {:.0} kB in the last; \
             fds {:.0} and {:.0}",
            of(first, |s| s.1),
            of(last, |s| s.1),
            of(first, |s| s.2),
            of(last, |s| s.2),
        );
    }
    Ok(())
}
