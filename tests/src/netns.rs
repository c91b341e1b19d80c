//! Network-namespace topologies: the "machines" and "wires" of end-to-end tests.
//!
//! ```text
//!   host "client" ──eth0──┐
//!   host "n1" ──────eth0──┤   segment "lan": a bridge (br0) in a namespace of its own,
//!   host "n2" ──────eth0──┤   a dumb switch: no STP delay, no multicast snooping
//!   host "router" ──eth0──┘
//!   host "router" ──eth1────── segment "upstream" ... (a host may sit on several segments)
//! ```
//!
//! Every namespace is named `herald-<pid>-<topology>-<name>`, so tests run in parallel, and
//! everything is removed when the [`Topology`] is dropped, on success or on panic. Namespaces
//! left behind by a test process that was killed are swept by the next [`Topology::new`].
//!
//! Processes inside a host reach the API server at the same address as the test itself
//! (`127.0.0.1:<port>`, see [`Topology::give_api_access`]): a forwarder listens on the host's
//! own loopback and relays to the API server on the test's loopback, so one kubeconfig works
//! everywhere and no traffic leaves loopback or the test's namespaces.
//! [`Topology::silence_api`] makes every forwarder hold what it relays, as an API server that
//! was stopped (SIGSTOP) looks to its clients: connections are accepted, nothing answers.

use std::{
    ffi::OsStr,
    fs::{self, File},
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use nix::sched::CloneFlags;

use crate::{Error, Result, process::run};

/// The address plan of test topologies. Only documentation prefixes are used (RFC 5737 for
/// IPv4, RFC 3849 for IPv6); the Service ranges of the control plane are taken from them too.
pub mod addressing {
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// The L2 segment of nodes, clients and routers: 192.0.2.0/24 and 2001:db8::/64.
    /// Layer-2 pools live here too (e.g. 192.0.2.64/26), since clients must ARP for them.
    pub const LAN_V4: (Ipv4Addr, u8) = (Ipv4Addr::new(192, 0, 2, 0), 24);
    pub const LAN_V6: (Ipv6Addr, u8) = (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 64);
    /// Segments behind routers and BGP-announced pools: 203.0.113.0/24 and 2001:db8:2::/64.
    pub const UPSTREAM_V4: (Ipv4Addr, u8) = (Ipv4Addr::new(203, 0, 113, 0), 24);
    pub const UPSTREAM_V6: (Ipv6Addr, u8) = (Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0), 64);
    // 198.51.100.0/24 and 2001:db8:5e::/112 are the control plane's Service ranges.
}

const NETNS_DIR: &str = "/var/run/netns";
const NAME_PREFIX: &str = "herald-";

/// A set of network namespaces and the links between them, removed on drop.
#[derive(Debug)]
pub struct Topology {
    id: String,
    dir: PathBuf,
    namespaces: Mutex<Vec<String>>,
    forwarders: Mutex<Vec<ApiForwarder>>,
    /// While set, the forwarders relay nothing (see [`Topology::silence_api`]).
    api_silent: Arc<AtomicBool>,
}

impl Topology {
    /// An empty topology with a unique name; first removes namespaces left behind by test
    /// processes that no longer exist.
    pub fn new() -> Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        sweep_stale_namespaces();
        let id = format!(
            "{NAME_PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(&id);
        fs::create_dir_all(&dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        Ok(Topology {
            id,
            dir,
            namespaces: Mutex::default(),
            forwarders: Mutex::default(),
            api_silent: Arc::default(),
        })
    }

    /// A directory for the topology's configuration files and logs. Removed on drop unless
    /// the test is panicking or `HERALD_KEEP_LOGS` is set, so a failure leaves its logs to
    /// read.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn add_namespace(&self, name: &str) -> Result<String> {
        let netns = format!("{}-{name}", self.id);
        run(Command::new("ip").args(["netns", "add", &netns]))?;
        self.namespaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(netns.clone());
        ip(&netns, &["link", "set", "lo", "up"])?;
        // Addresses are usable at once (no duplicate address detection delay), and the
        // kernel answers ARP only for addresses on the interface that was asked.
        for (key, value) in [
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
            ("net.ipv4.conf.all.arp_ignore", "1"),
        ] {
            run(Command::new("ip").args([
                "netns",
                "exec",
                &netns,
                "sysctl",
                "-qw",
                &format!("{key}={value}"),
            ]))?;
        }
        Ok(netns)
    }

    /// A host: a network namespace with loopback up and no links yet.
    pub fn host(&self, name: &str) -> Result<Host> {
        Ok(Host {
            name: name.to_owned(),
            netns: self.add_namespace(name)?,
            links: Arc::default(),
            log_dir: self.dir.clone(),
        })
    }

    /// An L2 segment: a bridge in a namespace of its own, with the given IPv4 and IPv6 subnets
    /// from which [`Segment::attach`] numbers hosts.
    pub fn segment(
        &self,
        name: &str,
        ipv4: (Ipv4Addr, u8),
        ipv6: (Ipv6Addr, u8),
    ) -> Result<Segment> {
        let switch = self.add_namespace(&format!("sw-{name}"))?;
        ip(
            &switch,
            &[
                "link",
                "add",
                "br0",
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ],
        )?;
        ip(&switch, &["link", "set", "br0", "up"])?;
        Ok(Segment {
            name: name.to_owned(),
            switch,
            ipv4,
            ipv6,
            ports: Arc::default(),
        })
    }

    /// The usual LAN segment ([`addressing::LAN_V4`], [`addressing::LAN_V6`]).
    pub fn lan(&self) -> Result<Segment> {
        self.segment("lan", addressing::LAN_V4, addressing::LAN_V6)
    }

    /// Makes the API server at `api` (a loopback address of the test) reachable from inside
    /// `host` at the same address.
    pub fn give_api_access(&self, host: &Host, api: SocketAddr) -> Result<()> {
        let forwarder = ApiForwarder::start(&host.netns, api, self.api_silent.clone())?;
        self.forwarders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(forwarder);
        Ok(())
    }

    /// With `silent`, the API server stops answering every host of the topology, as if it
    /// were stopped: open connections and new ones are held, what is sent either way waits;
    /// without, everything held goes through. The test itself still reaches the API server.
    pub fn silence_api(&self, silent: bool) {
        self.api_silent.store(silent, Ordering::Relaxed);
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for forwarder in self
            .forwarders
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            forwarder.stop();
        }
        for netns in self
            .namespaces
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .rev()
        {
            remove_namespace(&netns);
        }
        if std::thread::panicking() || std::env::var_os("HERALD_KEEP_LOGS").is_some() {
            eprintln!(
                "topology {}: logs and configuration kept in {}",
                self.id,
                self.dir.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// A machine of the topology: one network namespace.
#[derive(Debug, Clone)]
pub struct Host {
    name: String,
    netns: String,
    links: Arc<AtomicU32>,
    log_dir: PathBuf,
}

impl Host {
    /// The name given to [`Topology::host`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The topology's directory, where this host's configuration files and logs go.
    pub fn dir(&self) -> &Path {
        &self.log_dir
    }

    /// The network namespace, as `ip netns` knows it.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// A command that runs `program` inside this host.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns]).arg(program);
        cmd
    }

    /// Runs `program ARGS...` inside this host and returns its standard output.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        run(self.command(program).args(args))
    }

    /// Starts a long-running process inside this host; its output goes to a log file in the
    /// topology's directory, and it is killed when the returned guard is dropped.
    pub fn spawn(&self, label: &str, cmd: Command) -> Result<Process> {
        let log_path = self.log_dir.join(format!("{}-{label}.log", self.name));
        let log = File::create(&log_path)
            .map_err(Error::io(format!("creating {}", log_path.display())))?;
        let log_err = log
            .try_clone()
            .map_err(Error::io(format!("opening {}", log_path.display())))?;
        let mut inner = self.command(cmd.get_program());
        inner.args(cmd.get_args());
        for (key, value) in cmd.get_envs() {
            match value {
                Some(value) => inner.env(key, value),
                None => inner.env_remove(key),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            inner.current_dir(dir);
        }
        let what = format!("{label} in {}", self.name);
        let child = inner
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| Error::Command {
                what: what.clone(),
                detail: e.to_string(),
            })?;
        Ok(Process {
            child,
            what,
            log_path,
        })
    }

    /// The kernel's neighbour entry (ARP or NDP) for `ip`, if any.
    /// Runs `f` on a new thread inside the host's namespace: sockets it opens stay there, as
    /// for a program started in the host.
    pub fn thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<io::Result<T>> {
        let netns = self.netns.clone();
        std::thread::spawn(move || {
            enter(&netns)?;
            Ok(f())
        })
    }

    pub fn neighbour(&self, ip: IpAddr) -> Result<Option<Neighbour>> {
        let out = self.run("ip", &["-j", "neigh", "show", "to", &ip.to_string()])?;
        let entries: serde_json::Value =
            serde_json::from_str(out.trim()).map_err(|e| Error::Parse {
                what: format!("ip -j neigh output in {}", self.name),
                detail: format!("{e}: {out}"),
            })?;
        Ok(entries.as_array().and_then(|a| a.first()).map(|entry| {
            let text = |key: &str| entry[key].as_str().unwrap_or_default().to_owned();
            Neighbour {
                device: text("dev"),
                mac: entry["lladdr"].as_str().map(str::to_owned),
                states: entry["state"]
                    .as_array()
                    .map(|s| {
                        s.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        }))
    }

    /// Lets the host route between its links (a router).
    pub fn enable_forwarding(&self) -> Result<()> {
        for key in ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"] {
            self.run("sysctl", &["-qw", &format!("{key}=1")])?;
        }
        Ok(())
    }

    /// Adds a route inside the host (`ip route add DEST via GATEWAY`).
    pub fn add_route(&self, destination: &str, gateway: IpAddr) -> Result<()> {
        let family = if gateway.is_ipv6() { "-6" } else { "-4" };
        ip(
            &self.netns,
            &[
                family,
                "route",
                "add",
                destination,
                "via",
                &gateway.to_string(),
            ],
        )?;
        Ok(())
    }
}

/// A neighbour-table entry as the kernel shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub device: String,
    /// The link-layer address; absent while unresolved or after a failed resolution.
    pub mac: Option<String>,
    /// `REACHABLE`, `STALE`, `DELAY`, `FAILED`, ...
    pub states: Vec<String>,
}

impl Neighbour {
    /// Resolved to a link-layer address (whatever its freshness).
    pub fn is_resolved(&self) -> bool {
        self.mac.is_some()
            && !self
                .states
                .iter()
                .any(|s| s == "FAILED" || s == "INCOMPLETE")
    }
}

/// A bridge that hosts attach to.
#[derive(Debug, Clone)]
pub struct Segment {
    name: String,
    switch: String,
    ipv4: (Ipv4Addr, u8),
    ipv6: (Ipv6Addr, u8),
    ports: Arc<AtomicU32>,
}

impl Segment {
    /// The `n`th address of the segment's subnets: 192.0.2.`n` and 2001:db8::`n` (in hex) on
    /// the LAN.
    pub fn address(&self, n: u32) -> (Ipv4Addr, Ipv6Addr) {
        (
            Ipv4Addr::from(u32::from(self.ipv4.0) + n),
            Ipv6Addr::from(u128::from(self.ipv6.0) + u128::from(n)),
        )
    }

    /// Connects `host` to the segment with a new interface (`eth0`, `eth1`, ... in the order
    /// of attachment) numbered [`Segment::address`]`(n)`.
    pub fn attach(&self, host: &Host, n: u32) -> Result<Link> {
        let ifname = format!("eth{}", host.links.fetch_add(1, Ordering::Relaxed));
        let port = format!("p{}", self.ports.fetch_add(1, Ordering::Relaxed));
        plug_into_bridge(&self.switch, "br0", &port, &host.netns, &ifname)?;
        let (ipv4, ipv6) = self.address(n);
        ip(
            &host.netns,
            &[
                "addr",
                "add",
                &format!("{ipv4}/{}", self.ipv4.1),
                "dev",
                &ifname,
            ],
        )?;
        ip(
            &host.netns,
            &[
                "addr",
                "add",
                &format!("{ipv6}/{}", self.ipv6.1),
                "dev",
                &ifname,
                "nodad",
            ],
        )?;
        ip(&host.netns, &["link", "set", &ifname, "up"])?;
        let out = run(Command::new("ip").args(["-n", &host.netns, "-j", "link", "show", &ifname]))?;
        let info: serde_json::Value =
            serde_json::from_str(out.trim()).map_err(|e| Error::Parse {
                what: format!("ip -j link output for {ifname} in {}", host.name),
                detail: format!("{e}: {out}"),
            })?;
        let mac = info[0]["address"]
            .as_str()
            .ok_or_else(|| Error::Parse {
                what: format!("the MAC address of {ifname} in {}", host.name),
                detail: out.clone(),
            })?
            .to_owned();
        Ok(Link {
            host: host.clone(),
            segment: self.name.clone(),
            switch: self.switch.clone(),
            port,
            ifname,
            mac,
            ipv4,
            ipv6,
        })
    }
}

/// A host's interface on a segment.
#[derive(Debug, Clone)]
pub struct Link {
    pub host: Host,
    pub segment: String,
    /// The interface name inside the host (`eth0`, ...).
    pub ifname: String,
    /// Its MAC address, lower case with colons, as `ip` prints it.
    pub mac: String,
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
    switch: String,
    port: String,
}

impl Link {
    /// Unplugs (`false`) or plugs back (`true`) the cable at the switch: the host sees its
    /// carrier go down, as when a real cable is cut.
    pub fn set_connected(&self, connected: bool) -> Result<()> {
        let state = if connected { "up" } else { "down" };
        ip(&self.switch, &["link", "set", &self.port, state])?;
        Ok(())
    }
}

/// A process running inside a host; killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct Process {
    child: Child,
    what: String,
    log_path: PathBuf,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What runs where, e.g. `bird in router`.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// Sends `signal` without waiting for the process to end.
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> Result<()> {
        let pid = i32::try_from(self.pid()).map_err(|e| Error::Parse {
            what: format!("the pid of {}", self.what),
            detail: e.to_string(),
        })?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).map_err(|e| {
            Error::Command {
                what: format!("kill -{signal} {}", self.what),
                detail: e.to_string(),
            }
        })
    }

    /// Kills the process with SIGKILL and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// How the process ended, once it has.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// What the process has written so far (standard output and error).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Relays TCP connections made inside a namespace to an address on the test's loopback.
#[derive(Debug)]
struct ApiForwarder {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl ApiForwarder {
    fn start(netns: &str, address: SocketAddr, silent: Arc<AtomicBool>) -> Result<Self> {
        let listener = in_netns(netns, || {
            let listener = TcpListener::bind(address)?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        })
        .map_err(Error::io(format!("listening on {address} in {netns}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((inbound, _)) => {
                        let (silent, stopped) = (silent.clone(), stopped.clone());
                        // Held (unanswered) while the API is silent, as a stopped server's
                        // kernel accepts connections its process never serves.
                        std::thread::spawn(move || {
                            if !wait_while_silent(&silent, &stopped) {
                                return;
                            }
                            if let Ok(outbound) = TcpStream::connect(address) {
                                let _ = inbound.set_nonblocking(false);
                                relay(inbound, outbound, &silent, &stopped);
                            }
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => break,
                }
            }
        });
        Ok(ApiForwarder { stop, thread })
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// Waits while `silent` is set; false if the forwarder stopped meanwhile.
fn wait_while_silent(silent: &AtomicBool, stopped: &AtomicBool) -> bool {
    while silent.load(Ordering::Relaxed) {
        if stopped.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Copies bytes both ways until either side closes, holding them while `silent` is set.
fn relay(a: TcpStream, b: TcpStream, silent: &Arc<AtomicBool>, stopped: &Arc<AtomicBool>) {
    let pipe = |mut from: TcpStream, mut to: TcpStream| {
        let (silent, stopped) = (silent.clone(), stopped.clone());
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            let mut buffer = vec![0; 64 * 1024];
            while let Ok(n @ 1..) = from.read(&mut buffer) {
                if !wait_while_silent(&silent, &stopped) || to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(std::net::Shutdown::Write);
        })
    };
    if let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) {
        pipe(a, b2);
        pipe(b, a2);
    }
}

/// Moves the calling thread into `netns`.
fn enter(netns: &str) -> io::Result<()> {
    let ns = File::open(Path::new(NETNS_DIR).join(netns))?;
    nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

/// Runs `f` on a short-lived thread that has entered `netns`; sockets it creates stay in that
/// namespace. The calling thread never changes namespace.
pub(crate) fn in_netns<T: Send>(
    netns: &str,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter(netns)?;
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    })
}

/// A cable from `bridge` in namespace `bridge_netns` (port `port`, up) to interface `ifname` in
/// namespace `netns` (left down, to be numbered first): a veth pair.
pub(crate) fn plug_into_bridge(
    bridge_netns: &str,
    bridge: &str,
    port: &str,
    netns: &str,
    ifname: &str,
) -> Result<()> {
    ip(
        bridge_netns,
        &[
            "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", netns,
        ],
    )?;
    ip(bridge_netns, &["link", "set", port, "master", bridge, "up"])?;
    Ok(())
}

/// `ip -n NETNS ARGS...`
pub(crate) fn ip(netns: &str, args: &[&str]) -> Result<String> {
    run(Command::new("ip").arg("-n").arg(netns).args(args))
}

/// Kills whatever still runs in `netns`, then deletes it.
fn remove_namespace(netns: &str) {
    if let Ok(pids) = run(Command::new("ip").args(["netns", "pids", netns])) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let _ = run(Command::new("ip").args(["netns", "del", netns]));
}

/// Removes `herald-<pid>-...` namespaces whose test process is gone.
fn sweep_stale_namespaces() {
    let Ok(entries) = fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(NAME_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            remove_namespace(&name);
        }
    }
}
