//! Authentication of gossip datagrams with a key shared by every speaker (from a Secret).
//!
//! ```text
//!   datagram = HMAC-SHA256(key, "herald-gossip-v2" || payload) (32 bytes) || payload
//! ```
//!
//! (v2 since the payload starts with the replay envelope; speakers of v1 and v2 cannot read
//! each other's datagrams, so during a rolling upgrade each side sees the other as gossip
//! that fails authentication, and the smaller side steps back as for a wrong key.)
//!
//! A datagram whose tag does not verify (another cluster, a forged or corrupted packet) is
//! dropped. Tags are compared in constant time. Replays are caught after this, by the
//! envelope inside the payload ([`crate::replay`]).
//!
//! Keys are rotated without a split: a speaker seals with one key and also accepts an
//! additional one ([`Keyring`]). Rotating from OLD to NEW takes three steps, each waited out
//! until every speaker has it: accept NEW (seal OLD); seal NEW, accept OLD; drop OLD. At
//! each step every speaker accepts what every other seals with.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Length of the tag in front of every datagram.
pub const TAG_LEN: usize = 32;
const DOMAIN: &[u8] = b"herald-gossip-v2";

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

impl Key {
    /// A short name of the key that gives nothing of it away (the first 4 bytes of a SHA-256
    /// over a fixed prefix and the key, in hex): what a speaker reports it holds, so that a
    /// rotation can be followed.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let digest = Sha256::new()
            .chain_update(b"herald-gossip-key-fingerprint")
            .chain_update(&self.0)
            .finalize();
        digest[..4].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for Key {}

/// The key a speaker seals with, and one more it accepts during a rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyring {
    pub sealing: Key,
    pub additional: Option<Key>,
}

impl Keyring {
    /// One key, for sealing and opening.
    pub fn single(key: Key) -> Self {
        Keyring {
            sealing: key,
            additional: None,
        }
    }

    /// The datagram that carries `payload`, sealed with the sealing key.
    pub fn seal(&self, payload: &[u8]) -> Vec<u8> {
        self.sealing.seal(payload)
    }

    /// The payload of `datagram`, if its tag verifies with either key.
    pub fn open<'a>(&self, datagram: &'a [u8]) -> Option<&'a [u8]> {
        self.sealing
            .open(datagram)
            .or_else(|| self.additional.as_ref()?.open(datagram))
    }

    /// The fingerprints of the keys accepted, the sealing key's first.
    pub fn fingerprints(&self) -> Vec<String> {
        std::iter::once(&self.sealing)
            .chain(&self.additional)
            .map(Key::fingerprint)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyring_opens_what_either_key_sealed_and_seals_with_one() {
        let (old, new) = (
            Key::new(b"the old key of the cluster").expect("long enough"),
            Key::new(b"the new key of the cluster").expect("long enough"),
        );
        let rotating = Keyring {
            sealing: new.clone(),
            additional: Some(old.clone()),
        };
        assert_eq!(rotating.open(&old.seal(b"x")), Some(&b"x"[..]));
        assert_eq!(rotating.open(&new.seal(b"y")), Some(&b"y"[..]));
        assert_eq!(new.open(&rotating.seal(b"z")), Some(&b"z"[..]));
        assert_eq!(old.open(&rotating.seal(b"z")), None);
        let other = Key::new(b"another cluster's key").expect("long enough");
        assert_eq!(rotating.open(&other.seal(b"w")), None);
        let prints = rotating.fingerprints();
        assert_eq!(prints, [new.fingerprint(), old.fingerprint()]);
        assert_eq!(prints[0].len(), 8);
        assert_ne!(prints[0], prints[1]);
    }

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
