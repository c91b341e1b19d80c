//! What Herald reads from core/v1 Services and their EndpointSlices, in one place for the
//! controller, the speaker and their tests: each Service is translated once, into a
//! [`ServiceView`].

use std::{collections::BTreeMap, net::IpAddr};

use herald_domain::{Family, IpFamilyPolicy, Port, ServiceKey};
use k8s_openapi::{
    api::{
        core::v1::{ObjectReference, Service},
        discovery::v1::EndpointSlice,
    },
    jiff::Timestamp,
};

use crate::annotations;

/// What decides whether Herald serves a Service: its type, its `loadBalancerClass`, and
/// whether it is being deleted. The controller keeps it in its view of a Service; the
/// speaker asks it of every Service it sees.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Eligibility {
    pub load_balancer: bool,
    pub class: Option<String>,
    pub deleting: bool,
}

impl Eligibility {
    pub fn of(service: &Service) -> Eligibility {
        let spec = service.spec.as_ref();
        Eligibility {
            load_balancer: spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer"),
            class: spec.and_then(|s| s.load_balancer_class.clone()),
            deleting: service.metadata.deletion_timestamp.is_some(),
        }
    }

    /// Whether Herald, serving `class` (`None`: Services without a class), serves it:
    /// `type: LoadBalancer` of that class, not being deleted.
    pub fn is_served(&self, class: Option<&str>) -> bool {
        !self.deleting && self.load_balancer && self.class.as_deref() == class
    }
}

/// What Herald knows of one Service: only the fields it decides on, in flat vectors.
///
/// At 10,000 Services a cache of whole `Service` objects was most of the controller's memory
/// (each label, selector and annotation map alone costs a B-tree node of about 0.5 KiB), so the
/// controller keeps a `ServiceView` per Service, built as each watch event arrives; the speaker
/// builds one too and keeps what it announces from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceView {
    pub key: ServiceKey,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub created: Option<Timestamp>,
    /// Type, class and deletion: whether Herald serves it.
    pub eligibility: Eligibility,
    pub finalizers: Vec<String>,
    /// Herald's and MetalLB's annotations only.
    pub annotations: BTreeMap<String, String>,
    pub labels: Vec<(String, String)>,
    pub families: Vec<Family>,
    pub family_policy: IpFamilyPolicy,
    pub load_balancer_ip: Option<String>,
    pub ports: Vec<Port>,
    /// The pod selector, kept for `externalTrafficPolicy: Local` only.
    pub local_selector: Option<Vec<(String, String)>>,
    pub status_ips: Vec<IpAddr>,
}

impl ServiceView {
    /// The key of a Service, without building its view.
    pub fn key_of(service: &Service) -> ServiceKey {
        ServiceKey::new(
            service.metadata.namespace.clone().unwrap_or_default(),
            service.metadata.name.clone().unwrap_or_default(),
        )
    }

    pub fn new(service: &Service) -> Self {
        let meta = &service.metadata;
        let spec = service.spec.as_ref();
        let flat = |map: Option<&BTreeMap<String, String>>| -> Vec<(String, String)> {
            map.into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        ServiceView {
            key: Self::key_of(service),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            created: meta.creation_timestamp.as_ref().map(|t| t.0),
            eligibility: Eligibility::of(service),
            finalizers: meta.finalizers.clone().unwrap_or_default(),
            annotations: meta
                .annotations
                .iter()
                .flatten()
                .filter(|(key, _)| annotations::PREFIXES.iter().any(|p| key.starts_with(p)))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            labels: flat(meta.labels.as_ref()),
            families: spec
                .and_then(|s| s.ip_families.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|f| match f.as_str() {
                    "IPv4" => Some(Family::Ipv4),
                    "IPv6" => Some(Family::Ipv6),
                    _ => None,
                })
                .collect(),
            family_policy: match spec.and_then(|s| s.ip_family_policy.as_deref()) {
                Some("PreferDualStack") => IpFamilyPolicy::PreferDualStack,
                Some("RequireDualStack") => IpFamilyPolicy::RequireDualStack,
                _ => IpFamilyPolicy::SingleStack,
            },
            load_balancer_ip: spec
                .and_then(|s| s.load_balancer_ip.clone())
                .filter(|ip| !ip.is_empty()),
            ports: spec
                .and_then(|s| s.ports.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    Some(Port {
                        protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        port: u16::try_from(p.port).ok()?,
                    })
                })
                .collect(),
            local_selector: spec
                .filter(|s| s.external_traffic_policy.as_deref() == Some("Local"))
                .map(|s| flat(s.selector.as_ref())),
            status_ips: ingress_ips(service),
        }
    }

    /// Whether the Herald serving `class` holds this Service's finalizer and status: its
    /// [`annotations::SERVED`] mark says so or, for a Service served before the mark existed,
    /// it carries the pool annotation and is of that class.
    pub fn held_by(&self, class: Option<&str>) -> bool {
        match self.annotations.get(annotations::SERVED) {
            Some(value) => value == annotations::served_value(class),
            None => {
                self.annotations
                    .contains_key(annotations::IP_ALLOCATED_FROM_POOL)
                    && self.eligibility.class.as_deref() == class
            }
        }
    }

    /// A reference for Events about the Service.
    pub fn object_ref(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            name: Some(self.key.name.clone()),
            namespace: Some(self.key.namespace.clone()),
            uid: self.uid.clone(),
            resource_version: self.resource_version.clone(),
            field_path: None,
        }
    }
}

/// The addresses in `status.loadBalancer.ingress[].ip` (hostnames and unparsable entries
/// are skipped).
pub fn ingress_ips(service: &Service) -> Vec<IpAddr> {
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

/// The nodes of the ready endpoints of an EndpointSlice. An endpoint without
/// `conditions.ready` is ready (the API's rule); one without a node cannot be placed and is
/// left out.
pub fn ready_endpoint_nodes(slice: &EndpointSlice) -> impl Iterator<Item = &str> {
    slice
        .endpoints
        .iter()
        .flatten()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .filter_map(|e| e.node_name.as_deref())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn view(class: Option<&str>, annotations: serde_json::Value) -> ServiceView {
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": "s", "namespace": "n", "annotations": annotations},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": class}
        }))
        .expect("a valid Service");
        ServiceView::new(&service)
    }

    #[test]
    fn a_service_is_held_only_by_the_herald_whose_mark_it_carries() {
        let ours = view(None, json!({"herald.dev/served": ""}));
        assert!(ours.held_by(None));
        assert!(!ours.held_by(Some("b.example/lb")));
        let second_herald = view(
            Some("b.example/lb"),
            json!({"herald.dev/served": "b.example/lb",
                   "herald.dev/ip-allocated-from-pool": "lan"}),
        );
        assert!(second_herald.held_by(Some("b.example/lb")));
        assert!(!second_herald.held_by(None), "another Herald's Service");
        assert!(!view(Some("b.example/lb"), json!({})).held_by(Some("b.example/lb")));
    }

    #[test]
    fn before_the_mark_the_pool_annotation_and_class_say_who_served() {
        let legacy = view(None, json!({"herald.dev/ip-allocated-from-pool": "lan"}));
        assert!(legacy.held_by(None));
        assert!(!legacy.held_by(Some("b.example/lb")));
    }
}
