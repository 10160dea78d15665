//! The result of one run, as a readable table and as JSON (the same struct, serialized, with
//! the latency histograms the table only summarizes), and the broker's resource use derived
//! from two /proc samples.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::procstat::ProcSample;
use crate::stats::{DeliveryCheck, Histogram, LatencySummary};

/// Everything a run measured. Deserialize is for `compare`, which runs each round in a
/// child process and reads its JSON.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunReport {
    /// A label for the broker (`compare` sets "aviary" / "mosquitto").
    pub broker: String,
    pub scenario: String,
    pub qos: u8,
    pub payload_bytes: usize,
    pub publishers: usize,
    pub subscribers: usize,
    /// The measured window: first send to last delivery (or the scenario's own window).
    pub elapsed_s: f64,
    /// Messages the publishers sent.
    pub sent: u64,
    /// Deliveries the subscribers got (duplicates included).
    pub delivered: u64,
    /// Deliveries per second over `elapsed_s`.
    pub delivered_per_s: f64,
    pub delivery: DeliveryCheck,
    /// Publish-to-receive latency.
    pub latency: LatencySummary,
    /// The histogram behind `latency` (message scenarios), so that `compare` can pool its
    /// rounds' samples; absent from connection scenarios and from older reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_histogram: Option<Histogram>,
    /// At a fixed `--rate`: how late the publishers queued each message after it was due
    /// (the generator's own lateness, and the broker's hold-back); large values mean the
    /// offered load was not the one asked for.
    #[serde(default)]
    pub send_lag: Option<LatencySummary>,
    pub broker_usage: Option<BrokerUsage>,
    /// CPU seconds the generator itself used (to tell when it, not the broker, was the limit).
    pub generator_cpu_s: f64,
    /// Connection scenarios (idle, connection rate).
    pub connections: Option<ConnectionFigures>,
    /// Distinct error messages with their counts.
    pub errors: BTreeMap<String, u64>,
    /// No errors, nothing missing at QoS 1/2, no duplicate at QoS 2.
    pub ok: bool,
}

/// The broker's CPU and memory over a run.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct BrokerUsage {
    pub pid: u32,
    /// CPU seconds (user + system) the broker used during the measured window.
    pub cpu_s: f64,
    /// `cpu_s` per delivered message (or per connection in connection scenarios), µs.
    pub cpu_us_per_unit: f64,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    /// Peak RSS since the broker started (VmHWM), KiB.
    pub peak_rss_kib: u64,
}

impl BrokerUsage {
    /// From samples before and after; `units` is what the CPU is divided by.
    pub fn between(
        pid: u32,
        before: ProcSample,
        after: ProcSample,
        tick: Duration,
        units: u64,
    ) -> Self {
        let cpu_s = after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 * tick.as_secs_f64();
        Self {
            pid,
            cpu_s,
            cpu_us_per_unit: if units == 0 {
                0.0
            } else {
                cpu_s * 1e6 / units as f64
            },
            rss_before_kib: before.rss_kib,
            rss_after_kib: after.rss_kib,
            peak_rss_kib: after.hwm_kib,
        }
    }
}

/// Figures of the connection scenarios.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ConnectionFigures {
    /// Connections opened successfully (idle: held at once; rate: over the run).
    pub opened: u64,
    pub failed: u64,
    /// Connection rate: CONNECT→CONNACK round trips completed per second (idle: while
    /// opening them all).
    pub per_s: f64,
    /// Connect latency (TCP + CONNECT/CONNACK).
    pub connect_latency: LatencySummary,
    /// The histogram behind `connect_latency` (idle with several worker processes: all
    /// workers' samples merged), for `compare` to pool; absent from older reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_histogram: Option<Histogram>,
    /// Idle: broker RSS growth per held connection, bytes.
    pub broker_bytes_per_connection: Option<f64>,
}

impl RunReport {
    /// The human-readable form.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} scenario={} qos={} payload={}B publishers={} subscribers={}",
            if self.broker.is_empty() {
                "broker"
            } else {
                &self.broker
            },
            self.scenario,
            self.qos,
            self.payload_bytes,
            self.publishers,
            self.subscribers
        );
        let row = |out: &mut String, k: &str, v: String| {
            let _ = writeln!(out, "  {k:<26} {v}");
        };
        row(&mut out, "elapsed", format!("{:.2} s", self.elapsed_s));
        if self.connections.is_none() || self.sent > 0 {
            row(
                &mut out,
                "sent / delivered",
                format!("{} / {}", self.sent, self.delivered),
            );
            row(
                &mut out,
                "delivered/s",
                format!("{:.0}", self.delivered_per_s),
            );
            let d = &self.delivery;
            row(
                &mut out,
                "expected/unique/missing",
                format!("{} / {} / {}", d.expected, d.unique, d.missing),
            );
            row(
                &mut out,
                "duplicates/reordered",
                format!("{} / {} (foreign {})", d.duplicates, d.reordered, d.foreign),
            );
            let l = &self.latency;
            row(
                &mut out,
                "latency p50/p99/p999",
                format!(
                    "{:.0} / {:.0} / {:.0} µs (max {:.0})",
                    l.p50_us, l.p99_us, l.p999_us, l.max_us
                ),
            );
        }
        if let Some(l) = &self.send_lag {
            row(
                &mut out,
                "send lag p50/p99/p999",
                format!(
                    "{:.0} / {:.0} / {:.0} µs (max {:.0})",
                    l.p50_us, l.p99_us, l.p999_us, l.max_us
                ),
            );
        }
        if let Some(c) = &self.connections {
            row(
                &mut out,
                "connections ok/failed",
                format!("{} / {}", c.opened, c.failed),
            );
            if c.per_s > 0.0 {
                row(&mut out, "connections/s", format!("{:.0}", c.per_s));
            }
            let l = &c.connect_latency;
            if l.samples > 0 {
                row(
                    &mut out,
                    "connect p50/p99",
                    format!("{:.0} / {:.0} µs", l.p50_us, l.p99_us),
                );
            }
            if let Some(b) = c.broker_bytes_per_connection {
                row(&mut out, "broker bytes/connection", format!("{b:.0}"));
            }
        }
        if let Some(b) = &self.broker_usage {
            row(&mut out, "broker cpu", format!("{:.3} s", b.cpu_s));
            row(
                &mut out,
                "broker cpu per unit",
                format!("{:.2} µs", b.cpu_us_per_unit),
            );
            row(
                &mut out,
                "broker rss before/after/peak",
                format!(
                    "{:.1} / {:.1} / {:.1} MiB",
                    b.rss_before_kib as f64 / 1024.0,
                    b.rss_after_kib as f64 / 1024.0,
                    b.peak_rss_kib as f64 / 1024.0
                ),
            );
        }
        row(
            &mut out,
            "generator cpu",
            format!("{:.3} s", self.generator_cpu_s),
        );
        for (error, count) in &self.errors {
            row(&mut out, "error", format!("{error} (x{count})"));
        }
        row(
            &mut out,
            "verdict",
            if self.ok {
                "OK".into()
            } else {
                "FAILED".into()
            },
        );
        out
    }
}
