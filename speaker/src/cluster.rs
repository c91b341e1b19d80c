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
    NodeState, ServiceState, Snapshot, Withheld,
};
use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use kube::ResourceExt;

use herald_config::{Peer, bgp_advertisement, l2_advertisement};

/// The label Kubernetes puts on nodes that must not receive load-balancer traffic.
pub(crate) const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
/// The taint the cluster autoscaler puts on a node it is about to remove.
const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";
/// The taint an operator puts on a node that is shut down (non-graceful node shutdown).
const OUT_OF_SERVICE_TAINT: &str = "node.kubernetes.io/out-of-service";
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

/// The view of a Node; `exclude_cordoned` treats a cordoned node as under maintenance.
pub(crate) fn node_view(node: &Node, exclude_cordoned: bool) -> NodeView {
    NodeView {
        state: NodeState {
            name: node.name_any(),
            labels: node.labels().clone(),
            withheld: withheld(node, exclude_cordoned),
        },
        internal_ip: internal_ip(node),
        uid: node.metadata.uid.clone(),
    }
}

/// The first reason the node takes no load-balancer traffic, if any. Kubernetes' service
/// controller keeps out of cloud load balancers a node that is being deleted, labelled
/// [`EXCLUDE_LABEL`] (any value but `false`) or tainted [`TO_BE_DELETED_TAINT`]; a speaker
/// also leaves out a node that is out of service, not ready or without its network (it is
/// the load balancer here, and no health check of a cloud stands behind it), and, when told
/// to, a cordoned one.
fn withheld(node: &Node, exclude_cordoned: bool) -> Option<Withheld> {
    let condition = |type_: &str| {
        node.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.type_ == type_)
            .map(|c| c.status.as_str())
    };
    let tainted = |key: &str| {
        node.spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .any(|t| t.key == key)
    };
    let excluded = node
        .labels()
        .get(EXCLUDE_LABEL)
        .is_some_and(|value| value != "false");
    let cordoned = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    [
        (
            node.metadata.deletion_timestamp.is_some(),
            Withheld::Deleting,
        ),
        (excluded, Withheld::Excluded),
        (tainted(TO_BE_DELETED_TAINT), Withheld::ToBeDeleted),
        (tainted(OUT_OF_SERVICE_TAINT), Withheld::OutOfService),
        // Only a condition the node lifecycle controller or kubelet wrote: a Node that never
        // reported one (a node object without a kubelet) is not held back.
        (
            matches!(condition("Ready"), Some("False" | "Unknown")),
            Withheld::NotReady,
        ),
        (
            condition("NetworkUnavailable") == Some("True"),
            Withheld::NetworkUnavailable,
        ),
        (exclude_cordoned && cordoned, Withheld::Cordoned),
    ]
    .into_iter()
    .find_map(|(applies, why)| applies.then_some(why))
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
    fn each_rule_for_load_balancer_nodes_holds_a_node_back_and_cordon_only_when_told() {
        let node = |name: &str, rest: serde_json::Value| -> Node {
            let mut value = json!({"metadata": {"name": name}});
            for (key, part) in rest.as_object().into_iter().flatten() {
                for (field, v) in part.as_object().into_iter().flatten() {
                    value[key][field] = v.clone();
                }
            }
            object(value)
        };
        let taint = |key: &str| json!({"spec": {"taints": [{"key": key, "effect": "NoExecute"}]}});
        let condition = |type_: &str, status: &str| json!({"status": {"conditions": [{"type": type_, "status": status}]}});
        let cases = [
            (node("plain", json!({})), None),
            (node("reported", condition("Ready", "True")), None),
            (
                node(
                    "deleting",
                    json!({"metadata": {"deletionTimestamp": "2026-12-04T00:00:00Z", "finalizers": ["x"]}}),
                ),
                Some(Withheld::Deleting),
            ),
            (
                node(
                    "excluded",
                    json!({"metadata": {"labels": {EXCLUDE_LABEL: ""}}}),
                ),
                Some(Withheld::Excluded),
            ),
            (
                node(
                    "included",
                    json!({"metadata": {"labels": {EXCLUDE_LABEL: "false"}}}),
                ),
                None,
            ),
            (
                node("scaling-down", taint(TO_BE_DELETED_TAINT)),
                Some(Withheld::ToBeDeleted),
            ),
            (
                node("shut-down", taint(OUT_OF_SERVICE_TAINT)),
                Some(Withheld::OutOfService),
            ),
            (
                node("unready", condition("Ready", "False")),
                Some(Withheld::NotReady),
            ),
            (
                node("unknown", condition("Ready", "Unknown")),
                Some(Withheld::NotReady),
            ),
            (
                node("no-network", condition("NetworkUnavailable", "True")),
                Some(Withheld::NetworkUnavailable),
            ),
            (
                node("network", condition("NetworkUnavailable", "False")),
                None,
            ),
            (
                node("cordoned", json!({"spec": {"unschedulable": true}})),
                None,
            ),
        ];
        for (node, expected) in &cases {
            let view = node_view(node, false);
            assert_eq!(view.state.withheld, *expected, "{}", view.state.name);
        }
        let cordoned = &cases.last().expect("cases").0;
        assert_eq!(
            node_view(cordoned, true).state.withheld,
            Some(Withheld::Cordoned)
        );
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
            Arc::new(node_view(&node, false))
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
