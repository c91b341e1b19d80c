//! The one error type of the test-support crate.

use std::time::Duration;

/// What went wrong while setting up or observing a test's world.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command (ip, kubectl, a daemon's CLI, ...) could not be run or exited non-zero.
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    /// A condition did not hold within its time limit.
    #[error("timed out after {timeout:?} waiting for {what}; last seen: {last}")]
    Timeout {
        what: String,
        timeout: Duration,
        last: String,
    },
    /// Output of a tool that could not be understood.
    #[error("could not parse {what}: {detail}")]
    Parse { what: String, detail: String },
    #[error("I/O error while {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// Result of the test-support helpers.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}
