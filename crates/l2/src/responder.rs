//! The sans-IO responder: which addresses this node answers for on which interface, and what
//! to send for each frame received or ownership change. No sockets, no clock: the speaker's
//! driver feeds it frames and ownership, and performs the [`Action`]s it returns.
//!
//! ```text
//!   set_owned(addresses per interface) ──► Announce (GARP / unsolicited NA), Join / Leave
//!   on_arp(interface, frame)            ──► Send reply frame, if the target is owned there
//!   on_icmpv6(interface, message)       ──► Send advertisement, if the target is owned there
//! ```

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv6Addr},
};

use pnet_base::MacAddr;

use crate::{arp, ndp};

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send an Ethernet frame (ARP) on the interface.
    SendFrame { interface: String, frame: Vec<u8> },
    /// Send an ICMPv6 message (hop limit 255) on the interface.
    SendIcmpv6 {
        interface: String,
        advertisement: ndp::Advertisement,
    },
    /// Join a multicast group on the interface, to hear solicitations for an address.
    JoinGroup { interface: String, group: Ipv6Addr },
    /// Leave a group no owned address needs any more.
    LeaveGroup { interface: String, group: Ipv6Addr },
}

/// Which addresses are answered on which interface.
pub type Ownership = BTreeMap<String, BTreeSet<IpAddr>>;

/// The responder of one node.
#[derive(Debug, Clone, Default)]
pub struct Responder {
    macs: BTreeMap<String, MacAddr>,
    owned: Ownership,
    answered: u64,
}

impl Responder {
    pub fn new() -> Self {
        Responder::default()
    }

    /// Records (or updates) an interface's MAC address.
    pub fn set_interface(&mut self, interface: &str, mac: MacAddr) {
        self.macs.insert(interface.to_owned(), mac);
    }

    /// How many requests and solicitations were answered.
    pub fn answered(&self) -> u64 {
        self.answered
    }

    /// Replaces what is owned where. Addresses gained are announced at once; groups are
    /// joined and left as IPv6 addresses come and go. Addresses lost are no longer answered
    /// from this call on.
    pub fn set_owned(&mut self, owned: Ownership) -> Vec<Action> {
        let mut actions = Vec::new();
        let groups = |o: &Ownership| -> BTreeSet<(String, Ipv6Addr)> {
            o.iter()
                .flat_map(|(interface, ips)| {
                    ips.iter().filter_map(move |ip| match ip {
                        IpAddr::V6(v6) => Some((interface.clone(), ndp::solicited_node(*v6))),
                        IpAddr::V4(_) => None,
                    })
                })
                .collect()
        };
        let (before, after) = (groups(&self.owned), groups(&owned));
        for (interface, group) in after.difference(&before) {
            actions.push(Action::JoinGroup {
                interface: interface.clone(),
                group: *group,
            });
        }
        for (interface, ip) in self.gained(&owned) {
            actions.extend(self.announcement(&interface, ip));
        }
        for (interface, group) in before.difference(&after) {
            actions.push(Action::LeaveGroup {
                interface: interface.clone(),
                group: *group,
            });
        }
        self.owned = owned;
        actions
    }

    /// What is owned where now.
    pub fn owned(&self) -> &Ownership {
        &self.owned
    }

    /// Whether `ip` is answered on `interface`.
    pub fn is_owned(&self, interface: &str, ip: IpAddr) -> bool {
        self.owned
            .get(interface)
            .is_some_and(|ips| ips.contains(&ip))
    }

    /// The (interface, address) pairs that `owned` has and the current ownership has not:
    /// what [`Responder::set_owned`] would announce.
    pub fn gained(&self, owned: &Ownership) -> Vec<(String, IpAddr)> {
        owned
            .iter()
            .flat_map(|(interface, ips)| {
                ips.iter()
                    .filter(|ip| !self.is_owned(interface, **ip))
                    .map(|ip| (interface.clone(), *ip))
            })
            .collect()
    }

    /// The gratuitous ARP or unsolicited advertisement for `ip` on `interface` (for the
    /// driver's repeats as well as the first announcement).
    pub fn announcement(&self, interface: &str, ip: IpAddr) -> Option<Action> {
        let mac = *self.macs.get(interface)?;
        let interface = interface.to_owned();
        Some(match ip {
            IpAddr::V4(v4) => Action::SendFrame {
                interface,
                frame: arp::gratuitous(v4, mac),
            },
            IpAddr::V6(v6) => Action::SendIcmpv6 {
                interface,
                advertisement: ndp::unsolicited(v6, mac),
            },
        })
    }

    fn owns(&self, interface: &str, ip: IpAddr) -> Option<MacAddr> {
        let mac = self.macs.get(interface)?;
        self.is_owned(interface, ip).then_some(*mac)
    }

    /// Answers an ARP request received on `interface`, if its target is owned there.
    pub fn on_arp(&mut self, interface: &str, frame: &[u8]) -> Option<Action> {
        let request = arp::parse_request(frame)?;
        let mac = self.owns(interface, IpAddr::V4(request.target_ip))?;
        // Our own gratuitous ARP, looped back: nothing to answer.
        if request.sender_mac == mac {
            return None;
        }
        self.answered += 1;
        Some(Action::SendFrame {
            interface: interface.to_owned(),
            frame: arp::reply(&request, mac),
        })
    }

    /// Answers a neighbour solicitation received on `interface`, if its target is owned there.
    pub fn on_icmpv6(&mut self, interface: &str, received: &ndp::Received<'_>) -> Option<Action> {
        let solicitation = ndp::parse_solicitation(received)?;
        let mac = self.owns(interface, IpAddr::V6(solicitation.target))?;
        self.answered += 1;
        Some(Action::SendIcmpv6 {
            interface: interface.to_owned(),
            advertisement: ndp::advertise(&solicitation, mac),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const NODE: MacAddr = MacAddr(0x02, 0, 0, 0, 0, 0x01);
    const CLIENT: MacAddr = MacAddr(0x02, 0, 0, 0, 0, 0x64);

    fn owned(pairs: &[(&str, &str)]) -> Ownership {
        let mut o = Ownership::new();
        for (interface, ip) in pairs {
            o.entry((*interface).to_owned())
                .or_default()
                .insert(ip.parse().expect("test address"));
        }
        o
    }

    fn arp_request(target: Ipv4Addr) -> Vec<u8> {
        // A client's request, built as a gratuitous one and then re-addressed.
        let mut frame = arp::gratuitous(target, CLIENT);
        frame[28..32].copy_from_slice(&[192, 0, 2, 100]);
        frame
    }

    #[test]
    fn only_owned_addresses_on_their_interface_are_answered() {
        let mut responder = Responder::new();
        responder.set_interface("eth0", NODE);
        responder.set_interface("eth1", NODE);
        responder.set_owned(owned(&[("eth0", "192.0.2.64")]));
        let target = Ipv4Addr::new(192, 0, 2, 64);
        assert!(matches!(
            responder.on_arp("eth0", &arp_request(target)),
            Some(Action::SendFrame { .. })
        ));
        assert_eq!(
            responder.on_arp("eth1", &arp_request(target)),
            None,
            "not on eth1"
        );
        assert_eq!(
            responder.on_arp("eth0", &arp_request(Ipv4Addr::new(192, 0, 2, 65))),
            None
        );
        assert_eq!(responder.answered(), 1);
    }

    #[test]
    fn gaining_an_address_announces_it_and_losing_it_stops_answers_at_once() {
        let mut responder = Responder::new();
        responder.set_interface("eth0", NODE);
        let actions =
            responder.set_owned(owned(&[("eth0", "192.0.2.64"), ("eth0", "2001:db8::40")]));
        assert!(actions.contains(&Action::JoinGroup {
            interface: "eth0".into(),
            group: ndp::solicited_node("2001:db8::40".parse().expect("ip")),
        }));
        assert!(actions.contains(&Action::SendFrame {
            interface: "eth0".into(),
            frame: arp::gratuitous(Ipv4Addr::new(192, 0, 2, 64), NODE),
        }));
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::SendIcmpv6 { advertisement, .. }
            if advertisement.destination == ndp::ALL_NODES))
        );
        // Owning the same again announces nothing new.
        assert_eq!(
            responder.set_owned(owned(&[("eth0", "192.0.2.64"), ("eth0", "2001:db8::40")])),
            vec![]
        );
        let actions = responder.set_owned(Ownership::new());
        assert_eq!(
            actions,
            vec![Action::LeaveGroup {
                interface: "eth0".into(),
                group: ndp::solicited_node("2001:db8::40".parse().expect("ip")),
            }]
        );
        assert_eq!(
            responder.on_arp("eth0", &arp_request(Ipv4Addr::new(192, 0, 2, 64))),
            None
        );
    }

    #[test]
    fn our_own_gratuitous_arp_looped_back_is_not_answered() {
        let mut responder = Responder::new();
        responder.set_interface("eth0", NODE);
        responder.set_owned(owned(&[("eth0", "192.0.2.64")]));
        let ours = arp::gratuitous(Ipv4Addr::new(192, 0, 2, 64), NODE);
        assert_eq!(responder.on_arp("eth0", &ours), None);
    }
}
