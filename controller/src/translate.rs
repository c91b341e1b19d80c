//! Pure translation between Kubernetes objects and the allocator's terms: which Services
//! Herald serves, what each asks for, and the pools as the allocator sees them. No I/O.

use std::{collections::BTreeMap, net::IpAddr};

use herald_api::selector::{SelectorError, convert_all};
use herald_api::{IPAddressPool, annotations};
use herald_domain::Labels;
use herald_ipam::{Backend, Pool, PoolError, ServiceAllocation, ServiceRequest};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as KubeSelector;
use kube::ResourceExt;

use herald_api::service::ServiceView;

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
    service: &ServiceView,
    namespace_labels: &Labels,
) -> Result<ServiceRequest, RequestError> {
    let mut requested = annotations::requested_ips(&service.annotations)?;
    if requested.is_empty()
        && let Some(ip) = &service.load_balancer_ip
    {
        requested.push(
            ip.parse::<IpAddr>()
                .map_err(|_| RequestError::LoadBalancerIp(ip.clone()))?,
        );
    }
    let backend = match &service.local_selector {
        Some(selector) => Backend::Local {
            selector: selector.iter().cloned().collect(),
        },
        None => Backend::Cluster,
    };
    Ok(ServiceRequest {
        key: service.key.clone(),
        families: service.families.clone(),
        family_policy: service.family_policy,
        pool: annotations::address_pool(&service.annotations),
        requested,
        sharing_key: annotations::sharing_key(&service.annotations),
        ports: service.ports.iter().cloned().collect(),
        backend,
        labels: service.labels.iter().cloned().collect(),
        namespace_labels: namespace_labels.clone(),
    })
}

/// An `IPAddressPool` the allocator cannot use, naming the object and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PoolSpecError {
    #[error(transparent)]
    Addresses(#[from] PoolError),
    #[error(transparent)]
    Selector(#[from] SelectorError),
}

/// The pool as the allocator sees it.
pub(crate) fn pool(crd: &IPAddressPool) -> Result<Pool, PoolSpecError> {
    let name = crd.name_any();
    let addresses: Vec<&str> = crd.spec.addresses.iter().map(|a| a.0.as_str()).collect();
    let mut pool = Pool::parse(&name, &addresses)?;
    pool.auto_assign = crd.spec.auto_assign;
    pool.avoid_buggy_ips = crd.spec.avoid_buggy_ips;
    if let Some(allocation) = &crd.spec.service_allocation {
        let object = format!("IPAddressPool {name}");
        let selectors = |list: &[KubeSelector], field: &str| {
            convert_all(list, &object, &format!("spec.serviceAllocation.{field}"))
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

/// Labels of a namespace by name, for `namespaceSelectors`.
pub(crate) type NamespaceLabels = BTreeMap<String, Labels>;

#[cfg(test)]
mod tests {
    use herald_domain::{Family, IpFamilyPolicy, ServiceKey};
    use herald_ipam::Backend;
    use serde_json::json;

    use super::*;

    fn service(value: serde_json::Value) -> ServiceView {
        let service: k8s_openapi::api::core::v1::Service =
            serde_json::from_value(value).expect("a valid Service");
        ServiceView::new(&service)
    }

    #[test]
    fn only_load_balancers_of_our_class_are_served() {
        let lb = |class: Option<&str>| {
            service(json!({"metadata": {"name": "s", "namespace": "n"},
                           "spec": {"type": "LoadBalancer", "loadBalancerClass": class}}))
        };
        let served = |view: ServiceView, class| view.eligibility.is_served(class);
        assert!(served(lb(None), None));
        assert!(!served(lb(Some("other.io/lb")), None));
        assert!(served(lb(Some("herald.dev/lb")), Some("herald.dev/lb")));
        assert!(!served(lb(None), Some("herald.dev/lb")));
        let cluster_ip = service(json!({"metadata": {"name": "s"}, "spec": {"type": "ClusterIP"}}));
        assert!(!served(cluster_ip, None));
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
    fn the_compact_view_keeps_only_heralds_annotations_and_the_local_selector() {
        let view = service(json!({
            "metadata": {"name": "web", "namespace": "shop",
                         "annotations": {"herald.dev/ip-allocated-from-pool": "lan",
                                         "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
                     "externalTrafficPolicy": "Cluster"},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.9"}]}}
        }));
        assert_eq!(view.annotations.len(), 1);
        assert!(
            view.annotations
                .contains_key("herald.dev/ip-allocated-from-pool")
        );
        assert_eq!(
            view.local_selector, None,
            "a Cluster Service needs no selector"
        );
        assert_eq!(
            view.status_ips,
            ["192.0.2.9".parse::<IpAddr>().expect("ip")]
        );
        let reference = view.object_ref();
        assert_eq!(reference.kind.as_deref(), Some("Service"));
        assert_eq!(reference.namespace.as_deref(), Some("shop"));
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
