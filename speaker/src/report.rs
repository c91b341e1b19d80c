//! What the speaker tells people: an Event `nodeAssigned` on a Service when this node takes
//! over one of its addresses, and one [`ServiceL2Status`] per Service this node announces
//! (`kubectl get servicel2statuses`), kept current by a writer task of its own so that
//! announcing never waits for the API server.
//!
//! ```text
//!   loop ── takeovers ──► Events (background)
//!        ── desired records (watch channel, latest wins) ──► writer: apply / delete the
//!           difference; every 10 s re-read what exists; records of nodes whose speaker is
//!           dead are deleted by whoever is alive
//! ```

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
    time::Duration,
};

use herald_api::{
    ServiceL2Status, ServiceL2StatusSpec,
    status::{NODE_LABEL, SERVICE_LABEL, record_name},
};
use herald_ipam::ServiceKey;
use herald_plan::L2Plan;
use herald_shell::events::{Note, Publisher, Queue, Severity};
use k8s_openapi::{
    api::core::v1::ObjectReference,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::{announce::Takeover, cluster::ServiceView};

/// How often the writer re-reads the records that exist (someone may have deleted one).
const RESYNC: Duration = Duration::from_secs(10);
const FIELD_MANAGER: &str = "herald-speaker";

/// One record this node wants.
#[derive(Debug, Clone, PartialEq)]
struct Record {
    spec: ServiceL2StatusSpec,
    /// The Service's uid, for the owner reference.
    uid: String,
}

/// What the writer should make true.
#[derive(Debug, Clone, Default, PartialEq)]
struct Desired {
    records: BTreeMap<ServiceKey, Record>,
    alive: BTreeSet<String>,
}

/// How many Events may wait, and how many are sent at once.
const EVENT_QUEUE: usize = 4_096;
const EVENT_CONCURRENCY: usize = 4;

/// Reports for one node.
pub(crate) struct Reporter {
    node: String,
    events: Queue,
    desired: watch::Sender<Desired>,
}

impl Reporter {
    /// Starts the writer of this node's records.
    pub(crate) fn start(client: Client, publisher: Publisher, node: &str) -> Self {
        let (desired, receiver) = watch::channel(Desired::default());
        tokio::spawn(write_records(client, node.to_owned(), receiver));
        Reporter {
            node: node.to_owned(),
            events: Queue::start(publisher, EVENT_QUEUE, EVENT_CONCURRENCY),
            desired,
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
                // kubectl describe finds Events by the object's uid.
                let Some(uid) = uids.get(key) else { continue };
                let object = ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Service".into()),
                    namespace: Some(key.namespace.clone()),
                    name: Some(key.name.clone()),
                    uid: Some((*uid).to_owned()),
                    ..ObjectReference::default()
                };
                if !self.events.send(object, note.clone()) {
                    debug!(service = %key, "the Event queue is full; an Event was dropped");
                }
            }
        }
        let mut records: BTreeMap<ServiceKey, Record> = BTreeMap::new();
        for (ip, interfaces) in owned {
            for key in plan
                .get(ip)
                .map(|o| o.services.as_slice())
                .unwrap_or_default()
            {
                let Some(uid) = uids.get(key).map(|uid| (*uid).to_owned()) else {
                    continue;
                };
                let record = records.entry(key.clone()).or_insert_with(|| Record {
                    spec: ServiceL2StatusSpec {
                        service: key.name.clone(),
                        node: self.node.clone(),
                        ..ServiceL2StatusSpec::default()
                    },
                    uid,
                });
                record.spec.addresses.push(ip.to_string());
                for interface in interfaces {
                    if !record.spec.interfaces.contains(interface) {
                        record.spec.interfaces.push(interface.clone());
                    }
                }
            }
        }
        for record in records.values_mut() {
            record.spec.interfaces.sort();
        }
        let desired = Desired {
            records,
            alive: alive.clone(),
        };
        self.desired.send_if_modified(|current| {
            let changed = *current != desired;
            *current = desired;
            changed
        });
    }
}

/// Keeps this node's records equal to the desired ones.
async fn write_records(client: Client, node: String, mut desired: watch::Receiver<Desired>) {
    let all: Api<ServiceL2Status> = Api::all(client.clone());
    let mine = ListParams::default().labels(&format!("{NODE_LABEL}={node}"));
    let mut written: BTreeMap<ServiceKey, ServiceL2StatusSpec> = BTreeMap::new();
    let mut alive_cleaned = BTreeSet::new();
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            changed = desired.changed() => if changed.is_err() { return },
            _ = resync.tick() => match all.list(&mine).await {
                Ok(list) => {
                    written = list
                        .items
                        .into_iter()
                        .map(|r| (ServiceKey::new(r.namespace().unwrap_or_default(), r.spec.service.clone()), r.spec))
                        .collect();
                }
                Err(e) => debug!(error = %e, "listing this node's ServiceL2Status records"),
            },
        }
        let want = desired.borrow_and_update().clone();
        for (key, record) in &want.records {
            if written.get(key) == Some(&record.spec) {
                continue;
            }
            match apply(&client, key, record).await {
                Ok(()) => {
                    written.insert(key.clone(), record.spec.clone());
                }
                Err(e) => warn!(service = %key, error = %e, "writing a ServiceL2Status"),
            }
        }
        let stale: Vec<ServiceKey> = written
            .keys()
            .filter(|key| !want.records.contains_key(*key))
            .cloned()
            .collect();
        for key in stale {
            let api: Api<ServiceL2Status> = Api::namespaced(client.clone(), &key.namespace);
            match api
                .delete(&record_name(&key.name, &node), &DeleteParams::default())
                .await
            {
                Ok(_) => {
                    written.remove(&key);
                }
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    written.remove(&key);
                }
                Err(e) => warn!(service = %key, error = %e, "deleting a ServiceL2Status"),
            }
        }
        if !want.alive.is_empty() && want.alive != alive_cleaned {
            delete_records_of_dead_nodes(&all, &client, &want.alive).await;
            alive_cleaned = want.alive;
        }
    }
}

async fn apply(client: &Client, key: &ServiceKey, record: &Record) -> Result<(), kube::Error> {
    let api: Api<ServiceL2Status> = Api::namespaced(client.clone(), &key.namespace);
    let name = record_name(&key.name, &record.spec.node);
    let object = ServiceL2Status {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(key.namespace.clone()),
            labels: Some(
                [
                    (SERVICE_LABEL.to_owned(), key.name.clone()),
                    (NODE_LABEL.to_owned(), record.spec.node.clone()),
                ]
                .into(),
            ),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Service".into(),
                name: key.name.clone(),
                uid: record.uid.clone(),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        },
        spec: record.spec.clone(),
    };
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&object),
    )
    .await?;
    Ok(())
}

/// Deletes the records of nodes whose speaker is not alive: nobody else would.
async fn delete_records_of_dead_nodes(
    all: &Api<ServiceL2Status>,
    client: &Client,
    alive: &BTreeSet<String>,
) {
    let names: Vec<&str> = alive.iter().map(String::as_str).collect();
    let selector = format!("{NODE_LABEL} notin ({})", names.join(","));
    let Ok(list) = all.list(&ListParams::default().labels(&selector)).await else {
        return;
    };
    for record in list.items {
        let api: Api<ServiceL2Status> =
            Api::namespaced(client.clone(), &record.namespace().unwrap_or_default());
        let _ = api
            .delete(&record.name_any(), &DeleteParams::default())
            .await;
    }
}
