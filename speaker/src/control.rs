//! The speaker's loop: watch the cluster, learn who is alive, plan, announce, report.
//!
//! ```text
//!   watch Services, EndpointSlices, Nodes, pools, advertisements, BGPPeers, BFDProfiles ─┐
//!   gossip: live speakers ─────────────────────────────────────────────────┼─► snapshot
//!   the node's interfaces (netlink changes; every second) ─────────────────┘     │
//!                        ┌──────────────────────────────────────────────┬────────┘
//!                        ▼ plan_l2 (whole cluster)                       ▼ plan_bgp (this node)
//!   l2_share: this node's addresses per interface       bgp_share: settings + routes per peer
//!        ▼                                                    ▼ (passwords from PasswordSecrets)
//!   Announcer::apply(&L2Share) -> Vec<Told>           Sessions::apply(&BgpShare) -> Vec<Told>
//!        └───────────────────────┬────────────────────────────┘
//!   Reporter ◄── Told, problems, plans: log; Events `nodeAssigned`, `bgpAdvertisement`;
//!               ServiceL2Status, ServiceBGPStatus, BGPSessionStatus and SpeakerStatus
//!               records
//! ```
//!
//! Every speaker plans the whole cluster from the same inputs, so all agree on one owner per
//! address without talking about it; gossip only tells them who is alive.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use herald_api::{
    BFDProfile, BGPAdvertisement, BGPPeer, GossipStatus, IPAddressPool, L2Advertisement,
};
use herald_l2::{
    link::{Link, read_links},
    socket::LinkChanges,
};
use herald_membership::{Members, driver::Handle, heartbeats::Heartbeats};
use herald_plan::{L2Plan, plan_bgp, plan_l2};
use herald_shell::{
    events::Publisher,
    watch::{Views, Watches},
};
use k8s_openapi::api::{
    coordination::v1::Lease,
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
    announce::{Announcer, L2Share, l2_share},
    bgp::{self, BgpInputs, Sessions},
    cluster::{self, AnnouncedService, NodeView, Objects, SliceView},
    heartbeat::{self, Heartbeat},
    metrics::Metrics,
    report::Reporter,
    secrets::PasswordSecrets,
};

/// How often the node's interfaces are read again besides when netlink says one changed (so
/// the loop turns at least this often, and a change netlink did not tell is seen too).
const LINK_SCAN: Duration = Duration::from_secs(1);
/// How long the loop may go without turning before `/healthz` fails (a turn takes
/// milliseconds; nothing it awaits talks to the API server).
const LOOP_STALL_LIMIT: Duration = Duration::from_secs(30);
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
    /// How long it goes on answering after `shutdown`, while others take over.
    pub(crate) handoff: Duration,
    /// Where the loop's heartbeat goes (`/healthz`).
    pub(crate) probes: Arc<herald_shell::probes::Probes>,
}

/// The watched objects: compact views of the many (Services, EndpointSlices, Nodes), whole
/// objects of the few (pools, advertisements).
pub(crate) struct Stores {
    services: Views<AnnouncedService>,
    slices: Views<SliceView>,
    nodes: Views<NodeView>,
    pools: Store<IPAddressPool>,
    advertisements: Store<L2Advertisement>,
    bgp_advertisements: Store<BGPAdvertisement>,
    bgp_peers: Store<BGPPeer>,
    bfd_profiles: Store<BFDProfile>,
    /// The speakers' heartbeat Leases (read on the loop's schedule: they change every few
    /// seconds each, and do not wake it).
    heartbeats: Store<Lease>,
}

impl Stores {
    /// Starts the watches (Services of `class` only; cordoned Nodes held back when
    /// `exclude_cordoned`; heartbeats in Herald's `namespace`) and waits for their first
    /// lists.
    pub(crate) async fn start(
        client: &Client,
        watches: &mut Watches,
        namespace: &str,
        class: Option<String>,
        exclude_cordoned: bool,
    ) -> anyhow::Result<Stores> {
        let config = watcher::Config::default;
        let stores = Stores {
            services: watches.views(Api::<Service>::all(client.clone()), config(), move |s| {
                cluster::announced_service(s, class.as_deref())
            }),
            slices: watches.views(
                Api::<EndpointSlice>::all(client.clone()),
                config(),
                cluster::slice_view,
            ),
            nodes: watches.views(Api::<Node>::all(client.clone()), config(), move |n| {
                Some(cluster::node_view(n, exclude_cordoned))
            }),
            pools: watches.store(Api::all(client.clone()), config()),
            advertisements: watches.store(Api::all(client.clone()), config()),
            bgp_advertisements: watches.store(Api::all(client.clone()), config()),
            bgp_peers: watches.store(Api::all(client.clone()), config()),
            bfd_profiles: watches.store(Api::all(client.clone()), config()),
            heartbeats: watches.quiet_store(
                Api::namespaced(client.clone(), namespace),
                config().labels(heartbeat::LABEL),
            ),
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
            ("BFDProfiles", stores.bfd_profiles.wait_until_ready().await),
            (
                "heartbeat Leases",
                stores.heartbeats.wait_until_ready().await,
            ),
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

/// Runs until `shutdown` resolves (by which time the other speakers were told this one
/// leaves), then hands off: withdraws its BGP routes and closes its sessions while it still
/// answers in layer 2 for the hand-off time, so the new owners announce first; then it stops
/// answering.
pub(crate) async fn run(
    requests: Client,
    settings: Settings,
    stores: Stores,
    watches: Watches,
    membership: Handle,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let notify = watches.notify();
    let mut members: watch::Receiver<Members> = membership.members.clone();
    let mut scan = tokio::time::interval(LINK_SCAN);
    scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = std::pin::pin!(shutdown);
    settings.probes.watch_loop(LOOP_STALL_LIMIT);
    let mut speaker = Speaker::new(requests, &settings, &stores, &membership);
    let mut bfd_changes = speaker.sessions.bfd_changes();
    let mut link_changes = LinkChanges::open()
        .map_err(|e| warn!(error = %e, "cannot follow interface changes through netlink; reading them every second only"))
        .ok();
    // The plans are made again only when an input changed; the interfaces are read again when
    // netlink says one changed (a cable out is seen at once) and every second.
    let mut inputs_changed = true;
    let mut links_changed = true;
    loop {
        settings.probes.beat();
        if links_changed {
            speaker.read_links();
        }
        if inputs_changed {
            // Read first: the watch's lock must not be held across the plan's awaits (the
            // gossip driver writes to it on this same thread).
            let heard = members.borrow_and_update().clone();
            speaker.plan(heard).await;
        }
        if inputs_changed || links_changed {
            speaker.announce(inputs_changed).await;
        }
        speaker.report_speaker();
        inputs_changed = false;
        links_changed = false;
        tokio::select! {
            () = &mut shutdown => break,
            changed = next_link_change(link_changes.as_ref()) => match changed {
                Ok(()) => links_changed = true,
                Err(e) => {
                    warn!(error = %e, "following interface changes through netlink failed; reading them every second only");
                    link_changes = None;
                }
            },
            () = tokio::time::sleep_until(speaker.join_deadline), if !speaker.joined && !speaker.gossip_link_down => {
                inputs_changed = true;
            }
            () = notify.notified() => inputs_changed = true,
            changed = members.changed() => {
                changed?;
                inputs_changed = true;
            }
            changed = bfd_changes.changed() => {
                changed?;
                speaker.follow_bfd().await;
            }
            _ = scan.tick() => {
                speaker.report_sessions();
                links_changed = true;
                inputs_changed = speaker.heartbeats_changed();
            }
            // A rotated password starts its sessions over.
            changed = speaker.secrets.changed() => {
                changed?;
                inputs_changed = true;
            }
        }
    }
    speaker.stop().await;
    Ok(())
}

/// The speaker between turns of the loop: its drivers (layer 2, BGP), its reporter, and what
/// the last plan was made from.
struct Speaker<'a> {
    settings: &'a Settings,
    stores: &'a Stores,
    membership: &'a Handle,
    announcer: Announcer,
    sessions: Sessions,
    secrets: PasswordSecrets,
    reporter: Reporter,
    /// The other speakers' gossip addresses, as last given to gossip.
    seeds: BTreeMap<String, SocketAddr>,
    /// Until every other node's speaker was heard from (or `join_deadline`), announce nothing.
    joined: bool,
    /// The speakers gossip knows of, and those whose heartbeats are renewed, as last planned
    /// with.
    members: Members,
    /// This speaker's heartbeat, and when the others' were last seen to change.
    heartbeat: Heartbeat,
    heartbeats: Heartbeats,
    join_deadline: tokio::time::Instant,
    /// The node's interfaces, as last read.
    links: Vec<Link>,
    /// The interface holding the gossip address is down or has no carrier.
    gossip_link_down: bool,
    /// Gossip knew of no other speaker at the last plan, though other nodes run one.
    alone: bool,
    /// The inputs and result of the last plan.
    plan: L2Plan,
    services: Vec<Arc<AnnouncedService>>,
    this_node: Option<NodeView>,
    /// What the drivers were last given.
    l2_applied: L2Share,
    /// What this node's BGP share was last made from, and why planned peers could not be
    /// used then.
    bgp_last: Option<(BgpInputs, Vec<String>)>,
}

impl<'a> Speaker<'a> {
    fn new(
        client: Client,
        settings: &'a Settings,
        stores: &'a Stores,
        membership: &'a Handle,
    ) -> Self {
        let publisher = Publisher::new(
            client.clone(),
            "herald-speaker",
            &settings.instance,
            "Announce",
        );
        Speaker {
            settings,
            stores,
            membership,
            announcer: Announcer::new(settings.metrics.clone()),
            sessions: Sessions::new(settings.metrics.clone()),
            secrets: PasswordSecrets::start(client.clone(), &settings.namespace),
            reporter: Reporter::start(
                client.clone(),
                publisher,
                &settings.node,
                &settings.namespace,
            ),
            seeds: BTreeMap::new(),
            joined: false,
            members: Members::default(),
            heartbeat: Heartbeat::start(client.clone(), &settings.namespace, &settings.node),
            heartbeats: Heartbeats::default(),
            join_deadline: tokio::time::Instant::now() + JOIN_GRACE,
            links: Vec::new(),
            gossip_link_down: false,
            alone: false,
            plan: L2Plan::new(),
            services: Vec::new(),
            this_node: None,
            l2_applied: L2Share::default(),
            bgp_last: None,
        }
    }

    /// An input changed: plans again from the watched objects and `members` (the speakers
    /// gossip says are alive, and those heard with another key), and brings the BGP sessions
    /// in line at once (each node advertises its own routes: no ownership, so no waiting to
    /// join).
    async fn plan(&mut self, members: Members) {
        let (settings, stores) = (self.settings, self.stores);
        let (slices, nodes, pools, advertisements) = (
            stores.slices.state(),
            stores.nodes.state(),
            stores.pools.state(),
            stores.advertisements.state(),
        );
        let bgp_advertisements = stores.bgp_advertisements.state();
        let (bgp_peers, unusable_peers) =
            herald_config::translate_peers(&stores.bgp_peers.state(), &settings.namespace);
        self.services = stores.services.state();
        let wanted_seeds = cluster::gossip_seeds(&nodes, &settings.node, settings.gossip_address);
        if wanted_seeds != self.seeds {
            self.membership.set_seeds(wanted_seeds.clone());
            self.seeds = wanted_seeds;
        }
        self.heard(members);
        let alive = self.members.live.clone();
        self.follow_solitude(alive.len() == 1 && !self.seeds.is_empty());
        if !self.joined && !self.gossip_link_down {
            self.joined = self.seeds.keys().all(|node| alive.contains(node))
                || tokio::time::Instant::now() >= self.join_deadline;
            if self.joined {
                info!(live = ?alive, "joined the speakers; announcing");
            }
        }
        if self.joined && !self.members.outvoted() {
            // Not before, nor while outvoted: a speaker that has not heard from the others
            // yet, or cannot understand them, would take their nodes for dead and delete
            // their records.
            // Nodes heard with another key are alive too: their records stay.
            let heard = alive
                .iter()
                .chain(&self.members.unauthenticated)
                .chain(&self.members.heartbeating)
                .cloned()
                .collect();
            self.reporter.speakers_alive(&heard);
        }
        let objects = Objects {
            services: &self.services,
            slices: &slices,
            nodes: &nodes,
            pools: &pools,
            advertisements: &advertisements,
            bgp_advertisements: &bgp_advertisements,
            bgp_peers: &bgp_peers,
        };
        let (snapshot, mut problems) = cluster::snapshot(objects, &alive);
        problems.extend(unusable_peers.iter().map(ToString::to_string));
        let (profiles, unusable_profiles) =
            herald_config::translate_profiles(&stores.bfd_profiles.state());
        problems.extend(unusable_profiles.iter().map(ToString::to_string));
        self.plan = plan_l2(&snapshot);
        self.this_node = nodes
            .iter()
            .find(|n| n.state.name == settings.node)
            .map(|n| (**n).clone());
        if let Some(node) = &self.this_node {
            self.reporter.withheld(node.state.withheld);
            let bgp_plan = plan_bgp(&snapshot, &settings.node);
            self.secrets
                .keep(&bgp::wanted_secrets(&bgp_plan, &bgp_peers));
            let passwords = self.secrets.reading();
            self.reporter.bgp_advertisements(&self.services, &bgp_plan);
            let inputs = BgpInputs {
                plan: bgp_plan,
                peers: bgp_peers,
                unusable: unusable_peers,
                node: node.clone(),
                passwords: passwords.version,
                profiles,
            };
            // Most input changes (other nodes, layer 2) leave this node's BGP as it was.
            if self.bgp_last.as_ref().map(|(last, _)| last) != Some(&inputs) {
                let advertised = inputs
                    .plan
                    .values()
                    .flat_map(|routes| routes.values())
                    .flat_map(|route| route.services.iter().cloned())
                    .collect();
                settings.metrics.set_announced("bgp", advertised);
                let (share, unusable_settings) = bgp::bgp_share(&inputs, &passwords.passwords);
                let told = self.sessions.apply(&share).await;
                self.reporter.told(told, &self.services);
                let unusable = unusable_settings.iter().map(ToString::to_string).collect();
                self.bgp_last = Some((inputs, unusable));
            }
            if let Some((_, unusable)) = &self.bgp_last {
                problems.extend(unusable.iter().cloned());
            }
            self.reporter
                .bgp_sessions(node, &self.sessions.sessions(), &self.services);
        }
        self.reporter.problems(problems);
    }

    /// Reads the node's interfaces again, and whether the one holding the gossip address can
    /// carry traffic.
    fn read_links(&mut self) {
        match read_links() {
            Ok(links) => self.links = links,
            Err(e) => warn!(error = %e, "reading the node's interfaces"),
        }
        self.follow_gossip_link();
    }

    /// Once joined, applies this node's share of the layer-2 plan when the plan
    /// (`plan_changed`) or the share (the node's interfaces) changed, and reports what this
    /// node announces.
    async fn announce(&mut self, plan_changed: bool) {
        if !self.joined && self.l2_applied == L2Share::default() {
            return;
        }
        let share = if !self.joined || self.members.outvoted() {
            L2Share::default()
        } else {
            l2_share(&self.plan, &self.links, &self.settings.node)
        };
        if !plan_changed && share == self.l2_applied {
            return;
        }
        let told = self.announcer.apply(&share).await;
        self.reporter.told(told, &self.services);
        let answered = self
            .announcer
            .owned()
            .keys()
            .filter_map(|ip| share.services.get(ip))
            .flatten()
            .cloned()
            .collect();
        self.settings.metrics.set_announced("l2", answered);
        self.settings
            .metrics
            .unanswerable_addresses
            .set(count(share.unanswerable.len()));
        self.reporter
            .l2_records(&self.services, &share, &self.announcer.owned());
        self.l2_applied = share;
    }

    /// Reads whether the interface holding the gossip address can carry traffic. While it
    /// cannot (cable out, switch port down, interface down), this node answers for nothing in
    /// layer 2: gossip soon takes it for dead, the others take its addresses, and whatever it
    /// claimed meanwhile it could not defend. When it can again, it joins as at start:
    /// silent until it hears every other speaker or [`JOIN_GRACE`] passes. Otherwise, in
    /// the moment before gossip merges, it would answer for every address it took for its
    /// own while cut off, beside their real owners.
    fn follow_gossip_link(&mut self) {
        let ip = self.settings.gossip_address.ip();
        let down = match herald_l2::link::holder_of(ip) {
            Ok(holder) => !holder.is_some_and(|h| h.running),
            Err(e) => {
                warn!(error = %e, "reading which interface holds the gossip address");
                self.gossip_link_down
            }
        };
        if down == self.gossip_link_down {
            return;
        }
        self.gossip_link_down = down;
        if down {
            warn!(%ip, "the interface holding the gossip address is down or has no carrier: answering for nothing in layer 2 until it is back and the speakers are heard again");
        } else {
            info!(%ip, "the interface holding the gossip address is back: joining the speakers again");
        }
        // While the link is down the join waits for it; the grace counts from its return.
        self.join_again();
    }

    /// Every other speaker falling silent at once is more often this node cut off (a cable
    /// out for a moment, its port down) than every other node dying: then it joins again as
    /// at start, silent until it hears every other speaker or [`JOIN_GRACE`] passes. A
    /// node cut off for less than that never answers beside the nodes that took its
    /// addresses over when it is back; if the others did die, it takes their addresses
    /// [`JOIN_GRACE`] later than it would have.
    fn follow_solitude(&mut self, alone: bool) {
        if alone && !self.alone && self.joined {
            warn!(grace = ?JOIN_GRACE, "every other speaker fell silent at once: silent in layer 2 until they are heard again or the grace passes");
            self.join_again();
        }
        self.alone = alone;
    }

    /// Joins the speakers again as at start: silent in layer 2 until every other speaker is
    /// heard or [`JOIN_GRACE`] passes (the plan decides when, [`Speaker::plan`]).
    fn join_again(&mut self) {
        self.joined = false;
        self.join_deadline = tokio::time::Instant::now() + JOIN_GRACE;
    }

    /// A BFD session changed state: BGP sessions follow, and their records say so.
    async fn follow_bfd(&mut self) {
        let told = self.sessions.follow_bfd().await;
        if !told.is_empty() {
            self.reporter.told(told, &self.services);
            self.report_sessions();
        }
    }

    /// Writes each BGP session's state into its record.
    fn report_sessions(&self) {
        if let Some(node) = &self.this_node {
            self.reporter
                .bgp_sessions(node, &self.sessions.sessions(), &self.services);
        }
    }

    /// Writes this node's SpeakerStatus: whether it announces, and what only this node
    /// cannot use (addresses it owns on interfaces it lacks, peers it cannot set up here).
    fn report_speaker(&self) {
        let Some(node) = &self.this_node else {
            return;
        };
        let mut problems = self.l2_applied.problems();
        if let Some((_, unusable)) = &self.bgp_last {
            problems.extend(unusable.iter().cloned());
        }
        problems.extend(self.gossip_problem());
        let gossip = GossipStatus {
            members: count(self.members.live.len()),
            nodes: count(self.seeds.len() + 1),
            unauthenticated: self.members.unauthenticated.iter().cloned().collect(),
            unreachable: self.members.unreachable().into_iter().cloned().collect(),
            outvoted: self.members.outvoted(),
            keys: self.members.keys.clone(),
        };
        self.reporter.speaker_status(node, gossip, problems);
    }

    /// The speakers (of nodes expected to run one) whose heartbeats are renewed now.
    fn heartbeating(&mut self) -> std::collections::BTreeSet<String> {
        let now = std::time::Instant::now();
        heartbeat::observe(&mut self.heartbeats, &self.stores.heartbeats, now);
        let mut alive = self.heartbeats.alive(now);
        alive.retain(|node| *node == self.settings.node || self.seeds.contains_key(node));
        alive
    }

    /// Whether a heartbeat started or expired since the last plan.
    fn heartbeats_changed(&mut self) -> bool {
        self.heartbeating() != self.members.heartbeating
    }

    /// Takes what gossip and the heartbeats now say of the others: metrics, and a log when
    /// this speaker steps back from layer 2 or comes back.
    fn heard(&mut self, mut members: Members) {
        members.heartbeating = self.heartbeating();
        let metrics = &self.settings.metrics;
        metrics.members.set(count(members.live.len()));
        metrics.gossip_nodes.set(count(self.seeds.len() + 1));
        metrics
            .gossip_unauthenticated_nodes
            .set(count(members.unauthenticated.len()));
        let outvoted = members.outvoted();
        metrics.gossip_outvoted.set(i64::from(outvoted));
        if outvoted != self.members.outvoted() {
            if outvoted {
                warn!(
                    unauthenticated = ?members.unauthenticated, unreachable = ?members.unreachable(),
                    live = ?members.live,
                    "more speakers are alive outside this one's gossip (another gossip key, or a partition) than in it: answering for nothing in layer 2 while they are"
                );
            } else {
                info!(live = ?members.live, "no longer outvoted by speakers outside this one's gossip");
            }
        }
        self.members = members;
    }

    /// What the others' gossip keys mean for this node, for its SpeakerStatus.
    fn gossip_problem(&self) -> Option<String> {
        if self.gossip_link_down {
            return Some(format!(
                "gossip: the interface holding the gossip address {} is down or has no carrier: this speaker answers for nothing in layer 2",
                self.settings.gossip_address.ip()
            ));
        }
        let unreachable = self.members.unreachable();
        if !unreachable.is_empty() {
            let nodes = unreachable
                .into_iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            let side = if self.members.outvoted() {
                "they are more: this speaker answers for nothing in layer 2 meanwhile"
            } else {
                "this side is larger and answers for their addresses meanwhile"
            };
            return Some(format!(
                "gossip: the speakers on {nodes} renew their heartbeat but their gossip does not reach this node (check UDP port {} between nodes); {side}",
                self.settings.gossip_address.port()
            ));
        }
        let others = &self.members.unauthenticated;
        if others.is_empty() {
            return None;
        }
        let nodes = others.iter().cloned().collect::<Vec<_>>().join(", ");
        Some(if self.members.outvoted() {
            format!(
                "gossip: the speakers on {nodes} use another gossip key, and they are more: this speaker answers for nothing in layer 2 while they are heard (check the gossip key Secret)"
            )
        } else {
            format!(
                "gossip: the speakers on {nodes} use another gossip key: they answer for nothing in layer 2 (check the gossip key Secret)"
            )
        })
    }

    /// Stops answering and ends every session.
    async fn stop(mut self) {
        let handed_off = tokio::time::Instant::now() + self.settings.handoff;
        // Gone from the heartbeats at once, as from gossip: no other speaker waits for it.
        self.heartbeat.stop().await;
        info!(handoff = ?self.settings.handoff, "stopping: the other speakers take over while this one still answers");
        let mut told = self.sessions.stop().await;
        tokio::time::sleep_until(handed_off).await;
        told.extend(self.announcer.stop().await);
        self.reporter.told(told, &self.services);
    }
}

/// `n` as a gauge's value.
fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The next interface change netlink tells of; never, without a netlink socket.
async fn next_link_change(changes: Option<&LinkChanges>) -> std::io::Result<()> {
    match changes {
        Some(changes) => changes.changed().await,
        None => std::future::pending().await,
    }
}
