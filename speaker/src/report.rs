//! Everything the speaker tells people, in one place:
//!
//! - layer 2: an Event `nodeAssigned` on a Service when this node takes over one of its
//!   addresses, and one [`ServiceL2Status`] per Service this node announces
//!   (`kubectl get servicel2statuses`);
//! - BGP: an Event `bgpAdvertisement` on a Service when what this node advertises for it
//!   changes, and one [`BGPSessionStatus`] per session of this node, in Herald's namespace
//!   (`kubectl get bgpsessionstatuses`).
//!
//! Records are kept current by writer tasks ([`herald_shell::records`]) and Events go through a
//! bounded queue, so that announcing never waits for the API server.
//!
//! ```text
//!   loop ── takeovers, BGP plan changes ──► Events (background)
//!        ── desired records (latest wins) ──► records writers: apply / delete the difference
//!        ── speakers alive ──► L2 records of nodes whose speaker is dead are deleted by
//!                              whoever is alive
//! ```

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
};

use herald_api::{
    BGPSessionStatus, BGPSessionStatusSpec, ServiceL2Status, ServiceL2StatusSpec,
    status::{NODE_LABEL, Owner, PEER_LABEL, SERVICE_LABEL, record_metadata},
};
use herald_bgp::session::State;
use herald_domain::ServiceKey;
use herald_plan::{BgpPlan, L2Plan};
use herald_shell::{
    events::{Note, Publisher, Queue, Severity},
    records::{self, Desired},
};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams},
};
use tokio::sync::watch;
use tracing::debug;

use crate::{
    FIELD_MANAGER,
    announce::Takeover,
    bgp::SessionReport,
    cluster::{AnnouncedService, NodeView},
};

/// How many Events may wait, and how many are sent at once.
const EVENT_QUEUE: usize = 4_096;
const EVENT_CONCURRENCY: usize = 4;

/// Reports for one node.
pub(crate) struct Reporter {
    node: String,
    /// Herald's namespace, where session records go.
    namespace: String,
    events: Queue,
    records: records::Writer<ServiceL2Status>,
    session_records: records::Writer<BGPSessionStatus>,
    /// What this node advertised as last told, to tell only changes.
    advertised: BgpPlan,
    alive: watch::Sender<BTreeSet<String>>,
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
        let session_records = records::spawn(
            client.clone(),
            Api::namespaced(client.clone(), namespace),
            format!("{NODE_LABEL}={node}"),
            FIELD_MANAGER,
        );
        let (alive, alive_receiver) = watch::channel(BTreeSet::new());
        tokio::spawn(delete_records_of_dead_nodes(client, alive_receiver));
        Reporter {
            node: node.to_owned(),
            namespace: namespace.to_owned(),
            events: Queue::start(publisher, EVENT_QUEUE, EVENT_CONCURRENCY),
            records,
            session_records,
            advertised: BgpPlan::new(),
            alive,
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

    /// Reports the state after an apply: `owned` (address -> interfaces) from this node,
    /// `takeovers` among them, with the Services of each address from `plan`.
    pub(crate) fn report(
        &self,
        services: &[Arc<AnnouncedService>],
        plan: &L2Plan,
        owned: &BTreeMap<IpAddr, BTreeSet<String>>,
        takeovers: Vec<Takeover>,
        alive: &BTreeSet<String>,
    ) {
        let uids: BTreeMap<&ServiceKey, &str> = services
            .iter()
            .filter_map(|s| Some((&s.state.key, s.uid.as_deref()?)))
            .collect();
        for takeover in takeovers {
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
        let mut specs: BTreeMap<&ServiceKey, (ServiceL2StatusSpec, &str)> = BTreeMap::new();
        for (ip, interfaces) in owned {
            for key in plan
                .get(ip)
                .map(|o| o.services.as_slice())
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
        self.alive.send_if_modified(|current| {
            let changed = current != alive;
            if changed {
                current.clone_from(alive);
            }
            changed
        });
    }
}

impl Reporter {
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
        for change in changes {
            let uid = services.iter().find(|s| s.state.key == change.service);
            if let Some(uid) = uid.and_then(|s| s.uid.as_deref()) {
                let note = Note {
                    severity: Severity::Normal,
                    reason: "bgpAdvertisement".into(),
                    message: change.message,
                };
                self.tell(&change.service, uid, note);
            }
        }
    }

    /// Writes the state of each of this node's sessions as its BGPSessionStatus (the writer
    /// writes only what changed).
    pub(crate) fn bgp_sessions(&self, node: &NodeView, sessions: &[SessionReport]) {
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
                };
                let record = session_record(node, &self.namespace, spec);
                (records::key(&record), record)
            })
            .collect();
        self.session_records.set(desired);
    }
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
/// the speakers alive change.
async fn delete_records_of_dead_nodes(
    client: Client,
    mut alive: watch::Receiver<BTreeSet<String>>,
) {
    let all: Api<ServiceL2Status> = Api::all(client.clone());
    while alive.changed().await.is_ok() {
        let names: Vec<String> = alive.borrow_and_update().iter().cloned().collect();
        if names.is_empty() {
            continue;
        }
        let selector = format!("{NODE_LABEL} notin ({})", names.join(","));
        let Ok(list) = all.list(&ListParams::default().labels(&selector)).await else {
            continue;
        };
        for record in list.items {
            let api: Api<ServiceL2Status> =
                Api::namespaced(client.clone(), &record.namespace().unwrap_or_default());
            if let Err(e) = api
                .delete(&record.name_any(), &DeleteParams::default())
                .await
            {
                debug!(record = %record.name_any(), error = %e, "deleting a dead node's record");
            }
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
