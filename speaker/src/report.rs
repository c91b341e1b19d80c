//! What the speaker tells people: an Event `nodeAssigned` on a Service when this node takes
//! over one of its addresses, and one [`ServiceL2Status`] per Service this node announces
//! (`kubectl get servicel2statuses`), kept current by a writer task
//! ([`herald_shell::records`]) so that announcing never waits for the API server.
//!
//! ```text
//!   loop ── takeovers ──► Events (background)
//!        ── desired records (latest wins) ──► records writer: apply / delete the difference
//!        ── speakers alive ──► records of nodes whose speaker is dead are deleted by whoever
//!                              is alive
//! ```

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
};

use herald_api::{
    ServiceL2Status, ServiceL2StatusSpec,
    status::{NODE_LABEL, Owner, SERVICE_LABEL, record_metadata},
};
use herald_domain::ServiceKey;
use herald_plan::L2Plan;
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

use crate::{FIELD_MANAGER, announce::Takeover, cluster::ServiceView};

/// How many Events may wait, and how many are sent at once.
const EVENT_QUEUE: usize = 4_096;
const EVENT_CONCURRENCY: usize = 4;

/// Reports for one node.
pub(crate) struct Reporter {
    node: String,
    events: Queue,
    records: records::Writer<ServiceL2Status>,
    alive: watch::Sender<BTreeSet<String>>,
}

impl Reporter {
    /// Starts the writer of this node's records.
    pub(crate) fn start(client: Client, publisher: Publisher, node: &str) -> Self {
        let records = records::spawn(
            client.clone(),
            Api::all(client.clone()),
            format!("{NODE_LABEL}={node}"),
            FIELD_MANAGER,
        );
        let (alive, alive_receiver) = watch::channel(BTreeSet::new());
        tokio::spawn(delete_records_of_dead_nodes(client, alive_receiver));
        Reporter {
            node: node.to_owned(),
            events: Queue::start(publisher, EVENT_QUEUE, EVENT_CONCURRENCY),
            records,
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
        services: &[Arc<ServiceView>],
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
