//! Side by side: runs the same scenario against Aviary and Mosquitto (each started fresh
//! for every round, with equivalent settings) in alternating rounds (A M, then M A, ...),
//! each round in an `aviary-bench run` child process (optionally pinned with `taskset`),
//! and summarizes the rounds per broker (median) with the ratios Aviary / Mosquitto.
//! Latency is also summarized pooled: the rounds' histograms (in each child's JSON report)
//! merged into one, whose quantiles are those of every sample of the comparison; a single
//! round's p99 is too noisy for the median of a few of them to be a steady figure.

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
use crate::stats::Histogram;

/// One broker's figures over all its rounds: medians of the rounds' figures, and latency
/// quantiles of all rounds' samples pooled.
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
    /// Median of the rounds' delivery latency p50 (connection scenarios: connect latency), µs.
    pub p50_us: f64,
    /// Median of the rounds' p99 of the same latency, µs.
    pub p99_us: f64,
    /// The same latency's p50 over all rounds' samples pooled, µs; `None` when there were no
    /// samples, or when a round's report carried no histogram (an older build's).
    pub pooled_p50_us: Option<f64>,
    /// p99 of all rounds' samples pooled (of every message delivered in the comparison), µs:
    /// steadier than `p99_us`, the median of a few noisy per-round p99s.
    pub pooled_p99_us: Option<f64>,
    /// p999 of all rounds' samples pooled, µs.
    pub pooled_p999_us: Option<f64>,
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
    /// Pooled p99 ratio; `None` unless both brokers have a pooled p99.
    pub pooled_p99: Option<f64>,
    /// The p99s compared round by round; `None` without latency samples.
    pub p99_paired: Option<PairedP99>,
    pub peak_rss: f64,
    pub bytes_per_connection: Option<f64>,
}

/// p99 latency compared within each round, between the two brokers' runs that followed
/// each other (A M, M A, ...). On a shared machine a whole run can land in a noisy spell
/// (per-run p99s of the same broker here range over 3× and more); both runs of a round share most
/// of it, so their ratio is steadier than any summary of each broker's runs alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct PairedP99 {
    /// Rounds compared.
    pub rounds: usize,
    /// The median of the rounds' p99 ratios (Aviary / Mosquitto).
    pub median_ratio: f64,
    /// Rounds in which Aviary's p99 was the lower one.
    pub aviary_lower: usize,
    /// Rounds in which Mosquitto's was (the rest were equal).
    pub mosquitto_lower: usize,
    /// How likely a split at least this uneven would be if neither broker's p99 tended to
    /// be the lower (two-sided sign test over the rounds that were not ties): small values
    /// (below 0.05, say) mean the difference is the brokers', not the machine's noise.
    pub sign_test_p: f64,
}

impl PairedP99 {
    /// Pairs the runs of each round (in the order run: two per round); `None` when no
    /// round has a latency p99 on both sides.
    fn of(rounds: &[RunReport]) -> Option<Self> {
        let p99 =
            |r: &RunReport| Some(r.latency.p99_us).filter(|v| r.latency.samples > 0 && *v > 0.0);
        let ratios: Vec<f64> = rounds
            .chunks_exact(2)
            .filter_map(|pair| {
                let (a, m) = match (pair[0].broker.as_str(), pair[1].broker.as_str()) {
                    ("aviary", "mosquitto") => (&pair[0], &pair[1]),
                    ("mosquitto", "aviary") => (&pair[1], &pair[0]),
                    _ => return None,
                };
                Some(p99(a)? / p99(m)?)
            })
            .collect();
        let aviary_lower = ratios.iter().filter(|r| **r < 1.0).count();
        let mosquitto_lower = ratios.iter().filter(|r| **r > 1.0).count();
        Some(Self {
            rounds: ratios.len(),
            aviary_lower,
            mosquitto_lower,
            sign_test_p: sign_test_p(aviary_lower, mosquitto_lower),
            median_ratio: median(ratios)?,
        })
    }
}

/// The two-sided exact sign test: the probability, when each of `a + b` rounds is equally
/// likely to go either way, of a split at least as uneven as `a` to `b`. Summed in log
/// space, so that any number of rounds neither overflows nor underflows.
fn sign_test_p(a: usize, b: usize) -> f64 {
    let n = a + b;
    let fewer = a.min(b);
    // ln P(X = i) for X ~ Binomial(n, 1/2), from i = 0 upwards.
    let mut ln_p = -(n as f64) * std::f64::consts::LN_2;
    let mut tail = 0.0;
    for i in 0..=fewer {
        tail += ln_p.exp();
        ln_p += ((n - i) as f64).ln() - ((i + 1) as f64).ln();
    }
    (2.0 * tail).min(1.0)
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
    /// Every round's report, in the order run, without the latency histograms (pooled in
    /// the summaries).
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
        aviary_durability: args.aviary_durability,
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
    let mut ratios = Ratios::between(&a, &m);
    ratios.p99_paired = PairedP99::of(&rounds);
    // Pooled into the summaries; left in, the histograms would be most of the output
    // (up to ~30 KB of pretty JSON per round).
    for r in &mut rounds {
        r.latency_histogram = None;
        if let Some(c) = &mut r.connections {
            c.connect_histogram = None;
        }
    }
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
        .stderr(Stdio::inherit());
    // The child has its own hard timeout; this one catches a child that ignores it.
    let deadline = Instant::now() + args.scenario.hard_timeout() + Duration::from_secs(10);
    let (status, out) = run_collecting_stdout(&mut command, deadline)?
        .ok_or_else(|| anyhow::anyhow!("run against {} exceeded its hard timeout", broker.label))?;
    // Exit status 1 is a run whose verdict is FAILED: its report still counts (and says so).
    match serde_json::from_str(&out) {
        Ok(report) if status.success() || status.code() == Some(1) => Ok(report),
        _ => anyhow::bail!("run against {} failed ({status}): {out}", broker.label),
    }
}

/// Runs `command` to its end and returns its exit status and standard output, or `None`
/// (the child killed) if it is still running at `deadline`. Its output is read while it
/// runs: a report larger than the pipe's buffer (64 KiB; a wide latency histogram makes
/// one) would otherwise block the child's last write while this side waited for its exit.
fn run_collecting_stdout(
    command: &mut Command,
    deadline: Instant,
) -> anyhow::Result<Option<(std::process::ExitStatus, String)>> {
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .context("starting a run")?;
    let reader = child.stdout.take().map(|mut stdout| {
        std::thread::spawn(move || {
            let mut out = String::new();
            stdout.read_to_string(&mut out).map(|_| out)
        })
    });
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = match reader {
        Some(reader) => reader
            .join()
            .map_err(|_| anyhow::anyhow!("the thread reading the run's report panicked"))?
            .context("reading the run's report")?,
        None => String::new(),
    };
    Ok(Some((status, out)))
}

/// The medians of a broker's rounds, and the quantiles of their latency samples pooled.
fn summary<'a>(label: &str, reports: impl Iterator<Item = &'a RunReport>) -> Summary {
    let reports: Vec<&RunReport> = reports.collect();
    let median_of = |f: &dyn Fn(&RunReport) -> Option<f64>| {
        median(reports.iter().filter_map(|r| f(r)).collect())
    };
    // The histogram behind each round's latency figure below; pooled only if every round
    // has one, so that the pooled figure never silently leaves a round out.
    let pooled = reports
        .iter()
        .try_fold(Histogram::default(), |mut all, r| {
            let round = match &r.connections {
                Some(c) => c.connect_histogram.as_ref(),
                None => r.latency_histogram.as_ref(),
            }?;
            all.merge(round);
            Some(all)
        })
        .filter(|all| !all.is_empty())
        .map(|all| all.summary());
    Summary {
        broker: label.to_owned(),
        rounds: reports.len(),
        ok_rounds: reports.iter().filter(|r| r.ok).count(),
        rate_per_s: median_of(&|r| {
            Some(r.connections.as_ref().map_or(r.delivered_per_s, |c| {
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
                    .as_ref()
                    .map_or(r.latency.p50_us, |c| c.connect_latency.p50_us),
            )
        })
        .unwrap_or(0.0),
        p99_us: median_of(&|r| {
            Some(
                r.connections
                    .as_ref()
                    .map_or(r.latency.p99_us, |c| c.connect_latency.p99_us),
            )
        })
        .unwrap_or(0.0),
        pooled_p50_us: pooled.map(|l| l.p50_us),
        pooled_p99_us: pooled.map(|l| l.p99_us),
        pooled_p999_us: pooled.map(|l| l.p999_us),
        peak_rss_mib: median_of(&|r| r.broker_usage.map(|b| b.peak_rss_kib as f64 / 1024.0))
            .unwrap_or(0.0),
        bytes_per_connection: median_of(&|r| {
            r.connections
                .as_ref()
                .and_then(|c| c.broker_bytes_per_connection)
        }),
    }
}

impl Ratios {
    /// Aviary's summary `a` over Mosquitto's `m`; a ratio over 0 is 0.
    fn between(a: &Summary, m: &Summary) -> Self {
        Self {
            rate: ratio(a.rate_per_s, m.rate_per_s),
            cpu_per_unit: ratio(a.cpu_us_per_unit, m.cpu_us_per_unit),
            p99: ratio(a.p99_us, m.p99_us),
            pooled_p99: a
                .pooled_p99_us
                .zip(m.pooled_p99_us)
                .map(|(x, y)| ratio(x, y)),
            p99_paired: None,
            peak_rss: ratio(a.peak_rss_mib, m.peak_rss_mib),
            bytes_per_connection: a
                .bytes_per_connection
                .zip(m.bytes_per_connection)
                .map(|(x, y)| ratio(x, y)),
        }
    }
}

/// `x / y`, or 0 when `y` is 0 (a figure the run did not produce).
fn ratio(x: f64, y: f64) -> f64 {
    if y == 0.0 {
        0.0
    } else {
        x / y
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
            "  {:<26} {:>12} {:>12} {:>8}",
            "", "aviary", "mosquitto", "ratio"
        );
        let (a, m, r) = (&self.aviary, &self.mosquitto, &self.ratios);
        // A figure one side lacks (no pooled latency) shows as "-".
        let mut row = |name: &str, x: Option<f64>, y: Option<f64>, ratio: Option<f64>| {
            let cell = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
            let (x, y, ratio) = (cell(x), cell(y), cell(ratio));
            let _ = writeln!(out, "  {name:<26} {x:>12} {y:>12} {ratio:>8}");
        };
        row(
            "rate /s",
            Some(a.rate_per_s),
            Some(m.rate_per_s),
            Some(r.rate),
        );
        row(
            "broker cpu µs/unit",
            Some(a.cpu_us_per_unit),
            Some(m.cpu_us_per_unit),
            Some(r.cpu_per_unit),
        );
        row(
            "p50 µs",
            Some(a.p50_us),
            Some(m.p50_us),
            Some(ratio(a.p50_us, m.p50_us)),
        );
        row("p99 µs", Some(a.p99_us), Some(m.p99_us), Some(r.p99));
        if a.pooled_p99_us.is_some() || m.pooled_p99_us.is_some() {
            let pooled_ratio = |x: Option<f64>, y: Option<f64>| x.zip(y).map(|(x, y)| ratio(x, y));
            row(
                "p50 µs, all rounds pooled",
                a.pooled_p50_us,
                m.pooled_p50_us,
                pooled_ratio(a.pooled_p50_us, m.pooled_p50_us),
            );
            row(
                "p99 µs, all rounds pooled",
                a.pooled_p99_us,
                m.pooled_p99_us,
                r.pooled_p99,
            );
            row(
                "p999 µs, all rounds pooled",
                a.pooled_p999_us,
                m.pooled_p999_us,
                pooled_ratio(a.pooled_p999_us, m.pooled_p999_us),
            );
        }
        row(
            "peak rss MiB",
            Some(a.peak_rss_mib),
            Some(m.peak_rss_mib),
            Some(r.peak_rss),
        );
        if r.bytes_per_connection.is_some() {
            row(
                "bytes/idle connection",
                a.bytes_per_connection,
                m.bytes_per_connection,
                r.bytes_per_connection,
            );
        }
        if let Some(p) = r.p99_paired {
            let _ = writeln!(
                out,
                "  {:<26} {:>12} {:>12} {:>8.2}",
                "p99, round by round",
                format!("lower {}/{}", p.aviary_lower, p.rounds),
                format!("lower {}/{}", p.mosquitto_lower, p.rounds),
                p.median_ratio
            );
            let _ = writeln!(out, "  {:<26} {:>12.3}", "p99 sign test p", p.sign_test_p);
        }
        let _ = writeln!(
            out,
            "  {:<26} {:>12} {:>12}",
            "rounds ok",
            format!("{}/{}", a.ok_rounds, a.rounds),
            format!("{}/{}", m.ok_rounds, m.rounds)
        );
        out
    }

    /// This comparison's row of [`MATRIX_HEADER`].
    pub fn markdown_row(&self) -> String {
        let (a, m, r) = (&self.aviary, &self.mosquitto, &self.ratios);
        let pooled = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
        format!(
            "| {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} | {:.2} | {} / {} | {} | {} | {:.1} / {:.1} | {}/{} / {}/{} |\n",
            self.scenario, self.qos, a.rate_per_s, m.rate_per_s, r.rate, a.cpu_us_per_unit,
            m.cpu_us_per_unit, r.cpu_per_unit, a.p99_us, m.p99_us, r.p99,
            pooled(a.pooled_p99_us), pooled(m.pooled_p99_us),
            r.pooled_p99.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}")),
            r.p99_paired.map_or_else(
                || "-".to_owned(),
                |p| format!(
                    "{:.2} ({}/{}, p {:.2})",
                    p.median_ratio, p.aviary_lower, p.rounds, p.sign_test_p
                )
            ),
            a.peak_rss_mib, m.peak_rss_mib, a.ok_rounds, a.rounds, m.ok_rounds, m.rounds,
        )
    }
}

/// The head of the Markdown table `matrix` prints, one [`Comparison::markdown_row`] per
/// scenario and QoS. "p99 µs Aviary / Mosquitto" are medians of the rounds' p99s; "p99 µs
/// pooled" is the p99 of all rounds' samples together ("-" without samples); each ratio is
/// Aviary / Mosquitto of the columns before it. "p99 round by round" is [`PairedP99`]: the
/// median of the rounds' ratios, in how many rounds Aviary's p99 was the lower, and the
/// sign test's p for that split.
pub const MATRIX_HEADER: &str = "| scenario | QoS | msg/s Aviary | msg/s Mosquitto | ratio | CPU µs/msg Aviary | CPU µs/msg Mosquitto | ratio | p99 µs Aviary | p99 µs Mosquitto | ratio | p99 µs pooled A / M | ratio | p99 round by round: median ratio (A lower, sign test p) | peak RSS MiB A / M | rounds OK A / M |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";

/// Runs every combination of the matrix and returns the Markdown table ([`MATRIX_HEADER`];
/// rows are printed to stderr as they complete, so a long matrix shows progress).
pub fn matrix(args: &crate::cli::MatrixArgs) -> anyhow::Result<String> {
    let mut table = String::from(MATRIX_HEADER);
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
            let row = c.markdown_row();
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
    use crate::report::ConnectionFigures;

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    /// A message round of `broker` whose deliveries took `latencies_ns`, reported as a run
    /// reports it: the summary and the histogram behind it.
    fn message_round(broker: &str, latencies_ns: impl IntoIterator<Item = u64>) -> RunReport {
        let mut latency = Histogram::default();
        for v in latencies_ns {
            latency.record(v);
        }
        RunReport {
            broker: broker.to_owned(),
            delivered: latency.len(),
            latency: latency.summary(),
            latency_histogram: Some(latency),
            ..RunReport::default()
        }
    }

    /// Round A's latencies: 1,000 deliveries at 10 µs.
    fn round_a_ns() -> impl Iterator<Item = u64> {
        std::iter::repeat_n(10_000, 1_000)
    }

    /// Round B's: 970 at 100 µs and a tail of 30 spread over 510..=800 µs. Of A's and B's
    /// 2,000 together, the 1,980th is the 10th of B's tail (600 µs); B's own p99 is the 20th
    /// of its tail (700 µs), so the median of the rounds' p99s is (10 + 700) / 2.
    fn round_b_ns() -> impl Iterator<Item = u64> {
        std::iter::repeat_n(100_000, 970).chain((0..30).map(|i| 510_000 + i * 10_000))
    }

    fn two_rounds() -> [RunReport; 2] {
        [
            message_round("aviary", round_a_ns()),
            message_round("aviary", round_b_ns()),
        ]
    }

    /// Within the histogram's resolution (< 0.8 %).
    fn assert_near(got: f64, want: f64) {
        assert!((got - want).abs() <= want * 0.008, "{got} is not ~{want}");
    }

    #[test]
    fn a_report_larger_than_the_pipe_buffer_is_read_whole() {
        // 200,000 bytes: three times a pipe's buffer. Read only after the child's exit,
        // the child would block on its write until the deadline and be killed.
        let mut command = Command::new("sh");
        command.args(["-c", "head -c 200000 /dev/zero | tr '\\0' x"]);
        let deadline = Instant::now() + Duration::from_secs(30);
        let (status, out) = run_collecting_stdout(&mut command, deadline)
            .expect("the command runs")
            .expect("the command ends before the deadline");
        assert!(status.success());
        assert_eq!(out.len(), 200_000);
        assert!(out.bytes().all(|b| b == b'x'));
    }

    #[test]
    fn the_sign_test_gives_the_binomial_tail_on_both_sides() {
        let near = |got: f64, want: f64| assert!((got - want).abs() < 1e-9, "{got} vs {want}");
        // 10 rounds all one way: 2 × (1/2)^10.
        near(sign_test_p(10, 0), 2.0 / 1024.0);
        near(sign_test_p(0, 10), 2.0 / 1024.0);
        // 4 of 15: 2 × (1 + 15 + 105 + 455 + 1365) / 2^15.
        near(sign_test_p(4, 11), 2.0 * 1941.0 / 32768.0);
        // Even splits, and no rounds at all, are 1.
        near(sign_test_p(5, 5), 1.0);
        near(sign_test_p(0, 0), 1.0);
        // Thousands of rounds neither overflow nor underflow: 1000 to 1000 is even, 0 to
        // 2000 is as certain as a double can say.
        near(sign_test_p(1000, 1000), 1.0);
        assert_eq!(sign_test_p(0, 2000), 0.0);
    }

    #[test]
    fn p99s_are_compared_within_each_round_whichever_broker_ran_first() {
        // Round 1 (A M): Aviary 10 µs against B's 700; round 2 (M A): 700 against A's 10...
        let a = || message_round("aviary", round_a_ns());
        let b = |broker: &str| message_round(broker, round_b_ns());
        let rounds = [
            a(),
            b("mosquitto"),
            b("mosquitto"),
            message_round("aviary", round_b_ns()),
            message_round("mosquitto", round_a_ns()),
            b("aviary"),
        ];
        let paired = PairedP99::of(&rounds).unwrap();
        assert_eq!(paired.rounds, 3);
        // Ratios ~0.014, 1 and ~70: Aviary lower in the first, Mosquitto in the last, the
        // second a tie; the median is the 1.
        assert_eq!(paired.aviary_lower, 1);
        assert_eq!(paired.mosquitto_lower, 1);
        assert_near(paired.median_ratio, 1.0);
        // One round each way: as even as it gets.
        assert_eq!(paired.sign_test_p, 1.0);
        // Rounds without latency samples (connection scenarios) give nothing to compare.
        let empty = [
            RunReport {
                broker: "aviary".into(),
                ..RunReport::default()
            },
            RunReport {
                broker: "mosquitto".into(),
                ..RunReport::default()
            },
        ];
        assert_eq!(PairedP99::of(&empty), None);
    }

    #[test]
    fn pooled_quantiles_are_those_of_all_rounds_samples_together() {
        let rounds = two_rounds();
        let s = summary("aviary", rounds.iter());
        assert_eq!(s.rounds, 2);
        let mut union = Histogram::default();
        for v in round_a_ns().chain(round_b_ns()) {
            union.record(v);
        }
        let union = union.summary();
        assert_eq!(s.pooled_p50_us, Some(union.p50_us));
        assert_eq!(s.pooled_p99_us, Some(union.p99_us));
        assert_eq!(s.pooled_p999_us, Some(union.p999_us));
        assert_near(union.p50_us, 10.0);
        assert_near(union.p99_us, 600.0);
        // The 1,998th of 2,000: the 28th of B's tail.
        assert_near(union.p999_us, 780.0);
        // The median of the rounds' p99s is another figure.
        assert_near(rounds[0].latency.p99_us, 10.0);
        assert_near(rounds[1].latency.p99_us, 700.0);
        assert_eq!(
            s.p99_us,
            (rounds[0].latency.p99_us + rounds[1].latency.p99_us) / 2.0
        );
        assert_near(s.p99_us, 355.0);
    }

    #[test]
    fn connection_rounds_pool_their_connect_latency() {
        let conn_round = |latencies_ns: &[u64]| {
            let mut h = Histogram::default();
            for &v in latencies_ns {
                h.record(v);
            }
            RunReport {
                connections: Some(ConnectionFigures {
                    opened: h.len(),
                    connect_latency: h.summary(),
                    connect_histogram: Some(h),
                    ..ConnectionFigures::default()
                }),
                ..RunReport::default()
            }
        };
        // 99 fast connects and 1 slow one in each round, and a round of 100 slow ones.
        let mut fast = vec![20_000; 99];
        fast.push(900_000);
        let rounds = [
            conn_round(&fast),
            conn_round(&fast),
            conn_round(&[900_000; 100]),
        ];
        let s = summary("aviary", rounds.iter());
        // Of 300 connects, 102 took 900 µs: p50 is a fast one, p99 a slow one.
        assert_near(s.pooled_p50_us.unwrap(), 20.0);
        assert_near(s.pooled_p99_us.unwrap(), 900.0);
        assert_near(s.p50_us, 20.0);
    }

    #[test]
    fn no_latency_samples_gives_no_pooled_figure() {
        // Rounds that delivered nothing (empty histograms), and no rounds at all.
        let empty = [message_round("aviary", []), message_round("aviary", [])];
        for s in [
            summary("aviary", empty.iter()),
            summary("aviary", [].iter()),
        ] {
            assert_eq!(s.p99_us, 0.0);
            assert_eq!(s.pooled_p50_us, None);
            assert_eq!(s.pooled_p99_us, None);
            assert_eq!(s.pooled_p999_us, None);
        }
    }

    #[test]
    fn a_round_without_histogram_leaves_no_pooled_figure() {
        // A report from a build before histograms were reported: pooling the other round
        // alone would pass off one round's p99 as all rounds'.
        let [with, mut without] = two_rounds();
        without.latency_histogram = None;
        let s = summary("aviary", [with, without].iter());
        assert_eq!(s.pooled_p99_us, None);
        assert!(s.p99_us > 0.0);
    }

    #[test]
    fn pooled_p99_ratio_needs_both_brokers() {
        let aviary = Summary {
            p99_us: 110.0,
            pooled_p99_us: Some(120.0),
            ..Summary::default()
        };
        let mosquitto = Summary {
            p99_us: 100.0,
            pooled_p99_us: Some(150.0),
            ..Summary::default()
        };
        let r = Ratios::between(&aviary, &mosquitto);
        assert_near(r.p99, 1.1);
        assert_eq!(r.pooled_p99, Some(0.8));
        let r = Ratios::between(&aviary, &Summary::default());
        assert_eq!(r.p99, 0.0);
        assert_eq!(r.pooled_p99, None);
    }

    #[test]
    fn summary_shows_pooled_figures_beside_the_medians() {
        let [a, b] = two_rounds();
        let aviary = summary("aviary", [a, b].iter());
        let mosquitto = summary(
            "mosquitto",
            [message_round("mosquitto", [300_000; 10])].iter(),
        );
        let c = Comparison {
            ratios: Ratios::between(&aviary, &mosquitto),
            aviary,
            mosquitto,
            ..Comparison::default()
        };
        let table = c.table();
        let pooled_p99 = table
            .lines()
            .find(|l| l.trim_start().starts_with("p99 µs, all rounds pooled"))
            .unwrap_or_else(|| panic!("no pooled p99 row in\n{table}"));
        // After the five words of the name: Aviary, Mosquitto, ratio.
        let figures: Vec<f64> = pooled_p99
            .split_whitespace()
            .skip(5)
            .map(|f| f.parse().unwrap())
            .collect();
        assert_eq!(figures.len(), 3, "{pooled_p99}");
        assert_near(figures[0], 600.0);
        assert_near(figures[1], 300.0);
        assert_near(figures[2], 2.0);

        let json = serde_json::to_value(&c).unwrap();
        assert_near(json["aviary"]["pooled_p99_us"].as_f64().unwrap(), 600.0);
        assert_near(json["ratios"]["pooled_p99"].as_f64().unwrap(), 2.0);

        let row = c.markdown_row();
        let header = MATRIX_HEADER.lines().next().unwrap();
        fn cells(line: &str) -> Vec<&str> {
            line.trim()
                .trim_matches('|')
                .split('|')
                .map(str::trim)
                .collect()
        }
        let (names, values) = (cells(header), cells(&row));
        assert_eq!(names.len(), values.len(), "{header}\n{row}");
        let pooled = names
            .iter()
            .position(|&n| n == "p99 µs pooled A / M")
            .unwrap();
        assert_eq!(
            values[pooled],
            format!("{:.0} / 300", c.aviary.pooled_p99_us.unwrap())
        );
        assert_eq!(names[pooled + 1], "ratio");
        assert_eq!(
            values[pooled + 1],
            format!("{:.2}", c.ratios.pooled_p99.unwrap())
        );
    }
}
