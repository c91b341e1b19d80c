//! BGP planning: the routes one node advertises to each of its peers.
//!
//! ```text
//!   Snapshot + this node
//!     │ peers whose node selectors match the node
//!     │ per Service with an address: may this node carry it? (not excluded, network up,
//!     │   a ready endpoint: anywhere for Cluster, on this node for Local)
//!     │ per BGPAdvertisement selecting the Service's pool, the Service and the node,
//!     │   to each of its peers (all when it names none):
//!     ▼      prefix = address masked to the aggregation length, with its attributes
//!   BgpPlan { peer -> prefix -> BgpRoute }
//! ```
//!
//! Unlike layer 2 there is no owner: every eligible node advertises and the routers spread
//! traffic across them (ECMP). Routes of several Services or advertisements that land on one
//! prefix are merged: communities are united, the highest LOCAL_PREF wins, and endpoint
//! counts add up.

use std::collections::{BTreeMap, BTreeSet};

use herald_domain::{Family, LabelSelector, Labels, Prefix, ServiceKey};

use crate::{Selection, Snapshot, any_or_empty};

/// A BGPAdvertisement, with selectors parsed and defaults applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BgpAdvertisement {
    pub name: String,
    pub selection: Selection,
    /// Prefix length of IPv4 routes (32 advertises each address).
    pub aggregation_length: u8,
    /// Prefix length of IPv6 routes (128 advertises each address).
    pub aggregation_length_v6: u8,
    pub local_pref: Option<u32>,
    pub communities: Vec<u32>,
    pub large_communities: Vec<[u32; 3]>,
    /// BGPPeers by name; all when empty.
    pub peers: Vec<String>,
    /// Attach the link-bandwidth community, from the node's ready local endpoints.
    pub weight_by_local_endpoints: bool,
}

/// A BGPPeer, as planning needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpPeer {
    pub name: String,
    /// Any matching; all nodes when empty.
    pub node_selectors: Vec<LabelSelector>,
    /// The session carries routes of its transport's family only: IPv4 routes to an IPv4
    /// peer address, IPv6 to IPv6.
    pub family: Family,
}

impl BgpPeer {
    /// Whether speakers on a node labelled `labels` peer with it.
    pub fn selects_node(&self, labels: &Labels) -> bool {
        any_or_empty(&self.node_selectors, labels)
    }
}

/// One route a node advertises to one peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BgpRoute {
    pub local_pref: Option<u32>,
    pub communities: BTreeSet<u32>,
    pub large_communities: BTreeSet<[u32; 3]>,
    /// The node's ready endpoints of the Services behind the prefix, when an advertisement
    /// asks for weighting.
    pub weight: Option<u32>,
    /// The Services behind the prefix.
    pub services: BTreeSet<ServiceKey>,
}

/// The routes of one node: per peer name, per prefix.
pub type BgpPlan = BTreeMap<String, BTreeMap<Prefix, BgpRoute>>;

/// Plans the routes `node` advertises to each of its peers.
pub fn plan_bgp(snapshot: &Snapshot, node: &str) -> BgpPlan {
    let mut plan = BgpPlan::new();
    let Some(this) = snapshot.nodes.iter().find(|n| n.name == node) else {
        return plan;
    };
    let peers: Vec<&BgpPeer> = snapshot
        .bgp_peers
        .iter()
        .filter(|p| p.selects_node(&this.labels))
        .collect();
    for peer in &peers {
        // A selected peer has a session even with nothing to advertise.
        plan.entry(peer.name.clone()).or_default();
    }
    if !this.may_announce() {
        return plan;
    }
    for service in &snapshot.services {
        if !service.endpoints_allow(node) {
            continue;
        }
        let local_endpoints = service.ready_endpoints.get(node).copied().unwrap_or(0);
        for adv in snapshot
            .bgp_advertisements
            .iter()
            .filter(|a| a.selection.selects(service, this, &snapshot.pool_labels))
        {
            for peer in peers
                .iter()
                .filter(|p| adv.peers.is_empty() || adv.peers.contains(&p.name))
            {
                let routes = plan.entry(peer.name.clone()).or_default();
                for ip in service
                    .ips
                    .iter()
                    .filter(|ip| Family::of(**ip) == peer.family)
                {
                    let length = if ip.is_ipv4() {
                        adv.aggregation_length
                    } else {
                        adv.aggregation_length_v6
                    };
                    let route = routes.entry(Prefix::new(*ip, length)).or_default();
                    route.local_pref = route.local_pref.max(adv.local_pref);
                    route.communities.extend(&adv.communities);
                    route.large_communities.extend(&adv.large_communities);
                    if adv.weight_by_local_endpoints {
                        // One Service counts once per prefix, whatever its advertisements.
                        let counted = route.services.contains(&service.key);
                        let weight = route.weight.get_or_insert(0);
                        if !counted {
                            *weight += local_endpoints;
                        }
                    }
                    route.services.insert(service.key.clone());
                }
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use herald_domain::Labels;

    use super::*;
    use crate::{NodeState, ServiceState, Withheld};

    fn node(name: &str) -> NodeState {
        NodeState {
            name: name.into(),
            labels: Labels::from([("rack".into(), name.into())]),
            withheld: None,
        }
    }

    fn service(name: &str, ip: &str, endpoints: &[(&str, u32)], local: bool) -> ServiceState {
        ServiceState {
            key: ServiceKey::new("default", name),
            ips: vec![ip.parse().expect("test address")],
            pool: Some("public".into()),
            labels: Labels::new(),
            local,
            ready_endpoints: endpoints
                .iter()
                .map(|(n, c)| ((*n).to_owned(), *c))
                .collect(),
        }
    }

    fn advertisement() -> BgpAdvertisement {
        BgpAdvertisement {
            name: "public".into(),
            aggregation_length: 32,
            aggregation_length_v6: 128,
            ..Default::default()
        }
    }

    fn cluster(services: Vec<ServiceState>) -> Snapshot {
        Snapshot {
            services,
            nodes: vec![node("n1"), node("n2"), node("n3")],
            bgp_advertisements: vec![advertisement()],
            bgp_peers: vec![
                BgpPeer {
                    name: "tor".into(),
                    node_selectors: Vec::new(),
                    family: Family::Ipv4,
                },
                BgpPeer {
                    name: "tor6".into(),
                    node_selectors: Vec::new(),
                    family: Family::Ipv6,
                },
            ],
            ..Default::default()
        }
    }

    fn prefixes(plan: &BgpPlan, peer: &str) -> Vec<String> {
        plan.get(peer)
            .map(|routes| routes.keys().map(Prefix::to_string).collect())
            .unwrap_or_default()
    }

    #[test]
    fn every_node_advertises_a_cluster_service_with_a_ready_endpoint_anywhere() {
        let snapshot = cluster(vec![service("web", "203.0.113.10", &[("n1", 2)], false)]);
        for node in ["n1", "n2", "n3"] {
            assert_eq!(
                prefixes(&plan_bgp(&snapshot, node), "tor"),
                ["203.0.113.10/32"]
            );
        }
        let none = cluster(vec![service("web", "203.0.113.10", &[], false)]);
        assert!(prefixes(&plan_bgp(&none, "n1"), "tor").is_empty());
        assert!(
            plan_bgp(&none, "n1").contains_key("tor"),
            "the session stays"
        );
    }

    #[test]
    fn only_nodes_with_a_ready_endpoint_advertise_a_local_service() {
        let snapshot = cluster(vec![service("web", "203.0.113.10", &[("n2", 1)], true)]);
        assert!(prefixes(&plan_bgp(&snapshot, "n1"), "tor").is_empty());
        assert_eq!(
            prefixes(&plan_bgp(&snapshot, "n2"), "tor"),
            ["203.0.113.10/32"]
        );
    }

    #[test]
    fn withheld_nodes_advertise_nothing() {
        let mut snapshot = cluster(vec![service("web", "203.0.113.10", &[("n1", 1)], false)]);
        snapshot.nodes[0].withheld = Some(Withheld::Excluded);
        assert!(prefixes(&plan_bgp(&snapshot, "n1"), "tor").is_empty());
        snapshot.nodes[0].withheld = Some(Withheld::OutOfService);
        assert!(prefixes(&plan_bgp(&snapshot, "n1"), "tor").is_empty());
    }

    #[test]
    fn addresses_are_aggregated_to_the_advertisement_length() {
        let mut snapshot = cluster(vec![
            service("a", "203.0.113.10", &[("n1", 1)], false),
            service("b", "203.0.113.20", &[("n1", 1)], false),
            service("c", "2001:db8::4:5", &[("n1", 1)], false),
        ]);
        snapshot.bgp_advertisements[0].aggregation_length = 24;
        snapshot.bgp_advertisements[0].aggregation_length_v6 = 64;
        let plan = plan_bgp(&snapshot, "n1");
        assert_eq!(prefixes(&plan, "tor"), ["203.0.113.0/24"]);
        assert_eq!(
            prefixes(&plan, "tor6"),
            ["2001:db8::/64"],
            "each family to its peers"
        );
        let route = &plan["tor"][&Prefix::new("203.0.113.0".parse().unwrap(), 24)];
        assert_eq!(route.services.len(), 2);
    }

    #[test]
    fn advertisements_go_to_their_peers_and_nodes_only() {
        let mut snapshot = cluster(vec![service("web", "203.0.113.10", &[("n1", 1)], false)]);
        snapshot.bgp_peers.push(BgpPeer {
            name: "rack2".into(),
            node_selectors: vec![LabelSelector {
                match_labels: Labels::from([("rack".into(), "n2".into())]),
                ..Default::default()
            }],
            family: Family::Ipv4,
        });
        snapshot.bgp_advertisements[0].peers = vec!["rack2".into()];
        assert!(
            !plan_bgp(&snapshot, "n1").contains_key("rack2"),
            "n1 does not peer with rack2"
        );
        assert!(
            prefixes(&plan_bgp(&snapshot, "n1"), "tor").is_empty(),
            "not for tor"
        );
        assert_eq!(
            prefixes(&plan_bgp(&snapshot, "n2"), "rack2"),
            ["203.0.113.10/32"]
        );
    }

    #[test]
    fn the_weight_is_the_nodes_ready_endpoints_and_attributes_merge() {
        let mut snapshot = cluster(vec![service(
            "web",
            "203.0.113.10",
            &[("n1", 3), ("n2", 1)],
            true,
        )]);
        snapshot.bgp_advertisements[0].weight_by_local_endpoints = true;
        snapshot.bgp_advertisements[0].communities = vec![1];
        let mut second = advertisement();
        second.name = "second".into();
        second.local_pref = Some(200);
        second.communities = vec![2];
        snapshot.bgp_advertisements.push(second);
        let plan = plan_bgp(&snapshot, "n1");
        let route = &plan["tor"][&Prefix::host("203.0.113.10".parse().unwrap())];
        assert_eq!(route.weight, Some(3));
        assert_eq!(route.local_pref, Some(200));
        assert_eq!(route.communities, BTreeSet::from([1, 2]));
        let plan = plan_bgp(&snapshot, "n2");
        assert_eq!(
            plan["tor"][&Prefix::host("203.0.113.10".parse().unwrap())].weight,
            Some(1)
        );
    }
}
