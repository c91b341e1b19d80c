//! What the speaker exposes on `/metrics` (Prometheus text format; served with `/healthz`
//! and `/readyz` by [`herald_shell::probes`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, atomic::Ordering},
};

use herald_bgp::{
    driver::EventSink,
    session::{Event, State},
};
use herald_domain::ServiceKey;
use herald_membership::driver::Counters;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// `arp` (IPv4) or `ndp` (IPv6).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ProtocolLabels {
    pub(crate) protocol: &'static str,
}

pub(crate) const ARP: ProtocolLabels = ProtocolLabels { protocol: "arp" };
pub(crate) const NDP: ProtocolLabels = ProtocolLabels { protocol: "ndp" };

/// One BGP session, by BGPPeer name.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PeerLabels {
    pub(crate) peer: String,
}

/// A Service this node announces, and how.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ServiceLabels {
    pub(crate) namespace: String,
    pub(crate) service: String,
    /// `l2` (this node answers ARP / NDP for it) or `bgp` (it offers routes to its peers).
    pub(crate) mode: &'static str,
}

/// A NOTIFICATION sent or received, by peer and error code.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct NotificationLabels {
    pub(crate) peer: String,
    /// `sent` or `received`.
    pub(crate) direction: &'static str,
    pub(crate) code: &'static str,
}

/// The speaker's metrics, updated by its loops.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Addresses this node answers for.
    pub(crate) owned_addresses: Gauge,
    /// ARP requests and neighbour solicitations answered.
    pub(crate) requests_answered: Family<ProtocolLabels, Counter>,
    /// Gratuitous ARPs and unsolicited neighbour advertisements sent.
    pub(crate) announcements_sent: Family<ProtocolLabels, Counter>,
    /// Frames that could not be sent.
    pub(crate) send_errors: Counter,
    /// Speakers alive, this one included.
    pub(crate) members: Gauge,
    /// Nodes expected to run a speaker (with a gossip address), this one included.
    pub(crate) gossip_nodes: Gauge,
    /// Nodes whose gossip this speaker hears but cannot authenticate.
    pub(crate) gossip_unauthenticated_nodes: Gauge,
    /// 1 while this speaker answers for nothing in layer 2, outvoted by speakers with
    /// another gossip key.
    pub(crate) gossip_outvoted: Gauge,
    /// Times this node became the owner of an address.
    pub(crate) ownership_changes: Counter,
    /// Addresses this node owns but cannot answer for (no interface its L2Advertisements
    /// name is up here): nobody answers for them.
    pub(crate) unanswerable_addresses: Gauge,
    /// 1 for each Service this node announces, by mode; absent otherwise.
    pub(crate) service_announced: Family<ServiceLabels, Gauge>,
    /// The Services last set in `service_announced`, by mode.
    announced: Mutex<BTreeMap<&'static str, BTreeSet<ServiceKey>>>,
    /// 1 while the BGP session is established.
    pub(crate) bgp_session_up: Family<PeerLabels, Gauge>,
    /// Prefixes the peer has from this node.
    pub(crate) bgp_prefixes_advertised: Family<PeerLabels, Gauge>,
    /// UPDATE messages sent.
    pub(crate) bgp_updates_sent: Family<PeerLabels, Counter>,
    pub(crate) bgp_notifications: Family<NotificationLabels, Counter>,
    /// 1 while the BFD session beside the BGP session is Up.
    pub(crate) bfd_session_up: Family<PeerLabels, Gauge>,
    /// The BFD endpoint's packet counters, read at scrape time.
    pub(crate) bfd: Arc<herald_bfd::driver::Counters>,
}

/// BFD packet counters kept by the BFD endpoint, read at scrape time.
#[derive(Debug)]
struct BfdCollector(Arc<herald_bfd::driver::Counters>);

impl prometheus_client::collector::Collector for BfdCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::{
            encoding::EncodeMetric,
            metrics::{MetricType, counter::ConstCounter},
        };
        for (name, help, value) in [
            (
                "bfd_packets_received",
                "BFD control packets accepted",
                &self.0.packets_received,
            ),
            (
                "bfd_packets_sent",
                "BFD control packets sent",
                &self.0.packets_sent,
            ),
        ] {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value.load(Ordering::Relaxed)).encode(metric)?;
        }
        let mut family = encoder.encode_descriptor(
            "bfd_packets_dropped",
            "BFD datagrams dropped, by reason (malformed, ttl, unknown_session, ...)",
            None,
            MetricType::Counter,
        )?;
        for (reason, count) in self.0.dropped() {
            let labels = [("reason", reason)];
            let metric = family.encode_family(&labels)?;
            ConstCounter::new(count).encode(metric)?;
        }
        let mut family = encoder.encode_descriptor(
            "bfd_transitions",
            "BFD session state changes, by the state entered and the diagnostic given",
            None,
            MetricType::Counter,
        )?;
        for ((state, diagnostic), count) in self.0.transitions() {
            let labels = [("state", state), ("diagnostic", diagnostic)];
            let metric = family.encode_family(&labels)?;
            ConstCounter::new(count).encode(metric)?;
        }
        Ok(())
    }
}

/// Gossip counters kept by the membership driver, read at scrape time.
#[derive(Debug)]
struct GossipCollector(Arc<Counters>);

impl prometheus_client::collector::Collector for GossipCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::{
            encoding::EncodeMetric,
            metrics::{MetricType, counter::ConstCounter},
        };
        for (name, help, value) in [
            (
                "gossip_datagrams_received",
                "Gossip datagrams received",
                &self.0.datagrams_received,
            ),
            (
                "gossip_datagrams_sent",
                "Gossip datagrams sent",
                &self.0.datagrams_sent,
            ),
        ] {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value.load(Ordering::Relaxed)).encode(metric)?;
        }
        let mut family = encoder.encode_descriptor(
            "gossip_datagrams_rejected",
            "Gossip datagrams dropped, by reason: rate_limited (over their source's budget, unchecked), unauthenticated (another key, forged) or undecodable",
            None,
            MetricType::Counter,
        )?;
        for (reason, value) in [
            ("rate_limited", &self.0.datagrams_rate_limited),
            ("unauthenticated", &self.0.datagrams_unauthenticated),
            ("undecodable", &self.0.datagrams_undecodable),
            ("replayed", &self.0.datagrams_replayed),
        ] {
            let labels = [("reason", reason)];
            let metric = family.encode_family(&labels)?;
            ConstCounter::new(value.load(Ordering::Relaxed)).encode(metric)?;
        }
        Ok(())
    }
}

impl Metrics {
    /// The metrics, and the registry that serves them with the gossip counters.
    pub(crate) fn new(gossip: Arc<Counters>) -> (Arc<Self>, Registry) {
        let metrics = Metrics::default();
        let mut root = Registry::default();
        herald_shell::process::register(&mut root, "speaker", env!("CARGO_PKG_VERSION"));
        let registry = root.sub_registry_with_prefix("herald_speaker");
        registry.register(
            "owned_addresses",
            "Service addresses this node answers ARP / NDP for",
            metrics.owned_addresses.clone(),
        );
        registry.register(
            "requests_answered",
            "ARP requests and neighbour solicitations answered, by protocol",
            metrics.requests_answered.clone(),
        );
        registry.register(
            "announcements_sent",
            "Gratuitous ARPs and unsolicited neighbour advertisements sent, by protocol",
            metrics.announcements_sent.clone(),
        );
        registry.register(
            "send_errors",
            "Frames that could not be sent",
            metrics.send_errors.clone(),
        );
        registry.register(
            "members",
            "Speakers alive according to gossip, this one included",
            metrics.members.clone(),
        );
        registry.register(
            "gossip_nodes",
            "Nodes expected to run a speaker (those with a gossip address), this one included: members below it mean speakers not heard from",
            metrics.gossip_nodes.clone(),
        );
        registry.register(
            "gossip_unauthenticated_nodes",
            "Nodes whose gossip this speaker hears but cannot authenticate (a gossip key that differs)",
            metrics.gossip_unauthenticated_nodes.clone(),
        );
        registry.register(
            "gossip_outvoted",
            "1 while this speaker answers for nothing in layer 2: more speakers with another gossip key are heard than share its own",
            metrics.gossip_outvoted.clone(),
        );
        registry.register(
            "ownership_changes",
            "Times this node took over an address",
            metrics.ownership_changes.clone(),
        );
        registry.register(
            "unanswerable_addresses",
            "Addresses this node owns in layer 2 but cannot answer for: no interface their L2Advertisements name is up here, so nobody answers",
            metrics.unanswerable_addresses.clone(),
        );
        registry.register(
            "service_announced",
            "1 for each Service this node announces, by mode: l2 (answers ARP / NDP for its addresses) or bgp (offers routes for them to its BGP peers)",
            metrics.service_announced.clone(),
        );
        registry.register(
            "bgp_session_up",
            "1 while the BGP session with the peer is established",
            metrics.bgp_session_up.clone(),
        );
        registry.register(
            "bgp_prefixes_advertised",
            "Prefixes the BGP peer has from this node",
            metrics.bgp_prefixes_advertised.clone(),
        );
        registry.register(
            "bgp_updates_sent",
            "BGP UPDATE messages sent, by peer",
            metrics.bgp_updates_sent.clone(),
        );
        registry.register(
            "bgp_notifications",
            "BGP NOTIFICATIONs sent and received, by peer, direction and error code",
            metrics.bgp_notifications.clone(),
        );
        registry.register(
            "bfd_session_up",
            "1 while the BFD session beside the BGP session with the peer is Up",
            metrics.bfd_session_up.clone(),
        );
        registry.register_collector(Box::new(GossipCollector(gossip)));
        registry.register_collector(Box::new(BfdCollector(metrics.bfd.clone())));
        (Arc::new(metrics), root)
    }

    /// This node now announces exactly `services` in `mode` (`l2`, `bgp`).
    pub(crate) fn set_announced(&self, mode: &'static str, services: BTreeSet<ServiceKey>) {
        let labels = |key: &ServiceKey| ServiceLabels {
            namespace: key.namespace.clone(),
            service: key.name.clone(),
            mode,
        };
        let mut announced = self.announced.lock().unwrap_or_else(|e| e.into_inner());
        let before = announced.entry(mode).or_default();
        for gone in before.difference(&services) {
            self.service_announced.remove(&labels(gone));
        }
        for key in services.difference(before) {
            self.service_announced.get_or_create(&labels(key)).set(1);
        }
        *before = services;
    }

    /// A sink that keeps the metrics of the session with `peer` from its events.
    pub(crate) fn session_events(self: &Arc<Self>, peer: &str) -> EventSink {
        let (metrics, peer) = (self.clone(), peer.to_owned());
        Arc::new(move |event: &Event| {
            let labels = PeerLabels { peer: peer.clone() };
            match event {
                Event::StateChanged { to, .. } => {
                    metrics
                        .bgp_session_up
                        .get_or_create(&labels)
                        .set(i64::from(*to == State::Established));
                }
                Event::UpdatesSent {
                    messages,
                    advertised,
                } => {
                    metrics
                        .bgp_updates_sent
                        .get_or_create(&labels)
                        .inc_by(*messages as u64);
                    metrics
                        .bgp_prefixes_advertised
                        .get_or_create(&labels)
                        .set(i64::try_from(*advertised).unwrap_or(i64::MAX));
                }
                Event::NotificationSent(n) | Event::NotificationReceived(n) => {
                    let direction = if matches!(event, Event::NotificationSent(_)) {
                        "sent"
                    } else {
                        "received"
                    };
                    metrics
                        .bgp_notifications
                        .get_or_create(&NotificationLabels {
                            peer: peer.clone(),
                            direction,
                            code: n.code_name(),
                        })
                        .inc();
                }
                Event::Negotiated { .. } => {}
            }
        })
    }

    /// Whether the BFD session beside `peer`'s BGP session is Up.
    pub(crate) fn set_bfd_up(&self, peer: &str, up: bool) {
        let labels = PeerLabels {
            peer: peer.to_owned(),
        };
        self.bfd_session_up
            .get_or_create(&labels)
            .set(i64::from(up));
    }

    /// Drops the gauges of the session with `peer` (it ended; its counters stay).
    pub(crate) fn forget_session(&self, peer: &str) {
        let labels = PeerLabels {
            peer: peer.to_owned(),
        };
        self.bgp_session_up.remove(&labels);
        self.bgp_prefixes_advertised.remove(&labels);
    }
}
