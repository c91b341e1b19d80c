//! A translated BGPPeer ([`herald_config::Peer`]) made into the settings of its session on
//! this node: the default router ID comes from the node, the TCP MD5 password from its Secret
//! (read before, [`crate::secrets`]), the BFD timers from the BFDProfile it names.
//!
//! ```text
//!   herald_config::Peer ─┐
//!   this node ───────────┼─► settings ──► Settings { BGP config, transport, BFD }
//!   passwords, profiles ─┘        └─────► PeerError "BGPPeer tor: spec.routerID: ..."
//! ```

use std::net::IpAddr;

use herald_bgp::{Config, driver::Transport};
use herald_config::{BfdProfiles, Peer, PeerError};
use herald_domain::Family;

use crate::{cluster::NodeView, secrets::Passwords};

/// How long a peer keeps this node's routes while its speaker restarts (RFC 4724).
pub(crate) const GRACEFUL_RESTART_TIME: u16 = 120;

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

/// The session settings on `node`, with the password from `passwords` (read before) and
/// the BFDProfile from `profiles`.
pub(crate) fn settings(
    peer: &Peer,
    node: &NodeView,
    passwords: &Passwords,
    profiles: &BfdProfiles,
) -> Result<Settings, PeerError> {
    let error = |field: &'static str, problem: String| PeerError::Field {
        peer: peer.name.clone(),
        field,
        problem,
    };
    let router_id = match (peer.router_id, node.internal_ip) {
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
    let password = match &peer.password_secret {
        None => None,
        Some(secret) => match passwords.get(secret) {
            Some(Ok(password)) => Some(password.clone()),
            Some(Err(e)) => return Err(error("spec.passwordSecret", e.to_string())),
            None => return Err(error("spec.passwordSecret", "not read yet".into())),
        },
    };
    let bfd = match &peer.bfd_profile {
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
                    address: peer.address.ip(),
                    source: peer.source,
                    multihop: peer.multihop,
                    minimum_ttl: profile.minimum_ttl,
                },
                config: profile.config,
            })
        }
    };
    let ebgp = peer.local_asn != peer.peer_asn;
    Ok(Settings {
        bfd,
        config: Config {
            local_asn: peer.local_asn,
            peer_asn: peer.peer_asn,
            router_id,
            hold_time: peer.hold_time,
            keepalive_time: peer.keepalive_time,
            connect_retry: peer.connect_retry,
            family: Family::of(peer.address.ip()),
            graceful_restart: peer.graceful_restart.then_some(GRACEFUL_RESTART_TIME),
        },
        transport: Transport {
            peer: peer.address,
            source: peer.source,
            // A directly connected eBGP peer is one hop away; anything else may be further.
            ttl: if ebgp && !peer.multihop { 1 } else { 255 },
            password,
        },
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::{
        net::{IpAddr, Ipv4Addr},
        sync::Arc,
        time::Duration,
    };

    use herald_api::{BFDProfile, BGPPeer};
    use herald_bgp::driver::Password;
    use herald_config::translate_profiles;
    use herald_plan::NodeState;
    use herald_tests::herald::object;
    use serde_json::json;

    use super::*;

    use crate::secrets::PasswordError;

    /// Node `n1` with this InternalIP.
    pub(crate) fn node(internal_ip: Option<&str>) -> NodeView {
        NodeView {
            state: NodeState {
                name: "n1".into(),
                labels: Default::default(),
                withheld: None,
            },
            internal_ip: internal_ip.map(|ip| ip.parse().expect("ip")),
            uid: None,
        }
    }

    /// BGPPeer `name` with this spec, translated.
    pub(crate) fn named_peer(name: &str, spec: serde_json::Value) -> Result<Peer, PeerError> {
        Peer::translate(&object::<BGPPeer>("BGPPeer", name, spec), "herald-system")
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
        let settings = settings(
            &peer,
            &node(Some("192.0.2.1")),
            &passwords,
            &BfdProfiles::new(),
        )
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
        let settings = settings(
            &peer,
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
    fn a_peer_unusable_on_this_node_is_refused_with_the_field_named() {
        let no_id = peer(json!({"myASN": 64513, "peerASN": 64512, "peerAddress": "2001:db8::fe"}))
            .expect("usable until a node has no IPv4 address");
        let error = settings(
            &no_id,
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
        let error = settings(
            &unreadable,
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
        Arc::new(object("BFDProfile", name, spec))
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
        assert_eq!(problems.len(), 1, "the echo profile");
        let peer = peer(
            json!({"myASN": 64513, "peerASN": 64512, "peerAddress": "192.0.2.254",
            "ebgpMultiHop": true, "bfdProfile": "fast"}),
        )
        .expect("usable");
        let n1 = node(Some("192.0.2.1"));
        let bfd = settings(&peer, &n1, &Passwords::new(), &profiles)
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
        let error = settings(&naming_echo, &n1, &Passwords::new(), &profiles)
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
