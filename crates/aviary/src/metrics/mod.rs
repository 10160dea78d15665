//! Prometheus metrics, served by the API listener at `/metrics`. A scrape copies the
//! broker task's exact counters in one management call ([`Snapshot`]) and renders them
//! off the broker task (`exposition`): nothing is recorded or refreshed between scrapes,
//! so the message path and the broker's tick carry no metrics work. (They were refreshed
//! once a second through a metrics recorder: 22-155 µs of the broker task per tick, during
//! which arriving messages waited.) The one thing the connection tasks add to is
//! [`WireBytes`], once per read and once per written batch.

mod exposition;
mod snapshot;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aviary_codec::Packet;
use tokio::sync::watch;

use crate::store::Progress;
use exposition::{Exposition, Kind};
pub(crate) use snapshot::Snapshot;

/// Reason codes of a refused CONNECT that are authentication failures (0x86 bad user name
/// or password, 0x87 not authorized; 3.x return codes 4 and 5 map to them).
const AUTH_FAILURES: [u8; 2] = [0x86, 0x87];

/// Users with usage at most for which `aviary_usage_units_by_user_total` is exported (one
/// series each); with more, none is (the API reports every user).
const USER_SERIES_MAX: usize = 1000;

/// The labels of QoS 0, 1, 2.
const QOS: [&str; 3] = ["0", "1", "2"];

/// The `qos` labels of the wire byte counters: PUBLISH at QoS 0, 1, 2, then every other
/// packet (CONNECT, acks, SUBSCRIBE, PING, ...).
const WIRE_CLASSES: [&str; 4] = ["0", "1", "2", "none"];

/// Bytes of MQTT packets read from and written to clients' streams, by packet class (see
/// [`WIRE_CLASSES`]). Shared by every connection task: each adds its counts once per read
/// and once per written batch (a relaxed atomic add), so the hot path stays a counter add.
#[derive(Debug, Default)]
pub(crate) struct WireBytes {
    /// Bytes of whole packets decoded from clients.
    received: [AtomicU64; 4],
    /// Bytes of packets encoded and written to clients.
    sent: [AtomicU64; 4],
}

impl WireBytes {
    /// The class of `packet`: its QoS for a PUBLISH, else 3.
    pub(crate) fn class(packet: &Packet) -> usize {
        match packet {
            Packet::Publish(p) => p.qos as usize,
            _ => 3,
        }
    }

    /// Adds the bytes of one read, per class.
    pub(crate) fn add_received(&self, bytes: &[u64; 4]) {
        add(&self.received, bytes);
    }

    /// Adds the bytes of one written batch, per class.
    pub(crate) fn add_sent(&self, bytes: &[u64; 4]) {
        add(&self.sent, bytes);
    }

    /// All bytes received and sent so far.
    pub(crate) fn totals(&self) -> (u64, u64) {
        let sum = |c: &[AtomicU64; 4]| c.iter().map(|n| n.load(Ordering::Relaxed)).sum();
        (sum(&self.received), sum(&self.sent))
    }
}

fn add(counters: &[AtomicU64; 4], bytes: &[u64; 4]) {
    for (counter, n) in counters.iter().zip(bytes) {
        if *n > 0 {
            counter.fetch_add(*n, Ordering::Relaxed);
        }
    }
}

/// Upper bounds (seconds) of the latency histogram's buckets; one more bucket is +Inf.
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// A fixed-bucket histogram, cheap to update on the delivery path (a comparison walk and
/// two additions), rendered in the Prometheus text format by [`Metrics::render`].
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Histogram {
    /// Observations per bucket (not cumulative); the last one is +Inf.
    counts: [u64; LATENCY_BUCKETS.len() + 1],
    /// Sum of all observations, seconds.
    sum: f64,
}

impl Histogram {
    /// Records one duration.
    pub(crate) fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.counts[i] += 1;
        self.sum += secs;
    }

    /// This histogram as the family `name`.
    fn render(&self, name: &str, help: &str, out: &mut Exposition) {
        out.family(name, Kind::Histogram, help);
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count;
            let le = LATENCY_BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
            out.sample(&bucket, &[("le", &le)], cumulative);
        }
        out.sample(&format!("{name}_sum"), &[], self.sum);
        out.sample(&format!("{name}_count"), &[], cumulative);
    }
}

/// What renders one broker's `/metrics` besides the broker task's [`Snapshot`]: the
/// counters kept outside the broker task.
#[derive(Clone, Debug, Default)]
pub(crate) struct Metrics {
    /// Wire bytes, counted by the connection tasks.
    wire: Arc<WireBytes>,
    /// Connections parked now, kept by the parker (`crate::parking`).
    parked: Arc<AtomicU64>,
    /// Connections the broker task reads itself now (`crate::direct_reads`).
    direct: Arc<AtomicU64>,
    /// The store writer's progress (none in unit tests of the task).
    store: Option<watch::Receiver<Progress>>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Also renders the store writer's counters, from `progress`.
    pub(crate) fn with_store(mut self, progress: watch::Receiver<Progress>) -> Self {
        self.store = Some(progress);
        self
    }

    /// The gauge of parked connections, for the parker.
    pub(crate) fn parked(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.parked)
    }

    /// The gauge of connections the broker task reads itself.
    pub(crate) fn direct(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.direct)
    }

    /// The wire byte counters, for the connection tasks.
    pub(crate) fn wire(&self) -> Arc<WireBytes> {
        Arc::clone(&self.wire)
    }

    /// The Prometheus text exposition of `snapshot` and the counters kept here.
    pub(crate) fn render(&self, snapshot: &Snapshot) -> String {
        let mut out = Exposition::default();
        let stats = &snapshot.stats;
        let c = &snapshot.counters;
        let gauges = [
            (
                "aviary_connections",
                "Connections that completed CONNECT.",
                stats.connections,
            ),
            (
                "aviary_sessions",
                "Sessions, connected or not.",
                stats.sessions,
            ),
            (
                "aviary_subscriptions",
                "Subscriptions (plain and shared memberships).",
                stats.subscriptions,
            ),
            (
                "aviary_retained_messages",
                "Retained messages.",
                stats.retained,
            ),
            (
                "aviary_open_sockets",
                "Client connections open (connected or not yet).",
                snapshot.open_sockets,
            ),
            (
                "aviary_connections_parked",
                "Idle plain TCP connections handed to the parking thread.",
                usize::try_from(self.parked.load(Ordering::Relaxed)).unwrap_or(usize::MAX),
            ),
            (
                "aviary_connections_direct",
                "Plain TCP connections the broker task reads itself, without a task of their own.",
                usize::try_from(self.direct.load(Ordering::Relaxed)).unwrap_or(usize::MAX),
            ),
            (
                "aviary_queued_messages",
                "Outgoing QoS 1/2 messages queued at connected sessions.",
                snapshot.queued,
            ),
            (
                "aviary_inflight_messages",
                "Outgoing QoS 1/2 messages in flight at connected sessions.",
                snapshot.inflight,
            ),
        ];
        for (name, help, value) in gauges {
            out.single(name, Kind::Gauge, help, value);
        }
        let counters = [
            (
                "aviary_connects_refused_total",
                "Connections refused at CONNACK.",
                stats.connects_refused,
            ),
            (
                "aviary_wills_published_total",
                "Will messages published.",
                stats.wills_published,
            ),
            (
                "aviary_usage_units_total",
                "Metered usage units (messages in and out, wills, connects, disconnects).",
                stats.units,
            ),
        ];
        for (name, help, value) in counters {
            out.single(name, Kind::Counter, help, value);
        }
        let mut connacks: Vec<(u8, u64)> = c.connacks.iter().map(|(r, n)| (*r, *n)).collect();
        connacks.sort_unstable();
        out.by_label(
            "aviary_connacks_total",
            Kind::Counter,
            "CONNACKs sent by reason code (0x00: accepted; 3.x return codes as their 5.0 \
             reason).",
            "reason",
            connacks.iter().map(|(r, n)| (format!("0x{r:02x}"), n)),
        );
        let auth_failures: u64 = connacks
            .iter()
            .filter(|(r, _)| AUTH_FAILURES.contains(r))
            .map(|(_, n)| n)
            .sum();
        out.single(
            "aviary_auth_failures_total",
            Kind::Counter,
            "CONNECTs refused for authentication (reason 0x86 or 0x87).",
            auth_failures,
        );
        let by_qos = [
            (
                "aviary_messages_received_total",
                "PUBLISH packets received, by QoS.",
                &c.messages_in,
            ),
            (
                "aviary_messages_sent_total",
                "PUBLISH packets routed to clients, by QoS.",
                &c.messages_out,
            ),
            (
                "aviary_payload_bytes_received_total",
                "Application payload bytes of PUBLISH packets received, by QoS.",
                &c.bytes_in,
            ),
            (
                "aviary_payload_bytes_sent_total",
                "Application payload bytes of PUBLISH packets routed to clients, by QoS.",
                &c.bytes_out,
            ),
        ];
        for (name, help, values) in by_qos {
            out.by_label(name, Kind::Counter, help, "qos", QOS.iter().zip(values));
        }
        let wire = [
            (
                "aviary_bytes_received_total",
                "Bytes of whole MQTT packets read from clients (after TLS or WebSocket framing \
                 is removed); qos=0/1/2: PUBLISH packets at that QoS, qos=none: every other \
                 packet.",
                &self.wire.received,
            ),
            (
                "aviary_bytes_sent_total",
                "Bytes of MQTT packets written to clients (before TLS or WebSocket framing); \
                 qos=0/1/2: PUBLISH packets at that QoS, qos=none: every other packet.",
                &self.wire.sent,
            ),
        ];
        for (name, help, values) in wire {
            let values = values.iter().map(|n| n.load(Ordering::Relaxed));
            out.by_label(
                name,
                Kind::Counter,
                help,
                "qos",
                WIRE_CLASSES.iter().zip(values),
            );
        }
        let d = &stats.dropped;
        out.by_label(
            "aviary_messages_dropped_total",
            Kind::Counter,
            "Message copies dropped, by reason (QoS 1/2 are never dropped silently).",
            "reason",
            [
                ("queue_full", d.queue_full),
                ("qos0_offline", d.qos0_offline),
                ("expired", d.expired),
                ("too_large", d.too_large),
                ("shared_no_member", d.shared_no_member),
                ("reserved_topic", d.reserved_topic),
                ("retained_quota", d.retained_quota),
                ("outbox_full", c.dropped_outbox_full),
            ],
        );
        out.by_label(
            "aviary_usage_units_by_listener_total",
            Kind::Counter,
            "Metered usage units by listener.",
            "listener",
            snapshot.by_listener.iter().map(|(l, n)| (&**l, n)),
        );
        // Per user while there are at most USER_SERIES_MAX of them (bounded label
        // cardinality; the API has every user).
        if let Some(users) = &snapshot.by_user {
            out.by_label(
                "aviary_usage_units_by_user_total",
                Kind::Counter,
                "Metered usage units by user name.",
                "user",
                users.iter().map(|(u, n)| (&**u, n)),
            );
        }
        if let Some((paused, micros)) = snapshot.reads_paused {
            out.single(
                "aviary_reads_paused_total",
                Kind::Counter,
                "Reads paused by the plan's message rate.",
                paused,
            );
            out.single(
                "aviary_reads_paused_microseconds_total",
                Kind::Counter,
                "Time reads spent paused by the plan's message rate.",
                micros,
            );
        }
        if let Some(store) = &self.store {
            let progress = *store.borrow();
            let store_counters = [
                (
                    "aviary_store_commits_total",
                    "Store transactions committed.",
                    progress.commits,
                ),
                (
                    "aviary_store_syncs_total",
                    "Store commits synced to disk.",
                    progress.syncs,
                ),
                (
                    "aviary_store_operations_total",
                    "Store operations applied.",
                    progress.ops,
                ),
                (
                    "aviary_store_operations_elided_total",
                    "Store operations not written: message copies acknowledged before the commit that would have stored them, records written again in the same commit.",
                    progress.elided,
                ),
            ];
            for (name, help, value) in store_counters {
                out.single(name, Kind::Counter, help, value);
            }
            out.single(
                "aviary_store_failed",
                Kind::Gauge,
                "1 once the store writer stopped on an error (nothing more is committed).",
                u8::from(progress.failed),
            );
        }
        c.latency.render(
            "aviary_publish_to_deliver_seconds",
            "Time from reading a PUBLISH to queueing it for each subscriber.",
            &mut out,
        );
        c.store_commit.render(
            "aviary_store_commit_seconds",
            "Time from submitting a pass's store operations to seeing them committed.",
            &mut out,
        );
        out.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_renders_cumulative_buckets() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(40));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(5));
        let mut exposition = Exposition::default();
        h.render("x", "help", &mut exposition);
        let out = exposition.finish();
        assert!(out.contains("x_bucket{le=\"0.00005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
    }
}
