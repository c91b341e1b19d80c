//! What Herald reads from core/v1 Services, in one place for the controller and the speaker.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;

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
