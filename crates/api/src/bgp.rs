//! `BGPPeer` and `BFDProfile`: the routers speakers peer with, and how fast failures are seen.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::conditions::ConfigurationStatus;

use crate::values::{Asn, Duration, IpAddress, RouterId};

/// The desired state of a BGPPeer.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "herald.dev",
    version = "v1alpha1",
    kind = "BGPPeer",
    doc = "A BGP router that the speakers on matching nodes open sessions with.",
    plural = "bgppeers",
    shortname = "bgppeer",
    category = "herald",
    status = "ConfigurationStatus",
    printcolumn = r#"{"name":"Address","type":"string","jsonPath":".spec.peerAddress"}"#,
    printcolumn = r#"{"name":"Peer ASN","type":"integer","jsonPath":".spec.peerASN"}"#,
    printcolumn = r#"{"name":"My ASN","type":"integer","jsonPath":".spec.myASN"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.holdTime) || duration(self.holdTime) == duration('0s') || duration(self.holdTime) >= duration('3s')",
    "message": "holdTime must be 0s or at least 3s (RFC 4271)",
    "fieldPath": ".holdTime"
}, {
    "rule": "!has(self.keepaliveTime) || !has(self.holdTime) || duration(self.keepaliveTime) <= duration(self.holdTime)",
    "message": "keepaliveTime must not exceed holdTime",
    "fieldPath": ".keepaliveTime"
}]))]
pub struct BGPPeerSpec {
    /// The AS number the speakers use for this session.
    #[serde(rename = "myASN")]
    pub my_asn: Asn,
    /// The peer's AS number; equal to myASN for iBGP.
    #[serde(rename = "peerASN")]
    pub peer_asn: Asn,
    /// The peer's address.
    pub peer_address: IpAddress,
    /// The local address to open the session from; by default the node's address toward
    /// the peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<IpAddress>,
    /// The peer's TCP port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub peer_port: Option<i32>,
    /// Hold time proposed in OPEN: 0s (no keepalives) or at least 3s; 90s by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_time: Option<Duration>,
    /// Interval between KEEPALIVEs; a third of the hold time by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_time: Option<Duration>,
    /// How long to wait between connection attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_time: Option<Duration>,
    /// The BGP identifier; by default an IPv4 address of the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "routerID")]
    pub router_id: Option<RouterId>,
    /// Nodes that peer (any selector matching); all nodes when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    /// The Secret (type kubernetes.io/basic-auth, key `password`) holding the TCP MD5
    /// password of the session (RFC 2385).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretReference>,
    /// Allow an eBGP peer that is not directly connected (TTL above 1).
    #[serde(default)]
    pub ebgp_multi_hop: bool,
    /// Advertise the graceful restart capability (RFC 4724), so the peer keeps forwarding
    /// to this node's routes while its speaker restarts.
    #[serde(default)]
    pub enable_graceful_restart: bool,
    /// The BFDProfile for fast failure detection of this session; none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_profile: Option<String>,
}

/// The key of the password in a BGPPeer's Secret (`kubernetes.io/basic-auth`).
pub const PASSWORD_KEY: &str = "password";

/// A reference to a Secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SecretReference {
    pub name: String,
    /// The Secret's namespace; Herald's own namespace by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The desired state of a BFDProfile.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "herald.dev",
    version = "v1alpha1",
    kind = "BFDProfile",
    doc = "Timers of BFD sessions (RFC 5880) that BGPPeers refer to, for fast failure detection.",
    plural = "bfdprofiles",
    shortname = "bfdprofile",
    category = "herald",
    status = "ConfigurationStatus",
    printcolumn = r#"{"name":"Receive","type":"integer","jsonPath":".spec.receiveInterval"}"#,
    printcolumn = r#"{"name":"Transmit","type":"integer","jsonPath":".spec.transmitInterval"}"#,
    printcolumn = r#"{"name":"Multiplier","type":"integer","jsonPath":".spec.detectMultiplier"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BFDProfileSpec {
    /// Minimum interval between received control packets, in milliseconds (300 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 60000))]
    pub receive_interval: Option<i32>,
    /// Minimum interval between sent control packets, in milliseconds (300 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 60000))]
    pub transmit_interval: Option<i32>,
    /// Packets missed before the session is declared down (3 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 255))]
    pub detect_multiplier: Option<i32>,
    /// Interval of echo packets, in milliseconds, when echo mode is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 60000))]
    pub echo_interval: Option<i32>,
    /// Send echo packets. Not built: a profile with `echoMode: true` is refused, with the
    /// field named, and BGPPeers naming it are left as they were.
    #[serde(default)]
    pub echo_mode: bool,
    /// Wait for the peer to start the session.
    #[serde(default)]
    pub passive_mode: bool,
    /// Lowest TTL accepted from a multihop peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 254))]
    pub minimum_ttl: Option<i32>,
}
