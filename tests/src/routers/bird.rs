//! BIRD 2: its configuration, birdc (a Unix socket, so no namespace needed) and the text it
//! prints.

use std::{fmt::Write as _, net::IpAddr, process::Command};

use super::{BfdPeer, BgpConfig, BgpRoute, PathAttributes, family_of, parse_as_path};

/// birdc, which talks to BIRD over a Unix socket, so it needs no namespace.
pub(super) fn cli(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new("birdc");
    cmd.arg("-s").arg(dir.join("bird.ctl"));
    cmd
}

pub(super) fn config(config: &BgpConfig) -> String {
    let mut text = format!("router id {};\nprotocol device {{}}\n", config.router_id);
    for (channel, v6) in [("ipv4", false), ("ipv6", true)] {
        let routes: Vec<_> = config
            .originate
            .iter()
            .filter(|p| p.contains(':') == v6)
            .collect();
        if !routes.is_empty() {
            let _ = write!(text, "protocol static originate_{channel} {{ {channel};");
            for prefix in routes {
                let _ = write!(text, " route {prefix} blackhole;");
            }
            text.push_str(" }\n");
        }
    }
    // BIRD's BFD timers are per interface (and one set for multihop sessions), not per
    // neighbor: the first neighbor with BFD gives them.
    if let Some(timers) = config.neighbors.iter().find_map(|n| n.bfd) {
        let timers = format!(
            "interval {} ms; multiplier {};",
            timers.interval.as_millis(),
            timers.multiplier
        );
        let _ = writeln!(
            text,
            "protocol bfd {{ interface \"*\" {{ {timers} }}; multihop {{ {timers} }}; }}"
        );
    }
    for (i, n) in config.neighbors.iter().enumerate() {
        // BIRD waits `error wait time` (60 s at first by default) after BFD has taken a
        // session down before it accepts a connection again; a router tuned for BFD waits less.
        let bfd = if n.bfd.is_some() {
            " bfd on; error wait time 1, 5;"
        } else {
            ""
        };
        let password = n
            .password
            .as_ref()
            .map(|p| format!(" password \"{p}\";"))
            .unwrap_or_default();
        let graceful = if config.graceful_restart {
            " graceful restart on;"
        } else {
            ""
        };
        // An iBGP neighbor's next hop is on the shared link: take it as it is, with no IGP.
        let direct = if n.asn == config.asn { " direct;" } else { "" };
        let multihop = if n.multihop { " multihop;" } else { "" };
        let source = n
            .source
            .map(|a| format!(" source address {a};"))
            .unwrap_or_default();
        let _ = writeln!(
            text,
            "protocol bgp peer{i} {{ local as {}; neighbor {} as {};{password}{graceful}{direct}{multihop}{source}{bfd} {} {{ import all; export all; }}; }}",
            config.asn,
            n.address,
            n.asn,
            family_of(n.address).1
        );
    }
    text
}

/// `show bfd sessions`: under a header line `IP address  Interface  State  Since ...`, one line
/// per session (the interface column is empty for multihop sessions). BIRD does not print
/// diagnostics there.
pub(super) fn bfd_peers(out: &str) -> Vec<BfdPeer> {
    const STATES: [&str; 4] = ["AdminDown", "Down", "Init", "Up"];
    out.lines()
        .skip_while(|line| !line.trim_start().starts_with("IP address"))
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let address = fields.first()?.parse().ok()?;
            let state = fields.iter().skip(1).take(2).find(|f| STATES.contains(f))?;
            Some(BfdPeer {
                address,
                up: *state == "Up",
                diagnostic: String::new(),
                remote_diagnostic: String::new(),
            })
        })
        .collect()
}

/// `show protocols all`: a protocol line `peer0 BGP --- up 12:00:00 Established` per session.
pub(super) fn established(out: &str) -> Vec<IpAddr> {
    let mut peers = Vec::new();
    let mut established = false;
    for line in out.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if !line.starts_with(char::is_whitespace) && fields.len() >= 2 {
            established = fields[1] == "BGP" && fields.last() == Some(&"Established");
        } else if established
            && fields.first() == Some(&"Neighbor")
            && fields.get(1) == Some(&"address:")
            && let Some(address) = fields.get(2).and_then(|a| a.split('%').next())
            && let Ok(address) = address.parse()
        {
            peers.push(address);
        }
    }
    peers
}

/// `show route all`: a prefix starts a line; further paths of the same prefix start with
/// blanks; attributes follow on tab-indented lines.
pub(super) fn routes(out: &str) -> Vec<BgpRoute> {
    let mut routes: Vec<BgpRoute> = Vec::new();
    let mut prefix = String::new();
    for line in out.lines() {
        let is_path = |rest: &str| rest.contains('[') && rest.contains(']');
        if line.starts_with('\t') {
            let Some(route) = routes.last_mut() else {
                continue;
            };
            let attr = line.trim();
            if let Some(path) = attr.strip_prefix("BGP.as_path:") {
                route.as_path = parse_as_path(path);
            } else if let Some(hop) = attr.strip_prefix("BGP.next_hop:") {
                route.next_hop = hop.split_whitespace().next().and_then(|h| h.parse().ok());
            } else if let Some(value) = attr.strip_prefix("BGP.local_pref:") {
                route.attributes.local_pref = value.trim().parse().ok();
            } else if let Some(list) = attr.strip_prefix("BGP.community:") {
                route.attributes.communities = tuples(list).map(|t| t.join(":")).collect();
            } else if let Some(list) = attr.strip_prefix("BGP.large_community:") {
                route.attributes.large_communities = tuples(list).map(|t| t.join(":")).collect();
            } else if let Some(list) = attr.strip_prefix("BGP.ext_community:") {
                // BIRD does not name link bandwidth: `(unknown 0x4004, AS, float bits)`.
                route.attributes.link_bandwidth = tuples(list)
                    .find(|t| t.first().map(String::as_str) == Some("unknown 0x4004"))
                    .and_then(|t| t.get(2)?.parse::<u32>().ok())
                    .map(|bits| f64::from(f32::from_bits(bits)));
            }
        } else if !line.starts_with(char::is_whitespace) && line.contains('/') && is_path(line) {
            let (first, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            prefix = first.to_owned();
            routes.push(path(&prefix, rest));
        } else if line.starts_with(' ') && !prefix.is_empty() && is_path(line) {
            routes.push(path(&prefix, line));
        }
    }
    routes
}

/// The tuples of a BIRD attribute list, `(65000,100) (65535,65281)`, as their parts.
fn tuples(list: &str) -> impl Iterator<Item = Vec<String>> + '_ {
    list.split('(').filter_map(|t| {
        let inner = t.split_once(')')?.0;
        Some(
            inner
                .split(',')
                .map(|part| part.trim().to_owned())
                .collect(),
        )
    })
}

fn path(prefix: &str, rest: &str) -> BgpRoute {
    BgpRoute {
        prefix: prefix.to_owned(),
        next_hop: None,
        as_path: Vec::new(),
        // BIRD marks the selected path with `*` after the protocol bracket.
        best: rest
            .split_once(']')
            .is_some_and(|(_, after)| after.trim_start().starts_with('*')),
        attributes: PathAttributes::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bird_paths_of_one_prefix_are_grouped_under_it_with_their_attributes() {
        let out = "BIRD 2.0.12 ready.\nTable master4:\n\
            203.0.113.16/28      unicast [peer0 14:57:54.799] * (100) [AS64501?]\n\
            \tvia 192.0.2.1 on eth0\n\tType: BGP univ\n\tBGP.as_path: 64501\n\
            \tBGP.next_hop: 192.0.2.1\n\
            \x20                    unicast [peer1 14:57:52.888] (100) [AS64501?]\n\
            \tvia 192.0.2.3 on eth0\n\tBGP.as_path: 64503 64501\n\tBGP.next_hop: 192.0.2.3\n\
            203.0.113.32/28      blackhole [originate_ipv4 14:57:50.688] * (200)\n\
            \tType: static univ\n";
        let routes = routes(out);
        assert_eq!(
            routes,
            vec![
                BgpRoute {
                    prefix: "203.0.113.16/28".into(),
                    next_hop: Some("192.0.2.1".parse().unwrap()),
                    as_path: vec![64501],
                    best: true,
                    attributes: PathAttributes::default(),
                },
                BgpRoute {
                    prefix: "203.0.113.16/28".into(),
                    next_hop: Some("192.0.2.3".parse().unwrap()),
                    as_path: vec![64503, 64501],
                    best: false,
                    attributes: PathAttributes::default(),
                },
                BgpRoute {
                    prefix: "203.0.113.32/28".into(),
                    next_hop: None,
                    as_path: vec![],
                    best: true,
                    attributes: PathAttributes::default(),
                },
            ]
        );
    }

    #[test]
    fn bird_bfd_sessions_are_read_single_hop_and_multihop_with_their_state() {
        let out = "BIRD 2.0.12 ready.\nbfd1:\n\
            IP address                Interface  State      Since         Interval  Timeout\n\
            192.0.2.1                 eth0       Up         10:00:01.000    0.100    0.300\n\
            2001:db8:1::1             eth0       Init       10:00:01.000    1.000    0.000\n\
            198.51.100.5                         Down       10:00:02.000    1.000    0.000\n";
        let peers: Vec<(String, bool)> = bfd_peers(out)
            .into_iter()
            .map(|p| (p.address.to_string(), p.up))
            .collect();
        assert_eq!(
            peers,
            [
                ("192.0.2.1".to_owned(), true),
                ("2001:db8:1::1".to_owned(), false),
                ("198.51.100.5".to_owned(), false),
            ]
        );
        assert!(bfd_peers("BIRD 2.0.12 ready.\nbfd1:\n").is_empty());
    }
}
