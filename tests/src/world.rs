//! The world of Herald's end-to-end tests, benches and demo: the real control plane with
//! Herald's CRDs, a herald-controller allocating, node namespaces on one LAN each running a
//! real herald-speaker, and a client namespace whose kernel resolves Service addresses; on
//! demand a BGP router ([`Lan::router`]), the nodes' datapath (kube-proxy and Pods that serve,
//! [`Lan::serve_traffic`]) and a client behind the router ([`Lan::outside_client`]).
//!
//! ```text
//!   test ── kubectl / kube ──► API server ◄── herald-controller (test's loopback)
//!                                  ▲
//!              forwarder on each node's loopback
//!   n1 (192.0.2.1, speaker) ─┐
//!   n2 (192.0.2.2, speaker) ─┼─ bridge "lan" ─┬─ client (192.0.2.100)
//!   n3 (192.0.2.3, speaker) ─┘                └─ router (192.0.2.254) ── outside (203.0.113.98)
//! ```
//!
//! Worlds are built one at a time in a test process ([`Lan::new`] waits its turn: each has its
//! own controller, and a controller serves every namespace). Each uses its own Nodes, pool and
//! L2Advertisement, named after its namespace.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    process::Command,
    time::Duration,
};

use crate::{
    ControlPlane, Error, Host, Link, Process, Result, Segment, TestNamespace, Topology,
    datapath::{self, KubeProxy, NodeNetwork, Reply, ServingPod},
    herald::{Controller, binary},
    routers::{BfdTimers, BgpConfig, BgpDaemon, BgpNeighbor, BgpRouter},
    wait_for,
};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;
use tokio::sync::{Mutex, MutexGuard};

pub const TIMEOUT: Duration = Duration::from_secs(30);
/// The pool of every test: in the LAN's subnets, so the client resolves its addresses on-link.
pub const POOL: [&str; 2] = ["192.0.2.64/28", "2001:db8::4:0/124"];

/// How a test router differs from the plain one.
#[derive(Debug, Clone, Default)]
pub struct RouterOptions {
    /// Sign every session with this TCP MD5 password.
    pub password: Option<String>,
    /// Keep a restarting speaker's routes (RFC 4724).
    pub graceful_restart: bool,
    /// Run BFD with every node, and drop a node's BGP session when its BFD goes down (FRR,
    /// BIRD).
    pub bfd: Option<BfdTimers>,
}

/// The AS of the test routers.
pub const ROUTER_ASN: u32 = 64512;
/// The nodes' AS in eBGP tests.
pub const NODE_ASN: u32 = 64513;
/// Service addresses of BGP tests: outside the LAN, reachable only through the routes.
pub const BGP_POOL: [&str; 2] = ["203.0.113.64/28", "2001:db8:3::/124"];

static TURN: Mutex<()> = Mutex::const_new(());

/// A node: its namespace, its LAN link, its Kubernetes name and its speaker; with
/// [`Lan::serve_traffic`], its Pod network and kube-proxy.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub host: Host,
    pub link: Link,
    pub speaker: Option<Process>,
    pub network: Option<NodeNetwork>,
    pub proxy: Option<KubeProxy>,
}

pub struct Lan {
    pub cp: &'static ControlPlane,
    pub client: Client,
    pub ns: TestNamespace,
    pub nodes: Vec<Node>,
    pub lan: Segment,
    pub client_host: Host,
    /// The client's link on the LAN: its addresses.
    pub client_link: Link,
    pub controller: Controller,
    pub pool: String,
    pub advertisement: String,
    /// The credentials speakers use; the admin's unless a test sets others.
    pub speaker_kubeconfig: PathBuf,
    /// Flags every speaker started from now on gets besides the world's own.
    pub speaker_args: Vec<String>,
    key_file: PathBuf,
    /// Cluster-scoped objects a test added (`kind/name`), deleted with the world.
    cluster_objects: std::sync::Mutex<Vec<String>>,
    // Dropped last: the namespaces and links, after every process in them.
    pub topology: Topology,
    _turn: MutexGuard<'static, ()>,
}

impl std::fmt::Debug for Lan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lan")
            .field("namespace", &self.ns.name())
            .field("nodes", &self.nodes)
            .field("topology", &self.topology)
            .finish_non_exhaustive()
    }
}

impl Lan {
    /// `count` nodes and a client on one LAN, Nodes in the API with their addresses, the
    /// controller running, a pool and an L2Advertisement for this test's nodes. Speakers are
    /// started by [`Lan::start_speakers`].
    pub async fn new(prefix: &str, count: u32) -> Result<Lan> {
        Self::with_pool(prefix, count, &POOL).await
    }

    /// [`Lan::new`] with a pool of the given addresses.
    pub async fn with_pool(prefix: &str, count: u32, addresses: &[&str]) -> Result<Lan> {
        Self::on(ControlPlane::shared(), prefix, count, addresses).await
    }

    /// [`Lan::with_pool`] on control plane `cp` (e.g. a private one a test stops and kills;
    /// leaked to live as long as the test).
    pub async fn on(
        cp: &'static ControlPlane,
        prefix: &str,
        count: u32,
        addresses: &[&str],
    ) -> Result<Lan> {
        let turn = TURN.lock().await;
        cp.install_herald_crds()?;
        let client = cp.client().await?;
        let ns = TestNamespace::create(cp, &client, prefix).await?;
        let topology = Topology::new()?;
        let lan = topology.lan()?;
        let mut nodes = Vec::new();
        for i in 1..=count {
            let host = topology.host(&format!("n{i}"))?;
            let link = lan.attach(&host, i)?;
            topology.give_api_access(&host, cp.api_address)?;
            let name = format!("{}-n{i}", ns.name());
            cp.kubectl_with_input(
                &["apply", "-f", "-"],
                &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name,
                        "labels": {"herald.dev/test": ns.name(), "kubernetes.io/hostname": name}}})
                .to_string(),
            )?;
            cp.kubectl(&[
                "patch",
                "node",
                &name,
                "--subresource=status",
                "--type=merge",
                "-p",
                &json!({"status": {"addresses": [
                    {"type": "InternalIP", "address": link.ipv4.to_string()},
                    {"type": "InternalIP", "address": link.ipv6.to_string()},
                    {"type": "Hostname", "address": name}]}})
                .to_string(),
            ])?;
            nodes.push(Node {
                name,
                host,
                link,
                speaker: None,
                network: None,
                proxy: None,
            });
        }
        let client_host = topology.host("client")?;
        let client_link = lan.attach(&client_host, 100)?;
        let key_file = topology.dir().join("gossip.key");
        std::fs::write(&key_file, format!("test key of {}\n", ns.name()))
            .map_err(Error::io(format!("writing {}", key_file.display())))?;
        let controller = Controller::start(cp, ns.name(), "only")?;
        let pool = format!("{}-lan", ns.name());
        let advertisement = format!("{}-l2", ns.name());
        let world = Lan {
            cp,
            client,
            nodes,
            lan,
            client_host,
            client_link,
            controller,
            pool,
            advertisement,
            speaker_kubeconfig: cp.kubeconfig.clone(),
            speaker_args: Vec::new(),
            key_file,
            cluster_objects: std::sync::Mutex::new(Vec::new()),
            topology,
            ns,
            _turn: turn,
        };
        world.apply_cluster(&json!({
            "apiVersion": "herald.dev/v1alpha1", "kind": "IPAddressPool",
            "metadata": {"name": world.pool},
            "spec": {"addresses": addresses, "serviceAllocation": {"namespaces": [world.ns.name()]}},
        }))?;
        world.advertise(json!({}))?;
        Ok(world)
    }

    /// (Re)writes this test's L2Advertisement: its pool, this test's nodes, and `extra` spec.
    pub fn advertise(&self, extra: serde_json::Value) -> Result<()> {
        let mut spec = json!({
            "ipAddressPools": [self.pool],
            "nodeSelectors": [{"matchLabels": {"herald.dev/test": self.ns.name()}}],
        });
        for (key, value) in extra.as_object().into_iter().flatten() {
            spec[key] = value.clone();
        }
        self.apply_cluster(&json!({
            "apiVersion": "herald.dev/v1alpha1", "kind": "L2Advertisement",
            "metadata": {"name": self.advertisement}, "spec": spec,
        }))
    }

    /// Applies a cluster-scoped object that is deleted with the world.
    pub fn apply_owned(&self, object: &serde_json::Value) -> Result<()> {
        let kind = object["kind"].as_str().unwrap_or_default().to_lowercase();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let entry = format!("{kind}/{name}");
        let mut owned = self.cluster_objects.lock().expect("not poisoned");
        if !owned.contains(&entry) {
            owned.push(entry);
        }
        self.apply_cluster(object)
    }

    /// Removes this test's L2Advertisement (for tests of BGP alone).
    pub fn stop_layer2(&self) -> Result<()> {
        self.cp
            .kubectl(&["delete", "l2advertisement", &self.advertisement])?;
        Ok(())
    }

    /// A router namespace on the LAN (address .254) running `daemon` in AS 64512, peering
    /// with every node over IPv4 and IPv6 (nodes in `node_asn`).
    pub fn router(
        &self,
        daemon: BgpDaemon,
        node_asn: u32,
        options: RouterOptions,
    ) -> Result<(BgpRouter, Link)> {
        let host = self.topology.host(&format!("r-{}", daemon.name()))?;
        let link = self.lan.attach(&host, 254)?;
        Ok((
            self.start_router(&host, &link, daemon, node_asn, &options, false)?,
            link,
        ))
    }

    /// A router two hops from the nodes: on a segment of its own (203.0.113.192/26,
    /// 2001:db8:5::/64) behind a transit host (LAN .253), with routes both ways.
    pub fn router_behind_a_hop(
        &self,
        daemon: BgpDaemon,
        node_asn: u32,
        options: RouterOptions,
    ) -> Result<(BgpRouter, Link)> {
        let far = self.topology.segment(
            "far",
            (Ipv4Addr::new(203, 0, 113, 192), 26),
            (Ipv6Addr::new(0x2001, 0xdb8, 5, 0, 0, 0, 0, 0), 64),
        )?;
        let hop = self.topology.host("hop")?;
        let hop_lan = self.lan.attach(&hop, 253)?;
        let hop_far = far.attach(&hop, 1)?;
        hop.enable_forwarding()?;
        let host = self.topology.host(&format!("r-{}", daemon.name()))?;
        let link = far.attach(&host, 2)?;
        host.add_route("192.0.2.0/24", IpAddr::V4(hop_far.ipv4))?;
        host.add_route("2001:db8::/64", IpAddr::V6(hop_far.ipv6))?;
        for node in &self.nodes {
            node.host
                .add_route("203.0.113.192/26", IpAddr::V4(hop_lan.ipv4))?;
            node.host
                .add_route("2001:db8:5::/64", IpAddr::V6(hop_lan.ipv6))?;
        }
        let router = self.start_router(&host, &link, daemon, node_asn, &options, true)?;
        Ok((router, link))
    }

    fn start_router(
        &self,
        host: &Host,
        link: &Link,
        daemon: BgpDaemon,
        node_asn: u32,
        options: &RouterOptions,
        multihop: bool,
    ) -> Result<BgpRouter> {
        let mut neighbors = Vec::new();
        for node in &self.nodes {
            for (address, source) in [
                (IpAddr::V4(node.link.ipv4), IpAddr::V4(link.ipv4)),
                (IpAddr::V6(node.link.ipv6), IpAddr::V6(link.ipv6)),
            ] {
                neighbors.push(BgpNeighbor {
                    password: options.password.clone(),
                    multihop,
                    source: Some(source),
                    bfd: options.bfd,
                    ..BgpNeighbor::new(address, node_asn)
                });
            }
        }
        let config = BgpConfig {
            asn: ROUTER_ASN,
            router_id: link.ipv4,
            neighbors,
            originate: Vec::new(),
            graceful_restart: options.graceful_restart,
        };
        BgpRouter::start(host, daemon, &config)
    }

    /// A `daemon` router ([`Lan::router`], nodes in [`NODE_ASN`]) with this test's BGPPeers
    /// toward it and its BGPAdvertisement: BGP beside layer 2.
    pub fn peered_router(&self, daemon: BgpDaemon) -> Result<(BgpRouter, Link)> {
        let (router, link) = self.router(daemon, NODE_ASN, RouterOptions::default())?;
        self.bgp_peers(&link, NODE_ASN, json!({}))?;
        self.bgp_advertise(json!({}))?;
        Ok((router, link))
    }

    /// BGPPeers `<ns>-v4` and `<ns>-v6` toward the router at `link`, for this test's nodes,
    /// with `extra` spec.
    pub fn bgp_peers(&self, link: &Link, node_asn: u32, extra: serde_json::Value) -> Result<()> {
        for (family, address) in [("v4", link.ipv4.to_string()), ("v6", link.ipv6.to_string())] {
            let mut spec = json!({
                "myASN": node_asn, "peerASN": ROUTER_ASN, "peerAddress": address,
                "nodeSelectors": [{"matchLabels": {"herald.dev/test": self.ns.name()}}],
            });
            for (key, value) in extra.as_object().into_iter().flatten() {
                spec[key] = value.clone();
            }
            self.apply_owned(&json!({
                "apiVersion": "herald.dev/v1alpha1", "kind": "BGPPeer",
                "metadata": {"name": format!("{}-{family}", self.ns.name())}, "spec": spec,
            }))?;
        }
        Ok(())
    }

    /// (Re)writes this test's BGPAdvertisement `<ns>-bgp`: its pool, this test's nodes, and
    /// `extra` spec.
    pub fn bgp_advertise(&self, extra: serde_json::Value) -> Result<()> {
        let mut spec = json!({
            "ipAddressPools": [self.pool],
            "nodeSelectors": [{"matchLabels": {"herald.dev/test": self.ns.name()}}],
        });
        for (key, value) in extra.as_object().into_iter().flatten() {
            spec[key] = value.clone();
        }
        self.apply_owned(&json!({
            "apiVersion": "herald.dev/v1alpha1", "kind": "BGPAdvertisement",
            "metadata": {"name": format!("{}-bgp", self.ns.name())}, "spec": spec,
        }))
    }

    fn apply_cluster(&self, object: &serde_json::Value) -> Result<()> {
        self.cp
            .kubectl_with_input(&["apply", "-f", "-"], &object.to_string())?;
        Ok(())
    }

    /// `kubectl -n <namespace> ARGS...`
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", self.ns.name()];
        full.extend_from_slice(args);
        self.cp.kubectl(&full)
    }

    pub fn speaker_command(&self, node: &Node) -> Result<Command> {
        self.speaker_command_with_key(node, &self.key_file)
    }

    /// [`Lan::speaker_command`] with the gossip key in `key_file`.
    fn speaker_command_with_key(&self, node: &Node, key_file: &std::path::Path) -> Result<Command> {
        let mut cmd = Command::new(binary("herald-speaker")?);
        cmd.arg("--gossip-key-file")
            .arg(key_file)
            .args(["--metrics-address", "127.0.0.1:7473"])
            .args(&self.speaker_args)
            .env("KUBECONFIG", &self.speaker_kubeconfig)
            .env("NODE_NAME", &node.name)
            .env("POD_NAME", format!("speaker-{}", node.name))
            .env("POD_NAMESPACE", self.ns.name())
            .env("RUST_LOG", "info,herald_speaker=debug,herald_shell=debug");
        Ok(cmd)
    }

    /// Starts (or restarts) the speaker of node `i`.
    pub fn start_speaker(&mut self, i: usize) -> Result<()> {
        let command = self.speaker_command(&self.nodes[i])?;
        self.spawn_speaker(i, command)
    }

    /// Starts the speaker of node `i` with its own gossip `key` (the others keep theirs).
    pub fn start_speaker_with_key(&mut self, i: usize, key: &str) -> Result<()> {
        let key_file = self.topology.dir().join(format!("gossip-{i}.key"));
        std::fs::write(&key_file, key)
            .map_err(Error::io(format!("writing {}", key_file.display())))?;
        let command = self.speaker_command_with_key(&self.nodes[i], &key_file)?;
        self.spawn_speaker(i, command)
    }

    /// Starts the speaker of node `i` with its gossip keys in a directory of its own, laid
    /// out as the chart mounts the Secret: `key` (the LAN's key to begin with) and
    /// `additional-key` (none to begin with), read again every second. Returns the
    /// directory, whose files the test rewrites as the kubelet would.
    pub fn start_speaker_with_key_dir(&mut self, i: usize) -> Result<std::path::PathBuf> {
        let dir = self.topology.dir().join(format!("gossip-{i}"));
        std::fs::create_dir_all(&dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        let key_file = dir.join("key");
        std::fs::copy(&self.key_file, &key_file)
            .map_err(Error::io(format!("writing {}", key_file.display())))?;
        let mut command = self.speaker_command_with_key(&self.nodes[i], &key_file)?;
        command
            .arg("--gossip-additional-key-file")
            .arg(dir.join("additional-key"))
            .arg("--gossip-key-reload-interval=1s");
        self.spawn_speaker(i, command)?;
        Ok(dir)
    }

    /// The LAN's gossip key, as every speaker started by [`Lan::start_speaker`] has it.
    pub fn gossip_key(&self) -> Result<String> {
        std::fs::read_to_string(&self.key_file)
            .map_err(Error::io(format!("reading {}", self.key_file.display())))
    }

    fn spawn_speaker(&mut self, i: usize, command: Command) -> Result<()> {
        let process = self.nodes[i].host.spawn("speaker", command)?;
        self.nodes[i].speaker = Some(process);
        Ok(())
    }

    pub fn start_speakers(&mut self) -> Result<()> {
        for i in 0..self.nodes.len() {
            self.start_speaker(i)?;
        }
        Ok(())
    }

    /// Makes the nodes carry traffic as on a real cluster: each gets its Pod network (bridge,
    /// Pod CIDRs on its Node object, routes to the other nodes' Pods) and a real kube-proxy
    /// programming its kernel. Then [`Lan::serving_pod`] starts Pods that answer.
    pub async fn serve_traffic(&mut self) -> Result<()> {
        for (n, node) in (1..).zip(self.nodes.iter_mut()) {
            let network = NodeNetwork::new(&node.host, n)?;
            self.cp.kubectl(&[
                "patch",
                "node",
                &node.name,
                "--type=merge",
                "-p",
                &json!({"spec": network.node_spec()}).to_string(),
            ])?;
            node.network = Some(network);
        }
        for a in &self.nodes {
            for b in self.nodes.iter().filter(|b| b.name != a.name) {
                let (Some(from), Some(to)) = (&a.network, &b.network) else {
                    continue;
                };
                from.route_pods_of(to, (b.link.ipv4, b.link.ipv6))?;
            }
        }
        for node in &mut self.nodes {
            node.proxy =
                Some(KubeProxy::start(self.cp, &node.host, &node.name, &self.cp.kubeconfig).await?);
        }
        Ok(())
    }

    /// A Pod of `app` on node `i` that serves HTTP on port 9376 (see
    /// [`herald_tests::datapath`]); Ready. Needs [`Lan::serve_traffic`] first.
    pub async fn serving_pod(&self, name: &str, app: &str, i: usize) -> Result<ServingPod> {
        let node = &self.nodes[i];
        let network = node.network.as_ref().ok_or_else(|| Error::Command {
            what: format!("a serving Pod on {}", node.name),
            detail: "the node has no Pod network: call serve_traffic first".into(),
        })?;
        ServingPod::start(
            &self.topology,
            network,
            &node.name,
            &self.client,
            self.ns.name(),
            name,
            json!({"app": app}),
        )
        .await
    }

    /// `curl http://IP:8765/` from `from`, retried until a Pod answers (kube-proxy applies
    /// new endpoints within about a second); the reply, or what curl said last.
    pub async fn curl_until_served(&self, from: &Host, ip: IpAddr) -> Result<Reply> {
        wait_for(
            &format!(
                "a Pod to answer curl http://{ip}:8765/ from {}",
                from.name()
            ),
            TIMEOUT,
            || async { datapath::curl(from, ip, 8765).map_err(|e| e.to_string()) },
        )
        .await
    }

    /// The layer-2 failover setting: a Pod `web-i` on each node, the Service `web`
    /// (`Cluster`, IPv4) in front of them, and the node announcing its address holding no ready
    /// endpoint, so that it can die without taking a Pod with it (a dead node's Pods stay Ready
    /// in the API until its Node times out, which failover is not about). Returns the
    /// address, the announcing node and the Pods, once 20 requests in a row are answered by
    /// the other nodes' Pods.
    pub async fn web_with_a_spare_owner(&self) -> Result<(IpAddr, usize, Vec<ServingPod>)> {
        let mut pods = Vec::new();
        for i in 0..self.nodes.len() {
            pods.push(self.serving_pod(&format!("web-{i}"), "web", i).await?);
        }
        self.service("web", "web", "Cluster", false)?;
        let ip = self.ingress("web", 1).await?[0];
        self.curl_until_served(&self.client_host, ip).await?;
        let owner = self.resolve(ip).await?;
        pods[owner]
            .set_ready(&self.client, self.ns.name(), false)
            .await?;
        let spare = pods[owner].name.clone();
        wait_for(
            &format!("only Pods other than {spare} answering {ip}"),
            TIMEOUT,
            || async {
                let (per_pod, _) = spread(&self.client_host, ip, 20).map_err(|e| e.to_string())?;
                if per_pod.contains_key(&spare) {
                    Err(format!("{per_pod:?}"))
                } else {
                    Ok(())
                }
            },
        )
        .await?;
        Ok((ip, owner, pods))
    }

    /// A client outside the LAN, behind the router at `router_link` (as on the Internet side
    /// of a BGP router): a segment of its own, 203.0.113.96/28 and 2001:db8:6::/64, with the
    /// router at .97 / ::1 and the client at .98 / ::2; the client's default route and the
    /// nodes' route back go through the router, which forwards and spreads flows over its
    /// equal-cost paths by their ports (L4 hash, as data-centre routers do).
    pub fn outside_client(&self, router_link: &Link) -> Result<Link> {
        let outside = self.topology.segment(
            "outside",
            (Ipv4Addr::new(203, 0, 113, 96), 28),
            (Ipv6Addr::new(0x2001, 0xdb8, 6, 0, 0, 0, 0, 0), 64),
        )?;
        let router = &router_link.host;
        let router_side = outside.attach(router, 1)?;
        router.enable_forwarding()?;
        for key in [
            "net.ipv4.fib_multipath_hash_policy",
            "net.ipv6.fib_multipath_hash_policy",
        ] {
            router.run("sysctl", &["-qw", &format!("{key}=1")])?;
        }
        let client = self.topology.host("outside")?;
        let client_link = outside.attach(&client, 2)?;
        client.add_route("default", IpAddr::V4(router_side.ipv4))?;
        client.add_route("default", IpAddr::V6(router_side.ipv6))?;
        for node in &self.nodes {
            node.host
                .add_route("203.0.113.96/28", IpAddr::V4(router_link.ipv4))?;
            node.host
                .add_route("2001:db8:6::/64", IpAddr::V6(router_link.ipv6))?;
        }
        Ok(client_link)
    }

    /// The LAN addresses of the nodes `nodes` (by index), of `ip`'s family: what a router on
    /// the LAN has as next hops toward them.
    pub fn next_hops(&self, ip: IpAddr, nodes: &[usize]) -> BTreeSet<IpAddr> {
        nodes
            .iter()
            .map(|&i| match ip {
                IpAddr::V4(_) => IpAddr::V4(self.nodes[i].link.ipv4),
                IpAddr::V6(_) => IpAddr::V6(self.nodes[i].link.ipv6),
            })
            .collect()
    }

    /// A Pod of `app` on node `i`, with the given readiness (the kubelet's part).
    pub async fn pod(&self, name: &str, app: &str, i: usize, ready: bool) -> Result<()> {
        self.kubectl_with_input(
            &["apply", "-f", "-"],
            &json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "labels": {"app": app}},
                "spec": {"nodeName": self.nodes[i].name, "containers": [{"name": "app",
                         "image": "registry.invalid/example:1", "ports": [{"containerPort": 9376}]}]}})
            .to_string(),
        )?;
        self.set_ready(name, ready, i).await
    }

    /// Sets the readiness of the Pod `name` on node `i` (and its IPv4 and IPv6 addresses) as
    /// the kubelet would, through the API (no kubectl process: a Local-policy move is timed
    /// from here).
    pub async fn set_ready(&self, name: &str, ready: bool, i: usize) -> Result<()> {
        let status = if ready { "True" } else { "False" };
        let (v4, v6) = (
            format!("203.0.113.{}", 10 + i),
            format!("2001:db8:2::{:x}", 10 + i),
        );
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), self.ns.name());
        let patch = json!({"status": {"phase": "Running", "podIP": v4,
            "podIPs": [{"ip": v4}, {"ip": v6}],
            "conditions": [{"type": "Ready", "status": status}]}});
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    fn kubectl_with_input(&self, args: &[&str], input: &str) -> Result<String> {
        let mut full = vec!["-n", self.ns.name()];
        full.extend_from_slice(args);
        self.cp.kubectl_with_input(&full, input)
    }

    /// `kubectl apply` of `object` in the test's namespace.
    pub fn apply(&self, object: &serde_json::Value) -> Result<()> {
        self.kubectl_with_input(&["apply", "-f", "-"], &object.to_string())?;
        Ok(())
    }

    /// A BGP password Secret `name` in the test's namespace (Herald's) holding `password`.
    pub fn password_secret(&self, name: &str, password: &str) -> Result<()> {
        self.apply(
            &json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth",
            "metadata": {"name": name}, "stringData": {"password": password}}),
        )
    }

    /// The page's example Service for `app` (port 8765 to 9376), with `policy`
    /// (`Cluster` or `Local`), dual-stack when `dual`.
    pub fn service(&self, name: &str, app: &str, policy: &str, dual: bool) -> Result<()> {
        self.service_of_class(name, app, policy, dual, None)
    }

    /// [`Lan::service`] of `loadBalancerClass` `class` (e.g. [`crate::metallb::CLASS`]).
    pub fn service_of_class(
        &self,
        name: &str,
        app: &str,
        policy: &str,
        dual: bool,
        class: Option<&str>,
    ) -> Result<()> {
        let mut spec = json!({"type": "LoadBalancer", "selector": {"app": app},
            "externalTrafficPolicy": policy,
            "ports": [{"port": 8765, "targetPort": 9376}]});
        if let Some(class) = class {
            spec["loadBalancerClass"] = json!(class);
        }
        if dual {
            spec["ipFamilyPolicy"] = json!("RequireDualStack");
            spec["ipFamilies"] = json!(["IPv4", "IPv6"]);
        }
        self.apply(
            &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}),
        )
    }

    /// A ready Pod of app `web` on every node and the example Service `web` in front of them
    /// (`Cluster` policy, dual-stack when `dual`); returns its addresses once allocated.
    pub async fn web_on_every_node(&self, dual: bool) -> Result<Vec<IpAddr>> {
        for i in 0..self.nodes.len() {
            self.pod(&format!("web-{i}"), "web", i, true).await?;
        }
        self.service("web", "web", "Cluster", dual)?;
        self.ingress("web", if dual { 2 } else { 1 }).await
    }

    /// Waits until Service `name` has `count` addresses in its status.
    pub async fn ingress(&self, name: &str, count: usize) -> Result<Vec<IpAddr>> {
        let services: Api<Service> = Api::namespaced(self.client.clone(), self.ns.name());
        wait_for(
            &format!("{count} addresses for {name}"),
            TIMEOUT,
            || async {
                let service = services.get(name).await.map_err(|e| e.to_string())?;
                let ips: Vec<IpAddr> = service
                    .status
                    .and_then(|s| s.load_balancer)
                    .and_then(|lb| lb.ingress)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|i| i.ip?.parse().ok())
                    .collect();
                if ips.len() == count {
                    Ok(ips)
                } else {
                    Err(format!("{ips:?}"))
                }
            },
        )
        .await
    }

    /// `count` single-stack IPv6 Services `web-0`, `web-1`, ... of app `web` and
    /// `loadBalancerClass` `class`, created 16 at a time (for benches at scale).
    pub async fn many_web_services(&self, count: usize, class: Option<&str>) -> Result<()> {
        use futures::{StreamExt, stream};
        let services: Api<Service> = Api::namespaced(self.client.clone(), self.ns.name());
        let created: Vec<kube::Result<Service>> = stream::iter(0..count)
            .map(|i| {
                let services = services.clone();
                async move {
                    let service: Service = serde_json::from_value(json!({
                        "metadata": {"name": format!("web-{i}")},
                        "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
                                 "ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack",
                                 "loadBalancerClass": class,
                                 "ports": [{"port": 8765, "targetPort": 9376}]},
                    }))
                    .expect("a valid Service");
                    services.create(&Default::default(), &service).await
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        for result in created {
            result?;
        }
        Ok(())
    }

    /// Each speaker's resident memory and peak, in kB (`VmRSS`, `VmHWM`).
    pub fn speaker_memory(&self) -> Result<Vec<(String, String, String)>> {
        let mut out = Vec::new();
        for node in &self.nodes {
            let pid = node.speaker.as_ref().map(|p| p.pid()).unwrap_or_default();
            let path = format!("/proc/{pid}/status");
            let status =
                std::fs::read_to_string(&path).map_err(Error::io(format!("reading {path}")))?;
            let field = |name: &str| {
                status
                    .lines()
                    .find(|l| l.starts_with(name))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .unwrap_or("?")
                    .to_owned()
            };
            out.push((node.name.clone(), field("VmRSS:"), field("VmHWM:")));
        }
        Ok(out)
    }

    /// The node whose MAC is `mac`.
    pub fn node_with_mac(&self, mac: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.link.mac == mac)
    }

    /// Starts the client asking who has `ip` every 10 ms (arping), for at most `seconds`,
    /// with the client's ARP traffic recorded (tcpdump) so that each answer is counted
    /// against the request it answers ([`ArpProbe::finish`]).
    pub fn arp_prober(&self, ip: IpAddr, seconds: u32) -> Result<ArpProbe> {
        let mut tcpdump = self.client_host.command("tcpdump");
        tcpdump.args(["-l", "-n", "-e", "-tt", "-i", "eth0", "arp"]);
        let capture = self.client_host.spawn(&format!("tcpdump-{ip}"), tcpdump)?;
        std::thread::sleep(Duration::from_millis(500));
        let mut arping = self.client_host.command("arping");
        let seconds = seconds.to_string();
        let ip_text = ip.to_string();
        arping.args(["-W", "0.01", "-w", &seconds, "-I", "eth0", &ip_text]);
        Ok(ArpProbe {
            arping: self.client_host.spawn(&format!("arping-{ip}"), arping)?,
            capture,
            ip,
            client: (self.client_link.ipv4, self.client_link.mac.clone()),
        })
    }

    /// The MAC the client's kernel has for `ip` right now, without asking the network.
    pub fn client_entry(&self, ip: IpAddr) -> Result<Option<String>> {
        Ok(self
            .client_host
            .neighbour(ip)?
            .filter(|n| n.is_resolved())
            .and_then(|n| n.mac))
    }

    /// [`Lan::resolve`] of each of `ips`: the index of the node owning each.
    pub async fn resolve_all(&self, ips: &[IpAddr]) -> Result<Vec<usize>> {
        let mut owners = Vec::with_capacity(ips.len());
        for &ip in ips {
            owners.push(self.resolve(ip).await?);
        }
        Ok(owners)
    }

    /// Has the client's kernel resolve `ip` (by sending it a packet) and waits until it has;
    /// returns the index of the node it resolved to.
    pub async fn resolve(&self, ip: IpAddr) -> Result<usize> {
        wait_for(
            &format!("the client resolving {ip} to a node"),
            TIMEOUT,
            || async {
                // The ping itself goes unanswered (no node holds the address); its neighbour
                // resolution is what counts.
                let _ = self
                    .client_host
                    .command("ping")
                    .args(["-c", "1", "-W", "1", &ip.to_string()])
                    .output();
                let mac = self.client_entry(ip).map_err(|e| e.to_string())?;
                mac.as_deref()
                    .and_then(|m| self.node_with_mac(m))
                    .ok_or_else(|| format!("neighbour entry: {mac:?}"))
            },
        )
        .await
    }

    /// Every MAC that answers `ip` when the client asks directly (arping for IPv4, ndisc6
    /// for IPv6), over a couple of seconds.
    pub fn answers(&self, ip: IpAddr) -> Result<Vec<String>> {
        let mut ask = match ip {
            IpAddr::V4(v4) => {
                let mut cmd = self.client_host.command("arping");
                cmd.args(["-c", "3", "-w", "3", "-I", "eth0", &v4.to_string()]);
                cmd
            }
            IpAddr::V6(v6) => {
                let mut cmd = self.client_host.command("ndisc6");
                cmd.args(["-m", "-n", "-r", "3", "-w", "700", &v6.to_string(), "eth0"]);
                cmd
            }
        };
        // Both exit non-zero when nothing answers: silence is an answer here.
        let out = ask
            .output()
            .map_err(Error::io(format!("asking who has {ip} from the client")))?;
        let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
        let macs: Vec<String> = self
            .nodes
            .iter()
            .map(|n| n.link.mac.clone())
            .filter(|mac| text.contains(mac.as_str()))
            .collect();
        Ok(macs)
    }

    /// Waits until exactly the nodes `nodes` (by index) answer for `ip` when asked directly;
    /// an empty list waits for silence.
    pub async fn wait_answers(&self, ip: IpAddr, nodes: &[usize]) -> Result<()> {
        let expected: Vec<String> = nodes
            .iter()
            .map(|&i| self.nodes[i].link.mac.clone())
            .collect();
        wait_for(
            &format!("answers for {ip} from nodes {nodes:?}"),
            TIMEOUT,
            || async {
                let answers = self.answers(ip).map_err(|e| e.to_string())?;
                if answers == expected {
                    Ok(())
                } else {
                    Err(format!("answers from {answers:?}"))
                }
            },
        )
        .await?;
        Ok(())
    }

    /// The value of metric `name` (with its labels, e.g. `x{protocol="arp"}`) of node `i`'s
    /// speaker, read from its `/metrics` inside the node.
    pub fn metric(&self, i: usize, name: &str) -> Result<f64> {
        let text = self.nodes[i]
            .host
            .run("curl", &["-sf", "http://127.0.0.1:7473/metrics"])?;
        text.lines()
            .find_map(|line| {
                line.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .ok_or_else(|| Error::Parse {
                what: format!("metric {name} of {}", self.nodes[i].name),
                detail: format!("not in:\n{text}"),
            })
    }

    /// The ServiceL2Status records of the test's namespace, as sorted `service node address`
    /// lines (one per address).
    pub fn records(&self) -> Result<Vec<String>> {
        let out = self.kubectl(&[
            "get",
            "servicel2statuses",
            "-o",
            "jsonpath={range .items[*]}{.spec.service} {.spec.node} {.spec.addresses[*]}{\"\\n\"}{end}",
        ])?;
        let mut lines: Vec<String> = out
            .lines()
            .flat_map(|line| {
                let mut words = line.split_whitespace();
                let (service, node) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                words
                    .map(|ip| format!("{service} {node} {ip}"))
                    .collect::<Vec<_>>()
            })
            .collect();
        lines.sort();
        Ok(lines)
    }

    /// Waits until the records say that `service`'s addresses are announced by these
    /// (address, node index) pairs and nothing else.
    pub async fn wait_records(&self, service: &str, expected: &[(IpAddr, usize)]) -> Result<()> {
        let mut want: Vec<String> = expected
            .iter()
            .map(|(ip, i)| format!("{service} {} {ip}", self.nodes[*i].name))
            .collect();
        want.sort();
        wait_for(
            &format!("ServiceL2Status records {want:?}"),
            TIMEOUT,
            || async {
                let prefix = format!("{service} ");
                let records: Vec<String> = self
                    .records()
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .filter(|r| r.starts_with(&prefix))
                    .collect();
                if records == want {
                    Ok(())
                } else {
                    Err(format!("{records:?}"))
                }
            },
        )
        .await?;
        Ok(())
    }

    /// The Events of object `name` in the test's namespace, as `reason: message` lines.
    pub fn events(&self, name: &str) -> Result<String> {
        self.ns.events(name)
    }

    /// Waits until an Event of `name` contains `text`.
    pub async fn event(&self, name: &str, text: &str) -> Result<String> {
        self.ns.event(name, text).await
    }

    /// The speaker logs, for failure messages.
    pub fn speaker_logs(&self) -> String {
        self.nodes
            .iter()
            .filter_map(|n| {
                n.speaker
                    .as_ref()
                    .map(|p| format!("--- {}:\n{}", n.name, p.log()))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.speaker_logs());
        }
        // While the controller still runs, so that it releases every finalizer.
        let _ = self.kubectl(&["delete", "services", "--all", "--timeout=30s"]);
        // No kubelet confirms a Pod's end: remove them at once.
        let _ = self.kubectl(&["delete", "pods", "--all", "--force", "--grace-period=0"]);
        let owned = std::mem::take(&mut *self.cluster_objects.lock().expect("not poisoned"));
        for object in owned.into_iter().chain([
            format!("l2advertisement/{}", self.advertisement),
            format!("ipaddresspool/{}", self.pool),
        ]) {
            let _ = self
                .cp
                .kubectl(&["delete", &object, "--wait=false", "--ignore-not-found"]);
        }
        for node in &self.nodes {
            let _ = self
                .cp
                .kubectl(&["delete", "node", &node.name, "--wait=false"]);
        }
    }
}

/// A BGP world that serves: three nodes with kube-proxy and speakers, an FRR router on the LAN
/// (zebra installing its routes) peering with each node, this test's BGPAdvertisement with
/// `advertisement` spec, and a client outside, behind the router.
#[derive(Debug)]
pub struct Routed {
    pub router: BgpRouter,
    pub router_link: Link,
    /// The client behind the router: its host and addresses.
    pub outside: Link,
    pub lan: Lan,
}

impl Routed {
    pub async fn new(prefix: &str, advertisement: serde_json::Value) -> Result<Routed> {
        let mut lan = Lan::with_pool(prefix, 3, &BGP_POOL).await?;
        lan.stop_layer2()?;
        lan.serve_traffic().await?;
        let (router, router_link) =
            lan.router(BgpDaemon::Frr, NODE_ASN, RouterOptions::default())?;
        let outside = lan.outside_client(&router_link)?;
        lan.bgp_peers(&router_link, NODE_ASN, serde_json::json!({}))?;
        lan.bgp_advertise(advertisement)?;
        lan.start_speakers()?;
        Ok(Routed {
            router,
            router_link,
            outside,
            lan,
        })
    }
}

/// Waits until 20 requests in a row from `from` to `ip` are answered by the Pods `pods` and,
/// when `source` is given, every Pod saw that source address: every node the router sends to has
/// had its kube-proxy program the Service's local endpoints (a speaker learns of an endpoint
/// through the same watch as kube-proxy, and may advertise the node up to kube-proxy's sync
/// period before kube-proxy has programmed it), and, after a change of
/// `externalTrafficPolicy`, each node's kube-proxy has applied it (until then a node still
/// masquerades).
pub async fn wait_all_served(
    from: &Host,
    ip: IpAddr,
    pods: usize,
    source: Option<IpAddr>,
) -> Result<()> {
    let kept = source.map_or(String::new(), |s| format!(", all seeing {s}"));
    wait_for(
        &format!("20 requests in a row to {ip} answered by {pods} Pods{kept}"),
        TIMEOUT,
        || async {
            let (per_pod, sources) = spread(from, ip, 20).map_err(|e| e.to_string())?;
            let sources_kept = source.is_none_or(|s| sources == [s]);
            if per_pod.len() == pods && sources_kept {
                Ok(())
            } else {
                Err(format!("{per_pod:?}, sources {sources:?}"))
            }
        },
    )
    .await?;
    Ok(())
}

/// For a partition that cuts off the node owning `ips[0]` (`owners` as [`Lan::resolve_all`]
/// gives them): the addresses a client watches, that node's and the first one another node
/// owns.
pub fn cut_off_and_other(ips: &[IpAddr], owners: &[usize]) -> Vec<IpAddr> {
    let cut_off = owners[0];
    let other = ips
        .iter()
        .zip(owners)
        .find(|(_, owner)| **owner != cut_off)
        .map(|(ip, _)| *ip);
    std::iter::once(ips[0]).chain(other).collect()
}

/// `count` requests from `from` to `ip` (a new connection and source port each), each within a
/// second: how many each Pod answered, and the source addresses the Pods saw.
pub fn spread(
    from: &Host,
    ip: IpAddr,
    count: usize,
) -> Result<(std::collections::BTreeMap<String, usize>, Vec<IpAddr>)> {
    let mut per_pod = std::collections::BTreeMap::new();
    let mut sources = Vec::new();
    for _ in 0..count {
        let body = datapath::http_get(
            from,
            std::net::SocketAddr::new(ip, 8765),
            Duration::from_secs(1),
        )?;
        let reply = datapath::Reply::parse(&body)?;
        *per_pod.entry(reply.pod).or_insert(0) += 1;
        if !sources.contains(&reply.client) {
            sources.push(reply.client);
        }
    }
    Ok((per_pod, sources))
}

/// A release of the chart; uninstalled when dropped (its ClusterRoles are cluster-wide).
#[derive(Debug)]
pub struct Release {
    cp: ControlPlane,
    pub namespace: String,
    pub name: String,
}

impl Release {
    /// `helm install NAME CHART -n NAMESPACE --set ...` for each of `sets`.
    pub fn install(
        cp: &ControlPlane,
        name: &str,
        chart: &std::path::Path,
        namespace: &str,
        sets: &[String],
    ) -> Result<Release> {
        let chart = chart.to_str().expect("a UTF-8 path");
        let mut args = vec!["install", name, chart, "-n", namespace];
        for set in sets {
            args.extend(["--set", set.as_str()]);
        }
        cp.helm(&args)?;
        Ok(Release {
            cp: cp.clone(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }

    /// Waits until the API server's authorizer knows the release's bindings (it learns of
    /// them through a watch), so that a refusal afterwards means a missing rule.
    pub async fn wait_for_bindings(&self, lan: &Lan) -> Result<()> {
        for (account, verb, resource) in [
            ("controller", "patch", "services"),
            ("speaker", "create", "servicel2statuses.herald.dev"),
            ("speaker", "create", "bgpsessionstatuses.herald.dev"),
        ] {
            let subject = format!(
                "system:serviceaccount:{}:{}-{account}",
                self.namespace, self.name
            );
            wait_for(
                &format!("{account}'s binding in effect"),
                TIMEOUT,
                || async {
                    let out = lan
                        .cp
                        .kubectl_command()
                        .args([
                            "auth",
                            "can-i",
                            verb,
                            resource,
                            "--as",
                            &subject,
                            "-n",
                            &self.namespace,
                        ])
                        .output()
                        .map_err(|e| e.to_string())?;
                    let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                    if answer == "yes" { Ok(()) } else { Err(answer) }
                },
            )
            .await?;
        }
        Ok(())
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = self
            .cp
            // No kubelet runs the pre-delete hook's Job here: tests run its command themselves.
            .helm(&["uninstall", &self.name, "-n", &self.namespace, "--no-hooks"]);
    }
}

/// The client asking who has an address every 10 ms, recorded ([`Lan::arp_prober`]).
#[derive(Debug)]
pub struct ArpProbe {
    arping: crate::Process,
    capture: crate::Process,
    ip: IpAddr,
    /// The client's address and MAC: its requests say "tell" it, answers go to it.
    client: (Ipv4Addr, String),
}

impl ArpProbe {
    /// Stops asking; what became of each request the client sent, in order.
    pub fn finish(mut self) -> Result<Vec<Asked>> {
        self.arping.kill();
        std::thread::sleep(Duration::from_millis(300));
        self.capture.signal(nix::sys::signal::Signal::SIGINT)?;
        std::thread::sleep(Duration::from_millis(300));
        Ok(answers_per_request(
            &self.capture.log(),
            self.ip,
            &self.client,
        ))
    }
}

/// One ARP request of an [`ArpProbe`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Asked {
    /// When the client sent it (tcpdump's stamp, seconds since the epoch).
    pub at: f64,
    /// The MACs whose replies came after it and before the next request: two means two
    /// nodes answered at once.
    pub macs: std::collections::BTreeSet<String>,
    /// A reply came within [`ANSWER_WITHIN`] of it (a reply slower than the 10 ms between
    /// requests still counts for the request it answers).
    pub answered: bool,
}

/// How soon after a request a reply counts as its answer (Linux asks again after 1 s).
pub const ANSWER_WITHIN: Duration = Duration::from_millis(50);

/// Reads `tcpdump -n -e -tt` lines of ARP: requests for `ip` from the client, and the
/// replies sent to the client's MAC (not the speakers' gratuitous announcements, which go to
/// everyone).
fn answers_per_request(
    log: &str,
    ip: IpAddr,
    (client_ip, client_mac): &(Ipv4Addr, String),
) -> Vec<Asked> {
    let request = format!("Request who-has {ip} tell {client_ip},");
    let reply = format!("Reply {ip} is-at ");
    let to_client = format!("> {client_mac},");
    let mut requests: Vec<(f64, Asked)> = Vec::new();
    let mut replies: Vec<f64> = Vec::new();
    for line in log.lines() {
        let Some(at) = line
            .split_whitespace()
            .next()
            .and_then(|t| t.parse::<f64>().ok())
        else {
            continue;
        };
        if line.contains(&request) {
            requests.push((
                at,
                Asked {
                    at,
                    ..Asked::default()
                },
            ));
        } else if line.contains(&to_client)
            && let Some(mac) = line
                .split(&reply)
                .nth(1)
                .and_then(|rest| rest.split([',', ' ']).next())
        {
            replies.push(at);
            if let Some((_, last)) = requests.last_mut() {
                last.macs.insert(mac.to_lowercase());
            }
        }
    }
    let within = ANSWER_WITHIN.as_secs_f64();
    requests
        .into_iter()
        .map(|(at, mut asked)| {
            asked.answered = replies.iter().any(|&r| r >= at && r < at + within);
            asked
        })
        .collect()
}

#[cfg(test)]
mod arp_probe_tests {
    use super::*;

    #[test]
    fn replies_count_for_the_request_before_them_and_announcements_not_at_all() {
        let log = "\
1.0 02:00:00:00:00:64 > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 42: Request who-has 192.0.2.64 tell 192.0.2.100, length 28
1.1 02:00:00:00:00:01 > 02:00:00:00:00:64, ethertype ARP (0x0806), length 42: Reply 192.0.2.64 is-at 02:00:00:00:00:01, length 28
1.2 02:00:00:00:00:02 > 02:00:00:00:00:64, ethertype ARP (0x0806), length 42: Reply 192.0.2.64 is-at 02:00:00:00:00:02, length 28
2.0 02:00:00:00:00:64 > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 42: Request who-has 192.0.2.64 tell 192.0.2.100, length 28
2.1 02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 42: Reply 192.0.2.64 is-at 02:00:00:00:00:01, length 28
3.0 02:00:00:00:00:64 > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 42: Request who-has 192.0.2.64 tell 192.0.2.100, length 28
3.01 02:00:00:00:00:01 > 02:00:00:00:00:64, ethertype ARP (0x0806), length 42: Reply 192.0.2.64 is-at 02:00:00:00:00:01, length 28
";
        let client = (
            Ipv4Addr::new(192, 0, 2, 100),
            "02:00:00:00:00:64".to_owned(),
        );
        let requests = answers_per_request(log, "192.0.2.64".parse().expect("an address"), &client);
        let counts: Vec<usize> = requests.iter().map(|r| r.macs.len()).collect();
        assert_eq!(counts, [2, 0, 1]);
        let sent: Vec<f64> = requests.iter().map(|r| r.at).collect();
        assert_eq!(sent, [1.0, 2.0, 3.0]);
        let answered: Vec<bool> = requests.iter().map(|r| r.answered).collect();
        assert_eq!(
            answered,
            [false, false, true],
            "0.1 s is too late for 1.0 s"
        );
    }
}
