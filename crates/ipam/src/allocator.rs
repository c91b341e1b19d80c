//! The allocator: which Service holds which addresses, and the free addresses of every pool.
//!
//! ```text
//!   set_pools(pools) ──► per pool and family: FreeSet = ranges − buggy − addresses in use
//!   assign(request)  ──► keep what the Service holds if it still fits the request, else
//!                        requested IPs │ shared IP of the same key │ lowest free IP
//!                        from the first pool (in pool order) that can serve the request
//!   restore(request, ips) ──► take what Service status says, refusing double use
//!   release(key)     ──► addresses back to every pool that contains them
//! ```
//!
//! Invariant: an address is held by two Services only when they may share it (same
//! `allow-shared-ip` key, same backend, no common port); an address is free in a pool exactly
//! when the pool may hand it out and nobody holds it.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use herald_domain::{Family, IpFamilyPolicy, Port, ServiceKey};

use crate::{
    AllocationError, Pool, ServiceRequest, SharingConflict,
    free::FreeSet,
    range::{nth_address, number},
    service::Backend,
};

/// What a Service holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// One address per family, in the order of the Service's `ipFamilies`.
    pub ips: Vec<IpAddr>,
    /// The pool the addresses came from; `None` when they are in no current pool (the pool
    /// was edited or deleted while the Service kept its addresses).
    pub pool: Option<String>,
}

/// Assigned and available addresses of a pool, per family. Counts are `u128` so that an IPv6
/// /64 (or larger) pool is counted exactly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolUsage {
    assigned: [u128; 2],
    available: [u128; 2],
}

impl PoolUsage {
    pub fn assigned(&self, family: Family) -> u128 {
        self.assigned[index(family)]
    }

    pub fn available(&self, family: Family) -> u128 {
        self.available[index(family)]
    }
}

/// What [`Allocator::set_pools`] found that the user should know about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolReport {
    /// Pairs of pools (by name, in order) that share addresses.
    pub overlaps: Vec<(String, String)>,
    /// Addresses in use that no pool contains any more, with their holders. They stay with
    /// their Services until the user moves them.
    pub outside_pools: Vec<(IpAddr, Vec<ServiceKey>)>,
}

fn index(family: Family) -> usize {
    match family {
        Family::Ipv4 => 0,
        Family::Ipv6 => 1,
    }
}

#[derive(Debug, Clone)]
struct PoolState {
    pool: Pool,
    free: [FreeSet; 2],
    /// Addresses of the pool that are in use, per family.
    assigned: [u128; 2],
}

impl PoolState {
    fn new(pool: Pool) -> Self {
        let skips_buggy = pool.avoid_buggy_ips;
        // Only IPv4 has buggy addresses.
        let mut free = [FreeSet::new(skips_buggy), FreeSet::new(false)];
        for range in &pool.ranges {
            let (first, last) = range.bounds();
            free[index(range.family())].insert(first, last);
        }
        PoolState {
            pool,
            free,
            assigned: [0, 0],
        }
    }

    fn take(&mut self, ip: IpAddr) {
        if self.pool.contains(ip) {
            self.free[index(Family::of(ip))].remove(number(ip));
            self.assigned[index(Family::of(ip))] += 1;
        }
    }

    fn give_back(&mut self, ip: IpAddr) {
        if self.pool.contains(ip) {
            self.assigned[index(Family::of(ip))] -= 1;
            if self.pool.can_allocate(ip) {
                let n = number(ip);
                self.free[index(Family::of(ip))].insert(n, n);
            }
        }
    }
}

/// What a Service asked for that its holding must keep honouring: the sharing terms, and the
/// pool it named (so that a later request naming another pool moves it, while an edit of the
/// pools never does).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Terms {
    sharing_key: Option<String>,
    /// Sorted (from the request's set); a flat vector, since every held Service keeps one.
    ports: Vec<Port>,
    backend: Backend,
    pool: Option<String>,
}

impl Terms {
    fn of(request: &ServiceRequest) -> Self {
        Terms {
            sharing_key: request.sharing_key.clone(),
            ports: request.ports.iter().cloned().collect(),
            backend: request.backend.clone(),
            pool: request.pool.clone(),
        }
    }

    /// Whether a Service with these terms may join `holder` on one address.
    fn conflict_with(&self, holder: &Terms) -> Option<SharingConflict> {
        let (Some(mine), Some(theirs)) = (&self.sharing_key, &holder.sharing_key) else {
            return Some(if holder.sharing_key.is_none() {
                SharingConflict::HolderDoesNotShare
            } else {
                SharingConflict::RequesterDoesNotShare
            });
        };
        if mine != theirs {
            return Some(SharingConflict::DifferentKey {
                holder: theirs.clone(),
                requester: mine.clone(),
            });
        }
        if self.backend != holder.backend {
            return Some(SharingConflict::DifferentBackend);
        }
        self.ports
            .iter()
            .find(|p| holder.ports.binary_search(p).is_ok())
            .map(|p| SharingConflict::PortClash {
                protocol: p.protocol.clone(),
                port: p.port,
            })
    }
}

#[derive(Debug, Clone)]
struct Holding {
    assignment: Assignment,
    terms: Terms,
}

/// The allocator. Pure: no I/O, no clock; the controller feeds it pools and Services.
#[derive(Debug, Clone, Default)]
pub struct Allocator {
    pools: BTreeMap<String, PoolState>,
    services: HashMap<ServiceKey, Holding>,
    /// Holders of every address in use.
    holders: HashMap<IpAddr, Vec<ServiceKey>>,
    /// Addresses in use per `allow-shared-ip` key (all holders of an address share one key).
    shared: HashMap<String, BTreeSet<IpAddr>>,
}

impl Allocator {
    pub fn new() -> Self {
        Allocator::default()
    }

    /// Replaces the pools. Services keep what they hold, even addresses that are in no pool
    /// any more; those are reported, and become free again only when released.
    pub fn set_pools(&mut self, pools: impl IntoIterator<Item = Pool>) -> PoolReport {
        self.pools = pools
            .into_iter()
            .map(|pool| (pool.name.clone(), PoolState::new(pool)))
            .collect();
        for ip in self.holders.keys() {
            for state in self.pools.values_mut() {
                state.take(*ip);
            }
        }
        let mut report = PoolReport::default();
        let states: Vec<&PoolState> = self.pools.values().collect();
        for (i, a) in states.iter().enumerate() {
            for b in &states[i + 1..] {
                if a.pool.overlaps(&b.pool) {
                    report
                        .overlaps
                        .push((a.pool.name.clone(), b.pool.name.clone()));
                }
            }
        }
        report.outside_pools = self
            .holders
            .iter()
            .filter(|(ip, _)| !self.pools.values().any(|s| s.pool.contains(**ip)))
            .map(|(ip, keys)| (*ip, keys.clone()))
            .collect();
        report.outside_pools.sort();
        report
    }

    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.get(name).map(|s| &s.pool)
    }

    pub fn usage(&self, pool: &str) -> Option<PoolUsage> {
        self.pools.get(pool).map(|s| PoolUsage {
            assigned: s.assigned,
            available: [s.free[0].len(), s.free[1].len()],
        })
    }

    pub fn assignment(&self, key: &ServiceKey) -> Option<&Assignment> {
        self.services.get(key).map(|h| &h.assignment)
    }

    /// Every Service holding addresses.
    pub fn services(&self) -> impl Iterator<Item = &ServiceKey> {
        self.services.keys()
    }

    /// The Services holding `ip`.
    pub fn holders(&self, ip: IpAddr) -> &[ServiceKey] {
        self.holders.get(&ip).map_or(&[], Vec::as_slice)
    }

    /// Gives the Service addresses, or confirms the ones it holds. What it holds is kept while
    /// it still fits the request; a request it no longer fits (new requested IPs, another pool,
    /// a sharing conflict) moves it, and when the move fails the Service keeps what it had.
    pub fn assign(&mut self, request: &ServiceRequest) -> Result<Assignment, AllocationError> {
        let Some(current) = self.services.remove(&request.key) else {
            return self.allocate(request);
        };
        self.unhold(&request.key, &current);
        if self.still_fits(request, &current) {
            let terms = Terms::of(request);
            self.hold(&request.key, terms, current.assignment.clone());
            return Ok(current.assignment);
        }
        self.allocate(request).inspect_err(|_| {
            self.hold(&request.key, current.terms, current.assignment);
        })
    }

    /// Records addresses a Service already has (from its status, when the controller starts),
    /// refusing an address another Service holds unless they may share it.
    pub fn restore(
        &mut self,
        request: &ServiceRequest,
        ips: &[IpAddr],
    ) -> Result<Assignment, AllocationError> {
        let mut terms = Terms::of(request);
        let previous = self.services.remove(&request.key);
        if let Some(previous) = &previous {
            self.unhold(&request.key, previous);
        }
        if let Some(conflict) = ips
            .iter()
            .find_map(|ip| self.check_sharing(*ip, &terms).err())
        {
            // Refused: what the Service held before stays held.
            if let Some(previous) = previous {
                self.hold(&request.key, previous.terms, previous.assignment);
            }
            return Err(conflict);
        }
        let pool = request
            .pool
            .as_ref()
            .filter(|p| {
                self.pools
                    .get(*p)
                    .is_some_and(|s| ips.iter().all(|ip| s.pool.contains(*ip)))
            })
            .cloned()
            .or_else(|| {
                self.ordered_pools()
                    .find(|s| ips.iter().all(|ip| s.pool.contains(*ip)))
                    .map(|s| s.pool.name.clone())
            });
        if pool.is_some() && pool != request.pool {
            // The addresses come from another pool than the one the Service names now (its
            // annotation changed while no controller ran): the next assign moves it.
            terms.pool = None;
        }
        let assignment = Assignment {
            ips: ips.to_vec(),
            pool,
        };
        self.hold(&request.key, terms, assignment.clone());
        Ok(assignment)
    }

    /// Releases what the Service holds; its addresses return to their pools once no other
    /// Service shares them.
    pub fn release(&mut self, key: &ServiceKey) -> Option<Assignment> {
        let holding = self.services.remove(key)?;
        self.unhold(key, &holding);
        Some(holding.assignment)
    }

    fn still_fits(&self, request: &ServiceRequest, current: &Holding) -> bool {
        let (current, held_terms) = (&current.assignment, &current.terms);
        let (families, all_required) = request.wanted_families();
        let held: BTreeSet<Family> = current.ips.iter().map(|ip| Family::of(*ip)).collect();
        let terms = Terms::of(request);
        (request.requested.is_empty()
            || request.requested.iter().collect::<BTreeSet<_>>()
                == current.ips.iter().collect::<BTreeSet<_>>())
            && request.pool == held_terms.pool
            && held.iter().all(|f| families.contains(f))
            && (!all_required || families.iter().all(|f| held.contains(f)))
            && current
                .ips
                .iter()
                .all(|ip| self.check_sharing(*ip, &terms).is_ok())
    }

    fn allocate(&mut self, request: &ServiceRequest) -> Result<Assignment, AllocationError> {
        let terms = Terms::of(request);
        let assignment = if request.requested.is_empty() {
            self.choose_free(request, &terms)?
        } else {
            self.check_requested(request, &terms)?
        };
        self.hold(&request.key, terms, assignment.clone());
        Ok(assignment)
    }

    /// Pools in the order they are tried for Services that name none.
    fn ordered_pools(&self) -> impl Iterator<Item = &PoolState> {
        let mut states: Vec<&PoolState> = self.pools.values().collect();
        states.sort_by(|a, b| a.pool.order_key().cmp(&b.pool.order_key()));
        states.into_iter()
    }

    /// The pools a request may draw from: the one it names, or the auto-assign pools that
    /// serve it, in pool order.
    fn candidate_pools(
        &self,
        request: &ServiceRequest,
        auto_only: bool,
    ) -> Result<Vec<&PoolState>, AllocationError> {
        if let Some(name) = &request.pool {
            return self
                .pools
                .get(name)
                .map(|s| vec![s])
                .ok_or_else(|| AllocationError::UnknownPool { pool: name.clone() });
        }
        Ok(self
            .ordered_pools()
            .filter(|s| !auto_only || s.pool.auto_assign)
            .filter(|s| {
                s.pool.serves(
                    &request.key.namespace,
                    &request.namespace_labels,
                    &request.labels,
                )
            })
            .collect())
    }

    fn check_requested(
        &self,
        request: &ServiceRequest,
        terms: &Terms,
    ) -> Result<Assignment, AllocationError> {
        let (families, _) = request.wanted_families();
        if request.family_policy == IpFamilyPolicy::SingleStack && request.requested.len() > 1 {
            return Err(AllocationError::TooManyRequested {
                count: request.requested.len(),
            });
        }
        for &ip in &request.requested {
            if !families.contains(&Family::of(ip)) {
                return Err(AllocationError::WrongFamily {
                    ip,
                    family: Family::of(ip),
                    wanted: families,
                });
            }
        }
        // Explicitly requested addresses may come from pools that do not auto-assign.
        let candidates = self.candidate_pools(request, false)?;
        let Some(state) = candidates
            .iter()
            .find(|s| request.requested.iter().all(|ip| s.pool.contains(*ip)))
        else {
            let outside = request
                .requested
                .iter()
                .find(|ip| !candidates.iter().any(|s| s.pool.contains(**ip)));
            return Err(match outside {
                Some(&ip) => AllocationError::NotInPool {
                    ip,
                    pool: request.pool.clone(),
                },
                None => AllocationError::SplitAcrossPools {
                    ips: request.requested.clone(),
                },
            });
        };
        for &ip in &request.requested {
            if !state.pool.can_allocate(ip) {
                return Err(AllocationError::BuggyAddress {
                    ip,
                    pool: state.pool.name.clone(),
                });
            }
            self.check_sharing(ip, terms)?;
        }
        let mut ips = request.requested.clone();
        ips.sort_by_key(|ip| families.iter().position(|f| *f == Family::of(*ip)));
        Ok(Assignment {
            ips,
            pool: Some(state.pool.name.clone()),
        })
    }

    fn choose_free(
        &self,
        request: &ServiceRequest,
        terms: &Terms,
    ) -> Result<Assignment, AllocationError> {
        let (families, all_required) = request.wanted_families();
        let candidates = self.candidate_pools(request, true)?;
        if candidates.is_empty() {
            return Err(AllocationError::NoEligiblePool);
        }
        for state in &candidates {
            let ips: Vec<IpAddr> = families
                .iter()
                .filter_map(|&family| {
                    self.shareable_address(state, family, terms).or_else(|| {
                        state.free[index(family)]
                            .lowest()
                            .map(|n| nth_address(family, n))
                    })
                })
                .collect();
            if (all_required && ips.len() == families.len()) || (!all_required && !ips.is_empty()) {
                return Ok(Assignment {
                    ips,
                    pool: Some(state.pool.name.clone()),
                });
            }
        }
        Err(AllocationError::Exhausted {
            families,
            pools: candidates.iter().map(|s| s.pool.name.clone()).collect(),
        })
    }

    /// An address of `state`'s pool already used under the request's sharing key that the
    /// request may join.
    fn shareable_address(
        &self,
        state: &PoolState,
        family: Family,
        terms: &Terms,
    ) -> Option<IpAddr> {
        let key = terms.sharing_key.as_ref()?;
        self.shared
            .get(key)?
            .iter()
            .find(|ip| {
                Family::of(**ip) == family
                    && state.pool.contains(**ip)
                    && self.check_sharing(**ip, terms).is_ok()
            })
            .copied()
    }

    fn check_sharing(&self, ip: IpAddr, terms: &Terms) -> Result<(), AllocationError> {
        for holder in self.holders(ip) {
            let Some(holding) = self.services.get(holder) else {
                continue;
            };
            if let Some(conflict) = terms.conflict_with(&holding.terms) {
                return Err(AllocationError::InUse {
                    ip,
                    holder: holder.clone(),
                    conflict,
                });
            }
        }
        Ok(())
    }

    fn hold(&mut self, key: &ServiceKey, terms: Terms, assignment: Assignment) {
        for &ip in &assignment.ips {
            let holders = self.holders.entry(ip).or_default();
            if holders.is_empty() {
                for state in self.pools.values_mut() {
                    state.take(ip);
                }
            }
            holders.push(key.clone());
            if let Some(sharing_key) = &terms.sharing_key {
                self.shared
                    .entry(sharing_key.clone())
                    .or_default()
                    .insert(ip);
            }
        }
        self.services
            .insert(key.clone(), Holding { assignment, terms });
    }

    /// Removes `key` from the holders of its addresses, freeing those nobody else holds.
    fn unhold(&mut self, key: &ServiceKey, holding: &Holding) {
        for &ip in &holding.assignment.ips {
            let Some(holders) = self.holders.get_mut(&ip) else {
                continue;
            };
            holders.retain(|k| k != key);
            if holders.is_empty() {
                self.holders.remove(&ip);
                for state in self.pools.values_mut() {
                    state.give_back(ip);
                }
                if let Some(sharing_key) = &holding.terms.sharing_key
                    && let Some(ips) = self.shared.get_mut(sharing_key)
                {
                    ips.remove(&ip);
                    if ips.is_empty() {
                        self.shared.remove(sharing_key);
                    }
                }
            }
        }
    }
}
