//! Pure translation between Kubernetes objects and the allocator's terms: which Services
//! Herald serves, what each asks for, and the pools as the allocator sees them. No I/O.

use std::{collections::BTreeMap, net::IpAddr};

use herald_api::{IPAddressPool, annotations};
use herald_ipam::{
    Backend, Family, IpFamilyPolicy, LabelSelector, Labels, Pool, PoolError, Port, Requirement,
    ServiceAllocation, ServiceKey, ServiceRequest,
};
use k8s_openapi::{
    api::core::v1::Service, apimachinery::pkg::apis::meta::v1::LabelSelector as KubeSelector,
};
use kube::ResourceExt;

/// Whether Herald allocates for `service`: `type: LoadBalancer`, not being deleted, and of
/// Herald's `loadBalancerClass` (no class at all unless the controller was given one).
pub(crate) fn is_served(service: &Service, class: Option<&str>) -> bool {
    let spec = service.spec.as_ref();
    service.metadata.deletion_timestamp.is_none()
        && spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
        && spec.and_then(|s| s.load_balancer_class.as_deref()) == class
}

pub(crate) fn key(service: &Service) -> ServiceKey {
    ServiceKey::new(service.namespace().unwrap_or_default(), service.name_any())
}

/// A Service whose annotations or spec Herald cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RequestError {
    #[error(transparent)]
    Annotation(#[from] annotations::AnnotationError),
    #[error("spec.loadBalancerIP {0:?} is not an IP address")]
    LoadBalancerIp(String),
}

/// What the Service asks of the allocator.
pub(crate) fn request(
    service: &Service,
    namespace_labels: &Labels,
) -> Result<ServiceRequest, RequestError> {
    let spec = service.spec.clone().unwrap_or_default();
    let annotations = service.annotations();
    let mut requested = annotations::requested_ips(annotations)?;
    if requested.is_empty()
        && let Some(ip) = spec.load_balancer_ip.as_deref().filter(|ip| !ip.is_empty())
    {
        requested.push(
            ip.parse::<IpAddr>()
                .map_err(|_| RequestError::LoadBalancerIp(ip.to_owned()))?,
        );
    }
    let families = spec
        .ip_families
        .unwrap_or_default()
        .iter()
        .filter_map(|f| match f.as_str() {
            "IPv4" => Some(Family::Ipv4),
            "IPv6" => Some(Family::Ipv6),
            _ => None,
        })
        .collect();
    let family_policy = match spec.ip_family_policy.as_deref() {
        Some("PreferDualStack") => IpFamilyPolicy::PreferDualStack,
        Some("RequireDualStack") => IpFamilyPolicy::RequireDualStack,
        _ => IpFamilyPolicy::SingleStack,
    };
    let ports = spec
        .ports
        .unwrap_or_default()
        .iter()
        .filter_map(|p| {
            Some(Port {
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                port: u16::try_from(p.port).ok()?,
            })
        })
        .collect();
    let backend = if spec.external_traffic_policy.as_deref() == Some("Local") {
        Backend::Local {
            selector: spec.selector.unwrap_or_default(),
        }
    } else {
        Backend::Cluster
    };
    Ok(ServiceRequest {
        key: key(service),
        families,
        family_policy,
        pool: annotations::address_pool(annotations),
        requested,
        sharing_key: annotations::sharing_key(annotations),
        ports,
        backend,
        labels: service.labels().clone(),
        namespace_labels: namespace_labels.clone(),
    })
}

/// Drops what the controller never reads from a Service before it is cached: at 10,000
/// Services the cache is most of the controller's memory.
pub(crate) fn trim_service(service: &mut Service) {
    let meta = &mut service.metadata;
    meta.owner_references = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|key, _| annotations::PREFIXES.iter().any(|p| key.starts_with(p)));
    }
    if let Some(spec) = service.spec.as_mut() {
        spec.cluster_ip = None;
        spec.cluster_ips = None;
        spec.external_ips = None;
        spec.external_name = None;
        spec.session_affinity = None;
        spec.session_affinity_config = None;
        spec.health_check_node_port = None;
        spec.internal_traffic_policy = None;
        spec.traffic_distribution = None;
        spec.publish_not_ready_addresses = None;
        spec.load_balancer_source_ranges = None;
        spec.allocate_load_balancer_node_ports = None;
        for port in spec.ports.iter_mut().flatten() {
            port.name = None;
            port.node_port = None;
            port.target_port = None;
            port.app_protocol = None;
        }
    }
    if let Some(status) = service.status.as_mut() {
        status.conditions = None;
    }
}

/// The addresses in the Service's `status.loadBalancer.ingress`.
pub(crate) fn status_ips(service: &Service) -> Vec<IpAddr> {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|ingress| ingress.ip.as_deref()?.parse().ok())
        .collect()
}

/// An `IPAddressPool` the allocator cannot use, naming the object and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PoolSpecError {
    #[error(transparent)]
    Addresses(#[from] PoolError),
    #[error(
        "IPAddressPool {pool}: {field}: operator {operator:?} is not In, NotIn, Exists or DoesNotExist"
    )]
    Operator {
        pool: String,
        field: String,
        operator: String,
    },
}

/// The pool as the allocator sees it.
pub(crate) fn pool(crd: &IPAddressPool) -> Result<Pool, PoolSpecError> {
    let name = crd.name_any();
    let addresses: Vec<&str> = crd.spec.addresses.iter().map(|a| a.0.as_str()).collect();
    let mut pool = Pool::parse(&name, &addresses)?;
    pool.auto_assign = crd.spec.auto_assign;
    pool.avoid_buggy_ips = crd.spec.avoid_buggy_ips;
    if let Some(allocation) = &crd.spec.service_allocation {
        let selectors = |list: &[KubeSelector], field: &str| {
            list.iter()
                .enumerate()
                .map(|(i, s)| selector(s, &name, &format!("spec.serviceAllocation.{field}[{i}]")))
                .collect::<Result<Vec<_>, _>>()
        };
        pool.allocation = Some(ServiceAllocation {
            priority: allocation.priority,
            namespaces: allocation.namespaces.clone(),
            namespace_selectors: selectors(&allocation.namespace_selectors, "namespaceSelectors")?,
            service_selectors: selectors(&allocation.service_selectors, "serviceSelectors")?,
        });
    }
    Ok(pool)
}

fn selector(
    selector: &KubeSelector,
    pool: &str,
    field: &str,
) -> Result<LabelSelector, PoolSpecError> {
    let match_expressions = selector
        .match_expressions
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, e)| {
            let values = e.values.iter().flatten().cloned().collect();
            Ok(match e.operator.as_str() {
                "In" => Requirement::In(e.key.clone(), values),
                "NotIn" => Requirement::NotIn(e.key.clone(), values),
                "Exists" => Requirement::Exists(e.key.clone()),
                "DoesNotExist" => Requirement::DoesNotExist(e.key.clone()),
                other => {
                    return Err(PoolSpecError::Operator {
                        pool: pool.to_owned(),
                        field: format!("{field}.matchExpressions[{i}].operator"),
                        operator: other.to_owned(),
                    });
                }
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(LabelSelector {
        match_labels: selector.match_labels.clone().unwrap_or_default(),
        match_expressions,
    })
}

/// Labels of a namespace by name, for `namespaceSelectors`.
pub(crate) type NamespaceLabels = BTreeMap<String, Labels>;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn service(value: serde_json::Value) -> Service {
        serde_json::from_value(value).expect("a valid Service")
    }

    #[test]
    fn only_load_balancers_of_our_class_are_served() {
        let lb = |class: Option<&str>| {
            service(json!({"metadata": {"name": "s", "namespace": "n"},
                           "spec": {"type": "LoadBalancer", "loadBalancerClass": class}}))
        };
        assert!(is_served(&lb(None), None));
        assert!(!is_served(&lb(Some("other.io/lb")), None));
        assert!(is_served(&lb(Some("herald.dev/lb")), Some("herald.dev/lb")));
        assert!(!is_served(&lb(None), Some("herald.dev/lb")));
        let cluster_ip = service(json!({"metadata": {"name": "s"}, "spec": {"type": "ClusterIP"}}));
        assert!(!is_served(&cluster_ip, None));
    }

    #[test]
    fn a_request_carries_families_ports_annotations_and_the_local_selector() {
        let svc = service(json!({
            "metadata": {"name": "web", "namespace": "shop", "labels": {"tier": "front"},
                         "annotations": {"metallb.universe.tf/allow-shared-ip": "k",
                                         "metallb.io/address-pool": "lan"}},
            "spec": {"type": "LoadBalancer", "ipFamilies": ["IPv6", "IPv4"],
                     "ipFamilyPolicy": "RequireDualStack", "externalTrafficPolicy": "Local",
                     "selector": {"app": "web"}, "loadBalancerIP": "192.0.2.9",
                     "ports": [{"port": 443, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}
        }));
        let request = request(&svc, &Labels::new()).expect("usable");
        assert_eq!(request.key, ServiceKey::new("shop", "web"));
        assert_eq!(request.families, [Family::Ipv6, Family::Ipv4]);
        assert_eq!(request.family_policy, IpFamilyPolicy::RequireDualStack);
        assert_eq!(request.pool.as_deref(), Some("lan"));
        assert_eq!(request.sharing_key.as_deref(), Some("k"));
        assert_eq!(
            request.requested,
            ["192.0.2.9".parse::<IpAddr>().expect("ip")]
        );
        assert_eq!(request.ports.len(), 2);
        assert_eq!(
            request.backend,
            Backend::Local {
                selector: Labels::from([("app".into(), "web".into())])
            }
        );
    }

    #[test]
    fn trimming_a_service_keeps_everything_the_controller_decides_on() {
        let full = service(json!({
            "metadata": {"name": "web", "namespace": "shop", "labels": {"tier": "front"},
                         "finalizers": ["service.kubernetes.io/load-balancer-cleanup"],
                         "annotations": {"herald.dev/loadBalancerIPs": "192.0.2.9",
                                         "herald.dev/ip-allocated-from-pool": "lan",
                                         "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"type": "LoadBalancer", "clusterIP": "198.51.100.7", "ipFamilies": ["IPv4"],
                     "externalTrafficPolicy": "Local", "selector": {"app": "web"},
                     "healthCheckNodePort": 31000,
                     "ports": [{"name": "https", "port": 443, "nodePort": 30443, "targetPort": 8443}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.9"}]}}
        }));
        let mut trimmed = full.clone();
        trim_service(&mut trimmed);
        let labels = Labels::new();
        assert_eq!(request(&trimmed, &labels), request(&full, &labels));
        assert_eq!(status_ips(&trimmed), status_ips(&full));
        assert_eq!(is_served(&trimmed, None), is_served(&full, None));
        assert_eq!(trimmed.metadata.finalizers, full.metadata.finalizers);
        let annotations = trimmed.metadata.annotations.unwrap_or_default();
        assert!(annotations.contains_key("herald.dev/ip-allocated-from-pool"));
        assert!(!annotations.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
        assert_eq!(trimmed.spec.and_then(|s| s.cluster_ip), None);
    }

    #[test]
    fn a_bad_load_balancer_ip_is_named() {
        let svc = service(json!({"metadata": {"name": "s"},
                                 "spec": {"type": "LoadBalancer", "loadBalancerIP": "nope"}}));
        assert_eq!(
            request(&svc, &Labels::new()).expect_err("bad").to_string(),
            "spec.loadBalancerIP \"nope\" is not an IP address"
        );
    }

    #[test]
    fn a_pool_with_a_bad_selector_operator_names_the_field() {
        let crd: IPAddressPool = serde_json::from_value(json!({
            "apiVersion": "herald.dev/v1alpha1", "kind": "IPAddressPool",
            "metadata": {"name": "team"},
            "spec": {"addresses": ["192.0.2.0/28"], "serviceAllocation": {
                "serviceSelectors": [{"matchExpressions": [{"key": "a", "operator": "Near"}]}]}}
        }))
        .expect("valid json");
        assert_eq!(
            pool(&crd).expect_err("bad operator").to_string(),
            "IPAddressPool team: spec.serviceAllocation.serviceSelectors[0].matchExpressions[0].operator: operator \"Near\" is not In, NotIn, Exists or DoesNotExist"
        );
    }
}
