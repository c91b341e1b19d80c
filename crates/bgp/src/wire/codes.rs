//! The numbers of the BGP-4 wire format: message types, path attribute type codes and flags,
//! capability codes, address family numbers, and the NOTIFICATION error codes and subcodes
//! (RFC 4271 §4.5 and §6, RFC 4486, RFC 5492, RFC 6608, RFC 7313).

use herald_domain::Family;

// Message types (§4.1; ROUTE-REFRESH RFC 2918).
pub(super) const OPEN: u8 = 1;
pub(super) const UPDATE: u8 = 2;
pub(super) const NOTIFICATION: u8 = 3;
pub(super) const KEEPALIVE: u8 = 4;
pub(super) const ROUTE_REFRESH: u8 = 5;

// Path attribute type codes (§5; RFC 1997, 4760, 4360, 6793, 8092).
pub(super) const ATTR_ORIGIN: u8 = 1;
pub(super) const ATTR_AS_PATH: u8 = 2;
pub(super) const ATTR_NEXT_HOP: u8 = 3;
pub(super) const ATTR_LOCAL_PREF: u8 = 5;
pub(super) const ATTR_COMMUNITIES: u8 = 8;
pub(super) const ATTR_MP_REACH: u8 = 14;
pub(super) const ATTR_MP_UNREACH: u8 = 15;
pub(super) const ATTR_EXTENDED_COMMUNITIES: u8 = 16;
pub(super) const ATTR_AS4_PATH: u8 = 17;
pub(super) const ATTR_LARGE_COMMUNITIES: u8 = 32;

// Path attribute flags (§4.3).
pub(super) const FLAG_OPTIONAL: u8 = 0x80;
pub(super) const FLAG_TRANSITIVE: u8 = 0x40;
pub(super) const FLAG_EXTENDED_LENGTH: u8 = 0x10;

/// The only optional parameter of an OPEN still defined: capabilities (RFC 5492 §4).
pub(super) const PARAM_CAPABILITIES: u8 = 2;

// Capability codes (RFC 4760, 2918, 4724, 6793).
pub(super) const CAP_MULTIPROTOCOL: u8 = 1;
pub(super) const CAP_ROUTE_REFRESH: u8 = 2;
pub(super) const CAP_GRACEFUL_RESTART: u8 = 64;
pub(super) const CAP_FOUR_OCTET_AS: u8 = 65;

/// The AFI and SAFI of unicast routes of `family` (RFC 4760 §3: AFI 1 IPv4, 2 IPv6; SAFI 1).
pub fn afi_safi(family: Family) -> (u16, u8) {
    match family {
        Family::Ipv4 => (1, 1),
        Family::Ipv6 => (2, 1),
    }
}

/// The family whose unicast routes `afi`/`safi` name; `None` for any other (ignored).
pub fn family_of(afi: u16, safi: u8) -> Option<Family> {
    match (afi, safi) {
        (1, 1) => Some(Family::Ipv4),
        (2, 1) => Some(Family::Ipv6),
        _ => None,
    }
}

/// NOTIFICATION error codes (§4.5) and their subcodes (§6), by name.
pub mod error {
    pub const MESSAGE_HEADER: u8 = 1;
    pub const OPEN_MESSAGE: u8 = 2;
    pub const UPDATE_MESSAGE: u8 = 3;
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    /// Finite State Machine Error (RFC 6608).
    pub const FSM: u8 = 5;
    pub const CEASE: u8 = 6;
    /// ROUTE-REFRESH Message Error (RFC 7313).
    pub const ROUTE_REFRESH_MESSAGE: u8 = 7;

    /// Subcodes of Message Header Error (§6.1).
    pub mod header {
        pub const CONNECTION_NOT_SYNCHRONIZED: u8 = 1;
        pub const BAD_MESSAGE_LENGTH: u8 = 2;
        pub const BAD_MESSAGE_TYPE: u8 = 3;
    }

    /// Subcodes of OPEN Message Error (§6.2, RFC 5492 §5).
    pub mod open {
        pub const UNSUPPORTED_VERSION_NUMBER: u8 = 1;
        pub const BAD_PEER_AS: u8 = 2;
        pub const BAD_BGP_IDENTIFIER: u8 = 3;
        pub const UNSUPPORTED_OPTIONAL_PARAMETER: u8 = 4;
        pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;
        pub const UNSUPPORTED_CAPABILITY: u8 = 7;
    }

    /// Subcodes of UPDATE Message Error (§6.3).
    pub mod update {
        pub const MALFORMED_ATTRIBUTE_LIST: u8 = 1;
        pub const ATTRIBUTE_LENGTH_ERROR: u8 = 5;
        pub const INVALID_NETWORK_FIELD: u8 = 10;
    }

    /// Subcodes of Finite State Machine Error (RFC 6608 §3): a message not expected in the
    /// state the receiver is in.
    pub mod fsm {
        pub const UNEXPECTED_IN_OPEN_SENT: u8 = 1;
        pub const UNEXPECTED_IN_OPEN_CONFIRM: u8 = 2;
        pub const UNEXPECTED_IN_ESTABLISHED: u8 = 3;
    }

    /// Subcodes of Cease (RFC 4486 §4, RFC 9384 §3).
    pub mod cease {
        pub const MAXIMUM_PREFIXES_REACHED: u8 = 1;
        pub const ADMINISTRATIVE_SHUTDOWN: u8 = 2;
        pub const PEER_DECONFIGURED: u8 = 3;
        pub const ADMINISTRATIVE_RESET: u8 = 4;
        pub const CONNECTION_REJECTED: u8 = 5;
        pub const OTHER_CONFIGURATION_CHANGE: u8 = 6;
        pub const CONNECTION_COLLISION_RESOLUTION: u8 = 7;
        pub const OUT_OF_RESOURCES: u8 = 8;
        pub const BFD_DOWN: u8 = 10;
    }
}
