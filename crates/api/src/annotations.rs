//! Service annotations Herald reads and writes. Each annotation Herald reads is also honoured
//! under MetalLB's two prefixes (`metallb.io/`, `metallb.universe.tf/`), so Services move from
//! MetalLB without edits; Herald's own prefix wins when both are set.

use std::{collections::BTreeMap, net::IpAddr};

/// The prefixes an annotation is looked up under, in order of precedence.
pub const PREFIXES: [&str; 3] = ["herald.dev/", "metallb.io/", "metallb.universe.tf/"];

/// Names the pool a Service's addresses must come from.
pub const ADDRESS_POOL: &str = "address-pool";
/// Requests specific addresses: a comma-separated list, at most one per family.
pub const LOAD_BALANCER_IPS: &str = "loadBalancerIPs";
/// Services with the same key may share an address.
pub const ALLOW_SHARED_IP: &str = "allow-shared-ip";
/// Written by the controller: the pool the Service's addresses came from.
pub const IP_ALLOCATED_FROM_POOL: &str = "herald.dev/ip-allocated-from-pool";
/// The finalizer the controller adds to every Service it serves.
pub const CLEANUP_FINALIZER: &str = "service.kubernetes.io/load-balancer-cleanup";
/// Written by the controller together with its finalizer, with the class it serves as value
/// ([`served_value`]): that Herald serves this Service, and the cleanup finalizer and
/// `status.loadBalancer.ingress` are its own. The finalizer's name is shared with other
/// load-balancer controllers (cloud providers' service controllers, k3s ServiceLB, kube-vip,
/// a second Herald serving another class), so the controller releases the finalizer and
/// status of a Service only when this mark says they are its own.
pub const SERVED: &str = "herald.dev/served";
/// The annotations the controller writes on a Service it serves, removed when it releases it.
pub const WRITTEN: [&str; 2] = [SERVED, IP_ALLOCATED_FROM_POOL];

/// The value of [`SERVED`] written by a Herald serving `class` (empty: Services without a
/// class; a class is never empty).
pub fn served_value(class: Option<&str>) -> &str {
    class.unwrap_or("")
}

/// A Service annotation Herald cannot use, naming the annotation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnotationError {
    #[error("annotation {annotation}: {value:?} is not an IP address")]
    NotAnAddress { annotation: String, value: String },
    #[error("annotation {annotation}: at most one address per family (got {value:?})")]
    TooMany { annotation: String, value: String },
    #[error("annotation {annotation} is empty")]
    Empty { annotation: String },
}

/// The value of annotation `name` under the first prefix that has it, with its full key.
pub fn lookup<'a>(
    annotations: &'a BTreeMap<String, String>,
    name: &str,
) -> Option<(String, &'a str)> {
    PREFIXES.iter().find_map(|prefix| {
        let key = format!("{prefix}{name}");
        annotations.get(&key).map(|value| (key, value.as_str()))
    })
}

/// The pool named by the `address-pool` annotation.
pub fn address_pool(annotations: &BTreeMap<String, String>) -> Option<String> {
    lookup(annotations, ADDRESS_POOL).map(|(_, v)| v.trim().to_owned())
}

/// The `allow-shared-ip` key.
pub fn sharing_key(annotations: &BTreeMap<String, String>) -> Option<String> {
    lookup(annotations, ALLOW_SHARED_IP).map(|(_, v)| v.trim().to_owned())
}

/// The addresses requested by the `loadBalancerIPs` annotation (none when it is absent).
pub fn requested_ips(
    annotations: &BTreeMap<String, String>,
) -> Result<Vec<IpAddr>, AnnotationError> {
    let Some((annotation, value)) = lookup(annotations, LOAD_BALANCER_IPS) else {
        return Ok(Vec::new());
    };
    if value.trim().is_empty() {
        return Err(AnnotationError::Empty { annotation });
    }
    let mut ips: Vec<IpAddr> = Vec::new();
    for part in value.split(',') {
        let ip = part
            .trim()
            .parse::<IpAddr>()
            .map_err(|_| AnnotationError::NotAnAddress {
                annotation: annotation.clone(),
                value: part.trim().to_owned(),
            })?;
        if ips.iter().any(|held| held.is_ipv4() == ip.is_ipv4()) {
            return Err(AnnotationError::TooMany {
                annotation,
                value: value.to_owned(),
            });
        }
        ips.push(ip);
    }
    Ok(ips)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn metallb_annotations_are_honoured_and_heralds_own_win() {
        let only_metallb = annotations(&[("metallb.universe.tf/address-pool", "lan")]);
        assert_eq!(address_pool(&only_metallb).as_deref(), Some("lan"));
        let both = annotations(&[
            ("metallb.io/address-pool", "old"),
            ("herald.dev/address-pool", "new"),
        ]);
        assert_eq!(address_pool(&both).as_deref(), Some("new"));
        let shared = annotations(&[("metallb.io/allow-shared-ip", "web")]);
        assert_eq!(sharing_key(&shared).as_deref(), Some("web"));
    }

    #[test]
    fn requested_ips_take_one_address_per_family() {
        let dual = annotations(&[("herald.dev/loadBalancerIPs", "192.0.2.10, 2001:db8::10")]);
        assert_eq!(
            requested_ips(&dual),
            Ok(vec![
                "192.0.2.10".parse().expect("valid"),
                "2001:db8::10".parse().expect("valid")
            ])
        );
        let two_v4 = annotations(&[("metallb.io/loadBalancerIPs", "192.0.2.10,192.0.2.11")]);
        assert!(matches!(
            requested_ips(&two_v4),
            Err(AnnotationError::TooMany { annotation, .. }) if annotation == "metallb.io/loadBalancerIPs"
        ));
        let bad = annotations(&[("herald.dev/loadBalancerIPs", "192.0.2.300")]);
        assert_eq!(
            requested_ips(&bad).expect_err("bad").to_string(),
            "annotation herald.dev/loadBalancerIPs: \"192.0.2.300\" is not an IP address"
        );
        assert_eq!(requested_ips(&BTreeMap::new()), Ok(vec![]));
    }
}
