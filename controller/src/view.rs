//! The compact form in which the controller keeps every Service: only what it decides on.
//!
//! At 10,000 Services a cache of whole `Service` objects was most of the controller's memory
//! (each label, selector and annotation map alone costs a B-tree node of about 0.5 KiB). A
//! `ServiceView` keeps the few fields allocation needs, in flat vectors, and is built as each
//! watch event arrives, so whole objects never pile up.

use std::{collections::BTreeMap, net::IpAddr};

use herald_api::{annotations, service::Eligibility};
use herald_domain::{Family, ServiceKey};
use herald_ipam::{IpFamilyPolicy, Port};
use k8s_openapi::{
    api::core::v1::{ObjectReference, Service},
    jiff::Timestamp,
};

/// What the controller knows of one Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceView {
    pub(crate) key: ServiceKey,
    pub(crate) uid: Option<String>,
    pub(crate) resource_version: Option<String>,
    pub(crate) created: Option<Timestamp>,
    /// Type, class and deletion: whether Herald serves it.
    pub(crate) eligibility: Eligibility,
    pub(crate) finalizers: Vec<String>,
    /// Herald's and MetalLB's annotations only.
    pub(crate) annotations: BTreeMap<String, String>,
    pub(crate) labels: Vec<(String, String)>,
    pub(crate) families: Vec<Family>,
    pub(crate) family_policy: IpFamilyPolicy,
    pub(crate) load_balancer_ip: Option<String>,
    pub(crate) ports: Vec<Port>,
    /// The pod selector, kept for `externalTrafficPolicy: Local` only.
    pub(crate) local_selector: Option<Vec<(String, String)>>,
    pub(crate) status_ips: Vec<IpAddr>,
}

impl ServiceView {
    /// The key of a Service, without building its view.
    pub(crate) fn key_of(service: &Service) -> ServiceKey {
        ServiceKey::new(
            service.metadata.namespace.clone().unwrap_or_default(),
            service.metadata.name.clone().unwrap_or_default(),
        )
    }

    pub(crate) fn new(service: &Service) -> Self {
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
            status_ips: herald_api::service::ingress_ips(service),
        }
    }

    /// Whether the Herald serving `class` holds this Service's finalizer and status: its
    /// [`annotations::SERVED`] mark says so or, for a Service served before the mark existed,
    /// it carries the pool annotation and is of that class.
    pub(crate) fn held_by(&self, class: Option<&str>) -> bool {
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
    pub(crate) fn object_ref(&self) -> ObjectReference {
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
