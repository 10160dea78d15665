//! Slowing down repeated authentication failures. Each failure from an address or for a
//! client id counts; from the third one on, the next attempt from that address or for
//! that client id waits before it is even checked, doubling per failure up to a cap. A
//! quiet period forgets the count; a success forgets the client id's.
//!
//! The table is bounded without ever being reset: when full, stale keys go first, then the
//! least useful ones — keys that do not slow anyone down yet before those that do, then
//! client ids before addresses, the least recent first — so rotating client ids (or addresses)
//! cannot wipe the count of the address or client id being slowed down.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed before attempts are slowed down.
const FREE_FAILURES: u32 = 2;
/// The first delay; doubles with each further failure.
const BASE_DELAY: Duration = Duration::from_millis(250);
/// The longest delay.
const MAX_DELAY: Duration = Duration::from_secs(8);
/// A key without failures for this long starts again from zero.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Keys tracked at most; beyond, stale ones are swept and, if still full, a tenth is evicted
/// (see the module doc for which).
const MAX_KEYS: usize = 100_000;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Address(IpAddr),
    ClientId(String),
}

/// Failure counts per address and per client id.
#[derive(Debug)]
pub struct FailureTracker {
    /// Key → (failures, last failure). A mutex held for one map operation.
    entries: Mutex<HashMap<Key, (u32, Instant)>>,
    /// Most keys kept ([`MAX_KEYS`]; smaller in tests).
    max_keys: usize,
}

impl Default for FailureTracker {
    fn default() -> Self {
        Self::with_max_keys(MAX_KEYS)
    }
}

impl FailureTracker {
    fn with_max_keys(max_keys: usize) -> Self {
        Self {
            entries: Mutex::default(),
            max_keys: max_keys.max(10),
        }
    }

    /// How long the next attempt from `ip` for `client_id` waits.
    pub fn delay(&self, ip: IpAddr, client_id: &str) -> Duration {
        let now = Instant::now();
        let entries = self.lock();
        let count = |key: &Key| match entries.get(key) {
            Some((n, last)) if now.duration_since(*last) < FORGET_AFTER => *n,
            _ => 0,
        };
        let failures = count(&Key::Address(ip.to_canonical()))
            .max(count(&Key::ClientId(client_id.to_owned())));
        delay_for(failures)
    }

    pub fn failure(&self, ip: IpAddr, client_id: &str) {
        let now = Instant::now();
        let mut entries = self.lock();
        if entries.len() + 2 > self.max_keys {
            make_room(&mut entries, now, self.max_keys);
        }
        for key in [
            Key::Address(ip.to_canonical()),
            Key::ClientId(client_id.to_owned()),
        ] {
            let entry = entries.entry(key).or_insert((0, now));
            if now.duration_since(entry.1) >= FORGET_AFTER {
                entry.0 = 0;
            }
            entry.0 = entry.0.saturating_add(1);
            entry.1 = now;
        }
    }

    pub fn success(&self, client_id: &str) {
        self.lock().remove(&Key::ClientId(client_id.to_owned()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (u32, Instant)>> {
        // Counters only: a poisoned map is still usable.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Sweeps stale keys and, if still full, evicts down to nine tenths of `max_keys`: keys not
/// (yet) slowing anyone down before those that do, then client ids before addresses, least
/// recent first. Runs once per tenth of the table filled, so its sort is amortised.
fn make_room(entries: &mut HashMap<Key, (u32, Instant)>, now: Instant, max_keys: usize) {
    entries.retain(|_, (_, last)| now.duration_since(*last) < FORGET_AFTER);
    if entries.len() + 2 <= max_keys {
        return;
    }
    let target = max_keys - max_keys / 10;
    let excess = entries.len().saturating_sub(target);
    let mut order: Vec<((bool, bool, Instant), Key)> = entries
        .iter()
        .map(|(key, (count, last))| {
            let is_address = matches!(key, Key::Address(_));
            ((*count > FREE_FAILURES, is_address, *last), key.clone())
        })
        .collect();
    if excess < order.len() {
        order.select_nth_unstable_by_key(excess, |(rank, _)| *rank);
    }
    for (_, key) in order.into_iter().take(excess) {
        entries.remove(&key);
    }
}

/// The delay after `failures` recent failures.
fn delay_for(failures: u32) -> Duration {
    if failures <= FREE_FAILURES {
        return Duration::ZERO;
    }
    let doublings = (failures - FREE_FAILURES - 1).min(16);
    BASE_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_start_after_two_failures_and_are_capped() {
        assert_eq!(delay_for(0), Duration::ZERO);
        assert_eq!(delay_for(2), Duration::ZERO);
        assert_eq!(delay_for(3), Duration::from_millis(250));
        assert_eq!(delay_for(4), Duration::from_millis(500));
        assert_eq!(delay_for(100), MAX_DELAY);
    }

    #[test]
    fn failures_count_per_address_and_per_client_id() {
        let t = FailureTracker::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            t.failure(a, "x");
        }
        assert!(!t.delay(a, "other").is_zero(), "same address");
        assert!(!t.delay(b, "x").is_zero(), "same client id");
        assert!(t.delay(b, "y").is_zero(), "unrelated");
        t.success("x");
        assert!(t.delay(b, "x").is_zero());
    }

    #[test]
    fn a_full_table_evicts_rotating_client_ids_not_the_counts_that_slow_down() {
        let t = FailureTracker::with_max_keys(20);
        let attacker: IpAddr = "10.0.0.9".parse().unwrap();
        let other: IpAddr = "10.0.0.7".parse().unwrap();
        for _ in 0..4 {
            t.failure(other, "victim");
        }
        // One address rotating client ids, far beyond the table's size.
        for i in 0..500 {
            t.failure(attacker, &format!("rotating-{i}"));
            assert!(t.lock().len() <= 20);
        }
        assert_eq!(
            t.delay(attacker, "fresh-id"),
            MAX_DELAY,
            "the address's count survived"
        );
        assert!(
            !t.delay("10.0.0.8".parse().unwrap(), "victim").is_zero(),
            "the slowed-down client id survived"
        );
        // Rotating addresses too: the slowed-down keys still outlive one-off ones.
        for i in 0..200u32 {
            let ip = IpAddr::from([192, 168, (i / 250) as u8, (i % 250) as u8]);
            t.failure(ip, &format!("spray-{i}"));
        }
        assert!(!t.delay(attacker, "x").is_zero());
        assert!(!t.delay("10.0.0.8".parse().unwrap(), "victim").is_zero());
    }
}
