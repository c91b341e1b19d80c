//! What the controller says about each configuration object (BGPPeer, BFDProfile,
//! L2Advertisement, BGPAdvertisement) in its `Ready` condition: whether it is in effect, and
//! if not, why, naming the field. Pure: judged over the objects of one moment, with the same
//! translation the speakers plan from ([`herald_config`]), so what they leave out is what
//! `kubectl get` shows as not ready.
//!
//! ```text
//!   BGPPeers, BFDProfiles, advertisements ─┐  translate (herald_config): a field unusable?
//!   pools (names, labels) ─────────────────┤  references: pools, peers, profiles, Secrets
//!   nodes (labels) ────────────────────────┼► selects no node? no pool?
//!   Secrets in Herald's namespace (keys) ──┘
//!                                            ─► Verdict per object: reason + message
//! ```
//!
//! Judged here is what holds cluster-wide. What only one node's speaker can know (an
//! interface that node lacks, a Secret it cannot read) stays with the speakers.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use herald_api::{
    BFDProfile, BGPAdvertisement, BGPPeer, IPAddressPool, L2Advertisement,
    conditions::{ConfigurationStatus, reasons},
};
use herald_config::Peer;
use herald_domain::Labels;
use herald_plan::Selection;
use k8s_openapi::{api::core::v1::ObjectReference, apimachinery::pkg::apis::meta::v1::Condition};
use kube::{Resource, ResourceExt};

/// A node, as judging needs it: its name and labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeLabels {
    pub(crate) name: String,
    pub(crate) labels: Labels,
}

/// A Secret in Herald's namespace, as judging needs it: its name and whether it holds a
/// password (never the password itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SecretKeys {
    pub(crate) name: String,
    pub(crate) has_password: bool,
}

/// The configuration objects of one moment, and what they refer to.
#[derive(Debug, Clone, Default)]
pub(crate) struct Configuration {
    /// Herald's namespace: where password Secrets live.
    pub(crate) namespace: String,
    pub(crate) peers: Vec<Arc<BGPPeer>>,
    pub(crate) profiles: Vec<Arc<BFDProfile>>,
    pub(crate) l2_advertisements: Vec<Arc<L2Advertisement>>,
    pub(crate) bgp_advertisements: Vec<Arc<BGPAdvertisement>>,
    pub(crate) nodes: Vec<Arc<NodeLabels>>,
    pub(crate) secrets: Vec<Arc<SecretKeys>>,
}

/// What the controller says about one object.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Verdict {
    /// For the status write and its Events.
    pub(crate) object: ObjectReference,
    pub(crate) generation: Option<i64>,
    /// A [`reasons`] constant: `InEffect`, or the first problem's.
    pub(crate) reason: &'static str,
    /// What is in effect, or every problem, each naming its field.
    pub(crate) message: String,
    /// The status the object has now.
    pub(crate) current: ConfigurationStatus,
}

impl Verdict {
    pub(crate) fn in_effect(&self) -> bool {
        self.reason == reasons::IN_EFFECT
    }

    /// The object's `Ready` condition now, if written.
    pub(crate) fn current_ready(&self) -> Option<&Condition> {
        self.current.ready()
    }
}

/// One thing wrong with an object.
struct Problem {
    reason: &'static str,
    message: String,
}

fn problem(reason: &'static str, message: impl Into<String>) -> Problem {
    Problem {
        reason,
        message: message.into(),
    }
}

/// The verdicts built for one object kind, sharing how problems become a verdict.
fn verdict<K>(
    object: &K,
    status: Option<&ConfigurationStatus>,
    problems: Vec<Problem>,
    in_effect: String,
) -> Verdict
where
    K: Resource<DynamicType = ()>,
{
    let (reason, message) = match problems.first() {
        None => (reasons::IN_EFFECT, in_effect),
        Some(first) => (
            first.reason,
            problems
                .iter()
                .map(|p| p.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    };
    Verdict {
        object: object.object_ref(&()),
        generation: object.meta().generation,
        reason,
        message,
        current: status.cloned().unwrap_or_default(),
    }
}

/// The verdict on every configuration object.
pub(crate) fn judge(config: &Configuration, pools: &[Arc<IPAddressPool>]) -> Vec<Verdict> {
    let pool_labels: BTreeMap<String, Labels> = pools
        .iter()
        .map(|p| (p.name_any(), p.labels().clone()))
        .collect();
    let (profiles, unusable_profiles) = herald_config::translate_profiles(&config.profiles);
    let unusable_profiles: BTreeMap<&str, String> = unusable_profiles
        .iter()
        .map(|e| (e.profile.as_str(), e.to_string()))
        .collect();
    let peer_names: BTreeSet<String> = config.peers.iter().map(|p| p.name_any()).collect();
    let mut verdicts = Vec::new();
    for object in &config.peers {
        let mut problems = Vec::new();
        let mut in_effect = String::new();
        match Peer::translate(object, &config.namespace) {
            Err(e) => problems.push(problem(reasons::INVALID_SPEC, e.to_string())),
            Ok(peer) => {
                let named = |field: &str, what: String| format!("{field}: {what}");
                if let Some(name) = &object.spec.bfd_profile {
                    if let Some(why) = unusable_profiles.get(name.as_str()) {
                        problems.push(problem(
                            reasons::MISSING_REFERENCE,
                            named("spec.bfdProfile", format!("cannot be used: {why}")),
                        ));
                    } else if !profiles.contains_key(name) {
                        problems.push(problem(
                            reasons::MISSING_REFERENCE,
                            named(
                                "spec.bfdProfile",
                                format!("BFDProfile {name} does not exist; the session is held until it does"),
                            ),
                        ));
                    }
                }
                if let Some(secret) = &peer.password_secret {
                    match config.secrets.iter().find(|s| s.name == *secret) {
                        None => problems.push(problem(
                            reasons::MISSING_REFERENCE,
                            named(
                                "spec.passwordSecret",
                                format!(
                                    "Secret {}/{secret} does not exist; the session is held until it does",
                                    config.namespace
                                ),
                            ),
                        )),
                        Some(keys) if !keys.has_password => problems.push(problem(
                            reasons::MISSING_REFERENCE,
                            named(
                                "spec.passwordSecret",
                                format!(
                                    "Secret {}/{secret} has no key {:?}",
                                    config.namespace,
                                    herald_api::bgp::PASSWORD_KEY
                                ),
                            ),
                        )),
                        Some(_) => {}
                    }
                }
                let planned = peer.planned();
                let nodes = config
                    .nodes
                    .iter()
                    .filter(|n| planned.selects_node(&n.labels))
                    .count();
                if nodes == 0 {
                    problems.push(problem(
                        reasons::NO_NODE_SELECTED,
                        "spec.nodeSelectors: no node matches, so no speaker peers with it",
                    ));
                }
                in_effect = format!("speakers on {} peer with it", count(nodes, "node"));
            }
        }
        verdicts.push(verdict(
            &**object,
            object.status.as_ref(),
            problems,
            in_effect,
        ));
    }
    for object in &config.profiles {
        let name = object.name_any();
        let problems: Vec<Problem> = unusable_profiles
            .get(name.as_str())
            .map(|why| problem(reasons::INVALID_SPEC, why.clone()))
            .into_iter()
            .collect();
        let users: Vec<String> = config
            .peers
            .iter()
            .filter(|p| p.spec.bfd_profile.as_deref() == Some(name.as_str()))
            .map(|p| p.name_any())
            .collect();
        let in_effect = if users.is_empty() {
            "no BGPPeer names it".to_owned()
        } else {
            format!("used by BGPPeer {}", users.join(", "))
        };
        verdicts.push(verdict(
            &**object,
            object.status.as_ref(),
            problems,
            in_effect,
        ));
    }
    for object in &config.l2_advertisements {
        let judged = herald_config::l2_advertisement(object)
            .map_err(|e| e.to_string())
            .map(|planned| planned.selection);
        let (problems, in_effect) = selection_problems(judged, &pool_labels, config);
        verdicts.push(verdict(
            &**object,
            object.status.as_ref(),
            problems,
            in_effect,
        ));
    }
    for object in &config.bgp_advertisements {
        let judged = herald_config::bgp_advertisement(object)
            .map_err(|e| e.to_string())
            .map(|planned| planned.selection);
        let (mut problems, in_effect) = selection_problems(judged, &pool_labels, config);
        let missing: Vec<&str> = object
            .spec
            .peers
            .iter()
            .filter(|p| !peer_names.contains(*p))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            let at = problems
                .iter()
                .position(|p| p.reason != reasons::INVALID_SPEC)
                .unwrap_or(problems.len());
            problems.insert(
                at,
                problem(
                    reasons::MISSING_REFERENCE,
                    format!("spec.peers: no BGPPeer {}", missing.join(", ")),
                ),
            );
        }
        verdicts.push(verdict(
            &**object,
            object.status.as_ref(),
            problems,
            in_effect,
        ));
    }
    verdicts
}

/// What is wrong with an advertisement's selection, and what it puts in effect.
fn selection_problems(
    selection: Result<Selection, String>,
    pool_labels: &BTreeMap<String, Labels>,
    config: &Configuration,
) -> (Vec<Problem>, String) {
    let selection = match selection {
        Err(e) => return (vec![problem(reasons::INVALID_SPEC, e)], String::new()),
        Ok(selection) => selection,
    };
    let mut problems = Vec::new();
    let missing: Vec<&str> = selection
        .pools
        .iter()
        .filter(|p| !pool_labels.contains_key(*p))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        problems.push(problem(
            reasons::MISSING_REFERENCE,
            format!(
                "spec.ipAddressPools: no IPAddressPool {}",
                missing.join(", ")
            ),
        ));
    }
    let selected: Vec<&str> = pool_labels
        .keys()
        .filter(|p| selection.selects_pool(Some(p.as_str()), pool_labels))
        .map(String::as_str)
        .collect();
    if selected.is_empty() {
        problems.push(problem(
            reasons::NO_POOL_SELECTED,
            "spec.ipAddressPools, spec.ipAddressPoolSelectors: no existing pool is selected",
        ));
    }
    let nodes = config
        .nodes
        .iter()
        .filter(|n| selection.selects_node(&n.labels))
        .count();
    if nodes == 0 {
        problems.push(problem(
            reasons::NO_NODE_SELECTED,
            "spec.nodeSelectors: no node matches",
        ));
    }
    let in_effect = format!("pool {} from {}", selected.join(", "), count(nodes, "node"));
    (problems, in_effect)
}

fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn object<K: serde::de::DeserializeOwned>(kind: &str, name: &str, spec: Value) -> Arc<K> {
        Arc::new(herald_tests::herald::object(kind, name, spec))
    }

    pub(crate) fn peer(name: &str, spec: Value) -> Arc<BGPPeer> {
        let mut full = json!({"myASN": 64513, "peerASN": 64512, "peerAddress": "192.0.2.254"});
        full.as_object_mut()
            .expect("an object")
            .extend(spec.as_object().expect("an object").clone());
        object("BGPPeer", name, full)
    }

    fn node(name: &str, rack: &str) -> Arc<NodeLabels> {
        Arc::new(NodeLabels {
            name: name.into(),
            labels: [("rack".to_owned(), rack.to_owned())].into(),
        })
    }

    pub(crate) fn lan() -> Vec<Arc<IPAddressPool>> {
        vec![Arc::new(
            serde_json::from_value(json!({"apiVersion": "herald.dev/v1alpha1",
                "kind": "IPAddressPool", "metadata": {"name": "lan", "labels": {"tier": "edge"}},
                "spec": {"addresses": ["192.0.2.64/28"]}}))
            .expect("a valid pool"),
        )]
    }

    pub(crate) fn configuration() -> Configuration {
        Configuration {
            namespace: "herald-system".into(),
            nodes: vec![node("n1", "r1"), node("n2", "r2")],
            secrets: vec![
                Arc::new(SecretKeys {
                    name: "md5".into(),
                    has_password: true,
                }),
                Arc::new(SecretKeys {
                    name: "empty".into(),
                    has_password: false,
                }),
            ],
            ..Configuration::default()
        }
    }

    fn verdict_of<'a>(verdicts: &'a [Verdict], name: &str) -> &'a Verdict {
        verdicts
            .iter()
            .find(|v| v.object.name.as_deref() == Some(name))
            .expect("a verdict")
    }

    #[test]
    fn a_peer_is_in_effect_until_a_reference_is_missing_or_it_selects_no_node() {
        let mut config = configuration();
        config.profiles = vec![object(
            "BFDProfile",
            "fast",
            json!({"receiveInterval": 100}),
        )];
        config.peers = vec![
            peer(
                "good",
                json!({"bfdProfile": "fast", "passwordSecret": {"name": "md5"}}),
            ),
            peer("no-profile", json!({"bfdProfile": "slow"})),
            peer("no-secret", json!({"passwordSecret": {"name": "gone"}})),
            peer("no-key", json!({"passwordSecret": {"name": "empty"}})),
            peer(
                "nowhere",
                json!({"nodeSelectors": [{"matchLabels": {"rack": "r9"}}]}),
            ),
            peer("bad", json!({"peerAddress": "192.0.2.x"})),
        ];
        let verdicts = judge(&config, &lan());
        let good = verdict_of(&verdicts, "good");
        assert!(good.in_effect(), "{good:?}");
        assert_eq!(good.message, "speakers on 2 nodes peer with it");
        assert_eq!(good.generation, Some(1));
        assert_eq!(good.object.kind.as_deref(), Some("BGPPeer"));
        let expect = |name: &str, reason: &str, message: &str| {
            let v = verdict_of(&verdicts, name);
            assert_eq!((v.reason, v.message.as_str()), (reason, message), "{name}");
        };
        expect(
            "no-profile",
            reasons::MISSING_REFERENCE,
            "spec.bfdProfile: BFDProfile slow does not exist; the session is held until it does",
        );
        expect(
            "no-secret",
            reasons::MISSING_REFERENCE,
            "spec.passwordSecret: Secret herald-system/gone does not exist; the session is held until it does",
        );
        expect(
            "no-key",
            reasons::MISSING_REFERENCE,
            "spec.passwordSecret: Secret herald-system/empty has no key \"password\"",
        );
        expect(
            "nowhere",
            reasons::NO_NODE_SELECTED,
            "spec.nodeSelectors: no node matches, so no speaker peers with it",
        );
        let bad = verdict_of(&verdicts, "bad");
        assert_eq!(bad.reason, reasons::INVALID_SPEC);
        assert!(
            bad.message.starts_with("BGPPeer bad: spec.peerAddress:"),
            "{}",
            bad.message
        );
        let fast = verdict_of(&verdicts, "fast");
        assert_eq!(fast.message, "used by BGPPeer good");
    }

    #[test]
    fn an_unusable_profile_is_invalid_and_so_is_its_peers_reference() {
        let mut config = configuration();
        config.profiles = vec![object("BFDProfile", "echo", json!({"echoMode": true}))];
        config.peers = vec![peer("tor", json!({"bfdProfile": "echo"}))];
        let verdicts = judge(&config, &lan());
        let echo = verdict_of(&verdicts, "echo");
        assert_eq!(echo.reason, reasons::INVALID_SPEC);
        assert!(echo.message.starts_with("BFDProfile echo: spec.echoMode:"));
        let tor = verdict_of(&verdicts, "tor");
        assert_eq!(tor.reason, reasons::MISSING_REFERENCE);
        assert!(
            tor.message
                .starts_with("spec.bfdProfile: cannot be used: BFDProfile echo: spec.echoMode:"),
            "{}",
            tor.message
        );
    }

    #[test]
    fn advertisements_name_missing_pools_and_peers_and_what_they_select_nothing_of() {
        let mut config = configuration();
        config.peers = vec![peer("tor", json!({}))];
        config.l2_advertisements = vec![
            object("L2Advertisement", "all", json!({})),
            object(
                "L2Advertisement",
                "typo",
                json!({"ipAddressPools": ["lan", "wan"]}),
            ),
            object(
                "L2Advertisement",
                "none",
                json!({"ipAddressPools": ["wan"]}),
            ),
            object(
                "L2Advertisement",
                "rack9",
                json!({"ipAddressPoolSelectors": [{"matchLabels": {"tier": "edge"}}],
                       "nodeSelectors": [{"matchLabels": {"rack": "r9"}}]}),
            ),
            object(
                "L2Advertisement",
                "bad",
                json!({"serviceSelectors": [{"matchExpressions": [{"key": "a", "operator": "Near"}]}]}),
            ),
        ];
        config.bgp_advertisements = vec![
            object("BGPAdvertisement", "edge", json!({"peers": ["tor"]})),
            object(
                "BGPAdvertisement",
                "lost",
                json!({"peers": ["tor", "spine"]}),
            ),
            object(
                "BGPAdvertisement",
                "odd",
                json!({"communities": ["65536:1"]}),
            ),
        ];
        let verdicts = judge(&config, &lan());
        let all = verdict_of(&verdicts, "all");
        assert!(all.in_effect());
        assert_eq!(all.message, "pool lan from 2 nodes");
        let expect = |name: &str, reason: &str, message: &str| {
            let v = verdict_of(&verdicts, name);
            assert_eq!((v.reason, v.message.as_str()), (reason, message), "{name}");
        };
        expect(
            "typo",
            reasons::MISSING_REFERENCE,
            "spec.ipAddressPools: no IPAddressPool wan",
        );
        expect(
            "none",
            reasons::MISSING_REFERENCE,
            "spec.ipAddressPools: no IPAddressPool wan; spec.ipAddressPools, spec.ipAddressPoolSelectors: no existing pool is selected",
        );
        expect(
            "rack9",
            reasons::NO_NODE_SELECTED,
            "spec.nodeSelectors: no node matches",
        );
        assert_eq!(verdict_of(&verdicts, "bad").reason, reasons::INVALID_SPEC);
        assert!(verdict_of(&verdicts, "edge").in_effect());
        expect(
            "lost",
            reasons::MISSING_REFERENCE,
            "spec.peers: no BGPPeer spine",
        );
        let odd = verdict_of(&verdicts, "odd");
        assert_eq!(odd.reason, reasons::INVALID_SPEC);
        assert!(
            odd.message
                .starts_with("BGPAdvertisement odd: spec.communities[0]:"),
            "{}",
            odd.message
        );
    }
}
