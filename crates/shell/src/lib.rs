//! # herald-shell: what herald-controller and herald-speaker share around their pure cores
//!
//! Both binaries are thin shells around pure crates (`ipam`, `plan`, and the protocol crates
//! `l2`, `membership`, `bgp`). The I/O they have in common lives here, once:
//!
//! ```text
//!   api::connect ── Kubernetes API clients whose every request is bounded in time
//!   logging::init ── text or JSON logs, RUST_LOG filter
//!   process::register ── herald_build_info and process_* metrics
//!   watch::Watches ── watch a kind into a reflector store, wake the loop on every change
//!   events::Publisher ── core/v1 Events that `kubectl describe` shows
//!   probes::serve ── /metrics (Prometheus text), /healthz, /readyz
//!   records::spawn ── keep the records a process writes for people equal to a desired set
//! ```

pub mod api;
pub mod events;
pub mod logging;
pub mod probes;
pub mod process;
pub mod records;
pub mod watch;
