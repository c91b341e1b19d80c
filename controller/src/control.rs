//! The control loop: watch Services, pools, namespaces and the configuration kinds; decide;
//! write what was decided.
//!
//! ```text
//!   watch Services ─┐
//!   watch pools ────┤
//!   watch Namespaces┼─► stores ──notify──► Snapshot ─► Decider::pass ─► Vec<Write>
//!   watch BGPPeers, BFDProfiles, advertisements, Nodes (labels),          │
//!     Secrets in Herald's namespace (names, keys) ┘                       │
//!                          Decider::record ◄── landed or not ◄── Writer::apply (while leading)
//! ```
//!
//! One task owns the [`Decider`] (and in it the allocator), so no two decisions race; what
//! is decided is in [`crate::decide`], how it is written in [`crate::write`]. A pass whose
//! writes did not all land is followed by another after a backoff (0.5 s doubling to 30 s),
//! watch event or not.

use std::sync::Arc;

use herald_api::{
    BFDProfile, BGPAdvertisement, BGPPeer, IPAddressPool, L2Advertisement, bgp::PASSWORD_KEY,
    service::ServiceView,
};
use herald_shell::{
    api::ApiClients,
    events::{Publisher, Queue},
    watch::{Views, Watches},
};
use k8s_openapi::{
    api::{
        coordination::v1::Lease,
        core::v1::{Namespace, Node, Secret, Service},
    },
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    runtime::{reflector::Store, watcher},
};
use tracing::{info, warn};

use crate::{
    decide::{Decider, Snapshot},
    judge::{Configuration, NodeLabels, SecretKeys},
    metrics::Metrics,
    uninstall,
    write::{self, Fence, Writer},
};

/// What the loop is told at start.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The `loadBalancerClass` served; `None` serves Services without a class.
    pub(crate) class: Option<String>,
    /// The instance name Events are reported under.
    pub(crate) instance: String,
    /// Herald's namespace, where BGPPeers' password Secrets are and the Lease is held.
    pub(crate) namespace: String,
    /// The Lease's name: a request to release every Service comes as its annotation.
    pub(crate) lease_name: String,
    pub(crate) metrics: Arc<Metrics>,
    /// Whether this replica may write.
    pub(crate) fence: Fence,
    /// The id of a request to release every Service ([`crate::uninstall`]), if one stands.
    pub(crate) release_requested: tokio::sync::watch::Receiver<Option<String>>,
}

/// Runs the controller until the process ends.
pub(crate) async fn run(clients: ApiClients, settings: Settings) -> anyhow::Result<()> {
    let client = clients.watches;
    let mut watches = Watches::new();
    let notify = watches.notify();
    let services = watches.views(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        |service| Some(ServiceView::new(service)),
    );
    let pools =
        watches.store::<IPAddressPool>(Api::all(client.clone()), watcher::Config::default());
    let namespaces =
        watches.store::<Namespace>(Api::all(client.clone()), watcher::Config::default());
    let configuration = ConfigurationWatches {
        namespace: settings.namespace.clone(),
        peers: watches.store(Api::all(client.clone()), watcher::Config::default()),
        profiles: watches.store(Api::all(client.clone()), watcher::Config::default()),
        l2_advertisements: watches.store(Api::all(client.clone()), watcher::Config::default()),
        bgp_advertisements: watches.store(Api::all(client.clone()), watcher::Config::default()),
        nodes: watches.views(
            Api::<Node>::all(client.clone()),
            watcher::Config::default(),
            |node| {
                Some(NodeLabels {
                    name: node.name_any(),
                    labels: node.labels().clone(),
                })
            },
        ),
        // Only which keys a Secret has is kept, never its data.
        secrets: watches.views(
            Api::<Secret>::namespaced(client.clone(), &settings.namespace),
            watcher::Config::default(),
            |secret| {
                Some(SecretKeys {
                    name: secret.name_any(),
                    has_password: secret
                        .data
                        .as_ref()
                        .is_some_and(|d| d.contains_key(PASSWORD_KEY)),
                })
            },
        ),
    };
    services.wait_until_ready().await;
    configuration.nodes.wait_until_ready().await;
    configuration.secrets.wait_until_ready().await;
    for (what, ready) in [
        ("IPAddressPools", pools.wait_until_ready().await),
        ("Namespaces", namespaces.wait_until_ready().await),
        ("BGPPeers", configuration.peers.wait_until_ready().await),
        (
            "BFDProfiles",
            configuration.profiles.wait_until_ready().await,
        ),
        (
            "L2Advertisements",
            configuration.l2_advertisements.wait_until_ready().await,
        ),
        (
            "BGPAdvertisements",
            configuration.bgp_advertisements.wait_until_ready().await,
        ),
    ] {
        ready
            .map_err(|e| anyhow::anyhow!("the watch of {what} ended before its first list: {e}"))?;
    }
    let fence = settings.fence.clone();
    let writer = Writer {
        // An Event waiting in the queue when the term ends is dropped, like any other write.
        events: Queue::start_fenced(
            Publisher::new(
                clients.requests.clone(),
                "herald-controller",
                &settings.instance,
                "Allocate",
            ),
            write::EVENT_QUEUE,
            write::EVENT_CONCURRENCY,
            move || fence.holds(),
        ),
        client: clients.requests,
        metrics: settings.metrics.clone(),
        fence: settings.fence,
    };
    let mut decider = Decider::new(settings.class);
    let snapshot = take_snapshot(&services, &pools, &namespaces, &configuration);
    let told = decider.restore(&snapshot);
    decider.record(writer.apply(told).await);
    info!(
        services = snapshot.services(),
        "state rebuilt from Service status; serving"
    );
    let mut retry = RETRY_FIRST;
    let mut release_requested = settings.release_requested.clone();
    // The request carried out last (said on the Lease once).
    let mut released: Option<String> = None;
    let leases: Api<Lease> = Api::namespaced(writer.client.clone(), &settings.namespace);
    loop {
        let request = release_requested.borrow_and_update().clone();
        if request.is_some() != decider.releasing() {
            match &request {
                Some(id) => {
                    warn!(%id, "asked to release every Service (Herald is being uninstalled): serving none")
                }
                None => info!("the release was called off: serving Services again"),
            }
        }
        decider.set_releasing(request.is_some());
        let snapshot = take_snapshot(&services, &pools, &namespaces, &configuration);
        let writes = decider.pass(&snapshot, Timestamp::now());
        for (pool, usage) in decider.pool_usage(&snapshot) {
            settings.metrics.set_pool_usage(&pool, &usage);
        }
        settings
            .metrics
            .services_without_address
            .set(i64::try_from(decider.without_address(&snapshot)).unwrap_or(i64::MAX));
        let done = writer.apply(writes).await;
        let failed = done.iter().filter(|(_, landed)| !landed).count();
        decider.record(done);
        settings.metrics.set_not_in_effect(decider.not_in_effect());
        if failed == 0 {
            retry = RETRY_FIRST;
            if let Some(id) = request.filter(|id| released.as_ref() != Some(id))
                && decider.holds_nothing(&snapshot)
                && writer.fence.holds()
            {
                match uninstall::annotate(
                    &leases,
                    &settings.lease_name,
                    uninstall::RELEASED_ALL,
                    Some(&id),
                )
                .await
                {
                    Ok(()) => {
                        info!(%id, "every Service released; told the Lease");
                        released = Some(id);
                    }
                    Err(e) => warn!(error = %e, "telling the Lease every Service is released"),
                }
            }
            tokio::select! {
                () = notify.notified() => {}
                changed = release_requested.changed() => {
                    if changed.is_err() {
                        // No Lease, no request: only the watches wake the loop.
                        notify.notified().await;
                    }
                }
                // Until the releases land and come back through the watch, look again.
                () = tokio::time::sleep(RETRY_FIRST), if decider.releasing() && released.is_none() => {}
            }
        } else {
            // What did not land is decided again after a while even if nothing else
            // changes: a quiet cluster sends no watch event to trigger the next pass.
            warn!(failed, retry_in = ?retry, "writes did not land; retrying");
            tokio::select! {
                () = notify.notified() => {}
                () = tokio::time::sleep(retry) => {}
            }
            retry = (retry * 2).min(RETRY_LAST);
        }
    }
}

/// How long after a pass with failed writes the next pass comes at the latest: doubling
/// from the first to the last while writes keep failing.
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(500);
const RETRY_LAST: std::time::Duration = std::time::Duration::from_secs(30);

/// Objects sorted by name, so that verdicts come in a stable order.
fn by_name<K: kube::Resource>(mut objects: Vec<Arc<K>>) -> Vec<Arc<K>> {
    objects.sort_by_key(|o| o.name_any());
    objects
}

/// The watched configuration kinds and what they refer to.
struct ConfigurationWatches {
    namespace: String,
    peers: Store<BGPPeer>,
    profiles: Store<BFDProfile>,
    l2_advertisements: Store<L2Advertisement>,
    bgp_advertisements: Store<BGPAdvertisement>,
    nodes: Views<NodeLabels>,
    secrets: Views<SecretKeys>,
}

/// The objects of this moment.
fn take_snapshot(
    services: &Views<ServiceView>,
    pools: &Store<IPAddressPool>,
    namespaces: &Store<Namespace>,
    configuration: &ConfigurationWatches,
) -> Snapshot {
    let namespaces = namespaces
        .state()
        .iter()
        .map(|ns| (ns.name_any(), ns.labels().clone()))
        .collect();
    Snapshot::new(services.state(), pools.state(), namespaces).with_configuration(Configuration {
        namespace: configuration.namespace.clone(),
        peers: by_name(configuration.peers.state()),
        profiles: by_name(configuration.profiles.state()),
        l2_advertisements: by_name(configuration.l2_advertisements.state()),
        bgp_advertisements: by_name(configuration.bgp_advertisements.state()),
        nodes: configuration.nodes.state(),
        secrets: configuration.secrets.state(),
    })
}
