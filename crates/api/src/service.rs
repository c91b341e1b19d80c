//! What Herald reads from core/v1 Services and their EndpointSlices, in one place for the
//! controller, the speaker and their tests.

use std::net::IpAddr;

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};

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
