//! How many datagrams each source may have checked per second, before any work is spent on
//! them: checking a datagram's HMAC is the costliest thing the gossip does per datagram, and it
//! runs on the speaker's one thread, beside the loop that answers ARP and keeps BGP sessions.
//! A flood from one address (a misbehaving host on the segment, another cluster's speakers)
//! is cut down to [`PER_SECOND`] checks a second, so it cannot starve the probes of the
//! others and get healthy speakers declared dead.
//!
//! ```text
//!   datagram from S ── S's bucket has a token? ── yes ──► HMAC, foca
//!                                               └─ no ──► dropped (counted: rate_limited)
//!   buckets: one per source, refilled at PER_SECOND up to BURST; at most SOURCES of them,
//!   the idlest forgotten first; sources beyond that share one bucket
//! ```
//!
//! A speaker sends another a few dozen datagrams a second at most (probes, indirect probes,
//! announces), far below the budget. A flood that forges a speaker's own address takes that
//! speaker's budget too: no per-datagram check can tell the two apart before the HMAC.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

/// Datagrams a second each source may have checked.
pub const PER_SECOND: u32 = 1_000;
/// How many may come at once after a quiet spell.
pub const BURST: u32 = 1_000;
/// How many sources get buckets of their own.
const SOURCES: usize = 1_024;

/// One source's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    fn full(now: Instant) -> Self {
        Bucket {
            tokens: f64::from(BURST),
            refilled: now,
        }
    }

    /// Refills for the time since the last call, then takes a token if there is one.
    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(PER_SECOND)).min(f64::from(BURST));
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The buckets of the sources heard from.
#[derive(Debug)]
pub struct Budgets {
    buckets: HashMap<IpAddr, Bucket>,
    /// Shared by the sources that found no room for a bucket of their own.
    overflow: Bucket,
    /// When idle buckets were last forgotten (at most once a second: a flood of forged
    /// sources must not cost a sweep per datagram).
    swept: Instant,
}

impl Budgets {
    pub fn new(now: Instant) -> Self {
        Budgets {
            buckets: HashMap::new(),
            overflow: Bucket::full(now),
            swept: now,
        }
    }

    /// Whether a datagram from `source` may be checked now.
    pub fn admit(&mut self, source: IpAddr, now: Instant) -> bool {
        if let Some(bucket) = self.buckets.get_mut(&source) {
            return bucket.take(now);
        }
        // Buckets idle long enough to be full again hold nothing worth keeping.
        let full_after = Duration::from_secs_f64(f64::from(BURST) / f64::from(PER_SECOND));
        if self.buckets.len() >= SOURCES && now.saturating_duration_since(self.swept) >= full_after
        {
            self.buckets
                .retain(|_, b| now.saturating_duration_since(b.refilled) < full_after);
            self.swept = now;
        }
        if self.buckets.len() >= SOURCES {
            return self.overflow.take(now);
        }
        let mut bucket = Bucket::full(now);
        let admitted = bucket.take(now);
        self.buckets.insert(source, bucket);
        admitted
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    #[test]
    fn a_flooding_source_is_cut_to_its_budget_and_others_keep_theirs() {
        let start = Instant::now();
        let mut budgets = Budgets::new(start);
        // 100,000 datagrams over one second from one source, 30 from a speaker.
        let mut admitted = 0;
        for i in 0..100_000u32 {
            let now = start + Duration::from_micros(u64::from(i) * 10);
            admitted += u32::from(budgets.admit(ip(66), now));
            if i % 3_333 == 0 {
                assert!(budgets.admit(ip(1), now), "the speaker's datagram {i}");
            }
        }
        assert!(
            (BURST..=BURST + PER_SECOND + 1).contains(&admitted),
            "{admitted} admitted"
        );
    }

    #[test]
    fn a_quiet_source_gets_its_burst_back() {
        let start = Instant::now();
        let mut budgets = Budgets::new(start);
        let taken = (0..2 * BURST)
            .filter(|_| budgets.admit(ip(66), start))
            .count();
        assert_eq!(taken, BURST as usize);
        let later = start + Duration::from_secs(1);
        let taken = (0..2 * BURST)
            .filter(|_| budgets.admit(ip(66), later))
            .count();
        assert_eq!(taken, BURST as usize);
    }

    #[test]
    fn forged_sources_beyond_the_table_share_one_bucket_and_known_ones_keep_theirs() {
        let start = Instant::now();
        let mut budgets = Budgets::new(start);
        assert!(budgets.admit(ip(1), start));
        let mut forged = 0;
        for i in 0..(4 * SOURCES as u32) {
            let source = IpAddr::V4(Ipv4Addr::from(0xc633_6400 + i));
            forged += u32::from(budgets.admit(source, start));
        }
        assert!(budgets.buckets.len() <= SOURCES);
        assert!(forged <= SOURCES as u32 + BURST, "{forged}");
        assert!(
            budgets.admit(ip(1), start),
            "the known source still has tokens"
        );
        // Two seconds on, idle buckets are forgotten and new sources get their own again.
        let later = start + Duration::from_secs(2);
        assert!(budgets.admit(ip(1), later));
        assert!(budgets.admit(ip(200), later));
        assert!(budgets.buckets.len() <= 2, "{}", budgets.buckets.len());
    }
}
