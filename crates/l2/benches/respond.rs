//! The responder's own cost per answered ARP request and neighbour solicitation, with 1,000
//! owned addresses: the part of the flood target that does not depend on sockets.
//!
//! `cargo bench -p herald-l2 --bench respond`

use std::{
    hint::black_box,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use criterion::{Criterion, criterion_group, criterion_main};
use herald_l2::{MacAddr, Ownership, Responder, arp, ndp};

const NODE: MacAddr = MacAddr(0x02, 0, 0, 0, 0, 0x01);
const CLIENT: MacAddr = MacAddr(0x02, 0, 0, 0, 0, 0x64);

fn responder() -> Responder {
    let mut responder = Responder::new();
    responder.set_interface("eth0", NODE);
    let mut owned = Ownership::new();
    let ips = owned.entry("eth0".into()).or_default();
    for i in 0..500u32 {
        // 192.0.2.0-255, then 198.51.100.0-243: documentation prefixes only.
        let v4 = if i < 256 {
            0xc000_0200 + i
        } else {
            0xc633_6400 + i - 256
        };
        ips.insert(IpAddr::V4(Ipv4Addr::from(v4)));
        ips.insert(IpAddr::V6(Ipv6Addr::from(
            (0x2001_0db8u128 << 96) + u128::from(i),
        )));
    }
    responder.set_owned(owned);
    responder
}

fn answering(c: &mut Criterion) {
    let mut responder = responder();
    let mut request = arp::gratuitous(Ipv4Addr::new(192, 0, 2, 100), CLIENT);
    request[38..42].copy_from_slice(&[192, 0, 2, 64]);
    assert!(
        responder.on_arp("eth0", &request).is_some(),
        "the request is answered"
    );
    c.bench_function("answer one ARP request (1,000 owned addresses)", |b| {
        b.iter(|| black_box(responder.on_arp("eth0", black_box(&request))));
    });
    let target = Ipv6Addr::from((0x2001_0db8u128 << 96) + 64);
    let mut message = vec![135, 0, 0, 0, 0, 0, 0, 0];
    message.extend(target.octets());
    message.extend([1, 1, 0x02, 0, 0, 0, 0, 0x64]);
    let received = ndp::Received {
        source: Ipv6Addr::from((0x2001_0db8u128 << 96) + 0x100),
        destination: ndp::solicited_node(target),
        hop_limit: 255,
        message: &message,
    };
    assert!(
        responder.on_icmpv6("eth0", &received).is_some(),
        "the solicitation is answered"
    );
    c.bench_function(
        "answer one neighbour solicitation (1,000 owned addresses)",
        |b| {
            b.iter(|| black_box(responder.on_icmpv6("eth0", black_box(&received))));
        },
    );
}

criterion_group!(benches, answering);
criterion_main!(benches);
