//! Layer-2 announcement on this node: the plan's addresses owned here, answered on the right
//! interfaces through raw sockets, announced at once and a few times more on takeover.
//!
//! ```text
//!   plan (owner per address) + interfaces (/sys/class/net)
//!        │ l2_share (pure): the addresses owned here, per interface
//!        ▼
//!   L2Share ──► Announcer::apply ──► Vec<Told> (for the reporter)
//!        │
//!   Responder (sans-IO) ──actions──► sockets: GARP / unsolicited NA, join / leave groups
//!        ▲                                │ repeats at +0.2, +0.5, +1, +2 s while still owned
//!   per-interface readers: ARP request / NS ──► reply at once
//! ```
//!
//! Losing an address takes effect at once: the responder stops answering before this
//! returns. Interfaces that appear, vanish or change (index, MAC) change the share, which the
//! speaker computes on every change and every second and applies when it differs.

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
use tracing::{debug, warn};

use crate::{
    metrics::{ARP, Metrics, NDP},
    report::Told,
};

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

/// This node's share of the layer-2 plan, on its interfaces as read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct L2Share {
    /// Per interface to answer on: the interface, and the addresses owned there.
    pub(crate) interfaces: BTreeMap<String, (Link, BTreeSet<IpAddr>)>,
    /// The Services of each address this node owns.
    pub(crate) services: BTreeMap<IpAddr, Vec<ServiceKey>>,
    /// Addresses this node owns but cannot answer for: none of the interfaces their
    /// L2Advertisements name is usable here (what only this node can know).
    pub(crate) unanswerable: BTreeMap<IpAddr, BTreeSet<String>>,
}

impl L2Share {
    /// Each address owned here that nothing answers for, as a problem to report.
    pub(crate) fn problems(&self) -> Vec<String> {
        self.unanswerable
            .iter()
            .map(|(ip, names)| {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                format!(
                    "{ip} is this node's to announce, but no interface its L2Advertisements name \
                     (spec.interfaces: {}) is up here: nobody answers for it",
                    names.join(", ")
                )
            })
            .collect()
    }
}

/// What of `plan` `node` answers for, on which of `links`: every suitable interface, or the
/// usable ones an advertisement names.
pub(crate) fn l2_share(plan: &L2Plan, links: &[Link], node: &str) -> L2Share {
    let mut share = L2Share::default();
    for (ip, owner) in plan.iter().filter(|(_, o)| o.node == node) {
        let on: Vec<&Link> = links
            .iter()
            .filter(|l| match &owner.interfaces {
                Interfaces::All => l.is_suitable_by_default(),
                Interfaces::Named(names) => l.is_usable() && names.contains(&l.name),
            })
            .collect();
        if let (true, Interfaces::Named(names)) = (on.is_empty(), &owner.interfaces) {
            share.unanswerable.insert(*ip, names.clone());
        }
        for link in on {
            let (_, ips) = share
                .interfaces
                .entry(link.name.clone())
                .or_insert_with(|| (link.clone(), BTreeSet::new()));
            ips.insert(*ip);
        }
        share.services.insert(*ip, owner.services.clone());
    }
    share
}

/// This node's layer-2 announcer.
pub(crate) struct Announcer {
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
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        Announcer {
            responder: Arc::default(),
            attached: BTreeMap::new(),
            services: BTreeMap::new(),
            metrics,
        }
    }

    /// Makes this node answer for `share`; says what it started and stopped announcing.
    pub(crate) async fn apply(&mut self, share: &L2Share) -> Vec<Told> {
        let mut told = Vec::new();
        // 1. Interfaces gone, changed or no longer needed: stop answering there, then close.
        let stale: Vec<String> = self
            .attached
            .iter()
            .filter(|(name, attached)| {
                share.interfaces.get(*name).map(|(link, _)| link) != Some(&attached.link)
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
        for (name, (link, _)) in &share.interfaces {
            if self.attached.contains_key(name) {
                continue;
            }
            match self.attach(link) {
                Ok(attached) => {
                    lock(&self.responder).set_interface(name, link.mac);
                    self.attached.insert(name.clone(), attached);
                }
                Err(e) => told.push(Told::InterfaceUnusable {
                    interface: name.clone(),
                    error: e.to_string(),
                }),
            }
        }
        // 3. What is owned where, on the interfaces that could be opened.
        let ownership: Ownership = share
            .interfaces
            .iter()
            .filter(|(name, _)| self.attached.contains_key(*name))
            .map(|(name, (_, ips))| (name.clone(), ips.clone()))
            .collect();
        let (announced, actions) = {
            let mut responder = lock(&self.responder);
            (responder.gained(&ownership), responder.set_owned(ownership))
        };
        self.perform(actions).await;
        for (interface, ip) in announced {
            self.repeat_announcements(interface, ip);
        }
        // 4. What changed, for the reporter.
        let now = self.owned();
        let services: BTreeMap<IpAddr, BTreeSet<ServiceKey>> = now
            .keys()
            .map(|ip| {
                let keys = share.services.get(ip).cloned().unwrap_or_default();
                (*ip, keys.into_iter().collect())
            })
            .collect();
        told.extend(
            self.services
                .keys()
                .filter(|ip| !now.contains_key(ip))
                .map(|ip| Told::Withdrawn(*ip)),
        );
        let mut taken = 0;
        for (ip, interfaces) in &now {
            let before = self.services.get(ip);
            let started: Vec<ServiceKey> = services[ip]
                .iter()
                .filter(|key| !before.is_some_and(|b| b.contains(*key)))
                .cloned()
                .collect();
            if !started.is_empty() {
                taken += u64::from(before.is_none());
                told.push(Told::Announcing(Takeover {
                    ip: *ip,
                    services: started,
                    interfaces: interfaces.clone(),
                }));
            }
        }
        self.metrics.ownership_changes.inc_by(taken);
        self.metrics
            .owned_addresses
            .set(i64::try_from(now.len()).unwrap_or(i64::MAX));
        self.services = services;
        told
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
    pub(crate) async fn stop(&mut self) -> Vec<Told> {
        let actions = lock(&self.responder).set_owned(Ownership::new());
        self.perform(actions).await;
        self.metrics.owned_addresses.set(0);
        let addresses = std::mem::take(&mut self.services).len();
        vec![Told::Silenced { addresses }]
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

#[cfg(test)]
mod tests {
    use herald_l2::MacAddr;
    use herald_plan::Owner;

    use super::*;

    fn link(name: &str, index: u32, up: bool, enslaved: bool) -> Link {
        Link {
            name: name.into(),
            index,
            mac: MacAddr::new(0x02, 0, 0, 0, 0, index as u8),
            flags: u32::from(up),
            kind: 1,
            enslaved,
        }
    }

    fn owner(node: &str, interfaces: Interfaces, service: &str) -> Owner {
        Owner {
            node: node.into(),
            interfaces,
            services: vec![ServiceKey::new("ns", service)],
        }
    }

    #[test]
    fn this_nodes_share_is_its_addresses_on_the_interfaces_their_advertisements_allow() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let plan: L2Plan = [
            (ip("192.0.2.10"), owner("n1", Interfaces::All, "web")),
            (
                ip("2001:db8::10"),
                owner("n1", Interfaces::Named(["eth1".into()].into()), "api"),
            ),
            (ip("192.0.2.11"), owner("n2", Interfaces::All, "db")),
        ]
        .into();
        let links = [
            link("eth0", 2, true, false),
            link("eth1", 3, true, true),
            link("eth2", 4, false, false),
        ];
        let share = l2_share(&plan, &links, "n1");
        let on: Vec<(&str, Vec<IpAddr>)> = share
            .interfaces
            .iter()
            .map(|(name, (_, ips))| (name.as_str(), ips.iter().copied().collect()))
            .collect();
        assert_eq!(
            on,
            [
                ("eth0", vec![ip("192.0.2.10")]),
                ("eth1", vec![ip("2001:db8::10")]),
            ],
            "every suitable interface (not the bond slave, not the down one), or the named one \
             even when enslaved; another node's address nowhere"
        );
        assert_eq!(
            share.services[&ip("2001:db8::10")],
            [ServiceKey::new("ns", "api")]
        );
        assert!(!share.services.contains_key(&ip("192.0.2.11")));
        let mut moved = links.clone();
        moved[0].index = 7;
        assert_ne!(
            l2_share(&plan, &moved, "n1"),
            share,
            "an interface that changed changes the share, so its sockets are opened again"
        );
        assert!(share.problems().is_empty(), "every address is answered");
        let mut missing = plan.clone();
        missing.insert(
            ip("192.0.2.12"),
            owner("n1", Interfaces::Named(["eth9".into()].into()), "lost"),
        );
        let problems = l2_share(&missing, &links, "n1").problems();
        assert_eq!(
            problems,
            [
                "192.0.2.12 is this node's to announce, but no interface its L2Advertisements name \
              (spec.interfaces: eth9) is up here: nobody answers for it"
            ]
        );
    }
}
