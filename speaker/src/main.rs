//! # herald-speaker
//!
//! The per-node half of Herald (a DaemonSet): it decides from a snapshot of the cluster which
//! Service IPs this node announces, then answers ARP/NDP for them (layer 2) or advertises them
//! to BGP peers, with liveness between speakers by SWIM gossip.
//!
//! This binary is the thin shell around the pure planner and the sans-IO protocol crates:
//! flags, wiring, `/metrics`, `/healthz`, `/readyz`. The announcing loops arrive with the
//! speaker issues; until then the binary only identifies itself and says plainly that it does
//! not announce yet.

use clap::Parser;

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(name = "herald-speaker", version, about)]
struct Flags {}

fn main() -> anyhow::Result<()> {
    let _flags = Flags::parse();
    anyhow::bail!("herald-speaker does not announce IPs yet: its control loop is not built")
}
