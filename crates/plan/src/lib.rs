//! # herald-plan: who announces which address, where
//!
//! Pure planning over a snapshot of the cluster, so that every speaker computes the same
//! answer from the same inputs, with no coordination beyond membership:
//!
//! ```text
//!   Snapshot { services (addresses, pool, policy, ready endpoint nodes), nodes,
//!              L2Advertisements, pool labels, live speakers }
//!        │  per Service: the nodes that may announce it
//!        │  per address: the nodes all its Services allow (sharing Services agree)
//!        ▼  rendezvous hashing over those nodes: one owner per address
//!   L2Plan { address -> owner node, interfaces, Services }
//! ```
//!
//! A node may announce a Service when a matching L2Advertisement selects the Service's pool,
//! the Service and the node; the node is not [`Withheld`] (excluded, being deleted, out of
//! service, not ready, ...);
//! its speaker is alive; and the Service has a ready endpoint (on that very node under
//! `externalTrafficPolicy: Local`). A Service with no ready endpoint is not announced.
//!
//! The owner of an address is the eligible node with the highest score `hash(node, address)`
//! (rendezvous hashing, [`owner_score`]): ownership spreads evenly, and when a node leaves,
//! only the addresses it owned move.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use herald_domain::{LabelSelector, Labels, ServiceKey};

mod bgp;

pub use bgp::{BgpAdvertisement, BgpPeer, BgpPlan, BgpRoute, plan_bgp};

/// A Service with addresses, as planning needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    pub key: ServiceKey,
    pub ips: Vec<IpAddr>,
    /// The pool its addresses came from.
    pub pool: Option<String>,
    pub labels: Labels,
    /// `externalTrafficPolicy: Local`.
    pub local: bool,
    /// The number of ready endpoints of the Service per node that has any.
    pub ready_endpoints: BTreeMap<String, u32>,
}

/// A node, as planning needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    pub name: String,
    pub labels: Labels,
    /// Why the node takes no load-balancer traffic, when it does not: then it announces
    /// nothing, in layer 2 or BGP.
    pub withheld: Option<Withheld>,
}

/// Why a node takes no load-balancer traffic: the rules Kubernetes' service controller
/// applies to cloud load balancers, the node's health, and maintenance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Withheld {
    /// The Node object is being deleted.
    Deleting,
    /// Labelled `node.kubernetes.io/exclude-from-external-load-balancers` (with any value
    /// but `false`).
    Excluded,
    /// Tainted `ToBeDeletedByClusterAutoscaler`: the autoscaler is removing it.
    ToBeDeleted,
    /// Tainted `node.kubernetes.io/out-of-service`: shut down, its Pods are being moved.
    OutOfService,
    /// Its `Ready` condition is `False` or `Unknown`.
    NotReady,
    /// Its `NetworkUnavailable` condition is `True`.
    NetworkUnavailable,
    /// Cordoned (`spec.unschedulable`), when speakers are told to treat that as maintenance.
    Cordoned,
}

impl Withheld {
    /// How the reason reads in a log line or a record.
    pub fn describe(self) -> &'static str {
        match self {
            Withheld::Deleting => "the Node is being deleted",
            Withheld::Excluded => {
                "labelled node.kubernetes.io/exclude-from-external-load-balancers"
            }
            Withheld::ToBeDeleted => "tainted ToBeDeletedByClusterAutoscaler",
            Withheld::OutOfService => "tainted node.kubernetes.io/out-of-service",
            Withheld::NotReady => "its Ready condition is not True",
            Withheld::NetworkUnavailable => "its NetworkUnavailable condition is True",
            Withheld::Cordoned => "cordoned (spec.unschedulable), and cordoned nodes are excluded",
        }
    }
}

/// What an advertisement selects: pools, Services and nodes, with selectors already parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Pools by name; with `pool_selectors`, a pool named or selected; with neither, all.
    pub pools: Vec<String>,
    pub pool_selectors: Vec<LabelSelector>,
    /// Any matching; all nodes when empty.
    pub node_selectors: Vec<LabelSelector>,
    /// Any matching; all Services when empty.
    pub service_selectors: Vec<LabelSelector>,
}

/// An L2Advertisement, with selectors already parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct L2Advertisement {
    pub name: String,
    pub selection: Selection,
    /// Interfaces to answer on; every suitable interface when empty.
    pub interfaces: Vec<String>,
}

/// Everything planning looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub services: Vec<ServiceState>,
    pub nodes: Vec<NodeState>,
    pub advertisements: Vec<L2Advertisement>,
    pub bgp_advertisements: Vec<BgpAdvertisement>,
    pub bgp_peers: Vec<BgpPeer>,
    pub pool_labels: BTreeMap<String, Labels>,
    /// Nodes whose speaker membership says alive.
    pub live_speakers: BTreeSet<String>,
}

/// Where an owner answers for an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interfaces {
    /// Every suitable interface.
    All,
    Named(BTreeSet<String>),
}

/// The owner of one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub node: String,
    pub interfaces: Interfaces,
    /// The Services announced through this address.
    pub services: Vec<ServiceKey>,
}

/// The layer-2 plan of the cluster: one owner per announced address.
pub type L2Plan = BTreeMap<IpAddr, Owner>;

/// The nodes allowed to announce something, with the interfaces each would answer on.
type Candidates = BTreeMap<String, Interfaces>;

pub(crate) fn any_or_empty(selectors: &[LabelSelector], labels: &Labels) -> bool {
    selectors.is_empty() || selectors.iter().any(|s| s.matches(labels))
}

impl Selection {
    /// Whether this selects the pool named `pool` (`None`: a Service from no known pool).
    pub fn selects_pool(&self, pool: Option<&str>, pool_labels: &BTreeMap<String, Labels>) -> bool {
        if self.pools.is_empty() && self.pool_selectors.is_empty() {
            return true;
        }
        let Some(pool) = pool else {
            return false;
        };
        let empty = Labels::new();
        self.pools.iter().any(|p| p == pool)
            || self
                .pool_selectors
                .iter()
                .any(|s| s.matches(pool_labels.get(pool).unwrap_or(&empty)))
    }

    /// Whether this selects `service` from `node`.
    pub fn selects(
        &self,
        service: &ServiceState,
        node: &NodeState,
        pool_labels: &BTreeMap<String, Labels>,
    ) -> bool {
        self.selects_pool(service.pool.as_deref(), pool_labels)
            && any_or_empty(&self.service_selectors, &service.labels)
            && self.selects_node(&node.labels)
    }

    /// Whether this selects a node labelled `labels`.
    pub fn selects_node(&self, labels: &Labels) -> bool {
        any_or_empty(&self.node_selectors, labels)
    }
}

impl NodeState {
    /// Whether load-balancer traffic may be sent to the node at all.
    fn may_announce(&self) -> bool {
        self.withheld.is_none()
    }
}

impl ServiceState {
    /// Whether `node` may announce the Service as far as its endpoints go: it has a ready
    /// endpoint somewhere, and on `node` itself under `externalTrafficPolicy: Local`.
    fn endpoints_allow(&self, node: &str) -> bool {
        if self.local {
            self.ready_endpoints.get(node).is_some_and(|&n| n > 0)
        } else {
            self.ready_endpoints.values().any(|&n| n > 0)
        }
    }
}

/// The stable score of `node` for `ip`: 64-bit FNV-1a over both, finished with a SplitMix64
/// mix. Fixed here, not `std`'s hasher, so that speakers of different builds agree.
pub fn owner_score(node: &str, ip: IpAddr) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let ip_bytes: Vec<u8> = match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    for byte in node.bytes().chain([0]).chain(ip_bytes) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// Plans layer-2 ownership for the whole cluster.
pub fn plan_l2(snapshot: &Snapshot) -> L2Plan {
    let usable_nodes: Vec<&NodeState> = snapshot
        .nodes
        .iter()
        .filter(|n| n.may_announce() && snapshot.live_speakers.contains(&n.name))
        .collect();
    // Per address: the nodes every Service on it allows, and the interfaces per node.
    let mut per_ip: BTreeMap<IpAddr, (Option<Candidates>, Vec<ServiceKey>)> = BTreeMap::new();
    for service in &snapshot.services {
        let mut allowed = Candidates::new();
        for node in &usable_nodes {
            if !service.endpoints_allow(&node.name) {
                continue;
            }
            for adv in snapshot
                .advertisements
                .iter()
                .filter(|a| a.selection.selects(service, node, &snapshot.pool_labels))
            {
                let entry = allowed
                    .entry(node.name.clone())
                    .or_insert_with(|| Interfaces::Named(BTreeSet::new()));
                match (entry, adv.interfaces.is_empty()) {
                    (entry, true) => *entry = Interfaces::All,
                    (Interfaces::Named(names), false) => {
                        names.extend(adv.interfaces.iter().cloned());
                    }
                    (Interfaces::All, false) => {}
                }
            }
        }
        for ip in &service.ips {
            let (nodes, services) = per_ip.entry(*ip).or_insert((None, Vec::new()));
            services.push(service.key.clone());
            *nodes = Some(match nodes.take() {
                None => allowed.clone(),
                // Services sharing an address are announced from one node: one they all allow.
                Some(previous) => previous
                    .into_iter()
                    .filter(|(node, _)| allowed.contains_key(node))
                    .collect(),
            });
        }
    }
    per_ip
        .into_iter()
        .filter_map(|(ip, (nodes, mut services))| {
            let (node, interfaces) = nodes?
                .into_iter()
                .max_by_key(|(node, _)| (owner_score(node, ip), node.clone()))?;
            services.sort();
            Some((
                ip,
                Owner {
                    node,
                    interfaces,
                    services,
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn node(name: &str) -> NodeState {
        NodeState {
            name: name.into(),
            labels: Labels::new(),
            withheld: None,
        }
    }

    fn service(name: &str, ip: &str, endpoints: &[&str]) -> ServiceState {
        ServiceState {
            key: ServiceKey::new("default", name),
            ips: vec![ip.parse().expect("test address")],
            pool: Some("lan".into()),
            labels: Labels::new(),
            local: false,
            ready_endpoints: endpoints.iter().map(|&n| (n.to_owned(), 1)).collect(),
        }
    }

    fn cluster(services: Vec<ServiceState>) -> Snapshot {
        Snapshot {
            services,
            nodes: vec![node("n1"), node("n2"), node("n3")],
            advertisements: vec![L2Advertisement {
                name: "lan".into(),
                ..Default::default()
            }],
            bgp_advertisements: Vec::new(),
            bgp_peers: Vec::new(),
            pool_labels: BTreeMap::new(),
            live_speakers: ["n1", "n2", "n3"].into_iter().map(String::from).collect(),
        }
    }

    fn owner(plan: &L2Plan, ip: &str) -> Option<String> {
        plan.get(&ip.parse().expect("ip")).map(|o| o.node.clone())
    }

    #[test]
    fn a_local_service_is_owned_by_a_node_with_a_ready_endpoint() {
        let mut svc = service("web", "192.0.2.64", &["n2"]);
        svc.local = true;
        assert_eq!(
            owner(&plan_l2(&cluster(vec![svc.clone()])), "192.0.2.64").as_deref(),
            Some("n2")
        );
        svc.ready_endpoints = [("n3".to_owned(), 1)].into();
        assert_eq!(
            owner(&plan_l2(&cluster(vec![svc.clone()])), "192.0.2.64").as_deref(),
            Some("n3")
        );
        svc.ready_endpoints.clear();
        assert_eq!(
            owner(&plan_l2(&cluster(vec![svc])), "192.0.2.64"),
            None,
            "no endpoint, no owner"
        );
    }

    #[test]
    fn excluded_unavailable_and_dead_nodes_never_own() {
        let mut snapshot = cluster(
            (0..50)
                .map(|i| {
                    service(
                        &format!("s{i}"),
                        &format!("192.0.2.{i}"),
                        &["n1", "n2", "n3"],
                    )
                })
                .collect(),
        );
        snapshot.nodes[0].withheld = Some(Withheld::Excluded);
        snapshot.nodes[1].withheld = Some(Withheld::NotReady);
        let plan = plan_l2(&snapshot);
        assert!(plan.values().all(|o| o.node == "n3"));
        snapshot.live_speakers.remove("n3");
        assert!(plan_l2(&snapshot).is_empty());
    }

    #[test]
    fn services_sharing_an_address_have_one_owner_they_all_allow() {
        let mut a = service("a", "192.0.2.64", &["n1", "n2"]);
        let mut b = service("b", "192.0.2.64", &["n2", "n3"]);
        a.local = true;
        b.local = true;
        let plan = plan_l2(&cluster(vec![a, b]));
        let owner = &plan[&"192.0.2.64".parse::<IpAddr>().expect("ip")];
        assert_eq!(owner.node, "n2");
        assert_eq!(owner.services.len(), 2);
    }

    #[test]
    fn advertisements_select_pools_nodes_and_interfaces() {
        let mut snapshot = cluster(vec![service("web", "192.0.2.64", &["n1"])]);
        snapshot.nodes[0].labels = Labels::from([("edge".into(), "true".into())]);
        snapshot.advertisements = vec![L2Advertisement {
            name: "edge".into(),
            selection: Selection {
                pools: vec!["lan".into()],
                node_selectors: vec![LabelSelector {
                    match_labels: Labels::from([("edge".into(), "true".into())]),
                    ..Default::default()
                }],
                ..Default::default()
            },
            interfaces: vec!["eth1".into()],
        }];
        let plan = plan_l2(&snapshot);
        let owner = &plan[&"192.0.2.64".parse::<IpAddr>().expect("ip")];
        assert_eq!(owner.node, "n1", "only the edge node matches");
        assert_eq!(
            owner.interfaces,
            Interfaces::Named(["eth1".to_owned()].into())
        );
        snapshot.advertisements[0].selection.pools = vec!["other".into()];
        assert!(
            plan_l2(&snapshot).is_empty(),
            "an advertisement of another pool"
        );
    }

    #[test]
    fn ownership_spreads_evenly_across_nodes() {
        let services = (0..3000)
            .map(|i| {
                let ip = IpAddr::V6(std::net::Ipv6Addr::from(0x2001_0db8_u128 << 96 | i));
                ServiceState {
                    ips: vec![ip],
                    ..service(&format!("s{i}"), "192.0.2.1", &["n1", "n2", "n3"])
                }
            })
            .collect();
        let plan = plan_l2(&cluster(services));
        for n in ["n1", "n2", "n3"] {
            let owned = plan.values().filter(|o| o.node == n).count();
            assert!((850..=1150).contains(&owned), "{n} owns {owned} of 3000");
        }
    }

    proptest! {
        /// Every speaker computes the same plan, whatever order it saw objects in, and a node
        /// leaving moves only the addresses it owned.
        #[test]
        fn the_plan_is_deterministic_and_moves_only_the_departed_nodes_addresses(
            count in 1usize..60, seed in any::<u64>(), gone in 0usize..3,
        ) {
            let services: Vec<ServiceState> = (0..count)
                .map(|i| service(&format!("s{i}"), &format!("192.0.2.{}", i % 40), &["n1", "n2", "n3"]))
                .collect();
            let snapshot = cluster(services.clone());
            let mut shuffled = cluster(services);
            let len = shuffled.services.len();
            shuffled.services.rotate_left(usize::try_from(seed % len as u64).unwrap_or(0));
            shuffled.nodes.reverse();
            let plan = plan_l2(&snapshot);
            prop_assert_eq!(&plan, &plan_l2(&shuffled));

            let departed = ["n1", "n2", "n3"][gone];
            let mut without = snapshot.clone();
            without.live_speakers.remove(departed);
            let after = plan_l2(&without);
            for (ip, owner) in &plan {
                if owner.node != departed {
                    prop_assert_eq!(&after[ip].node, &owner.node, "{} moved needlessly", ip);
                } else {
                    prop_assert_ne!(&after[ip].node, departed);
                }
            }
        }
    }
}
