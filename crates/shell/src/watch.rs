//! Watches that keep local stores current and wake a loop on every change.
//!
//! ```text
//!   API server ──watch──► reflector store ──► notify ──► the binary's loop takes a snapshot
//! ```
//!
//! A watch that fails retries with kube's default backoff and says so in the log; the loop
//! keeps working from what the stores hold meanwhile.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::{
    Api, Resource,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use tokio::sync::Notify;
use tracing::warn;

/// The watch tasks of one run, stopped when dropped (e.g. when a leader loses its Lease).
#[derive(Debug, Default)]
pub struct Watches {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    notify: Arc<Notify>,
}

impl Drop for Watches {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Watches {
    pub fn new() -> Self {
        Watches::default()
    }

    /// Woken on every change of every watch.
    pub fn notify(&self) -> Arc<Notify> {
        self.notify.clone()
    }

    /// Watches `api` (narrowed by `config`) into a store, waking the loop on every change.
    pub fn store<K>(&mut self, api: Api<K>, config: watcher::Config) -> Store<K>
    where
        K: Resource + Clone + std::fmt::Debug + Send + Sync + serde::de::DeserializeOwned + 'static,
        K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    {
        let (store, writer) = reflector::store();
        // Managed fields are most of an object's size and never read.
        let stream = reflector::reflector(
            writer,
            watcher(api, config)
                .default_backoff()
                .modify(|object| object.meta_mut().managed_fields = None),
        );
        self.spawn(stream, std::any::type_name::<K>());
        store
    }

    /// Drives any watch stream (e.g. one that builds compact views of its own), waking the
    /// loop on every event.
    pub fn spawn<S, T>(&mut self, stream: S, what: &'static str)
    where
        S: Stream<Item = Result<T, watcher::Error>> + Send + 'static,
        T: Send + 'static,
    {
        let notify = self.notify.clone();
        self.tasks.push(tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(_) => notify.notify_one(),
                    Err(e) => warn!(%what, error = %e, "watch error; retrying with backoff"),
                }
            }
        }));
    }
}
