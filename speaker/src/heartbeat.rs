//! This speaker's heartbeat through the API server, and what it reads of the others'.
//!
//! Each speaker renews a Lease named [`lease_name`] in Herald's namespace, labelled
//! [`LABEL`], every [`RENEW_EVERY`], and deletes it when it stops. Every speaker watches
//! them; [`Heartbeats`] says which are renewed lately. Gossip finds a dead speaker in under a
//! second; the heartbeats say, slowly, which speakers are alive though gossip cannot hear them
//! (a partition between nodes), so that the smaller side steps back
//! ([`herald_membership::Members::outvoted`]).

use std::time::Duration;

use herald_membership::heartbeats::{Heartbeats, RENEW_EVERY, Renewal};
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams},
    runtime::reflector::Store,
};
use tracing::{debug, warn};

/// The label of every speaker heartbeat Lease.
pub(crate) const LABEL: &str = "herald.dev/speaker-heartbeat";
const FIELD_MANAGER: &str = "herald-speaker";

/// The heartbeat Lease of node `node`'s speaker.
pub(crate) fn lease_name(node: &str) -> String {
    format!("herald-speaker-{node}")
}

/// This speaker's heartbeat, renewed in the background until [`Heartbeat::stop`].
pub(crate) struct Heartbeat {
    api: Api<Lease>,
    name: String,
    task: tokio::task::JoinHandle<()>,
}

impl Heartbeat {
    pub(crate) fn start(client: Client, namespace: &str, node: &str) -> Heartbeat {
        let api: Api<Lease> = Api::namespaced(client, namespace);
        let name = lease_name(node);
        let task = tokio::spawn(renew(api.clone(), name.clone(), node.to_owned()));
        Heartbeat { api, name, task }
    }

    /// Stops renewing and deletes the Lease, so the others stop counting this speaker at once.
    pub(crate) async fn stop(self) {
        self.task.abort();
        let deleted = tokio::time::timeout(
            Duration::from_secs(2),
            self.api.delete(&self.name, &DeleteParams::default()),
        )
        .await;
        if !matches!(deleted, Ok(Ok(_))) {
            debug!(lease = %self.name, "the heartbeat Lease was not deleted; it expires");
        }
    }
}

async fn renew(api: Api<Lease>, name: String, node: String) {
    let mut failing = false;
    loop {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(LABEL.to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(node.clone()),
                lease_duration_seconds: Some(
                    i32::try_from(herald_membership::heartbeats::EXPIRES_AFTER.as_secs())
                        .unwrap_or(i32::MAX),
                ),
                renew_time: Some(MicroTime(Timestamp::now())),
                ..LeaseSpec::default()
            }),
        };
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api.patch(&name, &params, &Patch::Apply(&lease)).await {
            Ok(_) if failing => {
                debug!(lease = %name, "renewing the heartbeat Lease works again");
                failing = false;
            }
            Ok(_) => {}
            Err(e) if !failing => {
                warn!(lease = %name, error = %e, "renewing the heartbeat Lease failed; retrying");
                failing = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(RENEW_EVERY).await;
    }
}

/// Hands what the watch of the heartbeat Leases holds to `heartbeats`, at `now`.
pub(crate) fn observe(heartbeats: &mut Heartbeats, leases: &Store<Lease>, now: std::time::Instant) {
    let wall = Timestamp::now();
    let renewals = leases.state().into_iter().filter_map(|lease| {
        let spec = lease.spec.as_ref()?;
        let node = spec.holder_identity.clone()?;
        let MicroTime(renewed) = spec.renew_time.clone()?;
        let age = wall
            .duration_since(renewed)
            .try_into()
            .unwrap_or(Duration::ZERO);
        Some(Renewal {
            node,
            renewed: renewed.to_string(),
            age,
        })
    });
    heartbeats.observe(renewals, now);
}
