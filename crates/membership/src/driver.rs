//! Runs a [`Membership`] on a UDP socket with tokio's clock.
//!
//! ```text
//!   seeds (node, address) ──► announce ─┐
//!   UDP datagrams ──────────► receive ──┼─► Membership ──► Send: UDP
//!   timer heap (earliest) ──► timer ────┘                 Schedule: timer heap
//!                                    live set changed ──► watch channel
//! ```
//!
//! Bad datagrams (unauthenticated, undecodable) are counted and dropped; nothing a peer sends
//! stops the loop.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BTreeSet, BinaryHeap},
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::{
    net::UdpSocket,
    sync::{mpsc, watch},
    time::Instant,
};
use tracing::{debug, info, warn};

use crate::{Membership, Output, Timer, machine::Speaker};

/// Counters the speaker exports as metrics.
#[derive(Debug, Default)]
pub struct Counters {
    pub datagrams_received: AtomicU64,
    pub datagrams_rejected: AtomicU64,
    pub datagrams_sent: AtomicU64,
}

/// The handle of a running membership.
#[derive(Debug, Clone)]
pub struct Handle {
    /// The nodes whose speakers are alive, this one included.
    pub live: watch::Receiver<BTreeSet<String>>,
    seeds: mpsc::UnboundedSender<BTreeMap<String, SocketAddr>>,
    pub counters: Arc<Counters>,
}

impl Handle {
    /// The speakers that should be in the cluster (every node's gossip address): those not yet
    /// live are asked to let this one join, now and whenever they are missing.
    pub fn set_seeds(&self, seeds: BTreeMap<String, SocketAddr>) {
        let _ = self.seeds.send(seeds);
    }
}

/// Starts the membership of `membership.me()` on `socket`; runs until `shutdown` resolves,
/// then says goodbye to the others.
pub fn spawn(
    membership: Membership,
    socket: UdpSocket,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Handle {
    let (live_tx, live) = watch::channel(membership.live());
    let (seeds, seeds_rx) = mpsc::unbounded_channel();
    let counters = Arc::new(Counters::default());
    let driver = Driver {
        membership,
        socket,
        timers: BinaryHeap::new(),
        next_timer_id: 0,
        live: live_tx,
        counters: counters.clone(),
    };
    tokio::spawn(driver.run(seeds_rx, shutdown));
    Handle {
        live,
        seeds,
        counters,
    }
}

struct Driver {
    membership: Membership,
    socket: UdpSocket,
    /// Pending timers by deadline; the id keeps equal deadlines in order.
    timers: BinaryHeap<Reverse<(Instant, u64, TimerSlot)>>,
    next_timer_id: u64,
    live: watch::Sender<BTreeSet<String>>,
    counters: Arc<Counters>,
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
                        let result = self.membership.receive(&buffer[..len]);
                        match result {
                            Ok(outputs) => self.perform(outputs).await,
                            Err(e) => {
                                self.counters.datagrams_rejected.fetch_add(1, Ordering::Relaxed);
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
                _ = reannounce.tick() => self.announce_missing(&seeds).await,
            }
            self.live.send_if_modified(|live| {
                let now = self.membership.live();
                let changed = *live != now;
                if changed {
                    info!(live = ?now, "speakers alive");
                    *live = now;
                }
                changed
            });
        }
        if let Ok(outputs) = self.membership.leave() {
            self.perform(outputs).await;
        }
        info!("gossip stopped; told the others this speaker left");
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
