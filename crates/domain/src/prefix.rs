//! An IP prefix: an address with its host bits cleared, and a length.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use crate::Family;

/// An IP prefix with its host bits cleared: `203.0.113.0/24`, `2001:db8::/64`. Built only by
/// [`Prefix::new`], which masks, so two prefixes of the same network are equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    address: IpAddr,
    length: u8,
}

impl Prefix {
    /// The prefix of `length` bits containing `address` (lengths beyond the family's width
    /// are clamped to it).
    pub fn new(address: IpAddr, length: u8) -> Prefix {
        let length = length.min(Family::of(address).bits());
        let address = match address {
            IpAddr::V4(v4) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(length)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(length)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        };
        Prefix { address, length }
    }

    /// The prefix holding just `address` (/32 or /128).
    pub fn host(address: IpAddr) -> Prefix {
        Prefix::new(address, Family::of(address).bits())
    }

    /// The network address (host bits cleared).
    pub fn address(&self) -> IpAddr {
        self.address
    }

    pub fn length(&self) -> u8 {
        self.length
    }

    pub fn family(&self) -> Family {
        Family::of(self.address)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_bits_are_cleared_and_lengths_clamped() {
        let p = Prefix::new("203.0.113.77".parse().unwrap(), 24);
        assert_eq!(p.to_string(), "203.0.113.0/24");
        assert_eq!(p, Prefix::new("203.0.113.1".parse().unwrap(), 24));
        assert_eq!(
            Prefix::new("2001:db8::1".parse().unwrap(), 200).length(),
            128
        );
        assert_eq!(
            Prefix::new("192.0.2.9".parse().unwrap(), 0).to_string(),
            "0.0.0.0/0"
        );
        assert_eq!(
            Prefix::host("2001:db8::4:1".parse().unwrap()).to_string(),
            "2001:db8::4:1/128"
        );
        assert_eq!(p.family(), Family::Ipv4);
    }
}
