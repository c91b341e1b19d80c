//! The sans-IO membership of one speaker: foca's SWIM machine with authenticated datagrams,
//! replays dropped ([`crate::replay`]), and the set of live nodes derived from it.

use std::{collections::BTreeSet, net::SocketAddr, num::NonZeroU32, time::Duration};

use foca::{AccumulatingRuntime, Foca, Identity, NoCustomBroadcast, PostcardCodec, Timer};
use rand::{SeedableRng, rngs::SmallRng};
use serde::{Deserialize, Serialize};

use crate::{
    auth::Keyring,
    replay::{self, Envelope, Guard},
};

/// A speaker as the cluster knows it: its node, where it listens, and which run of it this
/// is (a restarted speaker has a higher generation, so it rejoins at once instead of waiting
/// for its old self to be forgotten).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Speaker {
    pub node: String,
    pub address: SocketAddr,
    pub generation: u64,
}

impl Identity for Speaker {
    type Addr = String;

    fn renew(&self) -> Option<Self> {
        Some(Speaker {
            generation: self.generation + 1,
            ..self.clone()
        })
    }

    fn addr(&self) -> String {
        self.node.clone()
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

/// Timing of failure detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Each speaker probes one other speaker per period.
    pub probe_period: Duration,
    /// How long a direct probe may take before others are asked to probe indirectly.
    pub probe_rtt: Duration,
    /// How long a suspect has to refute the suspicion before it is declared down.
    pub suspect_to_down_after: Duration,
}

impl Default for Settings {
    /// Detection in about 0.6 s on a LAN (the time until a dead speaker is probed, the
    /// probe and indirect probes, then the suspicion), while a speaker that answers everything
    /// 80 ms late for a minute is never declared down (both in `tests/simulation.rs`).
    fn default() -> Self {
        Settings {
            probe_period: Duration::from_millis(100),
            probe_rtt: Duration::from_millis(50),
            suspect_to_down_after: Duration::from_millis(400),
        }
    }
}

/// The largest protocol payload a datagram carries (foca's limit, both ways).
const MAX_PAYLOAD: usize = 1_100;

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send this datagram (already authenticated) to `to`.
    Send { to: SocketAddr, datagram: Vec<u8> },
    /// Give `timer` back through [`Membership::timer`] after `after`.
    Schedule {
        after: Duration,
        timer: Timer<Speaker>,
    },
}

/// A datagram or timer foca could not use.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("a datagram failed authentication (another cluster's key, or forged)")]
    Unauthenticated,
    #[error("a datagram was replayed (seen before, or from a speaker's ended run)")]
    Replayed,
    #[error("gossip: {0}")]
    Protocol(#[from] foca::Error),
}

/// One speaker's view of the cluster.
pub struct Membership {
    foca: Foca<Speaker, PostcardCodec, SmallRng, NoCustomBroadcast>,
    runtime: AccumulatingRuntime<Speaker>,
    keys: Keyring,
    /// The sequence number of the next datagram this speaker sends.
    sequence: u64,
    guard: Guard,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("me", self.foca.identity())
            .field("live", &self.live())
            .finish_non_exhaustive()
    }
}

impl Membership {
    /// `seed` seeds the choice of whom to probe.
    pub fn new(me: Speaker, settings: Settings, keys: Keyring, seed: u64) -> Self {
        let mut config = foca::Config::new_lan(NonZeroU32::new(16).expect("non-zero"));
        // With the envelope (at most 273 bytes) and the tag (32), a datagram stays within
        // an Ethernet frame's 1,472 bytes of UDP payload.
        config.max_packet_size = std::num::NonZeroUsize::new(MAX_PAYLOAD).expect("non-zero");
        config.probe_period = settings.probe_period;
        config.probe_rtt = settings.probe_rtt;
        config.suspect_to_down_after = settings.suspect_to_down_after;
        // A healed partition or a missed join is repaired within seconds.
        config.periodic_announce = Some(foca::PeriodicParams {
            frequency: Duration::from_secs(5),
            num_members: std::num::NonZeroUsize::new(1).expect("non-zero"),
        });
        config.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: Duration::from_secs(2),
            num_members: std::num::NonZeroUsize::new(2).expect("non-zero"),
        });
        Membership {
            foca: Foca::new(me, config, SmallRng::seed_from_u64(seed), PostcardCodec),
            runtime: AccumulatingRuntime::new(),
            keys,
            sequence: 0,
            guard: Guard::default(),
        }
    }

    /// The keys datagrams are sealed and opened with.
    pub fn keys(&self) -> &Keyring {
        &self.keys
    }

    /// Seals and opens with `keys` from now on (a rotation step).
    pub fn set_keys(&mut self, keys: Keyring) {
        self.keys = keys;
    }

    /// This speaker.
    pub fn me(&self) -> &Speaker {
        self.foca.identity()
    }

    /// The nodes whose speakers are alive (suspects included: they may still refute), this
    /// one among them.
    pub fn live(&self) -> BTreeSet<String> {
        self.foca
            .iter_members()
            .map(|m| m.id().node.clone())
            .chain([self.me().node.clone()])
            .collect()
    }

    /// Asks the speaker of `node` at `address` to let this one join.
    pub fn announce(
        &mut self,
        node: &str,
        address: SocketAddr,
    ) -> Result<Vec<Output>, MembershipError> {
        let target = Speaker {
            node: node.to_owned(),
            address,
            generation: 0,
        };
        self.foca.announce(target, &mut self.runtime)?;
        Ok(self.drain())
    }

    /// A datagram received from the network.
    pub fn receive(&mut self, datagram: &[u8]) -> Result<Vec<Output>, MembershipError> {
        let opened = self
            .keys
            .open(datagram)
            .ok_or(MembershipError::Unauthenticated)?;
        // Authenticated but not in an envelope: nothing a speaker of this version sends.
        let (envelope, payload) = replay::unwrap(opened)
            .ok_or(MembershipError::Protocol(foca::Error::MalformedPacket))?;
        if !self.guard.admit(&envelope) {
            return Err(MembershipError::Replayed);
        }
        let result = self.foca.handle_data(payload, &mut self.runtime);
        // Whatever foca managed before an error still has to go out.
        let outputs = self.drain();
        result?;
        Ok(outputs)
    }

    /// A timer set by an earlier [`Output::Schedule`] expired.
    pub fn timer(&mut self, timer: Timer<Speaker>) -> Result<Vec<Output>, MembershipError> {
        let result = self.foca.handle_timer(timer, &mut self.runtime);
        let outputs = self.drain();
        result?;
        Ok(outputs)
    }

    /// Tells the others this speaker is leaving (on a clean shutdown), so they need not wait
    /// for failure detection.
    pub fn leave(&mut self) -> Result<Vec<Output>, MembershipError> {
        self.foca.leave_cluster(&mut self.runtime)?;
        Ok(self.drain())
    }

    fn drain(&mut self) -> Vec<Output> {
        let mut outputs = Vec::new();
        while let Some((to, data)) = self.runtime.to_send() {
            let me = self.foca.identity();
            let envelope = Envelope {
                sender: &me.node,
                run: me.generation,
                sequence: self.sequence,
            };
            self.sequence += 1;
            outputs.push(Output::Send {
                to: to.address,
                datagram: self.keys.seal(&envelope.wrap(&data)),
            });
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            outputs.push(Output::Schedule { after, timer });
        }
        // Membership changes are read from foca's member list, not from notifications.
        while self.runtime.to_notify().is_some() {}
        outputs
    }
}
