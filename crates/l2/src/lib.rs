//! # herald-l2: layer-2 announcement of Service addresses
//!
//! The node that owns a Service address answers for it on the local network: ARP requests for
//! IPv4 (RFC 826) and neighbour solicitations for IPv6 (RFC 4861), and announces it with a
//! gratuitous ARP or an unsolicited neighbour advertisement the moment it takes it over.
//!
//! ```text
//!   speaker driver (sockets: ARP ethertype, ICMPv6 NS only) ──frames──► Responder
//!        ▲                                                              │
//!        └────────────── Actions: send frame / advertisement, join / leave group
//! ```
//!
//! Wire formats in [`arp`] and [`ndp`] (pnet packet types for the fixed fields); the decision
//! logic in [`Responder`], sans-IO. Malformed or foreign input yields no action, never a
//! panic (property-tested over arbitrary bytes, and fuzzed: `fuzz/`). The I/O edge: the
//! node's interfaces in [`link`], the raw sockets in [`socket`] (the only `unsafe` code).

pub mod arp;
pub mod link;
pub mod ndp;
mod responder;
pub mod socket;

pub use pnet_base::MacAddr;
pub use responder::{Action, Ownership, Responder};
