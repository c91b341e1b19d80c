//! # herald-controller
//!
//! The cluster-wide half of Herald: it watches Services of `type: LoadBalancer` and the
//! `herald.dev` pools, gives each Service addresses from the pools (`crates/ipam`) and writes
//! them into `status.loadBalancer.ingress`, with the cleanup finalizer, the
//! `herald.dev/ip-allocated-from-pool` annotation and Events; it keeps pool status current.
//!
//! This binary is a thin shell: flags, logging and wiring here, the loop in [`control`], the
//! pure translation between Kubernetes objects and the allocator in [`translate`].

mod control;
mod translate;

use clap::{Parser, ValueEnum};
use kube::runtime::events::Reporter;

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
    /// The name this instance reports Events under (e.g. the pod name).
    #[arg(long, env = "POD_NAME", default_value = "herald-controller")]
    instance: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match flags.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let client = kube::Client::try_default()
        .await
        .map_err(|e| anyhow::anyhow!("connecting to the Kubernetes API: {e}"))?;
    control::run(
        client,
        control::Settings {
            class: flags.load_balancer_class,
            reporter: Reporter {
                controller: "herald-controller".into(),
                instance: Some(flags.instance),
            },
        },
    )
    .await
}
