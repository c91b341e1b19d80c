//! # herald-controller
//!
//! The cluster-wide half of Herald: it watches Services of `type: LoadBalancer` and the
//! `herald.dev` pools, gives each Service addresses from the pools (`crates/ipam`) and writes
//! them into `status.loadBalancer.ingress`, with the cleanup finalizer, the
//! `herald.dev/ip-allocated-from-pool` annotation and Events; it keeps pool status current.
//!
//! This binary is a thin shell: flags, logging, signals and wiring here, the Lease in
//! [`lease`]; the loop in [`control`]; what to write, decided purely over a snapshot, in
//! [`decide`] (with [`translate`] between Kubernetes objects and the allocator, [`status`] for
//! pool and configuration status, [`judge`] for the configuration objects' conditions and
//! [`reason`] for why); the one writer, fenced by the Lease, in [`write`]. With `--manage-crds`
//! the CRDs are brought to this release's at start ([`crds`]). SIGTERM stops the
//! writes, releases the Lease and exits 0. The speakers' gossip key Secret is created when
//! missing in [`gossip_key`]. `herald-controller release-all` (the chart's pre-delete hook)
//! has the leader give back everything Herald holds before an uninstall ([`uninstall`]).

mod control;
mod crds;
mod decide;
mod gossip_key;
mod judge;
mod lease;
mod metrics;
mod reason;
mod status;
mod translate;
mod uninstall;
mod write;

use clap::Parser;
use herald_shell::logging::{self, LogFormat};
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
    /// The Secret (in Herald's namespace) holding the speakers' gossip key: created with a
    /// random key when missing, never changed. Without it, the controller leaves gossip keys
    /// alone.
    #[arg(long, env = "HERALD_GOSSIP_SECRET")]
    gossip_secret: Option<String>,
    /// Bring Herald's CRDs to this release's at start (Helm never upgrades a chart's CRDs);
    /// a newer release's are left alone.
    #[arg(long, env = "HERALD_MANAGE_CRDS")]
    manage_crds: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

/// What to do instead of running the controller.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Ask the leading controller (of `--lease-name` in `--namespace`) to give back everything
    /// Herald holds on Services (cleanup finalizer, address in status, its annotations) and to
    /// serve none until the request is removed from the Lease; wait until it has. Run by the
    /// chart before an uninstall.
    ReleaseAll {
        /// How long to wait for the leader.
        #[arg(long, default_value = "2m", value_parser = parse_duration)]
        timeout: std::time::Duration,
    },
}

/// `250ms`, `2s`, `1m30s`: durations are written as in Herald's objects.
fn parse_duration(text: &str) -> Result<std::time::Duration, herald_api::values::ValueError> {
    herald_api::values::Duration(text.to_owned()).parse()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    logging::init(flags.log_format);
    let clients = herald_shell::api::connect().await?;
    if let Some(Command::ReleaseAll { timeout }) = flags.command {
        return uninstall::request(
            clients.requests,
            &flags.namespace,
            &flags.lease_name,
            timeout,
        )
        .await;
    }
    if let Some(name) = flags.gossip_secret.clone() {
        tokio::spawn(gossip_key::ensure(
            clients.requests.clone(),
            flags.namespace.clone(),
            name,
        ));
    }
    let (metrics, probes) = metrics::Metrics::new();
    // A port that cannot be bound is a start-up error, not a silent lack of probes.
    tokio::spawn(herald_shell::probes::bind(flags.metrics_address, probes.clone()).await?);
    if flags.manage_crds {
        crds::keep_current(clients.requests.clone()).await;
    }
    probes.set_ready();
    let settings = |fence, release_requested| control::Settings {
        class: flags.load_balancer_class.clone(),
        instance: flags.instance.clone(),
        namespace: flags.namespace.clone(),
        lease_name: flags.lease_name.clone(),
        metrics: metrics.clone(),
        fence,
        release_requested,
    };
    let mut shutdown = std::pin::pin!(shutdown_signal()?);
    if !flags.leader_election {
        metrics.leader.set(1);
        return tokio::select! {
            // Without a Lease nobody can ask for a release: the request never comes.
            result = control::run(clients, settings(write::Fence::open(), tokio::sync::watch::channel(None).1)) => result,
            () = &mut shutdown => {
                info!("stopping on a signal");
                Ok(())
            }
        };
    }
    if flags.lease_grace_seconds >= flags.lease_duration_seconds {
        anyhow::bail!("--lease-grace-seconds must be shorter than --lease-duration-seconds");
    }
    let (mut leading, release_requested, lease_task) = lease::Candidate {
        clients: clients.clone(),
        namespace: flags.namespace.clone(),
        name: flags.lease_name.clone(),
        identity: flags.instance.clone(),
        duration: flags.lease_duration_seconds,
        grace: flags.lease_grace_seconds,
    }
    .elect()
    .await;
    loop {
        info!(lease = %flags.lease_name, "waiting to lead");
        tokio::select! {
            led = leading.wait_for(lease::Term::holds) => {
                led.map_err(|_| anyhow::anyhow!("the Lease manager stopped"))?;
            }
            () = &mut shutdown => break,
        }
        info!("leading: rebuilding state from Service status");
        metrics.leader.set(1);
        let fence = write::Fence::lease(leading.clone());
        let stop = tokio::select! {
            result = control::run(clients.clone(), settings(fence, release_requested.clone())) => return result,
            lost = leading.wait_for(|term| !term.holds()) => {
                lost.map_err(|_| anyhow::anyhow!("the Lease manager stopped"))?;
                warn!("lost the Lease: stopped allocating");
                metrics.leader.set(0);
                false
            }
            () = &mut shutdown => true,
        };
        if stop {
            break;
        }
    }
    // The loop and its writer are gone (no write goes out any more); with the last receiver
    // dropped, the Lease manager releases the Lease, so a standby leads at once instead of
    // after the Lease expires.
    info!("stopping on a signal: releasing the Lease");
    metrics.leader.set(0);
    drop(leading);
    match tokio::time::timeout(RELEASE_TIMEOUT, lease_task).await {
        Ok(Ok(())) => info!("Lease released"),
        Ok(Err(e)) => warn!(error = %e, "the Lease task failed; the Lease expires on its own"),
        Err(_) => warn!("releasing the Lease timed out; it expires on its own"),
    }
    Ok(())
}

/// How long a stopping controller waits for its Lease to be released.
const RELEASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Resolves on SIGTERM (the kubelet stopping the Pod) or SIGINT. The controller runs as PID 1
/// in its image, where the kernel ignores signals without a handler, so it must handle them.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    })
}
