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

/// A min-heap of deadlines.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    /// Ordered by instant first; ties broken by the timer (deterministic order).
    heap: BinaryHeap<Reverse<(Instant, Timer)>>,
}

impl Timers {
    /// Adds a deadline.
    pub(crate) fn schedule(&mut self, at: Instant, timer: Timer) {
        self.heap.push(Reverse((at, timer)));
    }

    /// The earliest deadline (possibly of a stale entry, which then fires harmlessly).
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns the earliest entry that is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, Timer)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// The number of entries, stale ones included.
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Drops the entries for which `keep` is false (stale ones), in O(n).
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(Instant, Timer) -> bool) {
        let mut entries = std::mem::take(&mut self.heap).into_vec();
        entries.retain(|Reverse((at, timer))| keep(*at, *timer));
        self.heap = BinaryHeap::from(entries);
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
}
