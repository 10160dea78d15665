//! What a scrape of `/metrics` reads from the broker task: a copy of its exact counters,
//! taken by a management call between two events (a few dozen numbers and the per-listener
//! and per-user usage totals), so that nothing is recorded or refreshed on the broker task
//! between scrapes.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use aviary_core::{Broker, BrokerStats};

use super::USER_SERIES_MAX;
use crate::broker_task::{Counters, Ops};

/// The broker task's counters at one instant.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// The core's gauges and counters.
    pub(crate) stats: BrokerStats,
    /// Connections the broker task has an outbox for.
    pub(crate) open_sockets: usize,
    /// The task's own traffic counters and latency histograms.
    pub(crate) counters: Counters,
    /// Outgoing QoS 1/2 messages queued and in flight (as the last attribution saw them).
    pub(crate) queued: usize,
    pub(crate) inflight: usize,
    /// Metered units by listener.
    pub(crate) by_listener: Vec<(Arc<str>, u64)>,
    /// Metered units by user, while there are at most [`USER_SERIES_MAX`] users.
    pub(crate) by_user: Option<Vec<(Arc<str>, u64)>>,
    /// Reads paused by the message rate: how many times and for how long (µs).
    pub(crate) reads_paused: Option<(u64, u64)>,
}

impl Snapshot {
    /// Copies the counters of `broker` and `ops` (run on the broker task).
    pub(crate) fn take(broker: &Broker, ops: &Ops) -> Self {
        let totals = |series: &crate::sharded::Sharded<crate::usage::Series>| {
            let mut totals: Vec<_> = series
                .iter()
                .map(|(name, s)| (Arc::clone(name), s.total))
                .collect();
            totals.sort_unstable();
            totals
        };
        Self {
            stats: broker.stats(),
            open_sockets: ops.conns.open_count(),
            counters: ops.counters.clone(),
            queued: ops.queued,
            inflight: ops.inflight,
            by_listener: totals(&ops.usage.listeners),
            by_user: (ops.usage.users.len() <= USER_SERIES_MAX).then(|| totals(&ops.usage.users)),
            reads_paused: ops
                .rates
                .as_ref()
                .map(|r| (r.paused.load(Relaxed), r.paused_micros.load(Relaxed))),
        }
    }
}
