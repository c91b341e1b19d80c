//! False "node dead" verdicts under a gossip flood: a host on the nodes' segment floods the
//! owner's gossip port with junk datagrams (as a misbehaving host, or another cluster's
//! speakers, would) while three speakers gossip, and the bench counts what the flood made
//! the speakers believe: changes of their live sets (none is right: no speaker dies) and
//! ownership changes, with the owner's CPU time and what its budget dropped.
//!
//! ```text
//!   client namespace: a thread sending HERALD_BENCH_RATE datagrams/s (default 50,000) of
//!   64-512 junk bytes from one address to the owner's gossip port, for HERALD_BENCH_SECONDS
//!   (default 20): bounded in count and time, inside the test's namespaces
//!   three node namespaces: real herald-speakers (release build)
//! ```
//!
//! `cargo bench -p herald-speaker --bench gossip_flood`. Prints one line per run
//! (`HERALD_BENCH_RUNS`, default 10).

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use herald_tests::{bench, world::Lan};

const RATE_LIMITED: &str =
    "herald_speaker_gossip_datagrams_rejected_total{reason=\"rate_limited\"}";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Sends `rate` datagrams a second to `target` for `seconds`; returns how many went out.
fn flood(target: SocketAddr, rate: u64, seconds: u64) -> std::io::Result<u64> {
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    let start = Instant::now();
    let limit = Duration::from_secs(seconds);
    let total = rate * seconds;
    let mut junk = [0u8; 512];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut sent = 0;
    while sent < total && start.elapsed() < limit {
        // Paced in batches of 100: never ahead of the rate.
        let due = start.elapsed().as_secs_f64() * rate as f64;
        if (sent as f64) >= due {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        for _ in 0..100 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            junk[..8].copy_from_slice(&state.to_le_bytes());
            let len = 64 + (state % 449) as usize;
            // A full socket buffer drops the datagram, as the network would.
            let _ = socket.send_to(&junk[..len], target);
            sent += 1;
        }
    }
    Ok(sent)
}

/// User and system CPU time of process `pid`, in seconds.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields
        .get(11..13)
        .ok_or_else(|| anyhow::anyhow!("short /proc/{pid}/stat"))?
        .iter()
        .map(|t| t.parse::<f64>().unwrap_or(0.0))
        .sum();
    Ok(ticks / 100.0)
}

/// How often each speaker's gossip changed its live set so far ("speakers alive" lines).
fn live_set_changes(lan: &Lan) -> Vec<usize> {
    lan.nodes
        .iter()
        .map(|n| {
            n.speaker
                .as_ref()
                .map_or(0, |p| p.log().matches("speakers alive").count())
        })
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rate = env_or("HERALD_BENCH_RATE", 50_000);
    let seconds = env_or("HERALD_BENCH_SECONDS", 20);
    let mut lan = Lan::new("bench-gflood", 3).await?;
    lan.start_speakers()?;
    let ip = lan.web_on_every_node(false).await?[0];
    let owner = lan.resolve(ip).await?;
    let target = SocketAddr::new(IpAddr::V4(lan.nodes[owner].link.ipv4), 7952);
    let pid = lan.nodes[owner]
        .speaker
        .as_ref()
        .map(|p| p.pid())
        .ok_or_else(|| anyhow::anyhow!("the owner runs no speaker"))?;
    // Settled: every speaker sees the three.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut false_verdicts = Vec::new();
    for run in 1..=bench::runs().min(10) {
        let changes_before = live_set_changes(&lan);
        let ownership_before: f64 = (0..3)
            .map(|i| lan.metric(i, "herald_speaker_ownership_changes_total"))
            .sum::<Result<f64, _>>()?;
        // Absent from builds without the budget (an A/B against an older speaker).
        let limited_before = lan.metric(owner, RATE_LIMITED).ok();
        let cpu_before = cpu_seconds(pid)?;
        let started = Instant::now();
        let sent = lan
            .client_host
            .thread(move || flood(target, rate, seconds))
            .join()
            .map_err(|_| anyhow::anyhow!("the flooder panicked"))???;
        let elapsed = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds(pid)? - cpu_before;
        // Let a verdict the flood caused show before counting.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let changes: usize = live_set_changes(&lan)
            .iter()
            .zip(&changes_before)
            .map(|(after, before)| after - before)
            .sum();
        let ownership: f64 = (0..3)
            .map(|i| lan.metric(i, "herald_speaker_ownership_changes_total"))
            .sum::<Result<f64, _>>()?;
        let limited = match (lan.metric(owner, RATE_LIMITED).ok(), limited_before) {
            (Some(after), Some(before)) => format!("{:.0}", after - before),
            _ => "n/a".to_owned(),
        };
        println!(
            "run {run}: {sent} datagrams in {elapsed:.1} s ({:.0}/s) to the owner: {changes} live-set changes, {} ownership changes; owner CPU {:.0} % of a core, {limited} dropped unchecked",
            sent as f64 / elapsed,
            ownership - ownership_before,
            100.0 * cpu / elapsed,
        );
        false_verdicts.push(changes as f64);
    }
    bench::summary(
        "live-set changes per flood (0 is right)",
        "changes",
        false_verdicts,
    );
    let answers = lan.answers(ip)?;
    println!("after the floods, {ip} is answered by {answers:?}");
    Ok(())
}
