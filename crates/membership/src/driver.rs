//! Runs a [`Membership`] on a UDP socket with tokio's clock.
//!
//! ```text
//!   seeds (node, address) ──► announce ─┐
//!   UDP datagrams ──────────► receive ──┼─► Membership ──► Send: UDP
//!   timer heap (earliest) ──► timer ────┘                 Schedule: timer heap
//!                                    members changed ──► watch channel
//! ```
//!
//! Each source's datagrams are checked within its budget ([`crate::budget`]); bad datagrams
//! (over budget, unauthenticated, replayed, undecodable) are counted and dropped; new keys
//! ([`Handle::set_keys`]) take effect at once; nothing a peer sends
//! stops the loop. A datagram that fails authentication is logged at warn, at most once per
//! [`WARN_EVERY`] and source, naming the node whose gossip address sent it; such nodes are
//! [`Members::unauthenticated`] for [`UNAUTHENTICATED_WINDOW`] after their last datagram.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BTreeSet, BinaryHeap},
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    net::UdpSocket,
    sync::{mpsc, watch},
    time::Instant,
};
use tracing::{debug, info, warn};

use crate::{
    Keyring, Members, Membership, MembershipError, Output, Timer, budget::Budgets, machine::Speaker,
};

/// How long after its last datagram that failed authentication a node counts as
/// [`Members::unauthenticated`]: speakers ask the nodes missing from their live set to let
/// them join every [`REANNOUNCE`], so a node with another key is heard several times in it.
pub const UNAUTHENTICATED_WINDOW: Duration = Duration::from_secs(5);
/// How often a source whose datagrams fail authentication is logged at most.
pub const WARN_EVERY: Duration = Duration::from_secs(60);
/// How many sources of failing datagrams are remembered for rate-limiting their logs (a
/// flood of forged sources must not grow memory).
const REMEMBERED_SOURCES: usize = 1024;

/// Counters the speaker exports as metrics.
#[derive(Debug, Default)]
pub struct Counters {
    pub datagrams_received: AtomicU64,
    /// Failed authentication (another key, forged, corrupted).
    pub datagrams_unauthenticated: AtomicU64,
    /// Authenticated but not understood by the protocol.
    pub datagrams_undecodable: AtomicU64,
    /// Authenticated but seen before, or from a speaker's ended run ([`crate::replay`]).
    pub datagrams_replayed: AtomicU64,
    /// Over their source's budget ([`crate::budget`]): dropped unchecked.
    pub datagrams_rate_limited: AtomicU64,
    pub datagrams_sent: AtomicU64,
}

/// The handle of a running membership.
#[derive(Debug, Clone)]
pub struct Handle {
    /// The speakers this one knows of: alive (this one included) and heard but not
    /// authenticated.
    pub members: watch::Receiver<Members>,
    seeds: mpsc::UnboundedSender<BTreeMap<String, SocketAddr>>,
    keys: mpsc::UnboundedSender<Keyring>,
    pub counters: Arc<Counters>,
}

impl Handle {
    /// The speakers that should be in the cluster (every node's gossip address): those not yet
    /// live are asked to let this one join, now and whenever they are missing.
    pub fn set_seeds(&self, seeds: BTreeMap<String, SocketAddr>) {
        let _ = self.seeds.send(seeds);
    }

    /// Seal and open with `keys` from now on (a step of a key rotation).
    pub fn set_keys(&self, keys: Keyring) {
        let _ = self.keys.send(keys);
    }
}

/// Starts the membership of `membership.me()` on `socket`; runs until `shutdown` resolves,
/// then says goodbye to the others.
pub fn spawn(
    membership: Membership,
    socket: UdpSocket,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Handle {
    let fingerprints = membership.keys().fingerprints();
    let (members_tx, members) = watch::channel(Members {
        live: membership.live(),
        unauthenticated: BTreeSet::new(),
        heartbeating: BTreeSet::new(),
        keys: fingerprints.clone(),
    });
    let (seeds, seeds_rx) = mpsc::unbounded_channel();
    let (keys, keys_rx) = mpsc::unbounded_channel();
    let counters = Arc::new(Counters::default());
    let driver = Driver {
        membership,
        keys: fingerprints,
        socket,
        timers: BinaryHeap::new(),
        next_timer_id: 0,
        members: members_tx,
        failing: BTreeMap::new(),
        budgets: Budgets::new(std::time::Instant::now()),
        counters: counters.clone(),
    };
    tokio::spawn(driver.run(seeds_rx, keys_rx, shutdown));
    Handle {
        members,
        seeds,
        keys,
        counters,
    }
}

struct Driver {
    membership: Membership,
    /// The fingerprints of the membership's keys.
    keys: Vec<String>,
    socket: UdpSocket,
    /// Pending timers by deadline; the id keeps equal deadlines in order.
    timers: BinaryHeap<Reverse<(Instant, u64, TimerSlot)>>,
    next_timer_id: u64,
    members: watch::Sender<Members>,
    /// Sources of datagrams that failed authentication: when the last came, and when one
    /// was last logged.
    failing: BTreeMap<IpAddr, Failing>,
    /// How many datagrams each source may have checked.
    budgets: Budgets,
    counters: Arc<Counters>,
}

/// A source whose datagrams fail authentication.
#[derive(Debug, Clone, Copy)]
struct Failing {
    last: Instant,
    logged: Instant,
}

/// A foca timer in the heap (ordered by deadline and id only).
struct TimerSlot(Timer<Speaker>);

impl PartialEq for TimerSlot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for TimerSlot {}
impl PartialOrd for TimerSlot {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for TimerSlot {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

/// How often seeds missing from the live set are asked again.
const REANNOUNCE: std::time::Duration = std::time::Duration::from_secs(1);

impl Driver {
    async fn run(
        mut self,
        mut seeds_rx: mpsc::UnboundedReceiver<BTreeMap<String, SocketAddr>>,
        mut keys_rx: mpsc::UnboundedReceiver<Keyring>,
        shutdown: impl Future<Output = ()>,
    ) {
        info!(me = ?self.membership.me(), "gossip started");
        let mut shutdown = std::pin::pin!(shutdown);
        let mut seeds = BTreeMap::new();
        let mut reannounce = tokio::time::interval(REANNOUNCE);
        let mut buffer = vec![0u8; 65_536];
        loop {
            let next_timer = self.timers.peek().map(|Reverse((at, _, _))| *at);
            tokio::select! {
                () = &mut shutdown => break,
                received = self.socket.recv_from(&mut buffer) => match received {
                    Ok((len, from)) => {
                        self.counters.datagrams_received.fetch_add(1, Ordering::Relaxed);
                        if !self.budgets.admit(from.ip(), std::time::Instant::now()) {
                            self.counters.datagrams_rate_limited.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        let result = self.membership.receive(&buffer[..len]);
                        match result {
                            Ok(outputs) => self.perform(outputs).await,
                            Err(MembershipError::Unauthenticated) => {
                                self.unauthenticated(from, &seeds);
                            }
                            Err(MembershipError::Replayed) => {
                                self.counters.datagrams_replayed.fetch_add(1, Ordering::Relaxed);
                                debug!(%from, "replayed gossip datagram dropped");
                            }
                            Err(e) => {
                                self.counters.datagrams_undecodable.fetch_add(1, Ordering::Relaxed);
                                debug!(%from, error = %e, "gossip datagram dropped");
                            }
                        }
                    }
                    Err(e) => warn!(error = %e, "receiving gossip"),
                },
                () = sleep_until(next_timer) => {
                    if let Some(Reverse((_, _, TimerSlot(timer)))) = self.timers.pop() {
                        match self.membership.timer(timer) {
                            Ok(outputs) => self.perform(outputs).await,
                            Err(e) => debug!(error = %e, "gossip timer"),
                        }
                    }
                }
                update = seeds_rx.recv() => match update {
                    Some(update) => {
                        seeds = update;
                        self.announce_missing(&seeds).await;
                    }
                    None => break,
                },
                Some(keys) = keys_rx.recv() => {
                    self.keys = keys.fingerprints();
                    info!(keys = ?self.keys, "gossip keys changed (sealing first)");
                    self.membership.set_keys(keys);
                }
                _ = reannounce.tick() => self.announce_missing(&seeds).await,
            }
            let (live, unauthenticated) =
                (self.membership.live(), self.unauthenticated_nodes(&seeds));
            let keys = &self.keys;
            self.members.send_if_modified(|members| {
                let mut changed = false;
                if members.live != live {
                    info!(live = ?live, "speakers alive");
                    members.live = live;
                    changed = true;
                }
                if members.unauthenticated != unauthenticated {
                    info!(unauthenticated = ?unauthenticated, "speakers heard whose gossip fails authentication");
                    members.unauthenticated = unauthenticated;
                    changed = true;
                }
                // Compared in place: cloned only on a rotation, not for every datagram.
                if members.keys != *keys {
                    members.keys.clone_from(keys);
                    changed = true;
                }
                changed
            });
        }
        if let Ok(outputs) = self.membership.leave() {
            self.perform(outputs).await;
        }
        info!("gossip stopped; told the others this speaker left");
    }

    /// A datagram from `from` failed authentication: counted, remembered, and logged unless
    /// that source was logged lately.
    fn unauthenticated(&mut self, from: SocketAddr, seeds: &BTreeMap<String, SocketAddr>) {
        self.counters
            .datagrams_unauthenticated
            .fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let node = seeds
            .iter()
            .find(|(_, address)| address.ip() == from.ip())
            .map(|(node, _)| node.as_str());
        if !self.failing.contains_key(&from.ip()) && self.failing.len() >= REMEMBERED_SOURCES {
            self.failing
                .retain(|_, f| now.duration_since(f.last) < UNAUTHENTICATED_WINDOW);
            if self.failing.len() >= REMEMBERED_SOURCES {
                debug!(%from, "gossip datagram failed authentication");
                return;
            }
        }
        let log = match self.failing.get_mut(&from.ip()) {
            Some(failing) => {
                failing.last = now;
                let due = now.duration_since(failing.logged) >= WARN_EVERY;
                if due {
                    failing.logged = now;
                }
                due
            }
            None => {
                self.failing.insert(
                    from.ip(),
                    Failing {
                        last: now,
                        logged: now,
                    },
                );
                true
            }
        };
        if log {
            match node {
                Some(node) => warn!(
                    %from, %node,
                    "gossip from node {node}'s speaker fails authentication: its gossip key differs from this speaker's"
                ),
                None => warn!(
                    %from,
                    "gossip datagram from an address that is no node's fails authentication (another cluster, or forged)"
                ),
            }
        }
    }

    /// The nodes among `seeds` whose gossip failed authentication within the window.
    fn unauthenticated_nodes(&self, seeds: &BTreeMap<String, SocketAddr>) -> BTreeSet<String> {
        let now = Instant::now();
        seeds
            .iter()
            .filter(|(_, address)| {
                self.failing
                    .get(&address.ip())
                    .is_some_and(|f| now.duration_since(f.last) < UNAUTHENTICATED_WINDOW)
            })
            .map(|(node, _)| node.clone())
            .collect()
    }

    async fn announce_missing(&mut self, seeds: &BTreeMap<String, SocketAddr>) {
        let live = self.membership.live();
        for (node, address) in seeds {
            if !live.contains(node) {
                match self.membership.announce(node, *address) {
                    Ok(outputs) => self.perform(outputs).await,
                    Err(e) => debug!(%node, error = %e, "announcing to a seed"),
                }
            }
        }
    }

    async fn perform(&mut self, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Send { to, datagram } => {
                    // A lost datagram is what SWIM is built for: no retry here.
                    match self.socket.send_to(&datagram, to).await {
                        Ok(_) => {
                            self.counters.datagrams_sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => debug!(%to, error = %e, "sending gossip"),
                    }
                }
                Output::Schedule { after, timer } => {
                    self.next_timer_id += 1;
                    self.timers.push(Reverse((
                        Instant::now() + after,
                        self.next_timer_id,
                        TimerSlot(timer),
                    )));
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
