//! Layer-2 announcement on this node: the plan's addresses owned here, answered on the right
//! interfaces through raw sockets, announced at once and a few times more on takeover.
//!
//! ```text
//!   plan (owner per address) + interfaces (/sys/class/net)
//!        │ apply(): addresses owned here, per interface
//!        ▼
//!   Responder (sans-IO) ──actions──► sockets: GARP / unsolicited NA, join / leave groups
//!        ▲                                │ repeats at +0.2, +0.5, +1, +2 s while still owned
//!   per-interface readers: ARP request / NS ──► reply at once
//! ```
//!
//! Losing an address takes effect at once: the responder stops answering before this
//! returns. Interfaces that appear, vanish or change (index, MAC) are picked up on the next
//! [`Announcer::apply`], which the speaker calls on every change and every second.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use herald_domain::ServiceKey;
use herald_l2::{
    Action, Ownership, Responder,
    link::Link,
    ndp,
    socket::{ArpSocket, NdpSocket},
};
use herald_plan::{Interfaces, L2Plan};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::metrics::{ARP, Metrics, NDP};

/// When announcements are repeated after a takeover, from the first one. Neighbours that
/// missed the first (or ignored it: Linux keeps an ARP entry for `locktime`, 1 s, before
/// letting it be replaced) still learn the new owner within about two seconds.
const REPEATS: [Duration; 4] = [
    Duration::from_millis(200),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// The sockets of one interface and the tasks answering on them.
struct Attached {
    link: Link,
    arp: Arc<ArpSocket>,
    ndp: Arc<NdpSocket>,
    readers: [JoinHandle<()>; 2],
}

impl Drop for Attached {
    fn drop(&mut self) {
        for reader in &self.readers {
            reader.abort();
        }
    }
}

/// Services this node started announcing an address for, for Events and logs: all of the
/// address's Services when the node takes the address over, or a Service that starts sharing
/// an address the node already announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Takeover {
    pub(crate) ip: IpAddr,
    pub(crate) services: Vec<ServiceKey>,
    pub(crate) interfaces: BTreeSet<String>,
}

/// This node's layer-2 announcer.
pub(crate) struct Announcer {
    node: String,
    responder: Arc<Mutex<Responder>>,
    attached: BTreeMap<String, Attached>,
    /// The Services of each address owned after the last apply (what is owned on which
    /// interface is the responder's).
    services: BTreeMap<IpAddr, BTreeSet<ServiceKey>>,
    metrics: Arc<Metrics>,
}

fn lock(responder: &Mutex<Responder>) -> std::sync::MutexGuard<'_, Responder> {
    responder.lock().unwrap_or_else(|e| e.into_inner())
}

impl Announcer {
    pub(crate) fn new(node: &str, metrics: Arc<Metrics>) -> Self {
        Announcer {
            node: node.to_owned(),
            responder: Arc::default(),
            attached: BTreeMap::new(),
            services: BTreeMap::new(),
            metrics,
        }
    }

    /// Makes this node answer for what `plan` gives it, on the interfaces in `links` that the
    /// plan allows. Returns what this node started announcing with this call.
    pub(crate) async fn apply(&mut self, plan: &L2Plan, links: &[Link]) -> Vec<Takeover> {
        let wanted = self.wanted(plan, links);
        // 1. Interfaces gone, changed or no longer needed: stop answering there, then close.
        let stale: Vec<String> = self
            .attached
            .iter()
            .filter(|(name, attached)| {
                !wanted.contains_key(*name) || !links.contains(&attached.link)
            })
            .map(|(name, _)| name.clone())
            .collect();
        if !stale.is_empty() {
            let actions = {
                let mut responder = lock(&self.responder);
                let mut keep = responder.owned().clone();
                keep.retain(|name, _| !stale.contains(name));
                responder.set_owned(keep)
            };
            self.perform(actions).await;
            for name in &stale {
                debug!(interface = %name, "closing the sockets of an interface");
                self.attached.remove(name);
            }
        }
        // 2. New interfaces: open their sockets and start answering there.
        for name in wanted.keys() {
            if self.attached.contains_key(name) {
                continue;
            }
            let Some(link) = links.iter().find(|l| &l.name == name) else {
                continue;
            };
            match self.attach(link) {
                Ok(attached) => {
                    lock(&self.responder).set_interface(name, link.mac);
                    self.attached.insert(name.clone(), attached);
                }
                Err(e) => warn!(interface = %name, error = %e, "cannot answer on this interface"),
            }
        }
        // 3. What is owned where, on the interfaces that could be opened.
        let mut ownership = wanted;
        ownership.retain(|name, _| self.attached.contains_key(name));
        let (announced, actions) = {
            let mut responder = lock(&self.responder);
            (
                responder.gained(&ownership),
                responder.set_owned(ownership.clone()),
            )
        };
        self.perform(actions).await;
        for (interface, ip) in announced {
            self.repeat_announcements(interface, ip);
        }
        // 4. What changed, for Events.
        let now = self.owned();
        let services: BTreeMap<IpAddr, BTreeSet<ServiceKey>> = now
            .keys()
            .map(|ip| {
                let keys = plan.get(ip).map(|o| o.services.clone()).unwrap_or_default();
                (*ip, keys.into_iter().collect())
            })
            .collect();
        let takeovers: Vec<Takeover> = now
            .iter()
            .filter_map(|(ip, interfaces)| {
                let before = self.services.get(ip);
                let started: Vec<ServiceKey> = services[ip]
                    .iter()
                    .filter(|key| !before.is_some_and(|b| b.contains(*key)))
                    .cloned()
                    .collect();
                (!started.is_empty()).then(|| Takeover {
                    ip: *ip,
                    services: started,
                    interfaces: interfaces.clone(),
                })
            })
            .collect();
        for ip in self.services.keys().filter(|ip| !now.contains_key(ip)) {
            info!(%ip, "no longer announcing");
        }
        let mut taken = 0;
        for takeover in &takeovers {
            info!(ip = %takeover.ip, services = ?takeover.services, interfaces = ?takeover.interfaces, "announcing");
            taken += u64::from(!self.services.contains_key(&takeover.ip));
        }
        self.metrics.ownership_changes.inc_by(taken);
        self.metrics
            .owned_addresses
            .set(i64::try_from(now.len()).unwrap_or(i64::MAX));
        self.services = services;
        takeovers
    }

    /// The addresses owned now, with the interfaces they are answered on.
    pub(crate) fn owned(&self) -> BTreeMap<IpAddr, BTreeSet<String>> {
        let mut owned: BTreeMap<IpAddr, BTreeSet<String>> = BTreeMap::new();
        for (interface, ips) in lock(&self.responder).owned() {
            for ip in ips {
                owned.entry(*ip).or_default().insert(interface.clone());
            }
        }
        owned
    }

    /// Stops answering for everything (on shutdown).
    pub(crate) async fn withdraw_all(&mut self) {
        let actions = lock(&self.responder).set_owned(Ownership::new());
        self.perform(actions).await;
        self.services.clear();
        self.metrics.owned_addresses.set(0);
    }

    /// The addresses the plan gives this node, per interface.
    fn wanted(&self, plan: &L2Plan, links: &[Link]) -> Ownership {
        let mut ownership = Ownership::new();
        for (ip, owner) in plan.iter().filter(|(_, o)| o.node == self.node) {
            let names: Vec<&str> = match &owner.interfaces {
                Interfaces::All => links
                    .iter()
                    .filter(|l| l.is_suitable_by_default())
                    .map(|l| l.name.as_str())
                    .collect(),
                Interfaces::Named(names) => links
                    .iter()
                    .filter(|l| l.is_usable() && names.contains(&l.name))
                    .map(|l| l.name.as_str())
                    .collect(),
            };
            for name in names {
                ownership.entry(name.to_owned()).or_default().insert(*ip);
            }
        }
        ownership
    }

    fn attach(&self, link: &Link) -> std::io::Result<Attached> {
        let arp = Arc::new(ArpSocket::open(link.index)?);
        let ndp = Arc::new(NdpSocket::open(&link.name, link.index)?);
        let readers = [
            tokio::spawn(answer_arp(
                link.name.clone(),
                arp.clone(),
                self.responder.clone(),
                self.metrics.clone(),
            )),
            tokio::spawn(answer_ndp(
                link.name.clone(),
                ndp.clone(),
                self.responder.clone(),
                self.metrics.clone(),
            )),
        ];
        Ok(Attached {
            link: link.clone(),
            arp,
            ndp,
            readers,
        })
    }

    async fn perform(&self, actions: Vec<Action>) {
        for action in actions {
            perform(&self.attached, &self.metrics, action).await;
        }
    }

    /// Repeats the announcement of `ip` on `interface` while it stays owned there.
    fn repeat_announcements(&self, interface: String, ip: IpAddr) {
        let Some(attached) = self.attached.get(&interface) else {
            return;
        };
        let (arp, ndp) = (attached.arp.clone(), attached.ndp.clone());
        let responder = self.responder.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            for at in REPEATS {
                tokio::time::sleep_until(start + at).await;
                let Some(action) = ({
                    let responder = lock(&responder);
                    responder
                        .is_owned(&interface, ip)
                        .then(|| responder.announcement(&interface, ip))
                        .flatten()
                }) else {
                    return;
                };
                send(&arp, &ndp, &metrics, action).await;
            }
        });
    }
}

async fn perform(attached: &BTreeMap<String, Attached>, metrics: &Metrics, action: Action) {
    let interface = match &action {
        Action::SendFrame { interface, .. }
        | Action::SendIcmpv6 { interface, .. }
        | Action::JoinGroup { interface, .. }
        | Action::LeaveGroup { interface, .. } => interface.clone(),
    };
    let Some(attached) = attached.get(&interface) else {
        return;
    };
    match action {
        Action::JoinGroup { group, .. } => {
            if let Err(e) = attached.ndp.join(group) {
                warn!(%interface, %group, error = %e, "joining a solicited-node group");
            }
        }
        Action::LeaveGroup { group, .. } => {
            if let Err(e) = attached.ndp.leave(group) {
                debug!(%interface, %group, error = %e, "leaving a solicited-node group");
            }
        }
        send_action => send(&attached.arp, &attached.ndp, metrics, send_action).await,
    }
}

/// Sends an announcement (GARP or unsolicited NA).
async fn send(arp: &ArpSocket, ndp: &NdpSocket, metrics: &Metrics, action: Action) {
    let (result, protocol) = match &action {
        Action::SendFrame { frame, .. } => (arp.send(frame).await, ARP),
        Action::SendIcmpv6 { advertisement, .. } => (
            ndp.send(
                advertisement.source,
                advertisement.destination,
                &advertisement.message,
            )
            .await,
            NDP,
        ),
        Action::JoinGroup { .. } | Action::LeaveGroup { .. } => return,
    };
    match result {
        Ok(()) => {
            metrics.announcements_sent.get_or_create(&protocol).inc();
        }
        Err(e) => {
            metrics.send_errors.inc();
            debug!(protocol = protocol.protocol, error = %e, "sending an announcement");
        }
    }
}

/// How long a reader waits after a socket error before reading again (e.g. while its
/// interface goes away and the next apply closes it).
const READ_ERROR_PAUSE: Duration = Duration::from_millis(100);

async fn answer_arp(
    interface: String,
    socket: Arc<ArpSocket>,
    responder: Arc<Mutex<Responder>>,
    metrics: Arc<Metrics>,
) {
    let mut buffer = vec![0u8; 1_600];
    loop {
        let len = match socket.recv(&mut buffer).await {
            Ok(len) => len,
            Err(e) => {
                debug!(%interface, error = %e, "reading ARP");
                tokio::time::sleep(READ_ERROR_PAUSE).await;
                continue;
            }
        };
        let reply = lock(&responder).on_arp(&interface, &buffer[..len]);
        if let Some(Action::SendFrame { frame, .. }) = reply {
            match socket.send(&frame).await {
                Ok(()) => {
                    metrics.requests_answered.get_or_create(&ARP).inc();
                }
                Err(e) => {
                    metrics.send_errors.inc();
                    debug!(%interface, error = %e, "answering an ARP request");
                }
            };
        }
    }
}

async fn answer_ndp(
    interface: String,
    socket: Arc<NdpSocket>,
    responder: Arc<Mutex<Responder>>,
    metrics: Arc<Metrics>,
) {
    let mut buffer = vec![0u8; 1_600];
    loop {
        let solicited = match socket.recv(&mut buffer).await {
            Ok(solicited) => solicited,
            Err(e) => {
                debug!(%interface, error = %e, "reading neighbour solicitations");
                tokio::time::sleep(READ_ERROR_PAUSE).await;
                continue;
            }
        };
        let received = ndp::Received {
            source: solicited.source,
            destination: solicited.destination,
            hop_limit: solicited.hop_limit,
            message: &buffer[..solicited.len],
        };
        let reply = lock(&responder).on_icmpv6(&interface, &received);
        tracing::trace!(%interface, ?solicited, answered = reply.is_some(), "neighbour solicitation");
        if let Some(Action::SendIcmpv6 { advertisement, .. }) = reply {
            match socket
                .send(
                    advertisement.source,
                    advertisement.destination,
                    &advertisement.message,
                )
                .await
            {
                Ok(()) => {
                    metrics.requests_answered.get_or_create(&NDP).inc();
                }
                Err(e) => {
                    metrics.send_errors.inc();
                    debug!(%interface, to = %advertisement.destination, error = %e, "answering a solicitation");
                }
            };
        }
    }
}
