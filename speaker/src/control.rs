//! The speaker's loop: watch the cluster, learn who is alive, plan, announce, report.
//!
//! ```text
//!   watch Services, EndpointSlices, Nodes, pools, advertisements, BGPPeers ─┐
//!   gossip: live speakers ─────────────────────────────────────────────────┼─► snapshot
//!   every second: the node's interfaces ───────────────────────────────────┘     │
//!                        ┌──────────────────────────────────────────────┬────────┘
//!                        ▼ plan_l2 (whole cluster)                       ▼ plan_bgp (this node)
//!   Announcer::apply ◄── this node's share               Sessions::apply: one per peer
//!   Reporter ─► Events `nodeAssigned`, `bgpAdvertisement`; ServiceL2Status and
//!               BGPSessionStatus records
//! ```
//!
//! Every speaker plans the whole cluster from the same inputs, so all agree on one owner per
//! address without talking about it; gossip only tells them who is alive.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use herald_api::{BGPAdvertisement, BGPPeer, IPAddressPool, L2Advertisement};
use herald_l2::link::read_links;
use herald_membership::driver::Handle;
use herald_plan::{L2Plan, plan_bgp, plan_l2};
use herald_shell::{
    events::Publisher,
    watch::{Views, Watches},
};
use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client,
    runtime::{reflector::Store, watcher},
};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::{
    announce::Announcer,
    bgp::Sessions,
    cluster::{self, NodeView, Objects, ServiceView, SliceView},
    metrics::Metrics,
    peer,
    report::Reporter,
};

/// How often the node's interfaces are read again.
const LINK_SCAN: Duration = Duration::from_secs(1);
/// How often BGP password Secrets are read again (the speaker may `get` them, not watch).
const PASSWORD_REFRESH: Duration = Duration::from_secs(30);
/// How long a starting speaker stays silent waiting for every other node's speaker to be
/// heard from. Until it has joined, a speaker would think itself alone and claim every
/// address; after this it goes ahead with whoever answered (some nodes run no speaker).
const JOIN_GRACE: Duration = Duration::from_secs(3);

/// What the loop is told at start.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) node: String,
    pub(crate) instance: String,
    /// Herald's namespace, where BGP password Secrets are read.
    pub(crate) namespace: String,
    /// This speaker's gossip address (the port is every speaker's).
    pub(crate) gossip_address: SocketAddr,
    pub(crate) metrics: Arc<Metrics>,
}

/// The watched objects: compact views of the many (Services, EndpointSlices, Nodes), whole
/// objects of the few (pools, advertisements).
pub(crate) struct Stores {
    services: Views<ServiceView>,
    slices: Views<SliceView>,
    nodes: Views<NodeView>,
    pools: Store<IPAddressPool>,
    advertisements: Store<L2Advertisement>,
    bgp_advertisements: Store<BGPAdvertisement>,
    bgp_peers: Store<BGPPeer>,
}

impl Stores {
    /// Starts the watches (Services of `class` only) and waits for their first lists.
    pub(crate) async fn start(
        client: &Client,
        watches: &mut Watches,
        class: Option<String>,
    ) -> anyhow::Result<Stores> {
        let config = watcher::Config::default;
        let stores = Stores {
            services: watches.views(Api::<Service>::all(client.clone()), config(), move |s| {
                cluster::service_view(s, class.as_deref())
            }),
            slices: watches.views(
                Api::<EndpointSlice>::all(client.clone()),
                config(),
                cluster::slice_view,
            ),
            nodes: watches.views(Api::<Node>::all(client.clone()), config(), |n| {
                Some(cluster::node_view(n))
            }),
            pools: watches.store(Api::all(client.clone()), config()),
            advertisements: watches.store(Api::all(client.clone()), config()),
            bgp_advertisements: watches.store(Api::all(client.clone()), config()),
            bgp_peers: watches.store(Api::all(client.clone()), config()),
        };
        stores.services.wait_until_ready().await;
        stores.slices.wait_until_ready().await;
        stores.nodes.wait_until_ready().await;
        for (what, ready) in [
            ("IPAddressPools", stores.pools.wait_until_ready().await),
            (
                "L2Advertisements",
                stores.advertisements.wait_until_ready().await,
            ),
            (
                "BGPAdvertisements",
                stores.bgp_advertisements.wait_until_ready().await,
            ),
            ("BGPPeers", stores.bgp_peers.wait_until_ready().await),
        ] {
            ready.map_err(|e| {
                anyhow::anyhow!("the watch of {what} ended before its first list: {e}")
            })?;
        }
        Ok(stores)
    }

    /// This node, once it is known.
    pub(crate) fn node(&self, name: &str) -> Option<Arc<NodeView>> {
        self.nodes
            .state()
            .into_iter()
            .find(|n| n.state.name == name)
    }
}

/// Runs until `shutdown` resolves, then stops answering.
pub(crate) async fn run(
    client: Client,
    settings: Settings,
    stores: Stores,
    watches: Watches,
    membership: Handle,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let notify = watches.notify();
    let publisher = Publisher::new(
        client.clone(),
        "herald-speaker",
        &settings.instance,
        "Announce",
    );
    let mut sessions = Sessions::new(
        settings.metrics.clone(),
        client.clone(),
        &settings.namespace,
    );
    let mut reporter = Reporter::start(client, publisher, &settings.node, &settings.namespace);
    let mut announcer = Announcer::new(&settings.node, settings.metrics.clone());
    let mut password_refresh = tokio::time::interval(PASSWORD_REFRESH);
    password_refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut live: watch::Receiver<BTreeSet<String>> = membership.live.clone();
    let mut scan = tokio::time::interval(LINK_SCAN);
    scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut seeds = BTreeMap::new();
    let mut problems = Vec::new();
    let join_deadline = tokio::time::Instant::now() + JOIN_GRACE;
    let mut joined = false;
    // The plan is made again only when an input changed; the interfaces are read every
    // second and applied only when they changed.
    let mut inputs_changed = true;
    let (mut plan, mut services, mut alive) = (L2Plan::new(), Vec::new(), BTreeSet::new());
    let mut links = Vec::new();
    let mut this_node: Option<NodeView> = None;
    loop {
        if inputs_changed {
            let (slices, nodes, pools, advertisements) = (
                stores.slices.state(),
                stores.nodes.state(),
                stores.pools.state(),
                stores.advertisements.state(),
            );
            let bgp_advertisements = stores.bgp_advertisements.state();
            let (bgp_peers, unusable_peers) =
                peer::translate_all(&stores.bgp_peers.state(), &settings.namespace);
            services = stores.services.state();
            let wanted_seeds =
                cluster::gossip_seeds(&nodes, &settings.node, settings.gossip_address);
            if wanted_seeds != seeds {
                membership.set_seeds(wanted_seeds.clone());
                seeds = wanted_seeds;
            }
            alive = live.borrow_and_update().clone();
            settings
                .metrics
                .members
                .set(i64::try_from(alive.len()).unwrap_or(i64::MAX));
            if !joined {
                joined = seeds.keys().all(|node| alive.contains(node))
                    || tokio::time::Instant::now() >= join_deadline;
                if joined {
                    info!(live = ?alive, "joined the speakers; announcing");
                }
            }
            let objects = Objects {
                services: &services,
                slices: &slices,
                nodes: &nodes,
                pools: &pools,
                advertisements: &advertisements,
                bgp_advertisements: &bgp_advertisements,
                bgp_peers: &bgp_peers,
            };
            let (snapshot, mut now_problems) = cluster::snapshot(objects, &alive);
            now_problems.extend(unusable_peers.iter().map(ToString::to_string));
            if now_problems != problems {
                for problem in &now_problems {
                    warn!(%problem, "an advertisement or peer is not used");
                }
                problems = now_problems;
            }
            plan = plan_l2(&snapshot);
            // Each node advertises its own routes: no ownership, so no waiting to join.
            this_node = nodes
                .iter()
                .find(|n| n.state.name == settings.node)
                .map(|n| (**n).clone());
            if let Some(node) = &this_node {
                let bgp_plan = plan_bgp(&snapshot, &settings.node);
                sessions
                    .apply(&bgp_plan, &bgp_peers, &unusable_peers, node)
                    .await;
                reporter.bgp_advertisements(&services, &bgp_plan);
                reporter.bgp_sessions(node, &sessions.sessions());
            }
        }
        let now_links = read_links().unwrap_or_else(|e| {
            warn!(error = %e, "reading the node's interfaces");
            Vec::new()
        });
        if joined && (inputs_changed || now_links != links) {
            links = now_links;
            let takeovers = announcer.apply(&plan, &links).await;
            reporter.report(&services, &plan, &announcer.owned(), takeovers, &alive);
        }
        inputs_changed = false;
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep_until(join_deadline), if !joined => inputs_changed = true,
            () = notify.notified() => inputs_changed = true,
            changed = live.changed() => {
                changed?;
                inputs_changed = true;
            }
            _ = scan.tick() => {
                if let Some(node) = &this_node {
                    reporter.bgp_sessions(node, &sessions.sessions());
                }
            }
            _ = password_refresh.tick() => sessions.refresh_passwords().await,
        }
    }
    announcer.withdraw_all().await;
    info!("stopped answering for every address");
    sessions.stop_all().await;
    Ok(())
}
