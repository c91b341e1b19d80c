//! Real BGP daemons, the routers Herald's speakers peer with in tests: gobgpd, BIRD 2 and FRR's
//! bgpd, each started inside a [`Host`] from one daemon-neutral description ([`BgpConfig`]),
//! and read back in one shape ([`BgpRoute`], [`BgpRouter::established_peers`]).
//!
//! ```text
//!   BgpConfig ──► gobgp.toml / bird.conf / bgpd.conf ──► daemon in the host's namespace
//!                                                            │ control socket / gRPC on the
//!   Vec<BgpRoute> ◄── parse ◄── gobgp -j / birdc / vtysh json ◄┘ host's own loopback
//! ```
//!
//! Each daemon runs in the foreground under the host's [`Process`] guard, so it dies with the
//! test; its configuration and log stay in the topology's directory.

use std::{
    fmt::Write as _,
    fs,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{Error, Host, Process, Result, process::run};

/// Which BGP implementation runs the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BgpDaemon {
    /// gobgpd, driven and read through its `gobgp` CLI (gRPC on the host's loopback).
    Gobgp,
    /// BIRD 2, read with `birdc` over its control socket.
    Bird,
    /// FRR: zebra and bgpd, as in any FRR router (zebra also installs the best routes into
    /// the host's kernel), read with `vtysh`.
    Frr,
}

impl BgpDaemon {
    pub const ALL: [BgpDaemon; 3] = [BgpDaemon::Gobgp, BgpDaemon::Bird, BgpDaemon::Frr];

    pub fn name(self) -> &'static str {
        match self {
            BgpDaemon::Gobgp => "gobgpd",
            BgpDaemon::Bird => "bird",
            BgpDaemon::Frr => "frr",
        }
    }
}

/// What a router is: its AS, its identity, whom it peers with and what it originates.
#[derive(Debug, Clone)]
pub struct BgpConfig {
    pub asn: u32,
    pub router_id: Ipv4Addr,
    pub neighbors: Vec<BgpNeighbor>,
    /// Prefixes the router originates itself, e.g. `203.0.113.16/28` or `2001:db8:2:1::/64`.
    pub originate: Vec<String>,
    /// Act as the receiving speaker of graceful restart (RFC 4724): keep a restarting
    /// neighbor's routes, marked stale, until it is back and has sent End-of-RIB.
    pub graceful_restart: bool,
}

/// A BGP session the router accepts and opens. The session carries the address family of the
/// neighbor's address (IPv4 unicast over IPv4, IPv6 unicast over IPv6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpNeighbor {
    pub address: IpAddr,
    pub asn: u32,
    /// The TCP MD5 password of the session (RFC 2385).
    pub password: Option<String>,
    /// The neighbor is not on a shared link (eBGP multihop).
    pub multihop: bool,
}

impl BgpNeighbor {
    pub fn new(address: IpAddr, asn: u32) -> BgpNeighbor {
        BgpNeighbor {
            address,
            asn,
            password: None,
            multihop: false,
        }
    }
}

/// One path to a prefix in a router's RIB.
#[derive(Debug, Clone, PartialEq)]
pub struct BgpRoute {
    /// `address/length`, as the daemon prints it.
    pub prefix: String,
    /// `None` for a route the router originates itself.
    pub next_hop: Option<IpAddr>,
    /// AS numbers from the nearest to the origin; empty for a route originated locally.
    pub as_path: Vec<u32>,
    /// Whether the daemon selected this path as best.
    pub best: bool,
    pub attributes: PathAttributes,
}

/// The attributes of a path that Herald sets, in one spelling whatever the daemon.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PathAttributes {
    pub local_pref: Option<u32>,
    /// Standard communities as `high:low` in decimal (no-export is `65535:65281`).
    pub communities: Vec<String>,
    /// Large communities as `global:local1:local2`.
    pub large_communities: Vec<String>,
    /// The link-bandwidth extended community, in octets per second.
    pub link_bandwidth: Option<f64>,
}

/// A best-path change seen by [`BgpRouter::monitor`].
#[derive(Debug, Clone)]
pub struct RibChange {
    pub at: Instant,
    pub prefix: String,
    pub withdrawn: bool,
}

/// A running `gobgp monitor`; stopped when dropped.
#[derive(Debug)]
pub struct RibMonitor {
    child: std::process::Child,
    pub changes: std::sync::mpsc::Receiver<RibChange>,
}

impl RibMonitor {
    /// The next change of `prefix` (announced or withdrawn as asked) within `timeout`.
    pub fn wait_for(&self, prefix: &str, withdrawn: bool, timeout: Duration) -> Option<RibChange> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let change = self.changes.recv_timeout(left).ok()?;
            if change.prefix == prefix && change.withdrawn == withdrawn {
                return Some(change);
            }
        }
    }
}

impl Drop for RibMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Address family of a RIB read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    /// The family as gobgp's `-a` and FRR's `show bgp` name it.
    fn afi(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

/// Where gobgpd's gRPC API listens, on the host's own loopback.
const GOBGP_API: (&str, &str) = ("127.0.0.1", "50051");

/// A BGP daemon running in a host; stopped when dropped.
#[derive(Debug)]
pub struct BgpRouter {
    daemon: BgpDaemon,
    host: Host,
    /// The daemon's private directory: configuration, control socket, pid file.
    dir: PathBuf,
    process: Process,
    /// FRR's zebra, which runs beside its bgpd; held so that it stops with the router.
    _zebra: Option<Process>,
}

impl BgpRouter {
    /// Writes the daemon's configuration, starts it in `host` and waits until its control
    /// interface answers (sessions come up later; see [`BgpRouter::established_peers`]).
    pub fn start(host: &Host, daemon: BgpDaemon, config: &BgpConfig) -> Result<Self> {
        let dir = host
            .dir()
            .join(format!("{}-{}", host.name(), daemon.name()));
        fs::create_dir_all(&dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        let write = |file: &str, text: String| {
            let path = dir.join(file);
            fs::write(&path, text).map_err(Error::io(format!("writing {}", path.display())))?;
            Ok::<_, Error>(path)
        };
        let mut zebra = None;
        let process = match daemon {
            BgpDaemon::Gobgp => {
                let config_path = write("gobgp.toml", gobgp_config(config))?;
                let mut cmd = Command::new("gobgpd");
                cmd.arg("-f")
                    .arg(config_path)
                    .arg(format!("--api-hosts={}:{}", GOBGP_API.0, GOBGP_API.1))
                    .args(["--log-plain", "--pprof-disable"]);
                host.spawn(daemon.name(), cmd)?
            }
            BgpDaemon::Bird => {
                let config_path = write("bird.conf", bird_config(config))?;
                let mut cmd = Command::new("bird");
                cmd.arg("-f")
                    .arg("-c")
                    .arg(config_path)
                    .arg("-s")
                    .arg(dir.join("bird.ctl"))
                    .arg("-P")
                    .arg(dir.join("bird.pid"));
                host.spawn(daemon.name(), cmd)?
            }
            BgpDaemon::Frr => {
                // zebra runs beside bgpd as in any FRR router: bgpd learns the interfaces from
                // it (without them it drops IPv6 routes whose next hop is link-local) and it
                // installs the best routes into the host's kernel.
                write("zebra.conf", format!("hostname {}\n", host.name()))?;
                write("bgpd.conf", frr_config(host.name(), config))?;
                // The daemons drop to the frr user: it must own their files and sockets.
                run(Command::new("chown").args(["-R", "frr:frr"]).arg(&dir))?;
                let zserv = dir.join("zserv.api");
                let frr_daemon = |name: &str| {
                    let mut cmd = Command::new(format!("/usr/lib/frr/{name}"));
                    cmd.arg("-f")
                        .arg(dir.join(format!("{name}.conf")))
                        .arg("-i")
                        .arg(dir.join(format!("{name}.pid")))
                        .arg("-z")
                        .arg(&zserv)
                        .arg("--vty_socket")
                        .arg(&dir)
                        .args(["-u", "frr", "-g", "frr"]);
                    cmd
                };
                let mut zebra_process = host.spawn("zebra", frr_daemon("zebra"))?;
                wait_for_daemon(&mut zebra_process, "zebra's API socket", || {
                    if zserv.exists() {
                        Ok(())
                    } else {
                        Err(format!("no {}", zserv.display()))
                    }
                })?;
                zebra = Some(zebra_process);
                host.spawn(daemon.name(), frr_daemon("bgpd"))?
            }
        };
        let mut router = BgpRouter {
            daemon,
            host: host.clone(),
            dir,
            process,
            _zebra: zebra,
        };
        router.wait_until_ready()?;
        router.originate(config)?;
        Ok(router)
    }

    fn wait_until_ready(&mut self) -> Result<()> {
        let (daemon, host, dir) = (self.daemon, &self.host, &self.dir);
        wait_for_daemon(&mut self.process, "its control interface", || {
            match daemon {
                BgpDaemon::Gobgp => run(gobgp(host).arg("global")),
                BgpDaemon::Bird => run(birdc(dir).args(["show", "status"])),
                BgpDaemon::Frr => run(vtysh(host, dir).args(["-c", "show bgp summary"])),
            }
            .map(drop)
            .map_err(|e| e.to_string())
        })
    }

    /// Adds the configured locally originated prefixes where the daemon takes them at run time
    /// (gobgpd has no static routes in its configuration file).
    fn originate(&self, config: &BgpConfig) -> Result<()> {
        if self.daemon != BgpDaemon::Gobgp {
            return Ok(());
        }
        for prefix in &config.originate {
            let family = if prefix.contains(':') { "ipv6" } else { "ipv4" };
            run(gobgp(&self.host).args(["global", "rib", "add", prefix, "-a", family]))?;
        }
        Ok(())
    }

    pub fn daemon(&self) -> BgpDaemon {
        self.daemon
    }

    /// The namespace the router runs in.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The neighbours whose session is in the Established state.
    pub fn established_peers(&self) -> Result<Vec<IpAddr>> {
        match self.daemon {
            BgpDaemon::Gobgp => {
                let out = run(gobgp(&self.host).args(["neighbor", "-j"]))?;
                parse_gobgp_neighbors(&out)
            }
            BgpDaemon::Bird => {
                let out = run(birdc(&self.dir).args(["show", "protocols", "all"]))?;
                Ok(parse_bird_established(&out))
            }
            BgpDaemon::Frr => {
                let out =
                    run(vtysh(&self.host, &self.dir).args(["-c", "show bgp neighbors json"]))?;
                parse_frr_neighbors(&out)
            }
        }
    }

    /// Every path in the router's RIB for `family`, best paths flagged.
    pub fn routes(&self, family: Family) -> Result<Vec<BgpRoute>> {
        let out = self.show_routes(family)?;
        match self.daemon {
            BgpDaemon::Gobgp => parse_gobgp_rib(&out),
            BgpDaemon::Bird => Ok(parse_bird_routes(&out)),
            BgpDaemon::Frr => {
                let mut routes = parse_frr_rib(&out)?;
                // The list has no attributes; each prefix's own view has them.
                let prefixes: std::collections::BTreeSet<String> =
                    routes.iter().map(|r| r.prefix.clone()).collect();
                for prefix in prefixes {
                    let afi = family.afi();
                    let detail = run(vtysh(&self.host, &self.dir)
                        .args(["-c", &format!("show bgp {afi} unicast {prefix} json")]))?;
                    add_frr_attributes(&mut routes, &prefix, &detail)?;
                }
                Ok(routes)
            }
        }
    }

    /// The daemon's own account of its RIB for `family` (JSON for gobgpd and FRR, text for
    /// BIRD), as [`BgpRouter::routes`] reads it.
    pub fn show_routes(&self, family: Family) -> Result<String> {
        let afi = family.afi();
        match self.daemon {
            BgpDaemon::Gobgp => run(gobgp(&self.host).args(["global", "rib", "-a", afi, "-j"])),
            BgpDaemon::Bird => {
                let table = match family {
                    Family::Ipv4 => "master4",
                    Family::Ipv6 => "master6",
                };
                run(birdc(&self.dir).args(["show", "route", "all", "table", table]))
            }
            BgpDaemon::Frr => {
                run(vtysh(&self.host, &self.dir)
                    .args(["-c", &format!("show bgp {afi} unicast json")]))
            }
        }
    }

    /// Streams the changes of gobgpd's best paths for `family` as they happen (gobgpd only),
    /// each stamped with the moment it was read: for timing convergence without polling.
    pub fn monitor(&self, family: Family) -> Result<RibMonitor> {
        if self.daemon != BgpDaemon::Gobgp {
            return Err(Error::Command {
                what: "monitoring a RIB".into(),
                detail: format!(
                    "{} has no streaming monitor here; use gobgpd",
                    self.daemon.name()
                ),
            });
        }
        let afi = family.afi();
        let mut child = gobgp(&self.host)
            .args(["monitor", "global", "rib", "-a", afi, "-j"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(Error::io("starting gobgp monitor".to_owned()))?;
        let stdout = child.stdout.take().expect("piped");
        let (sender, changes) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(|l| l.ok())
            {
                let at = Instant::now();
                let Ok(value) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let paths = match value {
                    Value::Array(paths) => paths,
                    other => vec![other],
                };
                for path in paths {
                    let change = RibChange {
                        at,
                        prefix: path["nlri"]["prefix"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        withdrawn: path["withdrawal"].as_bool().unwrap_or(false),
                    };
                    if sender.send(change).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(RibMonitor { child, changes })
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// Polls `check` until it passes while `daemon` keeps running, for at most 20 s; a failure
/// carries what the check last saw and the daemon's log.
fn wait_for_daemon(
    daemon: &mut Process,
    what: &str,
    mut check: impl FnMut() -> std::result::Result<(), String>,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let last = match check() {
            Ok(()) => return Ok(()),
            Err(last) => last,
        };
        if !daemon.is_running() || Instant::now() >= deadline {
            return Err(Error::Command {
                what: format!("waiting for {what}"),
                detail: format!("{last}; log of {}:\n{}", daemon.what(), daemon.log()),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn gobgp(host: &Host) -> Command {
    let mut cmd = host.command("gobgp");
    cmd.args(["-u", GOBGP_API.0, "-p", GOBGP_API.1]);
    cmd
}

/// birdc talks to BIRD over a Unix socket, so it needs no namespace.
fn birdc(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new("birdc");
    cmd.arg("-s").arg(dir.join("bird.ctl"));
    cmd
}

fn vtysh(host: &Host, dir: &std::path::Path) -> Command {
    let mut cmd = host.command("vtysh");
    cmd.arg("--vty_socket").arg(dir);
    cmd
}

fn family_of(address: IpAddr) -> (&'static str, &'static str) {
    // (gobgp afi-safi name, BIRD channel / FRR address-family)
    if address.is_ipv4() {
        ("ipv4-unicast", "ipv4")
    } else {
        ("ipv6-unicast", "ipv6")
    }
}

fn gobgp_config(config: &BgpConfig) -> String {
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

fn bird_config(config: &BgpConfig) -> String {
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
    for (i, n) in config.neighbors.iter().enumerate() {
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
        let _ = writeln!(
            text,
            "protocol bgp peer{i} {{ local as {}; neighbor {} as {};{password}{graceful}{direct}{multihop} {} {{ import all; export all; }}; }}",
            config.asn,
            n.address,
            n.asn,
            family_of(n.address).1
        );
    }
    text
}

fn frr_config(hostname: &str, config: &BgpConfig) -> String {
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

fn json(what: &str, out: &str) -> Result<Value> {
    serde_json::from_str(out.trim()).map_err(|e| Error::Parse {
        what: what.to_owned(),
        detail: format!("{e}: {out}"),
    })
}

fn parse_ip(what: &str, text: &str) -> Result<IpAddr> {
    text.parse().map_err(|e| Error::Parse {
        what: what.to_owned(),
        detail: format!("{e}: {text:?}"),
    })
}

/// A next hop of all zeros is how gobgpd and FRR show a route they originate.
fn real_next_hop(address: IpAddr) -> Option<IpAddr> {
    (!address.is_unspecified()).then_some(address)
}

fn parse_as_path(text: &str) -> Vec<u32> {
    text.split_whitespace()
        .filter_map(|asn| asn.parse().ok())
        .collect()
}

fn parse_gobgp_neighbors(out: &str) -> Result<Vec<IpAddr>> {
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

fn parse_gobgp_rib(out: &str) -> Result<Vec<BgpRoute>> {
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

/// `show protocols all`: a protocol line `peer0 BGP --- up 12:00:00 Established` per session.
fn parse_bird_established(out: &str) -> Vec<IpAddr> {
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
fn parse_bird_routes(out: &str) -> Vec<BgpRoute> {
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
                route.attributes.communities = bird_tuples(list).map(|t| t.join(":")).collect();
            } else if let Some(list) = attr.strip_prefix("BGP.large_community:") {
                route.attributes.large_communities =
                    bird_tuples(list).map(|t| t.join(":")).collect();
            } else if let Some(list) = attr.strip_prefix("BGP.ext_community:") {
                // BIRD does not name link bandwidth: `(unknown 0x4004, AS, float bits)`.
                route.attributes.link_bandwidth = bird_tuples(list)
                    .find(|t| t.first().map(String::as_str) == Some("unknown 0x4004"))
                    .and_then(|t| t.get(2)?.parse::<u32>().ok())
                    .map(|bits| f64::from(f32::from_bits(bits)));
            }
        } else if !line.starts_with(char::is_whitespace) && line.contains('/') && is_path(line) {
            let (first, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            prefix = first.to_owned();
            routes.push(bird_path(&prefix, rest));
        } else if line.starts_with(' ') && !prefix.is_empty() && is_path(line) {
            routes.push(bird_path(&prefix, line));
        }
    }
    routes
}

/// The tuples of a BIRD attribute list, `(65000,100) (65535,65281)`, as their parts.
fn bird_tuples(list: &str) -> impl Iterator<Item = Vec<String>> + '_ {
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

fn bird_path(prefix: &str, rest: &str) -> BgpRoute {
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

fn parse_frr_neighbors(out: &str) -> Result<Vec<IpAddr>> {
    let value = json("vtysh show bgp neighbors json", out)?;
    let mut peers = Vec::new();
    for (address, neighbor) in value.as_object().into_iter().flatten() {
        if neighbor["bgpState"].as_str() == Some("Established") {
            peers.push(parse_ip("an FRR neighbor address", address)?);
        }
    }
    Ok(peers)
}

fn parse_frr_rib(out: &str) -> Result<Vec<BgpRoute>> {
    let value = json("vtysh show bgp unicast json", out)?;
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
fn add_frr_attributes(routes: &mut [BgpRoute], prefix: &str, out: &str) -> Result<()> {
    let value = json("vtysh show bgp unicast PREFIX json", out)?;
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
    fn bird_paths_of_one_prefix_are_grouped_under_it_with_their_attributes() {
        let out = "BIRD 2.0.12 ready.\nTable master4:\n\
            203.0.113.16/28      unicast [peer0 14:57:54.799] * (100) [AS64501?]\n\
            \tvia 192.0.2.1 on eth0\n\tType: BGP univ\n\tBGP.as_path: 64501\n\
            \tBGP.next_hop: 192.0.2.1\n\
            \x20                    unicast [peer1 14:57:52.888] (100) [AS64501?]\n\
            \tvia 192.0.2.3 on eth0\n\tBGP.as_path: 64503 64501\n\tBGP.next_hop: 192.0.2.3\n\
            203.0.113.32/28      blackhole [originate_ipv4 14:57:50.688] * (200)\n\
            \tType: static univ\n";
        let routes = parse_bird_routes(out);
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
    fn frr_originated_routes_have_no_next_hop() {
        let out = r#"{"routes": {"203.0.113.48/28": [{"bestpath":true,"path":"",
            "nexthops":[{"ip":"0.0.0.0"}]}], "203.0.113.16/28": [{"path":"64502 64501",
            "nexthops":[{"ip":"192.0.2.2"}]}]}}"#;
        let mut routes = parse_frr_rib(out).expect("valid json");
        routes.sort_by(|a, b| a.prefix.cmp(&b.prefix));
        assert_eq!(routes[0].next_hop, Some("192.0.2.2".parse().unwrap()));
        assert_eq!(routes[0].as_path, vec![64502, 64501]);
        assert!(!routes[0].best);
        assert_eq!(routes[1].next_hop, None);
        assert!(routes[1].best);
    }

    #[test]
    fn the_three_configurations_name_every_neighbor_and_prefix() {
        let config = BgpConfig {
            asn: 64512,
            router_id: Ipv4Addr::new(192, 0, 2, 254),
            neighbors: vec![
                BgpNeighbor::new("192.0.2.1".parse().unwrap(), 64513),
                BgpNeighbor::new("2001:db8::1".parse().unwrap(), 64513),
            ],
            originate: vec!["203.0.113.0/28".into(), "2001:db8:2::/64".into()],
            graceful_restart: false,
        };
        let frr = frr_config("r", &config);
        assert!(frr.contains(" address-family ipv6 unicast\n  neighbor 2001:db8::1 activate\n"));
        assert!(frr.contains("  network 203.0.113.0/28\n"));
        let bird = bird_config(&config);
        assert!(
            bird.contains("neighbor 2001:db8::1 as 64513; ipv6 {"),
            "{bird}"
        );
        assert!(bird.contains("protocol static originate_ipv6 { ipv6; route 2001:db8:2::/64"));
        let gobgp = gobgp_config(&config);
        assert!(gobgp.contains("neighbor-address = \"2001:db8::1\""));
        assert!(gobgp.contains("afi-safi-name = \"ipv6-unicast\""));
    }
}
