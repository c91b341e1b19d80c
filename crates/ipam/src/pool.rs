//! An address pool as the allocator sees it: the parsed, validated form of an
//! `IPAddressPool` spec.

use std::net::IpAddr;

use herald_domain::{Family, LabelSelector, Labels};

use crate::range::{IpRange, RangeError, is_buggy, number};

/// A pool of addresses that Services may be given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub ranges: Vec<IpRange>,
    /// Whether Services that name no pool may get addresses from this one.
    pub auto_assign: bool,
    /// Keep IPv4 addresses ending in `.0` and `.255` out of allocation.
    pub avoid_buggy_ips: bool,
    /// Which Services may use the pool, and its priority among the pools they may use.
    pub allocation: Option<ServiceAllocation>,
}

/// `spec.serviceAllocation`: restricts a pool to some Services and orders it before others.
///
/// A Service matches when its namespace is listed in `namespaces` or matched by one of
/// `namespace_selectors` (or both lists are empty), and its labels are matched by one of
/// `service_selectors` (or that list is empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceAllocation {
    /// Lower numbers are tried first.
    pub priority: Option<i32>,
    pub namespaces: Vec<String>,
    pub namespace_selectors: Vec<LabelSelector>,
    pub service_selectors: Vec<LabelSelector>,
}

/// A pool spec that cannot be used, naming the field to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("IPAddressPool {pool}: spec.addresses[{index}] {text:?}: {source}")]
    Address {
        pool: String,
        index: usize,
        text: String,
        source: RangeError,
    },
    #[error("IPAddressPool {pool}: spec.addresses is empty")]
    NoAddresses { pool: String },
    #[error("IPAddressPool {pool}: spec.addresses[{first}] and spec.addresses[{second}] overlap")]
    SelfOverlap {
        pool: String,
        first: usize,
        second: usize,
    },
}

impl Pool {
    /// A pool from the texts of `spec.addresses`, auto-assigning, without restrictions.
    pub fn parse(name: &str, addresses: &[impl AsRef<str>]) -> Result<Pool, PoolError> {
        if addresses.is_empty() {
            return Err(PoolError::NoAddresses {
                pool: name.to_owned(),
            });
        }
        let mut ranges = Vec::with_capacity(addresses.len());
        for (index, text) in addresses.iter().enumerate() {
            let text = text.as_ref();
            let range: IpRange = text.parse().map_err(|source| PoolError::Address {
                pool: name.to_owned(),
                index,
                text: text.to_owned(),
                source,
            })?;
            if let Some(first) = ranges.iter().position(|r: &IpRange| r.overlaps(&range)) {
                return Err(PoolError::SelfOverlap {
                    pool: name.to_owned(),
                    first,
                    second: index,
                });
            }
            ranges.push(range);
        }
        Ok(Pool {
            name: name.to_owned(),
            ranges,
            auto_assign: true,
            avoid_buggy_ips: false,
            allocation: None,
        })
    }

    /// Whether `ip` is one of the pool's addresses (buggy ones included).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(ip))
    }

    /// Whether `ip` may be handed out from this pool: inside it, and not a buggy address the
    /// pool avoids.
    pub fn can_allocate(&self, ip: IpAddr) -> bool {
        self.contains(ip) && !(self.avoid_buggy_ips && is_buggy(Family::of(ip), number(ip)))
    }

    pub fn overlaps(&self, other: &Pool) -> bool {
        self.ranges
            .iter()
            .any(|a| other.ranges.iter().any(|b| a.overlaps(b)))
    }

    /// Whether a Service in a namespace with `namespace_labels`, labelled `service_labels`,
    /// may be given addresses from this pool without naming it.
    pub(crate) fn serves(
        &self,
        namespace: &str,
        namespace_labels: &Labels,
        service_labels: &Labels,
    ) -> bool {
        let Some(allocation) = &self.allocation else {
            return true;
        };
        let namespace_ok = (allocation.namespaces.is_empty()
            && allocation.namespace_selectors.is_empty())
            || allocation.namespaces.iter().any(|n| n == namespace)
            || allocation
                .namespace_selectors
                .iter()
                .any(|s| s.matches(namespace_labels));
        let service_ok = allocation.service_selectors.is_empty()
            || allocation
                .service_selectors
                .iter()
                .any(|s| s.matches(service_labels));
        namespace_ok && service_ok
    }

    /// Where the pool stands among the pools a Service may use: pools with a matching
    /// `serviceAllocation` and a priority first (lowest number first), then those with a
    /// `serviceAllocation` but no priority, then unrestricted pools; ties by name.
    pub(crate) fn order_key(&self) -> (u8, i32, &str) {
        match &self.allocation {
            Some(ServiceAllocation {
                priority: Some(p), ..
            }) => (0, *p, &self.name),
            Some(_) => (1, 0, &self.name),
            None => (2, 0, &self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_address_names_the_pool_the_index_and_the_text() {
        let err = Pool::parse("lan", &["192.0.2.0/26", "192.0.2.300/32"]).expect_err("bad");
        assert_eq!(
            err.to_string(),
            "IPAddressPool lan: spec.addresses[1] \"192.0.2.300/32\": \"192.0.2.300\" is not an IP address"
        );
    }

    #[test]
    fn overlapping_entries_of_one_pool_are_rejected() {
        let err =
            Pool::parse("lan", &["192.0.2.0/26", "192.0.2.10-192.0.2.12"]).expect_err("overlap");
        assert_eq!(
            err,
            PoolError::SelfOverlap {
                pool: "lan".into(),
                first: 0,
                second: 1
            }
        );
    }

    #[test]
    fn a_pool_restricted_to_namespaces_serves_only_them() {
        let mut pool = Pool::parse("team", &["192.0.2.0/28"]).expect("valid");
        pool.allocation = Some(ServiceAllocation {
            namespaces: vec!["web".into()],
            ..Default::default()
        });
        assert!(pool.serves("web", &Labels::new(), &Labels::new()));
        assert!(!pool.serves("db", &Labels::new(), &Labels::new()));
    }
}
