//! The controller's decisions, apart from its writes. Given a [`Snapshot`] of Services, pools
//! and namespaces, [`Decider::pass`] consults the allocator and says what must be written: each
//! Service's finalizer, annotations, status and Events, Events about pools, and pool status.
//! [`Decider::record`] learns which writes landed. No I/O, so every decision is tested with a
//! plain `#[test]`; the writes themselves are [`crate::write`]'s.
//!
//! ```text
//!   Snapshot ─► Decider::pass ─► Vec<Write> ─► Writer::apply ─► Vec<(Write, landed)>
//!                 ▲ allocator, settled, last Events                      │
//!                 └──────────────────── Decider::record ◄────────────────┘
//! ```
//!
//! On start [`Decider::restore`] rebuilds the allocator from what Service status says (oldest
//! Service first, so on a double claim the older one keeps its address). Every pass compares the
//! wanted state with the objects and writes only the difference; a write that fails (a
//! conflict, a dropped connection, the Lease lost) is decided again by the next pass, which
//! the loop runs after a backoff when writes failed ([`crate::control`]).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    sync::Arc,
};

use herald_api::{
    ConfigurationStatus, IPAddressPool, IPAddressPoolStatus,
    annotations::{self, CLEANUP_FINALIZER, IP_ALLOCATED_FROM_POOL, SERVED},
    service::ServiceView,
};
use herald_domain::{Labels, ServiceKey};
use herald_ipam::{Allocator, Pool, PoolUsage, ServiceRequest};
use herald_shell::events::Severity;
use k8s_openapi::{api::core::v1::ObjectReference, jiff::Timestamp};
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use crate::{
    judge::{Configuration, judge},
    reason::Reason,
    status::{PoolFacts, configuration_status, pool_status},
    translate::{self, NamespaceLabels},
};

/// The objects of one pass, sorted so that decisions are deterministic.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    services: Vec<Arc<ServiceView>>,
    pools: Vec<Arc<IPAddressPool>>,
    namespaces: NamespaceLabels,
    /// The configuration objects, judged into their conditions.
    configuration: Configuration,
}

impl Snapshot {
    pub(crate) fn new(
        mut services: Vec<Arc<ServiceView>>,
        mut pools: Vec<Arc<IPAddressPool>>,
        namespaces: NamespaceLabels,
    ) -> Self {
        // Oldest first: the older Service wins a contested address.
        services.sort_by(|a, b| (a.created, &a.key).cmp(&(b.created, &b.key)));
        pools.sort_by_key(|p| p.name_any());
        Snapshot {
            services,
            pools,
            namespaces,
            configuration: Configuration::default(),
        }
    }

    /// The snapshot with the configuration objects of the same moment.
    pub(crate) fn with_configuration(mut self, configuration: Configuration) -> Self {
        self.configuration = configuration;
        self
    }

    pub(crate) fn services(&self) -> usize {
        self.services.len()
    }

    fn namespace_labels(&self, namespace: &str) -> Labels {
        self.namespaces.get(namespace).cloned().unwrap_or_default()
    }
}

/// One thing the controller decided to write.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Write {
    /// An Event decided outside a Service's writes: about a pool, or while rebuilding state.
    Event {
        object: ObjectReference,
        event: Event,
    },
    /// What one Service needs.
    Service(ServiceWrite),
    /// A pool's counts and conditions, when they changed.
    PoolStatus {
        name: String,
        status: IPAddressPoolStatus,
    },
    /// A configuration object's `Ready` condition, when it changed, and the Event telling it
    /// (sent once the status landed).
    ConfigurationStatus {
        object: ObjectReference,
        status: ConfigurationStatus,
        event: Option<Event>,
    },
}

/// An Event to send: its reason (which owns its severity and metric) and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    pub(crate) reason: Reason,
    pub(crate) message: String,
}

/// What one Service needs written, in order: metadata (finalizer, annotations), status, then
/// Events.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServiceWrite {
    pub(crate) key: ServiceKey,
    /// The version decided on; a finalizer change is guarded by it.
    pub(crate) resource_version: Option<String>,
    /// The allocator's inputs this was decided under ([`Decider::generation`]).
    generation: u64,
    /// The outcome is a failure to retry on the next pass, not a settled state.
    retry: bool,
    /// The Service's finalizers as read.
    pub(crate) finalizers: Vec<String>,
    /// Add (`true`) or remove (`false`) the cleanup finalizer.
    pub(crate) finalizer: Option<bool>,
    /// Herald's annotations to set (`Some`) or remove (`None`).
    pub(crate) annotations: BTreeMap<&'static str, Option<String>>,
    /// The addresses to write into status; empty clears it.
    pub(crate) status: Option<Vec<IpAddr>>,
    pub(crate) events: Vec<Event>,
    pub(crate) object: ObjectReference,
}

impl ServiceWrite {
    fn new(service: &ServiceView, generation: u64) -> Self {
        ServiceWrite {
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
}

/// The controller's state between passes: the allocator and what it remembers of its writes.
pub(crate) struct Decider {
    /// The `loadBalancerClass` served; `None` serves Services without a class.
    class: Option<String>,
    allocator: Allocator,
    /// The pools last given to the allocator.
    pools: Option<Vec<Pool>>,
    /// Pools that could not be used, with the reason.
    invalid_pools: BTreeMap<String, String>,
    /// Pairs of usable pools that share addresses, as of the last change of pools.
    overlaps: Vec<(String, String)>,
    /// The last Event per Service, so that Events are sent on change only.
    last_event: HashMap<ServiceKey, Event>,
    /// The pool status last written.
    pool_status: HashMap<String, IPAddressPoolStatus>,
    /// The configuration status last written, by kind and name.
    configuration_status: HashMap<(String, String), ConfigurationStatus>,
    /// How many configuration objects are not in effect, by kind, as of the last pass.
    not_in_effect: BTreeMap<String, i64>,
    /// Services dealt with: the resourceVersion decided on (or written from) and the
    /// generation of the allocator's inputs then. Until either changes there is nothing new
    /// to decide, so a pass does no work for settled Services. Failures are never settled.
    settled: HashMap<ServiceKey, (String, u64)>,
    /// Bumped whenever the pools or the namespaces' labels change, since either can change
    /// any Service's outcome.
    generation: u64,
    /// The namespaces' labels as of the last pass.
    namespaces: NamespaceLabels,
    /// Herald is being uninstalled: every Service is released, none is served.
    releasing: bool,
}

impl Decider {
    pub(crate) fn new(class: Option<String>) -> Self {
        Decider {
            class,
            allocator: Allocator::new(),
            pools: None,
            invalid_pools: BTreeMap::new(),
            overlaps: Vec::new(),
            last_event: HashMap::new(),
            pool_status: HashMap::new(),
            configuration_status: HashMap::new(),
            not_in_effect: BTreeMap::new(),
            settled: HashMap::new(),
            generation: 0,
            namespaces: NamespaceLabels::new(),
            releasing: false,
        }
    }

    /// While `releasing` (Herald being uninstalled), every Service is given back what Herald
    /// holds of it (finalizer, address in status, marks) and none is served, new ones
    /// included; once it is over, Services are served again.
    pub(crate) fn set_releasing(&mut self, releasing: bool) {
        if self.releasing != releasing {
            self.releasing = releasing;
            self.generation += 1;
        }
    }

    /// Whether every Service is being released.
    pub(crate) fn releasing(&self) -> bool {
        self.releasing
    }

    /// Whether no Service of `snapshot` holds anything of Herald's: no address from it, no
    /// mark of it.
    pub(crate) fn holds_nothing(&self, snapshot: &Snapshot) -> bool {
        snapshot.services.iter().all(|s| {
            self.allocator.assignment(&s.key).is_none() && !s.held_by(self.class.as_deref())
        })
    }

    /// Whether this Decider serves `service` now.
    fn serves(&self, service: &ServiceView) -> bool {
        !self.releasing && service.eligibility.is_served(self.class.as_deref())
    }

    /// Rebuilds the allocator from the pools and what Service status says; the Events to send.
    pub(crate) fn restore(&mut self, snapshot: &Snapshot) -> Vec<Write> {
        let mut writes = self.sync_pools(snapshot);
        for service in &snapshot.services {
            let ips = &service.status_ips;
            if ips.is_empty() || !self.serves(service) {
                continue;
            }
            let key = service.key.clone();
            let request = translate::request(service, &snapshot.namespace_labels(&key.namespace))
                .unwrap_or_else(|_| ServiceRequest::new(key.clone()));
            if let Err(e) = self.allocator.restore(&request, ips) {
                let note = format!("address in status cannot be kept: {e}; allocating another");
                writes.extend(self.tell(service, Reason::AllocationConflict, note));
            }
        }
        writes
    }

    /// Decides everything the snapshot needs written, at `now` (the time a changed pool
    /// condition carries).
    pub(crate) fn pass(&mut self, snapshot: &Snapshot, now: Timestamp) -> Vec<Write> {
        let mut writes = self.sync_pools(snapshot);
        if self.namespaces != snapshot.namespaces {
            self.namespaces = snapshot.namespaces.clone();
            self.generation += 1;
        }
        let mut present = BTreeSet::new();
        for service in &snapshot.services {
            present.insert(service.key.clone());
            writes.extend(self.plan(service, snapshot).map(Write::Service));
        }
        // Services deleted while nobody held a finalizer on them (or before a restart).
        let gone: Vec<ServiceKey> = self
            .allocator
            .services()
            .chain(self.last_event.keys())
            .filter(|k| !present.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            self.last_event.remove(&key);
            self.settled.remove(&key);
            self.allocator.release(&key);
        }
        writes.extend(self.pool_statuses(snapshot, now));
        writes.extend(self.configuration_statuses(snapshot, now));
        writes
    }

    /// Learns which writes landed: a Service written from version V is settled at V (its
    /// next version, our own write coming back through the watch, is decided afresh and finds
    /// nothing to do); one whose writes failed is decided again, its Events with it.
    pub(crate) fn record(&mut self, done: Vec<(Write, bool)>) {
        for (write, landed) in done {
            match write {
                Write::Service(writes) => match writes.settled_as().filter(|_| landed) {
                    Some(settled) => {
                        self.settled.insert(writes.key, settled);
                    }
                    None => {
                        self.settled.remove(&writes.key);
                        if !landed {
                            self.last_event.remove(&writes.key);
                        }
                    }
                },
                Write::PoolStatus { name, status } if landed => {
                    self.pool_status.insert(name, status);
                }
                Write::ConfigurationStatus { object, status, .. } => {
                    let key = object_key(&object);
                    if landed {
                        self.configuration_status.insert(key, status);
                    } else {
                        self.configuration_status.remove(&key);
                    }
                }
                _ => {}
            }
        }
    }

    /// How many configuration objects are not in effect, by kind, for the metrics.
    pub(crate) fn not_in_effect(&self) -> &BTreeMap<String, i64> {
        &self.not_in_effect
    }

    /// How many Services this Herald serves hold no address (none free, a requested one
    /// taken, no pool for them), for the metrics and their alert.
    pub(crate) fn without_address(&self, snapshot: &Snapshot) -> usize {
        snapshot
            .services
            .iter()
            .filter(|s| self.serves(s))
            .filter(|s| self.allocator.assignment(&s.key).is_none())
            .count()
    }

    /// The address counts of every pool of the snapshot, for the metrics.
    pub(crate) fn pool_usage(&self, snapshot: &Snapshot) -> Vec<(String, PoolUsage)> {
        snapshot
            .pools
            .iter()
            .map(|crd| {
                let name = crd.name_any();
                let usage = self.allocator.usage(&name).unwrap_or_default();
                (name, usage)
            })
            .collect()
    }

    /// Gives the allocator the current pools when they changed; the Events to send.
    fn sync_pools(&mut self, snapshot: &Snapshot) -> Vec<Write> {
        let mut writes = Vec::new();
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
                        writes.push(Write::Event {
                            object: crd.object_ref(&()),
                            event: Event {
                                reason: Reason::InvalidPool,
                                message: message.clone(),
                            },
                        });
                    }
                    invalid.insert(crd.name_any(), message);
                }
            }
        }
        self.invalid_pools = invalid;
        if self.pools.as_ref() == Some(&usable) {
            return writes;
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
                    writes.extend(self.tell(service, Reason::IpOutsidePools, note));
                }
            }
        }
        writes
    }

    /// Decides what `service` needs; the allocator is consulted here, in pass order.
    fn plan(&mut self, service: &ServiceView, snapshot: &Snapshot) -> Option<ServiceWrite> {
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
        let mut writes = ServiceWrite::new(service, self.generation);
        let has_finalizer = service.finalizers.iter().any(|f| f == CLEANUP_FINALIZER);
        if !self.serves(service) {
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
                    // No longer ours (type changed, Herald uninstalled): take our address
                    // out of status.
                    writes.status = Some(Vec::new());
                }
                for mark in annotations::WRITTEN {
                    if service.annotations.contains_key(mark) {
                        writes.annotations.insert(mark, None);
                    }
                }
            }
            self.last_event.remove(&key);
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
    fn unless_settled(&mut self, writes: ServiceWrite) -> Option<ServiceWrite> {
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
    fn tell(&mut self, service: &ServiceView, reason: Reason, note: String) -> Option<Write> {
        let event = self.event(&service.key, reason, note)?;
        Some(Write::Event {
            object: service.object_ref(),
            event,
        })
    }

    /// Queues an Event with the Service's writes (see [`Decider::event`]).
    fn note(&mut self, writes: &mut ServiceWrite, reason: Reason, note: String) {
        if let Some(event) = self.event(&writes.key, reason, note) {
            writes.events.push(event);
        }
    }

    /// The Event about Service `key`, logged, unless the same one was the last sent for it.
    fn event(&mut self, key: &ServiceKey, reason: Reason, message: String) -> Option<Event> {
        let event = Event { reason, message };
        if self.last_event.get(key) == Some(&event) {
            return None;
        }
        if matches!(reason.severity(), Severity::Warning) {
            warn!(service = %key, reason = reason.as_str(), "{}", event.message);
        }
        self.last_event.insert(key.clone(), event.clone());
        Some(event)
    }

    /// Each pool's counts and conditions, where they differ from what it has and from what
    /// was last written.
    fn pool_statuses(&self, snapshot: &Snapshot, now: Timestamp) -> Vec<Write> {
        let mut writes = Vec::new();
        for crd in &snapshot.pools {
            let name = crd.name_any();
            let usage = self.allocator.usage(&name).unwrap_or_default();
            // What was written may not be back through the watch yet: it, not the object,
            // says when a condition last changed (as for the configuration kinds).
            let read = crd.status.clone().unwrap_or_default();
            let previous = self.pool_status.get(&name).unwrap_or(&read);
            let facts = PoolFacts {
                name: &name,
                usage: &usage,
                invalid: self.invalid_pools.get(&name).map(String::as_str),
                overlaps: &self.overlaps,
            };
            let status = pool_status(facts, previous, now);
            if crd.status.as_ref() != Some(&status) && self.pool_status.get(&name) != Some(&status)
            {
                writes.push(Write::PoolStatus { name, status });
            }
        }
        writes
    }
}

impl Decider {
    /// Each configuration object's `Ready` condition, where it differs from what the object
    /// has and from what was last written; an Event goes with it when the object stops (or
    /// goes on not) being in effect for a new reason, or is in effect again.
    fn configuration_statuses(&mut self, snapshot: &Snapshot, now: Timestamp) -> Vec<Write> {
        let verdicts = judge(&snapshot.configuration, &snapshot.pools);
        self.not_in_effect.clear();
        for verdict in verdicts.iter().filter(|v| !v.in_effect()) {
            *self
                .not_in_effect
                .entry(verdict.object.kind.clone().unwrap_or_default())
                .or_insert(0) += 1;
        }
        let present: BTreeSet<(String, String)> =
            verdicts.iter().map(|v| object_key(&v.object)).collect();
        self.configuration_status
            .retain(|key, _| present.contains(key));
        let mut writes = Vec::new();
        for verdict in verdicts {
            let key = object_key(&verdict.object);
            // What was written may not be back through the watch yet: it, not the object,
            // says when the condition last changed.
            let previous = self
                .configuration_status
                .get(&key)
                .unwrap_or(&verdict.current);
            let status = configuration_status(&verdict, previous, now);
            if verdict.current == status || self.configuration_status.get(&key) == Some(&status) {
                continue;
            }
            let told = verdict
                .current_ready()
                .map(|c| (c.status == "True", c.message.as_str()));
            let event = match (verdict.in_effect(), told) {
                (false, told) if told != Some((false, verdict.message.as_str())) => {
                    warn!(object = ?verdict.object.name, kind = ?verdict.object.kind, "{}", verdict.message);
                    Some(Reason::NotInEffect)
                }
                (true, Some((false, _))) => Some(Reason::InEffect),
                _ => None,
            }
            .map(|reason| Event {
                reason,
                message: verdict.message.clone(),
            });
            writes.push(Write::ConfigurationStatus {
                object: verdict.object,
                status,
                event,
            });
        }
        writes
    }
}

/// A configuration object's kind and name.
fn object_key(object: &ObjectReference) -> (String, String) {
    (
        object.kind.clone().unwrap_or_default(),
        object.name.clone().unwrap_or_default(),
    )
}

fn ips_text(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use herald_api::BGPPeer;
    use herald_api::annotations::{CLEANUP_FINALIZER, IP_ALLOCATED_FROM_POOL, SERVED};
    use k8s_openapi::api::core::v1::Service;
    use serde_json::{Value, json};

    use super::*;

    fn pool(name: &str, addresses: &[&str]) -> Arc<IPAddressPool> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "herald.dev/v1alpha1", "kind": "IPAddressPool",
                "metadata": {"name": name}, "spec": {"addresses": addresses}
            }))
            .expect("a valid pool"),
        )
    }

    /// A Service at resourceVersion `version`, created `age` seconds after the epoch.
    fn service(name: &str, age: i64, version: &str, rest: Value) -> Arc<ServiceView> {
        let mut object = json!({
            "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"),
                         "resourceVersion": version,
                         "creationTimestamp": Timestamp::from_second(age).expect("a time")},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]}
        });
        merge(&mut object, rest);
        let service: Service = serde_json::from_value(object).expect("a valid Service");
        Arc::new(ServiceView::new(&service))
    }

    fn merge(into: &mut Value, from: Value) {
        match (into, from) {
            (Value::Object(into), Value::Object(from)) => {
                for (key, value) in from {
                    merge(into.entry(key).or_insert(Value::Null), value);
                }
            }
            (into, from) => *into = from,
        }
    }

    fn snapshot(services: Vec<Arc<ServiceView>>, pools: Vec<Arc<IPAddressPool>>) -> Snapshot {
        Snapshot::new(services, pools, NamespaceLabels::new())
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_000_000).expect("a time")
    }

    fn service_writes(writes: &[Write]) -> Vec<&ServiceWrite> {
        writes
            .iter()
            .filter_map(|w| match w {
                Write::Service(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    fn pool_statuses(writes: &[Write]) -> impl Iterator<Item = (&str, &IPAddressPoolStatus)> {
        writes.iter().filter_map(|w| match w {
            Write::PoolStatus { name, status } => Some((name.as_str(), status)),
            _ => None,
        })
    }

    fn reasons(write: &ServiceWrite) -> Vec<Reason> {
        write.events.iter().map(|e| e.reason).collect()
    }

    fn landed(writes: Vec<Write>, landed: bool) -> Vec<(Write, bool)> {
        writes.into_iter().map(|w| (w, landed)).collect()
    }

    #[test]
    fn a_new_service_gets_its_finalizer_mark_address_and_one_event_then_is_settled() {
        let mut decider = Decider::new(None);
        let world = snapshot(
            vec![service("web", 1, "1", json!({}))],
            vec![pool("lan", &["192.0.2.10/31"])],
        );
        let writes = decider.pass(&world, now());
        let [web] = service_writes(&writes)[..] else {
            panic!("one Service write: {writes:?}")
        };
        assert_eq!(web.finalizer, Some(true));
        assert_eq!(web.annotations.get(SERVED), Some(&Some(String::new())));
        assert_eq!(
            web.annotations.get(IP_ALLOCATED_FROM_POOL),
            Some(&Some("lan".into()))
        );
        assert_eq!(web.status, Some(vec!["192.0.2.10".parse().expect("an IP")]));
        assert_eq!(reasons(web), [Reason::IpAllocated]);
        let (_, status) = pool_statuses(&writes)
            .find(|(name, _)| *name == "lan")
            .expect("the pool's status");
        assert_eq!((status.assigned_ipv4, status.available_ipv4), (1, 1));

        decider.record(landed(writes, true));
        let again = decider.pass(&world, now());
        assert!(again.is_empty(), "nothing new to write: {again:?}");
    }

    #[test]
    fn while_releasing_every_service_gives_back_what_herald_holds_and_none_is_served() {
        let mut decider = Decider::new(None);
        let lan = vec![pool("lan", &["192.0.2.10/31"])];
        let served = json!({
            "metadata": {"finalizers": [CLEANUP_FINALIZER],
                         "annotations": {SERVED: "", IP_ALLOCATED_FROM_POOL: "lan"}},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}
        });
        let world = snapshot(vec![service("web", 1, "1", served)], lan.clone());
        decider.restore(&world);
        assert!(
            decider
                .pass(&world, now())
                .iter()
                .all(|w| !matches!(w, Write::Service(_)))
        );
        assert!(!decider.holds_nothing(&world));

        decider.set_releasing(true);
        let writes = decider.pass(&world, now());
        let [web] = service_writes(&writes)[..] else {
            panic!("one Service write: {writes:?}")
        };
        assert_eq!(web.finalizer, Some(false));
        assert_eq!(web.status, Some(Vec::new()));
        assert_eq!(web.annotations.get(SERVED), Some(&None));
        // As the API returns it once written: nothing of Herald's left, and a new Service
        // gets nothing either.
        let released = snapshot(
            vec![
                service("web", 1, "2", json!({})),
                service("new", 2, "1", json!({})),
            ],
            lan.clone(),
        );
        assert!(service_writes(&decider.pass(&released, now())).is_empty());
        assert!(decider.holds_nothing(&released));
        assert_eq!(decider.without_address(&released), 0);

        // The uninstall was called off: both are served again.
        decider.set_releasing(false);
        let writes = decider.pass(&released, now());
        assert_eq!(service_writes(&writes).len(), 2, "{writes:?}");
    }

    #[test]
    fn services_without_an_address_are_counted_until_a_pool_has_room() {
        let mut decider = Decider::new(None);
        let services = vec![
            service("web", 1, "1", json!({})),
            service("api", 2, "1", json!({})),
        ];
        let small = snapshot(services.clone(), vec![pool("lan", &["192.0.2.10/32"])]);
        decider.pass(&small, now());
        assert_eq!(decider.without_address(&small), 1);
        let larger = snapshot(services, vec![pool("lan", &["192.0.2.10/31"])]);
        decider.pass(&larger, now());
        assert_eq!(decider.without_address(&larger), 0);
    }

    #[test]
    fn writes_that_did_not_land_are_decided_again_with_their_event() {
        let mut decider = Decider::new(None);
        let world = snapshot(
            vec![service("web", 1, "1", json!({}))],
            vec![pool("lan", &["192.0.2.10/31"])],
        );
        let first = decider.pass(&world, now());
        let decided = service_writes(&first)[0].clone();
        decider.record(landed(first, false));
        let second = decider.pass(&world, now());
        assert_eq!(
            service_writes(&second),
            [&decided],
            "the same writes and Event"
        );
    }

    #[test]
    fn a_service_no_longer_served_gives_back_only_what_herald_holds() {
        let mut decider = Decider::new(None);
        let lan = pool("lan", &["192.0.2.10/31"]);
        let written = json!({
            "metadata": {"finalizers": ["example.com/keep", CLEANUP_FINALIZER],
                         "annotations": {SERVED: "", IP_ALLOCATED_FROM_POOL: "lan"}},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}
        });
        let ours = service("web", 1, "1", written.clone());
        let restored = decider.restore(&snapshot(vec![ours], vec![lan.clone()]));
        assert!(restored.is_empty(), "{restored:?}");

        let mut now_cluster_ip = written.clone();
        merge(&mut now_cluster_ip, json!({"spec": {"type": "ClusterIP"}}));
        let other = json!({
            "metadata": {"finalizers": [CLEANUP_FINALIZER]},
            "spec": {"loadBalancerClass": "other.example/lb"},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}]}}
        });
        let world = snapshot(
            vec![
                service("web", 1, "2", now_cluster_ip),
                service("theirs", 2, "1", other),
            ],
            vec![lan],
        );
        let writes = decider.pass(&world, now());
        let [web] = service_writes(&writes)[..] else {
            panic!("only our Service is written: {writes:?}")
        };
        assert_eq!(web.key.name, "web");
        assert_eq!(web.finalizer, Some(false));
        assert_eq!(web.finalizers, ["example.com/keep", CLEANUP_FINALIZER]);
        assert_eq!(web.status, Some(Vec::new()));
        assert_eq!(web.annotations.get(SERVED), Some(&None));
        assert_eq!(web.annotations.get(IP_ALLOCATED_FROM_POOL), Some(&None));
        assert_eq!(reasons(web), [Reason::IpReleased]);
    }

    #[test]
    fn an_invalid_pool_is_told_once_and_its_status_says_why() {
        let mut decider = Decider::new(None);
        let world = snapshot(Vec::new(), vec![pool("bad", &["192.0.2.300/32"])]);
        let writes = decider.pass(&world, now());
        let told: Vec<&Event> = writes
            .iter()
            .filter_map(|w| match w {
                Write::Event { object, event } if object.name.as_deref() == Some("bad") => {
                    Some(event)
                }
                _ => None,
            })
            .collect();
        assert_eq!(told.len(), 1, "{writes:?}");
        assert_eq!(told[0].reason, Reason::InvalidPool);
        assert!(told[0].message.contains("bad"), "{}", told[0].message);
        let valid = pool_statuses(&writes)
            .find_map(|(_, status)| status.conditions.iter().find(|c| c.type_ == "Valid"))
            .expect("a Valid condition");
        assert_eq!(valid.status, "False");
        assert_eq!(valid.message, told[0].message);

        decider.record(landed(writes, true));
        assert!(decider.pass(&world, now()).is_empty(), "said once");
    }

    #[test]
    fn when_the_pool_is_full_the_older_service_keeps_the_address_and_the_younger_is_told() {
        let mut decider = Decider::new(None);
        let world = snapshot(
            vec![
                service("young", 20, "1", json!({})),
                service("old", 10, "1", json!({})),
            ],
            vec![pool("one", &["192.0.2.10/32"])],
        );
        let writes = decider.pass(&world, now());
        let by_name = |name: &str| {
            service_writes(&writes)
                .into_iter()
                .find(|w| w.key.name == name)
                .cloned()
                .expect("a write")
        };
        assert_eq!(
            by_name("old").status,
            Some(vec!["192.0.2.10".parse().expect("an IP")])
        );
        let young = by_name("young");
        assert_eq!(young.status, None);
        assert_eq!(reasons(&young), [Reason::AllocationFailed]);

        decider.record(landed(writes, true));
        let again = decider.pass(&world, now());
        let retried = service_writes(&again);
        assert_eq!(retried.len(), 1, "the failure is retried: {again:?}");
        assert!(retried[0].events.is_empty(), "but not told twice");
    }

    fn configuration_writes(
        writes: &[Write],
    ) -> Vec<(&ObjectReference, &ConfigurationStatus, Option<&Event>)> {
        writes
            .iter()
            .filter_map(|w| match w {
                Write::ConfigurationStatus {
                    object,
                    status,
                    event,
                } => Some((object, status, event.as_ref())),
                _ => None,
            })
            .collect()
    }

    /// `status` as the object would have it after the write came back through the watch.
    fn with_status(peer: &Arc<BGPPeer>, status: &ConfigurationStatus) -> Arc<BGPPeer> {
        let mut peer = (**peer).clone();
        peer.status = Some(status.clone());
        Arc::new(peer)
    }

    #[test]
    fn a_configuration_problem_is_written_and_told_once_and_its_fix_once() {
        use crate::judge::tests::{configuration, lan, peer};
        let mut decider = Decider::new(None);
        let mut config = configuration();
        let broken = peer("tor", json!({"bfdProfile": "fast"}));
        config.peers = vec![broken.clone()];
        let world =
            |config: &Configuration| snapshot(Vec::new(), lan()).with_configuration(config.clone());
        let writes = decider.pass(&world(&config), now());
        let [(object, status, Some(event))] = configuration_writes(&writes)[..] else {
            panic!("one status with its Event: {writes:?}")
        };
        assert_eq!(object.name.as_deref(), Some("tor"));
        assert_eq!(event.reason, Reason::NotInEffect);
        let ready = status.ready().expect("a Ready condition");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "MissingReference")
        );
        assert_eq!(ready.observed_generation, Some(1));
        assert!(
            event
                .message
                .starts_with("spec.bfdProfile: BFDProfile fast")
        );
        let written = status.clone();
        decider.record(landed(writes, true));
        let a_second_later = now() + std::time::Duration::from_secs(1);
        assert!(
            configuration_writes(&decider.pass(&world(&config), a_second_later)).is_empty(),
            "written and told once, before the watch brings it back"
        );
        config.peers = vec![with_status(&broken, &written)];
        let mut later = now();
        for _ in 0..3 {
            later += std::time::Duration::from_secs(60);
            let steady = decider.pass(&world(&config), later);
            assert!(configuration_writes(&steady).is_empty(), "{steady:?}");
        }

        config.profiles = vec![Arc::new(herald_tests::herald::object(
            "BFDProfile",
            "fast",
            json!({}),
        ))];
        let fixed = decider.pass(&world(&config), later);
        let tor = configuration_writes(&fixed)
            .into_iter()
            .find(|(o, ..)| o.name.as_deref() == Some("tor"))
            .expect("tor's status");
        let ready = tor.1.ready().expect("a Ready condition");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "InEffect")
        );
        assert_eq!(ready.last_transition_time.0, later, "a new transition");
        assert_eq!(tor.2.map(|e| e.reason), Some(Reason::InEffect));
    }
}
