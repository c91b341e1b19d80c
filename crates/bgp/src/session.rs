//! One BGP session as a sans-IO state machine (RFC 4271 §8): inputs in, actions out; the
//! driver owns the socket and the clock.
//!
//! ```text
//!            Start / ConnectRetry timer                 TCP up: send OPEN
//!   Idle ─────────────────────────────► Connect ─────────────────────────► OpenSent
//!    ▲ ▲                                   │ connect failed                    │ OPEN valid:
//!    │ └── Stop                            ▼                                   │ send KEEPALIVE
//!    │                                   Active ◄── any error: NOTIFICATION,   ▼
//!    │                                (retry timer,  close, back off      OpenConfirm
//!    │                                 backing off)                            │ KEEPALIVE
//!    └───────────────────────────────────────────────────────────────── Established
//!                                                   routes + End-of-RIB sent on entry
//! ```
//!
//! Herald opens every session itself and never listens, so there is no connection
//! collision to resolve (§6.8). The session keeps the routes it should advertise
//! ([`Session::set_routes`]) and what the peer has from it, and sends only the difference.
//! Timers are [`Action::Arm`] / [`Action::Disarm`]; the driver feeds expiries back as
//! [`Input::Timer`].

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use herald_domain::{Family, Prefix};

use crate::wire::{
    self, Capabilities, GracefulRestart, Message, Notification, Open, PathAttributes,
    codes::{afi_safi, error},
};

/// The hold time while waiting for the peer's OPEN (§8: "a large value", 4 minutes).
const OPEN_HOLD_TIME: Duration = Duration::from_secs(240);
/// The longest wait between connection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The session's states (§8.2.2). Herald never waits for an incoming connection, so
/// `Active` here means "waiting to connect again after a failure".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Idle => "Idle",
            State::Connect => "Connect",
            State::Active => "Active",
            State::OpenSent => "OpenSent",
            State::OpenConfirm => "OpenConfirm",
            State::Established => "Established",
        }
    }
}

/// The timers a session asks its driver for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    ConnectRetry,
    Hold,
    Keepalive,
}

/// How a session is set up; a change of any of it means a new session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub local_asn: u32,
    pub peer_asn: u32,
    pub router_id: Ipv4Addr,
    /// Proposed hold time in seconds: 0 (no keepalives) or at least 3.
    pub hold_time: u16,
    /// Seconds between KEEPALIVEs; a third of the negotiated hold time by default.
    pub keepalive_time: Option<u16>,
    /// The first wait before connecting again; it doubles per failure up to [`MAX_BACKOFF`].
    pub connect_retry: Duration,
    /// The routes' family: that of the transport (IPv4 routes over IPv4, IPv6 over IPv6).
    pub family: Family,
    /// Advertise graceful restart (RFC 4724) with this restart time in seconds.
    pub graceful_restart: Option<u16>,
}

impl Config {
    fn is_ibgp(&self) -> bool {
        self.local_asn == self.peer_asn
    }
}

/// What a route carries besides its prefix; the session adds next hop, AS path and what
/// depends on the session's kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteAttributes {
    /// LOCAL_PREF, sent to iBGP peers only (100 when unset).
    pub local_pref: Option<u32>,
    pub communities: Vec<u32>,
    pub large_communities: Vec<[u32; 3]>,
    /// The link-bandwidth extended community, in octets per second.
    pub link_bandwidth: Option<BandwidthBits>,
}

/// An `f32` bandwidth kept as its bits, so attributes can be compared and ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BandwidthBits(pub u32);

impl BandwidthBits {
    pub fn new(octets_per_second: f32) -> BandwidthBits {
        BandwidthBits(octets_per_second.to_bits())
    }

    pub fn get(self) -> f32 {
        f32::from_bits(self.0)
    }
}

/// What the driver feeds the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input<'a> {
    /// Begin connecting.
    Start,
    /// Stop: with `graceful`, close without a NOTIFICATION so that a peer supporting graceful
    /// restart keeps the routes while the speaker restarts; otherwise send Cease
    /// (administrative shutdown) so the peer withdraws them at once.
    Stop {
        graceful: bool,
    },
    /// The TCP connection is up; `local` is this end's address, the next hop of the routes.
    Connected {
        local: IpAddr,
    },
    ConnectFailed,
    /// Bytes read from the connection.
    Received(&'a [u8]),
    /// The peer closed the connection, or reading or writing failed.
    Closed,
    Timer(Timer),
}

/// What the session asks of the driver, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Connect,
    Send(Vec<u8>),
    /// Close the connection (after sending what came before).
    Close,
    Arm(Timer, Duration),
    Disarm(Timer),
    /// Something to report: state changes, NOTIFICATIONs, UPDATEs.
    Report(Event),
}

/// What happened, for status, logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    StateChanged {
        from: State,
        to: State,
    },
    NotificationSent(Notification),
    NotificationReceived(Notification),
    /// UPDATE messages sent, with the prefixes now advertised to the peer.
    UpdatesSent {
        messages: usize,
        advertised: usize,
    },
    /// The peer's OPEN was accepted; what was agreed.
    Negotiated {
        hold_time: u16,
        peer_router_id: Ipv4Addr,
        graceful_restart: bool,
    },
}

/// One BGP session.
#[derive(Debug)]
pub struct Session {
    config: Config,
    state: State,
    /// Bytes received and not yet decoded.
    inbox: Vec<u8>,
    local_address: Option<IpAddr>,
    /// The negotiated hold time and keepalive interval; `None` when hold time 0 was agreed.
    hold_interval: Option<Duration>,
    keepalive_interval: Option<Duration>,
    /// Whether the peer speaks 4-octet AS numbers.
    four_octet_as: bool,
    failures: u32,
    /// State of the generator that jitters the connect-retry wait.
    random: u64,
    /// The first OPEN after the speaker started sets the restart bit (RFC 4724 §3).
    restarted: bool,
    desired: BTreeMap<Prefix, RouteAttributes>,
    /// What the peer has from this session, with the attributes as sent.
    advertised: BTreeMap<Prefix, PathAttributes>,
}

impl Session {
    /// A session of `config`. Its retry jitter is seeded from the router ID and ASNs; the
    /// driver gives each session a seed of its own ([`Session::with_jitter_seed`]), so that
    /// nodes sharing a router ID still do not reconnect in step.
    pub fn new(config: Config) -> Session {
        let seed = u64::from(u32::from(config.router_id)) << 32
            ^ u64::from(config.local_asn) << 16
            ^ u64::from(config.peer_asn);
        Session {
            random: seed | 1,
            config,
            state: State::Idle,
            inbox: Vec::new(),
            local_address: None,
            hold_interval: None,
            keepalive_interval: None,
            four_octet_as: false,
            failures: 0,
            restarted: true,
            desired: BTreeMap::new(),
            advertised: BTreeMap::new(),
        }
    }

    /// The session with its retry jitter seeded by `seed` (mixed, so that nearby seeds give
    /// unrelated sequences).
    pub fn with_jitter_seed(mut self, seed: u64) -> Session {
        let mut mixed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        self.random = (mixed ^ (mixed >> 31)) | 1;
        self
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The prefixes the peer has from this session.
    pub fn advertised(&self) -> &BTreeMap<Prefix, PathAttributes> {
        &self.advertised
    }

    /// Handles one input.
    pub fn handle(&mut self, input: Input<'_>) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Start => {
                if self.state == State::Idle {
                    self.connect(&mut out);
                }
            }
            Input::Stop { graceful } => {
                if matches!(
                    self.state,
                    State::OpenSent | State::OpenConfirm | State::Established
                ) && !graceful
                {
                    self.notify(
                        &mut out,
                        Notification::cease(error::cease::ADMINISTRATIVE_SHUTDOWN),
                    );
                }
                self.reset(&mut out);
                out.push(Action::Disarm(Timer::ConnectRetry));
                self.move_to(&mut out, State::Idle);
            }
            Input::Connected { local } => {
                if self.state == State::Connect {
                    self.local_address = Some(local);
                    out.push(Action::Send(wire::encode_open(&self.open())));
                    out.push(Action::Arm(Timer::Hold, OPEN_HOLD_TIME));
                    self.move_to(&mut out, State::OpenSent);
                } else {
                    out.push(Action::Close);
                }
            }
            Input::ConnectFailed => {
                if self.state == State::Connect {
                    self.back_off(&mut out);
                }
            }
            Input::Closed => {
                if !matches!(self.state, State::Idle | State::Active) {
                    self.reset(&mut out);
                    self.back_off(&mut out);
                }
            }
            Input::Received(bytes) => {
                if matches!(
                    self.state,
                    State::OpenSent | State::OpenConfirm | State::Established
                ) {
                    self.inbox.extend_from_slice(bytes);
                    self.drain(&mut out);
                }
            }
            Input::Timer(Timer::ConnectRetry) => {
                if self.state == State::Active {
                    self.connect(&mut out);
                }
            }
            Input::Timer(Timer::Hold) => {
                if matches!(
                    self.state,
                    State::OpenSent | State::OpenConfirm | State::Established
                ) {
                    self.fail(&mut out, Notification::hold_timer_expired());
                }
            }
            Input::Timer(Timer::Keepalive) => {
                if matches!(self.state, State::OpenConfirm | State::Established) {
                    out.push(Action::Send(wire::encode_keepalive()));
                    if let Some(interval) = self.keepalive_interval {
                        out.push(Action::Arm(Timer::Keepalive, interval));
                    }
                }
            }
        }
        out
    }

    /// Replaces the routes to advertise; sends the difference when established.
    pub fn set_routes(&mut self, routes: BTreeMap<Prefix, RouteAttributes>) -> Vec<Action> {
        self.desired = routes;
        let mut out = Vec::new();
        if self.state == State::Established {
            self.send_difference(&mut out);
        }
        out
    }

    fn open(&mut self) -> Open {
        let families = [self.config.family].into_iter().collect();
        let graceful_restart = self
            .config
            .graceful_restart
            .map(|restart_time| GracefulRestart {
                restarting: self.restarted,
                restart_time,
                // The kernel keeps forwarding while the speaker restarts: the routes stay good.
                families: vec![(self.config.family, true)],
            });
        Open {
            asn: self.config.local_asn,
            hold_time: self.config.hold_time,
            router_id: self.config.router_id,
            capabilities: Capabilities {
                four_octet_as: Some(self.config.local_asn),
                families,
                route_refresh: true,
                graceful_restart,
            },
        }
    }

    fn connect(&mut self, out: &mut Vec<Action>) {
        out.push(Action::Connect);
        self.move_to(out, State::Connect);
    }

    fn move_to(&mut self, out: &mut Vec<Action>, to: State) {
        if self.state != to {
            out.push(Action::Report(Event::StateChanged {
                from: self.state,
                to,
            }));
            self.state = to;
        }
    }

    fn notify(&mut self, out: &mut Vec<Action>, notification: Notification) {
        out.push(Action::Send(wire::encode_notification(&notification)));
        out.push(Action::Report(Event::NotificationSent(notification)));
    }

    /// Drops the connection and what depended on it.
    fn reset(&mut self, out: &mut Vec<Action>) {
        out.push(Action::Close);
        out.push(Action::Disarm(Timer::Hold));
        out.push(Action::Disarm(Timer::Keepalive));
        self.inbox.clear();
        self.local_address = None;
        self.hold_interval = None;
        self.keepalive_interval = None;
        if !self.advertised.is_empty() {
            self.advertised.clear();
            out.push(Action::Report(Event::UpdatesSent {
                messages: 0,
                advertised: 0,
            }));
        }
    }

    /// Waits before connecting again, twice as long after each failure in a row, less a
    /// random 0–25 % (RFC 4271 §10), so that the nodes of a cluster do not reconnect in step
    /// after their router restarts.
    fn back_off(&mut self, out: &mut Vec<Action>) {
        let factor = 1u32 << self.failures.min(16);
        let wait = self
            .config
            .connect_retry
            .saturating_mul(factor)
            .min(MAX_BACKOFF);
        self.failures = self.failures.saturating_add(1);
        let wait = self.jittered(wait);
        out.push(Action::Arm(Timer::ConnectRetry, wait));
        self.move_to(out, State::Active);
    }

    /// `wait` times a factor drawn uniformly from 0.75 to 1.0.
    fn jittered(&mut self, wait: Duration) -> Duration {
        // xorshift64*: enough to keep nodes from retrying in step.
        self.random ^= self.random >> 12;
        self.random ^= self.random << 25;
        self.random ^= self.random >> 27;
        let random = self.random.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32;
        let permille = 750 + u32::try_from(random % 251).unwrap_or(0);
        wait.mul_f64(f64::from(permille) / 1000.0)
    }

    /// Ends the session on an error: NOTIFICATION, close, back off (§6).
    fn fail(&mut self, out: &mut Vec<Action>, notification: Notification) {
        self.notify(out, notification);
        self.reset(out);
        self.back_off(out);
    }

    fn drain(&mut self, out: &mut Vec<Action>) {
        loop {
            match wire::decode(&self.inbox) {
                Ok(None) => return,
                Ok(Some((message, used))) => {
                    self.inbox.drain(..used);
                    self.receive(out, message);
                    if !matches!(
                        self.state,
                        State::OpenSent | State::OpenConfirm | State::Established
                    ) {
                        return;
                    }
                }
                Err(notification) => {
                    self.fail(out, notification);
                    return;
                }
            }
        }
    }

    fn receive(&mut self, out: &mut Vec<Action>, message: Message) {
        if let Message::Notification(notification) = message {
            out.push(Action::Report(Event::NotificationReceived(notification)));
            self.reset(out);
            self.back_off(out);
            return;
        }
        match (self.state, message) {
            (State::OpenSent, Message::Open(open)) => self.accept_open(out, open),
            (State::OpenConfirm, Message::Keepalive) => {
                self.restart_hold(out);
                self.failures = 0;
                self.restarted = false;
                self.move_to(out, State::Established);
                self.send_difference(out);
                out.push(Action::Send(wire::encode_end_of_rib(self.config.family)));
            }
            (State::Established, Message::Keepalive | Message::Update(_)) => self.restart_hold(out),
            (State::Established, Message::RouteRefresh(family)) => {
                self.restart_hold(out);
                if family == Some(self.config.family) {
                    self.advertised.clear();
                    self.send_difference(out);
                }
            }
            // A message the state does not expect (RFC 6608 subcodes by state).
            (state, _) => {
                let subcode = match state {
                    State::OpenSent => error::fsm::UNEXPECTED_IN_OPEN_SENT,
                    State::OpenConfirm => error::fsm::UNEXPECTED_IN_OPEN_CONFIRM,
                    _ => error::fsm::UNEXPECTED_IN_ESTABLISHED,
                };
                self.fail(out, Notification::fsm(subcode));
            }
        }
    }

    fn restart_hold(&self, out: &mut Vec<Action>) {
        if let Some(hold) = self.hold_interval {
            out.push(Action::Arm(Timer::Hold, hold));
        }
    }

    fn accept_open(&mut self, out: &mut Vec<Action>, open: Open) {
        if open.asn != self.config.peer_asn {
            return self.fail(out, Notification::open(error::open::BAD_PEER_AS));
        }
        if self.config.is_ibgp() && open.router_id == self.config.router_id {
            return self.fail(out, Notification::open(error::open::BAD_BGP_IDENTIFIER));
        }
        let families = &open.capabilities.families;
        let carries_family = families.contains(&self.config.family)
            || (families.is_empty() && self.config.family == Family::Ipv4);
        if !carries_family {
            // RFC 5492 §5: the capability this speaker needs (multiprotocol, 4 octets), in the
            // data.
            let (afi, safi) = afi_safi(self.config.family);
            let [afi_high, afi_low] = afi.to_be_bytes();
            return self.fail(
                out,
                Notification::new(
                    error::OPEN_MESSAGE,
                    error::open::UNSUPPORTED_CAPABILITY,
                    vec![1, 4, afi_high, afi_low, 0, safi],
                ),
            );
        }
        self.four_octet_as = open.capabilities.four_octet_as.is_some();
        let hold_time = self.config.hold_time.min(open.hold_time);
        if hold_time == 0 {
            self.hold_interval = None;
            self.keepalive_interval = None;
            out.push(Action::Disarm(Timer::Hold));
        } else {
            let keepalive = self
                .config
                .keepalive_time
                .unwrap_or(hold_time / 3)
                .clamp(1, (hold_time / 3).max(1));
            self.hold_interval = Some(Duration::from_secs(hold_time.into()));
            self.keepalive_interval = Some(Duration::from_secs(keepalive.into()));
        }
        out.push(Action::Report(Event::Negotiated {
            hold_time,
            peer_router_id: open.router_id,
            graceful_restart: self.config.graceful_restart.is_some()
                && open.capabilities.graceful_restart.is_some(),
        }));
        out.push(Action::Send(wire::encode_keepalive()));
        self.restart_hold(out);
        if let Some(interval) = self.keepalive_interval {
            out.push(Action::Arm(Timer::Keepalive, interval));
        }
        self.move_to(out, State::OpenConfirm);
    }

    /// The path attributes of a route toward this peer.
    fn path_attributes(&self, attributes: &RouteAttributes, next_hop: IpAddr) -> PathAttributes {
        let ibgp = self.config.is_ibgp();
        PathAttributes {
            next_hop,
            as_path: if ibgp {
                Vec::new()
            } else {
                vec![self.config.local_asn]
            },
            local_pref: ibgp.then(|| attributes.local_pref.unwrap_or(100)),
            communities: attributes.communities.clone(),
            extended_communities: attributes
                .link_bandwidth
                .map(|bw| wire::link_bandwidth(self.config.local_asn, bw.get()))
                .into_iter()
                .collect(),
            large_communities: attributes.large_communities.clone(),
        }
    }

    /// Sends withdrawals and announcements so that the peer has exactly the desired routes
    /// of the session's family.
    fn send_difference(&mut self, out: &mut Vec<Action>) {
        let Some(next_hop) = self.local_address else {
            return;
        };
        let family = self.config.family;
        let wanted: BTreeMap<Prefix, PathAttributes> = self
            .desired
            .iter()
            .filter(|(prefix, _)| prefix.family() == family)
            .map(|(prefix, attrs)| (*prefix, self.path_attributes(attrs, next_hop)))
            .collect();
        let withdrawn: Vec<Prefix> = self
            .advertised
            .keys()
            .filter(|p| !wanted.contains_key(p))
            .copied()
            .collect();
        let mut by_attributes: BTreeMap<&PathAttributes, Vec<Prefix>> = BTreeMap::new();
        for (prefix, attrs) in &wanted {
            if self.advertised.get(prefix) != Some(attrs) {
                by_attributes.entry(attrs).or_default().push(*prefix);
            }
        }
        let mut messages = wire::encode_withdrawals(&withdrawn);
        for (attrs, prefixes) in &by_attributes {
            messages.extend(wire::encode_announcements(
                attrs,
                prefixes,
                self.four_octet_as,
            ));
        }
        if messages.is_empty() {
            return;
        }
        let count = messages.len();
        out.extend(messages.into_iter().map(Action::Send));
        self.advertised = wanted;
        out.push(Action::Report(Event::UpdatesSent {
            messages: count,
            advertised: self.advertised.len(),
        }));
        // Any message sent counts as a keepalive; the timer keeps its own pace, which is
        // simpler and at worst sends one KEEPALIVE more.
    }
}
