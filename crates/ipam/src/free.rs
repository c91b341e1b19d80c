//! The free addresses of one pool and family, kept as disjoint intervals so that taking the
//! lowest free address, taking a given one and giving one back each cost O(log n) in the
//! number of intervals, however large the pool (an IPv6 /64 is two to the 64 addresses).

use std::collections::BTreeMap;

/// A set of addresses (numbers within one family) as sorted, disjoint, non-adjacent intervals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FreeSet {
    /// first -> last, both included.
    intervals: BTreeMap<u128, u128>,
    /// How many addresses the set holds, saturating at `u128::MAX`.
    len: u128,
}

impl FreeSet {
    pub(crate) fn len(&self) -> u128 {
        self.len
    }

    pub(crate) fn lowest(&self) -> Option<u128> {
        self.intervals.keys().next().copied()
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, n: u128) -> bool {
        self.interval_holding(n).is_some()
    }

    fn interval_holding(&self, n: u128) -> Option<(u128, u128)> {
        self.intervals
            .range(..=n)
            .next_back()
            .filter(|&(_, &last)| last >= n)
            .map(|(&first, &last)| (first, last))
    }

    /// Adds `first..=last`, merging with whatever it overlaps or touches.
    pub(crate) fn insert(&mut self, mut first: u128, mut last: u128) {
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
        self.intervals.insert(first, last);
        self.len = self.len.saturating_add((last - first).saturating_add(1));
    }

    /// Removes `n`; returns whether it was there.
    pub(crate) fn remove(&mut self, n: u128) -> bool {
        let Some((first, last)) = self.interval_holding(n) else {
            return false;
        };
        self.take_interval(first);
        if first < n {
            self.put_interval(first, n - 1);
        }
        if n < last {
            self.put_interval(n + 1, last);
        }
        true
    }

    fn take_interval(&mut self, first: u128) {
        if let Some(last) = self.intervals.remove(&first) {
            self.len = self.len.saturating_sub((last - first).saturating_add(1));
        }
    }

    fn put_interval(&mut self, first: u128, last: u128) {
        self.intervals.insert(first, last);
        self.len = self.len.saturating_add((last - first).saturating_add(1));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn taking_and_giving_back_keeps_the_intervals_merged() {
        let mut set = FreeSet::default();
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
        let mut set = FreeSet::default();
        set.insert(0, u128::MAX);
        assert_eq!(set.len(), u128::MAX);
        assert!(set.remove(u128::MAX));
        assert!(set.remove(0));
        assert_eq!(set.lowest(), Some(1));
    }

    proptest! {
        /// The interval set behaves exactly like a plain set of numbers.
        #[test]
        fn behaves_like_a_plain_set(ops in prop::collection::vec((any::<bool>(), 0u128..64, 0u128..8), 0..200)) {
            let mut set = FreeSet::default();
            let mut model = BTreeSet::new();
            for (insert, n, width) in ops {
                if insert {
                    set.insert(n, n + width);
                    model.extend(n..=n + width);
                } else {
                    prop_assert_eq!(set.remove(n), model.remove(&n));
                }
                prop_assert_eq!(set.len(), model.len() as u128);
                prop_assert_eq!(set.lowest(), model.first().copied());
                // Disjoint and not adjacent: otherwise they would have been merged.
                let intervals: Vec<_> = set.intervals.iter().map(|(&a, &b)| (a, b)).collect();
                for pair in intervals.windows(2) {
                    prop_assert!(pair[0].1 + 1 < pair[1].0, "{:?}", intervals);
                }
            }
            for n in 0..80 {
                prop_assert_eq!(set.contains(n), model.contains(&n));
            }
        }
    }
}
