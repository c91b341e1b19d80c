//! The control loop: watch Services, pools and namespaces; allocate; write what changed.
//!
//! ```text
//!   watch Services ─┐
//!   watch pools ────┼─► stores ──notify──► pass(): pools ─► Allocator::set_pools
//!   watch Namespaces┘                              Services ─► assign / release
//!                                                  ─► finalizer, status, annotation, Events
//!                                                  ─► pool status (counts, conditions)
//! ```
//!
//! One task owns the allocator, so no two decisions race. On start the allocator is rebuilt
//! from what Service status says (oldest Service first, so on a double claim the older one
//! keeps its address). Every pass compares the wanted state with the objects and writes only
//! the difference; a write that fails (a conflict, a dropped connection) is retried by the
//! next pass, which the watch of the written object triggers anyway.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    sync::Arc,
};

use futures::StreamExt;
use herald_api::{
    IPAddressPool, IPAddressPoolStatus,
    annotations::{self, CLEANUP_FINALIZER, IP_ALLOCATED_FROM_POOL, SERVED},
    service::ServiceView,
};
use herald_domain::{Family, Labels, ServiceKey};
use herald_ipam::{Allocator, Pool, ServiceRequest};
use k8s_openapi::{
    api::core::v1::{Namespace, ObjectReference, Service},
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{reflector::Store, watcher},
};
use serde_json::json;
use tracing::{debug, info, warn};

use herald_shell::{
    events::{Note, Publisher, Severity},
    watch::{Views, Watches},
};

use crate::{
    metrics::{Metrics, PoolLabels},
    reason::Reason,
    status::{PoolFacts, pool_status},
    translate::{self, NamespaceLabels},
};

/// What the loop is told at start.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The `loadBalancerClass` served; `None` serves Services without a class.
    pub(crate) class: Option<String>,
    /// The instance name Events are reported under.
    pub(crate) instance: String,
    pub(crate) metrics: Arc<Metrics>,
}

/// Runs the controller until the process ends.
pub(crate) async fn run(client: Client, settings: Settings) -> anyhow::Result<()> {
    let mut watches = Watches::new();
    let notify = watches.notify();
    let services = watches.views(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        |service| Some(ServiceView::new(service)),
    );
    let pools =
        watches.store::<IPAddressPool>(Api::all(client.clone()), watcher::Config::default());
    let namespaces =
        watches.store::<Namespace>(Api::all(client.clone()), watcher::Config::default());
    services.wait_until_ready().await;
    for (what, ready) in [
        ("IPAddressPools", pools.wait_until_ready().await),
        ("Namespaces", namespaces.wait_until_ready().await),
    ] {
        ready
            .map_err(|e| anyhow::anyhow!("the watch of {what} ended before its first list: {e}"))?;
    }
    let mut control = Control {
        publisher: Publisher::new(
            client.clone(),
            "herald-controller",
            &settings.instance,
            "Allocate",
        ),
        client,
        class: settings.class,
        allocator: Allocator::new(),
        pools: None,
        invalid_pools: BTreeMap::new(),
        overlaps: Vec::new(),
        last_note: HashMap::new(),
        pool_status: HashMap::new(),
        settled: HashMap::new(),
        generation: 0,
        namespaces: NamespaceLabels::new(),
        metrics: settings.metrics,
    };
    let snapshot = Snapshot::take(&services, &pools, &namespaces);
    let mut told = control.sync_pools(&snapshot);
    told.extend(control.restore(&snapshot));
    control.publish(told).await;
    info!(
        services = snapshot.services.len(),
        "state rebuilt from Service status; serving"
    );
    loop {
        let snapshot = Snapshot::take(&services, &pools, &namespaces);
        control.pass(&snapshot).await;
        notify.notified().await;
    }
}

/// The objects of one pass, sorted so that decisions are deterministic.
struct Snapshot {
    services: Vec<Arc<ServiceView>>,
    pools: Vec<Arc<IPAddressPool>>,
    namespaces: NamespaceLabels,
}

impl Snapshot {
    fn take(
        services: &Views<ServiceView>,
        pools: &Store<IPAddressPool>,
        namespaces: &Store<Namespace>,
    ) -> Self {
        let mut services = services.state();
        // Oldest first: the older Service wins a contested address.
        services.sort_by(|a, b| (a.created, &a.key).cmp(&(b.created, &b.key)));
        let mut pools = pools.state();
        pools.sort_by_key(|p| p.name_any());
        let namespaces = namespaces
            .state()
            .iter()
            .map(|ns| (ns.name_any(), ns.labels().clone()))
            .collect();
        Snapshot {
            services,
            pools,
            namespaces,
        }
    }

    fn namespace_labels(&self, namespace: &str) -> Labels {
        self.namespaces.get(namespace).cloned().unwrap_or_default()
    }
}

struct Control {
    client: Client,
    publisher: Publisher,
    class: Option<String>,
    allocator: Allocator,
    /// The pools last given to the allocator.
    pools: Option<Vec<Pool>>,
    /// Pools that could not be used, with the reason.
    invalid_pools: BTreeMap<String, String>,
    /// Pairs of usable pools that share addresses, as of the last change of pools.
    overlaps: Vec<(String, String)>,
    /// The last Event note per Service, so that Events are sent on change only.
    last_note: HashMap<ServiceKey, String>,
    /// The pool status last written.
    pool_status: HashMap<String, IPAddressPoolStatus>,
    /// Services dealt with: the resourceVersion decided on (or written from) and the
    /// generation of the allocator's inputs then. Until either changes there is nothing new
    /// to decide, so a pass does no work for settled Services. Failures are never settled.
    settled: HashMap<ServiceKey, (String, u64)>,
    /// Bumped whenever the pools or the namespaces' labels change, since either can change
    /// any Service's outcome.
    generation: u64,
    /// The namespaces' labels as of the last pass.
    namespaces: NamespaceLabels,
    metrics: Arc<Metrics>,
}

/// An Event decided outside a Service's writes (about a pool, or while rebuilding state),
/// sent once the decisions of the pass are made.
struct Told {
    object: ObjectReference,
    note: Note,
}

/// How many Services are written at once.
const WRITE_CONCURRENCY: usize = 32;

/// What one Service needs written, in order: metadata (finalizer, pool annotation), status,
/// then Events.
struct Writes {
    key: ServiceKey,
    resource_version: Option<String>,
    /// The allocator's inputs this plan was made under ([`Control::generation`]).
    generation: u64,
    /// The outcome is a failure to retry on the next pass, not a settled state.
    retry: bool,
    finalizers: Vec<String>,
    /// Add (`true`) or remove (`false`) the cleanup finalizer.
    finalizer: Option<bool>,
    /// Herald's annotations to set (`Some`) or remove (`None`).
    annotations: BTreeMap<&'static str, Option<String>>,
    /// The addresses to write into status; empty clears it.
    status: Option<Vec<IpAddr>>,
    events: Vec<Note>,
    object: k8s_openapi::api::core::v1::ObjectReference,
}

impl Writes {
    fn new(service: &ServiceView, generation: u64) -> Self {
        Writes {
            key: service.key.clone(),
            resource_version: service.resource_version.clone(),
            generation,
            retry: false,
            finalizers: service.finalizers.clone(),
            finalizer: None,
            annotations: BTreeMap::new(),
            status: None,
            events: Vec::new(),
            object: service.object_ref(),
        }
    }

    /// What marks the Service as dealt with until it or the allocator's inputs change.
    fn settled_as(&self) -> Option<(String, u64)> {
        let version = self.resource_version.clone()?;
        (!self.retry).then_some((version, self.generation))
    }

    fn needed(&self) -> bool {
        self.finalizer.is_some()
            || !self.annotations.is_empty()
            || self.status.is_some()
            || !self.events.is_empty()
    }

    /// Performs the writes; returns the key and whether they all succeeded. A failure is
    /// logged and left to the next pass.
    async fn execute(self, client: Client, publisher: Publisher) -> (Writes, bool) {
        let api: Api<Service> = Api::namespaced(client, &self.key.namespace);
        let params = PatchParams::default();
        let failed = |what: &str, e: kube::Error| {
            debug!(service = %self.key, error = %e, "{what} failed; the next pass retries");
        };
        if self.finalizer.is_some() || !self.annotations.is_empty() {
            let mut metadata = serde_json::Map::new();
            if let Some(present) = self.finalizer {
                let mut finalizers: Vec<&String> = self
                    .finalizers
                    .iter()
                    .filter(|f| *f != CLEANUP_FINALIZER)
                    .collect();
                let ours = CLEANUP_FINALIZER.to_owned();
                if present {
                    finalizers.push(&ours);
                }
                metadata.insert("finalizers".into(), json!(finalizers));
                // Guarded by the version read, so no one else's finalizer edit is lost.
                metadata.insert("resourceVersion".into(), json!(self.resource_version));
            }
            if !self.annotations.is_empty() {
                // A merge patch: `null` removes an annotation.
                metadata.insert("annotations".into(), json!(self.annotations));
            }
            let patch = Patch::Merge(json!({"metadata": metadata}));
            if let Err(e) = api.patch(&self.key.name, &params, &patch).await {
                failed("writing metadata", e);
                return (self, false);
            }
        }
        if let Some(ips) = &self.status {
            let ingress = if ips.is_empty() {
                serde_json::Value::Null
            } else {
                json!(
                    ips.iter()
                        .map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"}))
                        .collect::<Vec<_>>()
                )
            };
            let patch = Patch::Merge(json!({"status": {"loadBalancer": {"ingress": ingress}}}));
            if let Err(e) = api.patch_status(&self.key.name, &params, &patch).await {
                failed("writing status", e);
                return (self, false);
            }
        }
        for note in &self.events {
            publisher.publish(&self.object, note).await;
        }
        (self, true)
    }
}

impl Control {
    async fn pass(&mut self, snapshot: &Snapshot) {
        let told = self.sync_pools(snapshot);
        self.publish(told).await;
        if self.namespaces != snapshot.namespaces {
            self.namespaces = snapshot.namespaces.clone();
            self.generation += 1;
        }
        let mut present = BTreeSet::new();
        let mut planned = Vec::new();
        for service in &snapshot.services {
            present.insert(service.key.clone());
            planned.extend(self.plan(service, snapshot));
        }
        // Services deleted while nobody held a finalizer on them (or before a restart).
        let gone: Vec<ServiceKey> = self
            .allocator
            .services()
            .chain(self.last_note.keys())
            .filter(|k| !present.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            self.last_note.remove(&key);
            self.settled.remove(&key);
            self.allocator.release(&key);
        }
        // Decisions are made; the writes of different Services go out side by side.
        let (client, publisher) = (self.client.clone(), self.publisher.clone());
        let done: Vec<(Writes, bool)> = futures::stream::iter(planned)
            .map(|writes| writes.execute(client.clone(), publisher.clone()))
            .buffer_unordered(WRITE_CONCURRENCY)
            .collect()
            .await;
        for (writes, succeeded) in done {
            // A Service written from version V is settled at V: its next version (our own
            // write, coming back through the watch) is decided afresh and finds nothing to do.
            match writes.settled_as().filter(|_| succeeded) {
                Some(settled) => self.settled.insert(writes.key, settled),
                None => self.settled.remove(&writes.key),
            };
        }
        self.write_pool_status(snapshot).await;
    }

    /// Gives the allocator the current pools when they changed; the Events to send.
    fn sync_pools(&mut self, snapshot: &Snapshot) -> Vec<Told> {
        let mut told = Vec::new();
        let mut usable = Vec::new();
        let mut invalid = BTreeMap::new();
        for crd in &snapshot.pools {
            match translate::pool(crd) {
                Ok(pool) => usable.push(pool),
                Err(e) => {
                    let message = e.to_string();
                    // Said once: the pool's Valid condition carries the same message.
                    let said = self
                        .pool_status
                        .get(&crd.name_any())
                        .is_some_and(|s| s.conditions.iter().any(|c| c.message == message));
                    if !said {
                        warn!(pool = %crd.name_any(), reason = Reason::InvalidPool.as_str(), "{message}");
                        told.push(Told {
                            object: crd.object_ref(&()),
                            note: Reason::InvalidPool.note(message.clone()),
                        });
                    }
                    invalid.insert(crd.name_any(), message);
                }
            }
        }
        self.invalid_pools = invalid;
        if self.pools.as_ref() == Some(&usable) {
            return told;
        }
        let report = self.allocator.set_pools(usable.clone());
        self.pools = Some(usable);
        self.generation += 1;
        self.overlaps = report.overlaps;
        for (ip, holders) in &report.outside_pools {
            for holder in holders {
                if let Some(service) = snapshot.services.iter().find(|s| s.key == *holder) {
                    let note = format!(
                        "{ip} is no longer in any IPAddressPool; the Service keeps it until it is deleted or asks for another address"
                    );
                    told.extend(self.tell(service, Reason::IpOutsidePools, note));
                }
            }
        }
        told
    }

    /// Rebuilds the allocator from Service status; the Events to send.
    fn restore(&mut self, snapshot: &Snapshot) -> Vec<Told> {
        let mut told = Vec::new();
        for service in &snapshot.services {
            let ips = &service.status_ips;
            if ips.is_empty() || !service.eligibility.is_served(self.class.as_deref()) {
                continue;
            }
            let key = service.key.clone();
            let request = translate::request(service, &snapshot.namespace_labels(&key.namespace))
                .unwrap_or_else(|_| ServiceRequest::new(key.clone()));
            if let Err(e) = self.allocator.restore(&request, ips) {
                let note = format!("address in status cannot be kept: {e}; allocating another");
                told.extend(self.tell(service, Reason::AllocationConflict, note));
            }
        }
        told
    }

    /// Decides what `service` needs; the allocator is consulted here, in pass order.
    fn plan(&mut self, service: &ServiceView, snapshot: &Snapshot) -> Option<Writes> {
        let key = service.key.clone();
        // The hot path: most Services, most passes, have nothing new to decide.
        if let Some(version) = &service.resource_version
            && self
                .settled
                .get(&key)
                .is_some_and(|(v, g)| v == version && *g == self.generation)
        {
            return None;
        }
        let mut writes = Writes::new(service, self.generation);
        let has_finalizer = service.finalizers.iter().any(|f| f == CLEANUP_FINALIZER);
        if !service.eligibility.is_served(self.class.as_deref()) {
            let released = self.allocator.release(&key);
            if let Some(released) = &released {
                let note = format!("released {}", ips_text(&released.ips));
                info!(service = %key, "{note}");
                self.note(&mut writes, Reason::IpReleased, note);
            }
            // Only what Herald holds is released: the finalizer and status of a Service
            // another controller serves are that controller's.
            if released.is_some() || service.held_by(self.class.as_deref()) {
                if has_finalizer {
                    writes.finalizer = Some(false);
                }
                if !service.eligibility.deleting && !service.status_ips.is_empty() {
                    // No longer ours (type changed): take our address out of status.
                    writes.status = Some(Vec::new());
                }
                for mark in annotations::WRITTEN {
                    if service.annotations.contains_key(mark) {
                        writes.annotations.insert(mark, None);
                    }
                }
            }
            self.last_note.remove(&key);
            return self.unless_settled(writes);
        }
        if !has_finalizer {
            writes.finalizer = Some(true);
        }
        let mark = annotations::served_value(self.class.as_deref());
        if service.annotations.get(SERVED).map(String::as_str) != Some(mark) {
            writes.annotations.insert(SERVED, Some(mark.to_owned()));
        }
        match translate::request(service, &snapshot.namespace_labels(&key.namespace)) {
            Err(e) => self.note(&mut writes, Reason::InvalidService, e.to_string()),
            Ok(request) => match self.allocator.assign(&request) {
                Ok(assignment) => {
                    if service.status_ips != assignment.ips {
                        let from = assignment
                            .pool
                            .as_ref()
                            .map(|p| format!(" from pool {p}"))
                            .unwrap_or_default();
                        let note = format!("Assigned IP {}{from}", ips_text(&assignment.ips));
                        info!(service = %key, "{note}");
                        writes.status = Some(assignment.ips.clone());
                        self.note(&mut writes, Reason::IpAllocated, note);
                    }
                    if let Some(pool) = assignment.pool
                        && service.annotations.get(IP_ALLOCATED_FROM_POOL) != Some(&pool)
                    {
                        writes
                            .annotations
                            .insert(IP_ALLOCATED_FROM_POOL, Some(pool));
                    }
                }
                Err(e) => {
                    let kept = self
                        .allocator
                        .assignment(&key)
                        .map(|a| format!("; keeps {}", ips_text(&a.ips)))
                        .unwrap_or_default();
                    writes.retry = true;
                    self.note(&mut writes, Reason::AllocationFailed, format!("{e}{kept}"));
                }
            },
        }
        self.unless_settled(writes)
    }

    /// The writes to perform, or `None` when there are none; a Service needing nothing is
    /// settled at once.
    fn unless_settled(&mut self, writes: Writes) -> Option<Writes> {
        if writes.needed() {
            return Some(writes);
        }
        if let Some(settled) = writes.settled_as() {
            self.settled.insert(writes.key, settled);
        }
        None
    }

    /// The Event to send about `service` now, outside its writes (unless it was the last one
    /// sent for this Service).
    fn tell(&mut self, service: &ServiceView, reason: Reason, note: String) -> Option<Told> {
        let note = self.event(&service.key, reason, note)?;
        Some(Told {
            object: service.object_ref(),
            note,
        })
    }

    /// Sends Events decided outside a Service's writes.
    async fn publish(&self, told: Vec<Told>) {
        for Told { object, note } in told {
            self.publisher.publish(&object, &note).await;
        }
    }

    /// Queues an Event with the Service's writes (see [`Control::event`]).
    fn note(&mut self, writes: &mut Writes, reason: Reason, note: String) {
        if let Some(event) = self.event(&writes.key, reason, note) {
            writes.events.push(event);
        }
    }

    /// The Event about Service `key`, logged and counted, unless the same one was the last
    /// sent for it.
    fn event(&mut self, key: &ServiceKey, reason: Reason, note: String) -> Option<Note> {
        let text = format!("{}: {note}", reason.as_str());
        if self.last_note.get(key) == Some(&text) {
            return None;
        }
        if matches!(reason.severity(), Severity::Warning) {
            warn!(service = %key, reason = reason.as_str(), "{note}");
        }
        reason.count(&self.metrics);
        self.last_note.insert(key.clone(), text);
        Some(reason.note(note))
    }

    /// Writes each pool's counts and conditions when they changed.
    async fn write_pool_status(&mut self, snapshot: &Snapshot) {
        let api: Api<IPAddressPool> = Api::all(self.client.clone());
        for crd in &snapshot.pools {
            let name = crd.name_any();
            let usage = self.allocator.usage(&name).unwrap_or_default();
            for family in Family::ALL {
                for (state, value) in [
                    ("assigned", usage.assigned(family)),
                    ("available", usage.available(family)),
                ] {
                    let labels = PoolLabels {
                        pool: name.clone(),
                        family: family.to_string().to_lowercase(),
                        state: state.to_owned(),
                    };
                    // A gauge is a float: exact to 2^53, close enough beyond.
                    self.metrics
                        .pool_addresses
                        .get_or_create(&labels)
                        .set(value as f64);
                }
            }
            let previous = crd.status.clone().unwrap_or_default();
            let facts = PoolFacts {
                name: &name,
                usage: &usage,
                invalid: self.invalid_pools.get(&name).map(String::as_str),
                overlaps: &self.overlaps,
            };
            let status = pool_status(facts, &previous, Timestamp::now());
            if crd.status.as_ref() == Some(&status) || self.pool_status.get(&name) == Some(&status)
            {
                continue;
            }
            let patch = json!({"status": status});
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await
            {
                Ok(_) => {
                    self.pool_status.insert(name, status);
                }
                Err(e) => {
                    debug!(pool = %name, error = %e, "writing pool status failed; the next pass retries")
                }
            }
        }
    }
}

fn ips_text(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
