//! `L2Advertisement` and `BGPAdvertisement`: how the addresses of which pools are announced,
//! from which nodes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::conditions::ConfigurationStatus;

use crate::values::Community;

/// The desired state of an L2Advertisement.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "herald.dev",
    version = "v1alpha1",
    kind = "L2Advertisement",
    doc = "Announces the addresses of some pools on the local network: the node that owns an address answers ARP (IPv4) and neighbour solicitations (IPv6) for it.",
    plural = "l2advertisements",
    shortname = "l2adv",
    category = "herald",
    status = "ConfigurationStatus",
    printcolumn = r#"{"name":"Pools","type":"string","jsonPath":".spec.ipAddressPools"}"#,
    printcolumn = r#"{"name":"Interfaces","type":"string","jsonPath":".spec.interfaces"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct L2AdvertisementSpec {
    /// Pools (by name) whose addresses are announced. With `ipAddressPoolSelectors`, a pool
    /// named or selected is announced; with neither, every pool is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pools: Vec<String>,
    /// Label selectors of pools whose addresses are announced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    /// Nodes that may announce (any selector matching); all nodes when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    /// Interfaces to answer on; every suitable interface when empty (up, ARP-capable, not a
    /// bridge member, bond slave or container veth).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
    /// Services whose addresses are announced (any selector matching); all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
}

/// The desired state of a BGPAdvertisement.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "herald.dev",
    version = "v1alpha1",
    kind = "BGPAdvertisement",
    doc = "Advertises the addresses of some pools to BGP peers, from every eligible node (ECMP).",
    plural = "bgpadvertisements",
    shortname = "bgpadv",
    category = "herald",
    status = "ConfigurationStatus",
    printcolumn = r#"{"name":"Pools","type":"string","jsonPath":".spec.ipAddressPools"}"#,
    printcolumn = r#"{"name":"Peers","type":"string","jsonPath":".spec.peers"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BGPAdvertisementSpec {
    /// Pools (by name) whose addresses are advertised. With `ipAddressPoolSelectors`, a pool
    /// named or selected is advertised; with neither, every pool is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pools: Vec<String>,
    /// Label selectors of pools whose addresses are advertised.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    /// Prefix length of the advertised IPv4 routes: 32 (the default) advertises each address,
    /// shorter lengths aggregate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 32))]
    pub aggregation_length: Option<i32>,
    /// Prefix length of the advertised IPv6 routes: 128 by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "aggregationLengthV6")]
    #[schemars(range(min = 0, max = 128))]
    pub aggregation_length_v6: Option<i32>,
    /// LOCAL_PREF of the routes, sent to iBGP peers only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4294967295i64))]
    pub local_pref: Option<i64>,
    /// Communities attached to the routes: standard (65000:100), well-known (no-export) and
    /// large (large:65000:1:2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub communities: Vec<Community>,
    /// BGPPeers (by name) to advertise to; all peers when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// Nodes that advertise (any selector matching); all nodes when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    /// Services whose addresses are advertised (any selector matching); all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
    /// Attach the BGP link-bandwidth extended community, proportional to the node's number of
    /// ready local endpoints, so routers with weighted ECMP spread traffic per pod rather than
    /// per node.
    #[serde(default)]
    pub weight_by_local_endpoints: bool,
}
