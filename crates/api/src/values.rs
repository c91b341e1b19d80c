//! Validated scalar values used across the kinds: address ranges, ASNs, BGP communities,
//! IP addresses and durations. Each carries its OpenAPI schema with the checks the API server
//! runs (patterns, bounds and CEL `x-kubernetes-validations`), so a bad value is rejected at
//! `kubectl apply` time with a message naming the field.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Implements `JsonSchema` for a validated newtype with the schema `$body` builds.
macro_rules! schema {
    ($ty:ident => $body:block) => {
        impl JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($ty).into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema $body
        }
    };
}

/// CEL: the two ends of an `a-b` range, trimmed.
const FIRST: &str = "self.split('-')[0].trim()";
const LAST: &str = "self.split('-')[1].trim()";

/// An entry of `IPAddressPool.spec.addresses`: a CIDR (`192.0.2.64/26`) or an inclusive range
/// (`192.0.2.10-192.0.2.20`), IPv4 or IPv6.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AddressRange(pub String);

schema!(AddressRange => {
    let is_range = format!("self.split('-').size() == 2 && isIP({FIRST}) && isIP({LAST})");
    // CRD rules have no variables: the number of an IPv4 address is spelled out.
    let ipv4_number = |end: &str| {
        (0..4)
            .map(|i| format!("int({end}.split('.')[{i}]) * {}", 1u32 << (8 * (3 - i))))
            .collect::<Vec<_>>()
            .join(" + ")
    };
    json_schema!({
        "type": "string",
        "maxLength": 100,
        "description": "A CIDR (192.0.2.64/26, 2001:db8:1::/120) or an inclusive range of addresses (192.0.2.10-192.0.2.20).",
        "x-kubernetes-validations": [
            {
                "rule": format!("self.contains('/') ? isCIDR(self) : ({is_range})"),
                "message": "must be a CIDR (192.0.2.0/24) or a range (192.0.2.10-192.0.2.20)"
            },
            {
                "rule": "!isCIDR(self) || cidr(self).masked() == cidr(self)",
                "message": "the CIDR has host bits set: use its network address (e.g. 192.0.2.0/24, not 192.0.2.5/24)"
            },
            {
                "rule": format!("self.contains('/') || !({is_range}) || ip({FIRST}).family() == ip({LAST}).family()"),
                "message": "both ends of a range must be of the same family"
            },
            {
                "rule": format!(
                    "self.contains('/') || !({is_range}) || ip({FIRST}).family() != 4 || ip({LAST}).family() != 4 || ({}) <= ({})",
                    ipv4_number(FIRST), ipv4_number(LAST)
                ),
                "message": "the range is inverted: its first address is after its last"
            }
        ]
    })
});

/// An autonomous system number: 1 to 4294967294, not AS_TRANS (23456).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Asn(pub u32);

schema!(Asn => {
    json_schema!({
        "type": "integer",
        "format": "int64",
        // 0 is reserved (RFC 7607), 4294967295 too (RFC 7300).
        "minimum": 1,
        "maximum": 4294967294u32,
        "x-kubernetes-validations": [{
            "rule": "self != 23456",
            "message": "AS 23456 is AS_TRANS (RFC 6793), a placeholder that no speaker may use"
        }]
    })
});

/// A BGP community: standard `AA:NN` (each 0-65535), a well-known name (`no-export`,
/// `no-advertise`, `no-export-subconfed`, `no-peer`), or large `large:G:L1:L2` (each
/// 0-4294967295).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Community(pub String);

schema!(Community => {
    json_schema!({
        "type": "string",
        "maxLength": 40,
        "description": "A standard community AA:NN (each 0-65535), a well-known name (no-export, no-advertise, no-export-subconfed, no-peer), or a large community large:G:L1:L2 (each 0-4294967295).",
        "x-kubernetes-validations": [
            {
                "rule": "self.matches('^([0-9]{1,5}:[0-9]{1,5}|large:[0-9]{1,10}:[0-9]{1,10}:[0-9]{1,10}|no-export|no-advertise|no-export-subconfed|no-peer)$')",
                "message": "must be AA:NN, large:G:L1:L2 or a well-known community name"
            },
            {
                "rule": "!self.matches('^[0-9]+:[0-9]+$') || self.split(':').all(x, int(x) <= 65535)",
                "message": "each half of a standard community must be at most 65535"
            },
            {
                "rule": "!self.startsWith('large:') || !self.matches('^large:[0-9]+:[0-9]+:[0-9]+$') || self.split(':').all(x, x == 'large' || int(x) <= 4294967295)",
                "message": "each part of a large community must be at most 4294967295"
            }
        ]
    })
});

/// An IPv4 or IPv6 address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IpAddress(pub String);

schema!(IpAddress => {
    json_schema!({
        "type": "string",
        "maxLength": 45,
        "x-kubernetes-validations": [{
            "rule": "isIP(self)",
            "message": "must be an IPv4 or IPv6 address"
        }]
    })
});

/// A BGP router ID, written as an IPv4 address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RouterId(pub String);

schema!(RouterId => {
    json_schema!({
        "type": "string",
        "maxLength": 15,
        "x-kubernetes-validations": [{
            "rule": "isIP(self) && ip(self).family() == 4",
            "message": "a router ID is written as an IPv4 address"
        }]
    })
});

/// A duration such as `90s`, `1m30s` or `500ms`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Duration(pub String);

schema!(Duration => {
    json_schema!({
        "type": "string",
        "maxLength": 20,
        "pattern": "^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$",
        "description": "A duration such as 90s, 1m30s or 500ms."
    })
});

/// A value that does not read as its type; the schema refuses these, so one is only met in
/// objects written before a schema change or by hand without validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not {expected}")]
pub struct ValueError {
    pub value: String,
    pub expected: &'static str,
}

impl ValueError {
    fn new(value: &str, expected: &'static str) -> ValueError {
        ValueError {
            value: value.to_owned(),
            expected,
        }
    }
}

/// A community as sent on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CommunityValue {
    /// RFC 1997: the high half is the AS, the low half the value.
    Standard(u32),
    /// RFC 8092: global administrator, local data 1, local data 2.
    Large([u32; 3]),
}

impl Community {
    /// The community's wire value.
    pub fn value(&self) -> Result<CommunityValue, ValueError> {
        let bad = || ValueError::new(&self.0, "AA:NN, large:G:L1:L2 or a well-known community");
        // Well-known communities (RFC 1997, RFC 3765).
        let well_known = match self.0.as_str() {
            "no-export" => Some(0xffff_ff01),
            "no-advertise" => Some(0xffff_ff02),
            "no-export-subconfed" => Some(0xffff_ff03),
            "no-peer" => Some(0xffff_ff04),
            _ => None,
        };
        if let Some(value) = well_known {
            return Ok(CommunityValue::Standard(value));
        }
        if let Some(large) = self.0.strip_prefix("large:") {
            let parts: Vec<u32> = large
                .split(':')
                .map(|p| p.parse().map_err(|_| bad()))
                .collect::<Result<_, _>>()?;
            return match parts[..] {
                [g, l1, l2] => Ok(CommunityValue::Large([g, l1, l2])),
                _ => Err(bad()),
            };
        }
        let (high, low) = self.0.split_once(':').ok_or_else(bad)?;
        let high: u16 = high.parse().map_err(|_| bad())?;
        let low: u16 = low.parse().map_err(|_| bad())?;
        Ok(CommunityValue::Standard(
            (u32::from(high) << 16) | u32::from(low),
        ))
    }
}

impl IpAddress {
    pub fn parse(&self) -> Result<std::net::IpAddr, ValueError> {
        self.0
            .parse()
            .map_err(|_| ValueError::new(&self.0, "an IP address"))
    }
}

impl RouterId {
    pub fn parse(&self) -> Result<std::net::Ipv4Addr, ValueError> {
        self.0
            .parse()
            .map_err(|_| ValueError::new(&self.0, "an IPv4 address"))
    }
}

impl Duration {
    /// Reads `90s`, `1m30s`, `500ms`, `1.5h`.
    pub fn parse(&self) -> Result<std::time::Duration, ValueError> {
        let bad = || ValueError::new(&self.0, "a duration such as 90s, 1m30s or 500ms");
        let mut rest = self.0.as_str();
        let mut total = 0f64;
        if rest.is_empty() {
            return Err(bad());
        }
        while !rest.is_empty() {
            let number_end = rest
                .find(|c: char| !c.is_ascii_digit() && c != '.')
                .ok_or_else(bad)?;
            let number: f64 = rest[..number_end].parse().map_err(|_| bad())?;
            rest = &rest[number_end..];
            let (unit, seconds) = [("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)]
                .into_iter()
                .find(|(unit, _)| rest.starts_with(unit))
                .ok_or_else(bad)?;
            rest = &rest[unit.len()..];
            total += number * seconds;
        }
        std::time::Duration::try_from_secs_f64(total).map_err(|_| bad())
    }
}

#[cfg(test)]
mod parse_tests {
    use super::*;

    #[test]
    fn communities_read_as_their_wire_values() {
        let value = |s: &str| Community(s.into()).value();
        assert_eq!(
            value("65000:100"),
            Ok(CommunityValue::Standard(0xfde8_0064))
        );
        assert_eq!(
            value("no-export"),
            Ok(CommunityValue::Standard(0xffff_ff01))
        );
        assert_eq!(
            value("large:4200000000:1:2"),
            Ok(CommunityValue::Large([4_200_000_000, 1, 2]))
        );
        assert!(value("65536:1").is_err());
        assert!(value("large:1:2").is_err());
    }

    #[test]
    fn durations_read_as_kubernetes_writes_them() {
        let parse = |s: &str| Duration(s.into()).parse();
        assert_eq!(parse("90s"), Ok(std::time::Duration::from_secs(90)));
        assert_eq!(parse("1m30s"), Ok(std::time::Duration::from_secs(90)));
        assert_eq!(parse("500ms"), Ok(std::time::Duration::from_millis(500)));
        assert!(parse("90").is_err());
        assert!(parse("").is_err());
    }
}
