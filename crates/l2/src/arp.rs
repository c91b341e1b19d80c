//! ARP (RFC 826) over Ethernet: reading requests, writing replies and gratuitous ARP.
//!
//! ```text
//!   Ethernet | htype 1 | ptype 0x0800 | hlen 6 | plen 4 | op | sha | spa | tha | tpa
//! ```
//!
//! Only well-formed IPv4-over-Ethernet requests are answered; anything else is `None`.

use std::net::Ipv4Addr;

use pnet_base::MacAddr;
use pnet_packet::{
    Packet,
    arp::{ArpHardwareTypes, ArpOperations, ArpPacket, MutableArpPacket},
    ethernet::{EtherTypes, EthernetPacket, MutableEthernetPacket},
};

/// Length of an Ethernet frame carrying ARP (without padding or FCS).
pub const FRAME_LEN: usize = 14 + 28;

/// An ARP request as the responder needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub sender_mac: MacAddr,
    /// 0.0.0.0 in an address probe (RFC 5227).
    pub sender_ip: Ipv4Addr,
    pub target_ip: Ipv4Addr,
}

/// Reads an ARP request for IPv4 over Ethernet from an Ethernet frame.
pub fn parse_request(frame: &[u8]) -> Option<Request> {
    let ethernet = EthernetPacket::new(frame)?;
    if ethernet.get_ethertype() != EtherTypes::Arp {
        return None;
    }
    let arp = ArpPacket::new(ethernet.payload())?;
    let well_formed = arp.get_hardware_type() == ArpHardwareTypes::Ethernet
        && arp.get_protocol_type() == EtherTypes::Ipv4
        && arp.get_hw_addr_len() == 6
        && arp.get_proto_addr_len() == 4
        && arp.get_operation() == ArpOperations::Request;
    // A sender claiming a multicast or broadcast MAC is bogus: never answer it.
    let sender_mac = arp.get_sender_hw_addr();
    (well_formed && sender_mac.0 & 1 == 0).then(|| Request {
        sender_mac,
        sender_ip: arp.get_sender_proto_addr(),
        target_ip: arp.get_target_proto_addr(),
    })
}

/// The reply to `request`: `ip` (the request's target) is at `mac`.
pub fn reply(request: &Request, mac: MacAddr) -> Vec<u8> {
    frame(
        ArpOperations::Reply,
        mac,
        request.sender_mac,
        (mac, request.target_ip),
        (request.sender_mac, request.sender_ip),
    )
}

/// A gratuitous ARP announcing that `ip` is at `mac`: a broadcast request whose sender and
/// target address are both `ip`, which neighbours use to update their caches.
pub fn gratuitous(ip: Ipv4Addr, mac: MacAddr) -> Vec<u8> {
    frame(
        ArpOperations::Request,
        mac,
        MacAddr::broadcast(),
        (mac, ip),
        (MacAddr::zero(), ip),
    )
}

fn frame(
    operation: pnet_packet::arp::ArpOperation,
    source: MacAddr,
    destination: MacAddr,
    sender: (MacAddr, Ipv4Addr),
    target: (MacAddr, Ipv4Addr),
) -> Vec<u8> {
    let mut buffer = vec![0u8; FRAME_LEN];
    {
        let mut ethernet =
            MutableEthernetPacket::new(&mut buffer).expect("the buffer fits an Ethernet header");
        ethernet.set_destination(destination);
        ethernet.set_source(source);
        ethernet.set_ethertype(EtherTypes::Arp);
    }
    let mut arp = MutableArpPacket::new(&mut buffer[14..]).expect("the buffer fits ARP");
    arp.set_hardware_type(ArpHardwareTypes::Ethernet);
    arp.set_protocol_type(EtherTypes::Ipv4);
    arp.set_hw_addr_len(6);
    arp.set_proto_addr_len(4);
    arp.set_operation(operation);
    arp.set_sender_hw_addr(sender.0);
    arp.set_sender_proto_addr(sender.1);
    arp.set_target_hw_addr(target.0);
    arp.set_target_proto_addr(target.1);
    buffer
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const NODE: MacAddr = MacAddr(0x02, 0, 0, 0, 0, 0x01);

    /// `arping -I eth0 192.0.2.64` from 192.0.2.100, byte for byte.
    fn request_bytes() -> Vec<u8> {
        let mut frame = vec![0xff; 6];
        frame.extend([0x02, 0, 0, 0, 0, 0x64, 0x08, 0x06]);
        frame.extend([0, 1, 0x08, 0, 6, 4, 0, 1]);
        frame.extend([0x02, 0, 0, 0, 0, 0x64, 192, 0, 2, 100]);
        frame.extend([0, 0, 0, 0, 0, 0, 192, 0, 2, 64]);
        frame
    }

    #[test]
    fn a_request_is_read_and_answered_to_its_sender() {
        let request = parse_request(&request_bytes()).expect("a valid request");
        assert_eq!(request.target_ip, Ipv4Addr::new(192, 0, 2, 64));
        let reply = reply(&request, NODE);
        let mut expected = vec![0x02, 0, 0, 0, 0, 0x64, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x06];
        expected.extend([0, 1, 0x08, 0, 6, 4, 0, 2]);
        expected.extend([0x02, 0, 0, 0, 0, 0x01, 192, 0, 2, 64]);
        expected.extend([0x02, 0, 0, 0, 0, 0x64, 192, 0, 2, 100]);
        assert_eq!(reply, expected);
    }

    #[test]
    fn a_gratuitous_arp_is_a_broadcast_request_for_the_address_itself() {
        let frame = gratuitous(Ipv4Addr::new(192, 0, 2, 64), NODE);
        assert_eq!(&frame[..6], &[0xff; 6]);
        let request = parse_request(&frame).expect("a request");
        assert_eq!(request.sender_ip, request.target_ip);
        assert_eq!(request.sender_mac, NODE);
    }

    #[test]
    fn replies_truncated_frames_and_other_protocols_are_ignored() {
        let mut reply_op = request_bytes();
        reply_op[21] = 2;
        assert_eq!(parse_request(&reply_op), None);
        assert_eq!(parse_request(&request_bytes()[..30]), None);
        let mut ipv6_ethertype = request_bytes();
        ipv6_ethertype[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(parse_request(&ipv6_ethertype), None);
        let mut multicast_sender = request_bytes();
        multicast_sender[22] = 0x01;
        assert_eq!(parse_request(&multicast_sender), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(frame in prop::collection::vec(any::<u8>(), 0..80)) {
            if let Some(request) = parse_request(&frame) {
                prop_assert_eq!(reply(&request, NODE).len(), FRAME_LEN);
            }
        }
    }
}
