//! gobgpd: its TOML configuration, its CLI (gRPC on the host's own loopback) and the JSON it
//! prints.

use std::{fmt::Write as _, net::IpAddr, process::Command};

use super::{BgpConfig, BgpRoute, PathAttributes, family_of, json, parse_ip, real_next_hop};
use crate::{Host, Result};

/// Where gobgpd's gRPC API listens, on the host's own loopback.
pub(super) const API: (&str, &str) = ("127.0.0.1", "50051");

pub(super) fn cli(host: &Host) -> Command {
    let mut cmd = host.command("gobgp");
    cmd.args(["-u", API.0, "-p", API.1]);
    cmd
}

pub(super) fn config(config: &BgpConfig) -> String {
    let mut text = format!(
        "[global.config]\n  as = {}\n  router-id = \"{}\"\n  port = 179\n",
        config.asn, config.router_id
    );
    for n in &config.neighbors {
        let _ = write!(
            text,
            "\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{}\"\n    \
             peer-as = {}\n",
            n.address, n.asn,
        );
        if let Some(password) = &n.password {
            let _ = writeln!(text, "    auth-password = \"{password}\"");
        }
        if n.multihop {
            text.push_str(
                "  [neighbors.ebgp-multihop.config]\n    enabled = true\n    multihop-ttl = 255\n",
            );
        }
        if config.graceful_restart {
            text.push_str(
                "  [neighbors.graceful-restart.config]\n    enabled = true\n    \
                 restart-time = 120\n",
            );
        }
        let _ = write!(
            text,
            "  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      \
             afi-safi-name = \"{}\"\n",
            family_of(n.address).0
        );
        if config.graceful_restart {
            text.push_str(
                "    [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true\n",
            );
        }
    }
    text
}

pub(super) fn established(out: &str) -> Result<Vec<IpAddr>> {
    let value = json("gobgp neighbor -j", out)?;
    let mut peers = Vec::new();
    for n in value.as_array().into_iter().flatten() {
        let state = n["state"]["session_state"].as_i64().unwrap_or_default();
        // The gRPC enum: 6 is ESTABLISHED.
        if state == 6 {
            let address = n["state"]["neighbor_address"]
                .as_str()
                .or_else(|| n["conf"]["neighbor_address"].as_str())
                .unwrap_or_default();
            peers.push(parse_ip("a gobgp neighbor address", address)?);
        }
    }
    Ok(peers)
}

pub(super) fn routes(out: &str) -> Result<Vec<BgpRoute>> {
    if out.trim().is_empty() {
        return Ok(Vec::new());
    }
    let value = json("gobgp global rib -j", out)?;
    let mut routes = Vec::new();
    for (prefix, paths) in value.as_object().into_iter().flatten() {
        for path in paths.as_array().into_iter().flatten() {
            let mut route = BgpRoute {
                prefix: prefix.clone(),
                next_hop: None,
                as_path: Vec::new(),
                best: path["best"].as_bool().unwrap_or(false),
                attributes: PathAttributes::default(),
            };
            for attr in path["attrs"].as_array().into_iter().flatten() {
                let attributes = &mut route.attributes;
                match attr["type"].as_i64() {
                    Some(5) => {
                        attributes.local_pref =
                            attr["value"].as_u64().and_then(|v| v.try_into().ok());
                    }
                    Some(8) => {
                        attributes.communities = attr["communities"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|c| c.as_u64())
                            .map(|c| format!("{}:{}", c >> 16, c & 0xffff))
                            .collect();
                    }
                    Some(16) => {
                        attributes.link_bandwidth = attr["value"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .find(|c| {
                                c["type"].as_i64() == Some(64) && c["subtype"].as_i64() == Some(4)
                            })
                            .and_then(|c| c["bandwidth"].as_f64());
                    }
                    Some(32) => {
                        attributes.large_communities = attr["value"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|c| {
                                format!("{}:{}:{}", c["ASN"], c["LocalData1"], c["LocalData2"])
                            })
                            .collect();
                    }
                    // AS_PATH
                    Some(2) => {
                        for segment in attr["as_paths"].as_array().into_iter().flatten() {
                            route.as_path.extend(
                                segment["asns"]
                                    .as_array()
                                    .into_iter()
                                    .flatten()
                                    .filter_map(|a| a.as_u64())
                                    .filter_map(|a| u32::try_from(a).ok()),
                            );
                        }
                    }
                    // NEXT_HOP, or MP_REACH_NLRI for IPv6
                    Some(3) | Some(14) => {
                        if let Some(hop) = attr["nexthop"].as_str() {
                            route.next_hop = real_next_hop(parse_ip("a gobgp next hop", hop)?);
                        }
                    }
                    _ => {}
                }
            }
            routes.push(route);
        }
    }
    Ok(routes)
}
