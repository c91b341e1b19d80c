//! # herald-bfd: Bidirectional Forwarding Detection for Herald's BGP sessions
//!
//! BFD (RFC 5880) tells two systems within a fraction of a second that the path between
//! them is gone, long before a BGP hold time would. This crate is the protocol without I/O,
//! like the BGP session machine beside it:
//!
//! ```text
//!   UDP datagram ──► packet::decode (strict: every malformed or authenticated packet is an
//!                    │                 error with a reason to count, never a panic)
//!                    ▼
//!   Session (sans-IO, RFC 5880 §6.8 asynchronous mode) ◄── timers (Transmit, Detect),
//!                    │                                     configuration changes
//!                    ▼ actions: send a packet, arm / disarm a timer, report a state change
//!   driver (in the speaker): UDP 3784 single hop / 4784 multihop, TTL 255, the clock
//! ```
//!
//! - [`packet`]: the control packet, its fields, diagnostics and states; encode and decode.
//! - [`session`]: Down / Init / Up / AdminDown, detection time, the poll sequence that
//!   changes intervals without a flap, slow start (one packet a second until Up), passive
//!   role, demand mode of the remote, jitter (§6.8.7).
//!
//! Not built: authentication (a packet with the A bit is dropped, as RFC 5880 §6.8.6 asks of
//! a session without it), the echo function, demand mode on our side.

pub mod driver;
pub mod packet;
pub mod session;

pub use packet::{ControlPacket, DecodeError, Diagnostic, State};
pub use session::{Action, Config, Event, Input, Session, Timer};
