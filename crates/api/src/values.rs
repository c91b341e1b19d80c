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
