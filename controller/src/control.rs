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

use futures::{Stream, StreamExt};
use herald_api::{
    IPAddressPool, IPAddressPoolStatus,
    annotations::{CLEANUP_FINALIZER, IP_ALLOCATED_FROM_POOL},
};
use herald_ipam::{Allocator, Assignment, Family, Labels, Pool, ServiceKey, ServiceRequest};
use k8s_openapi::{
    api::core::v1::{Namespace, Service},
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        WatchStreamExt,
        events::{Event, EventType, Recorder, Reporter},
        reflector::{self, Store},
        watcher,
    },
};
use serde_json::json;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::translate::{self, NamespaceLabels};

/// What the loop is told at start.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The `loadBalancerClass` served; `None` serves Services without a class.
    pub(crate) class: Option<String>,
    /// Who reports Events.
    pub(crate) reporter: Reporter,
}

/// Runs the controller until the process ends.
pub(crate) async fn run(client: Client, settings: Settings) -> anyhow::Result<()> {
    let notify = Arc::new(Notify::new());
    let services = watch::<Service>(Api::all(client.clone()), &notify);
    let pools = watch::<IPAddressPool>(Api::all(client.clone()), &notify);
    let namespaces = watch::<Namespace>(Api::all(client.clone()), &notify);
    for (what, ready) in [
        ("Services", services.wait_until_ready().await),
        ("IPAddressPools", pools.wait_until_ready().await),
        ("Namespaces", namespaces.wait_until_ready().await),
    ] {
        ready
            .map_err(|e| anyhow::anyhow!("the watch of {what} ended before its first list: {e}"))?;
    }
    let mut control = Control {
        recorder: Recorder::new(client.clone(), settings.reporter),
        client,
        class: settings.class,
        allocator: Allocator::new(),
        pools: None,
        pool_problems: BTreeMap::new(),
        last_note: HashMap::new(),
        pool_status: HashMap::new(),
    };
    let snapshot = Snapshot::take(&services, &pools, &namespaces);
    control.sync_pools(&snapshot).await;
    control.restore(&snapshot).await;
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

/// Watches `api` into a store, waking the loop on every change.
fn watch<K>(api: Api<K>, notify: &Arc<Notify>) -> Store<K>
where
    K: Resource + Clone + std::fmt::Debug + Send + Sync + serde::de::DeserializeOwned + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    tokio::spawn(drive(stream, notify.clone(), std::any::type_name::<K>()));
    store
}

async fn drive<S, T>(stream: S, notify: Arc<Notify>, what: &'static str)
where
    S: Stream<Item = Result<T, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(_) => notify.notify_one(),
            Err(e) => warn!(%what, error = %e, "watch error; retrying with backoff"),
        }
    }
}

/// The objects of one pass, sorted so that decisions are deterministic.
struct Snapshot {
    services: Vec<Arc<Service>>,
    pools: Vec<Arc<IPAddressPool>>,
    namespaces: NamespaceLabels,
}

impl Snapshot {
    fn take(
        services: &Store<Service>,
        pools: &Store<IPAddressPool>,
        namespaces: &Store<Namespace>,
    ) -> Self {
        let mut services = services.state();
        // Oldest first: the older Service wins a contested address.
        services.sort_by(|a, b| {
            (
                a.metadata.creation_timestamp.as_ref().map(|t| t.0),
                translate::key(a),
            )
                .cmp(&(
                    b.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    translate::key(b),
                ))
        });
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
    recorder: Recorder,
    class: Option<String>,
    allocator: Allocator,
    /// The pools last given to the allocator.
    pools: Option<Vec<Pool>>,
    /// Pools that could not be used, with the reason, and those overlapping others.
    pool_problems: BTreeMap<String, Vec<Condition>>,
    /// The last Event note per Service, so that Events are sent on change only.
    last_note: HashMap<ServiceKey, String>,
    /// The pool status last written.
    pool_status: HashMap<String, IPAddressPoolStatus>,
}

impl Control {
    async fn pass(&mut self, snapshot: &Snapshot) {
        self.sync_pools(snapshot).await;
        let mut present = BTreeSet::new();
        for service in &snapshot.services {
            present.insert(translate::key(service));
            self.reconcile(service, snapshot).await;
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
            self.allocator.release(&key);
        }
        self.write_pool_status(snapshot).await;
    }

    /// Gives the allocator the current pools when they changed.
    async fn sync_pools(&mut self, snapshot: &Snapshot) {
        let mut usable = Vec::new();
        let mut problems: BTreeMap<String, Vec<Condition>> = BTreeMap::new();
        for crd in &snapshot.pools {
            match translate::pool(crd) {
                Ok(pool) => usable.push(pool),
                Err(e) => {
                    problems.entry(crd.name_any()).or_default().push(condition(
                        "Valid",
                        false,
                        "InvalidSpec",
                        &e.to_string(),
                    ));
                    self.warn_about_pool(crd, "InvalidPool", &e.to_string())
                        .await;
                }
            }
        }
        if self.pools.as_ref() != Some(&usable) {
            let report = self.allocator.set_pools(usable.clone());
            self.pools = Some(usable);
            for (a, b) in &report.overlaps {
                for (pool, other) in [(a, b), (b, a)] {
                    problems.entry(pool.clone()).or_default().push(condition(
                        "Overlapping",
                        true,
                        "SharesAddresses",
                        &format!("shares addresses with IPAddressPool {other}; each address is still given to one Service only"),
                    ));
                }
            }
            for (ip, holders) in &report.outside_pools {
                for holder in holders {
                    if let Some(service) = snapshot
                        .services
                        .iter()
                        .find(|s| translate::key(s) == *holder)
                    {
                        let note = format!(
                            "{ip} is no longer in any IPAddressPool; the Service keeps it until it is deleted or asks for another address"
                        );
                        self.note(service, EventType::Warning, "IPOutsidePools", &note)
                            .await;
                    }
                }
            }
            self.pool_problems = problems;
        } else {
            // Overlap conditions stay as computed when the pools last changed.
            for (name, conditions) in problems {
                self.pool_problems.insert(name, conditions);
            }
        }
    }

    /// Rebuilds the allocator from Service status.
    async fn restore(&mut self, snapshot: &Snapshot) {
        for service in &snapshot.services {
            let ips = translate::status_ips(service);
            if ips.is_empty() || !translate::is_served(service, self.class.as_deref()) {
                continue;
            }
            let key = translate::key(service);
            let request = translate::request(service, &snapshot.namespace_labels(&key.namespace))
                .unwrap_or_else(|_| ServiceRequest::new(key.clone()));
            if let Err(e) = self.allocator.restore(&request, &ips) {
                warn!(service = %key, error = %e, "address in status cannot be kept");
                let note = format!("address in status cannot be kept: {e}; allocating another");
                self.note(service, EventType::Warning, "AllocationConflict", &note)
                    .await;
            }
        }
    }

    async fn reconcile(&mut self, service: &Service, snapshot: &Snapshot) {
        let key = translate::key(service);
        let has_finalizer = service.finalizers().iter().any(|f| f == CLEANUP_FINALIZER);
        if !translate::is_served(service, self.class.as_deref()) {
            if let Some(released) = self.allocator.release(&key) {
                let note = format!("released {}", ips_text(&released.ips));
                info!(service = %key, "{note}");
                self.note(service, EventType::Normal, "IPReleased", &note)
                    .await;
            }
            if has_finalizer {
                if service.metadata.deletion_timestamp.is_none()
                    && !translate::status_ips(service).is_empty()
                {
                    // No longer ours (type or class changed): take our address out of status.
                    self.write(service, "clearing status", |api, name| async move {
                        api.patch_status(
                            &name,
                            &PatchParams::default(),
                            &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": null}}})),
                        )
                        .await
                        .map(drop)
                    })
                    .await;
                }
                self.set_finalizer(service, false).await;
            }
            self.last_note.remove(&key);
            return;
        }
        if !has_finalizer && !self.set_finalizer(service, true).await {
            return;
        }
        let request = match translate::request(service, &snapshot.namespace_labels(&key.namespace))
        {
            Ok(request) => request,
            Err(e) => {
                self.note(
                    service,
                    EventType::Warning,
                    "InvalidService",
                    &e.to_string(),
                )
                .await;
                return;
            }
        };
        match self.allocator.assign(&request) {
            Ok(assignment) => self.publish(service, &assignment).await,
            Err(e) => {
                let kept = self
                    .allocator
                    .assignment(&key)
                    .map(|a| format!("; keeps {}", ips_text(&a.ips)))
                    .unwrap_or_default();
                self.note(
                    service,
                    EventType::Warning,
                    "AllocationFailed",
                    &format!("{e}{kept}"),
                )
                .await;
            }
        }
    }

    /// Writes the assignment into the Service's status and annotation, if it differs.
    async fn publish(&mut self, service: &Service, assignment: &Assignment) {
        let pool = assignment.pool.as_deref();
        if translate::status_ips(service) != assignment.ips {
            let ingress: Vec<_> = assignment
                .ips
                .iter()
                .map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"}))
                .collect();
            let status = json!({"status": {"loadBalancer": {"ingress": ingress}}});
            let written = self
                .write(service, "writing status", |api, name| async move {
                    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                        .await
                        .map(drop)
                })
                .await;
            if written {
                let from = pool.map(|p| format!(" from pool {p}")).unwrap_or_default();
                let note = format!("Assigned IP {}{from}", ips_text(&assignment.ips));
                info!(service = %translate::key(service), "{note}");
                self.note(service, EventType::Normal, "IPAllocated", &note)
                    .await;
            }
        }
        if let Some(pool) = pool
            && service
                .annotations()
                .get(IP_ALLOCATED_FROM_POOL)
                .map(String::as_str)
                != Some(pool)
        {
            let patch = json!({"metadata": {"annotations": {IP_ALLOCATED_FROM_POOL: pool}}});
            self.write(service, "annotating", |api, name| async move {
                api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                    .map(drop)
            })
            .await;
        }
    }

    /// Adds or removes the cleanup finalizer, guarded by the resourceVersion that was read.
    async fn set_finalizer(&self, service: &Service, present: bool) -> bool {
        let mut finalizers: Vec<String> = service
            .finalizers()
            .iter()
            .filter(|f| *f != CLEANUP_FINALIZER)
            .cloned()
            .collect();
        if present {
            finalizers.push(CLEANUP_FINALIZER.to_owned());
        }
        let patch = json!({"metadata": {
            "finalizers": finalizers,
            "resourceVersion": service.resource_version(),
        }});
        let what = if present {
            "adding the finalizer"
        } else {
            "removing the finalizer"
        };
        self.write(service, what, |api, name| async move {
            api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .map(drop)
        })
        .await
    }

    /// Runs one write against the Service; a failure is logged and left to the next pass.
    async fn write<F, Fut>(&self, service: &Service, what: &str, write: F) -> bool
    where
        F: FnOnce(Api<Service>, String) -> Fut,
        Fut: Future<Output = Result<(), kube::Error>>,
    {
        let api = Api::namespaced(
            self.client.clone(),
            &service.namespace().unwrap_or_default(),
        );
        match write(api, service.name_any()).await {
            Ok(()) => true,
            Err(e) => {
                debug!(service = %translate::key(service), error = %e, "{what} failed; the next pass retries");
                false
            }
        }
    }

    /// Sends an Event unless the same note was the last one sent for this Service.
    async fn note(&mut self, service: &Service, type_: EventType, reason: &str, note: &str) {
        let key = translate::key(service);
        let text = format!("{reason}: {note}");
        if self.last_note.get(&key) == Some(&text) {
            return;
        }
        if type_ == EventType::Warning {
            warn!(service = %key, reason, "{note}");
        }
        self.last_note.insert(key, text);
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note.to_owned()),
            action: "Allocate".to_owned(),
            secondary: None,
        };
        if let Err(e) = self
            .recorder
            .publish(&event, &service.object_ref(&()))
            .await
        {
            debug!(error = %e, "publishing an Event failed");
        }
    }

    async fn warn_about_pool(&self, pool: &IPAddressPool, reason: &str, note: &str) {
        if self
            .pool_status
            .get(&pool.name_any())
            .is_some_and(|s| s.conditions.iter().any(|c| c.message == note))
        {
            return;
        }
        warn!(pool = %pool.name_any(), reason, "{note}");
        let event = Event {
            type_: EventType::Warning,
            reason: reason.to_owned(),
            note: Some(note.to_owned()),
            action: "Validate".to_owned(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &pool.object_ref(&())).await {
            debug!(error = %e, "publishing an Event failed");
        }
    }

    /// Writes each pool's counts and conditions when they changed.
    async fn write_pool_status(&mut self, snapshot: &Snapshot) {
        let api: Api<IPAddressPool> = Api::all(self.client.clone());
        for crd in &snapshot.pools {
            let name = crd.name_any();
            let usage = self.allocator.usage(&name).unwrap_or_default();
            let count = |n: u128| i64::try_from(n).unwrap_or(i64::MAX);
            let previous = crd.status.clone().unwrap_or_default();
            let mut conditions = self.pool_problems.get(&name).cloned().unwrap_or_default();
            if !conditions.iter().any(|c| c.type_ == "Overlapping") {
                conditions.push(condition(
                    "Overlapping",
                    false,
                    "NoOverlap",
                    "no other pool shares addresses with this one",
                ));
            }
            // Keep the transition time of conditions whose status did not change.
            for c in &mut conditions {
                if let Some(old) = previous
                    .conditions
                    .iter()
                    .find(|o| o.type_ == c.type_ && o.status == c.status)
                {
                    c.last_transition_time = old.last_transition_time.clone();
                }
            }
            let status = IPAddressPoolStatus {
                assigned_ipv4: count(usage.assigned(Family::Ipv4)),
                available_ipv4: count(usage.available(Family::Ipv4)),
                assigned_ipv6: count(usage.assigned(Family::Ipv6)),
                available_ipv6: usage.available(Family::Ipv6).to_string(),
                conditions,
            };
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

fn condition(type_: &str, status: bool, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        last_transition_time: Time(Timestamp::now()),
        observed_generation: None,
    }
}

fn ips_text(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
