//! What the controller exposes on `/metrics` (Prometheus text format), and `/healthz` and
//! `/readyz` for the kubelet's probes.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
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

/// The controller's metrics and readiness, shared by the loop and the HTTP server.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    /// Addresses per pool, family and state (a float: IPv6 pools exceed 64 bits).
    pub(crate) pool_addresses: Family<PoolLabels, Gauge<f64, AtomicU64>>,
    pub(crate) allocations: Counter,
    pub(crate) releases: Counter,
    pub(crate) failures: Family<ReasonLabels, Counter>,
    /// 1 while this replica leads.
    pub(crate) leader: Gauge,
    ready: AtomicBool,
}

impl Metrics {
    pub(crate) fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("herald_controller");
        let metrics = Metrics {
            pool_addresses: Family::default(),
            allocations: Counter::default(),
            releases: Counter::default(),
            failures: Family::default(),
            leader: Gauge::default(),
            ready: AtomicBool::new(false),
            registry: Registry::default(),
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
            "leader",
            "1 while this replica leads",
            metrics.leader.clone(),
        );
        Arc::new(Metrics {
            registry,
            ..metrics
        })
    }

    /// Ready once the process has started its loop (leading or standing by).
    pub(crate) fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `address` until the process ends.
pub(crate) async fn serve(address: SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move { m.render() }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(m): State<Arc<Metrics>>| async move {
                if m.ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "starting")
                }
            }),
        )
        .with_state(metrics);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("listening on {address} for metrics and probes: {e}"))?;
    axum::serve(listener, app).await?;
    Ok(())
}
