//! Property tests over random sequences of pool edits, assignments, restores and releases:
//! no address is ever held by two Services unless the sharing rules allow it, failed
//! assignments lose nothing, counts stay exact, and a restart that restores every Service
//! from its status rebuilds the same state.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use herald_domain::{Family, IpFamilyPolicy, Labels, Port, ServiceKey};
use herald_ipam::{Allocator, Assignment, Backend, Pool, ServiceRequest};
use proptest::prelude::*;

/// The small address space the operations play in: IPv4 192.0.2.0-15, IPv6 2001:db8::0-7.
fn address(i: u8) -> IpAddr {
    if i < 16 {
        format!("192.0.2.{i}").parse().expect("valid")
    } else {
        format!("2001:db8::{}", i - 16).parse().expect("valid")
    }
}

/// Pool layouts the sequence switches between: overlapping, shrunk, buggy-avoiding, gone.
fn pools(layout: u8) -> Vec<Pool> {
    let parse = |name: &str, addresses: &[&str]| Pool::parse(name, addresses).expect("valid");
    match layout {
        0 => vec![
            parse("a", &["192.0.2.0/29", "2001:db8::/126"]),
            parse("b", &["192.0.2.6-192.0.2.11", "2001:db8::4/126"]),
        ],
        1 => vec![parse("a", &["192.0.2.2/31"])],
        2 => {
            let mut p = parse("a", &["192.0.2.0/28", "2001:db8::/125"]);
            p.avoid_buggy_ips = true;
            let mut q = parse("c", &["192.0.2.8/29"]);
            q.auto_assign = false;
            vec![p, q]
        }
        _ => vec![],
    }
}

#[derive(Debug, Clone)]
enum Op {
    SetPools(u8),
    Assign {
        service: u8,
        sharing_key: Option<u8>,
        port: u8,
        local_app: Option<u8>,
        requested: Option<u8>,
        pool: Option<u8>,
        policy: u8,
    },
    Restore {
        service: u8,
        address: u8,
    },
    Release(u8),
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0u8..4).prop_map(Op::SetPools),
        8 => (0u8..8, prop::option::of(0u8..2), 0u8..3, prop::option::of(0u8..2),
              prop::option::weighted(0.3, 0u8..24), prop::option::weighted(0.2, 0u8..3), 0u8..4)
            .prop_map(|(service, sharing_key, port, local_app, requested, pool, policy)| Op::Assign {
                service, sharing_key, port, local_app, requested, pool, policy,
            }),
        1 => (0u8..8, 0u8..24).prop_map(|(service, address)| Op::Restore { service, address }),
        3 => (0u8..8).prop_map(Op::Release),
        1 => Just(Op::Restart),
    ]
}

fn key(service: u8) -> ServiceKey {
    ServiceKey::new("ns", format!("s{service}"))
}

fn request(op: &Op) -> ServiceRequest {
    let Op::Assign {
        service,
        sharing_key,
        port,
        local_app,
        requested,
        pool,
        policy,
    } = op
    else {
        unreachable!("only Assign builds requests")
    };
    let (families, family_policy) = match policy {
        0 => (vec![Family::Ipv4], IpFamilyPolicy::SingleStack),
        1 => (vec![Family::Ipv6], IpFamilyPolicy::SingleStack),
        2 => (
            vec![Family::Ipv4, Family::Ipv6],
            IpFamilyPolicy::PreferDualStack,
        ),
        _ => (
            vec![Family::Ipv6, Family::Ipv4],
            IpFamilyPolicy::RequireDualStack,
        ),
    };
    ServiceRequest {
        key: key(*service),
        families,
        family_policy,
        pool: pool.map(|p| ["a", "b", "c"][usize::from(p)].to_owned()),
        requested: requested.map(address).into_iter().collect(),
        sharing_key: sharing_key.map(|k| format!("key{k}")),
        ports: BTreeSet::from([Port {
            protocol: "TCP".into(),
            port: 80 + u16::from(*port),
        }]),
        backend: match local_app {
            None => Backend::Cluster,
            Some(app) => Backend::Local {
                selector: Labels::from([("app".into(), format!("app{app}"))]),
            },
        },
        ..Default::default()
    }
}

/// The sharing rule, written independently of the allocator.
fn may_share(a: &ServiceRequest, b: &ServiceRequest) -> bool {
    a.sharing_key.is_some()
        && a.sharing_key == b.sharing_key
        && a.backend == b.backend
        && a.ports.is_disjoint(&b.ports)
}

struct World {
    allocator: Allocator,
    layout: u8,
    /// The request each Service last succeeded with (or was restored from).
    requests: BTreeMap<ServiceKey, ServiceRequest>,
}

impl World {
    fn check(&self) -> Result<(), TestCaseError> {
        let mut by_address: BTreeMap<IpAddr, Vec<&ServiceKey>> = BTreeMap::new();
        for key in self.requests.keys() {
            let assignment = self.allocator.assignment(key);
            prop_assert!(assignment.is_some(), "{key} lost its assignment");
            for ip in &assignment.expect("checked").ips {
                by_address.entry(*ip).or_default().push(key);
            }
        }
        for (ip, keys) in &by_address {
            let mut holders: Vec<&ServiceKey> = self.allocator.holders(*ip).iter().collect();
            holders.sort();
            prop_assert_eq!(&holders, keys, "holders of {}", ip);
            for (i, a) in keys.iter().enumerate() {
                for b in &keys[i + 1..] {
                    prop_assert!(
                        may_share(&self.requests[*a], &self.requests[*b]),
                        "{} held by {} and {}, which may not share",
                        ip,
                        a,
                        b
                    );
                }
            }
        }
        for pool in pools(self.layout) {
            let usage = self.allocator.usage(&pool.name).expect("pool present");
            for family in Family::ALL {
                let addresses: Vec<IpAddr> = (0..24)
                    .map(address)
                    .filter(|ip| Family::of(*ip) == family && pool.contains(*ip))
                    .collect();
                let assigned = addresses
                    .iter()
                    .filter(|ip| by_address.contains_key(ip))
                    .count();
                let available = addresses
                    .iter()
                    .filter(|ip| pool.can_allocate(**ip) && !by_address.contains_key(ip))
                    .count();
                prop_assert_eq!(
                    usage.assigned(family),
                    assigned as u128,
                    "{} {}",
                    pool.name,
                    family
                );
                prop_assert_eq!(
                    usage.available(family),
                    available as u128,
                    "{} {}",
                    pool.name,
                    family
                );
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn no_address_is_ever_held_by_two_services_that_may_not_share_it(
        ops in prop::collection::vec(op(), 1..60)
    ) {
        let mut world = World { allocator: Allocator::new(), layout: 0, requests: BTreeMap::new() };
        world.allocator.set_pools(pools(0));
        for op in ops {
            match &op {
                Op::SetPools(layout) => {
                    world.layout = *layout;
                    world.allocator.set_pools(pools(*layout));
                }
                Op::Assign { service, .. } => {
                    let request = request(&op);
                    let before = world.allocator.assignment(&key(*service)).cloned();
                    match world.allocator.assign(&request) {
                        Ok(assignment) => {
                            prop_assert_eq!(Some(&assignment), world.allocator.assignment(&request.key));
                            if !request.requested.is_empty() {
                                prop_assert_eq!(&assignment.ips, &request.requested);
                            }
                            world.requests.insert(request.key.clone(), request);
                        }
                        Err(_) => prop_assert_eq!(
                            before.as_ref(), world.allocator.assignment(&key(*service)),
                            "a failed assignment must leave the old one in place"
                        ),
                    }
                }
                Op::Restore { service, address: a } => {
                    let mut request = ServiceRequest::new(key(*service));
                    request.families = vec![Family::of(address(*a))];
                    world.allocator.release(&request.key);
                    world.requests.remove(&request.key);
                    if world.allocator.restore(&request, &[address(*a)]).is_ok() {
                        world.requests.insert(request.key.clone(), request);
                    }
                }
                Op::Release(service) => {
                    let released = world.allocator.release(&key(*service));
                    prop_assert_eq!(released.is_some(), world.requests.remove(&key(*service)).is_some());
                }
                Op::Restart => {
                    // A new leader: same pools, every Service restored from its status.
                    let mut fresh = Allocator::new();
                    fresh.set_pools(pools(world.layout));
                    for (key, request) in &world.requests {
                        let held: Assignment = world.allocator.assignment(key).cloned().expect("held");
                        let restored = fresh.restore(request, &held.ips);
                        prop_assert!(restored.is_ok(), "{} could not be restored: {:?}", key, restored);
                        prop_assert_eq!(&restored.expect("ok").ips, &held.ips);
                    }
                    world.allocator = fresh;
                }
            }
            world.check()?;
        }
    }
}
