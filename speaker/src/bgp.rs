//! This node's BGP sessions: one per BGPPeer that selects the node, each advertising what
//! planning gave it.
//!
//! ```text
//!   BgpPlan (this node: peer -> routes) + Peers (translated BGPPeers) + this Node + passwords
//!     │ bgp_share (pure): per peer, its session settings (Peer::settings) and routes
//!     ▼
//!   BgpShare ──► Sessions::apply: start new, set routes on unchanged, restart changed,
//!                stop removed ──► Vec<Told> (for the reporter)
//! ```
//!
//! A peer that cannot be used (an address that does not parse, no router ID, a password that
//! cannot be read, a BFDProfile that does not exist) is left as it was: a running session keeps
//! running with its last good settings. Why it cannot be used ([`PeerError`], naming the object
//! and field) is the reporter's to tell, once.
//!
//! A BGPPeer with a BFDProfile gets a BFD session beside its BGP session (one
//! [`herald_bfd::driver::Endpoint`] for all of them). Once BFD has been Up, BFD Down stops the
//! BGP session at once and BFD Up starts it again ([`Sessions::follow_bfd`], called when any BFD
//! session changes state); new BFD timers are renegotiated without touching BGP.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::Arc,
};

use herald_bfd::driver::{Endpoint, SessionHandle};
use herald_bgp::{
    RouteAttributes, State,
    driver::{self, Handle},
    session::BandwidthBits,
};
use herald_config::{BfdProfiles, Peer, PeerError};
use herald_domain::Prefix;
use herald_plan::{BgpPlan, BgpRoute};

use crate::{
    cluster::NodeView,
    metrics::Metrics,
    peer::{BfdSettings, Settings, settings},
    report::Told,
    secrets::Passwords,
};

/// The link bandwidth per ready local endpoint: 1 Mbit/s, so routers show the endpoint count
/// as megabits.
const BANDWIDTH_PER_ENDPOINT: f32 = 125_000.0;

/// The routes of one session, by prefix.
pub(crate) type Routes = BTreeMap<Prefix, RouteAttributes>;

/// One session as this node should run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WantedSession {
    pub(crate) settings: Settings,
    pub(crate) routes: Routes,
}

/// This node's BGP as it should be: what [`Sessions::apply`] brings the sessions to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BgpShare {
    /// The sessions to run, by BGPPeer name.
    pub(crate) sessions: BTreeMap<String, WantedSession>,
    /// BGPPeers that cannot be used now: a running session keeps its last good settings and
    /// takes these routes (`None`: the BGPPeer itself does not translate, so it was not
    /// planned and keeps its routes too).
    pub(crate) held: BTreeMap<String, Option<Routes>>,
}

/// What this node's share is made from: its plan, the usable peers, the peers that cannot be
/// used, the node, and which reading of the passwords ([`crate::secrets::Reading::version`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BgpInputs {
    pub(crate) plan: BgpPlan,
    pub(crate) peers: Vec<Peer>,
    pub(crate) unusable: Vec<PeerError>,
    pub(crate) node: NodeView,
    pub(crate) passwords: u64,
    pub(crate) profiles: BfdProfiles,
}

/// The Secrets whose passwords the sessions of `plan` need.
pub(crate) fn wanted_secrets(plan: &BgpPlan, peers: &[Peer]) -> Vec<String> {
    peers
        .iter()
        .filter(|p| plan.contains_key(&p.name))
        .filter_map(|p| p.password_secret.clone())
        .collect()
}

/// What this node's sessions should be, from `inputs` and the passwords read; with why
/// planned peers cannot be used.
pub(crate) fn bgp_share(inputs: &BgpInputs, passwords: &Passwords) -> (BgpShare, Vec<PeerError>) {
    let BgpInputs {
        plan,
        peers,
        unusable,
        node,
        profiles,
        ..
    } = inputs;
    let mut share = BgpShare::default();
    let mut problems = Vec::new();
    for (name, planned) in plan {
        let Some(peer) = peers.iter().find(|p| p.name == *name) else {
            continue;
        };
        let routes = routes(planned);
        match settings(peer, node, passwords, profiles) {
            Ok(settings) => {
                share
                    .sessions
                    .insert(name.clone(), WantedSession { settings, routes });
            }
            Err(problem) => {
                problems.push(problem);
                share.held.insert(name.clone(), Some(routes));
            }
        }
    }
    for problem in unusable {
        share.held.entry(problem.peer().to_owned()).or_insert(None);
    }
    (share, problems)
}

/// The session's routes from the plan's.
fn routes(planned: &BTreeMap<Prefix, BgpRoute>) -> Routes {
    planned
        .iter()
        .map(|(&prefix, route)| {
            (
                prefix,
                RouteAttributes {
                    local_pref: route.local_pref,
                    communities: route.communities.iter().copied().collect(),
                    large_communities: route.large_communities.iter().copied().collect(),
                    link_bandwidth: route
                        .weight
                        .map(|w| BandwidthBits::new(w as f32 * BANDWIDTH_PER_ENDPOINT)),
                },
            )
        })
        .collect()
}

struct Running {
    settings: Settings,
    routes: Routes,
    /// `None` while BFD holds the session down.
    bgp: Option<Handle>,
    bfd: Option<Bfd>,
}

/// The BFD session beside a BGP session.
struct Bfd {
    handle: SessionHandle,
    /// BFD has been Up: from then on, BFD Down takes the BGP session down (before, BGP runs
    /// on its own, as with a router that has no BFD configured yet).
    was_up: bool,
}

/// One session as the reporter shows it.
#[derive(Debug, Clone)]
pub(crate) struct SessionReport {
    pub(crate) peer: String,
    pub(crate) address: SocketAddr,
    pub(crate) status: driver::Status,
    /// The BFD session beside it, if any.
    pub(crate) bfd: Option<herald_bfd::driver::Status>,
}

/// The BGP sessions of this node, and the BFD sessions beside them.
pub(crate) struct Sessions {
    metrics: Arc<Metrics>,
    running: BTreeMap<String, Running>,
    endpoint: Endpoint,
}

impl Sessions {
    /// No sessions yet (BFD's sockets open with the first session that asks for BFD).
    pub(crate) fn new(metrics: Arc<Metrics>) -> Sessions {
        let endpoint = Endpoint::counting_into(metrics.bfd.clone());
        Sessions {
            metrics,
            running: BTreeMap::new(),
            endpoint,
        }
    }

    /// Changes whenever a BFD session changes state: then [`Sessions::follow_bfd`].
    pub(crate) fn bfd_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.endpoint.changes()
    }

    /// Every running session, its address and its last status.
    pub(crate) fn sessions(&self) -> Vec<SessionReport> {
        self.running
            .iter()
            .map(|(peer, running)| SessionReport {
                peer: peer.clone(),
                address: running.settings.transport.peer,
                bfd: running
                    .bfd
                    .as_ref()
                    .map(|bfd| bfd.handle.status.borrow().clone()),
                status: match &running.bgp {
                    Some(handle) => handle.status.borrow().clone(),
                    None => driver::Status {
                        state: State::Idle,
                        advertised: 0,
                        last_notification: None,
                        last_error: running.bfd.as_ref().map(|bfd| {
                            let status = bfd.handle.status.borrow();
                            format!(
                                "BFD {}: {}",
                                status.state.name(),
                                status.local_diagnostic.name()
                            )
                        }),
                    },
                },
            })
            .collect()
    }

    /// Brings the sessions in line with `share`; says which started and stopped.
    pub(crate) async fn apply(&mut self, share: &BgpShare) -> Vec<Told> {
        let mut told = Vec::new();
        for (name, wanted) in &share.sessions {
            if let Some(running) = self.running.get_mut(name)
                && running.settings.config == wanted.settings.config
                && running.settings.transport == wanted.settings.transport
            {
                running.routes.clone_from(&wanted.routes);
                if let Some(bgp) = &running.bgp {
                    bgp.set_routes(wanted.routes.clone());
                }
                if running.settings.bfd != wanted.settings.bfd {
                    let bfd = wanted.settings.bfd;
                    Self::change_bfd(&self.endpoint, name, running, bfd, &mut told).await;
                }
                running.settings = wanted.settings.clone();
                continue;
            }
            let restarted = match self.running.remove(name) {
                Some(old) => {
                    if let Some(bgp) = old.bgp {
                        bgp.stop(false).await;
                    }
                    true
                }
                None => false,
            };
            let bfd = match wanted.settings.bfd {
                Some(settings) => Self::start_bfd(&self.endpoint, name, settings, &mut told).await,
                None => None,
            };
            let bgp = self.spawn_bgp(name, &wanted.settings, wanted.routes.clone());
            told.push(Told::SessionStarted {
                peer: name.clone(),
                address: wanted.settings.transport.peer,
                restarted,
            });
            self.running.insert(
                name.clone(),
                Running {
                    settings: wanted.settings.clone(),
                    routes: wanted.routes.clone(),
                    bgp: Some(bgp),
                    bfd,
                },
            );
        }
        for (name, routes) in &share.held {
            if let (Some(running), Some(routes)) = (self.running.get_mut(name), routes) {
                running.routes.clone_from(routes);
                if let Some(bgp) = &running.bgp {
                    bgp.set_routes(routes.clone());
                }
            }
        }
        let kept: BTreeSet<&String> = share.sessions.keys().chain(share.held.keys()).collect();
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|name| !kept.contains(name))
            .cloned()
            .collect();
        for name in gone {
            if let Some(old) = self.running.remove(&name) {
                if let Some(bgp) = old.bgp {
                    bgp.stop(false).await;
                }
                self.metrics.forget_session(&name);
                told.push(Told::SessionStopped {
                    peer: name,
                    graceful: false,
                });
            }
        }
        told
    }

    /// BFD drives BGP: a session whose BFD went down after being Up is taken down at once
    /// (the routes withdrawn on this side; the router drops them through its own BFD), and
    /// started again when BFD is Up.
    pub(crate) async fn follow_bfd(&mut self) -> Vec<Told> {
        for (name, running) in &self.running {
            if let Some(bfd) = &running.bfd {
                let up = bfd.handle.status.borrow().state == herald_bfd::State::Up;
                self.metrics.set_bfd_up(name, up);
            }
        }
        let mut told = Vec::new();
        let names: Vec<String> = self.running.keys().cloned().collect();
        for name in names {
            let Some(running) = self.running.get_mut(&name) else {
                continue;
            };
            let Some(bfd) = &mut running.bfd else {
                continue;
            };
            let (state, diagnostic, remote) = {
                let status = bfd.handle.status.borrow();
                (status.state, status.local_diagnostic, status.remote_state)
            };
            if state == herald_bfd::State::Up {
                bfd.was_up = true;
                if running.bgp.is_none() {
                    let (settings, routes) = (running.settings.clone(), running.routes.clone());
                    let bgp = self.spawn_bgp(&name, &settings, routes);
                    if let Some(running) = self.running.get_mut(&name) {
                        running.bgp = Some(bgp);
                    }
                    told.push(Told::BfdUp { peer: name });
                }
            } else if bfd.was_up
                // A router that takes BFD down on purpose (AdminDown) is not a failed path:
                // BGP stays (RFC 5882 §3.2).
                && remote != herald_bfd::State::AdminDown
                && let Some(bgp) = running.bgp.take()
            {
                bgp.stop(false).await;
                self.metrics.forget_session(&name);
                told.push(Told::BfdDown {
                    peer: name,
                    state: state.name(),
                    diagnostic: diagnostic.name(),
                });
            }
        }
        told
    }

    fn spawn_bgp(&self, name: &str, settings: &Settings, routes: Routes) -> Handle {
        driver::spawn(
            name.to_owned(),
            settings.config.clone(),
            settings.transport.clone(),
            routes,
            self.metrics.session_events(name),
        )
    }

    async fn start_bfd(
        endpoint: &Endpoint,
        name: &str,
        settings: BfdSettings,
        told: &mut Vec<Told>,
    ) -> Option<Bfd> {
        match endpoint.add(settings.peer, settings.config).await {
            Ok(handle) => Some(Bfd {
                handle,
                was_up: false,
            }),
            Err(e) => {
                told.push(Told::BfdUnusable {
                    peer: name.to_owned(),
                    error: e.to_string(),
                });
                None
            }
        }
    }

    /// A BGPPeer's BFD changed: new timers are renegotiated by the running BFD session (no
    /// flap); another address or role is a new BFD session; none ends it.
    async fn change_bfd(
        endpoint: &Endpoint,
        name: &str,
        running: &mut Running,
        wanted: Option<BfdSettings>,
        told: &mut Vec<Told>,
    ) {
        match (&running.bfd, running.settings.bfd, wanted) {
            (Some(bfd), Some(before), Some(after)) if before.peer == after.peer => {
                bfd.handle.configure(after.config);
            }
            (_, _, Some(after)) => {
                running.bfd = Self::start_bfd(endpoint, name, after, told).await;
            }
            (_, _, None) => running.bfd = None,
        }
    }

    /// Ends every session as the speaker stops: peers with graceful restart keep the routes
    /// (the node keeps forwarding while its speaker restarts); the others are told to
    /// withdraw them at once. BFD sessions end AdminDown, which routers do not take for a
    /// failure (RFC 5882 §3.2).
    pub(crate) async fn stop(&mut self) -> Vec<Told> {
        let mut told = Vec::new();
        for (name, running) in std::mem::take(&mut self.running) {
            let graceful = running.settings.config.graceful_restart.is_some();
            if let Some(bgp) = running.bgp {
                bgp.stop(graceful).await;
            }
            told.push(Told::SessionStopped {
                peer: name,
                graceful,
            });
        }
        told
    }
}

#[cfg(test)]
mod tests {
    use herald_bgp::driver::Password;
    use serde_json::json;

    use super::*;
    use crate::peer::tests::{named_peer, node, password_missing};

    fn peer(name: &str, spec: serde_json::Value) -> Peer {
        named_peer(name, spec).expect("usable")
    }

    #[test]
    fn each_planned_peer_gets_its_settings_and_weighted_routes_or_is_held_with_its_problem() {
        let peers = [
            peer(
                "tor",
                json!({"myASN": 64513, "peerASN": 64512, "peerAddress": "192.0.2.254"}),
            ),
            peer(
                "signed",
                json!({"myASN": 64513, "peerASN": 64512, "peerAddress": "192.0.2.253",
                "passwordSecret": {"name": "md5"}}),
            ),
            peer(
                "elsewhere",
                json!({"myASN": 64513, "peerASN": 64512, "peerAddress": "192.0.2.252"}),
            ),
        ];
        let prefix = Prefix::host("203.0.113.10".parse().expect("ip"));
        let route = BgpRoute {
            local_pref: Some(200),
            weight: Some(3),
            ..BgpRoute::default()
        };
        let plan: BgpPlan = [
            ("tor".to_owned(), [(prefix, route.clone())].into()),
            ("signed".to_owned(), [(prefix, route)].into()),
        ]
        .into();
        assert_eq!(wanted_secrets(&plan, &peers), ["md5"]);
        let unusable = [PeerError::Field {
            peer: "broken".into(),
            field: "spec.peerAddress",
            problem: "invalid IP address syntax".into(),
        }];
        let mut inputs = BgpInputs {
            plan,
            peers: peers.to_vec(),
            unusable: unusable.to_vec(),
            node: node(Some("192.0.2.1")),
            passwords: 0,
            profiles: BfdProfiles::new(),
        };
        let (share, problems) = bgp_share(&inputs, &password_missing("md5"));
        let tor = &share.sessions["tor"];
        assert_eq!(
            tor.settings.transport.peer,
            "192.0.2.254:179".parse().expect("address")
        );
        let attributes = &tor.routes[&prefix];
        assert_eq!(attributes.local_pref, Some(200));
        assert_eq!(
            attributes.link_bandwidth,
            Some(BandwidthBits::new(3.0 * BANDWIDTH_PER_ENDPOINT)),
            "three ready local endpoints weigh three megabits"
        );
        assert_eq!(share.sessions.len(), 1, "{:?}", share.sessions.keys());
        assert_eq!(share.held["signed"], Some(tor.routes.clone()));
        assert_eq!(share.held["broken"], None);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0]
                .to_string()
                .starts_with("BGPPeer signed: spec.passwordSecret:"),
            "{}",
            problems[0]
        );
        let read = [("md5".to_owned(), Ok(Password(b"secret".to_vec())))].into();
        inputs.unusable.clear();
        let (share, problems) = bgp_share(&inputs, &read);
        assert!(problems.is_empty());
        assert_eq!(
            share.sessions.keys().collect::<Vec<_>>(),
            ["signed", "tor"],
            "once the password is read the session runs"
        );
    }
}
