//! Leader election over a Lease: `kube-lease-manager` holds and renews it, and a watch of the
//! Lease follows it. A follower left alone sleeps until the holder's term runs out (it trusts
//! what it last read until then); when the watch shows the Lease free, the follower reads it
//! afresh and takes it at once, so a leader that stops on SIGTERM hands over within a second
//! instead of a Lease duration.
//!
//! The leader's [`Term`] ends by its own clock: each renewal it sees come back through the
//! watch extends it to the Lease's expiry less half the grace period, and if none comes (the
//! API server unreachable, the process frozen), the term ends before any other replica may
//! take the Lease. The writer checks the term before every write, so a leader cut off or
//! paused past its Lease writes nothing when it comes back. Its lease manager, which never
//! learnt that it lost the Lease (every request failed), is then replaced by a fresh one,
//! tried every second until the API answers: the fresh one takes the Lease again if nobody
//! else has, and says so. (Before, the replica waited for its Lease watch to show a renewal;
//! after the API server had been killed, that watch came back only after its backoff, and no
//! replica led meanwhile.)
//!
//! ```text
//!   watch Lease ──free, and we do not lead──► a fresh LeaseManager (reads the Lease)
//!               ──held by us (a renewal)───► term until now + duration − grace/2
//!               ──held by another──────────► no term
//!   LeaseManager::changed() (renew, or take a free or expired Lease) ──► term or none
//!   term ran out without a renewal ──► no term; a fresh LeaseManager (every second until
//!                                      one reads the Lease)
//!   every receiver dropped ──► release the Lease, end
//! ```

use futures::StreamExt;
use herald_shell::{api::ApiClients, watch::RetryBackoff};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api,
    runtime::{WatchStreamExt, watcher},
};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::{sync::watch, task::JoinHandle, time::Instant};
use tracing::{info, warn};

/// Waits until `until` (for ever without one).
async fn sleep_until(until: Option<Instant>) {
    match until {
        Some(until) => tokio::time::sleep_until(until).await,
        None => std::future::pending().await,
    }
}

/// How long to wait after a failed look at the Lease before the next.
const RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether this replica leads: until when at the latest, by its own clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Term {
    until: Option<Instant>,
}

impl Term {
    /// Whether this replica leads now.
    pub(crate) fn holds(&self) -> bool {
        self.until.is_some_and(|until| Instant::now() < until)
    }
}

/// Who competes for which Lease, and on what terms.
#[derive(Clone)]
pub(crate) struct Candidate {
    pub(crate) clients: ApiClients,
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) identity: String,
    /// Seconds a Lease lasts without renewal.
    pub(crate) duration: u64,
    /// Seconds before expiry the holder renews.
    pub(crate) grace: u64,
}

impl std::fmt::Debug for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Candidate")
            .field("lease", &format!("{}/{}", self.namespace, self.name))
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Candidate {
    /// A lease manager that has just read the Lease.
    async fn manager(&self) -> anyhow::Result<LeaseManager> {
        LeaseManagerBuilder::new(self.clients.requests.clone(), &self.name)
            .with_namespace(&self.namespace)
            .with_identity(&self.identity)
            .with_duration(self.duration)
            .with_grace(self.grace)
            .build()
            .await
            .map_err(|e| anyhow::anyhow!("Lease {}/{}: {e}", self.namespace, self.name))
    }

    /// A term from now: the Lease's expiry, less half the grace period for the watch's delay.
    fn term_from_now(&self) -> Term {
        let valid = std::time::Duration::from_secs(self.duration)
            .saturating_sub(std::time::Duration::from_secs(self.grace) / 2);
        Term {
            until: Some(Instant::now() + valid),
        }
    }

    /// Runs the election: this replica's term, the id of a request to release every Service
    /// (the annotation [`crate::uninstall::RELEASE_ALL`] on the Lease), and the task, which
    /// releases the Lease and ends once every receiver of the term is dropped.
    pub(crate) async fn elect(
        self,
    ) -> (
        watch::Receiver<Term>,
        watch::Receiver<Option<String>>,
        JoinHandle<()>,
    ) {
        // An API server out of reach at start is waited for, not a reason to exit (and be
        // restarted in a loop).
        let mut manager = loop {
            match self.manager().await {
                Ok(manager) => break manager,
                Err(e) => {
                    warn!(error = %e, "cannot read the Lease yet; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        };
        let (leading, receiver) = watch::channel(Term::default());
        let (release, release_requested) = watch::channel(None);
        let api: Api<Lease> = Api::namespaced(self.clients.watches.clone(), &self.namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={}", self.name));
        let task = tokio::spawn(async move {
            // When to try a fresh lease manager after the term ran out.
            let mut refresh: Option<Instant> = None;
            let mut changes = std::pin::pin!(
                watcher(api, config)
                    .backoff(RetryBackoff::default())
                    .applied_objects()
            );
            loop {
                tokio::select! {
                    biased;
                    () = leading.closed() => {
                        if let Err(e) = manager.release().await {
                            warn!(error = %e, "releasing the Lease failed; it expires on its own");
                        }
                        return;
                    }
                    changed = manager.changed() => match changed {
                        Ok(true) => {
                            leading.send_replace(self.term_from_now());
                        }
                        Ok(false) => {
                            leading.send_replace(Term::default());
                        }
                        Err(e) => {
                            warn!(error = %e, "reading or renewing the Lease failed; retrying");
                            tokio::time::sleep(RETRY).await;
                        }
                    },
                    // The term ran out without a renewal seen: stop writing before anyone else
                    // may take the Lease.
                    () = sleep_until(leading.borrow().until), if leading.borrow().until.is_some() => {
                        warn!("no renewal of the Lease seen in time: stopped writing");
                        leading.send_replace(Term::default());
                        refresh = Some(Instant::now());
                    }
                    () = sleep_until(refresh), if refresh.is_some() => {
                        match self.manager().await {
                            Ok(fresh) => {
                                info!("the Lease can be read again: competing for it afresh");
                                manager = fresh;
                                refresh = None;
                            }
                            Err(_) => refresh = Some(Instant::now() + RETRY),
                        }
                    }
                    Some(Ok(lease)) = changes.next() => {
                        release.send_if_modified(|requested| {
                            let now = crate::uninstall::annotation(&lease, crate::uninstall::RELEASE_ALL);
                            let changed = *requested != now;
                            *requested = now;
                            changed
                        });
                        let holder = lease
                            .spec
                            .as_ref()
                            .and_then(|spec| spec.holder_identity.clone())
                            .filter(|holder| !holder.is_empty());
                        match holder {
                            Some(holder) if holder == self.identity => {
                                leading.send_replace(self.term_from_now());
                            }
                            Some(_) => {
                                leading.send_replace(Term::default());
                            }
                            None if !leading.borrow().holds() => {
                                info!("the Lease was released: taking it");
                                match self.manager().await {
                                    Ok(fresh) => manager = fresh,
                                    Err(e) => warn!(error = %e, "reading the released Lease failed"),
                                }
                            }
                            None => {}
                        }
                    }
                }
            }
        });
        (receiver, release_requested, task)
    }
}
