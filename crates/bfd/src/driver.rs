//! Runs this system's BFD sessions with tokio: one task for all of them, the UDP sockets, the
//! timers, and each session's status.
//!
//! ```text
//!   Endpoint::add(peer, config) ──► SessionHandle { status: watch }   (configure, admin_down;
//!                                                                       dropped: AdminDown, gone)
//!   readers: UDP 3784 (single hop) / 4784 (multihop), v4 and v6, TTL of each datagram
//!      │ datagram ──► decode (refusals counted by reason) ──► TTL check ──► session by
//!      ▼              discriminator, or by peer address while the peer does not know ours
//!   task: Session::handle ──► send (connected socket from a port in 49152–65535, TTL 255),
//!                             timers, status
//! ```
//!
//! RFC 5881 §5: single-hop packets are sent with TTL (hop limit) 255 and only those received
//! with 255 are accepted, so nothing further away than the link can speak for the peer.
//! RFC 5883: multihop packets go to port 4784 and are accepted from the peer's address with at
//! least the session's minimum TTL.

use std::{
    collections::BTreeMap,
    hash::{BuildHasher, Hasher},
    io::{self, IoSliceMut},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsRawFd,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::{
    io::Interest,
    net::UdpSocket,
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
    time::Instant,
};
use tracing::{debug, info, warn};

use crate::{
    Action, Config, Diagnostic, Event, Input, Session, State, Timer,
    packet::{self, MULTIHOP_PORT, PACKET_LEN, SINGLE_HOP_PORT},
};

/// The TTL single-hop packets are sent and must arrive with (RFC 5881 §5).
const SINGLE_HOP_TTL: u8 = 255;
/// Source ports of control packets (RFC 5881 §4).
const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;
/// Datagrams read but not handled yet; beyond this they are dropped (and counted).
const DATAGRAM_QUEUE: usize = 1024;

/// Who a session is with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub address: IpAddr,
    /// The local address to send from; the kernel's choice when `None`.
    pub source: Option<IpAddr>,
    /// RFC 5883 (port 4784, any number of hops) instead of RFC 5881.
    pub multihop: bool,
    /// Multihop only: the lowest TTL a packet of the peer may arrive with.
    pub minimum_ttl: u8,
}

/// A session as others see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub state: State,
    /// Why the session last changed state here.
    pub local_diagnostic: Diagnostic,
    pub remote_state: State,
    pub remote_diagnostic: Diagnostic,
    /// The agreed interval between this side's packets, before jitter.
    pub transmit_interval: Option<Duration>,
    /// How long the peer may be silent before it is declared down.
    pub detection_time: Option<Duration>,
}

impl Status {
    fn of(session: &Session) -> Status {
        Status {
            state: session.state(),
            local_diagnostic: session.local_diagnostic(),
            remote_state: session.remote_state(),
            remote_diagnostic: session.remote_diagnostic(),
            transmit_interval: session.transmit_interval(),
            detection_time: session.detection_time(),
        }
    }
}

/// What the endpoint counts, for metrics.
#[derive(Debug, Default)]
pub struct Counters {
    pub packets_received: AtomicU64,
    pub packets_sent: AtomicU64,
    /// Datagrams dropped, by reason: a [`packet::DecodeError::reason`], `ttl`,
    /// `unknown_session`, `send_failed` or `queue_full`.
    dropped: Mutex<BTreeMap<&'static str, u64>>,
    /// State changes, by the state entered and the diagnostic given.
    transitions: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl Counters {
    fn drop_one(&self, reason: &'static str) {
        let mut dropped = self.dropped.lock().unwrap_or_else(|e| e.into_inner());
        *dropped.entry(reason).or_default() += 1;
    }

    /// Datagrams dropped so far, by reason.
    pub fn dropped(&self) -> BTreeMap<&'static str, u64> {
        self.dropped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn transition(&self, to: State, diagnostic: Diagnostic) {
        let mut transitions = self.transitions.lock().unwrap_or_else(|e| e.into_inner());
        *transitions
            .entry((to.name(), diagnostic.name()))
            .or_default() += 1;
    }

    /// State changes of every session so far, by (state entered, diagnostic).
    pub fn transitions(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        self.transitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

enum Command {
    Add {
        peer: Peer,
        config: Config,
        reply: oneshot::Sender<io::Result<(u32, watch::Receiver<Status>)>>,
    },
    Input(u32, Input),
    Remove(u32),
}

/// This system's BFD sessions, run by one task.
#[derive(Debug)]
pub struct Endpoint {
    commands: mpsc::UnboundedSender<Command>,
    pub counters: Arc<Counters>,
    /// Bumped whenever a session changes state.
    changes: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One session; dropping it takes the session down (the peer is told AdminDown) and away.
#[derive(Debug)]
pub struct SessionHandle {
    discriminator: u32,
    commands: mpsc::UnboundedSender<Command>,
    pub status: watch::Receiver<Status>,
}

impl SessionHandle {
    /// New intervals, multiplier or role; renegotiated without a flap while Up.
    pub fn configure(&self, config: Config) {
        let _ = self
            .commands
            .send(Command::Input(self.discriminator, Input::Configure(config)));
    }

    /// Takes the session down on purpose (AdminDown) or back (`false`).
    pub fn set_admin_down(&self, down: bool) {
        let input = if down { Input::AdminDown } else { Input::Start };
        let _ = self
            .commands
            .send(Command::Input(self.discriminator, input));
    }

    pub fn discriminator(&self) -> u32 {
        self.discriminator
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Remove(self.discriminator));
    }
}

impl Endpoint {
    /// Starts the task; sockets are opened as sessions need them.
    pub fn spawn() -> Endpoint {
        Endpoint::counting_into(Arc::default())
    }

    /// [`Endpoint::spawn`], counting into `counters` (shared with whoever exports them).
    pub fn counting_into(counters: Arc<Counters>) -> Endpoint {
        let (commands, receive) = mpsc::unbounded_channel();
        let (datagrams, incoming) = mpsc::channel(DATAGRAM_QUEUE);
        let (changed, changes) = watch::channel(0);
        let task = Task {
            changed,
            sessions: BTreeMap::new(),
            readers: BTreeMap::new(),
            datagrams,
            counters: counters.clone(),
            random: std::hash::RandomState::new().build_hasher().finish(),
        };
        Endpoint {
            commands,
            counters,
            changes,
            task: tokio::spawn(task.run(receive, incoming)),
        }
    }

    /// Changes whenever any session changes state: a cue to look at the sessions' status.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// Starts a session with `peer`. Fails when its sockets cannot be opened (the port taken
    /// by another BFD implementation, no such source address).
    pub async fn add(&self, peer: Peer, config: Config) -> io::Result<SessionHandle> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Add {
                peer,
                config,
                reply,
            })
            .map_err(|_| io::Error::other("the BFD task has ended"))?;
        let (discriminator, status) = answer
            .await
            .map_err(|_| io::Error::other("the BFD task has ended"))??;
        Ok(SessionHandle {
            discriminator,
            commands: self.commands.clone(),
            status,
        })
    }
}

/// One datagram as a reader saw it.
struct Datagram {
    from: IpAddr,
    ttl: Option<u8>,
    multihop: bool,
    bytes: [u8; PACKET_LEN + 64],
    len: usize,
}

struct Running {
    session: Session,
    peer: Peer,
    socket: UdpSocket,
    timers: BTreeMap<Timer, Instant>,
    status: watch::Sender<Status>,
}

struct Task {
    changed: watch::Sender<u64>,
    sessions: BTreeMap<u32, Running>,
    /// Readers by (multihop, IPv6).
    readers: BTreeMap<(bool, bool), JoinHandle<()>>,
    datagrams: mpsc::Sender<Datagram>,
    counters: Arc<Counters>,
    random: u64,
}

impl Drop for Task {
    fn drop(&mut self) {
        for reader in self.readers.values() {
            reader.abort();
        }
    }
}

impl Task {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut incoming: mpsc::Receiver<Datagram>,
    ) {
        loop {
            let next = self
                .sessions
                .values()
                .flat_map(|r| r.timers.values())
                .min()
                .copied();
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.command(command),
                    None => break,
                },
                Some(datagram) = incoming.recv() => self.datagram(&datagram),
                () = sleep_until(next) => self.expire(Instant::now()),
            }
        }
        for discriminator in self.sessions.keys().copied().collect::<Vec<_>>() {
            self.remove(discriminator);
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Add {
                peer,
                config,
                reply,
            } => {
                let _ = reply.send(self.add(peer, config));
            }
            Command::Input(discriminator, input) => self.input(discriminator, input),
            Command::Remove(discriminator) => self.remove(discriminator),
        }
    }

    fn add(&mut self, peer: Peer, config: Config) -> io::Result<(u32, watch::Receiver<Status>)> {
        let family = peer.address.is_ipv6();
        if !self.readers.contains_key(&(peer.multihop, family)) {
            let reader = open_reader(peer.multihop, family)?;
            let datagrams = self.datagrams.clone();
            let counters = self.counters.clone();
            let task = tokio::spawn(read(reader, peer.multihop, datagrams, counters));
            self.readers.insert((peer.multihop, family), task);
        }
        let socket = open_sender(&peer, self.next_random())?;
        let discriminator = loop {
            let candidate = (self.next_random() as u32).max(1);
            if !self.sessions.contains_key(&candidate) {
                break candidate;
            }
        };
        let session = Session::new(config, discriminator, self.next_random());
        let (status, receiver) = watch::channel(Status::of(&session));
        info!(peer = %peer.address, multihop = peer.multihop, discriminator, "starting BFD session");
        self.sessions.insert(
            discriminator,
            Running {
                session,
                peer,
                socket,
                timers: BTreeMap::new(),
                status,
            },
        );
        self.input(discriminator, Input::Start);
        Ok((discriminator, receiver))
    }

    fn remove(&mut self, discriminator: u32) {
        // The peer hears AdminDown (not a failure) before the session goes.
        self.input(discriminator, Input::AdminDown);
        if let Some(running) = self.sessions.remove(&discriminator) {
            info!(peer = %running.peer.address, discriminator, "BFD session removed");
        }
    }

    fn input(&mut self, discriminator: u32, input: Input) {
        let Some(running) = self.sessions.get_mut(&discriminator) else {
            return;
        };
        let before = running.session.state();
        let actions = running.session.handle(input);
        running.apply(actions, &self.counters);
        if running.session.state() != before {
            self.changed.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    fn expire(&mut self, now: Instant) {
        let due: Vec<(u32, Timer)> = self
            .sessions
            .iter()
            .flat_map(|(d, r)| {
                r.timers
                    .iter()
                    .filter(|(_, at)| **at <= now)
                    .map(|(t, _)| (*d, *t))
            })
            .collect();
        for (discriminator, timer) in due {
            if let Some(running) = self.sessions.get_mut(&discriminator) {
                running.timers.remove(&timer);
            }
            self.input(discriminator, Input::Timer(timer));
        }
    }

    fn datagram(&mut self, datagram: &Datagram) {
        let packet = match packet::decode(&datagram.bytes[..datagram.len]) {
            Ok(packet) => packet,
            Err(e) => {
                debug!(from = %datagram.from, error = %e, "BFD packet dropped");
                self.counters.drop_one(e.reason());
                return;
            }
        };
        let (from, multihop) = (datagram.from, datagram.multihop);
        let found = if packet.your_discriminator != 0 {
            self.sessions
                .get(&packet.your_discriminator)
                .filter(|r| r.peer.address == from && r.peer.multihop == multihop)
                .map(|_| packet.your_discriminator)
        } else {
            self.sessions
                .iter()
                .find(|(_, r)| r.peer.address == from && r.peer.multihop == multihop)
                .map(|(d, _)| *d)
        };
        let Some(discriminator) = found else {
            self.counters.drop_one("unknown_session");
            return;
        };
        let running = &self.sessions[&discriminator];
        let lowest = if multihop {
            running.peer.minimum_ttl
        } else {
            SINGLE_HOP_TTL
        };
        if datagram.ttl.is_none_or(|ttl| ttl < lowest) {
            self.counters.drop_one("ttl");
            return;
        }
        self.counters
            .packets_received
            .fetch_add(1, Ordering::Relaxed);
        self.input(discriminator, Input::Received(packet));
    }

    fn next_random(&mut self) -> u64 {
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        self.random
    }
}

impl Running {
    fn apply(&mut self, actions: Vec<Action>, counters: &Counters) {
        let now = Instant::now();
        for action in actions {
            match action {
                Action::Send(packet) => match self.socket.try_send(&packet.encode()) {
                    Ok(_) => {
                        counters.packets_sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        debug!(peer = %self.peer.address, error = %e, "sending a BFD packet");
                        counters.drop_one("send_failed");
                    }
                },
                Action::Arm(timer, after) => {
                    self.timers.insert(timer, now + after);
                }
                Action::Disarm(timer) => {
                    self.timers.remove(&timer);
                }
                Action::Report(Event::StateChanged {
                    from,
                    to,
                    diagnostic,
                }) => {
                    info!(peer = %self.peer.address, from = from.name(), to = to.name(),
                        diagnostic = diagnostic.name(), "BFD session state changed");
                    counters.transition(to, diagnostic);
                }
                Action::Report(Event::Ignored { .. }) => counters.drop_one("unknown_session"),
            }
        }
        let status = Status::of(&self.session);
        self.status.send_if_modified(|current| {
            let changed = *current != status;
            if changed {
                *current = status;
            }
            changed
        });
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The socket control packets of one kind and family arrive on, with each datagram's TTL.
fn open_reader(multihop: bool, ipv6: bool) -> io::Result<UdpSocket> {
    let port = if multihop {
        MULTIHOP_PORT
    } else {
        SINGLE_HOP_PORT
    };
    let (domain, any) = if ipv6 {
        (Domain::IPV6, IpAddr::V6(Ipv6Addr::UNSPECIFIED))
    } else {
        (Domain::IPV4, IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if ipv6 {
        socket.set_only_v6(true)?;
        setsockopt(&socket, sockopt::Ipv6RecvHopLimit, &true)?;
    } else {
        setsockopt(&socket, sockopt::Ipv4RecvTtl, &true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket
        .bind(&SocketAddr::new(any, port).into())
        .map_err(|e| io::Error::new(e.kind(), format!("binding UDP port {port}: {e}")))?;
    UdpSocket::from_std(socket.into())
}

/// Reads datagrams with their TTL until the socket fails.
async fn read(
    socket: UdpSocket,
    multihop: bool,
    datagrams: mpsc::Sender<Datagram>,
    counters: Arc<Counters>,
) {
    let mut control = nix::cmsg_space!(nix::libc::c_int);
    loop {
        let mut datagram = Datagram {
            from: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            ttl: None,
            multihop,
            bytes: [0; PACKET_LEN + 64],
            len: 0,
        };
        let result = socket
            .async_io(Interest::READABLE, || {
                let mut iov = [IoSliceMut::new(&mut datagram.bytes)];
                let message = recvmsg::<SockaddrStorage>(
                    socket.as_raw_fd(),
                    &mut iov,
                    Some(&mut control),
                    MsgFlags::MSG_DONTWAIT,
                )
                .map_err(io::Error::from)?;
                let from = message.address.as_ref().and_then(address_of);
                let ttl = message.cmsgs().ok().and_then(|mut c| {
                    c.find_map(|m| match m {
                        ControlMessageOwned::Ipv4Ttl(ttl)
                        | ControlMessageOwned::Ipv6HopLimit(ttl) => u8::try_from(ttl).ok(),
                        _ => None,
                    })
                });
                Ok((message.bytes, from, ttl))
            })
            .await;
        match result {
            Ok((len, Some(from), ttl)) => {
                datagram.len = len.min(datagram.bytes.len());
                datagram.from = from;
                datagram.ttl = ttl;
                if datagrams.try_send(datagram).is_err() {
                    counters.drop_one("queue_full");
                }
            }
            Ok(_) => {}
            Err(e) => {
                warn!(error = %e, "reading BFD packets; this reader stops");
                return;
            }
        }
    }
}

/// The IP a datagram came from (IPv4-mapped IPv6 addresses as IPv4).
fn address_of(address: &SockaddrStorage) -> Option<IpAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(IpAddr::V4(v4.ip()));
    }
    let v6 = address.as_sockaddr_in6()?.ip();
    Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4))
}

/// The connected socket a session sends from: a free port in 49152–65535, TTL 255.
fn open_sender(peer: &Peer, random: u64) -> io::Result<UdpSocket> {
    let ipv6 = peer.address.is_ipv6();
    let domain = if ipv6 { Domain::IPV6 } else { Domain::IPV4 };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if ipv6 {
        socket.set_unicast_hops_v6(u32::from(SINGLE_HOP_TTL))?;
    } else {
        socket.set_ttl_v4(u32::from(SINGLE_HOP_TTL))?;
    }
    socket.set_nonblocking(true)?;
    let source = peer.source.unwrap_or(if ipv6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    });
    let span = u64::from(SOURCE_PORTS.end() - SOURCE_PORTS.start()) + 1;
    let first = random % span;
    let mut last_error = None;
    for offset in 0..span.min(256) {
        let port = *SOURCE_PORTS.start() + ((first + offset) % span) as u16;
        match socket.bind(&SocketAddr::new(source, port).into()) {
            Ok(()) => {
                last_error = None;
                break;
            }
            Err(e) => last_error = Some(e),
        }
    }
    if let Some(e) = last_error {
        return Err(io::Error::new(
            e.kind(),
            format!("no source port for BFD to {}: {e}", peer.address),
        ));
    }
    let port = if peer.multihop {
        MULTIHOP_PORT
    } else {
        SINGLE_HOP_PORT
    };
    socket.connect(&SocketAddr::new(peer.address, port).into())?;
    UdpSocket::from_std(socket.into())
}
