//! Decoding: bytes from the peer to a [`Message`], strictly. Every length is checked before it
//! is used and each error is the NOTIFICATION that RFC 4271 §6 prescribes.

use herald_domain::Family;

use super::{
    Capabilities, GracefulRestart, HEADER, MAX_MESSAGE, Message, Notification, Open, UpdateSummary,
    codes::{
        ATTR_MP_REACH, ATTR_MP_UNREACH, CAP_FOUR_OCTET_AS, CAP_GRACEFUL_RESTART, CAP_MULTIPROTOCOL,
        CAP_ROUTE_REFRESH, FLAG_EXTENDED_LENGTH, KEEPALIVE, NOTIFICATION, OPEN, PARAM_CAPABILITIES,
        ROUTE_REFRESH, UPDATE, error, family_of,
    },
};
use std::net::Ipv4Addr;

/// Reads one message from the front of `buf`: `Ok(None)` while it is incomplete.
pub fn decode(buf: &[u8]) -> Result<Option<(Message, usize)>, Notification> {
    // A wrong marker is reported as soon as it is seen, before the rest arrives.
    if buf[..buf.len().min(16)].iter().any(|&b| b != 0xff) {
        return Err(Notification::header(
            error::header::CONNECTION_NOT_SYNCHRONIZED,
            Vec::new(),
        ));
    }
    if buf.len() < HEADER {
        return Ok(None);
    }
    let length = usize::from(u16::from_be_bytes([buf[16], buf[17]]));
    let kind = buf[18];
    let bad_length =
        || Notification::header(error::header::BAD_MESSAGE_LENGTH, buf[16..18].to_vec());
    if !(HEADER..=MAX_MESSAGE).contains(&length) {
        return Err(bad_length());
    }
    let fits = match kind {
        OPEN => length >= HEADER + 10,
        UPDATE => length >= HEADER + 4,
        NOTIFICATION => length >= HEADER + 2,
        KEEPALIVE => length == HEADER,
        ROUTE_REFRESH => length == HEADER + 4,
        _ => {
            return Err(Notification::header(
                error::header::BAD_MESSAGE_TYPE,
                vec![kind],
            ));
        }
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
        _ => Message::RouteRefresh(family_of(u16::from_be_bytes([body[0], body[1]]), body[3])),
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
    let malformed = || Notification::header(error::header::BAD_MESSAGE_LENGTH, Vec::new());
    let mut r = Reader { buf: body };
    let version = r.u8().ok_or_else(malformed)?;
    if version != 4 {
        // §6.2: the data is the largest supported version, in two octets.
        return Err(Notification::new(
            error::OPEN_MESSAGE,
            error::open::UNSUPPORTED_VERSION_NUMBER,
            vec![0, 4],
        ));
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
        if kind != PARAM_CAPABILITIES {
            // Only capabilities (RFC 5492) are defined as optional parameters.
            return Err(Notification::open(
                error::open::UNSUPPORTED_OPTIONAL_PARAMETER,
            ));
        }
        decode_capabilities(value, &mut capabilities).ok_or_else(malformed)?;
    }
    if hold_time == 1 || hold_time == 2 {
        return Err(Notification::open(error::open::UNACCEPTABLE_HOLD_TIME));
    }
    if router_id.is_unspecified() {
        return Err(Notification::open(error::open::BAD_BGP_IDENTIFIER));
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
                if let Some(family) = family_of(afi, safi) {
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
                    if let Some(family) = family_of(afi, safi) {
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
    let max_bits = family.bits();
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
    let malformed = || Notification::update(error::update::MALFORMED_ATTRIBUTE_LIST);
    let invalid_network = || Notification::update(error::update::INVALID_NETWORK_FIELD);
    let mut r = Reader { buf: body };
    let withdrawn_len = usize::from(r.u16().ok_or_else(malformed)?);
    let withdrawn = r.take(withdrawn_len).ok_or_else(malformed)?;
    let attributes_len = usize::from(r.u16().ok_or_else(malformed)?);
    let attributes = r.take(attributes_len).ok_or_else(malformed)?;
    let nlri = r.buf;
    let mut summary = UpdateSummary {
        withdrawn: count_prefixes(withdrawn, Family::Ipv4).ok_or_else(invalid_network)?,
        announced: count_prefixes(nlri, Family::Ipv4).ok_or_else(invalid_network)?,
        end_of_rib: None,
    };
    if withdrawn.is_empty() && attributes.is_empty() && nlri.is_empty() {
        summary.end_of_rib = Some(Family::Ipv4);
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
            buf: a
                .take(len)
                .ok_or_else(|| Notification::update(error::update::ATTRIBUTE_LENGTH_ERROR))?,
        };
        attribute_count += 1;
        match code {
            ATTR_MP_REACH => {
                let afi = value.u16().ok_or_else(malformed)?;
                let safi = value.u8().ok_or_else(malformed)?;
                let next_hop_len = usize::from(value.u8().ok_or_else(malformed)?);
                value.take(next_hop_len).ok_or_else(malformed)?;
                value.u8().ok_or_else(malformed)?; // reserved
                if let Some(family) = family_of(afi, safi) {
                    summary.announced +=
                        count_prefixes(value.buf, family).ok_or_else(invalid_network)?;
                }
            }
            ATTR_MP_UNREACH => {
                let afi = value.u16().ok_or_else(malformed)?;
                let safi = value.u8().ok_or_else(malformed)?;
                if let Some(family) = family_of(afi, safi) {
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
