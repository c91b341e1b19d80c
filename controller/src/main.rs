//! # herald-controller
//!
//! The cluster-wide half of Herald: it watches Services of `type: LoadBalancer` and the
//! `herald.dev` pools, gives each Service addresses from the pools (`crates/ipam`) and writes
//! them into `status.loadBalancer.ingress`, with the cleanup finalizer, the
//! `herald.dev/ip-allocated-from-pool` annotation and Events; it keeps pool status current.
//!
//! This binary is a thin shell: flags, logging, the Lease and wiring here; the loop in
//! [`control`]; what to write, decided purely over a snapshot, in [`decide`] (with
//! [`translate`] between Kubernetes objects and the allocator, [`status`] for pool status,
//! [`judge`] for the configuration objects' conditions and [`reason`] for why); the one writer, fenced by the Lease, in [`write`].

mod control;
mod decide;
mod judge;
mod metrics;
mod reason;
mod status;
mod translate;
mod write;

use clap::Parser;
use herald_shell::logging::{self, LogFormat};
use kube_lease_manager::LeaseManagerBuilder;
use tracing::{info, warn};

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(name = "herald-controller", version, about)]
struct Flags {
    /// Serve Services of this `spec.loadBalancerClass`; without it, Services with no class.
    #[arg(long, env = "HERALD_LOAD_BALANCER_CLASS")]
    load_balancer_class: Option<String>,
    /// Log format.
    #[arg(long, value_enum, default_value = "text", env = "HERALD_LOG_FORMAT")]
    log_format: LogFormat,
    /// The name this instance reports Events and holds the Lease under (e.g. the pod name).
    #[arg(long, env = "POD_NAME", default_value = "herald-controller")]
    instance: String,
    /// Elect one leader among replicas by a Lease; only the leader allocates.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Herald's namespace: where the Lease is held and BGPPeers' password Secrets are.
    #[arg(
        long,
        alias = "lease-namespace",
        env = "POD_NAMESPACE",
        default_value = "herald-system"
    )]
    namespace: String,
    /// Name of the Lease.
    #[arg(long, default_value = "herald-controller")]
    lease_name: String,
    /// How long a leader's Lease lasts without renewal, in seconds.
    #[arg(long, default_value_t = 15)]
    lease_duration_seconds: u64,
    /// How long before expiry the leader renews (or gives up) its Lease, in seconds.
    #[arg(long, default_value_t = 5)]
    lease_grace_seconds: u64,
    /// Where to serve /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:7472", env = "HERALD_METRICS_ADDRESS")]
    metrics_address: std::net::SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    logging::init(flags.log_format);
    let client = kube::Client::try_default()
        .await
        .map_err(|e| anyhow::anyhow!("connecting to the Kubernetes API: {e}"))?;
    let (metrics, probes) = metrics::Metrics::new();
    // A port that cannot be bound is a start-up error, not a silent lack of probes.
    tokio::spawn(herald_shell::probes::bind(flags.metrics_address, probes.clone()).await?);
    probes.set_ready();
    let settings = |fence| control::Settings {
        class: flags.load_balancer_class.clone(),
        instance: flags.instance.clone(),
        namespace: flags.namespace.clone(),
        metrics: metrics.clone(),
        fence,
    };
    if !flags.leader_election {
        metrics.leader.set(1);
        return control::run(client, settings(write::Fence::open())).await;
    }
    if flags.lease_grace_seconds >= flags.lease_duration_seconds {
        anyhow::bail!("--lease-grace-seconds must be shorter than --lease-duration-seconds");
    }
    let lease = LeaseManagerBuilder::new(client.clone(), &flags.lease_name)
        .with_namespace(&flags.namespace)
        .with_identity(&flags.instance)
        .with_duration(flags.lease_duration_seconds)
        .with_grace(flags.lease_grace_seconds)
        .build()
        .await
        .map_err(|e| anyhow::anyhow!("Lease {}/{}: {e}", flags.namespace, flags.lease_name))?;
    let (mut leading, _lease_task) = lease.watch().await;
    loop {
        info!(lease = %flags.lease_name, "waiting to lead");
        leading
            .wait_for(|leader| *leader)
            .await
            .map_err(|_| anyhow::anyhow!("the Lease manager stopped"))?;
        info!("leading: rebuilding state from Service status");
        metrics.leader.set(1);
        tokio::select! {
            result = control::run(client.clone(), settings(write::Fence::lease(leading.clone()))) => return result,
            lost = leading.wait_for(|leader| !*leader) => {
                lost.map_err(|_| anyhow::anyhow!("the Lease manager stopped"))?;
                warn!("lost the Lease: stopped allocating");
                metrics.leader.set(0);
            }
        }
    }
}
