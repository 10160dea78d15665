//! The broker's deadline queue: one binary heap of `(instant, timer)` for every connection
//! and session, so [`Timers::next`] is O(1) and scheduling O(log n) with 100k connections.
//!
//! Entries are never removed early (lazy invalidation): when a timer fires, its owner
//! checks against its own state whether the entry is still current (the connection still
//! exists, the session still has that deadline) and ignores it otherwise. Keep alive uses
//! this to avoid touching the heap on every packet: the entry fires at the old deadline and
//! re-schedules itself at `last_seen + 1.5 × keep alive`. Stale entries of connections
//! that came and went (a long keep alive leaves one for up to 27 hours) are swept out when
//! they outnumber the live ones ([`Timers::retain`]).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use super::session::SessionId;
use super::ConnId;

/// What a deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// A transport connection that must have sent CONNECT by now.
    ConnectTimeout(ConnId),
    /// Check whether the client has been silent for 1.5 × keep alive [MQTT-3.1.2-24].
    KeepAlive(ConnId),
    /// Resend unacknowledged QoS 1/2 messages of a 3.x session.
    Retry(SessionId),
    /// Publish a delayed will message [MQTT-3.1.3-9].
    Will(SessionId),
    /// Discard a disconnected session whose expiry interval has passed.
    SessionExpiry(SessionId),
    /// Remove expired retained messages (memory only: expired ones are never sent).
    RetainedSweep,
}

/// A min-heap of deadlines. Every connection has one entry (its keep alive), so an entry
/// is kept at 24 bytes: the deadline is stored as nanoseconds after `base` rather than as
/// an `Instant` (16 bytes). The offset is exact, so the instant handed back is the one
/// scheduled (owners compare it with their own deadline to tell stale entries).
#[derive(Debug, Default)]
pub(crate) struct Timers {
    /// The instant offsets count from: a day before the first one scheduled, moved back if
    /// an earlier one comes (every offset is then shifted, in O(n), which keeps the heap's
    /// order; the day's margin makes that a case for tests, not for a running broker).
    base: Option<Instant>,
    /// Ordered by offset first; ties broken by the timer (deterministic order).
    heap: BinaryHeap<Reverse<(u64, Timer)>>,
    /// The instant of the heap's first entry, kept as entries come and go: the shell asks
    /// for it after every batch of events, more often than entries are popped.
    earliest: Option<Instant>,
}

/// How far before the first deadline offsets start.
const BASE_MARGIN: std::time::Duration = std::time::Duration::from_secs(86_400);

/// Nanoseconds from `base` to `at` (`at` not earlier); saturates 584 years out, which
/// never comes due.
fn nanos(base: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(base).as_nanos()).unwrap_or(u64::MAX)
}

impl Timers {
    /// Adds a deadline.
    pub(crate) fn schedule(&mut self, at: Instant, timer: Timer) {
        let base = *self
            .base
            .get_or_insert_with(|| at.checked_sub(BASE_MARGIN).unwrap_or(at));
        if at < base {
            let shift = nanos(at, base);
            let entries = std::mem::take(&mut self.heap).into_vec();
            self.heap = entries
                .into_iter()
                .map(|Reverse((offset, t))| Reverse((offset.saturating_add(shift), t)))
                .collect();
            self.base = Some(at);
        }
        let offset = self.base.map_or(0, |base| nanos(base, at));
        self.heap.push(Reverse((offset, timer)));
        if self.earliest.is_none_or(|earliest| at < earliest) {
            self.earliest = Some(at);
        }
    }

    /// The instant of an offset.
    fn instant(&self, offset: u64) -> Option<Instant> {
        self.base?
            .checked_add(std::time::Duration::from_nanos(offset))
    }

    /// The earliest deadline (possibly of a stale entry, which then fires harmlessly).
    pub(crate) fn next(&self) -> Option<Instant> {
        self.earliest
    }

    /// Recomputes `earliest` from the heap.
    fn update_earliest(&mut self) {
        self.earliest = self
            .heap
            .peek()
            .and_then(|Reverse((offset, _))| self.instant(*offset));
    }

    /// Removes and returns the earliest entry that is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, Timer)> {
        let base = self.base?;
        if now < base {
            return None;
        }
        let due = nanos(base, now);
        match self.heap.peek() {
            Some(Reverse((offset, _))) if *offset <= due => {
                let Reverse((offset, timer)) = self.heap.pop()?;
                self.update_earliest();
                Some((self.instant(offset)?, timer))
            }
            _ => None,
        }
    }

    /// The number of entries, stale ones included.
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Drops the entries for which `keep` is false (stale ones), in O(n).
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(Instant, Timer) -> bool) {
        let Some(base) = self.base else {
            return;
        };
        let mut entries = std::mem::take(&mut self.heap).into_vec();
        entries.retain(|Reverse((offset, timer))| {
            base.checked_add(std::time::Duration::from_nanos(*offset))
                .is_none_or(|at| keep(at, *timer))
        });
        self.heap = BinaryHeap::from(entries);
        self.update_earliest();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn pops_in_deadline_order_and_only_when_due() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        timers.schedule(t0 + Duration::from_secs(5), Timer::KeepAlive(ConnId(1)));
        timers.schedule(t0 + Duration::from_secs(2), Timer::KeepAlive(ConnId(2)));
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(1)), None);
        assert_eq!(
            timers.pop_due(t0 + Duration::from_secs(6)),
            Some((t0 + Duration::from_secs(2), Timer::KeepAlive(ConnId(2))))
        );
        assert_eq!(
            timers.pop_due(t0 + Duration::from_secs(6)),
            Some((t0 + Duration::from_secs(5), Timer::KeepAlive(ConnId(1))))
        );
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(6)), None);
        assert_eq!(timers.len(), 0);
    }

    #[test]
    fn an_earlier_deadline_than_the_first_keeps_order_and_exact_instants() {
        // Two days earlier than the first: past the base's margin.
        let early = Duration::from_secs(2 * 86_400);
        let t0 = Instant::now() + early + early;
        let mut timers = Timers::default();
        let late = t0 + Duration::from_nanos(1_234_567_891);
        timers.schedule(late, Timer::KeepAlive(ConnId(1)));
        timers.schedule(t0 - early, Timer::KeepAlive(ConnId(2)));
        timers.schedule(t0 + Duration::from_secs(1), Timer::KeepAlive(ConnId(3)));
        assert_eq!(timers.pop_due(t0 - early - Duration::from_secs(1)), None);
        assert_eq!(
            timers.pop_due(t0),
            Some((t0 - early, Timer::KeepAlive(ConnId(2))))
        );
        assert_eq!(timers.pop_due(t0), None);
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(1)));
        timers.retain(|_, timer| timer != Timer::KeepAlive(ConnId(3)));
        assert_eq!(
            timers.pop_due(late),
            Some((late, Timer::KeepAlive(ConnId(1))))
        );
        assert_eq!(timers.len(), 0);
    }

    #[cfg(target_pointer_width = "64")]
    #[test]
    fn an_entry_is_24_bytes() {
        assert_eq!(std::mem::size_of::<Reverse<(u64, Timer)>>(), 24);
    }
}
