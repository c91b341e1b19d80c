//! A gossip partition in layer 2: one of three nodes cut off from the others' gossip (its
//! namespace drops the gossip port both ways) for 20 s while every node still reaches the API
//! server and the client. The client asks for two addresses every 10 ms (arping, replies matched
//! in a capture): one the cut-off node owned, one another node owned. Prints, per address, the
//! requests answered by two nodes at once and those not answered within 50 ms, during the
//! partition and in the 70 s after it heals (MetalLB's speakers try to join missing members
//! once a minute), and when the last request answered twice was sent.
//!
//! `cargo bench -p herald-speaker --bench partition`; `HERALD_BENCH_SPEAKER=metallb` cuts
//! MetalLB's memberlist (7946, TCP and UDP) instead of Herald's gossip (7952, UDP), in the same
//! namespaces, the same way. `speaker/tests/gossip.rs` asserts Herald's bound; this prints the
//! figures beside MetalLB's.

use std::{
    net::IpAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use herald_tests::metallb::Speakers;
use herald_tests::world::{ArpProbe, Lan, POOL, cut_off_and_other};

const PARTITION: Duration = Duration::from_secs(20);
const AFTER: Duration = Duration::from_secs(70);
const SERVICES: usize = 6;

/// Drops (or, with `heal`, stops dropping) the gossip of `speakers` in node `i`'s namespace.
fn cut_gossip(lan: &Lan, speakers: &Speakers, i: usize, heal: bool) -> anyhow::Result<()> {
    let (port, protocols): (&str, &[&str]) = match speakers {
        Speakers::Herald => ("7952", &["udp"]),
        Speakers::Metallb(_) => ("7946", &["udp", "tcp"]),
    };
    let action = if heal { "-D" } else { "-A" };
    for protocol in protocols {
        for (chain, direction) in [
            ("INPUT", "--dport"),
            ("OUTPUT", "--dport"),
            ("INPUT", "--sport"),
        ] {
            lan.nodes[i].host.run(
                "iptables",
                &[action, chain, "-p", protocol, direction, port, "-j", "DROP"],
            )?;
        }
    }
    Ok(())
}

/// Seconds since the epoch, as tcpdump stamps packets.
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let metallb = std::env::var("HERALD_BENCH_SPEAKER").as_deref() == Ok("metallb");
    let (lan, speakers) = Speakers::lan("bench-partition", metallb, &POOL).await?;
    for i in 0..lan.nodes.len() {
        lan.pod(&format!("web-{i}"), "web", i, true).await?;
    }
    let mut ips = Vec::new();
    for s in 0..SERVICES {
        let name = format!("web-{s}");
        lan.service_of_class(&name, "web", "Cluster", false, speakers.class())?;
        ips.extend(lan.ingress(&name, 1).await?);
    }
    let owners = lan.resolve_all(&ips).await?;
    let isolated = owners[0];
    let probed = cut_off_and_other(&ips, &owners);
    let seconds = u32::try_from((PARTITION + AFTER).as_secs())?;
    let probes: Vec<(IpAddr, ArpProbe)> = probed
        .iter()
        .map(|&ip| Ok((ip, lan.arp_prober(ip, seconds)?)))
        .collect::<anyhow::Result<_>>()?;
    let cut = now();
    cut_gossip(&lan, &speakers, isolated, false)?;
    tokio::time::sleep(PARTITION).await;
    let healed = now();
    cut_gossip(&lan, &speakers, isolated, true)?;
    tokio::time::sleep(AFTER).await;
    let who = if metallb { "MetalLB" } else { "Herald" };
    println!(
        "{who}: node {} of 3 cut off from the others' gossip for {PARTITION:?}, then healed for \
         {AFTER:?}",
        isolated + 1
    );
    for (ip, probe) in probes {
        let requests = probe.finish()?;
        let twice: Vec<f64> = requests
            .iter()
            .filter(|asked| asked.macs.len() > 1)
            .map(|asked| asked.at)
            .collect();
        let during = twice.iter().filter(|&&at| at >= cut && at < healed).count();
        let after = twice.iter().filter(|&&at| at >= healed).count();
        let unanswered = requests.iter().filter(|asked| !asked.answered).count();
        let whose = if ip == ips[0] {
            "the cut-off node's"
        } else {
            "another node's"
        };
        let last = twice.last().map_or("none".to_owned(), |at| {
            format!("{:.1} s after the cut", at - cut)
        });
        println!(
            "  {ip} ({whose}): {} ARP requests 10 ms apart; answered by two nodes: {during} \
             during the partition, {after} after healing (the last {last}); {unanswered} not \
             answered within 50 ms",
            requests.len()
        );
    }
    Ok(())
}
