//! # herald-membership: which speakers are alive
//!
//! Layer-2 ownership needs every speaker to agree, quickly, on which speakers are alive: when
//! the owner of an address dies, the next owner must take over in well under a second, and a
//! busy but healthy node must not be declared dead. Speakers run SWIM (failure detection by
//! direct and indirect probes, suspicion that the suspect can refute, gossip that spreads
//! changes) through [foca], over UDP between the nodes' addresses.
//!
//! ```text
//!   datagram in ──► budget (per source) ──► auth::open (HMAC-SHA256, keyring)
//!               ──► replay::Guard (sender, run, sequence) ──► foca ──► live set changed?
//!   foca output ──► auth::seal ──► datagram out       timers ──► foca
//!         Membership (sans-IO, this crate's core)  ◄──  driver::run (tokio UDP, clock)
//! ```
//!
//! [`Membership`] is sans-IO: datagrams and timer expiries in, [`Output`]s (datagrams to
//! send, timers to set) out, so its behaviour is tested on a simulated network with a virtual
//! clock. [`driver`] runs it on a real UDP socket. Every datagram carries an HMAC over its
//! contents with the cluster's shared key (two during a rotation, [`Keyring`]) and a sequence
//! number per sender and run inside it; anything unauthenticated or replayed is dropped before
//! foca sees it. The
//! driver remembers which nodes sent datagrams that failed, so that a speaker whose key
//! differs from most others' steps back instead of splitting the cluster ([`Members`]). The
//! speakers' heartbeats through the API server ([`heartbeats`]) say who is alive when gossip
//! cannot: the smaller side of a partition steps back the same way.

pub mod auth;
pub mod budget;
pub mod driver;
pub mod heartbeats;
mod machine;
mod members;
pub mod replay;

pub use auth::{Key, Keyring};
pub use foca::Timer;
pub use machine::{Membership, MembershipError, Output, Settings, Speaker};
pub use members::Members;
