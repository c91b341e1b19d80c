//! Any ICMPv6 message with any header values: parsing and answering never panic, and an
//! answer only ever goes to a valid solicitation (RFC 4861 §7.1.1) for an owned address.
#![no_main]

use std::net::{IpAddr, Ipv6Addr};

use herald_l2::{Action, MacAddr, Ownership, Responder, ndp};
use libfuzzer_sys::fuzz_target;

const OWNED: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 4, 0);

fuzz_target!(|input: (u8, [u8; 16], [u8; 16], &[u8])| {
    let (hop_limit, source, destination, message) = input;
    let received = ndp::Received {
        source: Ipv6Addr::from(source),
        destination: Ipv6Addr::from(destination),
        hop_limit,
        message,
    };
    let mut responder = Responder::new();
    responder.set_interface("eth0", MacAddr::new(2, 0, 0, 0, 0, 1));
    let owned: Ownership = [("eth0".to_owned(), [IpAddr::V6(OWNED)].into())].into();
    responder.set_owned(owned);
    let parsed = ndp::parse_solicitation(&received);
    if let Some(Action::SendIcmpv6 { advertisement, .. }) = responder.on_icmpv6("eth0", &received) {
        let solicitation = parsed.expect("only a valid solicitation is answered");
        assert_eq!(solicitation.target, OWNED);
        assert_eq!(hop_limit, 255);
        assert_eq!(advertisement.source, OWNED);
    }
});
