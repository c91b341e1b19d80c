//! The BGP-4 wire format (RFC 4271 §4), decoded strictly and encoded compactly.
//!
//! ```text
//!   bytes from the peer ──► decode ──► Ok(Some((Message, used)))   a whole message
//!                                  ├─► Ok(None)                    wait for more bytes
//!                                  └─► Err(Notification)           send it, close (§6)
//!   Open / routes / Notification ──► encode_* ──► bytes, each message ≤ 4096 octets
//! ```
//!
//! The decoder reads untrusted bytes: every length is checked before it is used, nothing
//! panics, and each error is the NOTIFICATION (code, subcode, data) that RFC 4271 §6 prescribes.
//! Herald never installs routes it learns, so an UPDATE is checked for structure (lengths,
//! attribute headers, prefixes) and summarised, not kept.
//!
//! Encoding covers what a speaker of load-balancer routes sends: OPEN with capabilities
//! (multiprotocol RFC 4760, route refresh RFC 2918, graceful restart RFC 4724, 4-octet AS
//! RFC 6793), UPDATEs for IPv4 unicast (NLRI field) and IPv6 unicast (MP_REACH_NLRI /
//! MP_UNREACH_NLRI), standard (RFC 1997), extended (RFC 4360) and large (RFC 8092)
//! communities, the End-of-RIB marker, KEEPALIVE and NOTIFICATION.
//!
//! - [`codes`]: the numbers: message types, attribute codes, capabilities, AFI/SAFI, and the
//!   NOTIFICATION error codes and subcodes by name;
//! - `decode`: bytes to [`Message`], or the [`Notification`] to send;
//! - `encode`: messages to bytes, routes packed into as few UPDATEs as fit.
//!
//! Prefixes and families are [`herald_domain`]'s: the same types planning produces.

use std::{
    collections::BTreeSet,
    fmt,
    net::{IpAddr, Ipv4Addr},
};

use herald_domain::Family;

pub mod codes;
mod decode;
mod encode;

use codes::error;
pub use decode::decode;
pub use encode::{
    encode_announcements, encode_end_of_rib, encode_keepalive, encode_notification, encode_open,
    encode_route_refresh, encode_withdrawals,
};

/// The largest message RFC 4271 allows.
pub const MAX_MESSAGE: usize = 4096;
/// The fixed header: marker, length, type.
pub const HEADER: usize = 19;
/// The 2-octet AS number that stands for a 4-octet one (RFC 6793).
pub const AS_TRANS: u16 = 23456;

/// The graceful restart capability (RFC 4724 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GracefulRestart {
    /// The sender has restarted (the R bit): its peer should not wait for it to send End-of-RIB
    /// before its own.
    pub restarting: bool,
    /// Seconds the peer should keep this speaker's routes after the session goes down.
    pub restart_time: u16,
    /// Families whose forwarding state survives a restart (the F bit per family).
    pub families: Vec<(Family, bool)>,
}

/// The capabilities of an OPEN that Herald knows; others are ignored (RFC 5492 §3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub four_octet_as: Option<u32>,
    pub families: BTreeSet<Family>,
    pub route_refresh: bool,
    pub graceful_restart: Option<GracefulRestart>,
}

/// An OPEN message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The sender's AS: from the 4-octet AS capability when present.
    pub asn: u32,
    pub hold_time: u16,
    pub router_id: Ipv4Addr,
    pub capabilities: Capabilities,
}

/// A NOTIFICATION: an error code, a subcode and data (RFC 4271 §4.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notification {
    pub fn new(code: u8, subcode: u8, data: Vec<u8>) -> Notification {
        Notification {
            code,
            subcode,
            data,
        }
    }

    /// Message Header Error (§6.1), a subcode of [`error::header`].
    pub fn header(subcode: u8, data: Vec<u8>) -> Notification {
        Notification::new(error::MESSAGE_HEADER, subcode, data)
    }

    /// OPEN Message Error (§6.2), a subcode of [`error::open`].
    pub fn open(subcode: u8) -> Notification {
        Notification::new(error::OPEN_MESSAGE, subcode, Vec::new())
    }

    /// UPDATE Message Error (§6.3), a subcode of [`error::update`].
    pub fn update(subcode: u8) -> Notification {
        Notification::new(error::UPDATE_MESSAGE, subcode, Vec::new())
    }

    pub fn hold_timer_expired() -> Notification {
        Notification::new(error::HOLD_TIMER_EXPIRED, 0, Vec::new())
    }

    /// Finite State Machine Error (RFC 6608): a message not expected in the state, a subcode
    /// of [`error::fsm`].
    pub fn fsm(subcode: u8) -> Notification {
        Notification::new(error::FSM, subcode, Vec::new())
    }

    /// Cease (RFC 4486), a subcode of [`error::cease`].
    pub fn cease(subcode: u8) -> Notification {
        Notification::new(error::CEASE, subcode, Vec::new())
    }

    /// The name of the error code, for logs and metric labels.
    pub fn code_name(&self) -> &'static str {
        match self.code {
            error::MESSAGE_HEADER => "message-header-error",
            error::OPEN_MESSAGE => "open-message-error",
            error::UPDATE_MESSAGE => "update-message-error",
            error::HOLD_TIMER_EXPIRED => "hold-timer-expired",
            error::FSM => "fsm-error",
            error::CEASE => "cease",
            error::ROUTE_REFRESH_MESSAGE => "route-refresh-message-error",
            _ => "unknown",
        }
    }

    /// What the subcode means, as the RFCs word it, when it is one Herald knows.
    pub fn subcode_name(&self) -> Option<&'static str> {
        use error::{cease, fsm, header, open, update};
        Some(match (self.code, self.subcode) {
            (error::MESSAGE_HEADER, header::CONNECTION_NOT_SYNCHRONIZED) => {
                "connection not synchronized"
            }
            (error::MESSAGE_HEADER, header::BAD_MESSAGE_LENGTH) => "bad message length",
            (error::MESSAGE_HEADER, header::BAD_MESSAGE_TYPE) => "bad message type",
            (error::OPEN_MESSAGE, open::UNSUPPORTED_VERSION_NUMBER) => "unsupported version number",
            (error::OPEN_MESSAGE, open::BAD_PEER_AS) => "bad peer AS",
            (error::OPEN_MESSAGE, open::BAD_BGP_IDENTIFIER) => "bad BGP identifier",
            (error::OPEN_MESSAGE, open::UNSUPPORTED_OPTIONAL_PARAMETER) => {
                "unsupported optional parameter"
            }
            (error::OPEN_MESSAGE, open::UNACCEPTABLE_HOLD_TIME) => "unacceptable hold time",
            (error::OPEN_MESSAGE, open::UNSUPPORTED_CAPABILITY) => "unsupported capability",
            (error::UPDATE_MESSAGE, update::MALFORMED_ATTRIBUTE_LIST) => "malformed attribute list",
            (error::UPDATE_MESSAGE, update::ATTRIBUTE_LENGTH_ERROR) => "attribute length error",
            (error::UPDATE_MESSAGE, update::INVALID_NETWORK_FIELD) => "invalid network field",
            (error::FSM, fsm::UNEXPECTED_IN_OPEN_SENT) => "unexpected message in OpenSent",
            (error::FSM, fsm::UNEXPECTED_IN_OPEN_CONFIRM) => "unexpected message in OpenConfirm",
            (error::FSM, fsm::UNEXPECTED_IN_ESTABLISHED) => "unexpected message in Established",
            (error::CEASE, cease::MAXIMUM_PREFIXES_REACHED) => "maximum number of prefixes reached",
            (error::CEASE, cease::ADMINISTRATIVE_SHUTDOWN) => "administrative shutdown",
            (error::CEASE, cease::PEER_DECONFIGURED) => "peer de-configured",
            (error::CEASE, cease::ADMINISTRATIVE_RESET) => "administrative reset",
            (error::CEASE, cease::CONNECTION_REJECTED) => "connection rejected",
            (error::CEASE, cease::OTHER_CONFIGURATION_CHANGE) => "other configuration change",
            (error::CEASE, cease::CONNECTION_COLLISION_RESOLUTION) => {
                "connection collision resolution"
            }
            (error::CEASE, cease::OUT_OF_RESOURCES) => "out of resources",
            (error::CEASE, cease::BFD_DOWN) => "BFD down",
            _ => return None,
        })
    }
}

impl fmt::Display for Notification {
    /// `open-message-error, bad peer AS (2/2)`; an unknown subcode by its number only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code_name())?;
        if let Some(subcode) = self.subcode_name() {
            write!(f, ", {subcode}")?;
        }
        write!(f, " ({}/{})", self.code, self.subcode)
    }
}

/// What a received UPDATE held, in counts: Herald checks and counts routes it learns, and
/// keeps none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateSummary {
    pub announced: usize,
    pub withdrawn: usize,
    /// The UPDATE was the End-of-RIB marker of this family (RFC 4724 §2).
    pub end_of_rib: Option<Family>,
}

/// One BGP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(UpdateSummary),
    Notification(Notification),
    Keepalive,
    /// A ROUTE-REFRESH (RFC 2918) for a family; `None` for a family Herald does not carry.
    RouteRefresh(Option<Family>),
}

/// The path attributes of announced routes, as sent.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathAttributes {
    pub next_hop: IpAddr,
    /// One AS_SEQUENCE, nearest AS first; empty toward iBGP peers.
    pub as_path: Vec<u32>,
    /// Sent to iBGP peers only.
    pub local_pref: Option<u32>,
    pub communities: Vec<u32>,
    pub extended_communities: Vec<[u8; 8]>,
    pub large_communities: Vec<[u32; 3]>,
}

/// The BGP link-bandwidth extended community (draft-ietf-idr-link-bandwidth §2): non-transitive
/// two-octet-AS specific (0x40), subtype 0x04, the AS, then the bandwidth in octets per second
/// as an IEEE 754 float.
pub fn link_bandwidth(asn: u32, octets_per_second: f32) -> [u8; 8] {
    let asn = u16::try_from(asn).unwrap_or(AS_TRANS).to_be_bytes();
    let bandwidth = octets_per_second.to_be_bytes();
    [
        0x40,
        0x04,
        asn[0],
        asn[1],
        bandwidth[0],
        bandwidth[1],
        bandwidth[2],
        bandwidth[3],
    ]
}
