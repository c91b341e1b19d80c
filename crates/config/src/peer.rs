//! BGPPeers and BFDProfiles, translated once: a BGPPeer's spec parsed and checked into a
//! [`Peer`], or a [`PeerError`] naming the object and the field; BFDProfiles likewise into
//! [`BfdProfile`]s. What depends on a node (the default router ID), on Secrets (the TCP MD5
//! password) and on the BFDProfile a peer names is added by the speaker.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use herald_api::{
    BFDProfile, BGPPeer,
    selector::{SelectorError, convert_all},
};
use herald_domain::{Family, LabelSelector};
use herald_plan::BgpPeer as PlannedBgpPeer;
use kube::ResourceExt;

/// The BGP port.
const BGP_PORT: u16 = 179;
/// Defaults of RFC 4271's suggested values, as most routers use them.
const DEFAULT_HOLD_TIME: u16 = 90;
const DEFAULT_CONNECT_RETRY: Duration = Duration::from_secs(1);

/// A BGPPeer whose spec is usable (what is not yet known: the node and the password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub node_selectors: Vec<LabelSelector>,
    pub address: SocketAddr,
    pub source: Option<IpAddr>,
    pub router_id: Option<Ipv4Addr>,
    pub local_asn: u32,
    pub peer_asn: u32,
    pub hold_time: u16,
    pub keepalive_time: Option<u16>,
    pub connect_retry: Duration,
    /// The Secret in Herald's namespace whose `password` signs the session.
    pub password_secret: Option<String>,
    pub multihop: bool,
    pub graceful_restart: bool,
    /// `spec.bfdProfile`: the BFDProfile of the session's BFD.
    pub bfd_profile: Option<String>,
}

/// Why a BGPPeer cannot be used: the object, the field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("BGPPeer {peer}: {field}: {problem}")]
    Field {
        peer: String,
        field: &'static str,
        problem: String,
    },
    /// A node selector that does not parse (its error names the object and field already).
    #[error("{source}")]
    Selector {
        peer: String,
        #[source]
        source: SelectorError,
    },
}

impl PeerError {
    /// The BGPPeer's name.
    pub fn peer(&self) -> &str {
        match self {
            PeerError::Field { peer, .. } | PeerError::Selector { peer, .. } => peer,
        }
    }
}

/// A BFDProfile, translated: the timers it gives a session and the lowest TTL a multihop
/// peer's packets may arrive with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BfdProfile {
    pub config: herald_bfd::Config,
    pub minimum_ttl: u8,
}

/// The usable BFDProfiles, by name.
pub type BfdProfiles = BTreeMap<String, BfdProfile>;

/// MetalLB's (and FRR's) defaults.
const DEFAULT_BFD_INTERVAL_MS: i32 = 300;
const DEFAULT_BFD_MULTIPLIER: i32 = 3;
const DEFAULT_MINIMUM_TTL: i32 = 254;

/// Why a BFDProfile cannot be used: the object, the field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("BFDProfile {profile}: {field}: {problem}")]
pub struct ProfileError {
    pub profile: String,
    pub field: &'static str,
    pub problem: String,
}

/// Every BFDProfile translated: the usable ones, and why the others are not.
pub fn translate_profiles(objects: &[Arc<BFDProfile>]) -> (BfdProfiles, Vec<ProfileError>) {
    let (mut profiles, mut problems) = (BfdProfiles::new(), Vec::new());
    for object in objects {
        let name = object.name_any();
        match translate_profile(&object.spec) {
            Ok(profile) => {
                profiles.insert(name, profile);
            }
            Err((field, problem)) => problems.push(ProfileError {
                profile: name,
                field,
                problem,
            }),
        }
    }
    (profiles, problems)
}

fn translate_profile(
    spec: &herald_api::BFDProfileSpec,
) -> Result<BfdProfile, (&'static str, String)> {
    if spec.echo_mode {
        return Err((
            "spec.echoMode",
            "the echo function is not implemented; set echoMode to false (control packets \
             alone detect failures within transmitInterval x detectMultiplier)"
                .into(),
        ));
    }
    let milliseconds = |value: Option<i32>, field: &'static str| {
        let value = value.unwrap_or(DEFAULT_BFD_INTERVAL_MS);
        u64::try_from(value)
            .ok()
            .filter(|v| *v > 0)
            .map(Duration::from_millis)
            .ok_or((
                field,
                format!("{value} is not a positive number of milliseconds"),
            ))
    };
    let small = |value: Option<i32>, default: i32, field: &'static str| {
        let value = value.unwrap_or(default);
        u8::try_from(value)
            .ok()
            .filter(|v| *v > 0)
            .ok_or((field, format!("{value} is not between 1 and 255")))
    };
    Ok(BfdProfile {
        config: herald_bfd::Config {
            desired_min_tx: milliseconds(spec.transmit_interval, "spec.transmitInterval")?,
            required_min_rx: milliseconds(spec.receive_interval, "spec.receiveInterval")?,
            detect_mult: small(
                spec.detect_multiplier,
                DEFAULT_BFD_MULTIPLIER,
                "spec.detectMultiplier",
            )?,
            passive: spec.passive_mode,
        },
        minimum_ttl: small(spec.minimum_ttl, DEFAULT_MINIMUM_TTL, "spec.minimumTtl")?,
    })
}

/// Every BGPPeer translated: the usable ones, sorted by name, and why the others are not.
pub fn translate_peers(objects: &[Arc<BGPPeer>], namespace: &str) -> (Vec<Peer>, Vec<PeerError>) {
    let (mut peers, mut problems) = (Vec::new(), Vec::new());
    for object in objects {
        match Peer::translate(object, namespace) {
            Ok(peer) => peers.push(peer),
            Err(problem) => problems.push(problem),
        }
    }
    peers.sort_by(|a, b| a.name.cmp(&b.name));
    (peers, problems)
}

impl Peer {
    /// Parses and checks `object`; `namespace` is Herald's, the only one passwords are read
    /// from.
    pub fn translate(object: &BGPPeer, namespace: &str) -> Result<Peer, PeerError> {
        let name = object.name_any();
        let spec = &object.spec;
        let error = |field: &'static str, problem: &dyn std::fmt::Display| PeerError::Field {
            peer: name.clone(),
            field,
            problem: problem.to_string(),
        };
        let address: IpAddr = spec
            .peer_address
            .parse()
            .map_err(|e| error("spec.peerAddress", &e))?;
        let port = spec
            .peer_port
            .map_or(Ok(BGP_PORT), u16::try_from)
            .map_err(|e| error("spec.peerPort", &e))?;
        let source = spec
            .source_address
            .as_ref()
            .map(|s| s.parse())
            .transpose()
            .map_err(|e| error("spec.sourceAddress", &e))?;
        let router_id = spec
            .router_id
            .as_ref()
            .map(|id| id.parse())
            .transpose()
            .map_err(|e| error("spec.routerID", &e))?;
        let duration = |value: &Option<herald_api::values::Duration>, field: &'static str| {
            value
                .as_ref()
                .map(|d| d.parse().map_err(|e| error(field, &e)))
                .transpose()
        };
        let seconds = |d: Duration| u16::try_from(d.as_secs()).unwrap_or(u16::MAX);
        let hold_time =
            duration(&spec.hold_time, "spec.holdTime")?.map_or(DEFAULT_HOLD_TIME, seconds);
        let keepalive_time = duration(&spec.keepalive_time, "spec.keepaliveTime")?.map(seconds);
        let connect_retry =
            duration(&spec.connect_time, "spec.connectTime")?.unwrap_or(DEFAULT_CONNECT_RETRY);
        let password_secret = match &spec.password_secret {
            Some(secret)
                if secret
                    .namespace
                    .as_deref()
                    .is_some_and(|ns| ns != namespace) =>
            {
                return Err(error(
                    "spec.passwordSecret.namespace",
                    &format!("must be Herald's namespace {namespace}, where speakers may read it"),
                ));
            }
            secret => secret.as_ref().map(|s| s.name.clone()),
        };
        let object_name = format!("BGPPeer {name}");
        let node_selectors = convert_all(&spec.node_selectors, &object_name, "spec.nodeSelectors")
            .map_err(|source| PeerError::Selector {
                peer: name.clone(),
                source,
            })?;
        Ok(Peer {
            name: name.clone(),
            node_selectors,
            address: SocketAddr::new(address, port),
            source,
            router_id,
            local_asn: spec.my_asn.0,
            peer_asn: spec.peer_asn.0,
            hold_time,
            keepalive_time,
            connect_retry,
            password_secret,
            multihop: spec.ebgp_multi_hop,
            graceful_restart: spec.enable_graceful_restart,
            bfd_profile: spec.bfd_profile.clone(),
        })
    }

    /// What planning needs of the peer. A session carries the routes of its transport's
    /// family only.
    pub fn planned(&self) -> PlannedBgpPeer {
        PlannedBgpPeer {
            name: self.name.clone(),
            node_selectors: self.node_selectors.clone(),
            family: Family::of(self.address.ip()),
        }
    }
}

#[cfg(test)]
mod tests {
    use herald_tests::herald::object;
    use serde_json::json;

    use super::*;

    fn peer(spec: serde_json::Value) -> Result<Peer, PeerError> {
        Peer::translate(&object("BGPPeer", "tor", spec), "herald-system")
    }

    #[test]
    fn an_unusable_peer_is_refused_with_the_field_named() {
        let error = peer(json!({"myASN": 64513, "peerASN": 64512, "peerAddress": "192.0.2.x"}))
            .expect_err("not an address");
        assert!(
            error
                .to_string()
                .starts_with("BGPPeer tor: spec.peerAddress:"),
            "{error}"
        );
        let error = peer(
            json!({"myASN": 64513, "peerASN": 64512, "peerAddress": "192.0.2.254",
            "passwordSecret": {"name": "md5", "namespace": "default"}}),
        )
        .expect_err("a Secret outside Herald's namespace");
        assert!(
            error
                .to_string()
                .starts_with("BGPPeer tor: spec.passwordSecret.namespace:"),
            "{error}"
        );
        let error = peer(
            json!({"myASN": 64513, "peerASN": 64512, "peerAddress": "192.0.2.254",
            "nodeSelectors": [{"matchExpressions": [{"key": "rack", "operator": "Near"}]}]}),
        )
        .expect_err("no such operator");
        assert_eq!(
            error.to_string(),
            "BGPPeer tor: spec.nodeSelectors[0].matchExpressions[0].operator: operator \"Near\" is not In, NotIn, Exists or DoesNotExist"
        );
        assert_eq!(error.peer(), "tor");
    }

    fn profile(name: &str, spec: serde_json::Value) -> Arc<BFDProfile> {
        Arc::new(object("BFDProfile", name, spec))
    }

    #[test]
    fn bfd_profiles_get_metallbs_defaults_and_echo_mode_is_refused() {
        let (profiles, problems) = translate_profiles(&[
            profile("defaults", json!({})),
            profile("echo", json!({"echoMode": true})),
        ]);
        let [problem] = &problems[..] else {
            panic!("one problem: {problems:?}")
        };
        assert_eq!(
            (problem.profile.as_str(), problem.field),
            ("echo", "spec.echoMode")
        );
        assert!(
            problem.to_string().starts_with(
                "BFDProfile echo: spec.echoMode: the echo function is not implemented"
            ),
            "{problem}"
        );
        assert_eq!(
            profiles["defaults"].config,
            herald_bfd::Config {
                desired_min_tx: Duration::from_millis(300),
                required_min_rx: Duration::from_millis(300),
                detect_mult: 3,
                passive: false,
            },
        );
        assert_eq!(profiles["defaults"].minimum_ttl, 254);
    }
}
