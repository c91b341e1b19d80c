//! Events on Services and pools, written straight to the core/v1 Events API, which
//! `kubectl describe` shows.
//!
//! kube's `Recorder` keeps every Event it sent for six minutes to aggregate repeats. The
//! controller already sends an Event only when a Service's message changes, so it needs no such
//! cache, and at 10,000 Services the cache held one Event per allocation.

use k8s_openapi::{
    api::core::v1::{Event, EventSource, ObjectReference},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff::Timestamp,
};
use kube::{Api, Client, api::PostParams};
use tracing::debug;

/// The severity of an Event, as `kubectl describe` shows it in `Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Severity {
    Normal,
    Warning,
}

/// One Event to send.
#[derive(Debug, Clone)]
pub(crate) struct Note {
    pub(crate) severity: Severity,
    /// Short, PascalCase: `IPAllocated`, `AllocationFailed`, ...
    pub(crate) reason: String,
    pub(crate) message: String,
}

/// Sends Events as one controller instance.
#[derive(Clone)]
pub(crate) struct Publisher {
    client: Client,
    component: String,
    instance: String,
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
    pub(crate) fn new(client: Client, component: &str, instance: &str) -> Self {
        Publisher {
            client,
            component: component.to_owned(),
            instance: instance.to_owned(),
        }
    }

    /// Sends `note` about `object`; a failure is logged, never fatal.
    pub(crate) async fn publish(&self, object: &ObjectReference, note: &Note) {
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
            action: Some("Allocate".into()),
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
