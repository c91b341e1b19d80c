//! The sockets layer 2 answers through, one pair per interface, readable with tokio:
//!
//! ```text
//!   ArpSocket: AF_PACKET, bound to one interface and the ARP ethertype only (0x0806);
//!              whole Ethernet frames in and out; frames this host sends are skipped.
//!   NdpSocket: raw ICMPv6, bound to one interface, with an ICMPv6 filter that lets through
//!              neighbour solicitations (type 135) only; joins the solicited-node groups of
//!              the addresses owned; sends with hop limit 255 (RFC 4861 §7.1.2, §7.2.4).
//!   LinkChanges: rtnetlink, subscribed to the link and address groups: wakes its reader
//!              the moment an interface or address of the node changes (a cable pulled,
//!              a MAC changed, an interface renamed); the messages themselves are not read.
//! ```
//!
//! Neither socket is promiscuous: the kernel hands over ARP frames and neighbour
//! solicitations, nothing else. Raw sockets need `CAP_NET_RAW`.
//!
//! This is the one module of the crate with `unsafe`: socket options and `sockaddr_ll`
//! have no safe wrapper in std. Each block says what it relies on.

#![allow(unsafe_code)]

use std::{
    io, mem,
    net::Ipv6Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use tokio::io::unix::AsyncFd;

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn check_size(ret: libc::ssize_t) -> io::Result<usize> {
    usize::try_from(ret).map_err(|_| io::Error::last_os_error())
}

fn new_socket(
    domain: libc::c_int,
    kind: libc::c_int,
    protocol: libc::c_int,
) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; on success the descriptor is new and owned here.
    let fd = check(unsafe {
        libc::socket(
            domain,
            kind | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            protocol,
        )
    })?;
    // SAFETY: `fd` is a freshly opened descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_option<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live `T` and the length passed is its size.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            socklen::<T>(),
        )
    })?;
    Ok(())
}

/// Hands `fd` to tokio's reactor.
fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is open and keeps returning the same descriptor until dropped, and
    // the AsyncFd owns it from here on.
    unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}

fn socklen<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(mem::size_of::<T>()).expect("socket structures are small")
}

/// Waits until `fd` is readable and runs `op`, again after each spurious wake-up.
async fn read_with<R>(
    fd: &AsyncFd<OwnedFd>,
    mut op: impl FnMut(&OwnedFd) -> io::Result<R>,
) -> io::Result<R> {
    loop {
        let mut guard = fd.readable().await?;
        if let Ok(result) = guard.try_io(|fd| op(fd.get_ref())) {
            return result;
        }
    }
}

async fn write_with<R>(
    fd: &AsyncFd<OwnedFd>,
    mut op: impl FnMut(&OwnedFd) -> io::Result<R>,
) -> io::Result<R> {
    loop {
        let mut guard = fd.writable().await?;
        if let Ok(result) = guard.try_io(|fd| op(fd.get_ref())) {
            return result;
        }
    }
}

/// ARP frames of one interface.
#[derive(Debug)]
pub struct ArpSocket {
    fd: AsyncFd<OwnedFd>,
}

impl ArpSocket {
    /// Opens the socket on the interface with index `ifindex`.
    pub fn open(ifindex: u32) -> io::Result<Self> {
        // Protocol 0: the socket receives nothing until it is bound below, so no frame of
        // another interface or protocol slips in between.
        let fd = new_socket(libc::AF_PACKET, libc::SOCK_RAW, 0)?;
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut address: libc::sockaddr_ll = unsafe { mem::zeroed() };
        address.sll_family = libc::AF_PACKET as libc::sa_family_t;
        address.sll_protocol = (libc::ETH_P_ARP as u16).to_be();
        address.sll_ifindex = i32::try_from(ifindex).map_err(io::Error::other)?;
        // SAFETY: `address` is a live sockaddr_ll and the length is its size.
        check(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const address).cast(),
                socklen::<libc::sockaddr_ll>(),
            )
        })?;
        Ok(ArpSocket { fd: register(fd)? })
    }

    /// The next ARP frame received (not sent) on the interface; its length in `buffer`.
    pub async fn recv(&self, buffer: &mut [u8]) -> io::Result<usize> {
        loop {
            let (len, outgoing) = read_with(&self.fd, |fd| {
                // SAFETY: as above, all-zero is a valid sockaddr_ll.
                let mut from: libc::sockaddr_ll = unsafe { mem::zeroed() };
                let mut from_len = socklen::<libc::sockaddr_ll>();
                // SAFETY: buffer and address are live and their lengths are passed.
                let len = check_size(unsafe {
                    libc::recvfrom(
                        fd.as_raw_fd(),
                        buffer.as_mut_ptr().cast(),
                        buffer.len(),
                        0,
                        (&raw mut from).cast(),
                        &mut from_len,
                    )
                })?;
                Ok((len, from.sll_pkttype == libc::PACKET_OUTGOING))
            })
            .await?;
            if !outgoing {
                return Ok(len);
            }
        }
    }

    /// Sends a whole Ethernet frame out of the interface.
    pub async fn send(&self, frame: &[u8]) -> io::Result<()> {
        write_with(&self.fd, |fd| {
            // SAFETY: `frame` is live for the call and its length is passed.
            check_size(unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) })
        })
        .await
        .map(|_| ())
    }
}

/// ICMPv6 type of a neighbour solicitation.
const NEIGHBOUR_SOLICITATION: u32 = 135;
/// `ICMP6_FILTER` from `<netinet/icmp6.h>` (level `IPPROTO_ICMPV6`).
const ICMP6_FILTER: libc::c_int = 1;

/// A neighbour solicitation with what its IPv6 header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Solicited {
    pub source: Ipv6Addr,
    pub destination: Ipv6Addr,
    pub hop_limit: u8,
    /// Bytes of the ICMPv6 message in the buffer.
    pub len: usize,
}

/// Neighbour solicitations of one interface, and the advertisements that answer them.
#[derive(Debug)]
pub struct NdpSocket {
    fd: AsyncFd<OwnedFd>,
    ifindex: u32,
}

impl NdpSocket {
    /// Opens the socket on interface `name` (index `ifindex`).
    pub fn open(name: &str, ifindex: u32) -> io::Result<Self> {
        let fd = new_socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6)?;
        // Linux's filter: a set bit blocks that ICMPv6 type.
        let mut filter = [u32::MAX; 8];
        filter[(NEIGHBOUR_SOLICITATION >> 5) as usize] &= !(1 << (NEIGHBOUR_SOLICITATION & 31));
        set_option(&fd, libc::IPPROTO_ICMPV6, ICMP6_FILTER, &filter)?;
        // SAFETY: the name's bytes are live and their length is passed (no NUL needed).
        check(unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                name.as_ptr().cast(),
                libc::socklen_t::try_from(name.len()).map_err(io::Error::other)?,
            )
        })?;
        let index = libc::c_int::try_from(ifindex).map_err(io::Error::other)?;
        for (option, value) in [
            (libc::IPV6_RECVPKTINFO, 1),
            (libc::IPV6_RECVHOPLIMIT, 1),
            (libc::IPV6_MULTICAST_HOPS, 255),
            (libc::IPV6_UNICAST_HOPS, 255),
            (libc::IPV6_MULTICAST_IF, index),
            (libc::IPV6_MULTICAST_LOOP, 0),
            // Advertisements are sent from the advertised address, which the node does not
            // hold: allowed as the source of IPV6_PKTINFO only with freebind.
            (libc::IPV6_FREEBIND, 1),
        ] {
            set_option(&fd, libc::IPPROTO_IPV6, option, &value)?;
        }
        Ok(NdpSocket {
            fd: register(fd)?,
            ifindex,
        })
    }

    fn membership(&self, option: libc::c_int, group: Ipv6Addr) -> io::Result<()> {
        let request = libc::ipv6_mreq {
            ipv6mr_multiaddr: libc::in6_addr {
                s6_addr: group.octets(),
            },
            ipv6mr_interface: self.ifindex,
        };
        set_option(self.fd.get_ref(), libc::IPPROTO_IPV6, option, &request)
    }

    /// Joins a multicast group (a solicited-node address) on the interface.
    pub fn join(&self, group: Ipv6Addr) -> io::Result<()> {
        self.membership(libc::IPV6_ADD_MEMBERSHIP, group)
    }

    pub fn leave(&self, group: Ipv6Addr) -> io::Result<()> {
        self.membership(libc::IPV6_DROP_MEMBERSHIP, group)
    }

    /// The next neighbour solicitation that arrived on the interface; the message is at the
    /// start of `buffer`.
    pub async fn recv(&self, buffer: &mut [u8]) -> io::Result<Solicited> {
        loop {
            let (solicited, ifindex) =
                read_with(&self.fd, |fd| recv_with_header(fd, buffer)).await?;
            if ifindex == self.ifindex {
                return Ok(solicited);
            }
        }
    }

    /// Sends an ICMPv6 message (the kernel adds the checksum) from `source` to
    /// `destination`.
    pub async fn send(
        &self,
        source: Ipv6Addr,
        destination: Ipv6Addr,
        message: &[u8],
    ) -> io::Result<()> {
        write_with(&self.fd, |fd| {
            send_from(fd, self.ifindex, source, destination, message)
        })
        .await
        .map(|_| ())
    }
}

/// sendmsg(2) with IPV6_PKTINFO choosing the source address and interface.
fn send_from(
    fd: &OwnedFd,
    ifindex: u32,
    source: Ipv6Addr,
    destination: Ipv6Addr,
    message: &[u8],
) -> io::Result<usize> {
    // SAFETY: sockaddr_in6 and in6_pktinfo are plain data; all-zero is valid.
    let mut to: libc::sockaddr_in6 = unsafe { mem::zeroed() };
    to.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    to.sin6_addr.s6_addr = destination.octets();
    to.sin6_scope_id = ifindex;
    let mut info: libc::in6_pktinfo = unsafe { mem::zeroed() };
    info.ipi6_addr.s6_addr = source.octets();
    info.ipi6_ifindex = ifindex;
    let mut iov = libc::iovec {
        iov_base: message.as_ptr().cast_mut().cast(),
        iov_len: message.len(),
    };
    let mut control = [0u64; 8];
    // SAFETY: plain data; all-zero is valid.
    let mut header: libc::msghdr = unsafe { mem::zeroed() };
    header.msg_name = (&raw mut to).cast();
    header.msg_namelen = socklen::<libc::sockaddr_in6>();
    header.msg_iov = &raw mut iov;
    header.msg_iovlen = 1;
    header.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE only computes a size.
    header.msg_controllen = unsafe { libc::CMSG_SPACE(socklen::<libc::in6_pktinfo>()) } as usize;
    // SAFETY: the control buffer (64 bytes) holds one cmsghdr with an in6_pktinfo (CMSG_SPACE
    // is 40 bytes); CMSG_FIRSTHDR points into it, and every pointer in `header` refers to a
    // live buffer of the length given. sendmsg only reads the message.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&raw const header);
        (*cmsg).cmsg_level = libc::IPPROTO_IPV6;
        (*cmsg).cmsg_type = libc::IPV6_PKTINFO;
        (*cmsg).cmsg_len = libc::CMSG_LEN(socklen::<libc::in6_pktinfo>()) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast(), info);
        check_size(libc::sendmsg(fd.as_raw_fd(), &raw const header, 0))
    }
}

/// recvmsg(2) with the destination (IPV6_PKTINFO) and hop limit (IPV6_HOPLIMIT) of the
/// datagram; returns them with the index of the interface it arrived on.
fn recv_with_header(fd: &OwnedFd, buffer: &mut [u8]) -> io::Result<(Solicited, u32)> {
    // SAFETY: plain data; all-zero is valid.
    let mut from: libc::sockaddr_in6 = unsafe { mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buffer.as_mut_ptr().cast(),
        iov_len: buffer.len(),
    };
    // u64 elements keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 16];
    // SAFETY: plain data; all-zero is valid.
    let mut message: libc::msghdr = unsafe { mem::zeroed() };
    message.msg_name = (&raw mut from).cast();
    message.msg_namelen = socklen::<libc::sockaddr_in6>();
    message.msg_iov = &raw mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    message.msg_controllen = mem::size_of_val(&control);
    // SAFETY: every pointer in `message` refers to a live buffer of the length given.
    let len = check_size(unsafe { libc::recvmsg(fd.as_raw_fd(), &raw mut message, 0) })?;
    let mut destination = Ipv6Addr::UNSPECIFIED;
    let mut hop_limit = 0u8;
    let mut ifindex = 0u32;
    // SAFETY: the CMSG_* macros walk the control buffer recvmsg filled and stop at its end;
    // each payload is read unaligned with the type the kernel documents for it.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const message);
        while !cmsg.is_null() {
            let header = &*cmsg;
            if header.cmsg_level == libc::IPPROTO_IPV6 {
                if header.cmsg_type == libc::IPV6_HOPLIMIT {
                    let value: libc::c_int = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                    hop_limit = u8::try_from(value).unwrap_or(0);
                } else if header.cmsg_type == libc::IPV6_PKTINFO {
                    let info: libc::in6_pktinfo =
                        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                    destination = Ipv6Addr::from(info.ipi6_addr.s6_addr);
                    ifindex = info.ipi6_ifindex;
                }
            }
            cmsg = libc::CMSG_NXTHDR(&raw const message, cmsg);
        }
    }
    Ok((
        Solicited {
            source: Ipv6Addr::from(from.sin6_addr.s6_addr),
            destination,
            hop_limit,
            len,
        },
        ifindex,
    ))
}

/// Tells when an interface or address of the node changes: an rtnetlink socket subscribed to
/// the link and IPv4/IPv6 address groups. What changed is read again from the system by the
/// caller; this only says when, within microseconds rather than at the next scan.
#[derive(Debug)]
pub struct LinkChanges {
    fd: AsyncFd<OwnedFd>,
}

impl LinkChanges {
    /// Subscribes (no privilege needed for these groups).
    pub fn open() -> io::Result<Self> {
        let fd = new_socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE)?;
        // SAFETY: all-zero is a valid sockaddr_nl.
        let mut address: libc::sockaddr_nl = unsafe { mem::zeroed() };
        address.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        address.nl_groups =
            (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32;
        // SAFETY: the address is a live sockaddr_nl and its length is passed.
        check(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const address).cast(),
                socklen::<libc::sockaddr_nl>(),
            )
        })?;
        Ok(LinkChanges { fd: register(fd)? })
    }

    /// Waits for the next change, then takes every message already queued, so a burst of
    /// changes (an interface going down drops its addresses too) wakes the caller once. A
    /// queue that overflowed (`ENOBUFS`) also counts as a change: something was missed.
    pub async fn changed(&self) -> io::Result<()> {
        let mut buffer = [0u8; 8192];
        let first = read_with(&self.fd, |fd| receive(fd, &mut buffer)).await;
        match first {
            Err(e) if e.raw_os_error() != Some(libc::ENOBUFS) => return Err(e),
            _ => {}
        }
        loop {
            match receive(self.fd.get_ref(), &mut buffer) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}

fn receive(fd: &OwnedFd, buffer: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the buffer is live and its length is passed.
    check_size(unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            libc::MSG_DONTWAIT,
        )
    })
}
