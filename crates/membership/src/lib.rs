//! # herald-membership: which speakers are alive
//!
//! Layer-2 ownership needs every speaker to agree, quickly, on which speakers are alive: when
//! the owner of an address dies, the next owner must take over in well under a second, and a
//! busy but healthy node must not be declared dead. Speakers run SWIM (failure detection by
//! direct and indirect probes, suspicion that the suspect can refute, gossip that spreads
//! changes) through [foca], over UDP between the nodes' addresses.
//!
//! ```text
//!   datagram in ──► auth::open (HMAC-SHA256, shared key) ──► foca ──► live set changed?
//!   foca output ──► auth::seal ──► datagram out       timers ──► foca
//!         Membership (sans-IO, this crate's core)  ◄──  driver::run (tokio UDP, clock)
//! ```
//!
//! [`Membership`] is sans-IO: datagrams and timer expiries in, [`Output`]s (datagrams to
//! send, timers to set) out, so its behaviour is tested on a simulated network with a virtual
//! clock. [`driver`] runs it on a real UDP socket. Every datagram carries an HMAC over its
//! contents with the cluster's shared key; anything else is dropped before foca sees it.

pub mod auth;
pub mod driver;
mod machine;

pub use auth::Key;
pub use foca::Timer;
pub use machine::{Membership, MembershipError, Output, Settings, Speaker};
