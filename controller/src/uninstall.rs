//! A clean uninstall: before Helm deletes the controller, its pre-delete hook asks the
//! leader to give back everything Herald holds, so that no Service keeps the cleanup
//! finalizer (its deletion would hang with nobody left to remove it) or an address nobody
//! announces any more.
//!
//! ```text
//!   hook Job: herald-controller release-all ── annotates the Lease: RELEASE_ALL=<id> ──┐
//!   leader (watching its Lease) ◄─────────────────────────────────────────────────────┘
//!     every Service released (finalizer, status, marks), none served, new ones neither
//!     nothing held any more ── annotates the Lease: RELEASED_ALL=<id> ──► the hook exits 0
//!   Helm then deletes the controller. Removing RELEASE_ALL (an uninstall called off) serves
//!   the Services again.
//! ```

use std::time::Duration;

use k8s_openapi::{api::coordination::v1::Lease, jiff::Timestamp};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use tracing::info;

/// On the controller's Lease: the request to release everything, with its id.
pub(crate) const RELEASE_ALL: &str = "herald.dev/release-all";
/// On the controller's Lease: the id of the request the leader has carried out.
pub(crate) const RELEASED_ALL: &str = "herald.dev/released-all";

/// How often the hook looks whether the leader is done.
const POLL: Duration = Duration::from_millis(500);

/// The value of annotation `key` on `lease`.
pub(crate) fn annotation(lease: &Lease, key: &str) -> Option<String> {
    lease.metadata.annotations.as_ref()?.get(key).cloned()
}

/// Sets annotation `key` of Lease `name` to `value` (`None` removes it).
pub(crate) async fn annotate(
    api: &Api<Lease>,
    name: &str,
    key: &str,
    value: Option<&str>,
) -> kube::Result<()> {
    let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop)
}

/// The hook's side: asks the leader of Lease `namespace/name` to release everything and
/// waits up to `timeout` until it has.
pub(crate) async fn request(
    client: Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let api: Api<Lease> = Api::namespaced(client, namespace);
    if api.get_opt(name).await?.is_none() {
        info!(lease = %name, "no Lease: no herald-controller ever led here; nothing to release");
        return Ok(());
    }
    let id = Timestamp::now().to_string();
    annotate(&api, name, RELEASE_ALL, Some(&id)).await?;
    info!(lease = %name, %id, "asked the leading herald-controller to release every Service");
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let lease = api.get(name).await?;
        if annotation(&lease, RELEASED_ALL).as_deref() == Some(id.as_str()) {
            info!("every Service released: nothing of Herald's is left on them");
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "no herald-controller released the Services within {timeout:?} (is one running \
                 and leading Lease {namespace}/{name}?); Services it served keep the \
                 service.kubernetes.io/load-balancer-cleanup finalizer: see the guide's \
                 Uninstall section"
            );
        }
        tokio::time::sleep(POLL).await;
    }
}
