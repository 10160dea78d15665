//! [`Sharded`]: a map of string keys that never rehashes all its entries at once. A hash
//! map grows by moving every entry into a table twice the size, in one go: the usage
//! series of 7,000 clients took 725 µs of the broker task (SipHash; messages waited), and
//! the series per username, which has no bound, would stall it for tens of milliseconds
//! at each doubling for a fleet of a million devices with a username each. Split by the
//! key's hash over [`SHARDS`] maps, a growth (or a shrink) moves one map's entries, a
//! sixty-fourth of them.
//!
//! The shard is picked by a cheap seeded mix of the key's bytes, not by a second SipHash
//! (that doubled the hashing of every usage update: ~240 instructions a message when
//! each device publishes once a second). The mix is not collision-resistant: keys made
//! to share a shard only make that shard as large as the single map was, while each
//! shard's map keeps its own SipHash against collisions inside it.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::ops::Index;
use std::sync::Arc;

/// Maps a [`Sharded`] is split over (a power of two).
pub(crate) const SHARDS: usize = 64;

/// A map from shared string keys to `V`, split over [`SHARDS`] hash maps.
#[derive(Debug)]
pub(crate) struct Sharded<V> {
    shards: Box<[HashMap<Arc<str>, V>]>,
    /// Seeds [`shard_of`](Self::shard_of) (per map, so that shards differ from run to run).
    seed: u64,
    len: usize,
}

impl<V> Default for Sharded<V> {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| HashMap::new()).collect(),
            seed: RandomState::new().hash_one(SHARDS),
            len: 0,
        }
    }
}

impl<V> Sharded<V> {
    fn shard_of(&self, key: &str) -> usize {
        shard_of(self.seed, key.as_bytes())
    }

    fn shard(&self, key: &str) -> &HashMap<Arc<str>, V> {
        &self.shards[self.shard_of(key)]
    }

    fn shard_mut(&mut self, key: &str) -> &mut HashMap<Arc<str>, V> {
        let index = self.shard_of(key);
        &mut self.shards[index]
    }

    /// Entries in the map.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether the map has no entry.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn get(&self, key: &str) -> Option<&V> {
        self.shard(key).get(key)
    }

    pub(crate) fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.shard_mut(key).get_mut(key)
    }

    #[cfg(test)]
    pub(crate) fn get_key_value(&self, key: &str) -> Option<(&Arc<str>, &V)> {
        self.shard(key).get_key_value(key)
    }

    #[cfg(test)]
    pub(crate) fn contains_key(&self, key: &str) -> bool {
        self.shard(key).contains_key(key)
    }

    /// Inserts `value` under `key`; the value it replaces, if any.
    pub(crate) fn insert(&mut self, key: Arc<str>, value: V) -> Option<V> {
        let replaced = self.shard_mut(&key).insert(key, value);
        if replaced.is_none() {
            self.len += 1;
        }
        replaced
    }

    /// The value of `key`, inserted as `V::default()` if missing (the key is copied only
    /// then).
    pub(crate) fn get_or_default(&mut self, key: &str) -> &mut V
    where
        V: Default,
    {
        let shard = self.shard_of(key);
        if !self.shards[shard].contains_key(key) {
            self.shards[shard].insert(key.into(), V::default());
            self.len += 1;
        }
        // Just inserted if it was missing.
        self.shards[shard]
            .get_mut(key)
            .unwrap_or_else(|| unreachable!("present or just inserted"))
    }

    /// Every entry, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &V)> {
        self.shards.iter().flat_map(HashMap::iter)
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &Arc<str>> {
        self.iter().map(|(key, _)| key)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, value)| value)
    }

    /// Keeps the entries for which `keep` is true.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&Arc<str>, &mut V) -> bool) {
        for shard in self.shards.iter_mut() {
            shard.retain(&mut keep);
        }
        self.len = self.shards.iter().map(HashMap::len).sum();
    }

    /// Gives back the memory of shards holding less than half their capacity, one shard's
    /// rehash at a time.
    pub(crate) fn shrink_sparse(&mut self) {
        for shard in self.shards.iter_mut() {
            if shard.capacity() > 2 * shard.len() + 16 {
                shard.shrink_to_fit();
            }
        }
    }

    /// The most entries one growth or shrink moves: the largest shard's capacity.
    #[cfg(test)]
    fn largest_shard_capacity(&self) -> usize {
        self.shards.iter().map(HashMap::capacity).max().unwrap_or(0)
    }
}

/// A key's shard: its bytes eight at a time, each word xored in and spread by a
/// multiplication, the top bits of the result (the best mixed).
fn shard_of(seed: u64, key: &[u8]) -> usize {
    const SPREAD: u64 = 0x9e37_79b9_7f4a_7c15; // 2^64 / golden ratio, odd
    let mut words = key.chunks_exact(8);
    let mut mixed = seed ^ key.len() as u64;
    for word in words.by_ref() {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        mixed = (mixed ^ u64::from_le_bytes(bytes)).wrapping_mul(SPREAD);
        mixed ^= mixed >> 29;
    }
    let mut tail = [0u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    mixed = (mixed ^ u64::from_le_bytes(tail)).wrapping_mul(SPREAD);
    (mixed >> (u64::BITS - SHARDS.trailing_zeros())) as usize
}

impl<V> Index<&str> for Sharded<V> {
    type Output = V;

    /// The value of `key`; panics if it is missing, like a `HashMap`.
    fn index(&self, key: &str) -> &V {
        self.get(key).expect("key in the map")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inserted entries are found, counted once and replaced in place; removed ones are
    /// gone and uncounted.
    #[test]
    fn it_is_a_map() {
        let mut map = Sharded::default();
        assert!(map.is_empty());
        for i in 0..1_000u32 {
            assert_eq!(map.insert(format!("client-{i}").into(), i), None);
        }
        assert_eq!(map.insert("client-7".into(), 70), Some(7));
        assert_eq!(map.len(), 1_000);
        assert_eq!(map["client-7"], 70);
        assert_eq!(map.get("client-999"), Some(&999));
        assert_eq!(map.get("client-1000"), None);
        assert!(map.contains_key("client-0"));
        let (key, value) = map.get_key_value("client-3").unwrap();
        assert_eq!((&**key, *value), ("client-3", 3));
        *map.get_mut("client-3").unwrap() += 1;
        assert_eq!(map["client-3"], 4);
        *map.get_or_default("new") += 5;
        *map.get_or_default("new") += 5;
        assert_eq!((map["new"], map.len()), (10, 1_001));

        map.retain(|_, value| *value % 2 == 0);
        assert_eq!(map.len(), map.iter().count());
        assert!(map.values().all(|value| value % 2 == 0));
        assert!(!map.contains_key("client-1"));
        let mut keys: Vec<&str> = map.keys().map(|key| &**key).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), map.len());
    }

    /// Entries spread over the shards, so a growth moves a small part of them: with
    /// 64,000 entries no shard holds more than twice its share.
    #[test]
    fn a_growth_moves_a_shard_not_the_map() {
        let mut map = Sharded::default();
        let n = 64_000;
        for i in 0..n {
            map.insert(format!("device-{i:08}").into(), ());
        }
        let share = n / SHARDS;
        // Capacity is a power of two times 7/8: at most 4 times the entries held.
        assert!(
            map.largest_shard_capacity() <= 4 * 2 * share,
            "{} against a share of {share}",
            map.largest_shard_capacity()
        );
        map.retain(|key, ()| key.ends_with('0'));
        map.shrink_sparse();
        assert!(map.largest_shard_capacity() <= 4 * 2 * share / 10 + 16);
        assert_eq!(map.len(), n / 10);
    }

    /// Keys that differ only in their first bytes, or only past a long common prefix,
    /// or are shorter than a word, spread too: every byte and the length are mixed in.
    #[test]
    fn every_byte_of_a_key_picks_its_shard() {
        let seed = RandomState::new().hash_one(0u8);
        let families: [&dyn Fn(u32) -> String; 3] = [
            &|i| format!("{i:06}-sensor-of-building-north"),
            &|i| format!("fleet/eu-west/vehicles/long-prefix/{i}"),
            &|i| format!("{i:x}"),
        ];
        for family in families {
            let mut counts = [0u32; SHARDS];
            let n = 6_400;
            for i in 0..n {
                counts[shard_of(seed, family(i).as_bytes())] += 1;
            }
            let share = n / SHARDS as u32;
            assert!(
                counts.iter().all(|&c| c > share / 3 && c < share * 3),
                "{} in {counts:?}",
                family(0)
            );
        }
        // The length is part of it: keys that are zero-padded prefixes of each other.
        assert_ne!(
            (0..8)
                .map(|n| shard_of(seed, &vec![0u8; n]))
                .collect::<std::collections::HashSet<_>>()
                .len(),
            1
        );
    }
}
