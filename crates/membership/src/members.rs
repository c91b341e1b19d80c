//! What one speaker knows of the others, and whether it must step back from layer 2.
//!
//! A speaker gossips with those that share its key ([`Members::live`]). It also knows of
//! speakers alive that it does not gossip with:
//! - those it hears without being able to authenticate them ([`Members::unauthenticated`]:
//!   nodes whose gossip address sent datagrams that failed authentication lately), when a key
//!   is wrong or a rotation half done;
//! - those that renew their heartbeat Lease through the API server ([`Members::heartbeating`],
//!   [`crate::heartbeats`]) but whose gossip does not reach it: a partition of the network
//!   between nodes that all still reach the API server (a firewall rule, a VLAN or switch
//!   fault), or a speaker that died within the Lease's expiry.
//!
//! Either would otherwise split the cluster: each group thinks the others dead and claims
//! their addresses, so two nodes answer for one address. Instead the smaller group steps back
//! (answers for nothing in layer 2) while the larger is known alive:
//!
//! ```text
//!   live {n1}       others {n2, n3}   1 < 2        n1 steps back
//!   live {n2, n3}   others {n1}       2 > 1        n2, n3 own every address
//!   live {n1}       others {n2}       1 = 1, tie   the group without the first name (n2's)
//!                                                  steps back
//! ```
//!
//! Every speaker judges from what it knows, and both sides know the same, so they agree
//! without talking. A group stepped back takes over again once the others fall silent for
//! [`crate::driver::UNAUTHENTICATED_WINDOW`] and their heartbeats expire
//! ([`crate::heartbeats::EXPIRES_AFTER`]). The cost: when most speakers die at once, the
//! survivors wait for the dead ones' heartbeats to expire before they take over.

use std::collections::BTreeSet;

/// The speakers one speaker knows of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members {
    /// Nodes whose speakers are alive and share this one's key, this one included.
    pub live: BTreeSet<String>,
    /// Nodes (among those expected to run a speaker) whose gossip failed authentication
    /// lately and that are not live.
    pub unauthenticated: BTreeSet<String>,
    /// Nodes (among those expected to run a speaker) whose speakers renew their heartbeat
    /// Lease, this one's included: alive, whether gossip hears them or not. Filled in by the
    /// speaker from the API; empty when the API server is out of reach (then gossip alone
    /// decides).
    pub heartbeating: BTreeSet<String>,
    /// The fingerprints of the keys this speaker opens gossip with, the one it seals with
    /// first ([`crate::Keyring::fingerprints`]): what it reports, so a rotation can be
    /// followed.
    pub keys: Vec<String>,
}

impl Members {
    /// Speakers known alive that this one does not gossip with: heard with another key, or
    /// renewing their heartbeat but not heard at all.
    pub fn others(&self) -> BTreeSet<&String> {
        self.unauthenticated
            .iter()
            .chain(&self.heartbeating)
            .filter(|node| !self.live.contains(*node))
            .collect()
    }

    /// Speakers that renew their heartbeat but whose gossip does not reach this one at all
    /// (not even with another key): cut off from it by the network.
    pub fn unreachable(&self) -> BTreeSet<&String> {
        self.heartbeating
            .iter()
            .filter(|node| !self.live.contains(*node) && !self.unauthenticated.contains(*node))
            .collect()
    }

    /// Whether this speaker's group is outvoted by the speakers known alive that it does not
    /// gossip with ([`Members::others`]): fewer of them, or as many without the first node
    /// name.
    pub fn outvoted(&self) -> bool {
        let others = self.others();
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

    fn names(nodes: &[&str]) -> BTreeSet<String> {
        nodes.iter().map(|n| (*n).to_owned()).collect()
    }

    fn members(live: &[&str], unauthenticated: &[&str]) -> Members {
        Members {
            live: names(live),
            unauthenticated: names(unauthenticated),
            ..Members::default()
        }
    }

    fn partitioned(live: &[&str], heartbeating: &[&str]) -> Members {
        Members {
            live: names(live),
            heartbeating: names(heartbeating),
            ..Members::default()
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

    #[test]
    fn in_a_partition_the_smaller_side_steps_back_and_the_larger_keeps_serving() {
        let all = ["n1", "n2", "n3"];
        let minority = partitioned(&["n1"], &all);
        let majority = partitioned(&["n2", "n3"], &all);
        assert!(minority.outvoted());
        assert!(!majority.outvoted());
        assert_eq!(
            minority.unreachable(),
            names(&["n2", "n3"]).iter().collect()
        );
        assert_eq!(majority.unreachable(), names(&["n1"]).iter().collect());
        // Two against two: exactly one side steps back.
        let all = ["n1", "n2", "n3", "n4"];
        let (a, b) = (
            partitioned(&["n1", "n4"], &all),
            partitioned(&["n2", "n3"], &all),
        );
        assert_ne!(a.outvoted(), b.outvoted());
    }

    #[test]
    fn a_node_that_died_is_taken_over_at_once_unless_it_was_most_of_the_cluster() {
        // n3 died; its heartbeat has not expired yet.
        assert!(!partitioned(&["n1", "n2"], &["n1", "n2", "n3"]).outvoted());
        // n2 and n3 died at once: n1 waits for their heartbeats to expire...
        assert!(partitioned(&["n1"], &["n1", "n2", "n3"]).outvoted());
        // ...and then takes over.
        assert!(!partitioned(&["n1"], &["n1"]).outvoted());
        // The API out of reach: no heartbeats known, gossip alone decides.
        assert!(!partitioned(&["n1"], &[]).outvoted());
    }

    #[test]
    fn a_node_heard_with_another_key_and_heartbeating_counts_once() {
        let members = Members {
            live: names(&["n1", "n2"]),
            unauthenticated: names(&["n3"]),
            heartbeating: names(&["n1", "n2", "n3"]),
            ..Members::default()
        };
        assert_eq!(members.others().len(), 1);
        assert!(members.unreachable().is_empty());
        assert!(!members.outvoted());
    }
}
