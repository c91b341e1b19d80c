//! # herald-speaker
//!
//! The per-node half of Herald (a DaemonSet): it decides from a snapshot of the cluster which
//! Service IPs this node announces, then answers ARP/NDP for them (layer 2, with liveness
//! between speakers by SWIM gossip) and advertises them to its BGP peers.
//!
//! This binary is the thin shell around the pure planner (`crates/plan`) and the protocol
//! crates (`crates/l2`, `crates/membership`, `crates/bgp`): flags, wiring, `/metrics`,
//! `/healthz`, `/readyz`. The loop is in [`control`]; the translation of objects in
//! [`cluster`] (Services, EndpointSlices, Nodes, advertisements) and [`peer`] (BGPPeers);
//! BGP passwords in [`secrets`]; gossip keys in [`gossip_keys`]. Two drivers of one shape, `apply(&share) -> Vec<Told>` and
//! `stop()`: layer 2 in [`announce`], the BGP sessions in [`bgp`]. Everything told (logs,
//! Events, records) in [`report`]; metrics in [`metrics`].

/// The field manager of everything the speaker writes with server-side apply.
const FIELD_MANAGER: &str = "herald-speaker";

mod announce;
mod bgp;
mod cluster;
mod control;
mod gossip_keys;
mod heartbeat;
mod metrics;
mod peer;
mod report;
mod secrets;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Parser;
use herald_membership::{Membership, Settings as GossipSettings, Speaker};
use herald_shell::{
    logging::{self, LogFormat},
    watch::Watches,
};
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(name = "herald-speaker", version, about)]
struct Flags {
    /// The Kubernetes Node this speaker runs on (the downward API's `spec.nodeName`).
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// Announce Services of this `spec.loadBalancerClass`; without it, Services with no class.
    #[arg(long, env = "HERALD_LOAD_BALANCER_CLASS")]
    load_balancer_class: Option<String>,
    /// Log format.
    #[arg(long, value_enum, default_value = "text", env = "HERALD_LOG_FORMAT")]
    log_format: LogFormat,
    /// Herald's namespace (the downward API's `metadata.namespace`): where BGPPeer password
    /// Secrets are read.
    #[arg(long, env = "POD_NAMESPACE", default_value = "herald-system")]
    namespace: String,
    /// The name Events are reported under (e.g. the pod name).
    #[arg(long, env = "POD_NAME", default_value = "herald-speaker")]
    instance: String,
    /// UDP port of gossip between speakers (the same on every node); not MetalLB's 7946, so
    /// that both can run side by side during a migration.
    #[arg(long, default_value_t = 7952, env = "HERALD_GOSSIP_PORT")]
    gossip_port: u16,
    /// Address other speakers reach this one at; default: the node's first InternalIP.
    #[arg(long, env = "HERALD_GOSSIP_ADDRESS")]
    gossip_address: Option<std::net::IpAddr>,
    /// File holding the key shared by every speaker (at least 16 bytes; a Secret's key):
    /// gossip is sealed with it.
    #[arg(long, env = "HERALD_GOSSIP_KEY_FILE")]
    gossip_key_file: PathBuf,
    /// File holding a key accepted as well, during a key rotation; a missing or empty file
    /// means none.
    #[arg(long, env = "HERALD_GOSSIP_ADDITIONAL_KEY_FILE")]
    gossip_additional_key_file: Option<PathBuf>,
    /// How often the key files are read again (a rotation needs no restart).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    gossip_key_reload_interval: Duration,
    /// Each speaker probes one other per period.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    gossip_probe_period: Duration,
    /// How long a probe may take before others are asked to probe indirectly.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    gossip_probe_timeout: Duration,
    /// How long a suspected speaker has to refute before it is declared dead.
    #[arg(long, default_value = "400ms", value_parser = parse_duration)]
    gossip_suspicion_timeout: Duration,
    /// Where to serve /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:7473", env = "HERALD_METRICS_ADDRESS")]
    metrics_address: SocketAddr,
    /// Serve them on this address of the node only, with the port of `--metrics-address`
    /// (the chart gives the node's address, `status.hostIP`: the speaker runs in the host's
    /// network, where 0.0.0.0 would expose them on every interface).
    #[arg(long, env = "HERALD_METRICS_HOST")]
    metrics_host: Option<std::net::IpAddr>,
    /// On SIGTERM, how long this speaker goes on answering for its addresses after telling
    /// the others it leaves, so that the new owners announce them before it goes silent (BGP
    /// routes are withdrawn meanwhile).
    #[arg(long, default_value = "1s", value_parser = parse_duration, env = "HERALD_HANDOFF_TIME")]
    handoff_time: Duration,
    /// Treat a cordoned node (`spec.unschedulable`) as under maintenance: it announces
    /// nothing. Off by default: cordoning moves no Pod, and people cordon for other reasons.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, env = "HERALD_EXCLUDE_CORDONED_NODES")]
    exclude_cordoned_nodes: bool,
}

/// `250ms`, `2s`, `1m30s`: durations are written as in Herald's objects.
fn parse_duration(text: &str) -> Result<Duration, herald_api::values::ValueError> {
    herald_api::values::Duration(text.to_owned()).parse()
}

/// One thread: the speaker's work is small and mostly waiting, and every extra thread brings
/// its own allocator arena (one thread measured about 3 MiB less at 1,000 Services).
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    logging::init(flags.log_format);
    let key_files = gossip_keys::KeyFiles {
        key: flags.gossip_key_file.clone(),
        additional: flags.gossip_additional_key_file.clone(),
    };
    let keys = key_files.load()?;
    // The probes first, before anything waits on the API server: the speaker is alive (and
    // not restarted by its liveness probe) while the API is out of reach, and ready only once
    // it has the cluster's objects. A port that cannot be bound is a start-up error.
    let probes = herald_shell::probes::Probes::starting();
    let metrics_address = match flags.metrics_host {
        Some(host) => SocketAddr::new(host, flags.metrics_address.port()),
        None => flags.metrics_address,
    };
    tokio::spawn(herald_shell::probes::bind(metrics_address, probes.clone()).await?);
    let clients = herald_shell::api::connect().await?;

    let mut watches = Watches::new();
    let stores = control::Stores::start(
        &clients.watches,
        &mut watches,
        &flags.namespace,
        flags.load_balancer_class,
        flags.exclude_cordoned_nodes,
    )
    .await?;
    let gossip_ip = match flags.gossip_address {
        Some(ip) => ip,
        None => stores
            .node(&flags.node_name)
            .and_then(|node| node.internal_ip)
            .with_context(|| {
                format!(
                    "Node {} has no InternalIP in status.addresses to gossip on; give --gossip-address",
                    flags.node_name
                )
            })?,
    };
    // On the node's address only: the speaker runs in the host's network, and gossip has no
    // business on its other interfaces. Datagrams to the others then leave from this address.
    let gossip_address = SocketAddr::new(gossip_ip, flags.gossip_port);
    let socket = tokio::net::UdpSocket::bind(gossip_address)
        .await
        .with_context(|| format!("binding the gossip port {gossip_address}"))?;
    // A restarted speaker must win over its previous self: start from the clock.
    let generation = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis()
        .try_into()?;
    let me = Speaker {
        node: flags.node_name.clone(),
        address: gossip_address,
        generation,
    };
    let gossip_settings = GossipSettings {
        probe_period: flags.gossip_probe_period,
        probe_rtt: flags.gossip_probe_timeout,
        suspect_to_down_after: flags.gossip_suspicion_timeout,
    };
    let (leave_tx, leave_rx) = tokio::sync::oneshot::channel::<()>();
    let membership = herald_membership::driver::spawn(
        Membership::new(me, gossip_settings, keys.clone(), generation),
        socket,
        async move {
            let _ = leave_rx.await;
        },
    );

    tokio::spawn(key_files.follow(keys, membership.clone(), flags.gossip_key_reload_interval));
    let (metrics, registry) = metrics::Metrics::new(membership.counters.clone());
    probes.set_registry(registry);
    probes.set_ready();
    info!(node = %flags.node_name, gossip = %gossip_address, "speaker started");

    let mut terminate = signal(SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        // Tell the other speakers at once: they take this node's addresses over (announcing
        // them) while this one still answers, during the hand-off.
        let _ = leave_tx.send(());
    };
    let settings = control::Settings {
        node: flags.node_name,
        instance: flags.instance,
        namespace: flags.namespace,
        gossip_address,
        metrics,
        handoff: flags.handoff_time,
        probes,
    };
    let result = control::run(
        clients.requests,
        settings,
        stores,
        watches,
        membership,
        shutdown,
    )
    .await;
    // Let the leave (sent at the signal, or now that its sender is gone) reach the others.
    tokio::time::sleep(Duration::from_millis(100)).await;
    result
}
