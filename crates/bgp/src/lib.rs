//! # herald-bgp: Herald's own BGP speaker
//!
//! A speaker that advertises load-balancer addresses to routers, and learns nothing from
//! them: small enough to read whole, strict about what it accepts.
//!
//! ```text
//!   routes per peer (from planning) ──► Session (sans-IO, RFC 4271 FSM) ◄── timers, bytes
//!                                           │ actions: connect, send, close, arm timers
//!                                           ▼
//!                                    driver (tokio): TCP to the peer, timers, status
//! ```
//!
//! - [`wire`]: the message codec, strict on decode (a NOTIFICATION for every malformed
//!   message, never a panic) and packing routes into as few UPDATEs as fit.
//! - [`session`]: the state machine: OPEN and capabilities, hold and keepalive timers,
//!   NOTIFICATIONs, back-off, the difference between the routes wanted and those sent.
//! - [`driver`]: runs a session over TCP with tokio and publishes its status.
//! - [`md5`]: TCP MD5 signatures (RFC 2385) on the session's socket.
//!
//! The codec is Herald's own rather than zettabgp's: zettabgp's decoder indexes unchecked
//! bytes (a malformed attribute panics) and rejects the hostname capability FRR sends by
//! default. zettabgp remains as an independent decoder in this crate's tests.

pub mod driver;
pub mod md5;
pub mod session;
pub mod wire;

pub use session::{Config, RouteAttributes, Session, State};
pub use wire::Notification;
