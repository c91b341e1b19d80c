//! BGP passwords: the Secrets named by BGPPeers, read from Herald's namespace with one `get`
//! each (the speaker may read Secrets there, not list or watch them), and read again now and
//! then to pick up a rotated password.
//!
//! ```text
//!   peers this node has a session with ── wanted Secret names ──► read those not read yet
//!   every 30 s ── read all again ──► changed? the loop plans again (sessions start over)
//! ```

use std::collections::BTreeMap;

use herald_api::bgp::PASSWORD_KEY;
use herald_bgp::driver::Password;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

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

/// The password Secrets this node's sessions use, as last read.
pub(crate) struct PasswordSecrets {
    api: Api<Secret>,
    read: Passwords,
    /// Counts the changes of `read`.
    version: u64,
}

impl PasswordSecrets {
    /// Nothing read yet; Secrets are read from Herald's `namespace`.
    pub(crate) fn new(client: Client, namespace: &str) -> Self {
        PasswordSecrets {
            api: Api::namespaced(client, namespace),
            read: Passwords::new(),
            version: 0,
        }
    }

    /// The passwords as last read.
    pub(crate) fn passwords(&self) -> &Passwords {
        &self.read
    }

    /// Which reading of the passwords this is: it changes whenever one does.
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// Keeps the Secrets in `wanted` only, reading those not read yet.
    pub(crate) async fn keep(&mut self, wanted: &[String]) {
        let before = self.read.len();
        self.read.retain(|name, _| wanted.contains(name));
        let mut changed = self.read.len() != before;
        for name in wanted {
            if !self.read.contains_key(name) {
                let password = self.get(name).await;
                self.read.insert(name.clone(), password);
                changed = true;
            }
        }
        self.version += u64::from(changed);
    }

    /// Reads every kept Secret again; true when a password (or why it cannot be used) changed.
    pub(crate) async fn refresh(&mut self) -> bool {
        let mut changed = false;
        for name in self.read.keys().cloned().collect::<Vec<_>>() {
            let now = self.get(&name).await;
            if self.read.get(&name) != Some(&now) {
                self.read.insert(name, now);
                changed = true;
            }
        }
        self.version += u64::from(changed);
        changed
    }

    /// Reads the password of Secret `name`.
    async fn get(&self, name: &str) -> Result<Password, PasswordError> {
        let secret = self
            .api
            .get(name)
            .await
            .map_err(|e| PasswordError::Unreadable {
                namespace: self.api.namespace().unwrap_or_default().to_owned(),
                name: name.to_owned(),
                // The API's own words (`secrets "md5" not found`), not the whole response.
                reason: match e {
                    kube::Error::Api(status) => status.message,
                    other => other.to_string(),
                },
            })?;
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
}
