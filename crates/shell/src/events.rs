//! Events on Herald's objects (Services, pools), written straight to the core/v1 Events API, which
//! `kubectl describe` shows.
//!
//! kube's `Recorder` keeps every Event it sent for six minutes to aggregate repeats. Herald's
//! binaries send an Event only when what they say about an object changes, so they need no
//! such cache, and at 10,000 Services the cache held one Event per allocation.

use k8s_openapi::{
    api::core::v1::{Event, EventSource, ObjectReference},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff::Timestamp,
};
use kube::{Api, Client, api::PostParams};
use tracing::debug;

/// The severity of an Event, as `kubectl describe` shows it in `Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Normal,
    Warning,
}

/// One Event to send.
#[derive(Debug, Clone)]
pub struct Note {
    pub severity: Severity,
    /// Short, PascalCase: `IPAllocated`, `AllocationFailed`, ...
    pub reason: String,
    pub message: String,
}

/// Sends Events as one instance of a component.
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    component: String,
    instance: String,
    action: String,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("component", &self.component)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// `component` (e.g. `herald-controller`) and `instance` (its pod) are shown as the
    /// Event's source; `action` says what the component does (`Allocate`, `Announce`).
    pub fn new(client: Client, component: &str, instance: &str, action: &str) -> Self {
        Publisher {
            client,
            component: component.to_owned(),
            instance: instance.to_owned(),
            action: action.to_owned(),
        }
    }

    /// Sends `note` about `object`; a failure is logged, never fatal.
    pub async fn publish(&self, object: &ObjectReference, note: &Note) {
        // Events of cluster-scoped objects (pools) live in `default`, as kubectl expects.
        let namespace = object.namespace.clone().unwrap_or_else(|| "default".into());
        let now = Time(Timestamp::now());
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}.", object.name.as_deref().unwrap_or("object"))),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: object.clone(),
            reason: Some(note.reason.clone()),
            message: Some(note.message.clone()),
            type_: Some(match note.severity {
                Severity::Normal => "Normal".into(),
                Severity::Warning => "Warning".into(),
            }),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: None,
            }),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.instance.clone()),
            action: Some(self.action.clone()),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            debug!(reason = %note.reason, error = %e, "publishing an Event failed");
        }
    }
}

/// Events sent in the background, a few at a time: a burst (a node taking over a thousand
/// addresses at once) neither waits for the API server nor opens a thousand requests.
#[derive(Debug, Clone)]
pub struct Queue {
    sender: tokio::sync::mpsc::Sender<(ObjectReference, Note)>,
}

impl Queue {
    /// Starts the sender: at most `capacity` Events wait, `concurrency` are sent at once.
    pub fn start(publisher: Publisher, capacity: usize, concurrency: usize) -> Self {
        Self::start_fenced(publisher, capacity, concurrency, || true)
    }

    /// [`Queue::start`], sending each Event only if `may_send` still says so when its turn
    /// comes (a controller that lost its Lease while Events waited drops them).
    pub fn start_fenced(
        publisher: Publisher,
        capacity: usize,
        concurrency: usize,
        may_send: impl Fn() -> bool + Send + Sync + 'static,
    ) -> Self {
        let (sender, mut receiver) = tokio::sync::mpsc::channel(capacity);
        let pending = futures::stream::poll_fn(move |cx| receiver.poll_recv(cx));
        let may_send = std::sync::Arc::new(may_send);
        tokio::spawn(futures::StreamExt::for_each_concurrent(
            pending,
            concurrency,
            move |(object, note): (ObjectReference, Note)| {
                let (publisher, may_send) = (publisher.clone(), may_send.clone());
                async move {
                    if may_send() {
                        publisher.publish(&object, &note).await;
                    }
                }
            },
        ));
        Queue { sender }
    }

    /// Queues `note` about `object`; `false` when the queue is full and it was dropped.
    pub fn send(&self, object: ObjectReference, note: Note) -> bool {
        self.sender.try_send((object, note)).is_ok()
    }
}
