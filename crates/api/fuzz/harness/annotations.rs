//! The harness of the `annotations` fuzz target, shared with the proptest that runs it on
//! every `tests/run` (`crates/api/tests/annotations.rs`): a Service's annotations, built from
//! bytes as `[key choice, value bytes..., 0]` entries, where the key choice picks one of the
//! annotations Herald reads under each of its prefixes (or a key of its own).
//!
//! Checked: reading never panics; requested addresses are at most one per family, each
//! written in the annotation that wins; pool and sharing key are the winning value trimmed.

use std::{collections::BTreeMap, net::IpAddr};

use herald_api::annotations::{
    self, ADDRESS_POOL, ALLOW_SHARED_IP, LOAD_BALANCER_IPS, PREFIXES, lookup,
};

/// Runs one input; panics when a property fails.
pub(crate) fn run(data: &[u8]) {
    let map = annotations_from(data);
    let pool = annotations::address_pool(&map);
    assert_eq!(
        pool,
        lookup(&map, ADDRESS_POOL).map(|(_, v)| v.trim().to_owned())
    );
    let key = annotations::sharing_key(&map);
    assert_eq!(
        key,
        lookup(&map, ALLOW_SHARED_IP).map(|(_, v)| v.trim().to_owned())
    );
    match annotations::requested_ips(&map) {
        Ok(ips) => {
            assert!(ips.len() <= 2, "{ips:?}");
            assert!(
                ips.len() < 2 || ips[0].is_ipv4() != ips[1].is_ipv4(),
                "one per family: {ips:?}"
            );
            if let Some((annotation, value)) = lookup(&map, LOAD_BALANCER_IPS) {
                let written: Vec<IpAddr> = value
                    .split(',')
                    .filter_map(|part| part.trim().parse().ok())
                    .collect();
                assert_eq!(ips, written, "{annotation}={value:?}");
            } else {
                assert!(ips.is_empty());
            }
        }
        Err(e) => {
            let (annotation, _) = lookup(&map, LOAD_BALANCER_IPS).expect("an error has a cause");
            assert!(
                e.to_string().contains(&annotation),
                "{e} names {annotation}"
            );
        }
    }
}

/// The annotations `data` describes.
fn annotations_from(data: &[u8]) -> BTreeMap<String, String> {
    let names = [ADDRESS_POOL, LOAD_BALANCER_IPS, ALLOW_SHARED_IP];
    data.split(|&b| b == 0)
        .filter_map(|entry| {
            let (&choice, value) = entry.split_first()?;
            let value = String::from_utf8_lossy(value).into_owned();
            let choice = usize::from(choice);
            let key = match names.get(choice % 4) {
                Some(name) => format!("{}{name}", PREFIXES[(choice / 4) % PREFIXES.len()]),
                None => format!("example.com/{}", choice / 4),
            };
            Some((key, value))
        })
        .collect()
}
