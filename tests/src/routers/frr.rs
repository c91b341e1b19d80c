//! FRR: bgpd's configuration, vtysh and the JSON it prints.

use std::{fmt::Write as _, net::IpAddr, process::Command};

use super::{
    BfdPeer, BgpConfig, BgpRoute, PathAttributes, json, parse_as_path, parse_ip, real_next_hop,
};
use crate::{Host, Result};

pub(super) fn cli(host: &Host, dir: &std::path::Path) -> Command {
    let mut cmd = host.command("vtysh");
    cmd.arg("--vty_socket").arg(dir);
    cmd
}

pub(super) fn config(hostname: &str, config: &BgpConfig) -> String {
    let mut text = format!(
        "frr defaults traditional\nhostname {hostname}\nrouter bgp {}\n bgp router-id {}\n \
         no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n \
         no bgp network import-check\n",
        config.asn, config.router_id
    );
    if config.graceful_restart {
        text.push_str(" bgp graceful-restart\n");
    }
    for n in &config.neighbors {
        let _ = writeln!(text, " neighbor {} remote-as {}", n.address, n.asn);
        if let Some(password) = &n.password {
            let _ = writeln!(text, " neighbor {} password {password}", n.address);
        }
        if n.multihop {
            let _ = writeln!(text, " neighbor {} ebgp-multihop 255", n.address);
        }
    }
    for (i, n) in config.neighbors.iter().enumerate() {
        if n.bfd.is_some() {
            let _ = writeln!(text, " neighbor {} bfd profile herald-{i}", n.address);
        }
    }
    for (afi, v6) in [("ipv4", false), ("ipv6", true)] {
        let _ = writeln!(text, " address-family {afi} unicast");
        for n in config
            .neighbors
            .iter()
            .filter(|n| n.address.is_ipv6() == v6)
        {
            let _ = writeln!(text, "  neighbor {} activate", n.address);
        }
        for prefix in config.originate.iter().filter(|p| p.contains(':') == v6) {
            let _ = writeln!(text, "  network {prefix}");
        }
        text.push_str(" exit-address-family\n");
    }
    text
}

/// bfdd's configuration: one profile per neighbor with BFD (`herald-N`, its timers); bgpd
/// registers each neighbor's session with bfdd and drops the BGP session when BFD goes down.
/// `None` when no neighbor has BFD.
pub(super) fn bfdd_config(hostname: &str, config: &BgpConfig) -> Option<String> {
    let mut text = format!("hostname {hostname}\nbfd\n");
    let mut any = false;
    for (i, n) in config.neighbors.iter().enumerate() {
        let Some(timers) = n.bfd else { continue };
        any = true;
        let milliseconds = timers.interval.as_millis();
        let _ = write!(
            text,
            " profile herald-{i}\n  receive-interval {milliseconds}\n  transmit-interval \
             {milliseconds}\n  detect-multiplier {}\n !\n",
            timers.multiplier
        );
    }
    any.then_some(text)
}

/// `show bfd peers json`.
pub(super) fn bfd_peers(out: &str) -> Result<Vec<BfdPeer>> {
    let value = json("cli show bfd peers json", out)?;
    let mut peers = Vec::new();
    for peer in value.as_array().into_iter().flatten() {
        let text = |field: &str| peer[field].as_str().unwrap_or_default().to_owned();
        peers.push(BfdPeer {
            address: parse_ip("an FRR BFD peer", &text("peer"))?,
            up: peer["status"].as_str() == Some("up"),
            diagnostic: text("diagnostic"),
            remote_diagnostic: text("remote-diagnostic"),
        });
    }
    Ok(peers)
}

pub(super) fn established(out: &str) -> Result<Vec<IpAddr>> {
    let value = json("cli show bgp neighbors json", out)?;
    let mut peers = Vec::new();
    for (address, neighbor) in value.as_object().into_iter().flatten() {
        if neighbor["bgpState"].as_str() == Some("Established") {
            peers.push(parse_ip("an FRR neighbor address", address)?);
        }
    }
    Ok(peers)
}

pub(super) fn routes(out: &str) -> Result<Vec<BgpRoute>> {
    let value = json("cli show bgp unicast json", out)?;
    let mut routes = Vec::new();
    for (prefix, paths) in value["routes"].as_object().into_iter().flatten() {
        for path in paths.as_array().into_iter().flatten() {
            let next_hop = match path["nexthops"][0]["ip"].as_str() {
                Some(hop) => real_next_hop(parse_ip("an FRR next hop", hop)?),
                None => None,
            };
            routes.push(BgpRoute {
                prefix: prefix.clone(),
                next_hop,
                as_path: parse_as_path(path["path"].as_str().unwrap_or_default()),
                best: path["bestpath"].as_bool().unwrap_or(false),
                attributes: PathAttributes::default(),
            });
        }
    }
    Ok(routes)
}

/// Adds the attributes of FRR's view of one prefix (`show bgp ... PREFIX json`) to its paths,
/// matched by next hop.
pub(super) fn add_attributes(routes: &mut [BgpRoute], prefix: &str, out: &str) -> Result<()> {
    let value = json("cli show bgp unicast PREFIX json", out)?;
    for path in value["paths"].as_array().into_iter().flatten() {
        let next_hop = match path["nexthops"][0]["ip"].as_str() {
            Some(hop) => real_next_hop(parse_ip("an FRR next hop", hop)?),
            None => None,
        };
        let Some(route) = routes
            .iter_mut()
            .find(|r| r.prefix == prefix && r.next_hop == next_hop)
        else {
            continue;
        };
        let words = |field: &str| -> Vec<String> {
            path[field]["string"]
                .as_str()
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        };
        route.attributes = PathAttributes {
            local_pref: path["locPrf"].as_u64().and_then(|v| v.try_into().ok()),
            communities: words("community")
                .into_iter()
                .map(|c| match c.as_str() {
                    "no-export" => "65535:65281".to_owned(),
                    "no-advertise" => "65535:65282".to_owned(),
                    _ => c,
                })
                .collect(),
            large_communities: words("largeCommunity"),
            // `LB:64512:250000 (2.000 Mbps)`: AS, then octets per second.
            link_bandwidth: words("extendedCommunity")
                .iter()
                .find_map(|w| w.strip_prefix("LB:"))
                .and_then(|lb| lb.rsplit(':').next()?.parse().ok()),
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frr_originated_routes_have_no_next_hop() {
        let out = r#"{"routes": {"203.0.113.48/28": [{"bestpath":true,"path":"",
            "nexthops":[{"ip":"0.0.0.0"}]}], "203.0.113.16/28": [{"path":"64502 64501",
            "nexthops":[{"ip":"192.0.2.2"}]}]}}"#;
        let mut routes = routes(out).expect("valid json");
        routes.sort_by(|a, b| a.prefix.cmp(&b.prefix));
        assert_eq!(routes[0].next_hop, Some("192.0.2.2".parse().unwrap()));
        assert_eq!(routes[0].as_path, vec![64502, 64501]);
        assert!(!routes[0].best);
        assert_eq!(routes[1].next_hop, None);
        assert!(routes[1].best);
    }
}
