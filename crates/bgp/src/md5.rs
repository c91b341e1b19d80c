//! TCP MD5 signatures (RFC 2385): the kernel signs every segment of the session with the
//! shared password and drops segments from the peer that are not signed with it.
//!
//! The key is set on the socket for the peer's address before connecting (`TCP_MD5SIG`),
//! so even the SYN is signed. This module is the crate's only `unsafe`: one `setsockopt`
//! with the kernel's `struct tcp_md5sig`.

#![allow(unsafe_code)]

use std::{io, net::SocketAddr, os::fd::AsRawFd};

/// The longest key the kernel takes (`TCP_MD5SIG_MAXKEYLEN`).
pub const MAX_PASSWORD: usize = 80;

/// `struct tcp_md5sig` of `<linux/tcp.h>`.
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefix_len: u8,
    key_len: u16,
    ifindex: u32,
    key: [u8; MAX_PASSWORD],
}

/// Signs the socket's segments to and from `peer` with `password`.
pub fn set_password(socket: &impl AsRawFd, peer: SocketAddr, password: &[u8]) -> io::Result<()> {
    if password.is_empty() || password.len() > MAX_PASSWORD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a TCP MD5 password has 1 to {MAX_PASSWORD} octets"),
        ));
    }
    // SAFETY: every field is a plain integer or byte array, for which all zeroes is valid.
    let mut sig: TcpMd5Sig = unsafe { std::mem::zeroed() };
    let address = socket2::SockAddr::from(peer);
    let address_len = (address.len() as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: both regions are at least `address_len` bytes (a sockaddr_in or sockaddr_in6
    // fits in a sockaddr_storage) and do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(
            address.as_ptr().cast::<u8>(),
            (&raw mut sig.addr).cast::<u8>(),
            address_len,
        );
    }
    sig.key_len = password.len() as u16;
    sig.key[..password.len()].copy_from_slice(password);
    // SAFETY: `sig` is a valid, initialised `struct tcp_md5sig` that lives across the call,
    // and the length passed is its size.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            (&raw const sig).cast::<libc::c_void>(),
            std::mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
