//! Records herald-speaker writes for people to read: [`ServiceL2Status`] and
//! [`ServiceBGPStatus`] per Service and node, [`BGPSessionStatus`] per session, and
//! [`SpeakerStatus`] per node.
//!
//! `ServiceL2Status`: which node announces a Service's addresses on the local network, and
//! on which interfaces. Written by the announcing herald-speaker, read by people:
//!
//! ```text
//!   kubectl get servicel2statuses -A
//!   NAMESPACE   NAME          SERVICE   NODE    ADDRESSES                          INTERFACES
//!   default     web-node-2    web       node-2  ["192.0.2.64","2001:db8:1::40"]    ["eth0"]
//! ```
//!
//! One object per Service and announcing node (a dual-stack Service may be announced from
//! two nodes, one per address), owned by the Service so that it goes when the Service goes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Label naming the Service a record is about.
pub const SERVICE_LABEL: &str = "herald.dev/service";
/// Label naming the node a record is from.
pub const NODE_LABEL: &str = "herald.dev/node";
/// Label naming the BGPPeer a session record is about.
pub const PEER_LABEL: &str = "herald.dev/peer";
/// Label of a node's SpeakerStatus record (its value: the node).
pub const SPEAKER_LABEL: &str = "herald.dev/speaker";

/// What one node announces for one Service.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "herald.dev",
    version = "v1alpha1",
    kind = "ServiceL2Status",
    namespaced,
    derive = "PartialEq",
    doc = "Which node answers ARP / NDP for a Service's addresses, and on which interfaces. Written by herald-speaker; not for editing.",
    plural = "servicel2statuses",
    shortname = "l2status",
    category = "herald",
    printcolumn = r#"{"name":"Service","type":"string","jsonPath":".spec.service"}"#,
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.node"}"#,
    printcolumn = r#"{"name":"Addresses","type":"string","jsonPath":".spec.addresses"}"#,
    printcolumn = r#"{"name":"Interfaces","type":"string","jsonPath":".spec.interfaces"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceL2StatusSpec {
    /// The Service's name (in the record's namespace).
    pub service: String,
    /// The node announcing.
    pub node: String,
    /// The Service's addresses this node answers for.
    pub addresses: Vec<String>,
    /// The interfaces it answers on.
    pub interfaces: Vec<String>,
}

/// The state of one BGP session, as its speaker last saw it.
///
/// ```text
///   kubectl get bgpsessionstatuses -n herald-system
///   NAME         NODE     PEER   ADDRESS         STATE         PREFIXES   BFD   LAST NOTIFICATION   LAST ERROR
///   tor-node-1   node-1   tor    192.0.2.254     Established   12         Up
///   rr-node-1    node-1   rr     192.0.2.253     Active        0                sent NOTIFICATION open-message-error, bad peer AS (2/2)   the peer closed the connection
/// ```
///
/// One object per node and BGPPeer, in Herald's namespace, owned by the Node.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "herald.dev",
    version = "v1alpha1",
    kind = "BGPSessionStatus",
    namespaced,
    derive = "PartialEq",
    doc = "The state of the BGP session between one node's speaker and one BGPPeer. Written by herald-speaker; not for editing.",
    plural = "bgpsessionstatuses",
    shortname = "bgpsession",
    category = "herald",
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.node"}"#,
    printcolumn = r#"{"name":"Peer","type":"string","jsonPath":".spec.peer"}"#,
    printcolumn = r#"{"name":"Address","type":"string","jsonPath":".spec.peerAddress"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".spec.state"}"#,
    printcolumn = r#"{"name":"Prefixes","type":"integer","jsonPath":".spec.prefixesAdvertised"}"#,
    printcolumn = r#"{"name":"BFD","type":"string","jsonPath":".spec.bfd.state"}"#,
    printcolumn = r#"{"name":"Last Notification","type":"string","jsonPath":".spec.lastNotification"}"#,
    printcolumn = r#"{"name":"Last Error","type":"string","jsonPath":".spec.lastError"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BGPSessionStatusSpec {
    /// The node whose speaker runs the session.
    pub node: String,
    /// The BGPPeer's name.
    pub peer: String,
    /// The peer's address and port.
    pub peer_address: String,
    /// The session's state (RFC 4271): Idle, Connect, Active, OpenSent, OpenConfirm or
    /// Established.
    pub state: String,
    /// Prefixes the peer has from this node.
    pub prefixes_advertised: i64,
    /// The last transport error (connecting, reading, writing), while it is not
    /// established.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The last NOTIFICATION sent or received (e.g. `sent NOTIFICATION open-message-error,
    /// bad peer AS (2/2)`), kept until the session is established: the root cause, which
    /// the transport errors of later retries do not overwrite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_notification: Option<String>,
    /// When that NOTIFICATION was first seen (the same one on every retry keeps the time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_notification_time: Option<Time>,
    /// The BFD session beside it, when the BGPPeer names a BFDProfile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<BfdSessionStatus>,
}

/// A BFD session's state (RFC 5880) as one node's speaker sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BfdSessionStatus {
    /// AdminDown, Down, Init or Up.
    pub state: String,
    /// Why this side last changed state, as RFC 5880 words it (e.g. `Control Detection Time
    /// Expired`).
    pub diagnostic: String,
    /// The diagnostic in the router's last packet.
    pub remote_diagnostic: String,
    /// The agreed interval between this node's packets, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transmit_interval_ms: Option<i64>,
    /// How long the router may be silent before it is declared down, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detection_time_ms: Option<i64>,
}

/// Which peers one node advertises a Service's addresses to, over BGP.
///
/// ```text
///   kubectl get servicebgpstatuses -A
///   NAMESPACE   NAME         SERVICE   NODE     PREFIXES              PEERS
///   default     web-node-1   web       node-1   ["192.0.2.64/32"]     ["tor"]
/// ```
///
/// One object per Service and advertising node, owned by the Service; the peers are those
/// whose session is established and carries the prefixes.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "herald.dev",
    version = "v1alpha1",
    kind = "ServiceBGPStatus",
    namespaced,
    derive = "PartialEq",
    doc = "Which BGP peers one node advertises a Service's addresses to. Written by herald-speaker; not for editing.",
    plural = "servicebgpstatuses",
    shortname = "bgpstatus",
    category = "herald",
    printcolumn = r#"{"name":"Service","type":"string","jsonPath":".spec.service"}"#,
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.node"}"#,
    printcolumn = r#"{"name":"Prefixes","type":"string","jsonPath":".spec.prefixes"}"#,
    printcolumn = r#"{"name":"Peers","type":"string","jsonPath":".spec.peers"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceBGPStatusSpec {
    /// The Service's name (in the record's namespace).
    pub service: String,
    /// The node advertising.
    pub node: String,
    /// The prefixes this node advertises for the Service.
    pub prefixes: Vec<String>,
    /// The BGPPeers that have them from this node (established sessions).
    pub peers: Vec<String>,
}

/// What one node's speaker does, and what it cannot use that only it can know.
///
/// ```text
///   kubectl get speakerstatuses -n herald-system
///   NAME     NODE     ANNOUNCING   WITHHELD                          MEMBERS   NODES   PROBLEMS
///   node-1   node-1   true                                           2         3       1
///   node-2   node-2   false        its Ready condition is not True   2         3       1
///   node-3   node-3   true                                           1         3       1
/// ```
///
/// MEMBERS below NODES means speakers this one does not gossip with: not running, cut off,
/// or with another gossip key (then named in `gossip.unauthenticated`).
///
/// One object per node with a live speaker, in Herald's namespace, owned by the Node.
/// Problems of a whole object (a selector that does not parse, a missing pool) are in that
/// object's `Ready` condition instead.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "herald.dev",
    version = "v1alpha1",
    kind = "SpeakerStatus",
    namespaced,
    derive = "PartialEq",
    doc = "What one node's herald-speaker announces, and the configuration it cannot use on that node. Written by herald-speaker; not for editing.",
    plural = "speakerstatuses",
    shortname = "speaker",
    category = "herald",
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.node"}"#,
    printcolumn = r#"{"name":"Announcing","type":"boolean","jsonPath":".spec.announcing"}"#,
    printcolumn = r#"{"name":"Withheld","type":"string","jsonPath":".spec.withheld"}"#,
    printcolumn = r#"{"name":"Members","type":"integer","jsonPath":".spec.gossip.members"}"#,
    printcolumn = r#"{"name":"Nodes","type":"integer","jsonPath":".spec.gossip.nodes"}"#,
    printcolumn = r#"{"name":"Problems","type":"integer","jsonPath":".spec.problemCount"}"#,
    printcolumn = r#"{"name":"First Problem","type":"string","priority":1,"jsonPath":".spec.problems[0]"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SpeakerStatusSpec {
    /// The node.
    pub node: String,
    /// Whether the node takes load-balancer traffic (announces, in layer 2 or BGP).
    pub announcing: bool,
    /// Why it does not, when it does not (NotReady, out of service, excluded, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withheld: Option<String>,
    /// What this node's speaker cannot use, each naming the object and field: an address it
    /// owns on interfaces it does not have, a BGPPeer whose Secret it cannot read or that
    /// has no router ID here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// How many problems there are.
    pub problem_count: i64,
    /// What this speaker hears of the others by gossip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gossip: Option<GossipStatus>,
}

/// One speaker's view of the gossip between speakers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GossipStatus {
    /// Speakers it gossips with, itself included.
    pub members: i64,
    /// Nodes expected to run a speaker (those with a gossip address), itself included.
    pub nodes: i64,
    /// Nodes whose gossip it hears but cannot authenticate: their gossip key differs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unauthenticated: Vec<String>,
    /// Nodes whose speakers renew their heartbeat Lease but whose gossip does not reach this
    /// one at all: a partition between nodes (check the gossip port between them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreachable: Vec<String>,
    /// True while it answers for nothing in layer 2 because more speakers are alive outside
    /// its gossip (with another key, or across a partition) than in it (BGP is not
    /// affected).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outvoted: bool,
    /// Fingerprints of the gossip keys it accepts, the one it seals with first (a rotation
    /// step is done when every speaker shows it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
}

/// What a record is about, as its owner: the record goes when its owner goes (garbage
/// collection by owner reference).
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    /// A core/v1 kind: `Service`, `Node`.
    pub kind: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
}

/// The metadata of the record of `subject` from `node` in `namespace`: named by
/// [`record_name`], labelled `subject_label=subject` and [`NODE_LABEL`]`=node`, owned by
/// `owner` when it is known.
pub fn record_metadata(
    subject_label: &str,
    subject: &str,
    node: &str,
    namespace: &str,
    owner: Option<Owner<'_>>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(record_name(subject, node)),
        namespace: Some(namespace.to_owned()),
        labels: Some(
            [
                (subject_label.to_owned(), subject.to_owned()),
                (NODE_LABEL.to_owned(), node.to_owned()),
            ]
            .into(),
        ),
        owner_references: owner.map(|owner| {
            vec![OwnerReference {
                api_version: "v1".into(),
                kind: owner.kind.to_owned(),
                name: owner.name.to_owned(),
                uid: owner.uid.to_owned(),
                ..OwnerReference::default()
            }]
        }),
        ..ObjectMeta::default()
    }
}

/// The object name of the record of `service` from `node`: `<service>-<node>`, shortened
/// with a hash of the node when that would pass the 253-character limit.
pub fn record_name(service: &str, node: &str) -> String {
    let name = format!("{service}-{node}");
    if name.len() <= 253 {
        return name;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in node.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{service}-{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_names_stay_within_the_limit_and_distinct() {
        assert_eq!(record_name("web", "node-1"), "web-node-1");
        let long_a = "a".repeat(240);
        let long_b = format!("{}b", "a".repeat(239));
        let (a, b) = (record_name("web", &long_a), record_name("web", &long_b));
        assert!(a.len() <= 253 && b.len() <= 253);
        assert_ne!(a, b);
    }
}
