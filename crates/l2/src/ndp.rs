//! Neighbour Discovery (RFC 4861) for announced IPv6 addresses: reading neighbour
//! solicitations, writing solicited and unsolicited neighbour advertisements.
//!
//! Messages are ICMPv6 bodies as a raw ICMPv6 socket carries them; the socket driver supplies
//! the IPv6 source, destination and hop limit, and the kernel fills in checksums.
//! Advertisements are sent from the advertised address, as the host holding it would.
//!
//! ```text
//!   NS: type 135 | code 0 | checksum | reserved | target (16) | options (SLLA, ...)
//!   NA: type 136 | code 0 | checksum | R S O flags, reserved | target (16) | TLLA option
//! ```
//!
//! Options are read here by hand: pnet's option length function overflows on lengths of
//! 32 and more (`len * 8` in a `u8`), and a malformed packet must never panic.

use std::net::Ipv6Addr;

use pnet_base::MacAddr;
use pnet_packet::icmpv6::{
    Icmpv6Code, Icmpv6Types,
    ndp::{MutableNeighborAdvertPacket, NeighborAdvertFlags, NeighborSolicitPacket},
};

/// Length of an advertisement with one target link-layer address option.
pub const ADVERTISEMENT_LEN: usize = 24 + 8;

const SOURCE_LINK_ADDRESS: u8 = 1;
const TARGET_LINK_ADDRESS: u8 = 2;
/// ff02::1, every node on the link.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// A received ICMPv6 message with what the IPv6 header said about it.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    pub source: Ipv6Addr,
    pub destination: Ipv6Addr,
    pub hop_limit: u8,
    pub message: &'a [u8],
}

/// A valid neighbour solicitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Solicitation {
    /// `::` during duplicate address detection.
    pub source: Ipv6Addr,
    pub target: Ipv6Addr,
}

/// An advertisement to send, from where and to where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertisement {
    /// The advertised address itself, as a host that holds it would send from (some tools,
    /// ndisc6 among them, take only answers from the address they asked about).
    pub source: Ipv6Addr,
    pub destination: Ipv6Addr,
    pub message: Vec<u8>,
}

/// The solicited-node multicast address of `ip` (ff02::1:ffXX:XXXX), which a node must join
/// to hear solicitations for `ip`.
pub fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let low = u128::from(ip) & 0xff_ffff;
    Ipv6Addr::from(u128::from(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 0)) | low)
}

/// Reads a neighbour solicitation, applying the validity checks of RFC 4861 §7.1.1.
pub fn parse_solicitation(received: &Received<'_>) -> Option<Solicitation> {
    let message = received.message;
    let ns = NeighborSolicitPacket::new(message)?;
    if received.hop_limit != 255
        || message.len() < 24
        || ns.get_icmpv6_type() != Icmpv6Types::NeighborSolicit
        || ns.get_icmpv6_code() != Icmpv6Code(0)
    {
        return None;
    }
    let target = ns.get_target_addr();
    if target.is_multicast() {
        return None;
    }
    let mut has_source_link_address = false;
    let mut options = &message[24..];
    while !options.is_empty() {
        let (&kind, &units) = (options.first()?, options.get(1)?);
        let length = usize::from(units) * 8;
        if length == 0 || length > options.len() {
            return None;
        }
        has_source_link_address |= kind == SOURCE_LINK_ADDRESS;
        options = &options[length..];
    }
    if received.source.is_unspecified()
        && (received.destination != solicited_node(target) || has_source_link_address)
    {
        return None;
    }
    Some(Solicitation {
        source: received.source,
        target,
    })
}

/// The answer to `solicitation`: its target is at `mac`. Sent to the soliciting node, or to
/// all nodes when the solicitation came from an address being verified (`::`).
pub fn advertise(solicitation: &Solicitation, mac: MacAddr) -> Advertisement {
    if solicitation.source.is_unspecified() {
        unsolicited(solicitation.target, mac)
    } else {
        Advertisement {
            source: solicitation.target,
            destination: solicitation.source,
            message: message(
                solicitation.target,
                mac,
                NeighborAdvertFlags::Solicited | NeighborAdvertFlags::Override,
            ),
        }
    }
}

/// An unsolicited advertisement to all nodes, with the override flag, so that neighbours
/// replace a cached address for `ip` with `mac` at once (the IPv6 twin of gratuitous ARP).
pub fn unsolicited(ip: Ipv6Addr, mac: MacAddr) -> Advertisement {
    Advertisement {
        source: ip,
        destination: ALL_NODES,
        message: message(ip, mac, NeighborAdvertFlags::Override),
    }
}

fn message(target: Ipv6Addr, mac: MacAddr, flags: u8) -> Vec<u8> {
    let mut buffer = vec![0u8; ADVERTISEMENT_LEN];
    {
        let mut na = MutableNeighborAdvertPacket::new(&mut buffer).expect("the buffer fits an NA");
        na.set_icmpv6_type(Icmpv6Types::NeighborAdvert);
        na.set_icmpv6_code(Icmpv6Code(0));
        na.set_flags(flags);
        na.set_target_addr(target);
    }
    buffer[24] = TARGET_LINK_ADDRESS;
    buffer[25] = 1;
    buffer[26..32].copy_from_slice(&mac.octets());
    buffer
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const NODE: MacAddr = MacAddr(0x02, 0, 0, 0, 0, 0x01);
    const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x64];

    fn ip(text: &str) -> Ipv6Addr {
        text.parse().expect("test address")
    }

    /// A solicitation for 2001:db8::40 with the client's link-layer address, byte for byte.
    fn solicitation_bytes() -> Vec<u8> {
        let mut message = vec![135, 0, 0, 0, 0, 0, 0, 0];
        message.extend(ip("2001:db8::40").octets());
        message.extend([SOURCE_LINK_ADDRESS, 1]);
        message.extend(CLIENT_MAC);
        message
    }

    fn received(message: &[u8]) -> Received<'_> {
        Received {
            source: ip("2001:db8::64"),
            destination: solicited_node(ip("2001:db8::40")),
            hop_limit: 255,
            message,
        }
    }

    #[test]
    fn the_solicited_node_address_keeps_the_low_24_bits() {
        assert_eq!(
            solicited_node(ip("2001:db8::1:2:3:4")),
            ip("ff02::1:ff03:4")
        );
    }

    #[test]
    fn a_solicitation_is_answered_to_its_sender_with_solicited_and_override_set() {
        let bytes = solicitation_bytes();
        let solicitation = parse_solicitation(&received(&bytes)).expect("valid");
        assert_eq!(solicitation.target, ip("2001:db8::40"));
        let answer = advertise(&solicitation, NODE);
        assert_eq!(answer.destination, ip("2001:db8::64"));
        let mut expected = vec![136, 0, 0, 0, 0b0110_0000, 0, 0, 0];
        expected.extend(ip("2001:db8::40").octets());
        expected.extend([TARGET_LINK_ADDRESS, 1, 0x02, 0, 0, 0, 0, 0x01]);
        assert_eq!(answer.message, expected);
    }

    #[test]
    fn duplicate_address_detection_is_answered_to_all_nodes_without_solicited() {
        let bytes: Vec<u8> = solicitation_bytes()[..24].to_vec();
        let mut dad = received(&bytes);
        dad.source = Ipv6Addr::UNSPECIFIED;
        let answer = advertise(&parse_solicitation(&dad).expect("valid DAD probe"), NODE);
        assert_eq!(answer.destination, ALL_NODES);
        assert_eq!(answer.message[4], NeighborAdvertFlags::Override);
        // From :: a source link-layer address option is not allowed.
        let with_option = solicitation_bytes();
        let mut bad = received(&with_option);
        bad.source = Ipv6Addr::UNSPECIFIED;
        assert_eq!(parse_solicitation(&bad), None);
    }

    #[test]
    fn invalid_solicitations_are_ignored() {
        let bytes = solicitation_bytes();
        let mut routed = received(&bytes);
        routed.hop_limit = 64;
        assert_eq!(parse_solicitation(&routed), None, "hop limit must be 255");
        let mut zero_length_option = solicitation_bytes();
        zero_length_option[25] = 0;
        assert_eq!(parse_solicitation(&received(&zero_length_option)), None);
        let mut long_option = solicitation_bytes();
        long_option[25] = 40;
        assert_eq!(parse_solicitation(&received(&long_option)), None);
        let mut multicast_target = solicitation_bytes();
        multicast_target[8] = 0xff;
        assert_eq!(parse_solicitation(&received(&multicast_target)), None);
        assert_eq!(parse_solicitation(&received(&bytes[..20])), None);
    }

    proptest! {
        #[test]
        fn arbitrary_messages_never_panic(
            message in prop::collection::vec(any::<u8>(), 0..96),
            hop_limit in prop_oneof![Just(255u8), any::<u8>()],
            unspecified in any::<bool>(),
        ) {
            let mut input = received(&message);
            input.hop_limit = hop_limit;
            if unspecified {
                input.source = Ipv6Addr::UNSPECIFIED;
            }
            if let Some(solicitation) = parse_solicitation(&input) {
                prop_assert_eq!(advertise(&solicitation, NODE).message.len(), ADVERTISEMENT_LEN);
            }
        }
    }
}
