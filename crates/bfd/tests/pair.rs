//! Two sessions talking over a simulated link with a virtual clock: coming Up, the agreed
//! intervals, detection of a frozen peer, AdminDown, renegotiation without a flap, passive
//! role, slow start and jitter, each as RFC 5880 asks.

use std::{collections::BTreeMap, time::Duration};

use herald_bfd::{
    Action, Config, ControlPacket, Diagnostic, Event, Input, Session, State, Timer, packet,
};

const MS: Duration = Duration::from_millis(1);
/// One way across the link.
const DELAY: Duration = Duration::from_micros(200);

fn config(tx_ms: u64, rx_ms: u64, detect_mult: u8) -> Config {
    Config {
        desired_min_tx: MS * tx_ms as u32,
        required_min_rx: MS * rx_ms as u32,
        detect_mult,
        passive: false,
    }
}

struct Side {
    session: Session,
    timers: BTreeMap<Timer, Duration>,
    sent: Vec<(Duration, ControlPacket)>,
    events: Vec<(Duration, Event)>,
    /// Stopped (SIGSTOP): no timers fire, nothing is read; what arrives is lost.
    frozen: bool,
}

struct Link {
    now: Duration,
    sides: [Side; 2],
    in_flight: Vec<(Duration, usize, ControlPacket)>,
}

impl Link {
    fn new(a: Config, b: Config) -> Link {
        let side = |config, discriminator, seed| Side {
            session: Session::new(config, discriminator, seed),
            timers: BTreeMap::new(),
            sent: Vec::new(),
            events: Vec::new(),
            frozen: false,
        };
        Link {
            now: Duration::ZERO,
            sides: [side(a, 0x1111, 7), side(b, 0x2222, 11)],
            in_flight: Vec::new(),
        }
    }

    fn input(&mut self, side: usize, input: Input) {
        let actions = self.sides[side].session.handle(input);
        self.apply(side, actions);
    }

    fn apply(&mut self, side: usize, actions: Vec<Action>) {
        let now = self.now;
        for action in actions {
            let this = &mut self.sides[side];
            match action {
                Action::Send(packet) => {
                    // Every packet sent goes through the codec, as on a real link.
                    let decoded = packet::decode(&packet.encode()).expect("sent packets decode");
                    this.sent.push((now, decoded));
                    self.in_flight.push((now + DELAY, 1 - side, decoded));
                }
                Action::Arm(timer, after) => {
                    this.timers.insert(timer, now + after);
                }
                Action::Disarm(timer) => {
                    this.timers.remove(&timer);
                }
                Action::Report(event) => this.events.push((now, event)),
            }
        }
    }

    /// Runs the link until `end`, in event order.
    fn run_until(&mut self, end: Duration) {
        loop {
            let timers = self.sides.iter().enumerate().flat_map(|(i, s)| {
                s.timers
                    .iter()
                    .filter(move |_| !s.frozen)
                    .map(move |(t, at)| (*at, i, Some(*t)))
            });
            let arrivals = self.in_flight.iter().map(|(at, to, _)| (*at, *to, None));
            let Some((at, side, timer)) = timers.chain(arrivals).min_by_key(|(at, _, _)| *at)
            else {
                break;
            };
            if at > end {
                break;
            }
            self.now = at;
            match timer {
                Some(timer) => {
                    self.sides[side].timers.remove(&timer);
                    self.input(side, Input::Timer(timer));
                }
                None => {
                    let index = self
                        .in_flight
                        .iter()
                        .position(|(a, to, _)| *a == at && *to == side)
                        .expect("the arrival just found");
                    let (_, to, packet) = self.in_flight.remove(index);
                    if !self.sides[to].frozen {
                        self.input(to, Input::Received(packet));
                    }
                }
            }
        }
        self.now = end;
    }

    fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        self.run_until(end);
    }

    fn start(&mut self) {
        self.input(0, Input::Start);
        self.input(1, Input::Start);
    }

    fn states(&self) -> [State; 2] {
        [self.sides[0].session.state(), self.sides[1].session.state()]
    }

    fn state_changes(&self, side: usize) -> Vec<(Duration, State, Diagnostic)> {
        self.sides[side]
            .events
            .iter()
            .filter_map(|(at, e)| match e {
                Event::StateChanged { to, diagnostic, .. } => Some((*at, *to, *diagnostic)),
                Event::Ignored { .. } => None,
            })
            .collect()
    }

    /// The gaps between periodic packets of `side` sent from `since`.
    fn gaps(&self, side: usize, since: Duration) -> Vec<Duration> {
        let times: Vec<Duration> = self.sides[side]
            .sent
            .iter()
            .filter(|(at, p)| *at >= since && !p.final_ && !p.poll)
            .map(|(at, _)| *at)
            .collect();
        times.windows(2).map(|w| w[1] - w[0]).collect()
    }
}

#[test]
fn two_sessions_come_up_at_once_and_settle_on_the_agreed_intervals() {
    let mut link = Link::new(config(100, 100, 3), config(300, 200, 5));
    link.start();
    link.run_for(10 * MS);
    assert_eq!(
        link.states(),
        [State::Up, State::Up],
        "Down -> Init -> Up in three packets"
    );
    link.run_for(3 * SECOND);
    let [a, b] = [&link.sides[0].session, &link.sides[1].session];
    assert!(!a.is_polling() && !b.is_polling(), "both polls answered");
    assert_eq!(
        a.transmit_interval(),
        Some(200 * MS),
        "max(own 100, peer's rx 200)"
    );
    assert_eq!(
        b.transmit_interval(),
        Some(300 * MS),
        "max(own 300, peer's rx 100)"
    );
    assert_eq!(
        a.detection_time(),
        Some(5 * 300 * MS),
        "peer's 5 x max(own rx 100, its tx 300)"
    );
    assert_eq!(
        b.detection_time(),
        Some(3 * 200 * MS),
        "peer's 3 x max(own rx 200, its tx 100)"
    );
    let gaps = link.gaps(0, link.now - SECOND);
    assert!(gaps.len() >= 4, "{gaps:?}");
    assert!(
        gaps.iter().all(|g| *g >= 150 * MS && *g <= 200 * MS),
        "75 to 100 % of 200 ms: {gaps:?}"
    );
    assert!(gaps.windows(2).any(|w| w[0] != w[1]), "jittered: {gaps:?}");
}

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn a_frozen_peer_is_declared_down_when_the_detection_time_passes_and_comes_back_thawed() {
    let mut link = Link::new(config(100, 100, 3), config(100, 100, 3));
    link.start();
    link.run_for(3 * SECOND);
    assert_eq!(link.states(), [State::Up, State::Up]);
    let frozen_at = link.now;
    link.sides[1].frozen = true;
    let last_heard = link.sides[1].sent.last().expect("b has sent").0 + DELAY;
    link.run_for(SECOND);
    let changes = link.state_changes(0);
    let (down_at, state, diagnostic) = *changes.last().expect("a changed state");
    assert_eq!(
        (state, diagnostic),
        (State::Down, Diagnostic::ControlDetectionTimeExpired)
    );
    assert_eq!(
        down_at - last_heard,
        300 * MS,
        "3 x 100 ms after the last packet"
    );
    assert!(down_at - frozen_at <= 300 * MS + 100 * MS);
    let after: Vec<&ControlPacket> = link.sides[0]
        .sent
        .iter()
        .filter(|(at, _)| *at > down_at)
        .map(|(_, p)| p)
        .collect();
    assert!(
        after
            .iter()
            .all(|p| p.state == State::Down && p.your_discriminator == 0),
        "down, and the peer forgotten"
    );
    assert!(
        after.iter().all(|p| p.desired_min_tx_us >= 1_000_000),
        "slow start again"
    );
    link.sides[1].frozen = false;
    link.run_for(3 * SECOND);
    assert_eq!(link.states(), [State::Up, State::Up], "back once thawed");
    let b = link.state_changes(1);
    assert!(
        b.iter()
            .any(|(_, s, d)| *s == State::Down && *d == Diagnostic::ControlDetectionTimeExpired),
        "the thawed side found its own timer expired: {b:?}"
    );
}

#[test]
fn admin_down_is_told_to_the_peer_at_once_and_is_not_a_failure_to_recover_from() {
    let mut link = Link::new(config(100, 100, 3), config(100, 100, 3));
    link.start();
    link.run_for(SECOND);
    let at = link.now;
    link.input(0, Input::AdminDown);
    link.run_for(2 * SECOND);
    assert_eq!(link.states(), [State::AdminDown, State::Down]);
    let b = link.state_changes(1);
    let (down_at, _, diagnostic) = *b.last().expect("b went down");
    assert_eq!(diagnostic, Diagnostic::NeighborSignaledSessionDown);
    assert!(
        down_at - at <= 2 * DELAY,
        "told at once: {:?}",
        down_at - at
    );
    link.input(0, Input::Start);
    link.run_for(3 * SECOND);
    assert_eq!(link.states(), [State::Up, State::Up]);
}

#[test]
fn changing_intervals_while_up_is_a_poll_sequence_that_never_flaps_the_session() {
    let mut link = Link::new(config(100, 100, 3), config(100, 100, 3));
    link.start();
    link.run_for(3 * SECOND);
    let changes_before = [link.state_changes(0).len(), link.state_changes(1).len()];
    link.input(0, Input::Configure(config(1000, 1000, 3)));
    let a = &link.sides[0].session;
    assert!(a.is_polling());
    assert_eq!(
        a.transmit_interval(),
        Some(100 * MS),
        "a slower rate waits for the peer's Final"
    );
    assert_eq!(
        link.sides[0]
            .sent
            .last()
            .map(|(_, p)| (p.poll, p.desired_min_tx_us)),
        Some((true, 1_000_000)),
        "the new interval is polled at once"
    );
    link.run_for(5 * SECOND);
    let [a, b] = [&link.sides[0].session, &link.sides[1].session];
    assert!(!a.is_polling());
    assert_eq!(a.transmit_interval(), Some(SECOND));
    assert_eq!(
        b.transmit_interval(),
        Some(SECOND),
        "the peer sends as slowly as asked"
    );
    assert_eq!(b.detection_time(), Some(3 * SECOND));
    link.input(0, Input::Configure(config(50, 50, 3)));
    link.run_for(5 * SECOND);
    assert_eq!(link.sides[1].session.detection_time(), Some(3 * 100 * MS));
    assert_eq!(link.sides[0].session.transmit_interval(), Some(100 * MS));
    assert_eq!(
        [link.state_changes(0).len(), link.state_changes(1).len()],
        changes_before,
        "no state change on either side"
    );
}

#[test]
fn a_passive_session_says_nothing_until_spoken_to() {
    let mut passive = config(100, 100, 3);
    passive.passive = true;
    let mut link = Link::new(passive, config(100, 100, 3));
    link.input(0, Input::Start);
    link.run_for(5 * SECOND);
    assert!(
        link.sides[0].sent.is_empty(),
        "no packet from the passive side"
    );
    link.input(1, Input::Start);
    link.run_for(10 * MS);
    assert_eq!(link.states(), [State::Up, State::Up]);
}

#[test]
fn until_up_a_session_sends_about_once_a_second_whatever_it_is_configured_for() {
    let mut link = Link::new(config(50, 50, 3), config(50, 50, 3));
    link.sides[1].frozen = true;
    link.input(0, Input::Start);
    link.run_for(10 * SECOND);
    let sent = &link.sides[0].sent;
    assert!(sent.iter().all(|(_, p)| p.state == State::Down
        && p.your_discriminator == 0
        && p.desired_min_tx_us == 1_000_000
        && p.required_min_rx_us == 50_000));
    let gaps = link.gaps(0, Duration::ZERO);
    assert!(gaps.len() >= 9, "{gaps:?}");
    assert!(
        gaps.iter().all(|g| *g >= 750 * MS && *g <= SECOND),
        "{gaps:?}"
    );
}

#[test]
fn with_a_multiplier_of_one_packets_leave_at_75_to_90_percent_of_the_interval() {
    let mut link = Link::new(config(100, 100, 1), config(100, 100, 1));
    link.start();
    link.run_for(2 * SECOND);
    let gaps = link.gaps(0, SECOND);
    assert!(gaps.len() >= 8, "{gaps:?}");
    assert!(
        gaps.iter().all(|g| *g >= 75 * MS && *g <= 90 * MS),
        "{gaps:?}"
    );
}

#[test]
fn a_packet_for_another_session_is_ignored() {
    let mut session = Session::new(config(100, 100, 3), 5, 1);
    session.handle(Input::Start);
    let stray = ControlPacket {
        diagnostic: Diagnostic::None,
        state: State::Up,
        poll: false,
        final_: false,
        control_plane_independent: false,
        demand: false,
        detect_mult: 3,
        my_discriminator: 9,
        your_discriminator: 6,
        desired_min_tx_us: 100_000,
        required_min_rx_us: 100_000,
        required_min_echo_rx_us: 0,
    };
    let actions = session.handle(Input::Received(stray));
    assert_eq!(
        actions,
        [Action::Report(Event::Ignored {
            your_discriminator: 6
        })]
    );
    assert_eq!(session.state(), State::Down);
    assert_eq!(session.remote_discriminator(), 0);
}
