//! Records a process keeps for people to read (`kubectl get ...`): a writer task that makes the
//! objects under one label selector equal to a desired set, so that the caller's loop never
//! waits for the API server.
//!
//! ```text
//!   caller ── Writer::set(desired objects) (a watch channel, latest wins) ──► writer task
//!   writer: server-side apply what differs from what it last wrote, delete what is no
//!           longer wanted; every 10 s re-list (someone may have deleted one, or a
//!           previous run left some behind)
//! ```

use std::{collections::BTreeMap, fmt::Debug, time::Duration};

use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
    core::NamespaceResourceScope,
};
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::watch::ObjectKey;

/// What a record kind must be: a namespaced object that can be sent and compared as JSON.
pub trait Record:
    Resource<Scope = NamespaceResourceScope>
    + Clone
    + Serialize
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Record for K where
    K: Resource<Scope = NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// The desired records, by namespace and name.
pub type Desired<K> = BTreeMap<ObjectKey, K>;

/// The key of a record.
pub fn key<K: Resource>(record: &K) -> ObjectKey {
    (record.meta().namespace.clone(), record.name_any())
}

/// How often the writer lists the records that exist (someone may have deleted one).
const RESYNC: Duration = Duration::from_secs(10);

/// The handle of a records writer: what the records should be.
#[derive(Debug)]
pub struct Writer<K> {
    desired: watch::Sender<Desired<K>>,
}

impl<K: PartialEq> Writer<K> {
    /// Makes `desired` the records to keep; nothing happens when they are what they were.
    pub fn set(&self, desired: Desired<K>) {
        self.desired.send_if_modified(|current| {
            let changed = *current != desired;
            *current = desired;
            changed
        });
    }
}

/// Starts the writer of the records under `selector`, listed through `list` (all
/// namespaces or one), written as `field_manager`; it ends when the handle is dropped.
pub fn spawn<K>(
    client: Client,
    list: Api<K>,
    selector: String,
    field_manager: &'static str,
) -> Writer<K>
where
    K: Record,
    K::DynamicType: Default,
{
    let (desired, receiver) = watch::channel(Desired::new());
    tokio::spawn(write(client, list, selector, field_manager, receiver));
    Writer { desired }
}

fn api<K>(client: &Client, key: &ObjectKey) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope>,
    K::DynamicType: Default,
{
    Api::namespaced(client.clone(), key.0.as_deref().unwrap_or("default"))
}

async fn write<K>(
    client: Client,
    all: Api<K>,
    selector: String,
    field_manager: &'static str,
    mut desired: watch::Receiver<Desired<K>>,
) where
    K: Record,
    K::DynamicType: Default,
{
    let mine = ListParams::default().labels(&selector);
    // What this writer applied, as JSON (to compare without asking more of `K`); `None` for
    // a record found by listing, whose content is not known to match.
    let mut written: BTreeMap<ObjectKey, Option<serde_json::Value>> = BTreeMap::new();
    let mut ticker = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            changed = desired.changed() => if changed.is_err() { return },
            _ = ticker.tick() => match all.list(&mine).await {
                Ok(list) => {
                    let existing: BTreeMap<ObjectKey, Option<serde_json::Value>> =
                        list.items.iter().map(|r| (key(r), None)).collect();
                    // Keep what is known of records that still exist; forget the others.
                    written = existing
                        .into_iter()
                        .map(|(k, v)| {
                            let known = written.remove(&k).flatten();
                            (k, known.or(v))
                        })
                        .collect();
                }
                Err(e) => debug!(%selector, error = %e, "listing records"),
            },
        }
        let want = desired.borrow_and_update().clone();
        for (k, record) in &want {
            let json = serde_json::to_value(record).ok();
            if json.is_some() && written.get(k) == Some(&json) {
                continue;
            }
            let name = k.1.clone();
            match api::<K>(&client, k)
                .patch(
                    &name,
                    &PatchParams::apply(field_manager).force(),
                    &Patch::Apply(record),
                )
                .await
            {
                Ok(_) => {
                    written.insert(k.clone(), json);
                }
                Err(e) => warn!(record = %name, error = %e, "writing a record"),
            }
        }
        let stale: Vec<ObjectKey> = written
            .keys()
            .filter(|k| !want.contains_key(*k))
            .cloned()
            .collect();
        for k in stale {
            match api::<K>(&client, &k)
                .delete(&k.1, &DeleteParams::default())
                .await
            {
                Ok(_) => {
                    written.remove(&k);
                }
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    written.remove(&k);
                }
                Err(e) => warn!(record = %k.1, error = %e, "deleting a record"),
            }
        }
    }
}
