//! # herald-ipam: the IP allocator
//!
//! Gives each Service of `type: LoadBalancer` addresses from `IPAddressPool`s, and never gives
//! one address to two Services unless they may share it. Pure: no Kubernetes client, no async
//! runtime, no clock. The controller builds [`Pool`]s and [`ServiceRequest`]s from the API
//! objects, feeds them to an [`Allocator`], and writes back what it answers.
//!
//! ```text
//!   IPAddressPool specs ──► Pool::parse ──► Allocator::set_pools ──► PoolReport (overlaps,
//!                                                 │                  addresses outside pools)
//!   Service ──► ServiceRequest ──► assign / restore / release ──► Assignment or
//!                                                 │                 AllocationError (the reason)
//!                                                 └──► usage(pool): assigned / available
//! ```
//!
//! Which pool, in this order:
//! 1. the pool named by the Service's `address-pool` annotation, and only that one;
//! 2. otherwise the auto-assign pools whose `serviceAllocation` admits the Service: first those
//!    with a priority (lowest number first), then those with a `serviceAllocation` but no
//!    priority, then unrestricted pools; ties broken by pool name.
//!
//! Requested addresses (`spec.loadBalancerIP`, the `loadBalancerIPs` annotation) must lie in
//! one such pool (auto-assign or not). Otherwise a Service with an `allow-shared-ip` key first
//! joins an address already used under that key, then takes the lowest free address.
//!
//! Cost: the free addresses of each pool and family are kept as intervals (module `free`), so an
//! allocation costs O(pools × log intervals), never a scan of the pool: an IPv6 /64 pool is as
//! cheap as a /28.

mod allocator;
mod error;
mod free;
mod pool;
mod range;
mod service;

pub use allocator::{Allocator, Assignment, PoolReport, PoolUsage};
pub use error::{AllocationError, SharingConflict};
pub use pool::{Pool, PoolError, ServiceAllocation};
pub use range::{IpRange, RangeError};
pub use service::{Backend, ServiceRequest};
