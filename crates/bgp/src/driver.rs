//! Runs a [`Session`] over TCP with tokio: connects, reads, writes, keeps its timers, and
//! publishes its status.
//!
//! ```text
//!   Handle::set_routes ─► watch ─┐
//!   Handle::stop ────────► watch ─┤
//!   TCP bytes / connect result ───┼─► Session::handle ─► actions ─► socket, timers,
//!   timer expiries ───────────────┘                               status (watch), on_event
//! ```
//!
//! One task per session; it ends after [`Handle::stop`].

use std::{
    collections::BTreeMap,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
    sync::watch,
    task::JoinHandle,
    time::Instant,
};
use tracing::{debug, info, warn};

use herald_domain::Prefix;

use crate::session::{Action, Config, Event, Input, RouteAttributes, Session, State, Timer};

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a write may block before the connection counts as failed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping session waits for its withdrawals to be sent before Cease.
pub const WITHDRAW_WAIT: Duration = Duration::from_secs(1);

/// Where and how to reach the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transport {
    pub peer: SocketAddr,
    /// The local address to connect from; the kernel's choice when `None`.
    pub source: Option<IpAddr>,
    /// The IP TTL (hop limit) of the session's packets: 1 for a directly connected eBGP
    /// peer, so that one further away is never reached by mistake.
    pub ttl: u32,
    /// The TCP MD5 password (RFC 2385), if the session is signed.
    pub password: Option<Password>,
}

/// A TCP MD5 password; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(pub Vec<u8>);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

/// A session's state as others see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub state: State,
    /// Prefixes the peer has from this session.
    pub advertised: usize,
    /// The last transport error (connecting, reading, writing), until Established.
    pub last_error: Option<String>,
    /// The last NOTIFICATION sent or received, until Established: the root cause, which a
    /// retry's transport error does not overwrite.
    pub last_notification: Option<NotificationSeen>,
}

/// A NOTIFICATION as the status keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationSeen {
    /// `sent NOTIFICATION open-message-error, bad peer AS (2/2)`, or `received ...`.
    pub text: String,
    /// When it was first seen: the same NOTIFICATION again on every retry keeps this time.
    pub at: std::time::SystemTime,
}

/// Called for every session event (for metrics and Events).
pub type EventSink = Arc<dyn Fn(&Event) + Send + Sync>;

/// The running session.
#[derive(Debug)]
pub struct Handle {
    routes: watch::Sender<BTreeMap<Prefix, RouteAttributes>>,
    stop: watch::Sender<Option<bool>>,
    pub status: watch::Receiver<Status>,
    task: JoinHandle<()>,
}

impl Handle {
    /// Replaces the routes to advertise.
    pub fn set_routes(&self, routes: BTreeMap<Prefix, RouteAttributes>) {
        self.routes.send_if_modified(|current| {
            let changed = *current != routes;
            *current = routes;
            changed
        });
    }

    /// Stops the session and waits for its task: `graceful` closes without a NOTIFICATION
    /// (the peer keeps the routes if it supports graceful restart); otherwise every route is
    /// withdrawn first (waiting at most [`WITHDRAW_WAIT`] for the UPDATEs to go out), so the
    /// peer moves traffic to its other paths while the session still stands, then Cease.
    pub async fn stop(mut self, graceful: bool) {
        if !graceful {
            self.set_routes(BTreeMap::new());
            let _ = tokio::time::timeout(
                WITHDRAW_WAIT,
                self.status
                    .wait_for(|s| s.advertised == 0 || s.state != State::Established),
            )
            .await;
        }
        let _ = self.stop.send(Some(graceful));
        let _ = self.task.await;
    }
}

/// A seed for a session's retry jitter that differs between processes and sessions.
fn jitter_seed(transport: &Transport) -> u64 {
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut seed = clock ^ u64::from(std::process::id()) << 40;
    for byte in transport.peer.to_string().bytes() {
        seed = (seed ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    seed
}

/// Starts a session toward `transport.peer`.
pub fn spawn(
    name: String,
    config: Config,
    transport: Transport,
    routes: BTreeMap<Prefix, RouteAttributes>,
    on_event: EventSink,
) -> Handle {
    let (routes_tx, routes_rx) = watch::channel(routes);
    let (stop_tx, stop_rx) = watch::channel(None);
    let (status_tx, status_rx) = watch::channel(Status {
        state: State::Idle,
        advertised: 0,
        last_error: None,
        last_notification: None,
    });
    let driver = Driver {
        name,
        session: Session::new(config).with_jitter_seed(jitter_seed(&transport)),
        transport,
        stream: None,
        connecting: None,
        timers: BTreeMap::new(),
        status: status_tx,
        on_event,
    };
    let task = tokio::spawn(driver.run(routes_rx, stop_rx));
    Handle {
        routes: routes_tx,
        stop: stop_tx,
        status: status_rx,
        task,
    }
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

struct Driver {
    name: String,
    session: Session,
    transport: Transport,
    stream: Option<TcpStream>,
    connecting: Option<Connecting>,
    timers: BTreeMap<Timer, Instant>,
    status: watch::Sender<Status>,
    on_event: EventSink,
}

async fn connect(transport: Transport) -> io::Result<TcpStream> {
    let socket = match transport.peer {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(source) = transport.source {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    if let Some(password) = &transport.password {
        crate::md5::set_password(&socket, transport.peer, &password.0)?;
    }
    // Before connecting, so that the SYN already carries it.
    let raw = socket2::SockRef::from(&socket);
    match transport.peer {
        SocketAddr::V4(_) => raw.set_ttl_v4(transport.ttl)?,
        SocketAddr::V6(_) => raw.set_unicast_hops_v6(transport.ttl)?,
    }
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(transport.peer))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connection attempt timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl Driver {
    async fn run(
        mut self,
        mut routes: watch::Receiver<BTreeMap<Prefix, RouteAttributes>>,
        mut stop: watch::Receiver<Option<bool>>,
    ) {
        let initial = routes.borrow_and_update().clone();
        let actions = self.session.set_routes(initial);
        self.apply(actions).await;
        let actions = self.session.handle(Input::Start);
        self.apply(actions).await;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let next_timer = self
                .timers
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(t, at)| (*t, *at));
            let input_actions = tokio::select! {
                result = async { self.connecting.as_mut().expect("guarded").await }, if self.connecting.is_some() => {
                    self.connecting = None;
                    match result {
                        Ok(stream) => {
                            let local = stream.local_addr().map(|a| a.ip());
                            match local {
                                Ok(local) => {
                                    info!(peer = %self.name, %local, "connected");
                                    self.stream = Some(stream);
                                    self.session.handle(Input::Connected { local })
                                }
                                Err(e) => self.connect_failed(&e),
                            }
                        }
                        Err(e) => self.connect_failed(&e),
                    }
                }
                read = async { self.stream.as_mut().expect("guarded").read(&mut buf).await }, if self.stream.is_some() => {
                    match read {
                        Ok(0) => {
                            self.note_error("the peer closed the connection".to_owned());
                            self.session.handle(Input::Closed)
                        }
                        Ok(n) => self.session.handle(Input::Received(&buf[..n])),
                        Err(e) => {
                            self.note_error(format!("reading: {e}"));
                            self.session.handle(Input::Closed)
                        }
                    }
                }
                () = async { tokio::time::sleep_until(next_timer.expect("guarded").1).await }, if next_timer.is_some() => {
                    let timer = next_timer.expect("guarded").0;
                    self.timers.remove(&timer);
                    self.session.handle(Input::Timer(timer))
                }
                changed = routes.changed() => {
                    if changed.is_err() {
                        // The handle is gone: stop as if asked to, without a NOTIFICATION.
                        let actions = self.session.handle(Input::Stop { graceful: true });
                        self.apply(actions).await;
                        return;
                    }
                    let wanted = routes.borrow_and_update().clone();
                    self.session.set_routes(wanted)
                }
                _ = stop.changed() => {
                    let graceful = stop.borrow().unwrap_or(true);
                    let actions = self.session.handle(Input::Stop { graceful });
                    self.apply(actions).await;
                    return;
                }
            };
            self.apply(input_actions).await;
        }
    }

    fn connect_failed(&mut self, error: &io::Error) -> Vec<Action> {
        debug!(peer = %self.name, %error, "connection attempt failed");
        self.note_error(format!("connecting: {error}"));
        self.session.handle(Input::ConnectFailed)
    }

    fn note_error(&self, error: String) {
        self.status.send_modify(|s| s.last_error = Some(error));
    }

    /// Keeps `text` as the last NOTIFICATION, with the time it was first seen.
    fn note_notification(&self, text: String) {
        self.status.send_if_modified(|s| {
            if s.last_notification.as_ref().is_some_and(|n| n.text == text) {
                return false;
            }
            s.last_notification = Some(NotificationSeen {
                text,
                at: std::time::SystemTime::now(),
            });
            true
        });
    }

    /// Carries out actions; a write that fails feeds `Closed` back and carries out its
    /// actions too.
    async fn apply(&mut self, actions: Vec<Action>) {
        let mut queue = std::collections::VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Connect => {
                    self.connecting = Some(Box::pin(connect(self.transport.clone())));
                }
                Action::Send(bytes) => {
                    let Some(stream) = self.stream.as_mut() else {
                        continue;
                    };
                    let written =
                        tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&bytes)).await;
                    let error = match written {
                        Ok(Ok(())) => continue,
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => "writing timed out".to_owned(),
                    };
                    self.note_error(format!("writing: {error}"));
                    queue.extend(self.session.handle(Input::Closed));
                }
                Action::Close => {
                    if let Some(mut stream) = self.stream.take() {
                        let _ = stream.shutdown().await;
                    }
                    self.connecting = None;
                }
                Action::Arm(timer, after) => {
                    self.timers.insert(timer, Instant::now() + after);
                }
                Action::Disarm(timer) => {
                    self.timers.remove(&timer);
                }
                Action::Report(event) => self.report(&event),
            }
        }
    }

    fn report(&self, event: &Event) {
        match event {
            Event::StateChanged { from, to } => {
                info!(peer = %self.name, from = from.name(), to = to.name(), "BGP session state");
                self.status.send_modify(|s| {
                    s.state = *to;
                    if *to == State::Established {
                        s.last_error = None;
                        s.last_notification = None;
                    }
                });
            }
            Event::NotificationSent(n) => {
                warn!(peer = %self.name, notification = %n, "sent NOTIFICATION");
                self.note_notification(format!("sent NOTIFICATION {n}"));
            }
            Event::NotificationReceived(n) => {
                warn!(peer = %self.name, notification = %n, "received NOTIFICATION");
                self.note_notification(format!("received NOTIFICATION {n}"));
            }
            Event::UpdatesSent {
                messages,
                advertised,
            } => {
                debug!(peer = %self.name, messages, advertised, "sent UPDATEs");
                self.status.send_modify(|s| s.advertised = *advertised);
            }
            Event::Negotiated {
                hold_time,
                peer_router_id,
                graceful_restart,
            } => {
                info!(peer = %self.name, hold_time, %peer_router_id, graceful_restart, "OPEN accepted");
            }
        }
        (self.on_event)(event);
    }
}
