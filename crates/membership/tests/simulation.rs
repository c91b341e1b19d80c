//! Membership on a simulated network with a virtual clock: detection times are measured in
//! simulated time, so they are exact and repeatable whatever the machine is doing.

use std::{
    cmp::Reverse,
    collections::{BTreeSet, BinaryHeap},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use herald_membership::{
    Key, Keyring, Membership, MembershipError, Output, Settings, Speaker, Timer,
};

const KEY: &[u8] = b"a shared test key of enough bytes";

enum Event {
    Deliver {
        to: usize,
        datagram: Vec<u8>,
    },
    Fire {
        node: usize,
        generation: u64,
        timer: Timer<Speaker>,
    },
}

/// Speakers n1..nN on 192.0.2.1..N, a clock, and the messages and timers in flight.
struct Cluster {
    now: Duration,
    speakers: Vec<Option<Membership>>,
    /// Extra delay on everything a speaker sends (a busy node).
    send_delay: Vec<Duration>,
    queue: BinaryHeap<Reverse<(Duration, u64, usize)>>,
    events: Vec<Option<Event>>,
    /// One-way delay of the LAN.
    latency: Duration,
    /// Whose datagrams are recorded (as a listener on the LAN would), and what was: the
    /// receiver and the datagram.
    capture_from: Option<usize>,
    captured: Vec<(usize, Vec<u8>)>,
}

fn address(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1 + i as u8)), 7946)
}

fn node(i: usize) -> String {
    format!("n{}", i + 1)
}

impl Cluster {
    fn new(size: usize, seed: u64) -> Self {
        let mut cluster = Cluster {
            now: Duration::ZERO,
            speakers: Vec::new(),
            send_delay: vec![Duration::ZERO; size],
            queue: BinaryHeap::new(),
            events: Vec::new(),
            latency: Duration::from_micros(200),
            capture_from: None,
            captured: Vec::new(),
        };
        for i in 0..size {
            cluster.speakers.push(None);
            cluster.start(i, 1, seed);
        }
        cluster
    }

    /// Starts (or restarts) speaker `i` and has it announce itself to every other node.
    fn start(&mut self, i: usize, generation: u64, seed: u64) {
        let me = Speaker {
            node: node(i),
            address: address(i),
            generation,
        };
        let key = Key::new(KEY).expect("key");
        self.speakers[i] = Some(Membership::new(
            me,
            Settings::default(),
            Keyring::single(key),
            seed + i as u64,
        ));
        for j in 0..self.speakers.len() {
            if j != i {
                let outputs = self.speakers[i]
                    .as_mut()
                    .expect("started")
                    .announce(&node(j), address(j))
                    .expect("announce");
                self.perform(i, outputs);
            }
        }
    }

    fn push(&mut self, at: Duration, event: Event) {
        self.events.push(Some(event));
        let id = self.events.len() - 1;
        self.queue.push(Reverse((at, id as u64, id)));
    }

    fn perform(&mut self, from: usize, outputs: Vec<Output>) {
        let generation = self.speakers[from]
            .as_ref()
            .map_or(0, |m| m.me().generation);
        for output in outputs {
            match output {
                Output::Send { to, datagram } => {
                    let to = (0..self.speakers.len())
                        .find(|&j| address(j) == to)
                        .expect("a known address");
                    let at = self.now + self.latency + self.send_delay[from];
                    if self.capture_from == Some(from) {
                        self.captured.push((to, datagram.clone()));
                    }
                    self.push(at, Event::Deliver { to, datagram });
                }
                Output::Schedule { after, timer } => {
                    self.push(
                        self.now + after,
                        Event::Fire {
                            node: from,
                            generation,
                            timer,
                        },
                    );
                }
            }
        }
    }

    /// Runs until `until` (simulated).
    fn run_until(&mut self, until: Duration) {
        while let Some(Reverse((at, _, id))) = self.queue.peek().copied() {
            if at > until {
                break;
            }
            self.queue.pop();
            self.now = at;
            let Some(event) = self.events[id].take() else {
                continue;
            };
            match event {
                Event::Deliver { to, datagram } => {
                    if let Some(speaker) = self.speakers[to].as_mut() {
                        let outputs = speaker.receive(&datagram).unwrap_or_default();
                        self.perform(to, outputs);
                    }
                }
                Event::Fire {
                    node,
                    generation,
                    timer,
                } => {
                    // Timers of a dead (or since restarted) speaker die with it.
                    if let Some(speaker) = self.speakers[node].as_mut()
                        && speaker.me().generation == generation
                    {
                        let outputs = speaker.timer(timer).unwrap_or_default();
                        self.perform(node, outputs);
                    }
                }
            }
        }
        self.now = until;
    }

    fn live(&self, i: usize) -> BTreeSet<String> {
        self.speakers[i].as_ref().expect("running").live()
    }

    fn assert_everyone_sees_everyone(&self) {
        for i in 0..self.speakers.len() {
            assert_eq!(self.live(i), self.everyone(), "the view of {}", node(i));
        }
    }

    fn everyone(&self) -> BTreeSet<String> {
        (0..self.speakers.len()).map(node).collect()
    }

    /// Steps in 10 ms until every running speaker but `except` agrees that `gone` is not live;
    /// returns how long that took, or `None` within `limit`.
    fn time_until_all_drop(&mut self, gone: usize, limit: Duration) -> Option<Duration> {
        let start = self.now;
        while self.now - start < limit {
            self.run_until(self.now + Duration::from_millis(10));
            let all = (0..self.speakers.len())
                .filter(|&i| i != gone && self.speakers[i].is_some())
                .all(|i| !self.live(i).contains(&node(gone)));
            if all {
                return Some(self.now - start);
            }
        }
        None
    }
}

#[test]
fn speakers_find_each_other_from_seeds() {
    let mut cluster = Cluster::new(3, 1);
    cluster.run_until(Duration::from_secs(2));
    cluster.assert_everyone_sees_everyone();
}

#[test]
fn a_killed_speaker_is_declared_down_by_all_others_in_under_a_second() {
    let mut worst = Duration::ZERO;
    let mut times = Vec::new();
    for seed in 0..20 {
        let mut cluster = Cluster::new(3, seed * 7);
        // Kill at a point that is not aligned with the probe period.
        cluster.run_until(Duration::from_millis(3_000 + seed * 37));
        assert_eq!(cluster.live(0), cluster.everyone());
        cluster.speakers[2] = None;
        let took = cluster
            .time_until_all_drop(2, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("seed {seed}: n3 never declared down"));
        worst = worst.max(took);
        times.push(took);
    }
    times.sort();
    eprintln!(
        "detection over 20 runs: median {:?}, worst {worst:?}",
        times[10]
    );
    assert!(worst < Duration::from_secs(1), "worst detection {worst:?}");
}

#[test]
fn a_busy_speaker_that_answers_late_is_never_declared_down() {
    let mut cluster = Cluster::new(3, 3);
    cluster.run_until(Duration::from_secs(2));
    // n3 answers everything 80 ms late (a loaded node), for a simulated minute.
    cluster.send_delay[2] = Duration::from_millis(80);
    let everyone = cluster.everyone();
    for step in 0..6_000 {
        cluster.run_until(Duration::from_secs(2) + Duration::from_millis(10 * step));
        for i in 0..3 {
            assert_eq!(cluster.live(i), everyone, "{} at step {step}", node(i));
        }
    }
}

#[test]
fn a_restarted_speaker_rejoins_at_once() {
    let mut cluster = Cluster::new(3, 5);
    cluster.run_until(Duration::from_secs(2));
    cluster.speakers[1] = None;
    assert!(
        cluster
            .time_until_all_drop(1, Duration::from_secs(5))
            .is_some()
    );
    cluster.start(1, 2, 99);
    cluster.run_until(cluster.now + Duration::from_millis(500));
    cluster.assert_everyone_sees_everyone();
}

#[test]
fn datagrams_without_the_key_change_nothing() {
    let mut cluster = Cluster::new(2, 9);
    cluster.run_until(Duration::from_secs(1));
    let stranger = Membership::new(
        Speaker {
            node: "intruder".into(),
            address: address(5),
            generation: 1,
        },
        Settings::default(),
        Keyring::single(Key::new(b"another cluster's key, 32 bytes!").expect("key")),
        1,
    );
    // What the intruder would send to join, sealed with its own key.
    let mut intruder = stranger;
    let outputs = intruder.announce(&node(0), address(0)).expect("announce");
    let speaker = cluster.speakers[0].as_mut().expect("running");
    for output in outputs {
        if let Output::Send { datagram, .. } = output {
            assert!(speaker.receive(&datagram).is_err());
            assert!(speaker.receive(&datagram[..10]).is_err(), "truncated");
        }
    }
    assert_eq!(cluster.live(0), cluster.everyone());
}

impl Cluster {
    /// Delivers every captured datagram again to its receiver, now; the errors they met.
    fn replay(&mut self, captured: &[(usize, Vec<u8>)]) -> Vec<Result<(), String>> {
        let mut results = Vec::new();
        for (to, datagram) in captured {
            let Some(speaker) = self.speakers[*to].as_mut() else {
                continue;
            };
            let result = speaker.receive(datagram);
            results.push(match result {
                Ok(outputs) => {
                    self.perform(*to, outputs);
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            });
        }
        results
    }

    fn set_keys(&mut self, i: usize, keys: Keyring) {
        self.speakers[i].as_mut().expect("running").set_keys(keys);
    }
}

#[test]
fn replayed_datagrams_never_reach_the_protocol_and_change_nothing() {
    let mut cluster = Cluster::new(3, 11);
    cluster.run_until(Duration::from_secs(2));
    // A listener on the LAN records n3's gossip for two seconds.
    cluster.capture_from = Some(2);
    cluster.run_until(Duration::from_secs(4));
    cluster.capture_from = None;
    let captured = std::mem::take(&mut cluster.captured);
    assert!(captured.len() > 20, "{} datagrams", captured.len());
    let replayed = MembershipError::Replayed.to_string();
    let all_refused = |results: Vec<Result<(), String>>| {
        results.iter().all(|r| r.as_ref().err() == Some(&replayed))
    };

    // Sent again while n3 runs: refused, every one.
    assert!(all_refused(cluster.replay(&captured)));
    cluster.run_until(cluster.now + Duration::from_secs(1));
    cluster.assert_everyone_sees_everyone();

    // n3 dies; its recorded gossip, sent again and again, does not bring it back.
    cluster.speakers[2] = None;
    assert!(
        cluster
            .time_until_all_drop(2, Duration::from_secs(2))
            .is_some()
    );
    for _ in 0..5 {
        assert!(all_refused(cluster.replay(&captured)));
        cluster.run_until(cluster.now + Duration::from_millis(200));
        for i in 0..2 {
            assert!(!cluster.live(i).contains(&node(2)), "{}", node(i));
        }
    }

    // n3 restarts (a new run): its old run's datagrams are still refused.
    cluster.start(2, 2, 77);
    cluster.run_until(cluster.now + Duration::from_secs(1));
    cluster.assert_everyone_sees_everyone();
    assert!(all_refused(cluster.replay(&captured)));
    cluster.run_until(cluster.now + Duration::from_secs(1));
    cluster.assert_everyone_sees_everyone();
}

#[test]
fn a_receiver_that_never_heard_a_sender_takes_its_replays_once_and_recovers_within_detection() {
    let mut cluster = Cluster::new(3, 13);
    cluster.run_until(Duration::from_secs(2));
    cluster.capture_from = Some(2);
    cluster.run_until(Duration::from_secs(3));
    cluster.capture_from = None;
    let captured: Vec<(usize, Vec<u8>)> = std::mem::take(&mut cluster.captured)
        .into_iter()
        .filter(|(to, _)| *to == 0)
        .collect();
    cluster.speakers[2] = None;
    assert!(
        cluster
            .time_until_all_drop(2, Duration::from_secs(2))
            .is_some()
    );
    // n1 restarts: it has no record of n3's run, so the recording gets through once (the
    // documented bound); n3 is down again for it within the detection time, and a second
    // replay is refused whole.
    cluster.start(0, 2, 55);
    cluster.run_until(cluster.now + Duration::from_millis(500));
    assert!(cluster.replay(&captured).iter().all(Result::is_ok));
    cluster.run_until(cluster.now + Duration::from_secs(1));
    assert!(
        !cluster.live(0).contains(&node(2)),
        "down again within detection"
    );
    assert!(cluster.replay(&captured).iter().all(Result::is_err));
    cluster.run_until(cluster.now + Duration::from_millis(500));
    assert!(!cluster.live(0).contains(&node(2)));
}

#[test]
fn a_key_rotation_in_three_steps_never_splits_the_cluster() {
    let old = Key::new(KEY).expect("key");
    let new = Key::new(b"the next key of the test cluster").expect("key");
    let steps = [
        Keyring {
            sealing: old.clone(),
            additional: Some(new.clone()),
        },
        Keyring {
            sealing: new.clone(),
            additional: Some(old),
        },
        Keyring::single(new),
    ];
    let mut cluster = Cluster::new(3, 17);
    cluster.run_until(Duration::from_secs(2));
    let everyone = cluster.everyone();
    let mut checks = 0;
    for keys in steps {
        // The kubelet updates nodes one at a time: each speaker takes the step in turn,
        // and every view is checked every 10 ms meanwhile.
        for i in 0..3 {
            cluster.set_keys(i, keys.clone());
            for _ in 0..50 {
                cluster.run_until(cluster.now + Duration::from_millis(10));
                for j in 0..3 {
                    assert_eq!(cluster.live(j), everyone, "{} after {i}", node(j));
                    checks += 1;
                }
            }
        }
    }
    eprintln!("{checks} views checked through the rotation, all whole");
}

#[test]
fn switching_to_a_new_key_in_one_step_splits_the_cluster() {
    // Why the rotation takes three steps: one speaker on the new key alone is cut off.
    let mut cluster = Cluster::new(3, 19);
    cluster.run_until(Duration::from_secs(2));
    let new = Key::new(b"the next key of the test cluster").expect("key");
    cluster.set_keys(0, Keyring::single(new));
    cluster.run_until(cluster.now + Duration::from_secs(2));
    assert_eq!(cluster.live(0).len(), 1, "{:?}", cluster.live(0));
    assert!(!cluster.live(1).contains(&node(0)));
}
