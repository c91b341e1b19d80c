//! The status herald-controller writes on the configuration kinds (BGPPeer, BFDProfile,
//! L2Advertisement, BGPAdvertisement): one `Ready` condition saying whether the object is in
//! effect, and if not, why, naming the field.
//!
//! ```text
//!   kubectl get bgppeers
//!   NAME   ADDRESS       PEER ASN   MY ASN   READY   REASON             AGE
//!   tor    192.0.2.254   64512      64513    False   MissingReference   2m
//! ```
//!
//! What only a node's speaker can know (an interface missing on that node, a Secret it cannot
//! read) is in the speaker's records and Events, not here.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The condition type: the object is in effect.
pub const READY: &str = "Ready";

/// Why an object is, or is not, in effect (the `Ready` condition's reason).
pub mod reasons {
    /// In effect.
    pub const IN_EFFECT: &str = "InEffect";
    /// A field cannot be used; the object is left out.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// It names a pool, peer, profile or Secret that does not exist (or cannot be used).
    pub const MISSING_REFERENCE: &str = "MissingReference";
    /// Its node selectors match no node.
    pub const NO_NODE_SELECTED: &str = "NoNodeSelected";
    /// It selects no existing pool.
    pub const NO_POOL_SELECTED: &str = "NoPoolSelected";
}

/// What the controller observed of a configuration object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationStatus {
    /// `Ready`: whether the object is in effect, and if not, why (the message names the field).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl ConfigurationStatus {
    /// The `Ready` condition, once written.
    pub fn ready(&self) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == READY)
    }
}
