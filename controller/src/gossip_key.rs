//! The Secret holding the key speakers authenticate their gossip with: created by the
//! controller when it is missing, with a random key, and never changed after. A key the
//! chart generated at render time would change with every `helm template` (GitOps renders
//! the chart on every sync), splitting the speakers started before a sync from those after.
//!
//! ```text
//!   start (every replica, leader or not) ── get Secret ── found ──► done
//!                                                      └─ not found ──► create (32 random
//!                                                         bytes, hex) ── AlreadyExists: another
//!                                                         replica was first ──► done
//!   any other failure ──► warn, try again (1 s doubling to 30 s)
//! ```
//!
//! Speakers mount the Secret; their Pods wait for it to exist.

use std::{collections::BTreeMap, io::Read};

use herald_shell::api::retry_until_done;
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use tracing::info;

/// The key inside the Secret (the chart mounts it as the file `key`).
pub(crate) const KEY: &str = "key";

/// Makes sure Secret `name` in `namespace` exists, creating it with a new random key if
/// not; retries until it does.
pub(crate) async fn ensure(client: Client, namespace: String, name: String) {
    let api: Api<Secret> = Api::namespaced(client, &namespace);
    let what = format!("making sure the gossip key Secret {namespace}/{name} exists");
    if retry_until_done(&what, || ensure_once(&api, &name)).await {
        info!(secret = %name, %namespace, "created the gossip key Secret");
    }
}

/// True when it created the Secret, false when it was there.
async fn ensure_once(api: &Api<Secret>, name: &str) -> anyhow::Result<bool> {
    if api.get_opt(name).await?.is_some() {
        return Ok(false);
    }
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "herald-controller".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            KEY.to_owned(),
            ByteString(random_key()?.into_bytes()),
        )])),
        ..Secret::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// 32 bytes from the kernel's random source, as 64 hex digits.
fn random_key() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_and_differ() {
        let (a, b) = (
            random_key().expect("urandom"),
            random_key().expect("urandom"),
        );
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
