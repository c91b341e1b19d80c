//! What the controller exposes on `/metrics` (Prometheus text format; served with `/healthz`
//! and `/readyz` by [`herald_shell::probes`]).

use std::sync::{Arc, atomic::AtomicU64};

use herald_domain::Family as IpFamily;
use herald_ipam::PoolUsage;
use herald_shell::probes::Probes;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// Labels of a pool's address counts.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PoolLabels {
    pub(crate) pool: String,
    /// `ipv4` or `ipv6`.
    pub(crate) family: String,
    /// `assigned` or `available`.
    pub(crate) state: String,
}

/// Labels of an allocation failure.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabels {
    pub(crate) reason: String,
}

/// Labels of a write that did not land.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct WriteLabels {
    /// `service`, `pool_status`, `configuration_status` or `event`.
    pub(crate) write: String,
}

/// Labels of configuration objects by kind.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabels {
    pub(crate) kind: String,
}

/// The controller's metrics, updated by the loop.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// Addresses per pool, family and state (a float: IPv6 pools exceed 64 bits).
    pub(crate) pool_addresses: Family<PoolLabels, Gauge<f64, AtomicU64>>,
    pub(crate) allocations: Counter,
    pub(crate) releases: Counter,
    pub(crate) failures: Family<ReasonLabels, Counter>,
    /// Writes that did not land (each is retried).
    pub(crate) write_failures: Family<WriteLabels, Counter>,
    /// Configuration objects whose `Ready` condition is False, by kind.
    pub(crate) not_in_effect: Family<KindLabels, Gauge>,
    /// Services Herald serves that hold no address.
    pub(crate) services_without_address: Gauge,
    /// 1 while this replica leads.
    pub(crate) leader: Gauge,
}

impl Metrics {
    /// The metrics, and the probes that serve them.
    pub(crate) fn new() -> (Arc<Self>, Arc<Probes>) {
        let mut root = Registry::default();
        herald_shell::process::register(&mut root, "controller", env!("CARGO_PKG_VERSION"));
        let registry = root.sub_registry_with_prefix("herald_controller");
        let metrics = Metrics {
            pool_addresses: Family::default(),
            allocations: Counter::default(),
            releases: Counter::default(),
            failures: Family::default(),
            write_failures: Family::default(),
            not_in_effect: Family::default(),
            services_without_address: Gauge::default(),
            leader: Gauge::default(),
        };
        registry.register(
            "pool_addresses",
            "Addresses of each IPAddressPool by family and state (assigned, available)",
            metrics.pool_addresses.clone(),
        );
        registry.register(
            "allocations",
            "Addresses given to Services",
            metrics.allocations.clone(),
        );
        registry.register(
            "releases",
            "Services whose addresses were released",
            metrics.releases.clone(),
        );
        registry.register(
            "allocation_failures",
            "Services that could not be given an address, by reason",
            metrics.failures.clone(),
        );
        registry.register(
            "write_failures",
            "Writes to the API that did not land, by what was written; each is retried with backoff",
            metrics.write_failures.clone(),
        );
        registry.register(
            "configuration_not_in_effect",
            "BGPPeers, BFDProfiles and advertisements whose Ready condition is False, by kind",
            metrics.not_in_effect.clone(),
        );
        registry.register(
            "services_without_address",
            "Services of type LoadBalancer this Herald serves that hold no address (set by the leader)",
            metrics.services_without_address.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica leads",
            metrics.leader.clone(),
        );
        (Arc::new(metrics), Probes::new(root))
    }

    /// Counts a write of `what` that did not land.
    pub(crate) fn write_failed(&self, what: &str) {
        self.write_failures
            .get_or_create(&WriteLabels {
                write: what.to_owned(),
            })
            .inc();
    }

    /// Sets the number of configuration objects not in effect, per kind.
    pub(crate) fn set_not_in_effect(&self, counts: &std::collections::BTreeMap<String, i64>) {
        for kind in [
            "BGPPeer",
            "BFDProfile",
            "L2Advertisement",
            "BGPAdvertisement",
        ] {
            let labels = KindLabels {
                kind: kind.to_owned(),
            };
            self.not_in_effect
                .get_or_create(&labels)
                .set(counts.get(kind).copied().unwrap_or(0));
        }
    }

    /// Sets a pool's address gauges from its usage.
    pub(crate) fn set_pool_usage(&self, pool: &str, usage: &PoolUsage) {
        for family in IpFamily::ALL {
            for (state, value) in [
                ("assigned", usage.assigned(family)),
                ("available", usage.available(family)),
            ] {
                let labels = PoolLabels {
                    pool: pool.to_owned(),
                    family: family.to_string().to_lowercase(),
                    state: state.to_owned(),
                };
                // A gauge is a float: exact to 2^53, close enough beyond.
                self.pool_addresses.get_or_create(&labels).set(value as f64);
            }
        }
    }
}
