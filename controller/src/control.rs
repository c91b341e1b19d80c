//! The control loop: watch Services, pools and namespaces; decide; write what was decided.
//!
//! ```text
//!   watch Services ─┐
//!   watch pools ────┼─► stores ──notify──► Snapshot ─► Decider::pass ─► Vec<Write>
//!   watch Namespaces┘                                                     │
//!                          Decider::record ◄── landed or not ◄── Writer::apply (while leading)
//! ```
//!
//! One task owns the [`Decider`] (and in it the allocator), so no two decisions race; what
//! is decided is in [`crate::decide`], how it is written in [`crate::write`].

use std::sync::Arc;

use herald_api::{IPAddressPool, service::ServiceView};
use herald_shell::{
    events::{Publisher, Queue},
    watch::{Views, Watches},
};
use k8s_openapi::{
    api::core::v1::{Namespace, Service},
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt,
    runtime::{reflector::Store, watcher},
};
use tracing::info;

use crate::{
    decide::{Decider, Snapshot},
    metrics::Metrics,
    write::{self, Fence, Writer},
};

/// What the loop is told at start.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The `loadBalancerClass` served; `None` serves Services without a class.
    pub(crate) class: Option<String>,
    /// The instance name Events are reported under.
    pub(crate) instance: String,
    pub(crate) metrics: Arc<Metrics>,
    /// Whether this replica may write.
    pub(crate) fence: Fence,
}

/// Runs the controller until the process ends.
pub(crate) async fn run(client: Client, settings: Settings) -> anyhow::Result<()> {
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
    services.wait_until_ready().await;
    for (what, ready) in [
        ("IPAddressPools", pools.wait_until_ready().await),
        ("Namespaces", namespaces.wait_until_ready().await),
    ] {
        ready
            .map_err(|e| anyhow::anyhow!("the watch of {what} ended before its first list: {e}"))?;
    }
    let writer = Writer {
        events: Queue::start(
            Publisher::new(
                client.clone(),
                "herald-controller",
                &settings.instance,
                "Allocate",
            ),
            write::EVENT_QUEUE,
            write::EVENT_CONCURRENCY,
        ),
        client,
        metrics: settings.metrics.clone(),
        fence: settings.fence,
    };
    let mut decider = Decider::new(settings.class);
    let snapshot = take_snapshot(&services, &pools, &namespaces);
    let told = decider.restore(&snapshot);
    decider.record(writer.apply(told).await);
    info!(
        services = snapshot.services(),
        "state rebuilt from Service status; serving"
    );
    loop {
        let snapshot = take_snapshot(&services, &pools, &namespaces);
        let writes = decider.pass(&snapshot, Timestamp::now());
        for (pool, usage) in decider.pool_usage(&snapshot) {
            settings.metrics.set_pool_usage(&pool, &usage);
        }
        decider.record(writer.apply(writes).await);
        notify.notified().await;
    }
}

/// The objects of this moment.
fn take_snapshot(
    services: &Views<ServiceView>,
    pools: &Store<IPAddressPool>,
    namespaces: &Store<Namespace>,
) -> Snapshot {
    let namespaces = namespaces
        .state()
        .iter()
        .map(|ns| (ns.name_any(), ns.labels().clone()))
        .collect();
    Snapshot::new(services.state(), pools.state(), namespaces)
}
