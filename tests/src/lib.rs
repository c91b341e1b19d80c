//! # herald-tests: the real parts Herald's end-to-end tests run against
//!
//! Herald is tested against the systems it talks to, never stand-ins for them:
//!
//! ```text
//!   test binary ──► ControlPlane::shared()  ──► tests/cluster up ──► etcd, kube-apiserver,
//!        │              (once per binary,          (reuses a running     kube-controller-manager
//!        │               reuses a running one)      one)                 built from Go modules
//!        ├──► TestNamespace::create()  a fresh Kubernetes namespace per test, deleted on drop
//!        ├──► herald::Controller  a herald-controller process; herald::binary(name) for others
//!        ├──► wait_for(what, timeout, check)  poll until the check passes, or say what was seen
//!        └──► Topology  network namespaces: L2 segments (bridges), node / client / router hosts,
//!                       IPv4 and IPv6, processes inside them, the API server reachable from
//!                       each host on its own loopback; all removed on drop, even after a panic
//!                       ├──► routers: gobgpd, bird2 and FRR started in a host, RIBs read back
//!                       └──► datapath: kube-proxy in node hosts, Pods that serve HTTP behind
//!                            their node's bridge, requests from a client
//!   world::Lan  all of it put together as the speaker's tests, benches and the demo use it:
//!               nodes with speakers on a LAN, a client, a controller, routers, Pods that serve
//! ```
//!
//! Test addresses come from the documentation prefixes only (RFC 5737, RFC 3849); see
//! [`netns::addressing`] for the plan.

pub mod bench;
pub mod cluster;
pub mod datapath;
mod error;
pub mod herald;
pub mod metallb;
pub mod namespace;
pub mod netns;
mod process;
pub mod routers;
pub mod wait;
pub mod world;

pub use cluster::{AuditedWrite, ControlPlane, PrivateControlPlane};
pub use error::{Error, Result};
pub use namespace::TestNamespace;
pub use netns::{Host, Link, Process, Segment, Topology};
pub use wait::wait_for;
