//! `/metrics` (OpenMetrics text, with its content type, so that scrapers keep the metric
//! types), `/healthz` and `/readyz` for the kubelet's probes and for scrapers, served from one
//! registry, one readiness flag and, for a process whose main loop must keep turning, that
//! loop's heartbeat: `/healthz` fails once the loop has not turned for too long, so the
//! kubelet restarts a process that is stuck rather than leave it up doing nothing.

use std::{
    net::SocketAddr,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::State,
    http::{
        StatusCode,
        header::{ACCEPT, CONTENT_TYPE},
    },
    routing::get,
};
use prometheus_client::{encoding::text::encode, registry::Registry};

/// The content type of what [`Probes::render`] writes. `prometheus-client` encodes only
/// OpenMetrics; Prometheus (2.5 and later) and the other common scrapers ask for it first,
/// and served as `text/plain` its types and units would be lost.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the older Prometheus text format, for a scraper that does not accept
/// OpenMetrics ([`prometheus_text`]).
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The metrics as `accept` (a request's `Accept` header) asks: OpenMetrics when it names
/// it, the Prometheus text format otherwise (a scraper that asks for nothing in particular, or
/// for `text/plain` only).
pub fn negotiate(accept: Option<&str>, openmetrics: String) -> (&'static str, String) {
    if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
        (OPENMETRICS, openmetrics)
    } else {
        (PROMETHEUS_TEXT, prometheus_text(&openmetrics))
    }
}

/// OpenMetrics text (as `prometheus-client` writes it: counters and gauges) in the
/// Prometheus text format 0.0.4: a counter's family is named as its samples are (`_total`),
/// `# UNIT` lines and the closing `# EOF` go.
pub fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::BTreeSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// What the HTTP server shows: a metrics registry and whether the process is ready.
#[derive(Debug)]
pub struct Probes {
    registry: OnceLock<Registry>,
    ready: AtomicBool,
    /// When the probes were made: heartbeats count from it.
    started: Instant,
    /// Milliseconds from `started` to the loop's last turn.
    last_beat: AtomicU64,
    /// Once set, how long the loop may go without turning before `/healthz` fails.
    stall_limit: OnceLock<Duration>,
}

impl Probes {
    /// Serves `registry`; not ready until [`Probes::set_ready`].
    pub fn new(registry: Registry) -> Arc<Self> {
        let probes = Probes::starting();
        probes.set_registry(registry);
        probes
    }

    /// Probes without metrics yet, to bind before anything can fail: `/healthz` answers
    /// (the process is alive while the API server is out of reach) and `/readyz` says
    /// `starting` until [`Probes::set_ready`].
    pub fn starting() -> Arc<Self> {
        Arc::new(Probes {
            registry: OnceLock::new(),
            ready: AtomicBool::new(false),
            started: Instant::now(),
            last_beat: AtomicU64::new(0),
            stall_limit: OnceLock::new(),
        })
    }

    /// The metrics to serve from now on (the first registry set stays).
    pub fn set_registry(&self, registry: Registry) {
        let _ = self.registry.set(registry);
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    /// From now on `/healthz` fails when [`Probes::beat`] was not called for `limit` (the
    /// first limit set stays). Call it where the loop starts, with a limit well above the
    /// longest a turn may take.
    pub fn watch_loop(&self, limit: Duration) {
        self.beat();
        let _ = self.stall_limit.set(limit);
    }

    /// The loop turned.
    pub fn beat(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_beat.store(now, Ordering::Relaxed);
    }

    /// `None` when alive; otherwise how long the loop has not turned.
    pub fn stalled(&self) -> Option<Duration> {
        let limit = self.stall_limit.get()?;
        let since = self.started.elapsed().saturating_sub(Duration::from_millis(
            self.last_beat.load(Ordering::Relaxed),
        ));
        (since > *limit).then_some(since)
    }

    /// The metrics in OpenMetrics text format ([`OPENMETRICS`]).
    pub fn render(&self) -> String {
        let mut text = String::new();
        match self.registry.get() {
            // Writing into a String cannot fail.
            Some(registry) => {
                let _ = encode(&mut text, registry);
            }
            None => text.push_str("# EOF\n"),
        }
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
            get(
                |State(p): State<Arc<Probes>>, headers: axum::http::HeaderMap| async move {
                    let accept = headers.get(ACCEPT).and_then(|a| a.to_str().ok());
                    let (content_type, text) = negotiate(accept, p.render());
                    ([(CONTENT_TYPE, content_type)], text)
                },
            ),
        )
        .route(
            "/healthz",
            get(|State(p): State<Arc<Probes>>| async move {
                match p.stalled() {
                    None => (StatusCode::OK, "ok".to_owned()),
                    Some(since) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "stuck: the main loop has not turned for {}s",
                            since.as_secs()
                        ),
                    ),
                }
            }),
        )
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

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn metrics_are_served_as_openmetrics_and_readiness_follows_the_flag() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let address = free.local_addr().expect("bound");
        drop(free);
        let probes = Probes::new(Registry::default());
        tokio::spawn(bind(address, probes.clone()).await.expect("bound"));
        let get_as = |path: &'static str, accept: &'static str| async move {
            let mut stream = tokio::net::TcpStream::connect(address)
                .await
                .expect("connected");
            stream
                .write_all(
                    format!("GET {path} HTTP/1.0\r\nHost: x\r\nAccept: {accept}\r\n\r\n")
                        .as_bytes(),
                )
                .await
                .expect("sent");
            let mut response = String::new();
            stream.read_to_string(&mut response).await.expect("read");
            response.to_lowercase()
        };
        let get = |path: &'static str| get_as(path, "*/*");
        // What Prometheus asks for.
        let metrics = get_as(
            "/metrics",
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
        )
        .await;
        assert!(metrics.starts_with("http/1.0 200"), "{metrics}");
        assert!(
            metrics.contains(&format!("content-type: {OPENMETRICS}")),
            "{metrics}"
        );
        assert!(metrics.trim_end().ends_with("# eof"), "{metrics}");
        // A scraper that knows only the older format gets it.
        let metrics = get_as("/metrics", "text/plain;version=0.0.4").await;
        assert!(
            metrics.contains(&format!("content-type: {PROMETHEUS_TEXT}")),
            "{metrics}"
        );
        assert!(!metrics.contains("# eof"), "{metrics}");
        assert!(get("/readyz").await.starts_with("http/1.0 503"));
        probes.set_ready();
        assert!(get("/readyz").await.starts_with("http/1.0 200"));

        // Alive while the loop turns, not once it stops.
        assert!(get("/healthz").await.starts_with("http/1.0 200"));
        probes.watch_loop(Duration::from_millis(200));
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            probes.beat();
            assert!(get("/healthz").await.starts_with("http/1.0 200"));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stuck = get("/healthz").await;
        assert!(stuck.starts_with("http/1.0 503"), "{stuck}");
        assert!(stuck.contains("main loop has not turned"), "{stuck}");
        probes.beat();
        assert!(get("/healthz").await.starts_with("http/1.0 200"));
    }

    #[test]
    fn counters_are_named_as_their_samples_in_the_prometheus_text_format() {
        let openmetrics = "# HELP herald_speaker_send_errors Frames that could not be sent.\n\
                           # TYPE herald_speaker_send_errors counter\n\
                           herald_speaker_send_errors_total 3\n\
                           # HELP herald_speaker_members Speakers alive.\n\
                           # TYPE herald_speaker_members gauge\n\
                           # UNIT herald_speaker_members speakers\n\
                           herald_speaker_members 2\n\
                           # EOF\n";
        assert_eq!(
            prometheus_text(openmetrics),
            "# HELP herald_speaker_send_errors_total Frames that could not be sent.\n\
             # TYPE herald_speaker_send_errors_total counter\n\
             herald_speaker_send_errors_total 3\n\
             # HELP herald_speaker_members Speakers alive.\n\
             # TYPE herald_speaker_members gauge\n\
             herald_speaker_members 2\n"
        );
    }
}
