//! Prometheus metrics, served by the API listener at `/metrics`. Each broker owns its
//! recorder (not the process-global one, so several brokers in one test process stay
//! apart); the broker task refreshes every value from the core's counters and its own once
//! per tick, so the hot path records nothing and the values are exact counts.

use std::sync::Arc;

use metrics::{counter, gauge, with_local_recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::broker_task::Ops;
use aviary_core::BrokerStats;

/// Reason codes of a refused CONNECT that are authentication failures (0x86 bad user name
/// or password, 0x87 not authorized; 3.x return codes 4 and 5 map to them).
const AUTH_FAILURES: [u8; 2] = [0x86, 0x87];

/// The labels of QoS 0, 1, 2.
const QOS: [&str; 3] = ["0", "1", "2"];

/// One broker's metrics.
#[derive(Clone)]
pub(crate) struct Metrics {
    /// Where the values are recorded.
    recorder: Arc<PrometheusRecorder>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub(crate) fn new() -> Self {
        Self {
            recorder: Arc::new(PrometheusBuilder::new().build_recorder()),
        }
    }

    /// Renders the Prometheus text exposition.
    pub(crate) fn handle(&self) -> PrometheusHandle {
        self.recorder.handle()
    }

    /// Sets every value from the broker's counters (called by the broker task).
    pub(crate) fn refresh(&self, stats: &BrokerStats, ops: &Ops, dropped_outbox: u64) {
        with_local_recorder(&*self.recorder, || {
            gauge!("aviary_connections").set(stats.connections as f64);
            gauge!("aviary_sessions").set(stats.sessions as f64);
            gauge!("aviary_subscriptions").set(stats.subscriptions as f64);
            gauge!("aviary_retained_messages").set(stats.retained as f64);
            gauge!("aviary_open_sockets").set(ops.conns.len() as f64);
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
                counter!("aviary_usage_units_by_listener_total", "listener" => listener.clone())
                    .absolute(series.total);
            }
            gauge!("aviary_queued_messages").set(ops.queued as f64);
            gauge!("aviary_inflight_messages").set(ops.inflight as f64);
        });
    }
}
