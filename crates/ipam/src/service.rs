//! What the allocator needs to know about a Service: who it is, which families it wants,
//! what it asks for, and what decides whether it may share an address.

use std::{collections::BTreeSet, net::IpAddr};

use herald_domain::{Family, IpFamilyPolicy, Labels, Port, ServiceKey};

/// Where the traffic of an address goes, which Services sharing it must agree on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Backend {
    /// `externalTrafficPolicy: Cluster`: any node may take the traffic.
    #[default]
    Cluster,
    /// `externalTrafficPolicy: Local`: only nodes with endpoints of this pod selector, so
    /// sharing Services must select the same pods.
    Local { selector: Labels },
}

/// Everything the allocator considers for one Service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceRequest {
    pub key: ServiceKey,
    /// `spec.ipFamilies`, in order; empty means IPv4.
    pub families: Vec<Family>,
    pub family_policy: IpFamilyPolicy,
    /// The pool named by the `address-pool` annotation.
    pub pool: Option<String>,
    /// Addresses asked for by `spec.loadBalancerIP` or the `loadBalancerIPs` annotation.
    pub requested: Vec<IpAddr>,
    /// The `allow-shared-ip` key; without one the Service never shares.
    pub sharing_key: Option<String>,
    pub ports: BTreeSet<Port>,
    pub backend: Backend,
    pub labels: Labels,
    pub namespace_labels: Labels,
}

impl ServiceRequest {
    /// A single-stack IPv4 Service with nothing special about it.
    pub fn new(key: ServiceKey) -> Self {
        ServiceRequest {
            key,
            ..Default::default()
        }
    }

    /// The families to allocate, in order, and whether all of them are required.
    ///
    /// They follow `spec.ipFamilies`, which the API server fills from the policy and the
    /// cluster's families: a PreferDualStack Service gets what the pools offer of its families,
    /// a RequireDualStack one all or nothing.
    pub(crate) fn wanted_families(&self) -> (Vec<Family>, bool) {
        let mut families = self.families.clone();
        families.dedup();
        if families.is_empty() {
            families.push(Family::Ipv4);
        }
        if self.family_policy == IpFamilyPolicy::SingleStack {
            families.truncate(1);
        }
        (
            families,
            self.family_policy != IpFamilyPolicy::PreferDualStack,
        )
    }
}
