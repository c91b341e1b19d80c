//! Connections to the Kubernetes API in which nothing waits for ever: an API server that
//! accepts connections and then stops answering (stopped, overloaded, cut off behind a load
//! balancer) makes each request fail after a bound, so the caller logs, retries and goes on.
//!
//! ```text
//!   requests: get, list, patch, apply, create, delete ── answer within REQUEST_TIMEOUT
//!   watches:  list + watch streams, which are quiet for minutes by design ── the watcher's
//!             own idle timeout (the watch timeout + a margin) ends a dead stream; reads
//!             time out after WATCH_READ_TIMEOUT, longer than that, so a hung list ends too
//! ```

use std::time::Duration;

use kube::{Client, Config};

/// How long a request may take to connect, to be sent, and between the bytes of its answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a watch connection may stay silent: longer than the server's watch timeout
/// (290 s unless asked otherwise) and the watcher's margin on top of it, so that only a dead
/// connection reaches it.
pub const WATCH_READ_TIMEOUT: Duration = Duration::from_secs(330);

/// The two clients a process uses, from one configuration (in-cluster or `KUBECONFIG`).
#[derive(Clone)]
pub struct ApiClients {
    /// For requests that answer at once.
    pub requests: Client,
    /// For watches (the lists they start with included).
    pub watches: Client,
}

impl std::fmt::Debug for ApiClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiClients")
    }
}

/// Why the API cannot be connected to.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("finding the Kubernetes API configuration (in-cluster or KUBECONFIG): {0}")]
    Config(#[from] kube::config::InferConfigError),
    #[error("setting up the Kubernetes API client: {0}")]
    Client(#[from] kube::Error),
}

/// The clients for the configuration of this process's environment.
pub async fn connect() -> Result<ApiClients, ConnectError> {
    let config = Config::infer().await?;
    Ok(ApiClients {
        requests: Client::try_from(bounded(config.clone(), REQUEST_TIMEOUT))?,
        watches: Client::try_from(bounded(config, WATCH_READ_TIMEOUT))?,
    })
}

/// `config` with every phase of a request bounded, reads by `read`.
fn bounded(mut config: Config, read: Duration) -> Config {
    config.connect_timeout = Some(REQUEST_TIMEOUT);
    config.write_timeout = Some(REQUEST_TIMEOUT);
    config.read_timeout = Some(read);
    // Count from when a request is sent, not from when its pooled connection went idle.
    config.reset_reader_on_write = true;
    config
}

/// Runs `attempt` until it succeeds and returns what it gave. Each failure is logged at warn
/// with `what` and followed by a wait of 1 s, doubling to 30 s: for what a process must get
/// done once against an API server that may be away for a while.
pub async fn retry_until_done<T, E, Attempt>(what: &str, mut attempt: impl FnMut() -> Attempt) -> T
where
    E: std::fmt::Display,
    Attempt: std::future::Future<Output = Result<T, E>>,
{
    let mut wait = Duration::from_secs(1);
    loop {
        match attempt().await {
            Ok(done) => return done,
            Err(e) => tracing::warn!(%what, error = %e, retry_in = ?wait, "failed; retrying"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}
