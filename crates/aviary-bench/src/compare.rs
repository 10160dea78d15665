//! Side by side: runs the same scenario against Aviary and Mosquitto (each started fresh
//! for every round, with equivalent settings) in alternating rounds (A M, then M A, ...),
//! each round in an `aviary-bench run` child process (optionally pinned with `taskset`),
//! and summarizes the rounds per broker (median) with the ratios Aviary / Mosquitto.

use std::fmt::Write as _;
use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use crate::brokers::{BrokerKind, BrokerSettings, RunningBroker};
use crate::cli::CompareArgs;
use crate::report::RunReport;
use crate::scenario::Scenario;

/// One broker's figures over all its rounds (medians).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub broker: String,
    pub rounds: usize,
    /// Rounds whose verdict was OK.
    pub ok_rounds: usize,
    /// Deliveries per second (connection rate: connections per second).
    pub rate_per_s: f64,
    /// Broker CPU µs per delivered message (per connection in connection scenarios).
    pub cpu_us_per_unit: f64,
    /// Delivery latency p99 (connection scenarios: connect latency p99), µs.
    pub p50_us: f64,
    pub p99_us: f64,
    /// Broker peak RSS (VmHWM), MiB.
    pub peak_rss_mib: f64,
    /// Idle: broker RSS growth per connection, bytes.
    pub bytes_per_connection: Option<f64>,
}

/// Aviary's figure divided by Mosquitto's (below 1 is better for all but `rate`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Ratios {
    pub rate: f64,
    pub cpu_per_unit: f64,
    pub p99: f64,
    pub peak_rss: f64,
    pub bytes_per_connection: Option<f64>,
}

/// The outcome of `compare`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Comparison {
    pub scenario: String,
    pub qos: u8,
    pub payload_bytes: usize,
    pub aviary: Summary,
    pub mosquitto: Summary,
    pub ratios: Ratios,
    /// Every round's full report, in the order run.
    pub rounds: Vec<RunReport>,
}

/// Runs the comparison.
pub fn run(args: &CompareArgs) -> anyhow::Result<Comparison> {
    if args.tls && args.scenario.scenario != Scenario::ConnRate {
        anyhow::bail!("--tls is only for --scenario conn-rate");
    }
    let settings = |pin| BrokerSettings {
        max_inflight: args.broker_inflight,
        max_queued: args.max_queued,
        persistence: args.scenario.scenario == Scenario::Persistent,
        pin_cpu: pin,
        tls: args.tls,
    };
    let aviary = BrokerKind::Aviary(args.aviary.clone());
    let mosquitto = BrokerKind::Mosquitto(args.mosquitto.clone());
    let mut rounds = Vec::new();
    for round in 0..args.rounds.max(1) {
        let order = if round % 2 == 0 {
            [&aviary, &mosquitto]
        } else {
            [&mosquitto, &aviary]
        };
        for kind in order {
            eprintln!("round {}: {} ...", round + 1, kind.label());
            // A fresh broker per round: peak RSS (VmHWM) and memory per connection are then
            // this round's, not an earlier round's.
            let mut broker = RunningBroker::start(kind, &settings(args.pin_broker_cpu))
                .with_context(|| format!("starting {}", kind.label()))?;
            let report = run_child(args, &broker);
            broker.check_alive()?;
            let report = report?;
            if !args.json {
                eprintln!("{}", report.table());
            }
            rounds.push(report);
        }
    }
    let summarize = |label: &str| summary(label, rounds.iter().filter(|r| r.broker == label));
    let a = summarize("aviary");
    let m = summarize("mosquitto");
    let ratio = |x: f64, y: f64| if y == 0.0 { 0.0 } else { x / y };
    let ratios = Ratios {
        rate: ratio(a.rate_per_s, m.rate_per_s),
        cpu_per_unit: ratio(a.cpu_us_per_unit, m.cpu_us_per_unit),
        p99: ratio(a.p99_us, m.p99_us),
        peak_rss: ratio(a.peak_rss_mib, m.peak_rss_mib),
        bytes_per_connection: a
            .bytes_per_connection
            .zip(m.bytes_per_connection)
            .map(|(x, y)| ratio(x, y)),
    };
    Ok(Comparison {
        scenario: args.scenario.scenario.name().to_owned(),
        qos: args.scenario.qos,
        payload_bytes: args.scenario.payload,
        aviary: a,
        mosquitto: m,
        ratios,
        rounds,
    })
}

/// Runs one round in a child process and reads its JSON report.
fn run_child(args: &CompareArgs, broker: &RunningBroker) -> anyhow::Result<RunReport> {
    let exe = std::env::current_exe().context("locating aviary-bench")?;
    let mut command = match args.pin_generator_cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu.to_string()).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    command
        .arg("run")
        .args(match &broker.tls {
            // The TLS variant runs against the TLS listener.
            Some(tls) => vec![
                format!("--broker={}", tls.addr),
                format!("--tls-ca={}", tls.ca.display()),
            ],
            None => vec![format!("--broker={}", broker.addr)],
        })
        .arg(format!("--broker-pid={}", broker.pid))
        .arg(format!("--label={}", broker.label))
        .arg("--json")
        .args(args.scenario.to_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = command.spawn().context("starting a run")?;
    // The child has its own hard timeout; this one catches a child that ignores it.
    let deadline = Instant::now() + args.scenario.hard_timeout() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("run against {} exceeded its hard timeout", broker.label);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_to_string(&mut out)?;
    }
    // Exit status 1 is a run whose verdict is FAILED: its report still counts (and says so).
    match serde_json::from_str(&out) {
        Ok(report) if status.success() || status.code() == Some(1) => Ok(report),
        _ => anyhow::bail!("run against {} failed ({status}): {out}", broker.label),
    }
}

/// The medians of a broker's rounds.
fn summary<'a>(label: &str, reports: impl Iterator<Item = &'a RunReport>) -> Summary {
    let reports: Vec<&RunReport> = reports.collect();
    let median_of = |f: &dyn Fn(&RunReport) -> Option<f64>| {
        median(reports.iter().filter_map(|r| f(r)).collect())
    };
    Summary {
        broker: label.to_owned(),
        rounds: reports.len(),
        ok_rounds: reports.iter().filter(|r| r.ok).count(),
        rate_per_s: median_of(&|r| {
            Some(r.connections.map_or(r.delivered_per_s, |c| {
                if c.per_s > 0.0 {
                    c.per_s
                } else {
                    r.delivered_per_s
                }
            }))
        })
        .unwrap_or(0.0),
        cpu_us_per_unit: median_of(&|r| r.broker_usage.map(|b| b.cpu_us_per_unit)).unwrap_or(0.0),
        p50_us: median_of(&|r| {
            Some(
                r.connections
                    .map_or(r.latency.p50_us, |c| c.connect_latency.p50_us),
            )
        })
        .unwrap_or(0.0),
        p99_us: median_of(&|r| {
            Some(
                r.connections
                    .map_or(r.latency.p99_us, |c| c.connect_latency.p99_us),
            )
        })
        .unwrap_or(0.0),
        peak_rss_mib: median_of(&|r| r.broker_usage.map(|b| b.peak_rss_kib as f64 / 1024.0))
            .unwrap_or(0.0),
        bytes_per_connection: median_of(&|r| {
            r.connections.and_then(|c| c.broker_bytes_per_connection)
        }),
    }
}

/// The median (mean of the middle two for an even count); `None` when empty.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

impl Comparison {
    /// The side-by-side table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "scenario={} qos={} payload={}B, medians over {} + {} rounds",
            self.scenario, self.qos, self.payload_bytes, self.aviary.rounds, self.mosquitto.rounds
        );
        let _ = writeln!(
            out,
            "  {:<24} {:>12} {:>12} {:>8}",
            "", "aviary", "mosquitto", "ratio"
        );
        let (a, m, r) = (&self.aviary, &self.mosquitto, &self.ratios);
        let mut row = |name: &str, x: f64, y: f64, ratio: f64| {
            let _ = writeln!(out, "  {name:<24} {x:>12.2} {y:>12.2} {ratio:>8.2}");
        };
        row("rate /s", a.rate_per_s, m.rate_per_s, r.rate);
        row(
            "broker cpu µs/unit",
            a.cpu_us_per_unit,
            m.cpu_us_per_unit,
            r.cpu_per_unit,
        );
        row(
            "p50 µs",
            a.p50_us,
            m.p50_us,
            if m.p50_us == 0.0 {
                0.0
            } else {
                a.p50_us / m.p50_us
            },
        );
        row("p99 µs", a.p99_us, m.p99_us, r.p99);
        row("peak rss MiB", a.peak_rss_mib, m.peak_rss_mib, r.peak_rss);
        if let (Some(x), Some(y), Some(ratio)) = (
            a.bytes_per_connection,
            m.bytes_per_connection,
            r.bytes_per_connection,
        ) {
            row("bytes/idle connection", x, y, ratio);
        }
        let _ = writeln!(
            out,
            "  {:<24} {:>12} {:>12}",
            "rounds ok",
            format!("{}/{}", a.ok_rounds, a.rounds),
            format!("{}/{}", m.ok_rounds, m.rounds)
        );
        out
    }
}

/// Runs every combination of the matrix and returns the Markdown table (rows are printed to
/// stderr as they complete, so a long matrix shows progress).
pub fn matrix(args: &crate::cli::MatrixArgs) -> anyhow::Result<String> {
    let mut table = String::from(
        "| scenario | QoS | msg/s Aviary | msg/s Mosquitto | ratio | CPU µs/msg Aviary | CPU µs/msg Mosquitto | ratio | p99 µs Aviary | p99 µs Mosquitto | ratio | peak RSS MiB A / M | rounds OK A / M |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut json = match &args.json_out {
        Some(path) => Some(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        ),
        None => None,
    };
    for &scenario in &args.scenarios {
        for &qos in &args.qos_list {
            let mut one = args.compare.clone();
            one.scenario.scenario = scenario;
            one.scenario.qos = qos.min(2);
            one.json = true; // keeps the per-round tables off stderr
            let c = run(&one)?;
            let (a, m, r) = (&c.aviary, &c.mosquitto, &c.ratios);
            let row = format!(
                "| {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} | {:.2} | {:.1} / {:.1} | {}/{} / {}/{} |\n",
                c.scenario, c.qos, a.rate_per_s, m.rate_per_s, r.rate, a.cpu_us_per_unit,
                m.cpu_us_per_unit, r.cpu_per_unit, a.p99_us, m.p99_us, r.p99, a.peak_rss_mib,
                m.peak_rss_mib, a.ok_rounds, a.rounds, m.ok_rounds, m.rounds,
            );
            eprint!("{row}");
            table.push_str(&row);
            if let Some(file) = &mut json {
                use std::io::Write as _;
                writeln!(file, "{}", serde_json::to_string(&c)?)?;
            }
        }
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }
}
