//! What one speaker knows of the others, and whether it must step back from layer 2.
//!
//! A speaker gossips with those that share its key ([`Members::live`]) and hears, without
//! being able to authenticate them, those that do not ([`Members::unauthenticated`]: nodes
//! whose gossip address sent datagrams that failed authentication lately). A wrong key, or a
//! rotation half done, would otherwise split the cluster: each group thinks the others dead
//! and claims their addresses, so two nodes answer for one address. Instead the smaller
//! group steps back (answers for nothing in layer 2) while the larger is heard:
//!
//! ```text
//!   live {n1}       unauthenticated {n2, n3}   1 < 2        n1 steps back
//!   live {n2, n3}   unauthenticated {n1}       2 > 1        n2, n3 own every address
//!   live {n1}       unauthenticated {n2}       1 = 1, tie   the group without the first
//!                                                           name (n2's) steps back
//! ```
//!
//! Every speaker judges from what it hears, so the two sides agree without talking. A group
//! stepped back takes over again once the others fall silent for
//! [`crate::driver::UNAUTHENTICATED_WINDOW`].

use std::collections::BTreeSet;

/// The speakers one speaker knows of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members {
    /// Nodes whose speakers are alive and share this one's key, this one included.
    pub live: BTreeSet<String>,
    /// Nodes (among those expected to run a speaker) whose gossip failed authentication
    /// lately and that are not live.
    pub unauthenticated: BTreeSet<String>,
    /// The fingerprints of the keys this speaker opens gossip with, the one it seals with
    /// first ([`crate::Keyring::fingerprints`]): what it reports, so a rotation can be
    /// followed.
    pub keys: Vec<String>,
}

impl Members {
    /// Whether this speaker's group is outvoted by the speakers it hears but cannot
    /// authenticate: fewer of them, or as many without the first node name.
    pub fn outvoted(&self) -> bool {
        let others: BTreeSet<&String> = self
            .unauthenticated
            .iter()
            .filter(|node| !self.live.contains(*node))
            .collect();
        match self.live.len().cmp(&others.len()) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Greater => false,
            std::cmp::Ordering::Equal => others.first().copied() < self.live.first(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(live: &[&str], unauthenticated: &[&str]) -> Members {
        Members {
            live: live.iter().map(|n| (*n).to_owned()).collect(),
            unauthenticated: unauthenticated.iter().map(|n| (*n).to_owned()).collect(),
            keys: Vec::new(),
        }
    }

    #[test]
    fn the_smaller_group_steps_back_and_the_larger_keeps_its_addresses() {
        assert!(members(&["n1"], &["n2", "n3"]).outvoted());
        assert!(!members(&["n2", "n3"], &["n1"]).outvoted());
        assert!(!members(&["n1", "n2", "n3"], &[]).outvoted(), "one key");
        assert!(!members(&["n1"], &[]).outvoted(), "alone and unheard");
    }

    #[test]
    fn a_tie_is_broken_by_the_first_node_name_the_same_way_on_both_sides() {
        let (a, b) = (members(&["n1"], &["n2"]), members(&["n2"], &["n1"]));
        assert!(!a.outvoted());
        assert!(b.outvoted());
        let (a, b) = (
            members(&["a", "z"], &["b", "c"]),
            members(&["b", "c"], &["a", "z"]),
        );
        assert_ne!(a.outvoted(), b.outvoted(), "exactly one side steps back");
    }

    #[test]
    fn a_node_both_live_and_rejected_counts_as_live() {
        // A restarted speaker's old datagrams may still fail while its new self is live.
        assert!(!members(&["n1", "n2"], &["n2"]).outvoted());
    }
}
