//! This node's BGP sessions: one per BGPPeer that selects the node, each advertising what
//! planning gave it.
//!
//! ```text
//!   BgpPlan (this node: peer -> routes) + Peers (translated BGPPeers) + this Node
//!     │ session settings per peer (Peer::settings: ASNs, router ID, timers, address, TTL)
//!     ▼
//!   Sessions: start new, set routes on unchanged, restart changed, stop removed
//! ```
//!
//! What people are told (each session's BGPSessionStatus, an Event per change of what the node
//! advertises for a Service) is the reporter's job ([`crate::report`]); this module gives it
//! [`Sessions::sessions`].
//!
//! A peer that cannot be used (an address that does not parse, no router ID, a password that
//! cannot be read) is reported once, naming the object and field ([`PeerError`]), and left as
//! it was: a running session keeps running with its last good settings.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::Arc,
};

use herald_bgp::{
    RouteAttributes,
    driver::{self, Handle, Password},
    session::{BandwidthBits, Event, State},
};
use herald_domain::Prefix;
use herald_plan::{BgpPlan, BgpRoute};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use tracing::{info, warn};

use crate::{
    cluster::NodeView,
    metrics::{Metrics, NotificationLabels, PeerLabels},
    peer::{PasswordError, Passwords, Peer, PeerError, Settings},
};

/// The key of the password in a BGPPeer's Secret (`kubernetes.io/basic-auth`).
const PASSWORD_KEY: &str = "password";
/// The link bandwidth per ready local endpoint: 1 Mbit/s, so routers show the endpoint count
/// as megabits.
const BANDWIDTH_PER_ENDPOINT: f32 = 125_000.0;

struct Running {
    settings: Settings,
    handle: Handle,
}

/// The BGP sessions of this node.
pub(crate) struct Sessions {
    metrics: Arc<Metrics>,
    running: BTreeMap<String, Running>,
    /// The last problem reported per peer, so that each is logged once.
    problems: BTreeMap<String, PeerError>,
    /// Password Secrets are read from Herald's namespace only, one `get` each (the speaker
    /// may not list Secrets).
    secrets: Api<Secret>,
    /// Passwords by Secret name, as last read.
    passwords: Passwords,
    /// The last inputs, to apply again when a password changes.
    last: Option<Inputs>,
}

/// What the sessions are made from: this node's plan, the usable peers, the peers that cannot
/// be used (their sessions are left as they are), and the node.
#[derive(Debug, Clone)]
struct Inputs {
    plan: BgpPlan,
    peers: Vec<Peer>,
    unusable: Vec<PeerError>,
    node: NodeView,
}

/// Reads the password of Secret `name`.
async fn read_password(secrets: &Api<Secret>, name: &str) -> Result<Password, PasswordError> {
    let secret = secrets
        .get(name)
        .await
        .map_err(|e| PasswordError::Unreadable {
            namespace: secrets.namespace().unwrap_or_default().to_owned(),
            name: name.to_owned(),
            reason: e.to_string(),
        })?;
    let password = secret
        .data
        .as_ref()
        .and_then(|data| data.get(PASSWORD_KEY))
        .map(|bytes| bytes.0.clone())
        .ok_or_else(|| PasswordError::NoKey {
            name: name.to_owned(),
            key: PASSWORD_KEY,
        })?;
    if password.is_empty() || password.len() > herald_bgp::md5::MAX_PASSWORD {
        return Err(PasswordError::Length {
            name: name.to_owned(),
            max: herald_bgp::md5::MAX_PASSWORD,
        });
    }
    Ok(Password(password))
}

/// The session's routes from the plan's.
fn routes(planned: &BTreeMap<Prefix, BgpRoute>) -> BTreeMap<Prefix, RouteAttributes> {
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

/// Keeps the session metrics from the session's events.
fn metrics_sink(metrics: Arc<Metrics>, peer: String) -> driver::EventSink {
    Arc::new(move |event: &Event| {
        let labels = PeerLabels { peer: peer.clone() };
        match event {
            Event::StateChanged { to, .. } => {
                metrics
                    .bgp_session_up
                    .get_or_create(&labels)
                    .set(i64::from(*to == State::Established));
            }
            Event::UpdatesSent {
                messages,
                advertised,
            } => {
                metrics
                    .bgp_updates_sent
                    .get_or_create(&labels)
                    .inc_by(*messages as u64);
                metrics
                    .bgp_prefixes_advertised
                    .get_or_create(&labels)
                    .set(i64::try_from(*advertised).unwrap_or(i64::MAX));
            }
            Event::NotificationSent(n) | Event::NotificationReceived(n) => {
                let direction = if matches!(event, Event::NotificationSent(_)) {
                    "sent"
                } else {
                    "received"
                };
                metrics
                    .bgp_notifications
                    .get_or_create(&NotificationLabels {
                        peer: peer.clone(),
                        direction,
                        code: n.code_name(),
                    })
                    .inc();
            }
            Event::Negotiated { .. } => {}
        }
    })
}

/// One session as the reporter shows it.
#[derive(Debug, Clone)]
pub(crate) struct SessionReport {
    pub(crate) peer: String,
    pub(crate) address: SocketAddr,
    pub(crate) status: driver::Status,
}

impl Sessions {
    /// No sessions yet; password Secrets are read from Herald's `namespace`.
    pub(crate) fn new(metrics: Arc<Metrics>, client: Client, namespace: &str) -> Sessions {
        Sessions {
            metrics,
            running: BTreeMap::new(),
            problems: BTreeMap::new(),
            secrets: Api::namespaced(client, namespace),
            passwords: BTreeMap::new(),
            last: None,
        }
    }

    /// Reads every password Secret again; applies the last inputs again when one changed.
    pub(crate) async fn refresh_passwords(&mut self) {
        let mut changed = false;
        for name in self.passwords.keys().cloned().collect::<Vec<_>>() {
            let now = read_password(&self.secrets, &name).await;
            if self.passwords.get(&name) != Some(&now) {
                self.passwords.insert(name, now);
                changed = true;
            }
        }
        if changed && let Some(inputs) = self.last.clone() {
            // The same plan: sessions restart with the new passwords, no Service changes.
            self.reconcile(inputs).await;
        }
    }

    /// Every running session, its address and its last status.
    pub(crate) fn sessions(&self) -> Vec<SessionReport> {
        self.running
            .iter()
            .map(|(peer, running)| SessionReport {
                peer: peer.clone(),
                address: running.settings.transport.peer,
                status: running.handle.status.borrow().clone(),
            })
            .collect()
    }

    /// Brings the sessions in line with `plan` when an input changed. `unusable` peers keep
    /// their sessions as they are.
    pub(crate) async fn apply(
        &mut self,
        plan: &BgpPlan,
        peers: &[Peer],
        unusable: &[PeerError],
        node: &NodeView,
    ) {
        // The loop calls this on every input change; most leave this node's BGP as it was,
        // and then nothing is copied.
        let unchanged = self.last.as_ref().is_some_and(|last| {
            last.plan == *plan
                && last.peers == peers
                && last.unusable == unusable
                && last.node == *node
        });
        if unchanged {
            return;
        }
        let inputs = Inputs {
            plan: plan.clone(),
            peers: peers.to_vec(),
            unusable: unusable.to_vec(),
            node: node.clone(),
        };
        self.reconcile(inputs).await;
    }

    /// Brings the sessions in line with the inputs, whether or not they changed.
    async fn reconcile(&mut self, inputs: Inputs) {
        let Inputs {
            plan,
            peers,
            unusable,
            node,
        } = &inputs;
        // Secrets not read yet are read now; `refresh_passwords` keeps them current.
        let wanted_secrets: Vec<String> = peers
            .iter()
            .filter(|p| plan.contains_key(&p.name))
            .filter_map(|p| p.password_secret.clone())
            .collect();
        self.passwords
            .retain(|name, _| wanted_secrets.contains(name));
        for name in wanted_secrets {
            if !self.passwords.contains_key(&name) {
                let password = read_password(&self.secrets, &name).await;
                self.passwords.insert(name, password);
            }
        }
        let mut problems = BTreeMap::new();
        for (name, planned) in plan {
            let Some(peer) = peers.iter().find(|p| p.name == *name) else {
                continue;
            };
            let wanted = match peer.settings(node, &self.passwords) {
                Ok(settings) => settings,
                Err(problem) => {
                    if self.problems.get(name) != Some(&problem) {
                        warn!(%problem, "a BGPPeer cannot be used; its session is left as it was");
                    }
                    problems.insert(name.clone(), problem);
                    if let Some(running) = self.running.get(name) {
                        running.handle.set_routes(routes(planned));
                    }
                    continue;
                }
            };
            let routes = routes(planned);
            match self.running.get(name) {
                Some(running) if running.settings == wanted => running.handle.set_routes(routes),
                _ => {
                    if let Some(old) = self.running.remove(name) {
                        info!(peer = %name, "BGPPeer changed; starting its session over");
                        old.handle.stop(false).await;
                    }
                    info!(peer = %name, address = %wanted.transport.peer, "starting BGP session");
                    if let Some(profile) = &peer.bfd_profile {
                        warn!(peer = %name, %profile, "BFD is not implemented yet: BGPPeer spec.bfdProfile is ignored; failures are detected by the hold time");
                    }
                    let handle = driver::spawn(
                        name.clone(),
                        wanted.config.clone(),
                        wanted.transport.clone(),
                        routes,
                        metrics_sink(self.metrics.clone(), name.clone()),
                    );
                    self.running.insert(
                        name.clone(),
                        Running {
                            settings: wanted,
                            handle,
                        },
                    );
                }
            }
        }
        let unusable: BTreeSet<&str> = unusable.iter().map(PeerError::peer).collect();
        self.problems = problems;
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|name| !plan.contains_key(*name) && !unusable.contains(name.as_str()))
            .cloned()
            .collect();
        for name in gone {
            if let Some(old) = self.running.remove(&name) {
                info!(peer = %name, "BGPPeer no longer applies to this node; stopping its session");
                old.handle.stop(false).await;
                self.forget(&name);
            }
        }
        self.last = Some(inputs);
    }

    fn forget(&self, peer: &str) {
        let labels = PeerLabels {
            peer: peer.to_owned(),
        };
        self.metrics.bgp_session_up.remove(&labels);
        self.metrics.bgp_prefixes_advertised.remove(&labels);
    }

    /// Ends every session as the speaker stops: peers with graceful restart keep the routes
    /// (the node keeps forwarding while its speaker restarts); the others are told to
    /// withdraw them at once.
    pub(crate) async fn stop_all(&mut self) {
        for (name, running) in std::mem::take(&mut self.running) {
            let graceful = running.settings.config.graceful_restart.is_some();
            running.handle.stop(graceful).await;
            info!(peer = %name, graceful, "BGP session stopped");
        }
    }
}
