//! A fast map for the broker's own integer ids (connection and session ids). No peer
//! chooses these ids, so the DoS resistance of std's SipHash buys nothing here, while its
//! cost is paid on every delivery (one session lookup per subscriber). The I/O shell uses it
//! for its own tables keyed by connection id (outboxes, looked up for every packet sent).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A HashMap keyed by a broker id.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Multiply-rotate hashing of integers (the FxHash scheme).
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHasher(u64);

const SEED: u64 = 0x517c_c1b7_2722_0a95;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(SEED);
    }

    // An enum's discriminant (a key such as `enum Owner { Conn(ConnId), Server }`) arrives
    // here; one step instead of eight through `write`.
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_isize(&mut self, n: isize) {
        self.write_u64(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConnId;

    #[test]
    fn sequential_ids_spread_and_round_trip() {
        let mut map: IdMap<ConnId, u64> = IdMap::default();
        for n in 0..10_000 {
            map.insert(ConnId(n), n * 2);
        }
        assert!((0..10_000).all(|n| map.get(&ConnId(n)) == Some(&(n * 2))));
        assert_eq!(map.len(), 10_000);
    }
}
