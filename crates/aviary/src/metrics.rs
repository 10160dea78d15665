//! Prometheus metrics, served by the API listener at `/metrics`. Each broker owns its
//! recorder (not the process-global one, so several brokers in one test process stay
//! apart); the broker task refreshes every value from the core's counters and its own once
//! per tick, so the hot path records nothing and the values are exact counts. The one
//! exception is [`WireBytes`], which the connection tasks add to once per read and once per
//! written batch.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aviary_codec::Packet;
use metrics::{counter, describe_counter, gauge, with_local_recorder, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::broker_task::Ops;
use aviary_core::BrokerStats;

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

    /// The Prometheus text of this histogram as `name`.
    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count;
            let le = LATENCY_BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// One broker's metrics.
#[derive(Clone)]
pub(crate) struct Metrics {
    /// Where the values are recorded.
    recorder: Arc<PrometheusRecorder>,
    /// The latest copies of the publish-to-deliver and store commit latency histograms (a
    /// std lock held for a copy, once a second and per scrape).
    latency: Arc<Mutex<[Histogram; 2]>>,
    /// Wire bytes, counted by the connection tasks.
    wire: Arc<WireBytes>,
    /// Connections parked now, kept by the parker (`crate::parking`).
    parked: Arc<AtomicU64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        with_local_recorder(&recorder, describe);
        Self {
            recorder: Arc::new(recorder),
            latency: Arc::default(),
            wire: Arc::default(),
            parked: Arc::default(),
        }
    }

    /// The gauge of parked connections, for the parker.
    pub(crate) fn parked(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.parked)
    }

    /// The wire byte counters, for the connection tasks.
    pub(crate) fn wire(&self) -> Arc<WireBytes> {
        Arc::clone(&self.wire)
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = self.handle().render();
        let [deliver, commit] = self
            .latency
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        deliver.render(
            "aviary_publish_to_deliver_seconds",
            "Time from reading a PUBLISH to queueing it for each subscriber.",
            &mut out,
        );
        commit.render(
            "aviary_store_commit_seconds",
            "Time from submitting a pass's store operations to seeing them committed.",
            &mut out,
        );
        out
    }

    fn handle(&self) -> PrometheusHandle {
        self.recorder.handle()
    }

    /// Sets the store writer's counters.
    pub(crate) fn refresh_store(&self, progress: &crate::store::Progress) {
        with_local_recorder(&*self.recorder, || {
            counter!("aviary_store_commits_total").absolute(progress.commits);
            counter!("aviary_store_syncs_total").absolute(progress.syncs);
            counter!("aviary_store_operations_total").absolute(progress.ops);
            gauge!("aviary_store_failed").set(if progress.failed { 1.0 } else { 0.0 });
        });
    }

    /// Sets every value from the broker's counters (called by the broker task).
    pub(crate) fn refresh(&self, stats: &BrokerStats, ops: &Ops, dropped_outbox: u64) {
        *self
            .latency
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = [
            ops.counters.latency.clone(),
            ops.counters.store_commit.clone(),
        ];
        with_local_recorder(&*self.recorder, || {
            gauge!("aviary_connections").set(stats.connections as f64);
            gauge!("aviary_sessions").set(stats.sessions as f64);
            gauge!("aviary_subscriptions").set(stats.subscriptions as f64);
            gauge!("aviary_retained_messages").set(stats.retained as f64);
            gauge!("aviary_open_sockets").set(ops.conns.open_count() as f64);
            gauge!("aviary_connections_parked").set(self.parked.load(Ordering::Relaxed) as f64);
            counter!("aviary_connects_refused_total").absolute(stats.connects_refused);
            counter!("aviary_wills_published_total").absolute(stats.wills_published);
            counter!("aviary_usage_units_total").absolute(stats.units);
            let mut auth_failures = 0;
            for (reason, count) in &ops.counters.connacks {
                let label = format!("0x{reason:02x}");
                counter!("aviary_connacks_total", "reason" => label).absolute(*count);
                if AUTH_FAILURES.contains(reason) {
                    auth_failures += count;
                }
            }
            counter!("aviary_auth_failures_total").absolute(auth_failures);
            let c = &ops.counters;
            for (q, qos) in QOS.iter().enumerate() {
                counter!("aviary_messages_received_total", "qos" => *qos)
                    .absolute(c.messages_in[q]);
                counter!("aviary_messages_sent_total", "qos" => *qos).absolute(c.messages_out[q]);
                counter!("aviary_payload_bytes_received_total", "qos" => *qos)
                    .absolute(c.bytes_in[q]);
                counter!("aviary_payload_bytes_sent_total", "qos" => *qos).absolute(c.bytes_out[q]);
            }
            for (i, class) in WIRE_CLASSES.iter().enumerate() {
                counter!("aviary_bytes_received_total", "qos" => *class)
                    .absolute(self.wire.received[i].load(Ordering::Relaxed));
                counter!("aviary_bytes_sent_total", "qos" => *class)
                    .absolute(self.wire.sent[i].load(Ordering::Relaxed));
            }
            let d = &stats.dropped;
            let drops = [
                ("queue_full", d.queue_full),
                ("qos0_offline", d.qos0_offline),
                ("expired", d.expired),
                ("too_large", d.too_large),
                ("shared_no_member", d.shared_no_member),
                ("reserved_topic", d.reserved_topic),
                ("retained_quota", d.retained_quota),
                ("outbox_full", dropped_outbox),
            ];
            for (reason, count) in drops {
                counter!("aviary_messages_dropped_total", "reason" => reason).absolute(count);
            }
            for (listener, series) in &ops.usage.listeners {
                counter!("aviary_usage_units_by_listener_total", "listener" => listener.to_string())
                    .absolute(series.total);
            }
            // Per user while there are at most USER_SERIES_MAX of them (bounded label
            // cardinality; the API has every user).
            if ops.usage.users.len() <= USER_SERIES_MAX {
                for (user, series) in &ops.usage.users {
                    counter!("aviary_usage_units_by_user_total", "user" => user.to_string())
                        .absolute(series.total);
                }
            }
            if let Some(rates) = &ops.rates {
                use std::sync::atomic::Ordering::Relaxed;
                counter!("aviary_reads_paused_total").absolute(rates.paused.load(Relaxed));
                counter!("aviary_reads_paused_microseconds_total")
                    .absolute(rates.paused_micros.load(Relaxed));
            }
            gauge!("aviary_queued_messages").set(ops.queued as f64);
            gauge!("aviary_inflight_messages").set(ops.inflight as f64);
        });
    }
}

/// The help text of the metrics whose meaning is not plain from the name.
fn describe() {
    describe_counter!(
        "aviary_bytes_received_total",
        Unit::Bytes,
        "Bytes of whole MQTT packets read from clients (after TLS or WebSocket framing is \
         removed); qos=0/1/2: PUBLISH packets at that QoS, qos=none: every other packet."
    );
    describe_counter!(
        "aviary_bytes_sent_total",
        Unit::Bytes,
        "Bytes of MQTT packets written to clients (before TLS or WebSocket framing); \
         qos=0/1/2: PUBLISH packets at that QoS, qos=none: every other packet."
    );
    describe_counter!(
        "aviary_payload_bytes_received_total",
        Unit::Bytes,
        "Application payload bytes of PUBLISH packets received, by QoS."
    );
    describe_counter!(
        "aviary_payload_bytes_sent_total",
        Unit::Bytes,
        "Application payload bytes of PUBLISH packets routed to clients, by QoS."
    );
    describe_counter!(
        "aviary_connacks_total",
        "CONNACKs sent by reason code (0x00: accepted; 3.x return codes as their 5.0 reason)."
    );
    describe_counter!(
        "aviary_messages_dropped_total",
        "Message copies dropped, by reason (QoS 1/2 are never dropped silently)."
    );
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
        let mut out = String::new();
        h.render("x", "help", &mut out);
        assert!(out.contains("x_bucket{le=\"0.00005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
    }
}
