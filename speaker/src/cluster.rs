//! Pure translation from the watched objects to what planning and membership need: the
//! [`Snapshot`] of Services, endpoints, nodes, advertisements and pool labels, and the gossip
//! address of every node. No I/O.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use herald_api::{
    BGPAdvertisement, IPAddressPool, L2Advertisement,
    annotations::IP_ALLOCATED_FROM_POOL,
    service::{ServiceView, ready_endpoint_nodes},
};
use herald_domain::ServiceKey;
use herald_plan::{
    BgpAdvertisement as PlannedBgpAdvertisement, L2Advertisement as PlannedAdvertisement,
    NodeState, ServiceState, Snapshot,
};
use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use kube::ResourceExt;

use herald_config::{Peer, bgp_advertisement, l2_advertisement};

/// The label Kubernetes puts on nodes that must not receive load-balancer traffic.
pub(crate) const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
/// The label linking an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The watched objects of one moment, as kept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Objects<'a> {
    pub(crate) services: &'a [Arc<AnnouncedService>],
    pub(crate) slices: &'a [Arc<SliceView>],
    pub(crate) nodes: &'a [Arc<NodeView>],
    pub(crate) pools: &'a [Arc<IPAddressPool>],
    pub(crate) advertisements: &'a [Arc<L2Advertisement>],
    pub(crate) bgp_advertisements: &'a [Arc<BGPAdvertisement>],
    /// The usable BGPPeers, translated ([`crate::peer`]).
    pub(crate) bgp_peers: &'a [Peer],
}

/// What the speaker keeps of a Service it announces (no other Service is kept): its state
/// for planning, less the endpoints, which come from its EndpointSlices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AnnouncedService {
    pub(crate) state: ServiceState,
    /// For Events and the owner reference of its ServiceL2Status.
    pub(crate) uid: Option<String>,
}

/// What the speaker keeps of an EndpointSlice: its Service and how many ready endpoints it
/// has on each node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SliceView {
    pub(crate) service: ServiceKey,
    pub(crate) ready_endpoints: BTreeMap<String, u32>,
}

/// What the speaker keeps of a Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeView {
    pub(crate) state: NodeState,
    /// The first `InternalIP`: where its speaker gossips.
    pub(crate) internal_ip: Option<IpAddr>,
    /// Owner of the node's BGPSessionStatus records.
    pub(crate) uid: Option<String>,
}

/// The view of an EndpointSlice: its Service and the nodes with a ready endpoint. `None`
/// for a slice of no Service.
pub(crate) fn slice_view(slice: &EndpointSlice) -> Option<SliceView> {
    let service = slice.labels().get(SERVICE_NAME_LABEL)?;
    let mut ready_endpoints = BTreeMap::new();
    for node in ready_endpoint_nodes(slice) {
        *ready_endpoints.entry(node.to_owned()).or_insert(0) += 1;
    }
    Some(SliceView {
        service: ServiceKey::new(slice.namespace().unwrap_or_default(), service.clone()),
        ready_endpoints,
    })
}

/// What the speaker keeps of a Service Herald serving `class` announces: `None` for any
/// other, or one without an address yet.
pub(crate) fn announced_service(
    service: &Service,
    class: Option<&str>,
) -> Option<AnnouncedService> {
    let mut view = ServiceView::new(service);
    if !view.eligibility.is_served(class) || view.status_ips.is_empty() {
        return None;
    }
    Some(AnnouncedService {
        state: ServiceState {
            pool: view.annotations.remove(IP_ALLOCATED_FROM_POOL),
            key: view.key,
            ips: view.status_ips,
            labels: view.labels.into_iter().collect(),
            local: view.local_selector.is_some(),
            ready_endpoints: BTreeMap::new(),
        },
        uid: view.uid,
    })
}

/// The view of a Node.
pub(crate) fn node_view(node: &Node) -> NodeView {
    NodeView {
        state: node_state(node),
        internal_ip: internal_ip(node),
        uid: node.metadata.uid.clone(),
    }
}

fn node_state(node: &Node) -> NodeState {
    let network_unavailable = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "NetworkUnavailable" && c.status == "True");
    NodeState {
        name: node.name_any(),
        labels: node.labels().clone(),
        excluded: node.labels().contains_key(EXCLUDE_LABEL),
        network_unavailable,
    }
}

/// The planning snapshot, and a message per advertisement that could not be used (it is
/// left out; the others still apply).
pub(crate) fn snapshot(
    objects: Objects<'_>,
    live_speakers: &BTreeSet<String>,
) -> (Snapshot, Vec<String>) {
    let mut endpoints: BTreeMap<&ServiceKey, BTreeMap<String, u32>> = BTreeMap::new();
    for slice in objects.slices {
        let per_node = endpoints.entry(&slice.service).or_default();
        for (node, count) in &slice.ready_endpoints {
            *per_node.entry(node.clone()).or_insert(0) += count;
        }
    }
    let mut services: Vec<ServiceState> = objects
        .services
        .iter()
        .map(|view| ServiceState {
            ready_endpoints: endpoints.remove(&view.state.key).unwrap_or_default(),
            ..view.state.clone()
        })
        .collect();
    services.sort_by(|a, b| a.key.cmp(&b.key));
    let mut problems = Vec::new();
    let mut advertisements: Vec<PlannedAdvertisement> = objects
        .advertisements
        .iter()
        .filter_map(|adv| {
            l2_advertisement(adv)
                .map_err(|e| problems.push(e.to_string()))
                .ok()
        })
        .collect();
    advertisements.sort_by(|a, b| a.name.cmp(&b.name));
    let mut bgp_advertisements: Vec<PlannedBgpAdvertisement> = objects
        .bgp_advertisements
        .iter()
        .filter_map(|adv| {
            bgp_advertisement(adv)
                .map_err(|e| problems.push(e.to_string()))
                .ok()
        })
        .collect();
    bgp_advertisements.sort_by(|a, b| a.name.cmp(&b.name));
    let bgp_peers = objects.bgp_peers.iter().map(Peer::planned).collect();
    let mut nodes: Vec<NodeState> = objects.nodes.iter().map(|n| n.state.clone()).collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let snapshot = Snapshot {
        services,
        nodes,
        advertisements,
        bgp_advertisements,
        bgp_peers,
        pool_labels: objects
            .pools
            .iter()
            .map(|p| (p.name_any(), p.labels().clone()))
            .collect(),
        live_speakers: live_speakers.clone(),
    };
    (snapshot, problems)
}

/// The first `InternalIP` of a node (the address its speaker gossips on).
fn internal_ip(node: &Node) -> Option<IpAddr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse().ok())
}

/// The gossip address of every node but `me` that has an `InternalIP` of the same family as
/// this speaker's own address.
pub(crate) fn gossip_seeds(
    nodes: &[Arc<NodeView>],
    me: &str,
    mine: SocketAddr,
) -> BTreeMap<String, SocketAddr> {
    nodes
        .iter()
        .filter(|n| n.state.name != me)
        .filter_map(|n| {
            let ip = n.internal_ip?;
            (ip.is_ipv4() == mine.is_ipv4())
                .then(|| (n.state.name.clone(), SocketAddr::new(ip, mine.port())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
        serde_json::from_value(value).expect("a valid object")
    }

    fn service(name: &str, spec: serde_json::Value, ip: Option<&str>) -> Service {
        let ingress = ip.map(|ip| json!([{"ip": ip}])).unwrap_or(json!([]));
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "web",
                         "annotations": {IP_ALLOCATED_FROM_POOL: "lan"}, "labels": {"tier": "front"}},
            "spec": spec,
            "status": {"loadBalancer": {"ingress": ingress}},
        }))
        .expect("a valid Service")
    }

    fn slice(service: &str, endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{service}-x"), "namespace": "web",
                         "labels": {SERVICE_NAME_LABEL: service}},
            "addressType": "IPv4",
            "endpoints": endpoints,
        }))
        .expect("a valid EndpointSlice")
    }

    #[test]
    fn served_services_carry_their_addresses_pool_policy_and_ready_endpoint_nodes() {
        let services = [
            service(
                "a",
                json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local"}),
                Some("192.0.2.64"),
            ),
            service("b", json!({"type": "ClusterIP"}), Some("192.0.2.65")),
            service(
                "c",
                json!({"type": "LoadBalancer", "loadBalancerClass": "other"}),
                Some("192.0.2.66"),
            ),
            service("d", json!({"type": "LoadBalancer"}), None),
        ];
        let services: Vec<Arc<AnnouncedService>> = services
            .iter()
            .filter_map(|s| announced_service(s, None).map(Arc::new))
            .collect();
        let slices = [slice(
            "a",
            json!([
                {"addresses": ["198.51.100.10"], "nodeName": "n1"},
                {"addresses": ["198.51.100.11"], "nodeName": "n2", "conditions": {"ready": false}},
                {"addresses": ["198.51.100.12"], "nodeName": "n3", "conditions": {"ready": true}},
                {"addresses": ["198.51.100.13"]},
            ]),
        )];
        let slices: Vec<Arc<SliceView>> = slices
            .iter()
            .filter_map(|s| slice_view(s).map(Arc::new))
            .collect();
        let objects = Objects {
            services: &services,
            slices: &slices,
            nodes: &[],
            pools: &[],
            advertisements: &[],
            bgp_advertisements: &[],
            bgp_peers: &[],
        };
        let (snapshot, problems) = snapshot(objects, &BTreeSet::new());
        assert!(problems.is_empty());
        assert_eq!(
            snapshot.services.len(),
            1,
            "only a, of no class, with an address"
        );
        let a = &snapshot.services[0];
        assert_eq!(a.key, ServiceKey::new("web", "a"));
        assert_eq!(a.ips, vec!["192.0.2.64".parse::<IpAddr>().expect("ip")]);
        assert_eq!(a.pool.as_deref(), Some("lan"));
        assert!(a.local);
        assert_eq!(a.labels.get("tier").map(String::as_str), Some("front"));
        assert_eq!(
            a.ready_endpoints,
            [("n1".to_owned(), 1), ("n3".to_owned(), 1)].into()
        );
    }

    #[test]
    fn excluded_and_unavailable_nodes_are_marked() {
        let nodes: [Node; 3] = [
            object(json!({"metadata": {"name": "n1", "labels": {EXCLUDE_LABEL: ""}}})),
            object(
                json!({"metadata": {"name": "n2"}, "status": {"conditions": [
                {"type": "NetworkUnavailable", "status": "True"}]}}),
            ),
            object(
                json!({"metadata": {"name": "n3"}, "status": {"conditions": [
                {"type": "NetworkUnavailable", "status": "False"}]}}),
            ),
        ];
        let nodes: Vec<Arc<NodeView>> = nodes.iter().map(|n| Arc::new(node_view(n))).collect();
        let objects = Objects {
            services: &[],
            slices: &[],
            nodes: &nodes,
            pools: &[],
            advertisements: &[],
            bgp_advertisements: &[],
            bgp_peers: &[],
        };
        let (snapshot, _) = snapshot(objects, &BTreeSet::new());
        let flags: Vec<(bool, bool)> = snapshot
            .nodes
            .iter()
            .map(|n| (n.excluded, n.network_unavailable))
            .collect();
        assert_eq!(flags, [(true, false), (false, true), (false, false)]);
    }

    #[test]
    fn a_bad_advertisement_is_named_and_left_out_while_the_others_apply() {
        let advertisements: [Arc<L2Advertisement>; 2] = [
            Arc::new(object(
                json!({"apiVersion": "herald.dev/v1alpha1", "kind": "L2Advertisement",
                "metadata": {"name": "bad"},
                "spec": {"nodeSelectors": [{"matchExpressions": [{"key": "k", "operator": "Near"}]}]}}),
            )),
            Arc::new(object(
                json!({"apiVersion": "herald.dev/v1alpha1", "kind": "L2Advertisement",
                "metadata": {"name": "good"}, "spec": {"interfaces": ["eth1"]}}),
            )),
        ];
        let objects = Objects {
            services: &[],
            slices: &[],
            nodes: &[],
            pools: &[],
            advertisements: &advertisements,
            bgp_advertisements: &[],
            bgp_peers: &[],
        };
        let (snapshot, problems) = snapshot(objects, &BTreeSet::new());
        assert_eq!(snapshot.advertisements.len(), 1);
        assert_eq!(snapshot.advertisements[0].interfaces, ["eth1"]);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].starts_with(
                "L2Advertisement bad: spec.nodeSelectors[0].matchExpressions[0].operator"
            ),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn gossip_seeds_are_the_other_nodes_internal_addresses_of_our_family() {
        let node = |name: &str, addresses: serde_json::Value| -> Arc<NodeView> {
            let node: Node =
                object(json!({"metadata": {"name": name}, "status": {"addresses": addresses}}));
            Arc::new(node_view(&node))
        };
        let nodes = [
            node(
                "n1",
                json!([{"type": "InternalIP", "address": "192.0.2.1"}]),
            ),
            node(
                "n2",
                json!([{"type": "Hostname", "address": "n2"},
                              {"type": "InternalIP", "address": "192.0.2.2"}]),
            ),
            node(
                "n3",
                json!([{"type": "InternalIP", "address": "2001:db8::3"}]),
            ),
            node("n4", json!([])),
        ];
        let mine: SocketAddr = "192.0.2.1:7946".parse().expect("address");
        let seeds = gossip_seeds(&nodes, "n1", mine);
        assert_eq!(
            seeds,
            [("n2".to_owned(), "192.0.2.2:7946".parse().expect("address"))].into()
        );
    }
}
