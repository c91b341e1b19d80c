//! `/metrics` (Prometheus text format), `/healthz` and `/readyz` for the kubelet's probes and
//! for scrapers, served from one registry and one readiness flag.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use prometheus_client::{encoding::text::encode, registry::Registry};

/// What the HTTP server shows: a metrics registry and whether the process is ready.
#[derive(Debug)]
pub struct Probes {
    registry: Registry,
    ready: AtomicBool,
}

impl Probes {
    /// Serves `registry`; not ready until [`Probes::set_ready`].
    pub fn new(registry: Registry) -> Arc<Self> {
        Arc::new(Probes {
            registry,
            ready: AtomicBool::new(false),
        })
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// An address that could not be served.
#[derive(Debug, thiserror::Error)]
#[error("listening on {address} for metrics and probes: {source}")]
pub struct ServeError {
    address: SocketAddr,
    source: std::io::Error,
}

/// Binds `address` now (so that a taken port is a start-up error) and returns the server to
/// run until the process ends.
pub async fn bind(
    address: SocketAddr,
    probes: Arc<Probes>,
) -> Result<impl Future<Output = std::io::Result<()>>, ServeError> {
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(p): State<Arc<Probes>>| async move { p.render() }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(p): State<Arc<Probes>>| async move {
                if p.ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "starting")
                }
            }),
        )
        .with_state(probes);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| ServeError { address, source })?;
    Ok(async move { axum::serve(listener, app).await })
}
