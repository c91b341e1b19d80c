//! ARP answered under a request flood: a client floods the owner of a Service address with
//! ARP requests, as fast as the answers come back (a closed loop with a window of requests in
//! flight), and measures answers per second and the latency of each answer.
//!
//! ```text
//!   client namespace: this binary again (`--flood`), AF_PACKET socket on eth0
//!       request "who-has VIP tell 192.0.2.100" from 02:00:00:00:hi:lo (the sequence number)
//!       reply to that MAC ──► latency of request `hi:lo`
//!   three node namespaces: real herald-speakers (every one reads every request)
//! ```
//!
//! `cargo bench -p herald-speaker --bench arp_flood` (`HERALD_BENCH_REQUESTS`, default
//! 100,000; `HERALD_BENCH_WINDOW`, default 32). Bounded in count and in time (30 s). The
//! flood stays inside the test's namespaces.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use herald_l2::{MacAddr, arp, link::read_links, socket::ArpSocket};
use herald_tests::world::Lan;

const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const TIME_LIMIT: Duration = Duration::from_secs(30);
/// A request unanswered this long is counted lost.
const LOST_AFTER: Duration = Duration::from_millis(100);

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn request(vip: Ipv4Addr, seq: u16) -> Vec<u8> {
    let [hi, lo] = seq.to_be_bytes();
    let mut frame = arp::gratuitous(vip, MacAddr::new(0x02, 0, 0, 0, hi, lo));
    frame[28..32].copy_from_slice(&CLIENT_IP.octets());
    frame
}

/// The sequence number of an ARP reply to one of our requests.
fn reply_seq(frame: &[u8]) -> Option<u16> {
    let is_reply = frame.len() >= 42 && frame[12..14] == [0x08, 0x06] && frame[20..22] == [0, 2];
    (is_reply && frame[32..36] == [0x02, 0, 0, 0])
        .then(|| u16::from_be_bytes([frame[36], frame[37]]))
}

/// Runs inside the client's namespace: floods `vip`, prints one result line.
async fn flood(vip: Ipv4Addr, total: usize, window: usize) -> anyhow::Result<()> {
    let eth0 = read_links()?
        .into_iter()
        .find(|l| l.name == "eth0")
        .ok_or_else(|| anyhow::anyhow!("no eth0 in the client"))?;
    let socket = ArpSocket::open(eth0.index)?;
    let mut outstanding: HashMap<u16, Instant> = HashMap::new();
    let mut latencies: Vec<Duration> = Vec::with_capacity(total);
    let (mut sent, mut lost, mut seq) = (0usize, 0usize, 0u16);
    let mut buffer = vec![0u8; 1600];
    let start = Instant::now();
    while latencies.len() + lost < total && start.elapsed() < TIME_LIMIT {
        while outstanding.len() < window && sent < total {
            seq = seq.wrapping_add(1);
            if outstanding.contains_key(&seq) {
                continue;
            }
            socket.send(&request(vip, seq)).await?;
            outstanding.insert(seq, Instant::now());
            sent += 1;
        }
        tokio::select! {
            received = socket.recv(&mut buffer) => {
                let len = received?;
                if let Some(at) = reply_seq(&buffer[..len]).and_then(|s| outstanding.remove(&s)) {
                    latencies.push(at.elapsed());
                }
            }
            () = tokio::time::sleep(Duration::from_millis(10)) => {
                let before = outstanding.len();
                outstanding.retain(|_, at| at.elapsed() < LOST_AFTER);
                lost += before - outstanding.len();
            }
        }
    }
    let elapsed = start.elapsed();
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    println!(
        "sent {sent}, answered {}, lost {lost} in {:.2} s: {:.0} answers/s; latency p50 {:.0} us, p99 {:.0} us, max {:.0} us",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(0.5),
        percentile(0.99),
        percentile(1.0),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let total = env_or("HERALD_BENCH_REQUESTS", 100_000);
    let window = env_or("HERALD_BENCH_WINDOW", 32);
    if let Some(i) = args.iter().position(|a| a == "--flood") {
        let vip: Ipv4Addr = args
            .get(i + 1)
            .ok_or_else(|| anyhow::anyhow!("--flood VIP"))?
            .parse()?;
        return flood(vip, total, window).await;
    }
    let mut lan = Lan::new("bench-flood", 3).await?;
    lan.start_speakers()?;
    let IpAddr::V4(vip) = lan.web_on_every_node(false).await?[0] else {
        anyhow::bail!("an IPv4 address was expected");
    };
    let owner = lan.resolve(IpAddr::V4(vip)).await?;
    println!(
        "flooding {vip} (owned by {}) with {total} requests, {window} in flight",
        lan.nodes[owner].name
    );
    let out = lan
        .client_host
        .command(std::env::current_exe()?)
        .args(["--flood", &vip.to_string()])
        .env("HERALD_BENCH_REQUESTS", total.to_string())
        .env("HERALD_BENCH_WINDOW", window.to_string())
        .output()?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        anyhow::bail!(
            "the flooder failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let owner_pid = lan.nodes[owner].speaker.as_ref().map(|p| p.pid());
    if let Some(pid) = owner_pid {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        if let Some(rss) = status.lines().find(|l| l.starts_with("VmRSS")) {
            println!("owner speaker after the flood: {rss}");
        }
    }
    Ok(())
}
