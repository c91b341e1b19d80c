//! Allocation cost: 100k allocations from an IPv6 /64, and the cost of one allocation as the
//! number of Services already holding addresses grows from 1k to 100k, and setting up pools
//! that span whole address spaces with `avoidBuggyIPs`.
//!
//! `cargo bench -p herald-ipam --bench allocate`

use std::{hint::black_box, time::Duration};

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use herald_domain::{Family, ServiceKey};
use herald_ipam::{Allocator, Pool, ServiceRequest};

fn v6_request(i: usize) -> ServiceRequest {
    ServiceRequest {
        families: vec![Family::Ipv6],
        ..ServiceRequest::new(ServiceKey::new("bench", format!("svc-{i}")))
    }
}

fn slash_64() -> Allocator {
    let mut allocator = Allocator::new();
    allocator.set_pools([Pool::parse("v6", &["2001:db8:1::/64"]).expect("valid")]);
    allocator
}

fn hundred_thousand_from_a_slash_64(c: &mut Criterion) {
    let mut group = c.benchmark_group("ipv6 /64");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.bench_function("100k allocations", |b| {
        b.iter_batched(
            || (slash_64(), (0..100_000).map(v6_request).collect::<Vec<_>>()),
            |(mut allocator, requests)| {
                for request in &requests {
                    black_box(allocator.assign(request).expect("a /64 has room"));
                }
                allocator
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

fn one_allocation_as_services_grow(c: &mut Criterion) {
    let mut group = c.benchmark_group("one allocation with N Services holding addresses");
    for held in [1_000, 10_000, 100_000] {
        let mut allocator = slash_64();
        for i in 0..held {
            allocator.assign(&v6_request(i)).expect("a /64 has room");
        }
        // Every other address released: the free set is as fragmented as it gets.
        for i in (0..held).step_by(2) {
            allocator.release(&v6_request(i).key);
        }
        let request = v6_request(usize::MAX);
        group.bench_with_input(BenchmarkId::from_parameter(held), &held, |b, _| {
            b.iter(|| {
                black_box(allocator.assign(&request).expect("room"));
                allocator.release(&request.key);
            });
        });
    }
    group.finish();
}

fn whole_address_spaces_avoiding_buggy_ips(c: &mut Criterion) {
    let mut everything = Pool::parse("all", &["0.0.0.0/0", "::/0"]).expect("valid");
    everything.avoid_buggy_ips = true;
    c.bench_function("set up 0.0.0.0/0 + ::/0 with avoidBuggyIPs", |b| {
        b.iter(|| {
            let mut allocator = Allocator::new();
            allocator.set_pools([everything.clone()]);
            allocator
        });
    });
}

criterion_group!(
    benches,
    hundred_thousand_from_a_slash_64,
    one_allocation_as_services_grow,
    whole_address_spaces_avoiding_buggy_ips
);
criterion_main!(benches);
