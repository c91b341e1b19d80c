//! The one place the controller writes to the API: it applies what [`crate::decide`] decided,
//! and only while this replica holds the Lease.
//!
//! Order within a pass: Events about pools and rebuilt state first, then the Services (side by
//! side, [`WRITE_CONCURRENCY`] at once; for each, metadata, then status, then its Events, each
//! step only if the one before landed), then pool status, then the configuration objects'
//! conditions (each with its Event, if it has one). Events are queued and sent in the
//! background ([`Queue`]): a pass never waits for them, so neither does the next Service's
//! address. Each write reports whether it landed (an Event: whether it was queued), so the
//! decider retries exactly what did not.
//!
//! Services are written with JSON merge patches, not server-side apply: a finalizer, an
//! annotation or a status entry that an earlier Herald wrote by update is owned by that update,
//! and an apply that leaves it out would never remove it (a Service whose finalizer nobody
//! removes is never deleted). A merge patch removes exactly what Herald decided to remove, and
//! every Service patch carries the `resourceVersion` it was decided from, so no other
//! controller's finalizer edit is lost and a stale writer fails rather than overwrites.

use std::sync::Arc;

use futures::StreamExt;
use herald_api::{
    BFDProfile, BGPAdvertisement, BGPPeer, ConfigurationStatus, IPAddressPool, L2Advertisement,
    annotations::CLEANUP_FINALIZER,
};
use herald_shell::events::Queue;
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::{
    decide::{Event, ServiceWrite, Write},
    lease::Term,
    metrics::Metrics,
};

/// How many Services are written at once.
const WRITE_CONCURRENCY: usize = 32;
/// How many Events may wait to be sent, and how many are sent at once.
pub(crate) const EVENT_QUEUE: usize = 4_096;
pub(crate) const EVENT_CONCURRENCY: usize = 4;

/// Whether this replica may write: always without leader election, otherwise only within its
/// [`Term`] (checked against the clock before every write, so a pass that was deciding when
/// the term ended writes nothing more, and neither does a leader frozen past its Lease).
#[derive(Debug, Clone)]
pub(crate) struct Fence(Option<watch::Receiver<Term>>);

impl Fence {
    /// No leader election: this replica always writes.
    pub(crate) fn open() -> Self {
        Fence(None)
    }

    /// Writes only within the term `leading` says.
    pub(crate) fn lease(leading: watch::Receiver<Term>) -> Self {
        Fence(Some(leading))
    }

    /// Whether this replica may write now.
    pub(crate) fn holds(&self) -> bool {
        self.0
            .as_ref()
            .is_none_or(|leading| leading.borrow().holds())
    }
}

/// Applies decided writes.
#[derive(Clone)]
pub(crate) struct Writer {
    pub(crate) client: Client,
    /// Events go out in the background: a pass never waits for them, so the next pass (and the
    /// next Service's address) does not either.
    pub(crate) events: Queue,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) fence: Fence,
}

impl Writer {
    /// Applies `writes`; each comes back with whether it landed.
    pub(crate) async fn apply(&self, writes: Vec<Write>) -> Vec<(Write, bool)> {
        let mut done = Vec::with_capacity(writes.len());
        let (mut services, mut pools, mut configuration) = (Vec::new(), Vec::new(), Vec::new());
        for write in writes {
            match write {
                Write::Event { object, event } => {
                    let landed = self.fence.holds() && self.send(&object, &event);
                    done.push((Write::Event { object, event }, landed));
                }
                Write::Service(service) => services.push(service),
                Write::PoolStatus { name, status } => pools.push((name, status)),
                write @ Write::ConfigurationStatus { .. } => configuration.push(write),
            }
        }
        let written: Vec<(ServiceWrite, bool)> = futures::stream::iter(services)
            .map(|service| self.service(service))
            .buffer_unordered(WRITE_CONCURRENCY)
            .collect()
            .await;
        done.extend(
            written
                .into_iter()
                .map(|(s, landed)| (Write::Service(s), landed)),
        );
        for (name, status) in pools {
            let landed = self.status::<IPAddressPool>(&name, &status).await;
            done.push((Write::PoolStatus { name, status }, landed));
        }
        for write in configuration {
            let landed = match &write {
                Write::ConfigurationStatus {
                    object,
                    status,
                    event,
                } => {
                    self.configuration_status(object, status).await
                        && event.as_ref().is_none_or(|event| self.send(object, event))
                }
                _ => false,
            };
            done.push((write, landed));
        }
        done
    }

    /// The status of a configuration object, by its kind.
    async fn configuration_status(
        &self,
        object: &ObjectReference,
        status: &ConfigurationStatus,
    ) -> bool {
        let name = object.name.as_deref().unwrap_or_default();
        match object.kind.as_deref() {
            Some("BGPPeer") => self.status::<BGPPeer>(name, status).await,
            Some("BFDProfile") => self.status::<BFDProfile>(name, status).await,
            Some("L2Advertisement") => self.status::<L2Advertisement>(name, status).await,
            Some("BGPAdvertisement") => self.status::<BGPAdvertisement>(name, status).await,
            _ => false,
        }
    }

    /// Queues one Event and counts it; false when the queue is full (the write did not land,
    /// so the decider tells it again).
    fn send(&self, object: &ObjectReference, event: &Event) -> bool {
        let queued = self
            .events
            .send(object.clone(), event.reason.note(event.message.clone()));
        if queued {
            event.reason.count(&self.metrics);
        } else {
            warn!(object = ?object.name, "the Event queue is full; the next pass tells it again");
            self.metrics.write_failed("event");
        }
        queued
    }

    /// One Service's metadata, status and Events, each only if the step before landed.
    async fn service(&self, writes: ServiceWrite) -> (ServiceWrite, bool) {
        let api: Api<Service> = Api::namespaced(self.client.clone(), &writes.key.namespace);
        let params = PatchParams::default();
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            warn!(service = %writes.key, error = %e, "{what} failed; retrying");
            self.metrics.write_failed("service");
        };
        if !self.fence.holds() {
            debug!(service = %writes.key, "not written: the Lease is not held");
            return (writes, false);
        }
        // Every write is guarded by the version it was decided from: a replica writing from
        // stale state (a leader frozen past its Lease) fails instead of overwriting, and the
        // next pass decides again from what is there now.
        let mut version = writes.resource_version.clone();
        if writes.finalizer.is_some() || !writes.annotations.is_empty() {
            let mut metadata = serde_json::Map::new();
            if let Some(present) = writes.finalizer {
                let mut finalizers: Vec<&String> = writes
                    .finalizers
                    .iter()
                    .filter(|f| *f != CLEANUP_FINALIZER)
                    .collect();
                let ours = CLEANUP_FINALIZER.to_owned();
                if present {
                    finalizers.push(&ours);
                }
                metadata.insert("finalizers".into(), json!(finalizers));
            }
            metadata.insert("resourceVersion".into(), json!(version));
            if !writes.annotations.is_empty() {
                // A merge patch: `null` removes an annotation.
                metadata.insert("annotations".into(), json!(writes.annotations));
            }
            let patch = Patch::Merge(json!({"metadata": metadata}));
            match api.patch(&writes.key.name, &params, &patch).await {
                Ok(written) => version = written.metadata.resource_version,
                Err(e) => {
                    failed("writing metadata", &e);
                    return (writes, false);
                }
            }
        }
        if let Some(ips) = &writes.status {
            let ingress = if ips.is_empty() {
                serde_json::Value::Null
            } else {
                json!(
                    ips.iter()
                        .map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"}))
                        .collect::<Vec<_>>()
                )
            };
            let patch = Patch::Merge(json!({
                "metadata": {"resourceVersion": version},
                "status": {"loadBalancer": {"ingress": ingress}},
            }));
            if let Err(e) = api.patch_status(&writes.key.name, &params, &patch).await {
                failed("writing status", &e);
                return (writes, false);
            }
        }
        let queued = writes
            .events
            .iter()
            .all(|event| self.send(&writes.object, event));
        (writes, queued)
    }

    /// The status of the cluster-scoped object `name` of kind `K`.
    async fn status<K>(&self, name: &str, status: &impl serde::Serialize) -> bool
    where
        K: kube::Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned,
    {
        if !self.fence.holds() {
            return false;
        }
        let api: Api<K> = Api::all(self.client.clone());
        let patch = Patch::Merge(json!({"status": status}));
        match api
            .patch_status(name, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => true,
            Err(e) => {
                warn!(kind = %K::kind(&()), %name, error = %e, "writing status failed; retrying");
                self.metrics
                    .write_failed(if K::kind(&()) == "IPAddressPool" {
                        "pool_status"
                    } else {
                        "configuration_status"
                    });
                false
            }
        }
    }
}
