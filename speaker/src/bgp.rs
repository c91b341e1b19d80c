//! This node's BGP sessions: one per BGPPeer that selects the node, each advertising what
//! planning gave it.
//!
//! ```text
//!   BgpPlan (this node: peer -> routes) + BGPPeer objects + this Node
//!     │ session settings per peer (ASNs, router ID, timers, address, TTL)
//!     ▼
//!   Sessions: start new, set routes on unchanged, restart changed, stop removed
//! ```
//!
//! Each session's state is written as a BGPSessionStatus in Herald's namespace
//! (`kubectl get bgpsessionstatuses`), and each change of what the node advertises for a
//! Service is told as an Event on the Service.
//!
//! A peer whose settings cannot be used (an address that does not parse, no router ID) is
//! reported once, naming the object and field, and left as it was: a running session keeps
//! running with its last good settings.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use herald_api::{
    BGPPeer, BGPSessionStatus, BGPSessionStatusSpec,
    status::{NODE_LABEL, PEER_LABEL, record_name},
};
use herald_bgp::{
    Config, RouteAttributes,
    driver::{self, Handle, Password, Transport},
    session::{BandwidthBits, Event, State},
};
use herald_domain::{Family, Prefix, ServiceKey};
use herald_plan::{BgpPlan, BgpRoute};
use herald_shell::records::{self, Desired};
use k8s_openapi::{
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::{Api, Client, ResourceExt};
use tracing::{info, warn};

use crate::{
    FIELD_MANAGER,
    cluster::NodeView,
    metrics::{Metrics, NotificationLabels, PeerLabels},
};

/// The BGP port.
const BGP_PORT: u16 = 179;
/// Defaults of RFC 4271's suggested values, as most routers use them.
const DEFAULT_HOLD_TIME: u16 = 90;
const DEFAULT_CONNECT_RETRY: Duration = Duration::from_secs(1);
/// How long a peer keeps this node's routes while its speaker restarts (RFC 4724).
const GRACEFUL_RESTART_TIME: u16 = 120;
/// The key of the password in a BGPPeer's Secret (`kubernetes.io/basic-auth`).
const PASSWORD_KEY: &str = "password";
/// The link bandwidth per ready local endpoint: 1 Mbit/s, so routers show the endpoint count
/// as megabits.
const BANDWIDTH_PER_ENDPOINT: f32 = 125_000.0;

/// Everything that fixes a session; when it changes, the session starts over.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Settings {
    config: Config,
    transport: Transport,
}

struct Running {
    settings: Settings,
    handle: Handle,
}

/// The BGP sessions of this node.
pub(crate) struct Sessions {
    metrics: Arc<Metrics>,
    running: BTreeMap<String, Running>,
    /// The last problem reported per peer, so that each is logged once.
    problems: BTreeMap<String, String>,
    /// Password Secrets are read from Herald's namespace only, one `get` each (the speaker
    /// may not list Secrets).
    secrets: Api<Secret>,
    namespace: String,
    /// Passwords by Secret name, as last read.
    passwords: BTreeMap<String, Result<Password, String>>,
    /// The last inputs, to apply again when a password changes.
    last: Option<(BgpPlan, Vec<Arc<BGPPeer>>, NodeView)>,
    /// The node's session records, written by a task of their own.
    records: records::Writer<BGPSessionStatus>,
}

/// A change in what this node advertises for a Service, for its Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) service: ServiceKey,
    pub(crate) message: String,
}

/// What this node advertises per Service: prefix -> peers.
fn advertised_by_service(plan: &BgpPlan) -> BTreeMap<ServiceKey, BTreeMap<String, Vec<&str>>> {
    let mut out: BTreeMap<ServiceKey, BTreeMap<String, Vec<&str>>> = BTreeMap::new();
    for (peer, routes) in plan {
        for (prefix, route) in routes {
            for service in &route.services {
                out.entry(service.clone())
                    .or_default()
                    .entry(prefix.to_string())
                    .or_default()
                    .push(peer);
            }
        }
    }
    out
}

/// The Events of going from `before` to `after` on `node`.
fn changes(node: &str, before: &BgpPlan, after: &BgpPlan) -> Vec<Change> {
    // Most inputs (other Services' endpoints, layer-2 changes) leave this node's routes as they
    // were: no need to look further.
    if before == after {
        return Vec::new();
    }
    let (before, after) = (advertised_by_service(before), advertised_by_service(after));
    let mut out = Vec::new();
    for service in before
        .keys()
        .chain(after.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let (was, now) = (before.get(service), after.get(service));
        if was == now {
            continue;
        }
        let message = match now {
            Some(now) => {
                let routes: Vec<String> = now
                    .iter()
                    .map(|(prefix, peers)| format!("{prefix} to {}", peers.join(", ")))
                    .collect();
                format!("node {node} advertises {} (BGP)", routes.join("; "))
            }
            None => format!("node {node} withdrew its BGP routes"),
        };
        out.push(Change {
            service: service.clone(),
            message,
        });
    }
    out
}

/// Reads the password of Secret `name`.
async fn read_password(secrets: &Api<Secret>, name: &str) -> Result<Password, String> {
    let secret = secrets.get(name).await.map_err(|e| {
        format!(
            "reading Secret {}/{name}: {e}",
            secrets.namespace().unwrap_or_default()
        )
    })?;
    let password = secret
        .data
        .as_ref()
        .and_then(|data| data.get(PASSWORD_KEY))
        .map(|bytes| bytes.0.clone())
        .ok_or_else(|| format!("Secret {name} has no key {PASSWORD_KEY:?}"))?;
    if password.is_empty() || password.len() > herald_bgp::md5::MAX_PASSWORD {
        return Err(format!(
            "the password in Secret {name} must have 1 to {} octets",
            herald_bgp::md5::MAX_PASSWORD
        ));
    }
    Ok(Password(password))
}

/// The session settings for `peer` on `node`; passwords come from `passwords` (read before).
fn settings(
    peer: &BGPPeer,
    node: &NodeView,
    namespace: &str,
    passwords: &BTreeMap<String, Result<Password, String>>,
) -> Result<Settings, String> {
    let object = format!("BGPPeer {}", peer.name_any());
    let spec = &peer.spec;
    let field = |name: &str, e: &dyn std::fmt::Display| format!("{object}: {name}: {e}");
    let address = spec
        .peer_address
        .parse()
        .map_err(|e| field("spec.peerAddress", &e))?;
    let source = spec
        .source_address
        .as_ref()
        .map(|s| s.parse())
        .transpose()
        .map_err(|e| field("spec.sourceAddress", &e))?;
    let router_id = match &spec.router_id {
        Some(id) => id.parse().map_err(|e| field("spec.routerID", &e))?,
        None => match node.internal_ip {
            Some(IpAddr::V4(v4)) => v4,
            _ => {
                return Err(format!(
                    "{object}: spec.routerID: must be set, because node {} has no IPv4 InternalIP to use",
                    node.state.name
                ));
            }
        },
    };
    let seconds = |value: &Option<herald_api::values::Duration>, name: &str| {
        value
            .as_ref()
            .map(|d| d.parse().map_err(|e| field(name, &e)))
            .transpose()
    };
    let hold_time = seconds(&spec.hold_time, "spec.holdTime")?.map_or(DEFAULT_HOLD_TIME, |d| {
        u16::try_from(d.as_secs()).unwrap_or(u16::MAX)
    });
    let keepalive_time = seconds(&spec.keepalive_time, "spec.keepaliveTime")?
        .map(|d| u16::try_from(d.as_secs()).unwrap_or(u16::MAX));
    let connect_retry =
        seconds(&spec.connect_time, "spec.connectTime")?.unwrap_or(DEFAULT_CONNECT_RETRY);
    let port = spec
        .peer_port
        .map_or(Ok(BGP_PORT), u16::try_from)
        .map_err(|e| field("spec.peerPort", &e))?;
    let password = match &spec.password_secret {
        None => None,
        Some(secret)
            if secret
                .namespace
                .as_deref()
                .is_some_and(|ns| ns != namespace) =>
        {
            return Err(field(
                "spec.passwordSecret.namespace",
                &format!("must be Herald's namespace {namespace}, where speakers may read it"),
            ));
        }
        Some(secret) => match passwords.get(&secret.name) {
            Some(Ok(password)) => Some(password.clone()),
            Some(Err(e)) => return Err(field("spec.passwordSecret", e)),
            None => return Err(field("spec.passwordSecret", &"not read yet")),
        },
    };
    let ebgp = spec.my_asn.0 != spec.peer_asn.0;
    Ok(Settings {
        config: Config {
            local_asn: spec.my_asn.0,
            peer_asn: spec.peer_asn.0,
            router_id,
            hold_time,
            keepalive_time,
            connect_retry,
            family: Family::of(address),
            graceful_restart: spec
                .enable_graceful_restart
                .then_some(GRACEFUL_RESTART_TIME),
        },
        transport: Transport {
            peer: SocketAddr::new(address, port),
            source,
            // A directly connected eBGP peer is one hop away; anything else may be further.
            ttl: if ebgp && !spec.ebgp_multi_hop { 1 } else { 255 },
            password,
        },
    })
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

impl Sessions {
    pub(crate) fn new(
        metrics: Arc<Metrics>,
        client: Client,
        namespace: &str,
        node: &str,
    ) -> Sessions {
        let records = records::spawn(
            client.clone(),
            Api::namespaced(client.clone(), namespace),
            format!("{NODE_LABEL}={node}"),
            FIELD_MANAGER,
        );
        Sessions {
            records,
            metrics,
            running: BTreeMap::new(),
            problems: BTreeMap::new(),
            secrets: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
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
        if changed && let Some((plan, peers, node)) = self.last.clone() {
            // The same plan: sessions restart with the new passwords, no Service changes.
            self.reconcile(&plan, &peers, &node).await;
        }
    }

    /// Writes the state of every session as this node's BGPSessionStatus records (the
    /// writer writes only what changed).
    pub(crate) fn report(&self) {
        let Some((_, _, node)) = &self.last else {
            return;
        };
        let desired: Desired<BGPSessionStatus> = self
            .running
            .iter()
            .map(|(peer, running)| {
                let status = running.handle.status.borrow();
                let spec = BGPSessionStatusSpec {
                    node: node.state.name.clone(),
                    peer: peer.clone(),
                    peer_address: running.settings.transport.peer.to_string(),
                    state: status.state.name().to_owned(),
                    prefixes_advertised: i64::try_from(status.advertised).unwrap_or(i64::MAX),
                    last_error: if status.state == State::Established {
                        None
                    } else {
                        status.last_error.clone()
                    },
                };
                let record = self.record(node, spec);
                (records::key(&record), record)
            })
            .collect();
        self.records.set(desired);
    }

    fn record(&self, node: &NodeView, spec: BGPSessionStatusSpec) -> BGPSessionStatus {
        BGPSessionStatus {
            metadata: ObjectMeta {
                name: Some(record_name(&spec.peer, &spec.node)),
                namespace: Some(self.namespace.clone()),
                labels: Some(
                    [
                        (NODE_LABEL.to_owned(), spec.node.clone()),
                        (PEER_LABEL.to_owned(), spec.peer.clone()),
                    ]
                    .into(),
                ),
                // The record goes with its Node.
                owner_references: node.uid.as_ref().map(|uid| {
                    vec![OwnerReference {
                        api_version: "v1".into(),
                        kind: "Node".into(),
                        name: spec.node.clone(),
                        uid: uid.clone(),
                        ..OwnerReference::default()
                    }]
                }),
                ..ObjectMeta::default()
            },
            spec,
        }
    }

    /// Brings the sessions in line with `plan` when an input changed; returns the changes in
    /// what this node advertises per Service.
    pub(crate) async fn apply(
        &mut self,
        plan: &BgpPlan,
        peers: &[Arc<BGPPeer>],
        node: &NodeView,
    ) -> Vec<Change> {
        // The loop calls this on every input change; most leave this node's BGP as it was.
        let versions = |peers: &[Arc<BGPPeer>]| -> Vec<(String, Option<String>)> {
            peers
                .iter()
                .map(|p| (p.name_any(), p.resource_version()))
                .collect()
        };
        let unchanged = self
            .last
            .as_ref()
            .is_some_and(|(last_plan, last_peers, last_node)| {
                last_plan == plan && last_node == node && versions(last_peers) == versions(peers)
            });
        if unchanged {
            return Vec::new();
        }
        self.reconcile(plan, peers, node).await
    }

    /// Brings the sessions in line with the inputs, whether or not they changed.
    async fn reconcile(
        &mut self,
        plan: &BgpPlan,
        peers: &[Arc<BGPPeer>],
        node: &NodeView,
    ) -> Vec<Change> {
        let before = self
            .last
            .take()
            .map(|(plan, _, _)| plan)
            .unwrap_or_default();
        let changes = changes(&node.state.name, &before, plan);
        self.last = Some((plan.clone(), peers.to_vec(), node.clone()));
        // Secrets not read yet are read now; `refresh_passwords` keeps them current.
        let wanted_secrets: Vec<String> = peers
            .iter()
            .filter(|p| plan.contains_key(&p.name_any()))
            .filter_map(|p| p.spec.password_secret.as_ref().map(|s| s.name.clone()))
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
            let Some(peer) = peers.iter().find(|p| p.name_any() == *name) else {
                continue;
            };
            let wanted = match settings(peer, node, &self.namespace, &self.passwords) {
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
                    if let Some(profile) = &peer.spec.bfd_profile {
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
        self.problems = problems;
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|name| !plan.contains_key(*name) && !self.problems.contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            if let Some(old) = self.running.remove(&name) {
                info!(peer = %name, "BGPPeer no longer applies to this node; stopping its session");
                old.handle.stop(false).await;
                self.forget(&name);
            }
        }
        self.report();
        changes
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

#[cfg(test)]
mod tests {
    use herald_plan::NodeState;
    use serde_json::json;

    use super::*;

    fn node(internal_ip: Option<&str>) -> NodeView {
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

    fn peer(spec: serde_json::Value) -> BGPPeer {
        serde_json::from_value(
            json!({"apiVersion": "herald.dev/v1alpha1", "kind": "BGPPeer",
            "metadata": {"name": "tor"}, "spec": spec}),
        )
        .expect("a valid BGPPeer")
    }

    #[test]
    fn every_field_of_a_peer_reaches_the_session() {
        let peer = peer(
            json!({"myASN": 64513, "peerASN": 64512, "peerAddress": "192.0.2.254",
            "sourceAddress": "192.0.2.1", "peerPort": 1179, "holdTime": "30s",
            "keepaliveTime": "5s", "connectTime": "2s", "routerID": "192.0.2.9",
            "ebgpMultiHop": true, "enableGracefulRestart": true,
            "passwordSecret": {"name": "md5"}}),
        );
        let passwords = [("md5".to_owned(), Ok(Password(b"secret".to_vec())))].into();
        let settings =
            settings(&peer, &node(Some("192.0.2.1")), "herald-system", &passwords).expect("usable");
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
            "192.0.2.9".parse::<std::net::Ipv4Addr>().expect("id")
        );
        assert_eq!((config.hold_time, config.keepalive_time), (30, Some(5)));
        assert_eq!(config.connect_retry, Duration::from_secs(2));
        assert_eq!(config.graceful_restart, Some(GRACEFUL_RESTART_TIME));
    }

    #[test]
    fn defaults_follow_the_node_and_rfc_4271() {
        let peer = peer(json!({"myASN": 64513, "peerASN": 64512, "peerAddress": "2001:db8::fe"}));
        let settings = settings(
            &peer,
            &node(Some("192.0.2.1")),
            "herald-system",
            &BTreeMap::new(),
        )
        .expect("usable");
        assert_eq!(settings.transport.peer.port(), 179);
        assert_eq!(settings.transport.ttl, 1, "a directly connected eBGP peer");
        assert_eq!(settings.config.family, Family::Ipv6);
        assert_eq!(
            settings.config.router_id,
            "192.0.2.1".parse::<std::net::Ipv4Addr>().expect("id")
        );
        assert_eq!(settings.config.hold_time, 90);
    }

    #[test]
    fn an_unusable_peer_is_refused_with_the_field_named() {
        let no_id = peer(json!({"myASN": 64513, "peerASN": 64512, "peerAddress": "2001:db8::fe"}));
        let error = settings(
            &no_id,
            &node(Some("2001:db8::1")),
            "herald-system",
            &BTreeMap::new(),
        )
        .expect_err("no IPv4 address for a router ID");
        assert!(error.starts_with("BGPPeer tor: spec.routerID:"), "{error}");
        let elsewhere = peer(
            json!({"myASN": 64513, "peerASN": 64512, "peerAddress": "192.0.2.254",
            "passwordSecret": {"name": "md5", "namespace": "default"}}),
        );
        let error = settings(
            &elsewhere,
            &node(Some("192.0.2.1")),
            "herald-system",
            &BTreeMap::new(),
        )
        .expect_err("a Secret outside Herald's namespace");
        assert!(error.contains("spec.passwordSecret.namespace"), "{error}");
        let unreadable = peer(
            json!({"myASN": 64513, "peerASN": 64512, "peerAddress": "192.0.2.254",
            "passwordSecret": {"name": "md5"}}),
        );
        let passwords = [(
            "md5".to_owned(),
            Err("Secret md5 has no key \"password\"".to_owned()),
        )]
        .into();
        let error = settings(
            &unreadable,
            &node(Some("192.0.2.1")),
            "herald-system",
            &passwords,
        )
        .expect_err("a Secret without the key");
        assert!(
            error.contains("spec.passwordSecret") && error.contains("no key"),
            "{error}"
        );
    }
}
