//! What Herald reads from core/v1 Services and their EndpointSlices, in one place for the
//! controller, the speaker and their tests.

use std::net::IpAddr;

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};

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
