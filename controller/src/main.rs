//! # herald-controller
//!
//! The cluster-wide half of Herald: it watches Services of `type: LoadBalancer` and the
//! `herald.dev` pools, allocates IPs and writes them into Service status. One replica leads
//! (by Lease); the others stand by.
//!
//! This binary is the thin shell around the pure allocator (`crates/ipam`): flags, wiring,
//! `/metrics`, `/healthz`, `/readyz`. The allocation loop arrives with the controller issue;
//! until then the binary only identifies itself and says plainly that it does not serve yet.

use clap::Parser;

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(name = "herald-controller", version, about)]
struct Flags {}

fn main() -> anyhow::Result<()> {
    let _flags = Flags::parse();
    anyhow::bail!("herald-controller does not allocate IPs yet: its control loop is not built")
}
