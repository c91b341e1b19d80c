//! A BGPPeer, translated once: its spec parsed and checked into a [`Peer`], or a
//! [`PeerError`] naming the object and the field; BFDProfiles likewise into [`BfdProfile`]s.
//! Planning takes a peer's name, node selectors and family ([`Peer::planned`]); the sessions
//! take [`Peer::settings`], which adds what depends on the node (the default router ID), on
//! Secrets (the TCP MD5 password) and on the BFDProfile it names.
//!
//! ```text
//!   BGPPeer objects ──► translate ──► Peer ──► planned()  (plan_bgp: who advertises what)
//!                           │           └────► settings(node, passwords) ──► Settings
//!                           └─► PeerError "BGPPeer tor: spec.peerAddress: ..."
//! ```

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
use herald_bgp::{Config, driver::Transport};
use herald_domain::{Family, LabelSelector};
use herald_plan::BgpPeer as PlannedBgpPeer;
use kube::ResourceExt;

use crate::{cluster::NodeView, secrets::Passwords};

/// The BGP port.
const BGP_PORT: u16 = 179;
/// Defaults of RFC 4271's suggested values, as most routers use them.
const DEFAULT_HOLD_TIME: u16 = 90;
const DEFAULT_CONNECT_RETRY: Duration = Duration::from_secs(1);
/// How long a peer keeps this node's routes while its speaker restarts (RFC 4724).
pub(crate) const GRACEFUL_RESTART_TIME: u16 = 120;

/// A BGPPeer whose spec is usable (what is not yet known: the node and the password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Peer {
    pub(crate) name: String,
    pub(crate) node_selectors: Vec<LabelSelector>,
    address: SocketAddr,
    source: Option<IpAddr>,
    router_id: Option<Ipv4Addr>,
    local_asn: u32,
    peer_asn: u32,
    hold_time: u16,
    keepalive_time: Option<u16>,
    connect_retry: Duration,
    /// The Secret in Herald's namespace whose `password` signs the session.
    pub(crate) password_secret: Option<String>,
    multihop: bool,
    graceful_restart: bool,
    /// `spec.bfdProfile`: the BFDProfile of the session's BFD.
    bfd_profile: Option<String>,
}

/// Why a BGPPeer cannot be used: the object, the field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PeerError {
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
    pub(crate) fn peer(&self) -> &str {
        match self {
            PeerError::Field { peer, .. } | PeerError::Selector { peer, .. } => peer,
        }
    }
}

/// Everything that fixes a session; when `config` or `transport` change, the session starts
/// over (a change of `bfd` alone is renegotiated by BFD, without a flap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) config: Config,
    pub(crate) transport: Transport,
    pub(crate) bfd: Option<BfdSettings>,
}

/// The BFD session beside a BGP session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BfdSettings {
    pub(crate) peer: herald_bfd::driver::Peer,
    pub(crate) config: herald_bfd::Config,
}

/// A BFDProfile, translated: the timers it gives a session and the lowest TTL a multihop
/// peer's packets may arrive with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BfdProfile {
    pub(crate) config: herald_bfd::Config,
    pub(crate) minimum_ttl: u8,
}

/// The usable BFDProfiles, by name.
pub(crate) type BfdProfiles = BTreeMap<String, BfdProfile>;

/// MetalLB's (and FRR's) defaults.
const DEFAULT_BFD_INTERVAL_MS: i32 = 300;
const DEFAULT_BFD_MULTIPLIER: i32 = 3;
const DEFAULT_MINIMUM_TTL: i32 = 254;

/// Every BFDProfile translated: the usable ones, and why the others are not (naming the object
/// and field).
pub(crate) fn translate_profiles(objects: &[Arc<BFDProfile>]) -> (BfdProfiles, Vec<String>) {
    let (mut profiles, mut problems) = (BfdProfiles::new(), Vec::new());
    for object in objects {
        let name = object.name_any();
        match translate_profile(&object.spec) {
            Ok(profile) => {
                profiles.insert(name, profile);
            }
            Err((field, problem)) => {
                problems.push(format!("BFDProfile {name}: {field}: {problem}"))
            }
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
pub(crate) fn translate_all(
    objects: &[Arc<BGPPeer>],
    namespace: &str,
) -> (Vec<Peer>, Vec<PeerError>) {
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
    pub(crate) fn translate(object: &BGPPeer, namespace: &str) -> Result<Peer, PeerError> {
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
    pub(crate) fn planned(&self) -> PlannedBgpPeer {
        PlannedBgpPeer {
            name: self.name.clone(),
            node_selectors: self.node_selectors.clone(),
            family: Family::of(self.address.ip()),
        }
    }

    /// The session settings on `node`, with the password from `passwords` (read before) and
    /// the BFDProfile from `profiles`.
    pub(crate) fn settings(
        &self,
        node: &NodeView,
        passwords: &Passwords,
        profiles: &BfdProfiles,
    ) -> Result<Settings, PeerError> {
        let error = |field: &'static str, problem: String| PeerError::Field {
            peer: self.name.clone(),
            field,
            problem,
        };
        let router_id = match (self.router_id, node.internal_ip) {
            (Some(id), _) => id,
            (None, Some(IpAddr::V4(v4))) => v4,
            (None, _) => {
                return Err(error(
                    "spec.routerID",
                    format!(
                        "must be set, because node {} has no IPv4 InternalIP to use",
                        node.state.name
                    ),
                ));
            }
        };
        let password = match &self.password_secret {
            None => None,
            Some(secret) => match passwords.get(secret) {
                Some(Ok(password)) => Some(password.clone()),
                Some(Err(e)) => return Err(error("spec.passwordSecret", e.to_string())),
                None => return Err(error("spec.passwordSecret", "not read yet".into())),
            },
        };
        let bfd = match &self.bfd_profile {
            None => None,
            Some(name) => {
                let profile = profiles.get(name).ok_or_else(|| {
                    error(
                        "spec.bfdProfile",
                        format!("BFDProfile {name} does not exist or cannot be used"),
                    )
                })?;
                Some(BfdSettings {
                    peer: herald_bfd::driver::Peer {
                        address: self.address.ip(),
                        source: self.source,
                        multihop: self.multihop,
                        minimum_ttl: profile.minimum_ttl,
                    },
                    config: profile.config,
                })
            }
        };
        let ebgp = self.local_asn != self.peer_asn;
        Ok(Settings {
            bfd,
            config: Config {
                local_asn: self.local_asn,
                peer_asn: self.peer_asn,
                router_id,
                hold_time: self.hold_time,
                keepalive_time: self.keepalive_time,
                connect_retry: self.connect_retry,
                family: Family::of(self.address.ip()),
                graceful_restart: self.graceful_restart.then_some(GRACEFUL_RESTART_TIME),
            },
            transport: Transport {
                peer: self.address,
                source: self.source,
                // A directly connected eBGP peer is one hop away; anything else may be further.
                ttl: if ebgp && !self.multihop { 1 } else { 255 },
                password,
            },
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use herald_plan::NodeState;
    use serde_json::json;

    use super::*;
    use herald_bgp::driver::Password;

    use crate::secrets::PasswordError;

    /// Node `n1` with this InternalIP.
    pub(crate) fn node(internal_ip: Option<&str>) -> NodeView {
        NodeView {
            state: NodeState {
                name: "n1".into(),
                labels: Default::default(),
                excluded: false,
                network_unavailable: false,
            },
            internal_ip: internal_ip.map(|ip| ip.parse().expect("ip")),
            uid: None,
        }
    }

    /// BGPPeer `name` with this spec, translated.
    pub(crate) fn named_peer(name: &str, spec: serde_json::Value) -> Result<Peer, PeerError> {
        let object: BGPPeer = serde_json::from_value(
            json!({"apiVersion": "herald.dev/v1alpha1", "kind": "BGPPeer",
            "metadata": {"name": name}, "spec": spec}),
        )
        .expect("a valid BGPPeer");
        Peer::translate(&object, "herald-system")
    }

    fn peer(spec: serde_json::Value) -> Result<Peer, PeerError> {
        named_peer("tor", spec)
    }

    /// Secret `name` read, without a password in it.
    pub(crate) fn password_missing(name: &str) -> Passwords {
        [(
            name.to_owned(),
            Err(PasswordError::NoKey {
                name: name.into(),
                key: "password",
            }),
        )]
        .into()
    }

    #[test]
    fn every_field_of_a_peer_reaches_the_session() {
        let peer = peer(
            json!({"myASN": 64513, "peerASN": 64512, "peerAddress": "192.0.2.254",
            "sourceAddress": "192.0.2.1", "peerPort": 1179, "holdTime": "30s",
            "keepaliveTime": "5s", "connectTime": "2s", "routerID": "192.0.2.9",
            "ebgpMultiHop": true, "enableGracefulRestart": true,
            "passwordSecret": {"name": "md5"},
            "nodeSelectors": [{"matchLabels": {"rack": "r1"}}]}),
        )
        .expect("usable");
        let planned = peer.planned();
        assert_eq!(planned.family, Family::Ipv4);
        assert_eq!(planned.node_selectors.len(), 1);
        let passwords = [("md5".to_owned(), Ok(Password(b"secret".to_vec())))].into();
        let settings = peer
            .settings(&node(Some("192.0.2.1")), &passwords, &BfdProfiles::new())
            .expect("usable");
        assert_eq!(
            settings.transport.peer,
            "192.0.2.254:1179".parse().expect("address")
        );
        assert_eq!(
            settings.transport.source,
            Some("192.0.2.1".parse().expect("ip"))
        );
        assert_eq!(settings.transport.ttl, 255, "multihop");
        assert_eq!(
            settings.transport.password,
            Some(Password(b"secret".to_vec()))
        );
        let config = settings.config;
        assert_eq!((config.local_asn, config.peer_asn), (64513, 64512));
        assert_eq!(
            config.router_id,
            "192.0.2.9".parse::<Ipv4Addr>().expect("id")
        );
        assert_eq!((config.hold_time, config.keepalive_time), (30, Some(5)));
        assert_eq!(config.connect_retry, Duration::from_secs(2));
        assert_eq!(config.graceful_restart, Some(GRACEFUL_RESTART_TIME));
    }

    #[test]
    fn defaults_follow_the_node_and_rfc_4271() {
        let peer = peer(json!({"myASN": 64513, "peerASN": 64512, "peerAddress": "2001:db8::fe"}))
            .expect("usable");
        let settings = peer
            .settings(
                &node(Some("192.0.2.1")),
                &Passwords::new(),
                &BfdProfiles::new(),
            )
            .expect("usable");
        assert_eq!(settings.transport.peer.port(), 179);
        assert_eq!(settings.transport.ttl, 1, "a directly connected eBGP peer");
        assert_eq!(settings.config.family, Family::Ipv6);
        assert_eq!(
            settings.config.router_id,
            "192.0.2.1".parse::<Ipv4Addr>().expect("id")
        );
        assert_eq!(settings.config.hold_time, 90);
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
        let no_id = peer(json!({"myASN": 64513, "peerASN": 64512, "peerAddress": "2001:db8::fe"}))
            .expect("usable until a node has no IPv4 address");
        let error = no_id
            .settings(
                &node(Some("2001:db8::1")),
                &Passwords::new(),
                &BfdProfiles::new(),
            )
            .expect_err("no IPv4 address for a router ID");
        assert!(
            error.to_string().starts_with("BGPPeer tor: spec.routerID:"),
            "{error}"
        );
        let unreadable = peer(
            json!({"myASN": 64513, "peerASN": 64512, "peerAddress": "192.0.2.254",
            "passwordSecret": {"name": "md5"}}),
        )
        .expect("usable");
        let error = unreadable
            .settings(
                &node(Some("192.0.2.1")),
                &password_missing("md5"),
                &BfdProfiles::new(),
            )
            .expect_err("a Secret without the key");
        assert_eq!(
            error.to_string(),
            "BGPPeer tor: spec.passwordSecret: Secret md5 has no key \"password\""
        );
    }

    fn profile(name: &str, spec: serde_json::Value) -> Arc<BFDProfile> {
        Arc::new(
            serde_json::from_value(json!({"apiVersion": "herald.dev/v1alpha1",
                "kind": "BFDProfile", "metadata": {"name": name}, "spec": spec}))
            .expect("a valid BFDProfile"),
        )
    }

    #[test]
    fn a_bfd_profile_reaches_the_session_and_a_missing_or_echo_profile_is_refused() {
        let (profiles, problems) = translate_profiles(&[
            profile(
                "fast",
                json!({"receiveInterval": 100, "transmitInterval": 50,
                "detectMultiplier": 4, "passiveMode": true, "minimumTtl": 250}),
            ),
            profile("defaults", json!({})),
            profile("echo", json!({"echoMode": true})),
        ]);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].starts_with(
                "BFDProfile echo: spec.echoMode: the echo function is not implemented"
            ),
            "{}",
            problems[0]
        );
        assert_eq!(
            profiles["defaults"].config,
            herald_bfd::Config {
                desired_min_tx: Duration::from_millis(300),
                required_min_rx: Duration::from_millis(300),
                detect_mult: 3,
                passive: false,
            },
            "MetalLB's defaults"
        );
        let peer = peer(
            json!({"myASN": 64513, "peerASN": 64512, "peerAddress": "192.0.2.254",
            "ebgpMultiHop": true, "bfdProfile": "fast"}),
        )
        .expect("usable");
        let n1 = node(Some("192.0.2.1"));
        let bfd = peer
            .settings(&n1, &Passwords::new(), &profiles)
            .expect("usable")
            .bfd
            .expect("BFD");
        assert_eq!(
            bfd.peer.address,
            "192.0.2.254".parse::<IpAddr>().expect("ip")
        );
        assert!(bfd.peer.multihop);
        assert_eq!(bfd.peer.minimum_ttl, 250);
        assert_eq!(bfd.config.desired_min_tx, Duration::from_millis(50));
        assert_eq!(bfd.config.required_min_rx, Duration::from_millis(100));
        assert_eq!(bfd.config.detect_mult, 4);
        assert!(bfd.config.passive);
        let naming_echo = peer_named_profile("echo");
        let error = naming_echo
            .settings(&n1, &Passwords::new(), &profiles)
            .expect_err("the profile is not usable");
        assert_eq!(
            error.to_string(),
            "BGPPeer tor: spec.bfdProfile: BFDProfile echo does not exist or cannot be used"
        );
    }

    fn peer_named_profile(profile: &str) -> Peer {
        peer(
            json!({"myASN": 64513, "peerASN": 64512, "peerAddress": "192.0.2.254",
            "bfdProfile": profile}),
        )
        .expect("usable")
    }
}
