//! One BFD session in asynchronous mode (RFC 5880 §6.8) as a sans-IO state machine: inputs
//! in, actions out; the driver owns the socket and the clock.
//!
//! ```text
//!             remote Down              remote Init or Up
//!   Down ────────────────────► Init ───────────────────────► Up
//!    │ └───────────── remote Init ─────────────────────────► ▲│
//!    ▲   remote Down / AdminDown: Neighbor Signaled Session Down│
//!    └───── no packet for the detection time: Control Detection Time Expired
//!   AdminDown: Input::AdminDown (the peer is told); Input::Start leaves it
//! ```
//!
//! Timing (§6.8.2–§6.8.4):
//! - packets go out every max(our Desired Min TX, the peer's Required Min RX), less a random
//!   0–25 % (0–10 % more with a multiplier of 1: at most 90 %, §6.8.7);
//! - until the session is Up, Desired Min TX is at least one second (slow start, §6.8.3);
//! - the peer is declared down when nothing came for its Detect Mult × max(our Required Min
//!   RX, its Desired Min TX);
//! - a change of either interval while Up is a poll sequence (§6.5): packets carry P until
//!   the peer answers with F. A slower transmit rate and a shorter detection time take effect
//!   only then, so neither side declares the other down while they renegotiate.
//!
//! Timers are [`Action::Arm`] / [`Action::Disarm`], relative to the moment the actions are
//! returned; the driver feeds expiries back as [`Input::Timer`].

use std::time::Duration;

use crate::packet::{ControlPacket, Diagnostic, State};

/// The slowest a session transmits until it is Up: at most one packet a second (§6.8.3).
pub const SLOW_TX: Duration = Duration::from_secs(1);

/// What a session is set up with; a change while Up is negotiated by a poll sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// How often this system would like to send (bfd.DesiredMinTxInterval).
    pub desired_min_tx: Duration,
    /// How often it can take packets (bfd.RequiredMinRxInterval); zero: send none.
    pub required_min_rx: Duration,
    /// Packets the peer may miss before it declares this system down; at least 1.
    pub detect_mult: u8,
    /// Send nothing until the peer has spoken (§6.1).
    pub passive: bool,
}

/// The timers a session asks its driver for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// The next periodic packet is due.
    Transmit,
    /// Nothing came from the peer for the detection time.
    Detect,
}

/// What happens to a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Start sending (a new session, or one leaving AdminDown).
    Start,
    /// A packet for this session, decoded and checked by [`crate::packet::decode`].
    Received(ControlPacket),
    Timer(Timer),
    /// New intervals, multiplier or role.
    Configure(Config),
    /// Take the session down on purpose; the peer is told (diagnostic Administratively
    /// Down) and does not take it for a failure.
    AdminDown,
}

/// What a session tells its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    StateChanged {
        from: State,
        to: State,
        diagnostic: Diagnostic,
    },
    /// A packet whose Your Discriminator is not this session's was ignored (the driver
    /// chooses sessions by discriminator; this is a defence, and a count).
    Ignored { your_discriminator: u32 },
}

/// What a session asks of its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send(ControlPacket),
    /// Start (or restart) the timer to expire after the duration.
    Arm(Timer, Duration),
    Disarm(Timer),
    Report(Event),
}

/// One BFD session.
#[derive(Debug, Clone)]
pub struct Session {
    config: Config,
    state: State,
    local_discriminator: u32,
    local_diagnostic: Diagnostic,
    remote_discriminator: u32,
    remote_state: State,
    remote_diagnostic: Diagnostic,
    remote_min_rx: Duration,
    remote_desired_tx: Duration,
    /// 0 until a packet came from the peer (and again once it is declared down).
    remote_detect_mult: u8,
    remote_demand: bool,
    /// The Desired Min TX and Required Min RX this session sends.
    advertised_tx: Duration,
    advertised_rx: Duration,
    /// The values timing uses: they lag `advertised_*` while a poll sequence runs, when
    /// the change is a slower transmit rate or a shorter detection time.
    tx_in_use: Duration,
    rx_in_use: Duration,
    polling: bool,
    /// The interval the Transmit timer was last armed for.
    transmitting: Option<Duration>,
    random: u64,
}

fn micros(us: u32) -> Duration {
    Duration::from_micros(u64::from(us))
}

fn to_micros(interval: Duration) -> u32 {
    u32::try_from(interval.as_micros()).unwrap_or(u32::MAX)
}

impl Session {
    /// A session in Down that sends nothing before [`Input::Start`]. `local_discriminator`
    /// is nonzero and unique among this system's sessions; `seed` feeds the jitter.
    pub fn new(config: Config, local_discriminator: u32, seed: u64) -> Session {
        let config = Config {
            detect_mult: config.detect_mult.max(1),
            ..config
        };
        let slow = config.desired_min_tx.max(SLOW_TX);
        Session {
            config,
            state: State::Down,
            local_discriminator: local_discriminator.max(1),
            local_diagnostic: Diagnostic::None,
            remote_discriminator: 0,
            remote_state: State::Down,
            remote_diagnostic: Diagnostic::None,
            // §6.8.1: 1 µs until the peer says otherwise.
            remote_min_rx: Duration::from_micros(1),
            remote_desired_tx: Duration::ZERO,
            remote_detect_mult: 0,
            remote_demand: false,
            advertised_tx: slow,
            advertised_rx: config.required_min_rx,
            tx_in_use: slow,
            rx_in_use: config.required_min_rx,
            polling: false,
            transmitting: None,
            random: seed | 1,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Why the session last changed state, as this side sends it.
    pub fn local_diagnostic(&self) -> Diagnostic {
        self.local_diagnostic
    }

    /// The diagnostic in the peer's last packet.
    pub fn remote_diagnostic(&self) -> Diagnostic {
        self.remote_diagnostic
    }

    pub fn remote_state(&self) -> State {
        self.remote_state
    }

    pub fn local_discriminator(&self) -> u32 {
        self.local_discriminator
    }

    /// The peer's discriminator; 0 until it has spoken, and again once declared down.
    pub fn remote_discriminator(&self) -> u32 {
        self.remote_discriminator
    }

    pub fn config(&self) -> Config {
        self.config
    }

    /// A poll sequence is waiting for the peer's Final.
    pub fn is_polling(&self) -> bool {
        self.polling
    }

    /// The agreed interval between periodic packets, before jitter; `None` while this side
    /// may not send them (passive and not spoken to, the peer wants none, or the peer's
    /// demand mode).
    pub fn transmit_interval(&self) -> Option<Duration> {
        let quiet = (self.config.passive && self.remote_discriminator == 0)
            || self.remote_min_rx.is_zero()
            || (self.remote_demand && self.state == State::Up && self.remote_state == State::Up);
        (!quiet).then(|| self.tx_in_use.max(self.remote_min_rx))
    }

    /// How long the peer may stay silent before it is declared down; `None` until it has
    /// spoken.
    pub fn detection_time(&self) -> Option<Duration> {
        (self.remote_detect_mult > 0).then(|| {
            self.rx_in_use
                .max(self.remote_desired_tx)
                .saturating_mul(u32::from(self.remote_detect_mult))
        })
    }

    pub fn handle(&mut self, input: Input) -> Vec<Action> {
        let mut actions = Vec::new();
        match input {
            Input::Start => {
                if self.state == State::AdminDown {
                    self.change_state(State::Down, Diagnostic::None, &mut actions);
                } else {
                    self.send(false, &mut actions);
                    self.transmitting = None;
                    self.schedule_transmit(&mut actions);
                }
            }
            Input::Received(packet) => self.receive(packet, &mut actions),
            Input::Timer(Timer::Transmit) => {
                self.send(false, &mut actions);
                self.transmitting = None;
                self.schedule_transmit(&mut actions);
            }
            Input::Timer(Timer::Detect) => self.detection_time_passed(&mut actions),
            Input::Configure(config) => {
                let before = self.detection_time();
                self.config = Config {
                    detect_mult: config.detect_mult.max(1),
                    ..config
                };
                if self.renegotiate() {
                    self.send(false, &mut actions);
                }
                self.schedule_transmit(&mut actions);
                // A longer detection time applies at once: never let the old, shorter timer
                // declare the peer down.
                if let Some(detect) = self.detection_time()
                    && before.is_some_and(|b| detect > b)
                    && self.state != State::AdminDown
                {
                    actions.push(Action::Arm(Timer::Detect, detect));
                }
            }
            Input::AdminDown => {
                if self.state != State::AdminDown {
                    self.change_state(
                        State::AdminDown,
                        Diagnostic::AdministrativelyDown,
                        &mut actions,
                    );
                    actions.push(Action::Disarm(Timer::Detect));
                }
            }
        }
        actions
    }

    /// §6.8.6, from the point where the packet has been matched to this session.
    fn receive(&mut self, packet: ControlPacket, actions: &mut Vec<Action>) {
        if packet.your_discriminator != 0 && packet.your_discriminator != self.local_discriminator {
            actions.push(Action::Report(Event::Ignored {
                your_discriminator: packet.your_discriminator,
            }));
            return;
        }
        if self.state == State::AdminDown {
            return;
        }
        self.remote_discriminator = packet.my_discriminator;
        self.remote_state = packet.state;
        self.remote_diagnostic = packet.diagnostic;
        self.remote_demand = packet.demand;
        self.remote_min_rx = micros(packet.required_min_rx_us);
        self.remote_desired_tx = micros(packet.desired_min_tx_us);
        self.remote_detect_mult = packet.detect_mult;
        if packet.final_ && self.polling {
            self.polling = false;
            self.tx_in_use = self.advertised_tx;
            self.rx_in_use = self.advertised_rx;
        }
        match (self.state, packet.state) {
            (State::Init | State::Up, State::AdminDown | State::Down) => {
                self.change_state(
                    State::Down,
                    Diagnostic::NeighborSignaledSessionDown,
                    actions,
                );
            }
            (State::Down, State::Down) => {
                self.change_state(State::Init, Diagnostic::None, actions);
            }
            (State::Down, State::Init) | (State::Init, State::Init | State::Up) => {
                self.change_state(State::Up, Diagnostic::None, actions);
            }
            _ => {}
        }
        if packet.poll {
            self.send(true, actions);
        }
        if let Some(detect) = self.detection_time() {
            actions.push(Action::Arm(Timer::Detect, detect));
        }
        self.schedule_transmit(actions);
    }

    /// §6.8.4: the peer said nothing for the detection time.
    fn detection_time_passed(&mut self, actions: &mut Vec<Action>) {
        self.remote_discriminator = 0;
        self.remote_detect_mult = 0;
        self.remote_state = State::Down;
        self.remote_demand = false;
        if matches!(self.state, State::Init | State::Up) {
            self.change_state(
                State::Down,
                Diagnostic::ControlDetectionTimeExpired,
                actions,
            );
        } else {
            self.schedule_transmit(actions);
        }
    }

    fn change_state(&mut self, to: State, diagnostic: Diagnostic, actions: &mut Vec<Action>) {
        let from = self.state;
        self.state = to;
        self.local_diagnostic = diagnostic;
        actions.push(Action::Report(Event::StateChanged {
            from,
            to,
            diagnostic,
        }));
        self.renegotiate();
        // The peer hears of the change at once, not at the next periodic packet.
        self.send(false, actions);
        self.schedule_transmit(actions);
    }

    /// Brings the advertised intervals in line with the configuration and the state; true
    /// when they changed. While Up a change starts a poll sequence; what would make either
    /// side less watchful waits for its end.
    fn renegotiate(&mut self) -> bool {
        let tx = if self.state == State::Up {
            self.config.desired_min_tx
        } else {
            self.config.desired_min_tx.max(SLOW_TX)
        };
        let rx = self.config.required_min_rx;
        if tx == self.advertised_tx && rx == self.advertised_rx {
            return false;
        }
        self.advertised_tx = tx;
        self.advertised_rx = rx;
        if self.state == State::Up {
            self.polling = true;
            self.tx_in_use = self.tx_in_use.min(tx);
            self.rx_in_use = self.rx_in_use.max(rx);
        } else {
            self.polling = false;
            self.tx_in_use = tx;
            self.rx_in_use = rx;
        }
        true
    }

    /// The packet this session sends now; `final_` answers a poll.
    fn packet(&self, final_: bool) -> ControlPacket {
        ControlPacket {
            diagnostic: self.local_diagnostic,
            state: self.state,
            poll: self.polling && !final_,
            final_,
            control_plane_independent: false,
            demand: false,
            detect_mult: self.config.detect_mult,
            my_discriminator: self.local_discriminator,
            your_discriminator: self.remote_discriminator,
            desired_min_tx_us: to_micros(self.advertised_tx),
            required_min_rx_us: to_micros(self.advertised_rx),
            required_min_echo_rx_us: 0,
        }
    }

    fn send(&self, final_: bool, actions: &mut Vec<Action>) {
        // §6.8.7: a passive system says nothing until spoken to.
        if self.config.passive && self.remote_discriminator == 0 {
            return;
        }
        actions.push(Action::Send(self.packet(final_)));
    }

    /// Arms the Transmit timer when the agreed interval changed (at once, so a faster rate
    /// is not held back by a timer armed for the slower one), or disarms it.
    fn schedule_transmit(&mut self, actions: &mut Vec<Action>) {
        let interval = self.transmit_interval();
        if interval == self.transmitting {
            return;
        }
        self.transmitting = interval;
        match interval {
            Some(interval) => {
                let next = self.jittered(interval);
                actions.push(Action::Arm(Timer::Transmit, next));
            }
            None => actions.push(Action::Disarm(Timer::Transmit)),
        }
    }

    /// `interval` less a random 0–25 % (10–25 % with a multiplier of 1), §6.8.7.
    fn jittered(&mut self, interval: Duration) -> Duration {
        // xorshift64*: enough to keep systems from sending in step.
        self.random ^= self.random >> 12;
        self.random ^= self.random << 25;
        self.random ^= self.random >> 27;
        let random = self.random.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32;
        let highest = if self.config.detect_mult == 1 {
            900
        } else {
            1000
        };
        let permille = 750 + (random % (highest - 750 + 1)) as u32;
        // A factor below one: no overflow, whatever the interval.
        interval.mul_f64(f64::from(permille) / 1000.0)
    }
}
