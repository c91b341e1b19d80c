//! `IPAddressPool`: the addresses Services may be given, and who may use them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::values::AddressRange;

fn yes() -> bool {
    true
}

/// The desired state of an IPAddressPool.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "herald.dev",
    version = "v1alpha1",
    kind = "IPAddressPool",
    doc = "A pool of IP addresses that Services of type LoadBalancer are given addresses from.",
    plural = "ipaddresspools",
    shortname = "ippool",
    category = "herald",
    status = "IPAddressPoolStatus",
    printcolumn = r#"{"name":"Addresses","type":"string","jsonPath":".spec.addresses"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Auto Assign","type":"boolean","jsonPath":".spec.autoAssign"}"#,
    printcolumn = r#"{"name":"Assigned IPv4","type":"integer","jsonPath":".status.assignedIPv4"}"#,
    printcolumn = r#"{"name":"Available IPv4","type":"integer","jsonPath":".status.availableIPv4"}"#,
    printcolumn = r#"{"name":"Assigned IPv6","type":"integer","jsonPath":".status.assignedIPv6"}"#,
    printcolumn = r#"{"name":"Available IPv6","type":"string","jsonPath":".status.availableIPv6"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct IPAddressPoolSpec {
    /// The addresses of the pool: CIDRs (192.0.2.64/26, 2001:db8:1::/120) and inclusive
    /// ranges (192.0.2.10-192.0.2.20), IPv4 and IPv6 mixed freely. Entries must not overlap.
    #[schemars(length(min = 1, max = 1024))]
    pub addresses: Vec<AddressRange>,

    /// Whether Services that do not name a pool may be given addresses from this one.
    /// When false, only Services whose `herald.dev/address-pool` annotation names the pool,
    /// or that request one of its addresses, get its addresses.
    #[serde(default = "yes")]
    pub auto_assign: bool,

    /// Keep IPv4 addresses ending in .0 and .255 out of allocation, for clients that wrongly
    /// treat them as network or broadcast addresses.
    #[serde(default)]
    #[serde(rename = "avoidBuggyIPs")]
    pub avoid_buggy_ips: bool,

    /// Restricts the pool to some Services and sets its priority among the pools they may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_allocation: Option<ServiceAllocation>,
}

/// Which Services may be given addresses from a pool without naming it, and in which order
/// pools are tried.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAllocation {
    /// Pools with a priority are tried before pools without one; lower numbers first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,

    /// Namespaces whose Services may use the pool. With `namespaceSelectors`, a namespace
    /// matching either may use it; with neither, every namespace may.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,

    /// Label selectors of namespaces whose Services may use the pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace_selectors: Vec<LabelSelector>,

    /// Label selectors of Services that may use the pool; with none, every Service of an
    /// admitted namespace may.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
}

/// What the controller observed of the pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IPAddressPoolStatus {
    /// IPv4 addresses of the pool held by Services.
    #[serde(default, rename = "assignedIPv4")]
    pub assigned_ipv4: i64,
    /// IPv4 addresses of the pool still free.
    #[serde(default, rename = "availableIPv4")]
    pub available_ipv4: i64,
    /// IPv6 addresses of the pool held by Services.
    #[serde(default, rename = "assignedIPv6")]
    pub assigned_ipv6: i64,
    /// IPv6 addresses of the pool still free, as a decimal string: an IPv6 /64 holds more
    /// addresses than a 64-bit integer can count.
    #[serde(default, rename = "availableIPv6")]
    pub available_ipv6: String,
    /// `Ready` (its addresses can be given out), `Valid` when the spec cannot be used (why,
    /// naming the field), and `Overlapping` (whether another pool shares addresses with it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
