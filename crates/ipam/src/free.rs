//! The free addresses of one pool and family, kept as disjoint intervals so that taking the
//! lowest free address, taking a given one and giving one back each cost O(log n) in the
//! number of intervals, however large the pool (an IPv6 /64 is two to the 64 addresses).
//!
//! A pool that avoids buggy addresses (`avoidBuggyIPs`: IPv4 `.0` and `.255`) keeps its ranges
//! whole: an interval may span such addresses, which are simply not members. So the number of
//! intervals follows the number of ranges and of addresses in use, never the size of the pool
//! (a `0.0.0.0/0` is one interval, not one per /24).

use std::collections::BTreeMap;

use crate::range::is_buggy_v4;

/// A set of addresses (numbers within one family) as sorted, disjoint, non-adjacent intervals.
/// Every interval holds at least one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FreeSet {
    /// first -> last, both included.
    intervals: BTreeMap<u128, u128>,
    /// How many addresses the set holds, saturating at `u128::MAX`.
    len: u128,
    /// Whether IPv4 `.0` and `.255` addresses are left out of every interval.
    skips_buggy: bool,
}

impl FreeSet {
    /// An empty set; with `skips_buggy`, IPv4 `.0` and `.255` addresses are never members.
    pub(crate) fn new(skips_buggy: bool) -> Self {
        FreeSet {
            intervals: BTreeMap::new(),
            len: 0,
            skips_buggy,
        }
    }

    pub(crate) fn len(&self) -> u128 {
        self.len
    }

    pub(crate) fn lowest(&self) -> Option<u128> {
        // Every interval holds a member, so its lowest member is inside it.
        self.intervals
            .keys()
            .next()
            .map(|&first| self.lowest_member_from(first))
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, n: u128) -> bool {
        self.is_member(n) && self.interval_holding(n).is_some()
    }

    /// How many intervals the set keeps (what its memory follows).
    #[cfg(test)]
    pub(crate) fn interval_count(&self) -> usize {
        self.intervals.len()
    }

    fn is_member(&self, n: u128) -> bool {
        !(self.skips_buggy && is_buggy_v4(n))
    }

    /// The lowest member at or above `n`, which skips at most two addresses.
    fn lowest_member_from(&self, n: u128) -> u128 {
        if !self.skips_buggy {
            return n;
        }
        match n & 0xff {
            0 => n + 1,
            0xff => n + 2,
            _ => n,
        }
    }

    /// How many members `first..=last` holds.
    fn members(&self, first: u128, last: u128) -> u128 {
        let all = (last - first).saturating_add(1);
        if !self.skips_buggy {
            return all;
        }
        // Buggy numbers in 0..=m: the .0 ones, then the .255 ones (IPv4 numbers, so m + 1
        // cannot overflow).
        let buggy_to = |m: u128| (m >> 8) + 1 + ((m + 1) >> 8);
        let buggy = buggy_to(last) - first.checked_sub(1).map_or(0, buggy_to);
        all - buggy
    }

    fn interval_holding(&self, n: u128) -> Option<(u128, u128)> {
        self.intervals
            .range(..=n)
            .next_back()
            .filter(|&(_, &last)| last >= n)
            .map(|(&first, &last)| (first, last))
    }

    /// Adds the members of `first..=last`, merging with whatever it overlaps or touches.
    pub(crate) fn insert(&mut self, mut first: u128, mut last: u128) {
        if self.members(first, last) == 0 {
            return;
        }
        if let Some((&before, &before_last)) = self.intervals.range(..=first).next_back()
            && before_last.saturating_add(1) >= first
        {
            if before_last >= last {
                return;
            }
            first = before;
            self.take_interval(before);
        }
        while let Some((&next, &next_last)) = self.intervals.range(first..).next() {
            if next > last.saturating_add(1) {
                break;
            }
            last = last.max(next_last);
            self.take_interval(next);
        }
        self.put_interval(first, last);
    }

    /// Removes `n`; returns whether it was there.
    pub(crate) fn remove(&mut self, n: u128) -> bool {
        if !self.is_member(n) {
            return false;
        }
        let Some((first, last)) = self.interval_holding(n) else {
            return false;
        };
        self.take_interval(first);
        // What is left on either side stays only if it still holds a member.
        if first < n && self.members(first, n - 1) > 0 {
            self.put_interval(first, n - 1);
        }
        if n < last && self.members(n + 1, last) > 0 {
            self.put_interval(n + 1, last);
        }
        true
    }

    fn take_interval(&mut self, first: u128) {
        if let Some(last) = self.intervals.remove(&first) {
            self.len = self.len.saturating_sub(self.members(first, last));
        }
    }

    fn put_interval(&mut self, first: u128, last: u128) {
        self.intervals.insert(first, last);
        self.len = self.len.saturating_add(self.members(first, last));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn taking_and_giving_back_keeps_the_intervals_merged() {
        let mut set = FreeSet::new(false);
        set.insert(10, 20);
        assert!(set.remove(10));
        assert!(set.remove(15));
        assert!(!set.remove(15));
        assert_eq!(set.len(), 9);
        assert_eq!(set.lowest(), Some(11));
        set.insert(15, 15);
        set.insert(10, 10);
        assert_eq!(set.intervals, BTreeMap::from([(10, 20)]));
        assert_eq!(set.len(), 11);
    }

    #[test]
    fn the_whole_u128_space_does_not_overflow() {
        let mut set = FreeSet::new(false);
        set.insert(0, u128::MAX);
        assert_eq!(set.len(), u128::MAX);
        assert!(set.remove(u128::MAX));
        assert!(set.remove(0));
        assert_eq!(set.lowest(), Some(1));
    }

    #[test]
    fn a_whole_ipv4_space_without_buggy_addresses_is_one_interval() {
        let mut set = FreeSet::new(true);
        set.insert(0, u128::from(u32::MAX));
        assert_eq!(set.interval_count(), 1);
        // 2^24 /24 blocks, each without its .0 and .255.
        assert_eq!(set.len(), (1 << 32) - 2 * (1 << 24));
        for expected in [1, 2, 3] {
            let lowest = set.lowest().expect("free");
            assert_eq!(lowest, expected);
            assert!(set.remove(lowest));
        }
        // 0.0.1.0 is not a member, so taking 0.0.0.254 leaves no member below 0.0.1.1.
        set.remove(0x0100 - 2);
        assert!(!set.remove(0x0100));
        assert_eq!(set.len(), (1 << 32) - 2 * (1 << 24) - 4);
        assert_eq!(set.interval_count(), 2);
        set.insert(0, 0x0200);
        assert_eq!(set.interval_count(), 1);
        assert_eq!(set.len(), (1 << 32) - 2 * (1 << 24));
    }

    proptest! {
        /// The interval set behaves exactly like a plain set of numbers.
        /// With `skips_buggy`, the model simply never holds a `.0` or `.255`.
        #[test]
        fn behaves_like_a_plain_set(
            skips_buggy in any::<bool>(),
            ops in prop::collection::vec((any::<bool>(), 0u128..1100, 0u128..300), 0..200),
        ) {
            let mut set = FreeSet::new(skips_buggy);
            let mut model = BTreeSet::new();
            let member = |n: &u128| !(skips_buggy && is_buggy_v4(*n));
            for (insert, n, width) in ops {
                if insert {
                    set.insert(n, n + width);
                    model.extend((n..=n + width).filter(member));
                } else {
                    prop_assert_eq!(set.remove(n), model.remove(&n));
                }
                prop_assert_eq!(set.len(), model.len() as u128);
                prop_assert_eq!(set.lowest(), model.first().copied());
                // Disjoint and not adjacent: otherwise they would have been merged.
                // Each holds a member (checked at the end).
                let intervals: Vec<_> = set.intervals.iter().map(|(&a, &b)| (a, b)).collect();
                for pair in intervals.windows(2) {
                    prop_assert!(pair[0].1 + 1 < pair[1].0, "{:?}", intervals);
                }
            }
            for (&first, &last) in &set.intervals {
                prop_assert!(model.range(first..=last).next().is_some(), "{}..={} holds no member", first, last);
            }
            for n in 0..1500 {
                prop_assert_eq!(set.contains(n), model.contains(&n));
            }
        }
    }
}
