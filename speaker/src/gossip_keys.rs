//! The gossip keys, read from the mounted Secret's files and read again while the speaker
//! runs, so that a key rotation needs no restart: the kubelet rewrites a mounted Secret's
//! files within about a minute of a change.
//!
//! ```text
//!   key             sealed with, and accepted (required, at least 16 bytes)
//!   additional-key  accepted too (optional: a missing or empty file means none)
//!
//!   every --gossip-key-reload-interval: read both ── the same ──► nothing
//!                                                 ├─ changed, valid ──► gossip uses them at once
//!                                                 └─ unreadable or too short ──► warn (once per
//!                                                    change), keep the keys in use
//! ```
//!
//! A rotation from OLD to NEW (the guide's runbook), each step waited out until every
//! SpeakerStatus shows it in `spec.gossip.keys`: `additional-key: NEW`; then `key: NEW`,
//! `additional-key: OLD`; then no `additional-key`.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use herald_membership::{Key, Keyring, driver::Handle};
use tracing::{info, warn};

/// Where the keys are.
#[derive(Debug, Clone)]
pub(crate) struct KeyFiles {
    pub(crate) key: PathBuf,
    pub(crate) additional: Option<PathBuf>,
}

impl KeyFiles {
    /// The keys the files hold now.
    pub(crate) fn load(&self) -> anyhow::Result<Keyring> {
        let read = |path: &PathBuf| -> anyhow::Result<Key> {
            let bytes = std::fs::read(path)
                .with_context(|| format!("reading the gossip key {}", path.display()))?;
            Key::new(&bytes).with_context(|| format!("the gossip key in {}", path.display()))
        };
        let additional = match &self.additional {
            Some(path) => match std::fs::read(path) {
                Ok(bytes) if bytes.trim_ascii().is_empty() => None,
                Ok(_) => Some(read(path)?),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("reading the gossip key {}", path.display()));
                }
            },
            None => None,
        };
        Ok(Keyring {
            sealing: read(&self.key)?,
            additional,
        })
    }

    /// Reads the files every `every` and hands changed keys to gossip; runs for ever.
    pub(crate) async fn follow(self, mut current: Keyring, gossip: Handle, every: Duration) {
        let mut failing: Option<String> = None;
        loop {
            tokio::time::sleep(every).await;
            match self.load() {
                Ok(keys) => {
                    failing = None;
                    if keys != current {
                        info!(keys = ?keys.fingerprints(), "gossip key files changed: using them");
                        gossip.set_keys(keys.clone());
                        current = keys;
                    }
                }
                Err(e) => {
                    let error = format!("{e:#}");
                    if failing.as_ref() != Some(&error) {
                        warn!(
                            error,
                            "cannot use the gossip key files: keeping the keys in use"
                        );
                        failing = Some(error);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_additional_key_is_optional_and_a_short_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("herald-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory");
        let files = KeyFiles {
            key: dir.join("key"),
            additional: Some(dir.join("additional-key")),
        };
        assert!(files.load().is_err(), "no key at all");
        std::fs::write(&files.key, "the cluster's gossip key\n").expect("written");
        let one = files.load().expect("the key alone");
        assert_eq!(one.additional, None);
        std::fs::write(dir.join("additional-key"), "").expect("written");
        assert_eq!(files.load().expect("empty: none"), one);
        std::fs::write(dir.join("additional-key"), "the next gossip key").expect("written");
        let two = files.load().expect("both");
        assert_eq!(two.fingerprints().len(), 2);
        assert_eq!(two.fingerprints()[0], one.fingerprints()[0]);
        std::fs::write(dir.join("additional-key"), "short").expect("written");
        let error = format!("{:#}", files.load().expect_err("too short"));
        assert!(
            error.contains("additional-key") && error.contains("16"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).expect("cleaned up");
    }
}
