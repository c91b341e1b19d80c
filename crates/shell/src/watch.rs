//! Watches that keep local stores current and wake a loop on every change.
//!
//! ```text
//!   API server ──watch──► reflector store ──► notify ──► the binary's loop takes a snapshot
//! ```
//!
//! Kinds with many objects are kept as [`Views`]: a compact value built from each object as
//! its watch event arrives (or nothing, for objects the binary never looks at), so whole
//! objects never pile up in memory.
//!
//! A watch that fails retries with [`RetryBackoff`] (0.5 s doubling to 5 s; kube's default
//! grows to 30 s, so after a minute without the API server a watch could come back half a
//! minute after it) and says so in the log; the loop keeps working from what the stores hold
//! meanwhile.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

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

/// How a failed watch waits before it tries again: 0.5 s, doubling to 5 s, each wait drawn
/// between 75 % and 100 % of that (so that replicas and nodes do not retry in step), back
/// to 0.5 s once a watch succeeds. At most one attempt per watch every 5 s while the API
/// server is away, and back within 5 s of its return.
#[derive(Debug, Clone)]
pub struct RetryBackoff {
    next: std::time::Duration,
    random: u64,
}

impl RetryBackoff {
    const FIRST: std::time::Duration = std::time::Duration::from_millis(500);
    const MAX: std::time::Duration = std::time::Duration::from_secs(5);
}

impl Default for RetryBackoff {
    fn default() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        RetryBackoff {
            next: Self::FIRST,
            random: seed | 1,
        }
    }
}

impl Iterator for RetryBackoff {
    type Item = std::time::Duration;

    fn next(&mut self) -> Option<Self::Item> {
        // xorshift64: enough to spread retries.
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        let permille = 750 + (self.random % 251) as u32;
        let wait = self.next.mul_f64(f64::from(permille) / 1000.0);
        self.next = (self.next * 2).min(Self::MAX);
        Some(wait)
    }
}

impl kube::runtime::utils::Backoff for RetryBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

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
        self.store_waking(api, config, true)
    }

    /// Watches `api` into a store without waking the loop: for objects that change often and
    /// that the loop reads on its own schedule (the speakers' heartbeat Leases).
    pub fn quiet_store<K>(&mut self, api: Api<K>, config: watcher::Config) -> Store<K>
    where
        K: Resource + Clone + std::fmt::Debug + Send + Sync + serde::de::DeserializeOwned + 'static,
        K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    {
        self.store_waking(api, config, false)
    }

    fn store_waking<K>(&mut self, api: Api<K>, config: watcher::Config, wake: bool) -> Store<K>
    where
        K: Resource + Clone + std::fmt::Debug + Send + Sync + serde::de::DeserializeOwned + 'static,
        K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    {
        let (store, writer) = reflector::store();
        // Managed fields are most of an object's size and never read.
        let stream = reflector::reflector(
            writer,
            watcher(api, config)
                .backoff(RetryBackoff::default())
                .modify(|object| object.meta_mut().managed_fields = None),
        );
        self.spawn(stream, std::any::type_name::<K>(), wake);
        store
    }

    /// Watches `api` into compact views: `view` builds the value kept for an object, or
    /// `None` for an object not worth keeping (it is dropped if it was kept before).
    pub fn views<K, V>(
        &mut self,
        api: Api<K>,
        config: watcher::Config,
        view: impl Fn(&K) -> Option<V> + Send + 'static,
    ) -> Views<V>
    where
        K: Resource + Clone + std::fmt::Debug + Send + Sync + serde::de::DeserializeOwned + 'static,
        V: Send + Sync + 'static,
    {
        let views = Views::default();
        let feed = views.clone();
        let mut relist = HashMap::new();
        let stream = watcher(api, config)
            .backoff(RetryBackoff::default())
            .map(move |event| event.map(|event| feed.apply(event, &view, &mut relist)));
        self.spawn(stream, std::any::type_name::<K>(), true);
        views
    }

    /// Drives a watch stream, waking the loop on every event when `wake`.
    fn spawn<S, T>(&mut self, stream: S, what: &'static str, wake: bool)
    where
        S: Stream<Item = Result<T, watcher::Error>> + Send + 'static,
        T: Send + 'static,
    {
        let notify = self.notify.clone();
        self.tasks.push(tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(_) if wake => notify.notify_one(),
                    Ok(_) => {}
                    Err(e) => warn!(%what, error = %e, "watch error; retrying with backoff"),
                }
            }
        }));
    }
}

/// An object's namespace (if any) and name.
pub type ObjectKey = (Option<String>, String);

fn key_of<K: Resource>(object: &K) -> ObjectKey {
    let meta = object.meta();
    (
        meta.namespace.clone(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Compact views of the objects of one kind, kept current by a watch.
#[derive(Debug)]
pub struct Views<V> {
    views: Arc<Mutex<HashMap<ObjectKey, Arc<V>>>>,
    listed: Arc<AtomicBool>,
    ready: Arc<Notify>,
}

impl<V> Clone for Views<V> {
    fn clone(&self) -> Self {
        Views {
            views: self.views.clone(),
            listed: self.listed.clone(),
            ready: self.ready.clone(),
        }
    }
}

impl<V> Default for Views<V> {
    fn default() -> Self {
        Views {
            views: Arc::default(),
            listed: Arc::default(),
            ready: Arc::default(),
        }
    }
}

impl<V> Views<V> {
    /// Every view now, in no particular order.
    pub fn state(&self) -> Vec<Arc<V>> {
        let views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        views.values().cloned().collect()
    }

    /// Waits for the first complete list.
    pub async fn wait_until_ready(&self) {
        while !self.listed.load(Ordering::Acquire) {
            let notified = self.ready.notified();
            if self.listed.load(Ordering::Acquire) {
                break;
            }
            notified.await;
        }
    }

    /// Applies one watch event; a relist replaces the whole set at its end.
    fn apply<K: Resource>(
        &self,
        event: watcher::Event<K>,
        view: &impl Fn(&K) -> Option<V>,
        relist: &mut HashMap<ObjectKey, Arc<V>>,
    ) {
        let mut views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            watcher::Event::Apply(object) => match view(&object) {
                Some(value) => {
                    views.insert(key_of(&object), Arc::new(value));
                }
                None => {
                    views.remove(&key_of(&object));
                }
            },
            watcher::Event::Delete(object) => {
                views.remove(&key_of(&object));
            }
            watcher::Event::Init => relist.clear(),
            watcher::Event::InitApply(object) => {
                if let Some(value) = view(&object) {
                    relist.insert(key_of(&object), Arc::new(value));
                }
            }
            watcher::Event::InitDone => {
                *views = std::mem::take(relist);
                self.listed.store(true, Ordering::Release);
                self.ready.notify_waiters();
            }
        }
    }
}

#[cfg(test)]
mod backoff_tests {
    use super::*;
    use kube::runtime::utils::Backoff;

    #[test]
    fn retries_grow_to_five_seconds_with_jitter_and_start_over_after_a_success() {
        let mut backoff = RetryBackoff::default();
        let waits: Vec<std::time::Duration> = backoff.by_ref().take(8).collect();
        let ms = |d: &std::time::Duration| d.as_millis();
        assert!((375..=500).contains(&ms(&waits[0])), "{waits:?}");
        assert!((750..=1000).contains(&ms(&waits[1])), "{waits:?}");
        assert!(
            waits[5..].iter().all(|w| (3750..=5000).contains(&ms(w))),
            "{waits:?}"
        );
        backoff.reset();
        assert!(ms(&backoff.next().expect("endless")) <= 500);
    }
}
