//! The BGP-4 wire format (RFC 4271 §4), decoded strictly and encoded compactly.
//!
//! ```text
//!   bytes from the peer ──► decode ──► Ok(Some((Message, used)))   a whole message
//!                                  ├─► Ok(None)                    wait for more bytes
//!                                  └─► Err(Notification)           send it, close (§6)
//!   Open / routes / Notification ──► encode_* ──► bytes, each message ≤ 4096 octets
//! ```
//!
//! The decoder reads untrusted bytes: every length is checked before it is used, nothing
//! panics, and each error is the NOTIFICATION (code, subcode, data) that RFC 4271 §6 prescribes.
//! Herald never installs routes it learns, so an UPDATE is checked for structure (lengths,
//! attribute headers, prefixes) and summarised, not kept.
//!
//! Encoding covers what a speaker of load-balancer routes sends: OPEN with capabilities
//! (multiprotocol RFC 4760, route refresh RFC 2918, graceful restart RFC 4724, 4-octet AS
//! RFC 6793), UPDATEs for IPv4 unicast (NLRI field) and IPv6 unicast (MP_REACH_NLRI /
//! MP_UNREACH_NLRI), standard (RFC 1997), extended (RFC 4360) and large (RFC 8092)
//! communities, the End-of-RIB marker, KEEPALIVE and NOTIFICATION.

use std::{
    collections::BTreeSet,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// The largest message RFC 4271 allows.
pub const MAX_MESSAGE: usize = 4096;
/// The fixed header: marker, length, type.
pub const HEADER: usize = 19;
/// The 2-octet AS number that stands for a 4-octet one (RFC 6793).
pub const AS_TRANS: u16 = 23456;

const OPEN: u8 = 1;
const UPDATE: u8 = 2;
const NOTIFICATION: u8 = 3;
const KEEPALIVE: u8 = 4;
const ROUTE_REFRESH: u8 = 5;

const ATTR_ORIGIN: u8 = 1;
const ATTR_AS_PATH: u8 = 2;
const ATTR_NEXT_HOP: u8 = 3;
const ATTR_LOCAL_PREF: u8 = 5;
const ATTR_COMMUNITIES: u8 = 8;
const ATTR_MP_REACH: u8 = 14;
const ATTR_MP_UNREACH: u8 = 15;
const ATTR_EXTENDED_COMMUNITIES: u8 = 16;
const ATTR_AS4_PATH: u8 = 17;
const ATTR_LARGE_COMMUNITIES: u8 = 32;

const FLAG_OPTIONAL: u8 = 0x80;
const FLAG_TRANSITIVE: u8 = 0x40;
const FLAG_EXTENDED_LENGTH: u8 = 0x10;

const CAP_MULTIPROTOCOL: u8 = 1;
const CAP_ROUTE_REFRESH: u8 = 2;
const CAP_GRACEFUL_RESTART: u8 = 64;
const CAP_FOUR_OCTET_AS: u8 = 65;

/// The address families Herald advertises: unicast IPv4 and IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Ipv4Unicast,
    Ipv6Unicast,
}

impl Family {
    /// The family of routes to `address`.
    pub fn of(address: IpAddr) -> Family {
        match address {
            IpAddr::V4(_) => Family::Ipv4Unicast,
            IpAddr::V6(_) => Family::Ipv6Unicast,
        }
    }

    fn afi_safi(self) -> (u16, u8) {
        match self {
            Family::Ipv4Unicast => (1, 1),
            Family::Ipv6Unicast => (2, 1),
        }
    }

    fn from_afi_safi(afi: u16, safi: u8) -> Option<Family> {
        match (afi, safi) {
            (1, 1) => Some(Family::Ipv4Unicast),
            (2, 1) => Some(Family::Ipv6Unicast),
            _ => None,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4Unicast => "ipv4-unicast",
            Family::Ipv6Unicast => "ipv6-unicast",
        })
    }
}

/// The graceful restart capability (RFC 4724 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GracefulRestart {
    /// The sender has restarted (the R bit): its peer should not wait for it to send End-of-RIB
    /// before its own.
    pub restarting: bool,
    /// Seconds the peer should keep this speaker's routes after the session goes down.
    pub restart_time: u16,
    /// Families whose forwarding state survives a restart (the F bit per family).
    pub families: Vec<(Family, bool)>,
}

/// The capabilities of an OPEN that Herald knows; others are ignored (RFC 5492 §3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub four_octet_as: Option<u32>,
    pub families: BTreeSet<Family>,
    pub route_refresh: bool,
    pub graceful_restart: Option<GracefulRestart>,
}

/// An OPEN message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The sender's AS: from the 4-octet AS capability when present.
    pub asn: u32,
    pub hold_time: u16,
    pub router_id: Ipv4Addr,
    pub capabilities: Capabilities,
}

/// A NOTIFICATION: an error code, a subcode and data (RFC 4271 §4.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notification {
    pub fn new(code: u8, subcode: u8, data: Vec<u8>) -> Notification {
        Notification {
            code,
            subcode,
            data,
        }
    }

    /// Message Header Error (§6.1).
    pub fn header(subcode: u8, data: Vec<u8>) -> Notification {
        Notification::new(1, subcode, data)
    }

    /// OPEN Message Error (§6.2).
    pub fn open(subcode: u8) -> Notification {
        Notification::new(2, subcode, Vec::new())
    }

    /// UPDATE Message Error (§6.3).
    pub fn update(subcode: u8) -> Notification {
        Notification::new(3, subcode, Vec::new())
    }

    pub fn hold_timer_expired() -> Notification {
        Notification::new(4, 0, Vec::new())
    }

    /// Finite State Machine Error (RFC 6608): a message not expected in the state.
    pub fn fsm(subcode: u8) -> Notification {
        Notification::new(5, subcode, Vec::new())
    }

    /// Cease (RFC 4486), e.g. 2 administrative shutdown, 3 peer de-configured.
    pub fn cease(subcode: u8) -> Notification {
        Notification::new(6, subcode, Vec::new())
    }

    /// The name of the error code, for logs and metric labels.
    pub fn code_name(&self) -> &'static str {
        match self.code {
            1 => "message-header-error",
            2 => "open-message-error",
            3 => "update-message-error",
            4 => "hold-timer-expired",
            5 => "fsm-error",
            6 => "cease",
            7 => "route-refresh-message-error",
            _ => "unknown",
        }
    }
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}/{})", self.code_name(), self.code, self.subcode)
    }
}

/// What a received UPDATE held, in counts: Herald checks and counts routes it learns, and
/// keeps none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateSummary {
    pub announced: usize,
    pub withdrawn: usize,
    /// The UPDATE was the End-of-RIB marker of this family (RFC 4724 §2).
    pub end_of_rib: Option<Family>,
}

/// One BGP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(UpdateSummary),
    Notification(Notification),
    Keepalive,
    /// A ROUTE-REFRESH (RFC 2918) for a family; `None` for a family Herald does not carry.
    RouteRefresh(Option<Family>),
}

/// An IP prefix with its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    address: IpAddr,
    length: u8,
}

impl Prefix {
    /// The prefix of `length` bits containing `address` (lengths beyond the family's
    /// width are clamped to it).
    pub fn new(address: IpAddr, length: u8) -> Prefix {
        match address {
            IpAddr::V4(v4) => {
                let length = length.min(32);
                let mask = u32::MAX.checked_shl(32 - u32::from(length)).unwrap_or(0);
                Prefix {
                    address: IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask)),
                    length,
                }
            }
            IpAddr::V6(v6) => {
                let length = length.min(128);
                let mask = u128::MAX.checked_shl(128 - u32::from(length)).unwrap_or(0);
                Prefix {
                    address: IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask)),
                    length,
                }
            }
        }
    }

    pub fn address(&self) -> IpAddr {
        self.address
    }

    pub fn length(&self) -> u8 {
        self.length
    }

    pub fn family(&self) -> Family {
        Family::of(self.address)
    }

    /// The NLRI encoding: the length in bits, then just the octets it covers.
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.length);
        let octets = usize::from(self.length).div_ceil(8);
        match self.address {
            IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()[..octets]),
            IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()[..octets]),
        }
    }

    fn encoded_len(&self) -> usize {
        1 + usize::from(self.length).div_ceil(8)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.length)
    }
}

/// The path attributes of announced routes, as sent.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathAttributes {
    pub next_hop: IpAddr,
    /// One AS_SEQUENCE, nearest AS first; empty toward iBGP peers.
    pub as_path: Vec<u32>,
    /// Sent to iBGP peers only.
    pub local_pref: Option<u32>,
    pub communities: Vec<u32>,
    pub extended_communities: Vec<[u8; 8]>,
    pub large_communities: Vec<[u32; 3]>,
}

/// The BGP link-bandwidth extended community (draft-ietf-idr-link-bandwidth §2): non-transitive
/// two-octet-AS specific (0x40), subtype 0x04, the AS, then the bandwidth in octets per second
/// as an IEEE 754 float.
pub fn link_bandwidth(asn: u32, octets_per_second: f32) -> [u8; 8] {
    let asn = u16::try_from(asn).unwrap_or(AS_TRANS).to_be_bytes();
    let bandwidth = octets_per_second.to_be_bytes();
    [
        0x40,
        0x04,
        asn[0],
        asn[1],
        bandwidth[0],
        bandwidth[1],
        bandwidth[2],
        bandwidth[3],
    ]
}

// ---------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------

/// Reads one message from the front of `buf`: `Ok(None)` while it is incomplete.
pub fn decode(buf: &[u8]) -> Result<Option<(Message, usize)>, Notification> {
    // A wrong marker is reported as soon as it is seen, before the rest arrives.
    if buf[..buf.len().min(16)].iter().any(|&b| b != 0xff) {
        return Err(Notification::header(1, Vec::new()));
    }
    if buf.len() < HEADER {
        return Ok(None);
    }
    let length = usize::from(u16::from_be_bytes([buf[16], buf[17]]));
    let kind = buf[18];
    let bad_length = || Notification::header(2, buf[16..18].to_vec());
    if !(HEADER..=MAX_MESSAGE).contains(&length) {
        return Err(bad_length());
    }
    let fits = match kind {
        OPEN => length >= HEADER + 10,
        UPDATE => length >= HEADER + 4,
        NOTIFICATION => length >= HEADER + 2,
        KEEPALIVE => length == HEADER,
        ROUTE_REFRESH => length == HEADER + 4,
        _ => return Err(Notification::header(3, vec![kind])),
    };
    if !fits {
        return Err(bad_length());
    }
    if buf.len() < length {
        return Ok(None);
    }
    let body = &buf[HEADER..length];
    let message = match kind {
        OPEN => Message::Open(decode_open(body)?),
        UPDATE => Message::Update(decode_update(body)?),
        NOTIFICATION => {
            Message::Notification(Notification::new(body[0], body[1], body[2..].to_vec()))
        }
        KEEPALIVE => Message::Keepalive,
        _ => Message::RouteRefresh(Family::from_afi_safi(
            u16::from_be_bytes([body[0], body[1]]),
            body[3],
        )),
    };
    Ok(Some((message, length)))
}

/// A cursor over untrusted bytes whose reads fail instead of panicking.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

fn decode_open(body: &[u8]) -> Result<Open, Notification> {
    let malformed = || Notification::header(2, Vec::new());
    let mut r = Reader { buf: body };
    let version = r.u8().ok_or_else(malformed)?;
    if version != 4 {
        // §6.2: the data is the largest supported version, in two octets.
        return Err(Notification::new(2, 1, vec![0, 4]));
    }
    let asn = r.u16().ok_or_else(malformed)?;
    let hold_time = r.u16().ok_or_else(malformed)?;
    let id = r.take(4).ok_or_else(malformed)?;
    let router_id = Ipv4Addr::new(id[0], id[1], id[2], id[3]);
    let params_len = usize::from(r.u8().ok_or_else(malformed)?);
    let params = r.take(params_len).ok_or_else(malformed)?;
    if !r.is_empty() {
        return Err(malformed());
    }
    let mut capabilities = Capabilities::default();
    let mut p = Reader { buf: params };
    while !p.is_empty() {
        let kind = p.u8().ok_or_else(malformed)?;
        let len = usize::from(p.u8().ok_or_else(malformed)?);
        let value = p.take(len).ok_or_else(malformed)?;
        if kind != 2 {
            // Only capabilities (RFC 5492) are defined as optional parameters.
            return Err(Notification::open(4));
        }
        decode_capabilities(value, &mut capabilities).ok_or_else(malformed)?;
    }
    if hold_time == 1 || hold_time == 2 {
        return Err(Notification::open(6));
    }
    if router_id.is_unspecified() {
        return Err(Notification::open(3));
    }
    Ok(Open {
        asn: capabilities.four_octet_as.unwrap_or(u32::from(asn)),
        hold_time,
        router_id,
        capabilities,
    })
}

/// Reads the capabilities of one optional parameter; `None` when they are malformed.
fn decode_capabilities(value: &[u8], into: &mut Capabilities) -> Option<()> {
    let mut r = Reader { buf: value };
    while !r.is_empty() {
        let code = r.u8()?;
        let len = usize::from(r.u8()?);
        let mut data = Reader { buf: r.take(len)? };
        match code {
            CAP_MULTIPROTOCOL => {
                let afi = data.u16()?;
                let _reserved = data.u8()?;
                let safi = data.u8()?;
                if let Some(family) = Family::from_afi_safi(afi, safi) {
                    into.families.insert(family);
                }
            }
            CAP_ROUTE_REFRESH => into.route_refresh = true,
            CAP_FOUR_OCTET_AS => {
                let asn = data.take(4)?;
                into.four_octet_as = Some(u32::from_be_bytes([asn[0], asn[1], asn[2], asn[3]]));
            }
            CAP_GRACEFUL_RESTART => {
                let flags_time = data.u16()?;
                let mut families = Vec::new();
                while !data.is_empty() {
                    let afi = data.u16()?;
                    let safi = data.u8()?;
                    let flags = data.u8()?;
                    if let Some(family) = Family::from_afi_safi(afi, safi) {
                        families.push((family, flags & 0x80 != 0));
                    }
                }
                into.graceful_restart = Some(GracefulRestart {
                    restarting: flags_time & 0x8000 != 0,
                    restart_time: flags_time & 0x0fff,
                    families,
                });
            }
            _ => {}
        }
    }
    Some(())
}

/// Counts the prefixes of an NLRI field of `family`; `None` when one is malformed.
fn count_prefixes(field: &[u8], family: Family) -> Option<usize> {
    let max_bits = match family {
        Family::Ipv4Unicast => 32,
        Family::Ipv6Unicast => 128,
    };
    let mut r = Reader { buf: field };
    let mut count = 0;
    while !r.is_empty() {
        let bits = r.u8()?;
        if bits > max_bits {
            return None;
        }
        r.take(usize::from(bits).div_ceil(8))?;
        count += 1;
    }
    Some(count)
}

fn decode_update(body: &[u8]) -> Result<UpdateSummary, Notification> {
    let malformed = || Notification::update(1);
    let invalid_network = || Notification::update(10);
    let mut r = Reader { buf: body };
    let withdrawn_len = usize::from(r.u16().ok_or_else(malformed)?);
    let withdrawn = r.take(withdrawn_len).ok_or_else(malformed)?;
    let attributes_len = usize::from(r.u16().ok_or_else(malformed)?);
    let attributes = r.take(attributes_len).ok_or_else(malformed)?;
    let nlri = r.buf;
    let mut summary = UpdateSummary {
        withdrawn: count_prefixes(withdrawn, Family::Ipv4Unicast).ok_or_else(invalid_network)?,
        announced: count_prefixes(nlri, Family::Ipv4Unicast).ok_or_else(invalid_network)?,
        end_of_rib: None,
    };
    if withdrawn.is_empty() && attributes.is_empty() && nlri.is_empty() {
        summary.end_of_rib = Some(Family::Ipv4Unicast);
        return Ok(summary);
    }
    let mut a = Reader { buf: attributes };
    let mut attribute_count = 0;
    let mut empty_unreach = None;
    while !a.is_empty() {
        let flags = a.u8().ok_or_else(malformed)?;
        let code = a.u8().ok_or_else(malformed)?;
        let len = if flags & FLAG_EXTENDED_LENGTH != 0 {
            usize::from(a.u16().ok_or_else(malformed)?)
        } else {
            usize::from(a.u8().ok_or_else(malformed)?)
        };
        let mut value = Reader {
            buf: a.take(len).ok_or_else(|| Notification::update(5))?,
        };
        attribute_count += 1;
        match code {
            ATTR_MP_REACH => {
                let afi = value.u16().ok_or_else(malformed)?;
                let safi = value.u8().ok_or_else(malformed)?;
                let next_hop_len = usize::from(value.u8().ok_or_else(malformed)?);
                value.take(next_hop_len).ok_or_else(malformed)?;
                value.u8().ok_or_else(malformed)?; // reserved
                if let Some(family) = Family::from_afi_safi(afi, safi) {
                    summary.announced +=
                        count_prefixes(value.buf, family).ok_or_else(invalid_network)?;
                }
            }
            ATTR_MP_UNREACH => {
                let afi = value.u16().ok_or_else(malformed)?;
                let safi = value.u8().ok_or_else(malformed)?;
                if let Some(family) = Family::from_afi_safi(afi, safi) {
                    if value.is_empty() {
                        empty_unreach = Some(family);
                    }
                    summary.withdrawn +=
                        count_prefixes(value.buf, family).ok_or_else(invalid_network)?;
                }
            }
            _ => {}
        }
    }
    if attribute_count == 1 && withdrawn.is_empty() && nlri.is_empty() {
        summary.end_of_rib = empty_unreach;
    }
    Ok(summary)
}

// ---------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------

fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(&[0xff; 16]);
    // Callers keep bodies within MAX_MESSAGE, so the length fits.
    out.extend_from_slice(
        &u16::try_from(HEADER + body.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    out.push(kind);
    out.extend_from_slice(body);
    out
}

pub fn encode_keepalive() -> Vec<u8> {
    message(KEEPALIVE, &[])
}

pub fn encode_notification(notification: &Notification) -> Vec<u8> {
    let mut body = vec![notification.code, notification.subcode];
    let room = MAX_MESSAGE - HEADER - 2;
    body.extend_from_slice(&notification.data[..notification.data.len().min(room)]);
    message(NOTIFICATION, &body)
}

pub fn encode_route_refresh(family: Family) -> Vec<u8> {
    let (afi, safi) = family.afi_safi();
    let afi = afi.to_be_bytes();
    message(ROUTE_REFRESH, &[afi[0], afi[1], 0, safi])
}

pub fn encode_open(open: &Open) -> Vec<u8> {
    let mut caps = Vec::new();
    let mut capability = |code: u8, value: &[u8]| {
        // One capability per optional parameter, as most speakers send them.
        caps.extend_from_slice(&[2, 2 + value.len() as u8, code, value.len() as u8]);
        caps.extend_from_slice(value);
    };
    for family in &open.capabilities.families {
        let (afi, safi) = family.afi_safi();
        let afi = afi.to_be_bytes();
        capability(CAP_MULTIPROTOCOL, &[afi[0], afi[1], 0, safi]);
    }
    if open.capabilities.route_refresh {
        capability(CAP_ROUTE_REFRESH, &[]);
    }
    if let Some(gr) = &open.capabilities.graceful_restart {
        let flags_time = (gr.restart_time & 0x0fff) | if gr.restarting { 0x8000 } else { 0 };
        let mut value = flags_time.to_be_bytes().to_vec();
        for (family, forwarding) in &gr.families {
            let (afi, safi) = family.afi_safi();
            value.extend_from_slice(&afi.to_be_bytes());
            value.push(safi);
            value.push(if *forwarding { 0x80 } else { 0 });
        }
        capability(CAP_GRACEFUL_RESTART, &value);
    }
    capability(CAP_FOUR_OCTET_AS, &open.asn.to_be_bytes());
    let mut body = vec![4];
    body.extend_from_slice(&u16::try_from(open.asn).unwrap_or(AS_TRANS).to_be_bytes());
    body.extend_from_slice(&open.hold_time.to_be_bytes());
    body.extend_from_slice(&open.router_id.octets());
    body.push(caps.len() as u8);
    body.extend_from_slice(&caps);
    message(OPEN, &body)
}

fn attribute(out: &mut Vec<u8>, flags: u8, code: u8, value: &[u8]) {
    if value.len() > 255 {
        out.extend_from_slice(&[flags | FLAG_EXTENDED_LENGTH, code]);
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    } else {
        out.extend_from_slice(&[flags, code, value.len() as u8]);
    }
    out.extend_from_slice(value);
}

/// The attributes every UPDATE of this set carries, without MP_REACH_NLRI.
fn common_attributes(attributes: &PathAttributes, four_octet_as: bool) -> Vec<u8> {
    let mut out = Vec::new();
    attribute(&mut out, FLAG_TRANSITIVE, ATTR_ORIGIN, &[0]); // IGP
    let as_path = |four: bool| {
        let mut value = Vec::new();
        if !attributes.as_path.is_empty() {
            value.extend_from_slice(&[2, attributes.as_path.len() as u8]); // AS_SEQUENCE
            for asn in &attributes.as_path {
                if four {
                    value.extend_from_slice(&asn.to_be_bytes());
                } else {
                    value.extend_from_slice(&u16::try_from(*asn).unwrap_or(AS_TRANS).to_be_bytes());
                }
            }
        }
        value
    };
    attribute(
        &mut out,
        FLAG_TRANSITIVE,
        ATTR_AS_PATH,
        &as_path(four_octet_as),
    );
    if let IpAddr::V4(next_hop) = attributes.next_hop {
        attribute(&mut out, FLAG_TRANSITIVE, ATTR_NEXT_HOP, &next_hop.octets());
    }
    if let Some(local_pref) = attributes.local_pref {
        attribute(
            &mut out,
            FLAG_TRANSITIVE,
            ATTR_LOCAL_PREF,
            &local_pref.to_be_bytes(),
        );
    }
    let optional_transitive = FLAG_OPTIONAL | FLAG_TRANSITIVE;
    if !attributes.communities.is_empty() {
        let value: Vec<u8> = attributes
            .communities
            .iter()
            .flat_map(|c| c.to_be_bytes())
            .collect();
        attribute(&mut out, optional_transitive, ATTR_COMMUNITIES, &value);
    }
    if !attributes.extended_communities.is_empty() {
        let value = attributes.extended_communities.concat();
        attribute(
            &mut out,
            optional_transitive,
            ATTR_EXTENDED_COMMUNITIES,
            &value,
        );
    }
    if !four_octet_as
        && attributes
            .as_path
            .iter()
            .any(|&asn| asn > u32::from(u16::MAX))
    {
        // A peer without 4-octet AS support carries the true path in AS4_PATH (RFC 6793 §4.2.2).
        attribute(&mut out, optional_transitive, ATTR_AS4_PATH, &as_path(true));
    }
    if !attributes.large_communities.is_empty() {
        let value: Vec<u8> = attributes
            .large_communities
            .iter()
            .flat_map(|c| c.iter().flat_map(|part| part.to_be_bytes()))
            .collect();
        attribute(
            &mut out,
            optional_transitive,
            ATTR_LARGE_COMMUNITIES,
            &value,
        );
    }
    out
}

fn update_message(withdrawn: &[u8], attributes: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(4 + withdrawn.len() + attributes.len() + nlri.len());
    body.extend_from_slice(&(withdrawn.len() as u16).to_be_bytes());
    body.extend_from_slice(withdrawn);
    body.extend_from_slice(&(attributes.len() as u16).to_be_bytes());
    body.extend_from_slice(attributes);
    body.extend_from_slice(nlri);
    message(UPDATE, &body)
}

/// Splits `prefixes` into NLRI fields of at most `room` octets each.
fn chunks(prefixes: &[Prefix], room: usize) -> Vec<Vec<u8>> {
    let mut out = vec![Vec::new()];
    for prefix in prefixes {
        let last = out.last_mut().expect("never empty");
        if !last.is_empty() && last.len() + prefix.encoded_len() > room {
            out.push(Vec::new());
        }
        prefix.encode(out.last_mut().expect("never empty"));
    }
    out.retain(|chunk| !chunk.is_empty());
    out
}

/// The MP_REACH_NLRI / MP_UNREACH_NLRI header before the prefixes, and the attribute's
/// own header (always with an extended length, so its size does not depend on the NLRI).
const MP_ATTRIBUTE_HEADER: usize = 4;

fn mp_reach(next_hop: IpAddr, nlri: &[u8]) -> Vec<u8> {
    let (afi, safi) = Family::Ipv6Unicast.afi_safi();
    let mut value = afi.to_be_bytes().to_vec();
    value.push(safi);
    match next_hop {
        IpAddr::V6(v6) => {
            value.push(16);
            value.extend_from_slice(&v6.octets());
        }
        IpAddr::V4(v4) => {
            // An IPv4 next hop of IPv6 routes, as an IPv4-mapped address (RFC 4798 §2).
            value.push(16);
            value.extend_from_slice(&v4.to_ipv6_mapped().octets());
        }
    }
    value.push(0);
    value.extend_from_slice(nlri);
    value
}

fn mp_unreach(nlri: &[u8]) -> Vec<u8> {
    let (afi, safi) = Family::Ipv6Unicast.afi_safi();
    let mut value = afi.to_be_bytes().to_vec();
    value.push(safi);
    value.extend_from_slice(nlri);
    value
}

fn mp_attribute(out: &mut Vec<u8>, code: u8, value: &[u8]) {
    out.extend_from_slice(&[FLAG_OPTIONAL | FLAG_EXTENDED_LENGTH, code]);
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
}

/// `prefixes` split into IPv4 and IPv6.
fn by_family(prefixes: &[Prefix]) -> (Vec<Prefix>, Vec<Prefix>) {
    prefixes
        .iter()
        .partition(|p| p.family() == Family::Ipv4Unicast)
}

/// UPDATE messages announcing `prefixes` (all of one family) with `attributes`, as few as
/// fit in 4096 octets each.
pub fn encode_announcements(
    attributes: &PathAttributes,
    prefixes: &[Prefix],
    four_octet_as: bool,
) -> Vec<Vec<u8>> {
    let common = common_attributes(attributes, four_octet_as);
    let mut messages = Vec::new();
    let (v4, v6) = by_family(prefixes);
    let fixed = HEADER + 4 + common.len();
    for nlri in chunks(&v4, MAX_MESSAGE - fixed) {
        messages.push(update_message(&[], &common, &nlri));
    }
    let mp_fixed = fixed + MP_ATTRIBUTE_HEADER + mp_reach(attributes.next_hop, &[]).len();
    for nlri in chunks(&v6, MAX_MESSAGE - mp_fixed) {
        let mut attrs = common.clone();
        mp_attribute(
            &mut attrs,
            ATTR_MP_REACH,
            &mp_reach(attributes.next_hop, &nlri),
        );
        messages.push(update_message(&[], &attrs, &[]));
    }
    messages
}

/// UPDATE messages withdrawing `prefixes`.
pub fn encode_withdrawals(prefixes: &[Prefix]) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    let (v4, v6) = by_family(prefixes);
    for withdrawn in chunks(&v4, MAX_MESSAGE - HEADER - 4) {
        messages.push(update_message(&withdrawn, &[], &[]));
    }
    let fixed = HEADER + 4 + MP_ATTRIBUTE_HEADER + mp_unreach(&[]).len();
    for nlri in chunks(&v6, MAX_MESSAGE - fixed) {
        let mut attrs = Vec::new();
        mp_attribute(&mut attrs, ATTR_MP_UNREACH, &mp_unreach(&nlri));
        messages.push(update_message(&[], &attrs, &[]));
    }
    messages
}

/// The End-of-RIB marker of `family` (RFC 4724 §2).
pub fn encode_end_of_rib(family: Family) -> Vec<u8> {
    match family {
        Family::Ipv4Unicast => update_message(&[], &[], &[]),
        Family::Ipv6Unicast => {
            let mut attrs = Vec::new();
            attribute(&mut attrs, FLAG_OPTIONAL, ATTR_MP_UNREACH, &mp_unreach(&[]));
            update_message(&[], &attrs, &[])
        }
    }
}
