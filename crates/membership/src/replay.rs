//! Replay protection: every datagram carries, inside what the key authenticates, who sent it,
//! which run of that speaker (its generation) and a sequence number counted per run. A
//! datagram captured on the LAN and sent again later is dropped before the protocol sees it.
//!
//! ```text
//!   envelope = 1 (version) || sender length (1 byte) || sender || run (8 bytes, BE)
//!              || sequence (8 bytes, BE)                                  then the payload
//!
//!   per sender:  run newer than the last seen ──► accepted, the window starts over
//!                run older ──► replayed (a run that has ended never speaks again)
//!                same run: sequence above the highest ──► accepted, window slides
//!                          within the last 64, not seen yet ──► accepted (UDP reorders)
//!                          seen, or 64 or more below the highest ──► replayed
//! ```
//!
//! Runs are ordered by the speaker's generation (its start time in milliseconds), which
//! gossip already relies on to let a restarted speaker win over its previous self. What
//! remains: a receiver that has never heard a sender's run (it started after that run
//! ended) accepts each recorded datagram of that run once; SWIM treats them as stale news
//! and declares the dead sender down again within the detection time
//! (`tests/simulation.rs`). The table holds [`SENDERS`] senders at most; only datagrams that
//! passed authentication reach it, so only key holders can fill it.

use std::collections::HashMap;

/// The version byte of the envelope.
const VERSION: u8 = 1;
/// How far below the highest sequence number a late datagram is still accepted.
pub const WINDOW: u64 = 64;
/// How many senders are remembered; the one heard longest ago is forgotten first.
pub const SENDERS: usize = 1024;

/// Who sent a datagram, in which run, with which sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub sender: &'a str,
    pub run: u64,
    pub sequence: u64,
}

impl Envelope<'_> {
    /// `self` followed by `payload`. A sender name longer than 255 bytes is cut (node names
    /// are at most 253).
    pub fn wrap(&self, payload: &[u8]) -> Vec<u8> {
        let sender = &self.sender.as_bytes()[..self.sender.len().min(255)];
        let mut out = Vec::with_capacity(18 + sender.len() + payload.len());
        out.push(VERSION);
        out.push(sender.len() as u8);
        out.extend_from_slice(sender);
        out.extend_from_slice(&self.run.to_be_bytes());
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }
}

/// The envelope of `data` and the payload after it, if `data` starts with one.
pub fn unwrap(data: &[u8]) -> Option<(Envelope<'_>, &[u8])> {
    let (&version, rest) = data.split_first()?;
    if version != VERSION {
        return None;
    }
    let (&len, rest) = rest.split_first()?;
    let (sender, rest) = rest.split_at_checked(usize::from(len))?;
    let (run, rest) = rest.split_first_chunk::<8>()?;
    let (sequence, payload) = rest.split_first_chunk::<8>()?;
    Some((
        Envelope {
            sender: std::str::from_utf8(sender).ok()?,
            run: u64::from_be_bytes(*run),
            sequence: u64::from_be_bytes(*sequence),
        },
        payload,
    ))
}

/// What a receiver has seen of one sender.
#[derive(Debug, Clone, Copy)]
struct Seen {
    run: u64,
    highest: u64,
    /// Bit `i`: sequence `highest - i` was seen.
    window: u64,
    /// When it was last heard, in datagrams accepted from anyone (for forgetting).
    heard: u64,
}

/// The sequence numbers a receiver has accepted from each sender.
#[derive(Debug, Default)]
pub struct Guard {
    senders: HashMap<String, Seen>,
    accepted: u64,
}

impl Guard {
    /// Whether the datagram of `envelope` is new; if it is, it counts as seen.
    pub fn admit(&mut self, envelope: &Envelope<'_>) -> bool {
        self.accepted += 1;
        let heard = self.accepted;
        let fresh = Seen {
            run: envelope.run,
            highest: envelope.sequence,
            window: 1,
            heard,
        };
        let Some(seen) = self.senders.get_mut(envelope.sender) else {
            if self.senders.len() >= SENDERS {
                self.forget_oldest();
            }
            self.senders.insert(envelope.sender.to_owned(), fresh);
            return true;
        };
        if envelope.run != seen.run {
            if envelope.run < seen.run {
                return false;
            }
            *seen = fresh;
            return true;
        }
        let sequence = envelope.sequence;
        if sequence > seen.highest {
            let shift = sequence - seen.highest;
            seen.window = if shift >= WINDOW {
                1
            } else {
                (seen.window << shift) | 1
            };
            seen.highest = sequence;
        } else {
            let age = seen.highest - sequence;
            if age >= WINDOW || seen.window & (1 << age) != 0 {
                return false;
            }
            seen.window |= 1 << age;
        }
        seen.heard = heard;
        true
    }

    fn forget_oldest(&mut self) {
        if let Some(oldest) = self
            .senders
            .iter()
            .min_by_key(|(_, seen)| seen.heard)
            .map(|(sender, _)| sender.clone())
        {
            self.senders.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(sender: &str, run: u64, sequence: u64) -> Envelope<'_> {
        Envelope {
            sender,
            run,
            sequence,
        }
    }

    #[test]
    fn an_envelope_reads_back_and_junk_does_not_read() {
        let sent = envelope("node-a", 1_700_000_000_000, 42);
        let data = sent.wrap(b"payload");
        assert_eq!(unwrap(&data), Some((sent, &b"payload"[..])));
        assert_eq!(unwrap(&[]), None);
        assert_eq!(unwrap(&data[..10]), None, "cut short");
        let mut other_version = data.clone();
        other_version[0] = 2;
        assert_eq!(unwrap(&other_version), None);
    }

    #[test]
    fn each_datagram_is_accepted_once_and_late_ones_within_the_window() {
        let mut guard = Guard::default();
        assert!(guard.admit(&envelope("a", 5, 10)));
        assert!(!guard.admit(&envelope("a", 5, 10)), "the same again");
        assert!(guard.admit(&envelope("a", 5, 12)));
        assert!(guard.admit(&envelope("a", 5, 11)), "reordered");
        assert!(!guard.admit(&envelope("a", 5, 11)));
        assert!(guard.admit(&envelope("a", 5, 12 + WINDOW - 1)));
        assert!(
            guard.admit(&envelope("a", 5, 13)),
            "63 below: still in the window"
        );
        assert!(guard.admit(&envelope("a", 5, 12 + 2 * WINDOW)));
        assert!(!guard.admit(&envelope("a", 5, 12 + WINDOW)), "64 below");
        assert!(guard.admit(&envelope("b", 5, 10)), "another sender");
    }

    #[test]
    fn a_newer_run_takes_over_and_an_older_one_is_refused() {
        let mut guard = Guard::default();
        assert!(guard.admit(&envelope("a", 5, 1000)));
        assert!(guard.admit(&envelope("a", 6, 1)), "restarted");
        assert!(!guard.admit(&envelope("a", 5, 1001)), "the ended run");
        assert!(guard.admit(&envelope("a", 6, 2)));
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_longest_silent() {
        let mut guard = Guard::default();
        let names: Vec<String> = (0..=SENDERS).map(|i| format!("n{i}")).collect();
        for name in &names {
            assert!(guard.admit(&envelope(name, 1, 1)));
        }
        assert_eq!(guard.senders.len(), SENDERS);
        assert!(!guard.senders.contains_key("n0"), "heard first, forgotten");
        assert!(!guard.admit(&envelope(&names[SENDERS], 1, 1)));
    }
}
