//! Pure translation from the watched objects to what planning and membership need: the
//! [`Snapshot`] of Services, endpoints, nodes, advertisements and pool labels, and the gossip
//! address of every node. No I/O.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use herald_api::{
    IPAddressPool, L2Advertisement, annotations::IP_ALLOCATED_FROM_POOL, service::ingress_ips,
};
use herald_ipam::ServiceKey;
use herald_plan::{L2Advertisement as PlannedAdvertisement, NodeState, ServiceState, Snapshot};
use herald_shell::selector::{SelectorError, convert_all};
use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use kube::ResourceExt;

/// The label Kubernetes puts on nodes that must not receive load-balancer traffic.
pub(crate) const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
/// The label linking an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The watched objects of one moment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Objects<'a> {
    pub(crate) services: &'a [Arc<Service>],
    pub(crate) slices: &'a [Arc<EndpointSlice>],
    pub(crate) nodes: &'a [Arc<Node>],
    pub(crate) pools: &'a [Arc<IPAddressPool>],
    pub(crate) advertisements: &'a [Arc<L2Advertisement>],
}

/// Whether Herald announces `service` at all: `type: LoadBalancer` of Herald's class, not
/// being deleted.
fn is_served(service: &Service, class: Option<&str>) -> bool {
    let spec = service.spec.as_ref();
    service.metadata.deletion_timestamp.is_none()
        && spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
        && spec.and_then(|s| s.load_balancer_class.as_deref()) == class
}

/// Nodes with a ready endpoint, per Service. An endpoint without `conditions.ready` is ready
/// (the API's rule); one without a node cannot be placed and is left out.
fn ready_endpoint_nodes(slices: &[Arc<EndpointSlice>]) -> BTreeMap<ServiceKey, BTreeSet<String>> {
    let mut nodes: BTreeMap<ServiceKey, BTreeSet<String>> = BTreeMap::new();
    for slice in slices {
        let Some(service) = slice.labels().get(SERVICE_NAME_LABEL) else {
            continue;
        };
        let key = ServiceKey::new(slice.namespace().unwrap_or_default(), service.clone());
        let entry = nodes.entry(key).or_default();
        for endpoint in slice.endpoints.iter().flatten() {
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            if let (true, Some(node)) = (ready, &endpoint.node_name) {
                entry.insert(node.clone());
            }
        }
    }
    nodes
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

fn advertisement(adv: &L2Advertisement) -> Result<PlannedAdvertisement, SelectorError> {
    let name = adv.name_any();
    let object = format!("L2Advertisement {name}");
    Ok(PlannedAdvertisement {
        pools: adv.spec.ip_address_pools.clone(),
        pool_selectors: convert_all(
            &adv.spec.ip_address_pool_selectors,
            &object,
            "spec.ipAddressPoolSelectors",
        )?,
        node_selectors: convert_all(&adv.spec.node_selectors, &object, "spec.nodeSelectors")?,
        service_selectors: convert_all(
            &adv.spec.service_selectors,
            &object,
            "spec.serviceSelectors",
        )?,
        interfaces: adv.spec.interfaces.clone(),
        name,
    })
}

/// The planning snapshot, and a message per advertisement that could not be used (it is
/// left out; the others still apply).
pub(crate) fn snapshot(
    objects: Objects<'_>,
    live_speakers: &BTreeSet<String>,
    class: Option<&str>,
) -> (Snapshot, Vec<String>) {
    let endpoints = ready_endpoint_nodes(objects.slices);
    let mut services: Vec<ServiceState> = objects
        .services
        .iter()
        .filter(|s| is_served(s, class))
        .filter_map(|service| {
            let ips = ingress_ips(service);
            if ips.is_empty() {
                return None;
            }
            let key = ServiceKey::new(service.namespace().unwrap_or_default(), service.name_any());
            let spec = service.spec.as_ref();
            Some(ServiceState {
                ready_endpoint_nodes: endpoints.get(&key).cloned().unwrap_or_default(),
                key,
                ips,
                pool: service.annotations().get(IP_ALLOCATED_FROM_POOL).cloned(),
                labels: service.labels().clone(),
                local: spec.and_then(|s| s.external_traffic_policy.as_deref()) == Some("Local"),
            })
        })
        .collect();
    services.sort_by(|a, b| a.key.cmp(&b.key));
    let mut problems = Vec::new();
    let mut advertisements: Vec<PlannedAdvertisement> = objects
        .advertisements
        .iter()
        .filter_map(|adv| {
            advertisement(adv)
                .map_err(|e| problems.push(e.to_string()))
                .ok()
        })
        .collect();
    advertisements.sort_by(|a, b| a.name.cmp(&b.name));
    let mut nodes: Vec<NodeState> = objects.nodes.iter().map(|n| node_state(n)).collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let snapshot = Snapshot {
        services,
        nodes,
        advertisements,
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
pub(crate) fn internal_ip(node: &Node) -> Option<IpAddr> {
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
    nodes: &[Arc<Node>],
    me: &str,
    mine: SocketAddr,
) -> BTreeMap<String, SocketAddr> {
    nodes
        .iter()
        .filter(|n| n.name_any() != me)
        .filter_map(|n| {
            let ip = internal_ip(n)?;
            (ip.is_ipv4() == mine.is_ipv4())
                .then(|| (n.name_any(), SocketAddr::new(ip, mine.port())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Arc<T> {
        Arc::new(serde_json::from_value(value).expect("a valid object"))
    }

    fn service(name: &str, spec: serde_json::Value, ip: Option<&str>) -> Arc<Service> {
        let ingress = ip.map(|ip| json!([{"ip": ip}])).unwrap_or(json!([]));
        object(json!({
            "metadata": {"name": name, "namespace": "web",
                         "annotations": {IP_ALLOCATED_FROM_POOL: "lan"}, "labels": {"tier": "front"}},
            "spec": spec,
            "status": {"loadBalancer": {"ingress": ingress}},
        }))
    }

    fn slice(service: &str, endpoints: serde_json::Value) -> Arc<EndpointSlice> {
        object(json!({
            "metadata": {"name": format!("{service}-x"), "namespace": "web",
                         "labels": {SERVICE_NAME_LABEL: service}},
            "addressType": "IPv4",
            "endpoints": endpoints,
        }))
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
        let slices = [slice(
            "a",
            json!([
                {"addresses": ["198.51.100.10"], "nodeName": "n1"},
                {"addresses": ["198.51.100.11"], "nodeName": "n2", "conditions": {"ready": false}},
                {"addresses": ["198.51.100.12"], "nodeName": "n3", "conditions": {"ready": true}},
                {"addresses": ["198.51.100.13"]},
            ]),
        )];
        let objects = Objects {
            services: &services,
            slices: &slices,
            nodes: &[],
            pools: &[],
            advertisements: &[],
        };
        let (snapshot, problems) = snapshot(objects, &BTreeSet::new(), None);
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
            a.ready_endpoint_nodes,
            ["n1".to_owned(), "n3".to_owned()].into()
        );
    }

    #[test]
    fn excluded_and_unavailable_nodes_are_marked() {
        let nodes = [
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
        let objects = Objects {
            services: &[],
            slices: &[],
            nodes: &nodes,
            pools: &[],
            advertisements: &[],
        };
        let (snapshot, _) = snapshot(objects, &BTreeSet::new(), None);
        let flags: Vec<(bool, bool)> = snapshot
            .nodes
            .iter()
            .map(|n| (n.excluded, n.network_unavailable))
            .collect();
        assert_eq!(flags, [(true, false), (false, true), (false, false)]);
    }

    #[test]
    fn a_bad_advertisement_is_named_and_left_out_while_the_others_apply() {
        let advertisements = [
            object(
                json!({"apiVersion": "herald.dev/v1alpha1", "kind": "L2Advertisement",
                "metadata": {"name": "bad"},
                "spec": {"nodeSelectors": [{"matchExpressions": [{"key": "k", "operator": "Near"}]}]}}),
            ),
            object(
                json!({"apiVersion": "herald.dev/v1alpha1", "kind": "L2Advertisement",
                "metadata": {"name": "good"}, "spec": {"interfaces": ["eth1"]}}),
            ),
        ];
        let objects = Objects {
            services: &[],
            slices: &[],
            nodes: &[],
            pools: &[],
            advertisements: &advertisements,
        };
        let (snapshot, problems) = snapshot(objects, &BTreeSet::new(), None);
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
        let node = |name: &str, addresses: serde_json::Value| -> Arc<Node> {
            object(json!({"metadata": {"name": name}, "status": {"addresses": addresses}}))
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
