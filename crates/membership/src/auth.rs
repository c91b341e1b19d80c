//! Authentication of gossip datagrams with a key shared by every speaker (from a Secret).
//!
//! ```text
//!   datagram = HMAC-SHA256(key, "herald-gossip-v1" || payload) (32 bytes) || payload
//! ```
//!
//! A datagram whose tag does not verify (another cluster, a forged or corrupted packet) is
//! dropped. Tags are compared in constant time. Replayed datagrams are not detected here: SWIM
//! state only moves forward by incarnation, so a replay can at most repeat old news.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Length of the tag in front of every datagram.
pub const TAG_LEN: usize = 32;
const DOMAIN: &[u8] = b"herald-gossip-v1";

/// The shared key.
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// A key too short to protect anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the gossip key has {0} bytes; at least 16 are needed")]
pub struct ShortKey(pub usize);

impl Key {
    /// A key of at least 16 bytes (surrounding whitespace, e.g. a trailing newline in a
    /// Secret, is not part of it).
    pub fn new(bytes: &[u8]) -> Result<Self, ShortKey> {
        let bytes = bytes.trim_ascii();
        if bytes.len() < 16 {
            return Err(ShortKey(bytes.len()));
        }
        Ok(Key(bytes.to_vec()))
    }

    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC takes keys of any length");
        mac.update(DOMAIN);
        mac.update(payload);
        mac
    }

    /// The datagram that carries `payload`.
    pub fn seal(&self, payload: &[u8]) -> Vec<u8> {
        let tag = self.mac(payload).finalize().into_bytes();
        let mut datagram = Vec::with_capacity(TAG_LEN + payload.len());
        datagram.extend_from_slice(&tag);
        datagram.extend_from_slice(payload);
        datagram
    }

    /// The payload of `datagram`, if its tag verifies.
    pub fn open<'a>(&self, datagram: &'a [u8]) -> Option<&'a [u8]> {
        if datagram.len() < TAG_LEN {
            return None;
        }
        let (tag, payload) = datagram.split_at(TAG_LEN);
        self.mac(payload).verify_slice(tag).ok().map(|()| payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_datagram_opens_only_with_the_same_key_and_unaltered() {
        let key = Key::new(b"0123456789abcdef\n").expect("long enough");
        let other = Key::new(b"fedcba9876543210").expect("long enough");
        let datagram = key.seal(b"ping");
        assert_eq!(key.open(&datagram), Some(&b"ping"[..]));
        assert_eq!(other.open(&datagram), None, "another cluster's key");
        let mut altered = datagram.clone();
        *altered.last_mut().expect("not empty") ^= 1;
        assert_eq!(key.open(&altered), None, "a flipped bit");
        assert_eq!(key.open(&datagram[..10]), None, "shorter than a tag");
    }

    #[test]
    fn short_keys_are_refused() {
        assert_eq!(Key::new(b"  short \n").expect_err("short"), ShortKey(5));
    }
}
