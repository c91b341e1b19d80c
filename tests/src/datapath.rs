//! The datapath of a real node: kube-proxy programming the node's kernel, and Pods that serve.
//!
//! ```text
//!   client ──► LB IP:8765 ──► node n1 (eth0 on the LAN)
//!                               kube-proxy (nftables): DNAT to a ready endpoint, SNAT under
//!                               Cluster, healthCheckNodePort
//!                               cni0 bridge 203.0.113.129/28, 2001:db8:4:1::1/64
//!                                 ├─ veth ── Pod "web-0" 203.0.113.130, 2001:db8:4:1::2 :9376
//!                                 └─ veth ── Pod "web-1" 203.0.113.131, 2001:db8:4:1::3 :9376
//!                               routes to the other nodes' Pod CIDRs via their LAN addresses
//! ```
//!
//! [`NodeNetwork`] does to a node host what a bridge CNI plugin with host-gateway routes does:
//! a bridge holding the gateway addresses of the node's Pod CIDRs, forwarding on, and routes to
//! the other nodes' Pod CIDRs (and, standing in for a node's default route, to the Service
//! ranges). [`KubeProxy`] is the real kube-proxy, built from the same
//! Kubernetes modules as the API server, run in the node with `--hostname-override` = the Node's
//! name. [`ServingPod`] is a Pod as a kubelet would run it: its own network namespace with a veth
//! into the node's bridge, its Pod object in the API with the addresses it really has and the
//! `Ready` condition, and an HTTP server on port [`POD_PORT`] that answers every request with
//! the Pod's name and the client address it saw (a [`Reply`]).
//!
//! Pod addresses come from documentation prefixes: the cluster CIDRs [`CLUSTER_CIDR_V4`] and
//! [`CLUSTER_CIDR_V6`], one /28 and one /64 per node ([`pod_cidrs`]).

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::{
    ControlPlane, Error, Host, Process, Result, Topology,
    netns::{in_netns, ip, plug_into_bridge},
};

/// The IPv4 cluster CIDR: Pod addresses of every node (`--cluster-cidr` of kube-proxy).
pub const CLUSTER_CIDR_V4: (Ipv4Addr, u8) = (Ipv4Addr::new(203, 0, 113, 128), 26);
/// The IPv6 cluster CIDR.
pub const CLUSTER_CIDR_V6: (Ipv6Addr, u8) = (Ipv6Addr::new(0x2001, 0xdb8, 4, 0, 0, 0, 0, 0), 56);
/// The control plane's Service ranges (`tests/cluster`: `--service-cluster-ip-range`).
pub const SERVICE_CIDRS: [&str; 2] = ["198.51.100.0/24", "2001:db8:5e::/112"];
/// The port every serving Pod listens on (the page's example `targetPort`).
pub const POD_PORT: u16 = 9376;
/// kube-proxy's own health port (`--healthz-bind-address`).
pub const KUBE_PROXY_HEALTH_PORT: u16 = 10256;

/// The Pod CIDRs of node number `n` (1 to 4): `203.0.113.(128 + 16 (n - 1))/28` and
/// `2001:db8:4:n::/64`.
pub fn pod_cidrs(n: u32) -> ((Ipv4Addr, u8), (Ipv6Addr, u8)) {
    assert!(
        (1..=4).contains(&n),
        "node number {n}: the cluster CIDR holds four nodes"
    );
    let v4 = Ipv4Addr::from(u32::from(CLUSTER_CIDR_V4.0) + 16 * (n - 1));
    let v6 = Ipv6Addr::from(u128::from(CLUSTER_CIDR_V6.0) + (u128::from(n) << 64));
    ((v4, 28), (v6, 64))
}

fn cidr(address: impl std::fmt::Display, length: u8) -> String {
    format!("{address}/{length}")
}

/// A node host prepared as a bridge CNI plugin would: forwarding on, the bridge `cni0` with the
/// gateway addresses of the node's Pod CIDRs.
#[derive(Debug)]
pub struct NodeNetwork {
    host: Host,
    number: u32,
    next_pod: AtomicU32,
}

impl NodeNetwork {
    /// Prepares `host` as node number `n` (see [`pod_cidrs`]).
    pub fn new(host: &Host, n: u32) -> Result<Self> {
        let ((v4, v4_len), (v6, v6_len)) = pod_cidrs(n);
        host.enable_forwarding()?;
        let netns = host.netns();
        ip(netns, &["link", "add", "cni0", "type", "bridge"])?;
        ip(
            netns,
            &["addr", "add", &cidr(next_v4(v4, 1), v4_len), "dev", "cni0"],
        )?;
        ip(
            netns,
            &[
                "addr",
                "add",
                &cidr(next_v6(v6, 1), v6_len),
                "dev",
                "cni0",
                "nodad",
            ],
        )?;
        ip(netns, &["link", "set", "cni0", "up"])?;
        // A real node's default route covers the ClusterIPs; the kernel needs some route to
        // send a local packet out before kube-proxy's DNAT gives it its endpoint.
        for range in SERVICE_CIDRS {
            ip(netns, &["route", "add", range, "dev", "cni0"])?;
        }
        Ok(NodeNetwork {
            host: host.clone(),
            number: n,
            next_pod: AtomicU32::new(2),
        })
    }

    /// Routes this node's traffic for `other`'s Pods through `other` (its addresses on a
    /// segment both are on), as host-gateway routing does.
    pub fn route_pods_of(&self, other: &NodeNetwork, via: (Ipv4Addr, Ipv6Addr)) -> Result<()> {
        let ((v4, v4_len), (v6, v6_len)) = pod_cidrs(other.number);
        self.host.add_route(&cidr(v4, v4_len), IpAddr::V4(via.0))?;
        self.host.add_route(&cidr(v6, v6_len), IpAddr::V6(via.1))?;
        Ok(())
    }

    /// The `spec` of this node's Node object: its Pod CIDRs.
    pub fn node_spec(&self) -> serde_json::Value {
        let ((v4, v4_len), (v6, v6_len)) = pod_cidrs(self.number);
        json!({"podCIDR": cidr(v4, v4_len), "podCIDRs": [cidr(v4, v4_len), cidr(v6, v6_len)]})
    }

    /// The next free Pod addresses of this node.
    fn allocate(&self) -> (Ipv4Addr, Ipv6Addr) {
        let k = self.next_pod.fetch_add(1, Ordering::Relaxed);
        assert!(k < 15, "node {}: its /28 holds 13 Pods", self.number);
        let ((v4, _), (v6, _)) = pod_cidrs(self.number);
        (next_v4(v4, k), next_v6(v6, k))
    }

    /// The node's own addresses on its Pod network (the bridge's): the source of traffic it
    /// masquerades toward its local Pods.
    pub fn gateways(&self) -> (Ipv4Addr, Ipv6Addr) {
        let ((v4, _), (v6, _)) = pod_cidrs(self.number);
        (next_v4(v4, 1), next_v6(v6, 1))
    }
}

fn next_v4(base: Ipv4Addr, k: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base) + k)
}

fn next_v6(base: Ipv6Addr, k: u32) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(base) + u128::from(k))
}

/// A real kube-proxy running in a node host; killed when dropped.
#[derive(Debug)]
pub struct KubeProxy {
    /// Held so that kube-proxy is killed with its guard.
    _process: Process,
}

impl KubeProxy {
    /// The proxy mode: nftables, kube-proxy's newest, which runs here (Linux 5.13 or later and
    /// the `nft` tool are all it needs).
    pub const MODE: &'static str = "nftables";

    /// Starts kube-proxy in `host` for the Node `node_name` with `kubeconfig` (the API server
    /// must be reachable from the host, see [`Topology::give_api_access`]) and waits until it
    /// reports healthy, i.e. has programmed the node once.
    pub async fn start(
        cp: &ControlPlane,
        host: &Host,
        node_name: &str,
        kubeconfig: &Path,
    ) -> Result<Self> {
        let mut cmd = Command::new(cp.tool("kube-proxy"));
        cmd.arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--hostname-override", node_name])
            .args(["--proxy-mode", Self::MODE])
            .arg(format!(
                "--cluster-cidr={},{}",
                cidr(CLUSTER_CIDR_V4.0, CLUSTER_CIDR_V4.1),
                cidr(CLUSTER_CIDR_V6.0, CLUSTER_CIDR_V6.1)
            ))
            .arg(format!(
                "--healthz-bind-address=0.0.0.0:{KUBE_PROXY_HEALTH_PORT}"
            ))
            .arg("--metrics-bind-address=127.0.0.1:10249")
            // A namespace cannot change the machine-wide conntrack table size.
            .arg("--conntrack-max-per-core=0")
            .arg("--v=2");
        let mut process = host.spawn("kube-proxy", cmd)?;
        let what = format!("kube-proxy in {}", host.name());
        let timeout = Duration::from_secs(60);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if !process.is_running() {
                return Err(Error::Command {
                    what,
                    detail: format!("exited:\n{}", process.log()),
                });
            }
            let health = http_status(
                host,
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                KUBE_PROXY_HEALTH_PORT,
            )?;
            if health == 200 {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("{what} to report healthy"),
                    timeout,
                    last: format!("/healthz answered {health}; log:\n{}", process.log()),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(KubeProxy { _process: process })
    }
}

/// What a serving Pod answers: its name and the client address it saw.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Reply {
    pub pod: String,
    pub client: IpAddr,
}

impl Reply {
    /// Reads a Pod's answer (the body of its HTTP response).
    pub fn parse(body: &str) -> Result<Reply> {
        serde_json::from_str(body.trim()).map_err(|e| Error::Parse {
            what: "a Pod's reply".into(),
            detail: format!("{e}: {body:?}"),
        })
    }
}

/// A Pod that serves: a network namespace attached to its node's bridge, its Pod object Ready in
/// the API, and an HTTP server on [`POD_PORT`]. Stopped when dropped (the namespace goes with
/// the topology; the Pod object with the test's namespace).
#[derive(Debug)]
pub struct ServingPod {
    pub name: String,
    pub host: Host,
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
    server: Option<HttpServer>,
}

impl ServingPod {
    /// Starts Pod `name` with `labels` on `node` (the Node object `node_name`) in the Kubernetes
    /// namespace `namespace`: its network, its server, and its Pod object, Ready, with
    /// `status.podIP` and `podIPs` (IPv4, IPv6). Kube-controller-manager's EndpointSlice
    /// controller then lists it as a ready endpoint of the Services that select it.
    pub async fn start(
        topology: &Topology,
        node: &NodeNetwork,
        node_name: &str,
        client: &Client,
        namespace: &str,
        name: &str,
        labels: serde_json::Value,
    ) -> Result<Self> {
        let (ipv4, ipv6) = node.allocate();
        let host = topology.host(&format!("pod-{name}"))?;
        let port = format!("veth{}-{}", node.number, ipv4.octets()[3]);
        plug_into_bridge(node.host.netns(), "cni0", &port, host.netns(), "eth0")?;
        let ((_, v4_len), (_, v6_len)) = pod_cidrs(node.number);
        ip(
            host.netns(),
            &["addr", "add", &cidr(ipv4, v4_len), "dev", "eth0"],
        )?;
        ip(
            host.netns(),
            &["addr", "add", &cidr(ipv6, v6_len), "dev", "eth0", "nodad"],
        )?;
        ip(host.netns(), &["link", "set", "eth0", "up"])?;
        let (gw4, gw6) = node.gateways();
        host.add_route("default", IpAddr::V4(gw4))?;
        host.add_route("default", IpAddr::V6(gw6))?;
        let server = HttpServer::start(&host, name)?;

        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"nodeName": node_name, "containers": [{"name": "server",
                     "image": "registry.invalid/herald-test-server:1",
                     "ports": [{"containerPort": POD_PORT}]}]},
        }))
        .map_err(|e| Error::Parse {
            what: format!("the Pod object {name}"),
            detail: e.to_string(),
        })?;
        pods.create(&PostParams::default(), &pod).await?;
        let serving = ServingPod {
            name: name.to_owned(),
            host,
            ipv4,
            ipv6,
            server: Some(server),
        };
        serving.set_ready(client, namespace, true).await?;
        Ok(serving)
    }

    /// Sets the Pod's `Ready` condition as its kubelet would (its server keeps running).
    pub async fn set_ready(&self, client: &Client, namespace: &str, ready: bool) -> Result<()> {
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let status = if ready { "True" } else { "False" };
        let patch = json!({"status": {"phase": "Running", "podIP": self.ipv4.to_string(),
            "podIPs": [{"ip": self.ipv4.to_string()}, {"ip": self.ipv6.to_string()}],
            "conditions": [{"type": "Ready", "status": status}]}});
        pods.patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }
}

impl Drop for ServingPod {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop();
        }
    }
}

/// A minimal HTTP/1.1 server inside a namespace: every request is answered `200 OK` with a
/// JSON [`Reply`] naming the Pod and the client address, then the connection is closed. Its
/// thread waits in `accept`; stopping it wakes it with a connection of its own.
#[derive(Debug)]
struct HttpServer {
    netns: String,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl HttpServer {
    fn start(host: &Host, pod: &str) -> Result<Self> {
        let listener = in_netns(host.netns(), || {
            // One dual-stack socket: IPv4 clients appear as ::ffff:a.b.c.d.
            TcpListener::bind((Ipv6Addr::UNSPECIFIED, POD_PORT))
        })
        .map_err(Error::io(format!(
            "listening on port {POD_PORT} in {}",
            host.name()
        )))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (stopped, pod) = (stop.clone(), pod.to_owned());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let pod = pod.clone();
                std::thread::spawn(move || {
                    let _ = answer(stream, &pod);
                });
            }
        });
        Ok(HttpServer {
            netns: host.netns().to_owned(),
            stop,
            thread,
        })
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accepting thread, which then sees the flag.
        let _ = in_netns(&self.netns, || {
            TcpStream::connect((Ipv6Addr::LOCALHOST, POD_PORT)).map(drop)
        });
        let _ = self.thread.join();
    }
}

/// Reads one request (up to its blank line) and answers it.
fn answer(mut stream: TcpStream, pod: &str) -> std::io::Result<()> {
    let peer = stream.peer_addr()?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let body = json!({"pod": pod, "client": peer.ip().to_canonical().to_string()}).to_string();
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}\n",
        body.len() + 1
    )?;
    stream.flush()
}

/// One HTTP GET of `/` at `address` from inside `host`, as a client program would make it (a
/// fresh TCP connection, a new source port each time), within `timeout`; the response body.
pub fn http_get(host: &Host, address: SocketAddr, timeout: Duration) -> Result<String> {
    in_netns(host.netns(), || {
        let mut stream = TcpStream::connect_timeout(&address, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        write!(
            stream,
            "GET / HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        match response.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_owned()),
            _ => Err(std::io::Error::other(format!(
                "unexpected response: {response:?}"
            ))),
        }
    })
    .map_err(Error::io(format!(
        "GET http://{address}/ from {}",
        host.name()
    )))
}

/// `curl http://ADDRESS:PORT/` from inside `host`, as a user types it: the Pod's reply, or an
/// error carrying curl's own output.
pub fn curl(host: &Host, ip: IpAddr, port: u16) -> Result<Reply> {
    let url = format!("http://{}/", SocketAddr::new(ip, port));
    let body = host.run("curl", &["-sS", "--max-time", "5", &url])?;
    Reply::parse(&body)
}

/// The HTTP status code `host` gets for `GET http://IP:PORT/healthz` (e.g. a `healthCheckNodePort`:
/// 200 where the Service has a ready local endpoint, 503 elsewhere); 0 when nothing answered.
pub fn http_status(host: &Host, ip: IpAddr, port: u16) -> Result<u16> {
    let url = format!("http://{}/healthz", SocketAddr::new(ip, port));
    let out = host
        .command("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "3",
            &url,
        ])
        .output()
        .map_err(Error::io(format!("curl {url} in {}", host.name())))?;
    let code = String::from_utf8_lossy(&out.stdout);
    code.trim().parse().map_err(|e| Error::Parse {
        what: format!("curl's status code for {url}"),
        detail: format!("{e}: {code:?}"),
    })
}

/// The next hops of `host`'s kernel route to `prefix` (e.g. `203.0.113.64/32`) with their
/// weights (1 when the route has none): what the router really forwards by, as zebra
/// installed it. Empty when there is no such route.
pub fn kernel_next_hops(host: &Host, prefix: &str) -> Result<Vec<(IpAddr, u32)>> {
    let family = if prefix.contains(':') { "-6" } else { "-4" };
    let out = host.run("ip", &[family, "-j", "route", "show", prefix])?;
    let routes: serde_json::Value = serde_json::from_str(out.trim()).map_err(|e| Error::Parse {
        what: format!("ip -j route show {prefix} in {}", host.name()),
        detail: format!("{e}: {out}"),
    })?;
    let mut hops = Vec::new();
    for route in routes.as_array().into_iter().flatten() {
        let nexthops = match route["nexthops"].as_array() {
            Some(list) => list.clone(),
            None => vec![route.clone()],
        };
        for hop in nexthops {
            if let Some(gateway) = hop["gateway"].as_str().and_then(|g| g.parse().ok()) {
                let weight = hop["weight"].as_u64().map_or(1, |w| w as u32);
                hops.push((gateway, weight));
            }
        }
    }
    hops.sort();
    Ok(hops)
}

/// One request of a [`request_loop`]: when it was sent (from the loop's start) and the Pod's
/// reply, or what went wrong.
#[derive(Debug, Clone)]
pub struct Sent {
    pub at: Duration,
    pub reply: std::result::Result<Reply, String>,
}

/// A bounded request loop from `host` to `address`: one [`http_get`] every `interval` (a new
/// connection each) for `duration`, each within `timeout`; `before_each` is called with the
/// time of each request before it is sent (to inject a fault at a moment). A request that
/// times out delays the next ones, which then follow without waiting until the loop is back on
/// schedule.
pub fn request_loop(
    host: &Host,
    address: SocketAddr,
    interval: Duration,
    duration: Duration,
    timeout: Duration,
    mut before_each: impl FnMut(Duration),
) -> Vec<Sent> {
    let start = std::time::Instant::now();
    let mut results = Vec::new();
    let mut next = start;
    while start.elapsed() < duration {
        let at = start.elapsed();
        before_each(at);
        let reply = http_get(host, address, timeout)
            .and_then(|body| Reply::parse(&body))
            .map_err(|e| e.to_string());
        results.push(Sent { at, reply });
        next += interval;
        if let Some(wait) = next.checked_duration_since(std::time::Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    results
}

/// The longest time between two answered requests of a loop (by their send times).
pub fn longest_gap(results: &[Sent]) -> Duration {
    let answered: Vec<Duration> = results
        .iter()
        .filter(|s| s.reply.is_ok())
        .map(|s| s.at)
        .collect();
    answered
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .max()
        .unwrap_or_default()
}
