//! Address ranges as users write them in `IPAddressPool.spec.addresses`: a CIDR
//! (`192.0.2.64/26`, `2001:db8:1::/120`) or an inclusive range (`192.0.2.10-192.0.2.20`).
//!
//! Addresses are handled as `u128` within a [`Family`], so IPv4 and IPv6 share one code path
//! and an IPv6 /64 is an ordinary range.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use herald_domain::Family;

/// The address with number `n` in `family`.
pub(crate) fn nth_address(family: Family, n: u128) -> IpAddr {
    match family {
        // Numbers of IPv4 addresses never exceed u32::MAX: they come from IPv4 addresses.
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX))),
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// The number of an address within its family.
pub(crate) fn number(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The host part of a prefix of `length` bits (at most the family's width), as a mask.
fn host_mask(family: Family, length: u32) -> u128 {
    let bits = u32::from(family.bits());
    let host_bits = bits - length.min(bits);
    if host_bits == 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    }
}

/// An inclusive range of addresses of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpRange {
    family: Family,
    first: u128,
    last: u128,
}

impl IpRange {
    /// The range from `first` to `last`, both included.
    pub fn new(first: IpAddr, last: IpAddr) -> Result<Self, RangeError> {
        if Family::of(first) != Family::of(last) {
            return Err(RangeError::MixedFamilies);
        }
        let range = IpRange {
            family: Family::of(first),
            first: number(first),
            last: number(last),
        };
        if range.first > range.last {
            return Err(RangeError::Inverted);
        }
        Ok(range)
    }

    pub fn family(&self) -> Family {
        self.family
    }

    pub fn first(&self) -> IpAddr {
        nth_address(self.family, self.first)
    }

    pub fn last(&self) -> IpAddr {
        nth_address(self.family, self.last)
    }

    pub(crate) fn bounds(&self) -> (u128, u128) {
        (self.first, self.last)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        Family::of(ip) == self.family && (self.first..=self.last).contains(&number(ip))
    }

    pub fn overlaps(&self, other: &IpRange) -> bool {
        self.family == other.family && self.first <= other.last && other.first <= self.last
    }

    /// How many addresses the range holds; saturates at `u128::MAX` for `::/0`.
    pub fn len(&self) -> u128 {
        (self.last - self.first).saturating_add(1)
    }

    /// Never true: a range holds at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first(), self.last())
    }
}

/// Why a text is not an address range; the caller names the object and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("expected a CIDR (192.0.2.0/24) or a range (192.0.2.10-192.0.2.20)")]
    Syntax,
    #[error("{0:?} is not an IP address")]
    BadAddress(String),
    #[error("prefix length {length} is longer than {max}")]
    PrefixTooLong { length: String, max: u32 },
    #[error("{given} has host bits set; the network is {network}")]
    HostBitsSet { given: String, network: String },
    #[error("the first and last address are of different families")]
    MixedFamilies,
    #[error("the first address is after the last")]
    Inverted,
}

impl FromStr for IpRange {
    type Err = RangeError;

    fn from_str(text: &str) -> Result<Self, RangeError> {
        let text = text.trim();
        let address = |a: &str| {
            a.trim()
                .parse::<IpAddr>()
                .map_err(|_| RangeError::BadAddress(a.trim().to_owned()))
        };
        if let Some((ip, length)) = text.split_once('/') {
            let ip = address(ip)?;
            let family = Family::of(ip);
            let max = u32::from(family.bits());
            let length: u32 = match length.trim().parse() {
                Ok(l) if l <= max => l,
                _ => {
                    return Err(RangeError::PrefixTooLong {
                        length: length.trim().to_owned(),
                        max,
                    });
                }
            };
            let host_mask = host_mask(family, length);
            let n = number(ip);
            if n & host_mask != 0 {
                return Err(RangeError::HostBitsSet {
                    given: text.to_owned(),
                    network: format!("{}/{length}", nth_address(family, n & !host_mask)),
                });
            }
            Ok(IpRange {
                family,
                first: n,
                last: n | host_mask,
            })
        } else if let Some((first, last)) = text.split_once('-') {
            IpRange::new(address(first)?, address(last)?)
        } else {
            Err(RangeError::Syntax)
        }
    }
}

/// Addresses that some clients treat as network or broadcast addresses: IPv4 addresses ending
/// in `.0` or `.255` (what `avoidBuggyIPs` keeps out of allocation).
pub(crate) fn is_buggy(family: Family, n: u128) -> bool {
    family == Family::Ipv4 && is_buggy_v4(n)
}

/// Whether the IPv4 address numbered `n` ends in `.0` or `.255`.
pub(crate) fn is_buggy_v4(n: u128) -> bool {
    matches!(n & 0xff, 0 | 0xff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn a_cidr_covers_its_network_and_broadcast_addresses() {
        let range: IpRange = "192.0.2.64/26".parse().expect("valid");
        assert_eq!(range.first(), ip("192.0.2.64"));
        assert_eq!(range.last(), ip("192.0.2.127"));
        assert_eq!(range.len(), 64);
    }

    #[test]
    fn an_ipv6_slash_64_holds_two_to_the_64_addresses() {
        let range: IpRange = "2001:db8:1::/64".parse().expect("valid");
        assert_eq!(range.len(), 1 << 64);
        assert!(range.contains(ip("2001:db8:1::ffff:1")));
        assert!(!range.contains(ip("2001:db8:2::1")));
        assert!(!range.contains(ip("192.0.2.1")));
    }

    #[test]
    fn the_whole_ipv6_space_saturates_its_length() {
        let range: IpRange = "::/0".parse().expect("valid");
        assert_eq!(range.len(), u128::MAX);
    }

    #[test]
    fn a_dash_range_includes_both_ends_and_tolerates_spaces() {
        let range: IpRange = "192.0.2.10 - 192.0.2.20".parse().expect("valid");
        assert_eq!(range.len(), 11);
        assert_eq!(range.to_string(), "192.0.2.10-192.0.2.20");
    }

    #[test]
    fn malformed_ranges_are_rejected_with_the_reason() {
        let cases = [
            ("192.0.2.0", RangeError::Syntax),
            (
                "192.0.2.300/24",
                RangeError::BadAddress("192.0.2.300".into()),
            ),
            (
                "192.0.2.0/33",
                RangeError::PrefixTooLong {
                    length: "33".into(),
                    max: 32,
                },
            ),
            (
                "192.0.2.5/24",
                RangeError::HostBitsSet {
                    given: "192.0.2.5/24".into(),
                    network: "192.0.2.0/24".into(),
                },
            ),
            ("192.0.2.20-192.0.2.10", RangeError::Inverted),
            ("192.0.2.1-2001:db8::1", RangeError::MixedFamilies),
        ];
        for (text, expected) in cases {
            assert_eq!(text.parse::<IpRange>(), Err(expected), "{text}");
        }
    }

    #[test]
    fn only_ipv4_dot_zero_and_dot_255_are_buggy() {
        assert!(is_buggy(Family::Ipv4, number(ip("192.0.2.0"))));
        assert!(is_buggy(Family::Ipv4, number(ip("192.0.2.255"))));
        assert!(!is_buggy(Family::Ipv4, number(ip("192.0.2.1"))));
        assert!(!is_buggy(Family::Ipv6, number(ip("2001:db8::ff"))));
    }
}
