//! Encoding: what a speaker of load-balancer routes sends, each message at most
//! [`MAX_MESSAGE`] octets, routes packed into as few UPDATEs as fit.

use std::net::IpAddr;

use herald_domain::{Family, Prefix};

use super::{
    AS_TRANS, HEADER, MAX_MESSAGE, Notification, Open, PathAttributes,
    codes::{
        ATTR_AS_PATH, ATTR_AS4_PATH, ATTR_COMMUNITIES, ATTR_EXTENDED_COMMUNITIES,
        ATTR_LARGE_COMMUNITIES, ATTR_LOCAL_PREF, ATTR_MP_REACH, ATTR_MP_UNREACH, ATTR_NEXT_HOP,
        ATTR_ORIGIN, CAP_FOUR_OCTET_AS, CAP_GRACEFUL_RESTART, CAP_MULTIPROTOCOL, CAP_ROUTE_REFRESH,
        FLAG_EXTENDED_LENGTH, FLAG_OPTIONAL, FLAG_TRANSITIVE, KEEPALIVE, NOTIFICATION, OPEN,
        PARAM_CAPABILITIES, ROUTE_REFRESH, UPDATE, afi_safi,
    },
};

/// The NLRI encoding of a prefix: the length in bits, then just the octets it covers
/// (RFC 4271 §4.3).
fn encode_prefix(prefix: &Prefix, out: &mut Vec<u8>) {
    out.push(prefix.length());
    let octets = usize::from(prefix.length()).div_ceil(8);
    match prefix.address() {
        IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()[..octets]),
        IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()[..octets]),
    }
}

fn encoded_len(prefix: &Prefix) -> usize {
    1 + usize::from(prefix.length()).div_ceil(8)
}

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
    let (afi, safi) = afi_safi(family);
    let afi = afi.to_be_bytes();
    message(ROUTE_REFRESH, &[afi[0], afi[1], 0, safi])
}

pub fn encode_open(open: &Open) -> Vec<u8> {
    let mut caps = Vec::new();
    let mut capability = |code: u8, value: &[u8]| {
        // One capability per optional parameter, as most speakers send them.
        caps.extend_from_slice(&[
            PARAM_CAPABILITIES,
            2 + value.len() as u8,
            code,
            value.len() as u8,
        ]);
        caps.extend_from_slice(value);
    };
    for family in &open.capabilities.families {
        let (afi, safi) = afi_safi(*family);
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
            let (afi, safi) = afi_safi(*family);
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
        if !last.is_empty() && last.len() + encoded_len(prefix) > room {
            out.push(Vec::new());
        }
        encode_prefix(prefix, out.last_mut().expect("never empty"));
    }
    out.retain(|chunk| !chunk.is_empty());
    out
}

/// The MP_REACH_NLRI / MP_UNREACH_NLRI header before the prefixes, and the attribute's
/// own header (always with an extended length, so its size does not depend on the NLRI).
const MP_ATTRIBUTE_HEADER: usize = 4;

fn mp_reach(next_hop: IpAddr, nlri: &[u8]) -> Vec<u8> {
    let (afi, safi) = afi_safi(Family::Ipv6);
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
    let (afi, safi) = afi_safi(Family::Ipv6);
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
    prefixes.iter().partition(|p| p.family() == Family::Ipv4)
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
        Family::Ipv4 => update_message(&[], &[], &[]),
        Family::Ipv6 => {
            let mut attrs = Vec::new();
            attribute(&mut attrs, FLAG_OPTIONAL, ATTR_MP_UNREACH, &mp_unreach(&[]));
            update_message(&[], &attrs, &[])
        }
    }
}
