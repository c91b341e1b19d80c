//! Everything the speaker tells people, in one place:
//!
//! - what its drivers did ([`Told`]: an address taken over or given up, a session started or
//!   stopped), in the log; a takeover also as an Event `nodeAssigned` on each of its Services;
//! - configuration it cannot use (an advertisement, a BGPPeer, a password), in the log once
//!   per problem;
//! - layer 2: one [`ServiceL2Status`] per Service this node announces
//!   (`kubectl get servicel2statuses`);
//! - BGP: an Event `bgpAdvertisement` on a Service when what this node advertises for it
//!   changes, one [`ServiceBGPStatus`] per Service it advertises to established peers
//!   (`kubectl get servicebgpstatuses`), and one [`BGPSessionStatus`] per session of this
//!   node, in Herald's namespace (`kubectl get bgpsessionstatuses`);
//! - the node: one [`SpeakerStatus`] in Herald's namespace, whether it announces (or why
//!   not) and what only this node cannot use (`kubectl get speakerstatuses`).
//!
//! Records are kept current by writer tasks ([`herald_shell::records`]) and Events go through a
//! bounded queue, so that announcing never waits for the API server.
//!
//! ```text
//!   drivers ── Vec<Told> ──► log; takeovers ──► Events (background)
//!   loop ── BGP plan changes ──► Events (background)
//!        ── desired records (latest wins) ──► records writers: apply / delete the difference
//!        ── speakers alive ──► L2 records of nodes whose speaker is dead are deleted by
//!                              whoever is alive
//! ```

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use herald_api::{
    BGPSessionStatus, BGPSessionStatusSpec, BfdSessionStatus, GossipStatus, ServiceBGPStatus,
    ServiceBGPStatusSpec, ServiceL2Status, ServiceL2StatusSpec, SpeakerStatus, SpeakerStatusSpec,
    status::{NODE_LABEL, Owner, PEER_LABEL, SERVICE_LABEL, SPEAKER_LABEL, record_metadata},
};
use herald_bgp::session::State;
use herald_domain::ServiceKey;
use herald_plan::{BgpPlan, Withheld};
use herald_shell::{
    events::{Note, Publisher, Queue, Severity},
    records::{self, Desired},
};
use k8s_openapi::{
    api::core::v1::ObjectReference, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams},
};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::{
    FIELD_MANAGER,
    announce::{L2Share, Takeover},
    bgp::SessionReport,
    cluster::{AnnouncedService, NodeView},
};

/// How many Events may wait, and how many are sent at once.
const EVENT_QUEUE: usize = 4_096;
const EVENT_CONCURRENCY: usize = 4;

/// What a driver did, for the reporter to tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Told {
    /// Layer 2: this node started announcing an address for these Services.
    Announcing(Takeover),
    /// Layer 2: this node no longer announces the address.
    Withdrawn(IpAddr),
    /// Layer 2: the speaker stops; it no longer answers for any of its addresses.
    Silenced { addresses: usize },
    /// Layer 2: an interface's sockets could not be opened; nothing is answered there.
    InterfaceUnusable { interface: String, error: String },
    /// BGP: a session started, or started over because its BGPPeer changed.
    SessionStarted {
        peer: String,
        address: SocketAddr,
        restarted: bool,
    },
    /// BFD went down after being Up: the BGP session is taken down until BFD is Up again.
    BfdDown {
        peer: String,
        state: &'static str,
        diagnostic: &'static str,
    },
    /// BFD is Up again: the BGP session starts again.
    BfdUp { peer: String },
    /// The BFD session could not be started (its sockets); BGP runs without it.
    BfdUnusable { peer: String, error: String },
    /// BGP: a session ended, because its BGPPeer no longer applies to this node or the
    /// speaker stops (`graceful`: the peer keeps the routes while the speaker restarts).
    SessionStopped { peer: String, graceful: bool },
}

/// Reports for one node.
pub(crate) struct Reporter {
    node: String,
    /// Herald's namespace, where session records go.
    namespace: String,
    events: Queue,
    records: records::Writer<ServiceL2Status>,
    bgp_records: records::Writer<ServiceBGPStatus>,
    session_records: records::Writer<BGPSessionStatus>,
    speaker_record: records::Writer<SpeakerStatus>,
    /// What this node advertised as last told, to tell only changes.
    advertised: BgpPlan,
    alive: watch::Sender<BTreeSet<String>>,
    /// The configuration problems as last logged.
    problems: Vec<String>,
    /// Why this node takes no load-balancer traffic, as last logged.
    withheld: Option<Withheld>,
}

impl Reporter {
    /// Starts the writers of this node's records; session records go to `namespace`.
    pub(crate) fn start(client: Client, publisher: Publisher, node: &str, namespace: &str) -> Self {
        let records = records::spawn(
            client.clone(),
            Api::all(client.clone()),
            format!("{NODE_LABEL}={node}"),
            FIELD_MANAGER,
        );
        let bgp_records = records::spawn(
            client.clone(),
            Api::all(client.clone()),
            format!("{NODE_LABEL}={node}"),
            FIELD_MANAGER,
        );
        let session_records = records::spawn(
            client.clone(),
            Api::namespaced(client.clone(), namespace),
            format!("{NODE_LABEL}={node}"),
            FIELD_MANAGER,
        );
        let speaker_record = records::spawn(
            client.clone(),
            Api::namespaced(client.clone(), namespace),
            format!("{NODE_LABEL}={node}"),
            FIELD_MANAGER,
        );
        let (alive, alive_receiver) = watch::channel(BTreeSet::new());
        tokio::spawn(delete_records_of_dead_nodes(
            client,
            namespace.to_owned(),
            alive_receiver,
        ));
        Reporter {
            node: node.to_owned(),
            namespace: namespace.to_owned(),
            events: Queue::start(publisher, EVENT_QUEUE, EVENT_CONCURRENCY),
            records,
            bgp_records,
            session_records,
            speaker_record,
            advertised: BgpPlan::new(),
            alive,
            problems: Vec::new(),
            withheld: None,
        }
    }

    /// Sends an Event about Service `key` (`kubectl describe` finds Events by the object's
    /// uid).
    pub(crate) fn tell(&self, key: &ServiceKey, uid: &str, note: Note) {
        let object = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            namespace: Some(key.namespace.clone()),
            name: Some(key.name.clone()),
            uid: Some(uid.to_owned()),
            ..ObjectReference::default()
        };
        if !self.events.send(object, note) {
            debug!(service = %key, "the Event queue is full; an Event was dropped");
        }
    }

    /// Tells what a driver did: in the log, and takeovers as Events on their Services (of
    /// `services`).
    pub(crate) fn told(&self, told: Vec<Told>, services: &[Arc<AnnouncedService>]) {
        let uids = if told.iter().any(|t| matches!(t, Told::Announcing(_))) {
            uids(services)
        } else {
            BTreeMap::new()
        };
        for told in told {
            match told {
                Told::Announcing(takeover) => {
                    info!(ip = %takeover.ip, services = ?takeover.services, interfaces = ?takeover.interfaces, "announcing");
                    self.tell_takeover(&takeover, &uids);
                }
                Told::Withdrawn(ip) => info!(%ip, "no longer announcing"),
                Told::Silenced { addresses } => {
                    info!(addresses, "stopped answering for every address");
                }
                Told::InterfaceUnusable { interface, error } => {
                    warn!(%interface, %error, "cannot answer on this interface");
                }
                Told::SessionStarted {
                    peer,
                    address,
                    restarted,
                } => {
                    if restarted {
                        info!(%peer, "BGPPeer changed; starting its session over");
                    }
                    info!(%peer, %address, "starting BGP session");
                }
                Told::BfdDown {
                    peer,
                    state,
                    diagnostic,
                } => {
                    warn!(%peer, bfd = state, %diagnostic, "BFD is down: the BGP session is down until BFD is Up");
                }
                Told::BfdUp { peer } => info!(%peer, "BFD is Up: starting the BGP session again"),
                Told::BfdUnusable { peer, error } => {
                    warn!(%peer, %error, "BFD cannot run for this peer; BGP runs without it");
                }
                Told::SessionStopped { peer, graceful } => {
                    info!(%peer, graceful, "BGP session stopped");
                }
            }
        }
    }

    /// An Event `nodeAssigned` on each Service of `takeover`.
    fn tell_takeover(&self, takeover: &Takeover, uids: &BTreeMap<&ServiceKey, &str>) {
        let interfaces: Vec<&str> = takeover.interfaces.iter().map(String::as_str).collect();
        let note = Note {
            severity: Severity::Normal,
            reason: "nodeAssigned".into(),
            message: format!(
                "announcing {} from node {} on {} (layer 2)",
                takeover.ip,
                self.node,
                interfaces.join(", ")
            ),
        };
        for key in &takeover.services {
            if let Some(uid) = uids.get(key) {
                self.tell(key, uid, note.clone());
            }
        }
    }

    /// Logs when this node stops (or starts again) taking load-balancer traffic.
    pub(crate) fn withheld(&mut self, withheld: Option<Withheld>) {
        if withheld == self.withheld {
            return;
        }
        match withheld {
            Some(why) => warn!(
                node = %self.node,
                why = why.describe(),
                "this node announces nothing: its addresses move to other nodes and its routes are withdrawn"
            ),
            None => info!(node = %self.node, "this node takes load-balancer traffic again"),
        }
        self.withheld = withheld;
    }

    /// Logs each configuration problem once, when the set of them changes.
    pub(crate) fn problems(&mut self, problems: Vec<String>) {
        if problems != self.problems {
            for problem in &problems {
                warn!(%problem, "configuration not used");
            }
            self.problems = problems;
        }
    }

    /// Writes one ServiceL2Status per Service (of `services`) this node announces: `owned`
    /// (address -> interfaces) from this node, with the Services of each address from `share`.
    pub(crate) fn l2_records(
        &self,
        services: &[Arc<AnnouncedService>],
        share: &L2Share,
        owned: &BTreeMap<IpAddr, BTreeSet<String>>,
    ) {
        let uids = uids(services);
        let mut specs: BTreeMap<&ServiceKey, (ServiceL2StatusSpec, &str)> = BTreeMap::new();
        for (ip, interfaces) in owned {
            for key in share
                .services
                .get(ip)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let Some(uid) = uids.get(key) else {
                    continue;
                };
                let (spec, _) = specs.entry(key).or_insert_with(|| {
                    let spec = ServiceL2StatusSpec {
                        service: key.name.clone(),
                        node: self.node.clone(),
                        ..ServiceL2StatusSpec::default()
                    };
                    (spec, uid)
                });
                spec.addresses.push(ip.to_string());
                for interface in interfaces {
                    if !spec.interfaces.contains(interface) {
                        spec.interfaces.push(interface.clone());
                    }
                }
            }
        }
        let desired: Desired<ServiceL2Status> = specs
            .into_iter()
            .map(|(key, (mut spec, uid))| {
                spec.interfaces.sort();
                let record = l2_record(key, spec, uid);
                (records::key(&record), record)
            })
            .collect();
        self.records.set(desired);
    }

    /// The speakers alive: the records of the others' nodes are deleted.
    pub(crate) fn speakers_alive(&self, alive: &BTreeSet<String>) {
        self.alive.send_if_modified(|current| {
            let changed = current != alive;
            if changed {
                current.clone_from(alive);
            }
            changed
        });
    }

    /// Tells each Service (of `services`) whose BGP routes from this node changed since the
    /// last call what this node now advertises for it.
    pub(crate) fn bgp_advertisements(
        &mut self,
        services: &[Arc<AnnouncedService>],
        plan: &BgpPlan,
    ) {
        // Most inputs (other Services' endpoints, layer-2 changes) leave this node's routes as
        // they were: nothing to compare or copy.
        if self.advertised == *plan {
            return;
        }
        let changes = changes(&self.node, &self.advertised, plan);
        self.advertised.clone_from(plan);
        let uids = uids(services);
        for change in changes {
            if let Some(uid) = uids.get(&change.service) {
                let note = Note {
                    severity: Severity::Normal,
                    reason: "bgpAdvertisement".into(),
                    message: change.message,
                };
                self.tell(&change.service, uid, note);
            }
        }
    }

    /// Writes the state of each of this node's sessions as its BGPSessionStatus, and for
    /// each Service this node advertises, a ServiceBGPStatus naming the peers whose
    /// established sessions carry its prefixes (the writers write only what changed).
    pub(crate) fn bgp_sessions(
        &self,
        node: &NodeView,
        sessions: &[SessionReport],
        services: &[Arc<AnnouncedService>],
    ) {
        self.service_bgp_records(sessions, services);
        let desired: Desired<BGPSessionStatus> = sessions
            .iter()
            .map(|session| {
                let status = &session.status;
                let spec = BGPSessionStatusSpec {
                    node: node.state.name.clone(),
                    peer: session.peer.clone(),
                    peer_address: session.address.to_string(),
                    state: status.state.name().to_owned(),
                    prefixes_advertised: i64::try_from(status.advertised).unwrap_or(i64::MAX),
                    last_error: if status.state == State::Established {
                        None
                    } else {
                        status.last_error.clone()
                    },
                    last_notification: status.last_notification.as_ref().map(|n| n.text.clone()),
                    last_notification_time: status
                        .last_notification
                        .as_ref()
                        .and_then(|n| whole_seconds(n.at))
                        .map(Time),
                    bfd: session.bfd.as_ref().map(bfd_status),
                };
                let record = session_record(node, &self.namespace, spec);
                (records::key(&record), record)
            })
            .collect();
        self.session_records.set(desired);
    }
}

impl Reporter {
    /// One ServiceBGPStatus per Service with a prefix at an established peer of this node.
    fn service_bgp_records(&self, sessions: &[SessionReport], services: &[Arc<AnnouncedService>]) {
        let established: BTreeSet<&str> = sessions
            .iter()
            .filter(|s| s.status.state == State::Established)
            .map(|s| s.peer.as_str())
            .collect();
        let uids = uids(services);
        let desired: Desired<ServiceBGPStatus> = advertised_by_service(&self.advertised)
            .into_iter()
            .filter_map(|(key, prefixes)| {
                let uid = *uids.get(&key)?;
                let peers: BTreeSet<&str> = prefixes
                    .values()
                    .flatten()
                    .copied()
                    .filter(|p| established.contains(p))
                    .collect();
                if peers.is_empty() {
                    return None;
                }
                let spec = ServiceBGPStatusSpec {
                    service: key.name.clone(),
                    node: self.node.clone(),
                    prefixes: prefixes.into_keys().collect(),
                    peers: peers.into_iter().map(str::to_owned).collect(),
                };
                let owner = Owner {
                    kind: "Service",
                    name: &key.name,
                    uid,
                };
                let record = ServiceBGPStatus {
                    metadata: record_metadata(
                        SERVICE_LABEL,
                        &key.name,
                        &self.node,
                        &key.namespace,
                        Some(owner),
                    ),
                    spec,
                };
                Some((records::key(&record), record))
            })
            .collect();
        self.bgp_records.set(desired);
    }

    /// Writes this node's SpeakerStatus: whether it announces, what it hears by `gossip`, and
    /// the `problems` only this node has.
    pub(crate) fn speaker_status(
        &self,
        node: &NodeView,
        gossip: GossipStatus,
        mut problems: Vec<String>,
    ) {
        problems.sort();
        problems.dedup();
        let spec = SpeakerStatusSpec {
            node: self.node.clone(),
            announcing: node.state.withheld.is_none(),
            withheld: node.state.withheld.map(|w| w.describe().to_owned()),
            problem_count: i64::try_from(problems.len()).unwrap_or(i64::MAX),
            problems,
            gossip: Some(gossip),
        };
        let owner = node.uid.as_deref().map(|uid| Owner {
            kind: "Node",
            name: &self.node,
            uid,
        });
        let mut metadata = record_metadata(
            SPEAKER_LABEL,
            &self.node,
            &self.node,
            &self.namespace,
            owner,
        );
        metadata.name = Some(self.node.clone());
        let record = SpeakerStatus { metadata, spec };
        self.speaker_record
            .set([(records::key(&record), record)].into());
    }
}

/// `at` as the API keeps a time: in whole seconds, so that a record read back equals the one
/// written.
fn whole_seconds(at: std::time::SystemTime) -> Option<Timestamp> {
    let seconds = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    Timestamp::from_second(i64::try_from(seconds).ok()?).ok()
}

/// A BFD session as its record shows it.
fn bfd_status(status: &herald_bfd::driver::Status) -> BfdSessionStatus {
    let milliseconds = |d: Option<std::time::Duration>| {
        d.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    };
    BfdSessionStatus {
        state: status.state.name().to_owned(),
        diagnostic: status.local_diagnostic.name().to_owned(),
        remote_diagnostic: status.remote_diagnostic.name().to_owned(),
        transmit_interval_ms: milliseconds(status.transmit_interval),
        detection_time_ms: milliseconds(status.detection_time),
    }
}

/// The uid of each Service (that has one), for its Events and records' owners.
fn uids(services: &[Arc<AnnouncedService>]) -> BTreeMap<&ServiceKey, &str> {
    services
        .iter()
        .filter_map(|s| Some((&s.state.key, s.uid.as_deref()?)))
        .collect()
}

/// A change in what this node advertises for a Service, for its Event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Change {
    service: ServiceKey,
    message: String,
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

/// The BGPSessionStatus of one session of `node`, in `namespace`, owned by the Node.
fn session_record(
    node: &NodeView,
    namespace: &str,
    spec: BGPSessionStatusSpec,
) -> BGPSessionStatus {
    // The record goes with its Node.
    let owner = node.uid.as_deref().map(|uid| Owner {
        kind: "Node",
        name: &spec.node,
        uid,
    });
    BGPSessionStatus {
        metadata: record_metadata(PEER_LABEL, &spec.peer, &spec.node, namespace, owner),
        spec,
    }
}

/// The ServiceL2Status of `key` from the node in `spec`, owned by the Service.
fn l2_record(key: &ServiceKey, spec: ServiceL2StatusSpec, uid: &str) -> ServiceL2Status {
    let owner = Owner {
        kind: "Service",
        name: &key.name,
        uid,
    };
    ServiceL2Status {
        metadata: record_metadata(
            SERVICE_LABEL,
            &key.name,
            &spec.node,
            &key.namespace,
            Some(owner),
        ),
        spec,
    }
}

/// Deletes the records of nodes whose speaker is not alive (nobody else would), whenever
/// the speakers alive change: their Services' L2 and BGP records, and their SpeakerStatus
/// (its absence says no speaker runs there).
async fn delete_records_of_dead_nodes(
    client: Client,
    namespace: String,
    mut alive: watch::Receiver<BTreeSet<String>>,
) {
    while alive.changed().await.is_ok() {
        let names: Vec<String> = alive.borrow_and_update().iter().cloned().collect();
        if names.is_empty() {
            continue;
        }
        let selector = format!("{NODE_LABEL} notin ({})", names.join(","));
        delete_all::<ServiceL2Status>(&client, Api::all(client.clone()), &selector).await;
        delete_all::<ServiceBGPStatus>(&client, Api::all(client.clone()), &selector).await;
        delete_all::<SpeakerStatus>(
            &client,
            Api::namespaced(client.clone(), &namespace),
            &selector,
        )
        .await;
    }
}

/// Deletes every record `list` finds with `selector`, each in its own namespace.
async fn delete_all<K>(client: &Client, list: Api<K>, selector: &str)
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let Ok(found) = list.list(&ListParams::default().labels(selector)).await else {
        return;
    };
    for record in found.items {
        let api: Api<K> = Api::namespaced(client.clone(), &record.namespace().unwrap_or_default());
        if let Err(e) = api
            .delete(&record.name_any(), &DeleteParams::default())
            .await
        {
            debug!(record = %record.name_any(), error = %e, "deleting a dead node's record");
        }
    }
}

#[cfg(test)]
mod tests {
    use herald_domain::Prefix;

    use super::*;

    fn plan(entries: &[(&str, &str, &str)]) -> BgpPlan {
        let mut plan = BgpPlan::new();
        for (peer, address, service) in entries {
            let route = plan
                .entry((*peer).to_owned())
                .or_default()
                .entry(Prefix::host(address.parse().expect("an address")))
                .or_default();
            route.services.insert(ServiceKey::new("ns", *service));
        }
        plan
    }

    #[test]
    fn each_service_whose_routes_changed_is_told_once_with_every_route_and_peer() {
        let before = plan(&[("tor", "203.0.113.64", "web")]);
        let after = plan(&[
            ("tor", "203.0.113.64", "web"),
            ("tor6", "2001:db8:3::", "web"),
            ("tor", "203.0.113.65", "api"),
        ]);
        let told = changes("n1", &before, &after);
        let messages: Vec<(String, String)> = told
            .into_iter()
            .map(|c| (c.service.name, c.message))
            .collect();
        assert_eq!(
            messages,
            [
                (
                    "api".to_owned(),
                    "node n1 advertises 203.0.113.65/32 to tor (BGP)".to_owned()
                ),
                (
                    "web".to_owned(),
                    "node n1 advertises 2001:db8:3::/128 to tor6; 203.0.113.64/32 to tor (BGP)"
                        .to_owned()
                ),
            ]
        );
        assert!(changes("n1", &after, &after).is_empty(), "nothing changed");
        let withdrawn = changes("n1", &after, &plan(&[("tor", "203.0.113.65", "api")]));
        assert_eq!(withdrawn.len(), 1);
        assert_eq!(withdrawn[0].message, "node n1 withdrew its BGP routes");
    }
}
