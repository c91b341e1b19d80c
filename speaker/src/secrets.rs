//! BGP passwords: the Secrets named by BGPPeers, read from Herald's namespace with one `get`
//! each (the speaker may read Secrets there, not list or watch them), and read again now and
//! then to pick up a rotated password. The reads run in a task of their own, so a request
//! that hangs never holds up the loop that announces.
//!
//! ```text
//!   loop ── PasswordSecrets::keep(wanted names) ──► reader task: reads those not read yet
//!   reader task, every 30 s ── reads all again
//!   reader task ── changed? ──► PasswordSecrets::changed wakes the loop, which plans again
//!                               (a session whose password changed starts over)
//! ```
//!
//! A Secret that cannot be reached on a later read (a timeout, the API server away) keeps the
//! password last read: sessions stay up through an API outage. What the API server says (not
//! found, no such key) counts at once.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use herald_api::bgp::PASSWORD_KEY;
use herald_bgp::driver::Password;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use tokio::sync::watch;

/// How often the password Secrets are read again.
const REFRESH: Duration = Duration::from_secs(30);

/// Why a password Secret cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PasswordError {
    #[error("reading Secret {namespace}/{name}: {reason}")]
    Unreadable {
        namespace: String,
        name: String,
        reason: String,
    },
    #[error("Secret {name} has no key {key:?}")]
    NoKey { name: String, key: &'static str },
    #[error("the password in Secret {name} must have 1 to {max} octets")]
    Length { name: String, max: usize },
}

/// Passwords by Secret name, as last read.
pub(crate) type Passwords = BTreeMap<String, Result<Password, PasswordError>>;

/// The passwords, and which reading of them this is (it changes whenever one does).
#[derive(Debug, Clone, Default)]
pub(crate) struct Reading {
    pub(crate) passwords: Passwords,
    pub(crate) version: u64,
}

/// The loop's handle on the password reader: which Secrets to read, and what was read.
pub(crate) struct PasswordSecrets {
    wanted: watch::Sender<BTreeSet<String>>,
    read: watch::Receiver<Reading>,
}

impl PasswordSecrets {
    /// Starts the reader of Secrets in Herald's `namespace`; it ends with the handle.
    pub(crate) fn start(client: Client, namespace: &str) -> Self {
        let (wanted, wanted_rx) = watch::channel(BTreeSet::new());
        let (read_tx, read) = watch::channel(Reading::default());
        let reader = Reader {
            api: Api::namespaced(client, namespace),
            read: Passwords::new(),
            version: 0,
        };
        tokio::spawn(reader.run(wanted_rx, read_tx));
        PasswordSecrets { wanted, read }
    }

    /// Reads the Secrets in `wanted` (those not read yet, at once) and forgets the others.
    pub(crate) fn keep(&self, wanted: &[String]) {
        let wanted: BTreeSet<String> = wanted.iter().cloned().collect();
        self.wanted.send_if_modified(|current| {
            let changed = *current != wanted;
            *current = wanted;
            changed
        });
    }

    /// The passwords as last read (a copy: the loop must not hold the channel across awaits).
    pub(crate) fn reading(&self) -> Reading {
        self.read.borrow().clone()
    }

    /// Resolves when a password (or why it cannot be used) changed since this last
    /// resolved; fails once the reader is gone.
    pub(crate) async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        self.read.changed().await
    }
}

/// The reader task's state: the Secrets it keeps and what it read.
struct Reader {
    api: Api<Secret>,
    read: Passwords,
    version: u64,
}

/// What one read gave: the password or why the Secret cannot be used, or nothing at all
/// (the API server did not answer).
enum Outcome {
    Answered(Result<Password, PasswordError>),
    Unreached(PasswordError),
}

impl Reader {
    async fn run(
        mut self,
        mut wanted: watch::Receiver<BTreeSet<String>>,
        read: watch::Sender<Reading>,
    ) {
        let mut refresh = tokio::time::interval(REFRESH);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        refresh.reset();
        loop {
            let changed = tokio::select! {
                changed = wanted.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let names = wanted.borrow_and_update().clone();
                    self.keep(&names).await
                }
                _ = refresh.tick() => self.refresh().await,
                () = read.closed() => return,
            };
            if changed {
                self.version += 1;
                read.send_replace(Reading {
                    passwords: self.read.clone(),
                    version: self.version,
                });
            }
        }
    }

    /// Keeps the Secrets in `wanted` only, reading those not read yet; true when that
    /// changed what was read.
    async fn keep(&mut self, wanted: &BTreeSet<String>) -> bool {
        let before = self.read.len();
        self.read.retain(|name, _| wanted.contains(name));
        let mut changed = self.read.len() != before;
        for name in wanted {
            if !self.read.contains_key(name) {
                let password = match self.get(name).await {
                    Outcome::Answered(password) => password,
                    Outcome::Unreached(e) => Err(e),
                };
                self.read.insert(name.clone(), password);
                changed = true;
            }
        }
        changed
    }

    /// Reads every kept Secret again; true when a password (or why it cannot be used)
    /// changed. One never read (unreachable at first) is tried again too; one read before
    /// keeps its last password while the API server does not answer.
    async fn refresh(&mut self) -> bool {
        let mut changed = false;
        for name in self.read.keys().cloned().collect::<Vec<_>>() {
            let now = match self.get(&name).await {
                Outcome::Answered(password) => password,
                Outcome::Unreached(e) => match self.read.get(&name) {
                    Some(Ok(_)) => continue,
                    _ => Err(e),
                },
            };
            if self.read.get(&name) != Some(&now) {
                self.read.insert(name, now);
                changed = true;
            }
        }
        changed
    }

    /// Reads the password of Secret `name`.
    async fn get(&self, name: &str) -> Outcome {
        let unreadable = |reason: String| PasswordError::Unreadable {
            namespace: self.api.namespace().unwrap_or_default().to_owned(),
            name: name.to_owned(),
            reason,
        };
        let secret = match self.api.get(name).await {
            Ok(secret) => secret,
            // The API's own words (`secrets "md5" not found`), not the whole response.
            Err(kube::Error::Api(status)) => {
                return Outcome::Answered(Err(unreadable(status.message)));
            }
            Err(other) => return Outcome::Unreached(unreadable(other.to_string())),
        };
        Outcome::Answered(password_in(name, &secret))
    }
}

/// The password that Secret `name` holds.
fn password_in(name: &str, secret: &Secret) -> Result<Password, PasswordError> {
    let password = secret
        .data
        .as_ref()
        .and_then(|data| data.get(PASSWORD_KEY))
        .map(|bytes| bytes.0.clone())
        .ok_or_else(|| PasswordError::NoKey {
            name: name.to_owned(),
            key: PASSWORD_KEY,
        })?;
    if password.is_empty() || password.len() > herald_bgp::md5::MAX_PASSWORD {
        return Err(PasswordError::Length {
            name: name.to_owned(),
            max: herald_bgp::md5::MAX_PASSWORD,
        });
    }
    Ok(Password(password))
}
