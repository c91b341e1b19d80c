//! The node's network interfaces as layer 2 sees them, read from `/sys/class/net`, and which
//! of them are suitable to answer on by default.
//!
//! Suitable by default: up, Ethernet-like (`type` 1), ARP-capable (no `IFF_NOARP`), not a
//! loopback, not a port of a bridge (`brport`) or a slave of a bond (`bonding_slave`): the
//! bridge or bond itself answers for them, and not a container's veth or a CNI device (by
//! name). An interface named in an L2Advertisement only needs to be up and ARP-capable.

use std::{fs, io, path::Path};

use pnet_base::MacAddr;

const IFF_UP: u32 = 0x1;
const IFF_LOOPBACK: u32 = 0x8;
const IFF_NOARP: u32 = 0x80;
const ARPHRD_ETHER: u32 = 1;

/// Name prefixes of the pod-side plumbing of container runtimes and CNI plugins.
const CONTAINER_PREFIXES: &[&str] = &[
    "veth",
    "cali",
    "cilium",
    "lxc",
    "cni",
    "flannel",
    "docker",
    "kube-ipvs",
    "nodelocaldns",
    "tunl",
    "vxlan",
    "genev",
    "weave",
    "antrea",
];

/// One interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub index: u32,
    pub mac: MacAddr,
    /// `IFF_*` flags.
    pub flags: u32,
    /// ARPHRD type (1 for Ethernet).
    pub kind: u32,
    /// A bridge port or bond slave.
    pub enslaved: bool,
}

impl Link {
    /// Up and able to speak ARP and NDP.
    pub fn is_usable(&self) -> bool {
        self.flags & IFF_UP != 0
            && self.flags & (IFF_NOARP | IFF_LOOPBACK) == 0
            && self.kind == ARPHRD_ETHER
            && self.mac != MacAddr::zero()
    }

    /// Answered on when an advertisement names no interfaces.
    pub fn is_suitable_by_default(&self) -> bool {
        self.is_usable()
            && !self.enslaved
            && !CONTAINER_PREFIXES.iter().any(|p| self.name.starts_with(p))
    }
}

/// The interface that holds an address, and whether it can carry traffic now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub name: String,
    /// Up with a carrier (`IFF_RUNNING`): a cable out, or the switch port down, clears it.
    pub running: bool,
}

/// The interface of this namespace that holds `ip`; `None` when none does.
pub fn holder_of(ip: std::net::IpAddr) -> io::Result<Option<Holder>> {
    use nix::{ifaddrs::getifaddrs, net::if_::InterfaceFlags};
    let held = |address: &nix::sys::socket::SockaddrStorage| match ip {
        std::net::IpAddr::V4(v4) => address.as_sockaddr_in().is_some_and(|a| a.ip() == v4),
        std::net::IpAddr::V6(v6) => address.as_sockaddr_in6().is_some_and(|a| a.ip() == v6),
    };
    Ok(getifaddrs()
        .map_err(io::Error::from)?
        .find(|entry| entry.address.as_ref().is_some_and(held))
        .map(|entry| Holder {
            running: entry.flags.contains(InterfaceFlags::IFF_RUNNING),
            name: entry.interface_name,
        }))
}

/// Every interface of the node's network namespace.
pub fn read_links() -> io::Result<Vec<Link>> {
    read_links_from(Path::new("/sys/class/net"))
}

fn read_links_from(root: &Path) -> io::Result<Vec<Link>> {
    let mut links = Vec::new();
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        let dir = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        // An interface that vanishes while being read is simply not there.
        let read = |file: &str| fs::read_to_string(dir.join(file)).map(|s| s.trim().to_owned());
        let (Ok(index), Ok(address), Ok(flags), Ok(kind)) = (
            read("ifindex"),
            read("address"),
            read("flags"),
            read("type"),
        ) else {
            continue;
        };
        let (Ok(index), Ok(flags), Ok(kind), Some(mac)) = (
            index.parse(),
            u32::from_str_radix(flags.trim_start_matches("0x"), 16),
            kind.parse(),
            parse_mac(&address),
        ) else {
            continue;
        };
        links.push(Link {
            name,
            index,
            mac,
            flags,
            kind,
            enslaved: dir.join("brport").exists() || dir.join("bonding_slave").exists(),
        });
    }
    links.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(links)
}

fn parse_mac(text: &str) -> Option<MacAddr> {
    let mut octets = [0u8; 6];
    let mut parts = text.split(':');
    for octet in &mut octets {
        *octet = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then(|| {
        MacAddr::new(
            octets[0], octets[1], octets[2], octets[3], octets[4], octets[5],
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, flags: u32, kind: u32, enslaved: bool) -> Link {
        Link {
            name: name.into(),
            index: 2,
            mac: MacAddr::new(2, 0, 0, 0, 0, 1),
            flags,
            kind,
            enslaved,
        }
    }

    #[test]
    fn only_plain_up_ethernet_interfaces_are_suitable_by_default() {
        assert!(link("eth0", 0x1003, 1, false).is_suitable_by_default());
        assert!(link("br0", 0x1003, 1, false).is_suitable_by_default());
        assert!(
            !link("eth0", 0x1002, 1, false).is_suitable_by_default(),
            "down"
        );
        assert!(
            !link("lo", 0x9, 772, false).is_suitable_by_default(),
            "loopback"
        );
        assert!(
            !link("eth1", 0x1003, 1, true).is_suitable_by_default(),
            "bridge port"
        );
        assert!(
            !link("kube-ipvs0", 0x83, 1, false).is_suitable_by_default(),
            "NOARP"
        );
        assert!(
            !link("vethab12", 0x1003, 1, false).is_suitable_by_default(),
            "container"
        );
        assert!(
            !link("cali1234", 0x1003, 1, false).is_suitable_by_default(),
            "container"
        );
        assert!(
            !link("tunl0", 0x1003, 768, false).is_suitable_by_default(),
            "tunnel"
        );
        // Named explicitly, a bridge port or a veth may still be used.
        assert!(link("vethab12", 0x1003, 1, true).is_usable());
    }

    #[test]
    fn macs_are_read_as_the_kernel_prints_them() {
        assert_eq!(
            parse_mac("02:00:5e:10:00:ff"),
            Some(MacAddr::new(2, 0, 0x5e, 0x10, 0, 0xff))
        );
        assert_eq!(parse_mac("02:00:5e:10:00"), None);
        assert_eq!(parse_mac("02:00:5e:10:00:ff:01"), None);
        assert_eq!(parse_mac("zz:00:5e:10:00:ff"), None);
    }

    #[test]
    fn this_machines_loopback_is_read_and_not_suitable() {
        let links = read_links().expect("/sys/class/net is readable");
        let lo = links.iter().find(|l| l.name == "lo").expect("a loopback");
        assert!(!lo.is_suitable_by_default());
    }
}

#[cfg(test)]
mod holder_tests {
    use super::*;

    #[test]
    fn loopback_holds_127_0_0_1_and_no_interface_holds_a_documentation_address() {
        let lo = holder_of("127.0.0.1".parse().expect("an address"))
            .expect("getifaddrs")
            .expect("lo holds it");
        assert_eq!(lo.name, "lo");
        assert!(lo.running);
        assert_eq!(
            holder_of("203.0.113.254".parse().expect("an address")).expect("getifaddrs"),
            None
        );
    }
}
