//! MetalLB, built from its Go module by `tests/metallb/build`, run on the same control plane
//! and in the same network namespaces as Herald: the yardstick of the benches that put figures
//! side by side. Never part of the test suite.
//!
//! MetalLB serves the Services of [`CLASS`] (its `--lb-class`), which Herald's controller leaves
//! alone, so both run on one control plane without touching each other's Services. Its pools
//! and L2Advertisements live in a namespace of its own; its speakers find each other
//! (memberlist) through Pods labelled [`SPEAKER_LABEL`] whose addresses are the nodes', which
//! [`MetalLb::install`] creates as a DaemonSet's would be.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::json;

use crate::{ControlPlane, Error, Host, Link, Process, Result, TestNamespace, world::Lan};

/// The `loadBalancerClass` of the Services MetalLB serves here.
pub const CLASS: &str = "metallb.io/bench";
/// The label of MetalLB's speaker Pods (its `--ml-labels`).
pub const SPEAKER_LABEL: &str = "app=metallb-speaker";

/// Builds MetalLB (or finds the cached build) and applies its CRDs to `cp`; returns the
/// directory `tests/metallb/build` printed (`bin/controller`, `bin/speaker`, `crds/`).
pub fn install_crds(cp: &ControlPlane) -> Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("metallb/build");
    let out = Command::new(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(Error::io(format!("running {}", script.display())))?;
    let printed = String::from_utf8_lossy(&out.stdout);
    let dir = PathBuf::from(printed.lines().last().unwrap_or_default());
    if !out.status.success() || !dir.join("complete").exists() {
        return Err(Error::Command {
            what: script.display().to_string(),
            detail: format!("{}: {printed}", out.status),
        });
    }
    let crds = dir.join("crds");
    cp.kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        &crds.to_string_lossy(),
    ])?;
    cp.wait_established(&[
        "crd/ipaddresspools.metallb.io".into(),
        "crd/l2advertisements.metallb.io".into(),
    ])?;
    Ok(dir)
}

/// `kubectl apply` of `object`.
fn apply(cp: &ControlPlane, object: serde_json::Value) -> Result<String> {
    cp.kubectl_with_input(&["apply", "-f", "-"], &object.to_string())
}

/// The MetalLB controller's command: allocating for Services of [`CLASS`] from the pools of
/// `namespace`, no webhooks (nothing here calls them).
pub fn controller_command(dir: &Path, kubeconfig: &Path, namespace: &str) -> Command {
    let mut cmd = Command::new(dir.join("bin/controller"));
    cmd.args(["--namespace", namespace, "--lb-class", CLASS])
        .args(["--webhook-mode=disabled", "--disable-cert-rotation"])
        .args(["--port=37472", "--log-level=info"])
        .arg(format!("--kubeconfig={}", kubeconfig.display()));
    cmd
}

/// MetalLB installed for one [`Lan`]: its namespace, pool, L2Advertisement and controller.
#[derive(Debug)]
pub struct MetalLb {
    dir: PathBuf,
    key_dir: PathBuf,
    pub ns: TestNamespace,
    _controller: Process,
}

impl MetalLb {
    /// MetalLB for `lan`: a pool of `addresses` for the Services of `lan`'s namespace, an
    /// L2Advertisement for its nodes, the memberlist key, a speaker Pod per node (ready, the
    /// node's address) and the controller. Speakers are started by [`MetalLb::start_speaker`].
    pub async fn install(lan: &Lan, addresses: &[&str]) -> Result<MetalLb> {
        let cp = lan.cp;
        let dir = install_crds(cp)?;
        let ns = TestNamespace::create(cp, &lan.client, "metallb").await?;
        let apply = |object| apply(cp, object);
        apply(
            json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": "pool", "namespace": ns.name()},
            "spec": {"addresses": addresses,
                     "serviceAllocation": {"namespaces": [lan.ns.name()]}}}),
        )?;
        apply(
            json!({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
            "metadata": {"name": "l2", "namespace": ns.name()},
            "spec": {"ipAddressPools": ["pool"],
                     "nodeSelectors": [{"matchLabels": {"herald.dev/test": lan.ns.name()}}]}}),
        )?;
        let (label, value) = SPEAKER_LABEL.split_once('=').expect("key=value");
        for node in &lan.nodes {
            let pod = format!("speaker-{}", node.name);
            apply(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "namespace": ns.name(), "labels": {label: value}},
                "spec": {"nodeName": node.name, "hostNetwork": true, "containers": [{"name": "speaker",
                         "image": "registry.invalid/metallb-speaker:1"}]}}))?;
            cp.kubectl(&[
                "-n",
                ns.name(),
                "patch",
                "pod",
                &pod,
                "--subresource=status",
                "--type=merge",
                "-p",
                &json!({"status": {"phase": "Running", "podIP": node.link.ipv4.to_string(),
                    "podIPs": [{"ip": node.link.ipv4.to_string()}],
                    "conditions": [{"type": "Ready", "status": "True"}]}})
                .to_string(),
            ])?;
        }
        let key_dir = lan.topology.dir().join("metallb-memberlist");
        std::fs::create_dir_all(&key_dir)
            .map_err(Error::io(format!("creating {}", key_dir.display())))?;
        let key = key_dir.join("secretkey");
        std::fs::write(&key, format!("memberlist key of {}", ns.name()))
            .map_err(Error::io(format!("writing {}", key.display())))?;
        let host: Host = lan.topology.host("mlb")?;
        lan.topology.give_api_access(&host, cp.api_address)?;
        let controller = host.spawn(
            "metallb-controller",
            controller_command(&dir, &cp.kubeconfig, ns.name()),
        )?;
        Ok(MetalLb {
            dir,
            key_dir,
            ns,
            _controller: controller,
        })
    }

    /// Removes MetalLB's L2Advertisement (for BGP alone).
    pub fn stop_layer2(&self, lan: &Lan) -> Result<()> {
        lan.cp.kubectl(&[
            "-n",
            self.ns.name(),
            "delete",
            "l2advertisements.metallb.io",
            "l2",
        ])?;
        Ok(())
    }

    /// A BGPPeer (IPv4, `node_asn` to [`crate::world::ROUTER_ASN`]) from each of `lan`'s nodes to
    /// the router at `router`, and a BGPAdvertisement of the pool.
    pub fn peer_with(&self, lan: &Lan, router: &Link, node_asn: u32) -> Result<()> {
        let apply = |object| apply(lan.cp, object);
        apply(
            json!({"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer",
            "metadata": {"name": "router", "namespace": self.ns.name()},
            "spec": {"myASN": node_asn, "peerASN": crate::world::ROUTER_ASN,
                     "peerAddress": router.ipv4.to_string(),
                     "nodeSelectors": [{"matchLabels": {"herald.dev/test": lan.ns.name()}}]}}),
        )?;
        apply(
            json!({"apiVersion": "metallb.io/v1beta1", "kind": "BGPAdvertisement",
            "metadata": {"name": "bgp", "namespace": self.ns.name()},
            "spec": {"ipAddressPools": ["pool"]}}),
        )?;
        Ok(())
    }

    /// Starts (or restarts) MetalLB's speaker on node `i` of `lan`, in its place
    /// (`lan.nodes[i].speaker`), with memberlist on the node's LAN address.
    pub fn start_speaker(&self, lan: &mut Lan, i: usize) -> Result<()> {
        let node = &lan.nodes[i];
        let mut cmd = Command::new(self.dir.join("bin/speaker"));
        cmd.args(["--node-name", &node.name, "--namespace", self.ns.name()])
            .args(["--pod-name", &format!("speaker-{}", node.name)])
            .args(["--lb-class", CLASS, "--ml-labels", SPEAKER_LABEL])
            .arg(format!("--ml-bindaddr={}", node.link.ipv4))
            .arg(format!("--host={}", node.link.ipv4))
            .arg(format!("--ml-secret-key-path={}", self.key_dir.display()))
            .arg(format!("--kubeconfig={}", lan.cp.kubeconfig.display()))
            .arg("--log-level=info");
        let process = node.host.spawn("metallb-speaker", cmd)?;
        lan.nodes[i].speaker = Some(process);
        Ok(())
    }
}

/// Whose speakers a bench runs: Herald's, or MetalLB's in their place.
#[derive(Debug)]
pub enum Speakers {
    Herald,
    Metallb(Box<MetalLb>),
}

impl Speakers {
    /// A LAN of three nodes, its pool of `addresses`, and these speakers running on every
    /// node: MetalLB's when `metallb`, with its controller, pool and L2Advertisement.
    pub async fn lan(prefix: &str, metallb: bool, addresses: &[&str]) -> Result<(Lan, Speakers)> {
        let mut lan = Lan::with_pool(prefix, 3, addresses).await?;
        let speakers = if metallb {
            Speakers::Metallb(Box::new(MetalLb::install(&lan, addresses).await?))
        } else {
            Speakers::Herald
        };
        for i in 0..lan.nodes.len() {
            speakers.start(&mut lan, i)?;
        }
        Ok((lan, speakers))
    }

    /// Starts (or restarts) the speaker of node `i`.
    pub fn start(&self, lan: &mut Lan, i: usize) -> Result<()> {
        match self {
            Speakers::Herald => lan.start_speaker(i),
            Speakers::Metallb(metallb) => metallb.start_speaker(lan, i),
        }
    }

    /// The `loadBalancerClass` of the Services these speakers serve.
    pub fn class(&self) -> Option<&'static str> {
        match self {
            Speakers::Herald => None,
            Speakers::Metallb(_) => Some(CLASS),
        }
    }

    /// How many addresses each node announces, by the speakers' own status records
    /// (Herald's ServiceL2Status in the LAN's namespace, MetalLB's in its own).
    pub fn announced_by_node(
        &self,
        lan: &Lan,
    ) -> Result<std::collections::BTreeMap<String, usize>> {
        let nodes: Vec<String> = match self {
            Speakers::Herald => lan
                .records()?
                .iter()
                .filter_map(|r| r.split_whitespace().nth(1).map(str::to_owned))
                .collect(),
            Speakers::Metallb(metallb) => lan
                .cp
                .kubectl(&[
                    "-n",
                    metallb.ns.name(),
                    "get",
                    "servicel2statuses.metallb.io",
                    "-o",
                    r#"jsonpath={range .items[*]}{.metadata.labels.metallb\.io/node}{"\n"}{end}"#,
                ])?
                .lines()
                .map(str::to_owned)
                .collect(),
        };
        let mut counts = std::collections::BTreeMap::new();
        for node in nodes {
            *counts.entry(node).or_insert(0) += 1;
        }
        Ok(counts)
    }
}
