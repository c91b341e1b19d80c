//! # herald-domain: the words every Herald crate shares
//!
//! The allocator, planning, the protocol crates, the shell and both binaries talk about the same
//! things: which Service ([`ServiceKey`]), which labels and which selector ([`Labels`],
//! [`LabelSelector`]), which address family ([`Family`]) and which prefix ([`Prefix`]). They
//! are named once, here, in a crate with no dependencies, so that naming a Service does not pull
//! in the allocator and a prefix is one type from planning down to the BGP wire.
//!
//! ```text
//!   herald-domain ◄── ipam, plan, bgp, l2, shell, api ◄── controller, speaker
//! ```

mod family;
mod labels;
mod prefix;
mod service;

pub use family::Family;
pub use labels::{LabelSelector, Labels, Requirement};
pub use prefix::Prefix;
pub use service::{IpFamilyPolicy, Port, ServiceKey};
