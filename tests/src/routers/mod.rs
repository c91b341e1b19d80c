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
    fs,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;

use herald_domain::Family;

use crate::{Error, Host, Process, Result, process::run};

mod bird;
mod frr;
mod gobgp;

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
    /// The router's own address for the session (BIRD needs one for multihop BFD).
    pub source: Option<IpAddr>,
    /// A BFD session with the neighbor (FRR: bfdd beside bgpd; BIRD: its bfd protocol).
    pub bfd: Option<BfdTimers>,
}

impl BgpNeighbor {
    pub fn new(address: IpAddr, asn: u32) -> BgpNeighbor {
        BgpNeighbor {
            address,
            asn,
            password: None,
            multihop: false,
            source: None,
            bfd: None,
        }
    }
}

/// The router's side of a BFD session: the interval it sends at and wants to receive at, and
/// how many packets may be missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BfdTimers {
    pub interval: Duration,
    pub multiplier: u8,
}

/// One BFD session as the router reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BfdPeer {
    pub address: IpAddr,
    pub up: bool,
    /// Why the router last changed the session's state, lower case as FRR prints it
    /// (`control detection time expired`, `neighbor signaled session down`, ...).
    pub diagnostic: String,
    /// The diagnostic in the neighbor's packets.
    pub remote_diagnostic: String,
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

/// The family as gobgp's `-a` and FRR's `show bgp` name it.
fn afi(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => "ipv4",
        Family::Ipv6 => "ipv6",
    }
}

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
    /// FRR's bfdd, when a neighbor has BFD.
    bfdd: Option<Process>,
    /// What it was started with, to start it again ([`BgpRouter::restart`]).
    config: BgpConfig,
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
        let mut bfdd = None;
        let process = match daemon {
            BgpDaemon::Gobgp => {
                let config_path = write("gobgp.toml", gobgp::config(config))?;
                let mut cmd = Command::new("gobgpd");
                cmd.arg("-f")
                    .arg(config_path)
                    .arg(format!("--api-hosts={}:{}", gobgp::API.0, gobgp::API.1))
                    .args(["--log-plain", "--pprof-disable"]);
                host.spawn(daemon.name(), cmd)?
            }
            BgpDaemon::Bird => {
                let config_path = write("bird.conf", bird::config(config))?;
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
                write("bgpd.conf", frr::config(host.name(), config))?;
                let bfd = frr::bfdd_config(host.name(), config);
                if let Some(text) = &bfd {
                    write("bfdd.conf", text.clone())?;
                }
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
                if bfd.is_some() {
                    bfdd = Some(host.spawn("bfdd", frr_daemon("bfdd"))?);
                }
                host.spawn(daemon.name(), frr_daemon("bgpd"))?
            }
        };
        let mut router = BgpRouter {
            daemon,
            host: host.clone(),
            dir,
            process,
            _zebra: zebra,
            bfdd,
            config: config.clone(),
        };
        router.wait_until_ready()?;
        router.originate(config)?;
        Ok(router)
    }

    fn wait_until_ready(&mut self) -> Result<()> {
        let (daemon, host, dir) = (self.daemon, &self.host, &self.dir);
        wait_for_daemon(&mut self.process, "its control interface", || {
            match daemon {
                BgpDaemon::Gobgp => run(gobgp::cli(host).arg("global")),
                BgpDaemon::Bird => run(bird::cli(dir).args(["show", "status"])),
                BgpDaemon::Frr => run(frr::cli(host, dir).args(["-c", "show bgp summary"])),
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
            run(gobgp::cli(&self.host).args(["global", "rib", "add", prefix, "-a", family]))?;
        }
        Ok(())
    }

    pub fn daemon(&self) -> BgpDaemon {
        self.daemon
    }

    /// Kills every process of the router at once (SIGKILL: a crash, no NOTIFICATION sent)
    /// and starts it again with the same configuration, as after a router reboot.
    pub fn restart(self) -> Result<BgpRouter> {
        let (host, daemon, config) = (self.host.clone(), self.daemon, self.config.clone());
        drop(self);
        BgpRouter::start(&host, daemon, &config)
    }

    /// Runs an FRR `vtysh -c` command (e.g. `clear bgp *`); its output.
    pub fn vtysh(&self, command: &str) -> Result<String> {
        if self.daemon != BgpDaemon::Frr {
            return Err(Error::Parse {
                what: format!("vtysh {command}"),
                detail: format!("{} is not FRR", self.daemon.name()),
            });
        }
        run(frr::cli(&self.host, &self.dir).args(["-c", command]))
    }

    /// The namespace the router runs in.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The neighbours whose session is in the Established state.
    pub fn established_peers(&self) -> Result<Vec<IpAddr>> {
        match self.daemon {
            BgpDaemon::Gobgp => {
                let out = run(gobgp::cli(&self.host).args(["neighbor", "-j"]))?;
                gobgp::established(&out)
            }
            BgpDaemon::Bird => {
                let out = run(bird::cli(&self.dir).args(["show", "protocols", "all"]))?;
                Ok(bird::established(&out))
            }
            BgpDaemon::Frr => {
                let out =
                    run(frr::cli(&self.host, &self.dir).args(["-c", "show bgp neighbors json"]))?;
                frr::established(&out)
            }
        }
    }

    /// Every path in the router's RIB for `family`, best paths flagged.
    pub fn routes(&self, family: Family) -> Result<Vec<BgpRoute>> {
        let out = self.show_routes(family)?;
        match self.daemon {
            BgpDaemon::Gobgp => gobgp::routes(&out),
            BgpDaemon::Bird => Ok(bird::routes(&out)),
            BgpDaemon::Frr => {
                let mut routes = frr::routes(&out)?;
                // The list has no attributes; each prefix's own view has them.
                let prefixes: std::collections::BTreeSet<String> =
                    routes.iter().map(|r| r.prefix.clone()).collect();
                for prefix in prefixes {
                    let afi = afi(family);
                    let detail = run(frr::cli(&self.host, &self.dir)
                        .args(["-c", &format!("show bgp {afi} unicast {prefix} json")]))?;
                    frr::add_attributes(&mut routes, &prefix, &detail)?;
                }
                Ok(routes)
            }
        }
    }

    /// The daemon's own account of its RIB for `family` (JSON for gobgpd and FRR, text for
    /// BIRD), as [`BgpRouter::routes`] reads it.
    pub fn show_routes(&self, family: Family) -> Result<String> {
        let afi = afi(family);
        match self.daemon {
            BgpDaemon::Gobgp => {
                run(gobgp::cli(&self.host).args(["global", "rib", "-a", afi, "-j"]))
            }
            BgpDaemon::Bird => {
                let table = match family {
                    Family::Ipv4 => "master4",
                    Family::Ipv6 => "master6",
                };
                run(bird::cli(&self.dir).args(["show", "route", "all", "table", table]))
            }
            BgpDaemon::Frr => run(frr::cli(&self.host, &self.dir)
                .args(["-c", &format!("show bgp {afi} unicast json")])),
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
        let afi = afi(family);
        let mut child = gobgp::cli(&self.host)
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

    /// The router's BFD sessions (FRR's bfdd, BIRD's bfd protocol).
    pub fn bfd_peers(&self) -> Result<Vec<BfdPeer>> {
        match self.daemon {
            BgpDaemon::Frr if self.bfdd.is_some() => {
                let out = run(frr::cli(&self.host, &self.dir).args(["-c", "show bfd peers json"]))?;
                frr::bfd_peers(&out)
            }
            BgpDaemon::Bird => {
                let out = run(bird::cli(&self.dir).args(["show", "bfd", "sessions"]))?;
                Ok(bird::bfd_peers(&out))
            }
            _ => Err(Error::Command {
                what: "reading BFD sessions".into(),
                detail: format!("no BFD runs beside {}", self.daemon.name()),
            }),
        }
    }

    /// The next hops of the router's paths to the host prefix of `ip`.
    pub fn next_hops(&self, ip: IpAddr) -> Result<std::collections::BTreeSet<IpAddr>> {
        let prefix = herald_domain::Prefix::host(ip).to_string();
        Ok(self
            .routes(Family::of(ip))?
            .into_iter()
            .filter(|r| r.prefix == prefix)
            .filter_map(|r| r.next_hop)
            .collect())
    }

    /// Waits (up to `timeout`) until the router's paths to `ip` go through exactly
    /// `next_hops`.
    pub async fn wait_next_hops(
        &self,
        ip: IpAddr,
        next_hops: &std::collections::BTreeSet<IpAddr>,
        timeout: Duration,
    ) -> Result<()> {
        crate::wait_for(
            &format!("paths to {ip} via {next_hops:?}"),
            timeout,
            || async {
                let hops = self.next_hops(ip).map_err(|e| e.to_string())?;
                if hops == *next_hops {
                    Ok(())
                } else {
                    Err(format!("{hops:?}"))
                }
            },
        )
        .await
    }

    /// Waits (up to `timeout`) until the router has exactly `sessions` BFD sessions, all Up.
    pub async fn wait_bfd_up(&self, sessions: usize, timeout: Duration) -> Result<()> {
        crate::wait_for(
            &format!("the router's {sessions} BFD sessions Up"),
            timeout,
            || async {
                let peers = self.bfd_peers().map_err(|e| e.to_string())?;
                if peers.len() == sessions && peers.iter().all(|p| p.up) {
                    Ok(())
                } else {
                    Err(format!("{peers:?}"))
                }
            },
        )
        .await
    }

    /// The process that runs BFD, to freeze it (SIGSTOP) as a failed router would be: FRR's
    /// bfdd, or BIRD itself (BGP and BFD in one process).
    pub fn bfd_daemon(&self) -> Option<&Process> {
        match self.daemon {
            BgpDaemon::Bird => Some(&self.process),
            _ => self.bfdd.as_ref(),
        }
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

fn family_of(address: IpAddr) -> (&'static str, &'static str) {
    // (gobgp afi-safi name, BIRD channel / FRR address-family)
    if address.is_ipv4() {
        ("ipv4-unicast", "ipv4")
    } else {
        ("ipv6-unicast", "ipv6")
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let frr = frr::config("r", &config);
        assert!(frr.contains(" address-family ipv6 unicast\n  neighbor 2001:db8::1 activate\n"));
        assert!(frr.contains("  network 203.0.113.0/28\n"));
        let bird = bird::config(&config);
        assert!(
            bird.contains("neighbor 2001:db8::1 as 64513; ipv6 {"),
            "{bird}"
        );
        assert!(bird.contains("protocol static originate_ipv6 { ipv6; route 2001:db8:2::/64"));
        let gobgp = gobgp::config(&config);
        assert!(gobgp.contains("neighbor-address = \"2001:db8::1\""));
        assert!(gobgp.contains("afi-safi-name = \"ipv6-unicast\""));
    }
}
