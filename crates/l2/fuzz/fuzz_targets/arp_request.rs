//! Any bytes received on the ARP socket: parsing and answering never panic, and an answer
//! only ever goes to a well-formed request for an owned address.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use herald_l2::{Action, MacAddr, Ownership, Responder, arp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|frame: &[u8]| {
    let mut responder = Responder::new();
    responder.set_interface("eth0", MacAddr::new(2, 0, 0, 0, 0, 1));
    let owned: Ownership = [(
        "eth0".to_owned(),
        [IpAddr::V4(Ipv4Addr::new(192, 0, 2, 64))].into(),
    )]
    .into();
    responder.set_owned(owned);
    let request = arp::parse_request(frame);
    if let Some(Action::SendFrame { frame: reply, .. }) = responder.on_arp("eth0", frame) {
        let request = request.expect("only a parsed request is answered");
        assert_eq!(request.target_ip, Ipv4Addr::new(192, 0, 2, 64));
        assert_eq!(reply.len(), arp::FRAME_LEN);
    }
});
