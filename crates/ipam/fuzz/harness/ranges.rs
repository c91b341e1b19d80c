//! The harness of the `ranges` fuzz target, shared with the proptest that runs it on every
//! `tests/run` (`crates/ipam/tests/ranges.rs`): the texts of a pool's `spec.addresses`, one
//! a line, as a user may write them (CIDRs, `a-b` ranges, spaces, garbage).
//!
//! Checked: parsing never panics; a pool that parses has ranges whose first address is not
//! after their last, that print and parse back to themselves, contain both ends, do not
//! overlap each other, and (with `avoidBuggyIPs`) allocate exactly their non-buggy ends.

use std::net::IpAddr;

use herald_ipam::{IpRange, Pool};

/// Runs one input; panics when a property fails.
pub(crate) fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.lines().collect();
    let Ok(mut pool) = Pool::parse("fuzz", &lines) else {
        return;
    };
    for (i, range) in pool.ranges.iter().enumerate() {
        assert_eq!(
            range.first().is_ipv4(),
            range.last().is_ipv4(),
            "{range}: one family"
        );
        assert!(range.first() <= range.last(), "{range}: first after last");
        let printed: IpRange = range
            .to_string()
            .parse()
            .unwrap_or_else(|e| panic!("{range} does not parse back: {e}"));
        assert_eq!(&printed, range);
        assert!(range.contains(range.first()) && range.contains(range.last()));
        for other in &pool.ranges[i + 1..] {
            assert!(!range.overlaps(other), "{range} overlaps {other}");
        }
    }
    pool.avoid_buggy_ips = true;
    for end in pool.ranges.iter().flat_map(|r| [r.first(), r.last()]) {
        let buggy = matches!(end, IpAddr::V4(v4) if matches!(v4.octets()[3], 0 | 255));
        assert_eq!(pool.can_allocate(end), !buggy, "{end} with avoidBuggyIPs");
    }
}
