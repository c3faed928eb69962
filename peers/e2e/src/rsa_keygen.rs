//! RSA key generation from the caller's stream, with a process-wide memo.
//!
//! An RSA-2048 key is a prime search: a few hundred milliseconds each, most of the time of the
//! runs that make them (S/MIME, XML Security, ESessions). Every RSA key the engines make comes
//! from here, always the same way: 32 bytes are drawn from the caller's stream, and the key is
//! generated from a ChaCha20 stream seeded with those bytes alone. So
//!
//! - the caller's stream advances by exactly 32 bytes, known key or not: nothing after the
//!   key can depend on whether it was remembered;
//! - the key is a function of (those 32 bytes, the size): a memo of recent keys can answer a
//!   repeated draw — the second run of a seed (every scenario test and every sweep runs each
//!   seed twice), or the same device in another run with the same seed — with the key a fresh
//!   generation would have made.
//!
//! The memo holds at most [`CAPACITY`] keys, least recently used first out, behind a mutex
//! (runs go on several threads). Keys are made outside the lock: two threads wanting the
//! same key both make it, and both get the same one.

use std::sync::Mutex;

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use rsa::RsaPrivateKey;

use crate::rng06::Rng06;

/// How many keys the memo holds (an RSA-2048 key with its CRT values is about 1.5 kB).
pub(crate) const CAPACITY: usize = 256;

static MEMO: Mutex<Memo<RsaPrivateKey>> = Mutex::new(Memo::new(CAPACITY));

/// A key of `bits` bits from the caller's stream: 32 bytes drawn from `rng`, the key generated
/// from a ChaCha20 stream seeded with them (or remembered from an earlier identical draw).
pub(crate) fn generate(rng: &mut dyn RngCore, bits: usize) -> rsa::Result<RsaPrivateKey> {
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    // A poisoned lock only means another thread panicked while holding it; the entries it
    // guards are whole keys or absent, never half-written.
    if let Some(key) = MEMO.lock().unwrap_or_else(|e| e.into_inner()).get(&(seed, bits)) {
        return Ok(key);
    }
    let key = from_seed(&seed, bits)?;
    MEMO.lock().unwrap_or_else(|e| e.into_inner()).put((seed, bits), key.clone());
    Ok(key)
}

/// The key a seed makes, without the memo.
fn from_seed(seed: &[u8; 32], bits: usize) -> rsa::Result<RsaPrivateKey> {
    let mut child = ChaCha20Rng::from_seed(*seed);
    RsaPrivateKey::new(&mut Rng06(&mut child), bits)
}

/// A bounded least-recently-used map, most recent last. Small enough that a linear search
/// costs nothing next to what it saves.
#[derive(Debug)]
struct Memo<V> {
    entries: Vec<(([u8; 32], usize), V)>,
    capacity: usize,
}

impl<V: Clone> Memo<V> {
    const fn new(capacity: usize) -> Self {
        Memo { entries: Vec::new(), capacity }
    }

    /// A copy of the value for `key`, which becomes the most recently used.
    fn get(&mut self, key: &([u8; 32], usize)) -> Option<V> {
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        let entry = self.entries.remove(i);
        let value = entry.1.clone();
        self.entries.push(entry);
        Some(value)
    }

    /// Remembers `value`, forgetting the least recently used entry when full.
    fn put(&mut self, key: ([u8; 32], usize), value: V) {
        if let Some(i) = self.entries.iter().position(|(k, _)| *k == key) {
            self.entries.remove(i);
        }
        if self.entries.len() >= self.capacity && !self.entries.is_empty() {
            self.entries.remove(0);
        }
        if self.capacity > 0 {
            self.entries.push((key, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A remembered key is the key a fresh generation makes, and the caller's stream moves on
    /// by the same 32 bytes either way.
    #[test]
    fn memo_hit_returns_the_freshly_generated_key() {
        // A seed no other test uses, so the first call below is a miss (nothing else makes
        // 1024-bit keys) and the second a hit.
        let stream = || ChaCha20Rng::seed_from_u64(0x6a61_6262_6572);
        let (mut first, mut second, mut reference) = (stream(), stream(), stream());
        let a = generate(&mut first, 1024).unwrap();
        let mut seed = [0u8; 32];
        reference.fill_bytes(&mut seed);
        assert!(MEMO.lock().unwrap().get(&(seed, 1024)).is_some(), "the first generation is remembered");
        let b = generate(&mut second, 1024).unwrap();
        let fresh = from_seed(&seed, 1024).unwrap();
        assert_eq!(a, fresh);
        assert_eq!(b, fresh);
        let next = reference.next_u64();
        assert_eq!(first.next_u64(), next);
        assert_eq!(second.next_u64(), next);
        // Another size from the same draw is another key.
        let mut third = stream();
        let c = generate(&mut third, 1032).unwrap();
        assert_ne!(c, fresh);
        assert_eq!(third.next_u64(), next);
    }

    #[test]
    fn memo_is_bounded_and_forgets_the_least_recently_used() {
        let key = |n: u8| ([n; 32], 2048);
        let mut memo = Memo::new(2);
        memo.put(key(1), "one");
        memo.put(key(2), "two");
        assert_eq!(memo.get(&key(1)), Some("one")); // 1 is now the most recent
        memo.put(key(3), "three"); // evicts 2
        assert_eq!(memo.get(&key(2)), None);
        assert_eq!(memo.get(&key(1)), Some("one"));
        assert_eq!(memo.get(&key(3)), Some("three"));
        assert_eq!(memo.entries.len(), 2);
        // Same seed, other size: another entry.
        assert_eq!(memo.get(&([1; 32], 1024)), None);
        memo.put(key(3), "three again");
        assert_eq!(memo.entries.len(), 2);
        assert_eq!(memo.get(&key(3)), Some("three again"));
    }
}
