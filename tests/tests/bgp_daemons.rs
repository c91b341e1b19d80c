//! The BGP daemons Herald interoperates with are real and usable from tests: gobgpd, BIRD and
//! FRR each start in a router namespace, establish sessions, and their RIBs read back the
//! routes the others originate, over IPv4 and over IPv6.

use std::{net::IpAddr, time::Duration};

use herald_domain::Family;
use herald_tests::{
    Topology,
    routers::{BgpConfig, BgpDaemon, BgpNeighbor, BgpRoute, BgpRouter},
    wait_for,
};

const SESSION_TIMEOUT: Duration = Duration::from_secs(60);

/// Router `i` (0, 1, 2) is AS 64501 + i at LAN address `i + 1`, and originates
/// 203.0.113.(16 * (i + 1))/28 and 2001:db8:2:(i + 1)::/64.
fn asn(i: usize) -> u32 {
    64501 + u32::try_from(i).expect("small")
}

fn prefixes(i: usize) -> [String; 2] {
    [
        format!("203.0.113.{}/28", 16 * (i + 1)),
        format!("2001:db8:2:{}::/64", i + 1),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gobgpd_bird_and_frr_peer_with_each_other_and_learn_each_others_routes()
-> anyhow::Result<()> {
    let topology = Topology::new()?;
    let lan = topology.lan()?;
    let mut hosts = Vec::new();
    let mut links = Vec::new();
    for daemon in BgpDaemon::ALL {
        let host = topology.host(daemon.name())?;
        links.push(lan.attach(&host, u32::try_from(hosts.len() + 1)?)?);
        hosts.push(host);
    }
    // A full mesh of eBGP sessions, one IPv4 and one IPv6 session per pair.
    let mut routers = Vec::new();
    for (i, daemon) in BgpDaemon::ALL.into_iter().enumerate() {
        let neighbors = (0..3)
            .filter(|&j| j != i)
            .flat_map(|j| {
                [IpAddr::V4(links[j].ipv4), IpAddr::V6(links[j].ipv6)]
                    .map(|address| BgpNeighbor::new(address, asn(j)))
            })
            .collect();
        let config = BgpConfig {
            asn: asn(i),
            router_id: links[i].ipv4,
            neighbors,
            originate: prefixes(i).to_vec(),
            graceful_restart: false,
        };
        routers.push(BgpRouter::start(&hosts[i], daemon, &config)?);
    }

    for (i, router) in routers.iter().enumerate() {
        let name = router.daemon().name();
        wait_for(
            &format!("{name} to establish its four sessions"),
            SESSION_TIMEOUT,
            || async {
                let peers = router.established_peers().map_err(|e| e.to_string())?;
                if peers.len() == 4 {
                    Ok(())
                } else {
                    Err(format!("established with {peers:?}"))
                }
            },
        )
        .await?;

        for (j, link) in links.iter().enumerate().filter(|&(j, _)| j != i) {
            for (family, prefix, next_hop) in [
                (Family::Ipv4, &prefixes(j)[0], IpAddr::V4(link.ipv4)),
                (Family::Ipv6, &prefixes(j)[1], IpAddr::V6(link.ipv6)),
            ] {
                // Paths through the third router may arrive first; the direct one must win.
                let is_direct = |r: &BgpRoute| {
                    r.prefix == *prefix
                        && r.next_hop == Some(next_hop)
                        && r.as_path == [asn(j)]
                        && r.best
                };
                wait_for(
                    &format!("{name} to select the direct path to {prefix} as best"),
                    SESSION_TIMEOUT,
                    || async {
                        let routes = router.routes(family).map_err(|e| e.to_string())?;
                        if routes.iter().any(is_direct) {
                            Ok(())
                        } else {
                            Err(format!("RIB: {routes:?}"))
                        }
                    },
                )
                .await?;
            }
        }
    }
    Ok(())
}
