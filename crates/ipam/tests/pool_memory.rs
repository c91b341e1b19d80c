//! A pool's memory follows its ranges, not its addresses: whole address spaces that avoid
//! buggy addresses cost what a small pool costs. (Before, `avoidBuggyIPs` kept one interval per
//! IPv4 /24, 16.7 million of them for a `0.0.0.0/0`, and the controller ran out of memory on
//! every start.) This binary counts the bytes the heap holds, so it keeps to one test.
//!
//! Counting needs a global allocator, which is `unsafe` to implement (it only forwards).

#![allow(unsafe_code)]

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicUsize, Ordering},
};

use herald_domain::{Family, ServiceKey};
use herald_ipam::{Allocator, Pool, ServiceRequest};

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's guarantees for `layout` are passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

#[test]
fn whole_address_spaces_with_avoid_buggy_ips_take_the_memory_of_a_small_pool() {
    let pools = |addresses: &[&str]| {
        let mut pool = Pool::parse("p", addresses).expect("valid pool");
        pool.avoid_buggy_ips = true;
        vec![pool]
    };
    // What a pool of one /24 takes, with ten Services holding addresses from it.
    let held_by = |pools: Vec<Pool>, family: Family| {
        let before = HELD.load(Ordering::Relaxed);
        let mut allocator = Allocator::new();
        allocator.set_pools(pools);
        for i in 0..10 {
            let request = ServiceRequest {
                families: vec![family],
                ..ServiceRequest::new(ServiceKey::new("default", format!("s{i}")))
            };
            allocator.assign(&request).expect("free address");
        }
        let held = HELD.load(Ordering::Relaxed).saturating_sub(before);
        drop(allocator);
        held
    };
    let small = held_by(pools(&["192.0.2.0/24"]), Family::Ipv4);
    for (addresses, family) in [
        (&["0.0.0.0/0"][..], Family::Ipv4),
        (&["::/0"], Family::Ipv6),
        (&["2001:db8::/64"], Family::Ipv6),
        (&["0.0.0.0/1", "128.0.0.0/1", "::/0"], Family::Ipv4),
    ] {
        let held = held_by(pools(addresses), family);
        assert!(
            held <= 2 * small,
            "a pool of {addresses:?} holds {held} bytes, a /24 {small}"
        );
    }
}
