//! The scenarios of a benchmark run and what they share: options, connecting many clients
//! with bounded concurrency, the broker's /proc samples and the final report.
//!
//! * [`messages`] runs the message scenarios (1→1, fan-in, shared fan-in, fan-out, IoT,
//!   persistent sessions): connect subscribers, then publishers; send for `duration`; wait
//!   until every expected delivery arrived (or the drain timeout); check sequences.
//! * [`connections`] runs the connection scenarios (idle connections, connection rate).

pub mod connections;
pub mod messages;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aviary_codec::{ProtocolVersion, QoS};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::client::{ClientError, ConnectOptions, Connection};
use crate::procstat::{self, Pid, ProcSample};
use crate::report::RunReport;
use crate::stats::Histogram;

/// The scenarios of issue 6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// 1: one publisher → one subscriber, maximum rate (or `--rate`).
    OneToOne,
    /// 2: N publishers → one subscriber on a `+` wildcard.
    FanIn,
    /// 2b: N publishers → a shared subscription group of 4.
    FanInShared,
    /// 3: one publisher → N subscribers.
    FanOut,
    /// 4: N devices each publishing to its own topic at a fixed total rate; back ends
    /// subscribe with wildcards, each to a partition of the devices.
    Iot,
    /// 5: as many idle connections as asked; broker memory per connection.
    Idle,
    /// 6: connections per second (CONNECT → CONNACK → DISCONNECT, in parallel workers).
    ConnRate,
    /// 7: persistent session at QoS ≥ 1: messages queued while the subscriber is offline,
    /// then delivered on resumption, then live traffic.
    Persistent,
}

impl Scenario {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::OneToOne => "one-to-one",
            Self::FanIn => "fan-in",
            Self::FanInShared => "fan-in-shared",
            Self::FanOut => "fan-out",
            Self::Iot => "iot",
            Self::Idle => "idle",
            Self::ConnRate => "conn-rate",
            Self::Persistent => "persistent",
        }
    }
}

/// Everything a run needs; filled from the command line.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub broker: SocketAddr,
    /// Report label.
    pub broker_label: String,
    pub scenario: Scenario,
    pub qos: QoS,
    pub version: ProtocolVersion,
    /// Payload size, at least 16 (the stamp).
    pub payload: usize,
    /// How long publishers send (idle: how long connections are held).
    pub duration: Duration,
    /// Per publisher, stop after this many messages.
    pub messages: Option<u64>,
    /// Total offered rate (messages/s over all publishers); `None`: as fast as possible.
    pub rate: Option<f64>,
    /// Publishers (fan-in, IoT devices); defaults per scenario when `None`.
    pub publishers: Option<usize>,
    /// Subscribers (fan-out, IoT back ends); defaults per scenario when `None`.
    pub subscribers: Option<usize>,
    /// Idle: connections to hold. Connection rate: parallel workers.
    pub connections: usize,
    /// Each publisher's own in-flight window at QoS 1/2.
    pub max_inflight: u16,
    /// Deliveries outstanding (sent, not yet received) per subscriber connection before
    /// publishers pause; 0: no end-to-end limit (see `client::publisher::Credit`).
    pub e2e_window: u64,
    /// Spread client sockets over 127.0.0.1..=127.0.0.N (N ≤ 254) for many connections.
    pub source_ips: u8,
    /// Measure this broker process (CPU, RSS) from /proc.
    pub broker_pid: Option<u32>,
    /// After sending stops, how long to wait for outstanding acknowledgements/deliveries.
    pub drain_timeout: Duration,
    /// Idle: generator processes sharing the connections (each process may open at most
    /// its open-file limit).
    pub processes: usize,
    /// Most connections being opened at the same time.
    pub connect_concurrency: usize,
    /// A prefix for every topic and client id, unique per run, so runs do not mix.
    pub run_id: String,
    /// Connection rate over TLS: the CA (PEM file) that signed the broker's certificate
    /// for `localhost`; `None`: plain TCP.
    pub tls_ca: Option<std::path::PathBuf>,
}

/// Runs the scenario and builds its report. Errors of individual clients are counted in the
/// report; `Err` is only for a run that could not start at all.
pub async fn run(options: &RunOptions) -> anyhow::Result<RunReport> {
    if !options.broker.ip().is_loopback() {
        anyhow::bail!(
            "only loopback brokers may be benchmarked (got {})",
            options.broker
        );
    }
    let generator_before = procstat::sample(Pid::Own)?;
    let mut report = match options.scenario {
        Scenario::Idle => connections::idle(options).await?,
        Scenario::ConnRate => connections::rate(options).await?,
        _ => messages::run(options).await?,
    };
    let generator_after = procstat::sample(Pid::Own)?;
    report.generator_cpu_s = generator_after
        .cpu_ticks
        .saturating_sub(generator_before.cpu_ticks) as f64
        * procstat::clock_tick().as_secs_f64();
    report.broker = options.broker_label.clone();
    report.scenario = options.scenario.name().to_owned();
    report.qos = options.qos as u8;
    report.payload_bytes = options.payload;
    Ok(report)
}

/// Reads the broker's /proc entry when a PID was given; a failure is an error of the run.
pub(crate) fn broker_sample(options: &RunOptions, errors: &mut Errors) -> Option<ProcSample> {
    let pid = options.broker_pid?;
    match procstat::sample(Pid::Other(pid)) {
        Ok(sample) => Some(sample),
        Err(e) => {
            errors.add(e.to_string());
            None
        }
    }
}

/// Distinct error messages and how often each occurred.
#[derive(Debug, Default)]
pub(crate) struct Errors(pub(crate) BTreeMap<String, u64>);

impl Errors {
    pub(crate) fn add(&mut self, message: String) {
        *self.0.entry(message).or_default() += 1;
    }
}

impl RunOptions {
    /// Connect options for the `index`-th client of the run, named `role-index`.
    pub(crate) fn client(&self, role: &str, index: usize, clean_start: bool) -> ConnectOptions {
        let source_ip = (self.source_ips > 1).then(|| {
            IpAddr::V4(Ipv4Addr::new(
                127,
                0,
                0,
                1 + (index % usize::from(self.source_ips)) as u8,
            ))
        });
        ConnectOptions {
            broker: self.broker,
            source_ip,
            client_id: format!("{}-{role}-{index}", self.run_id),
            version: self.version,
            clean_start,
            keep_alive: 0,
        }
    }
}

/// Opens every connection, at most `concurrency` at a time; results in input order, and
/// the distribution of connect times (TCP + CONNECT/CONNACK) of the successful ones.
pub(crate) async fn open_all(
    clients: Vec<ConnectOptions>,
    concurrency: usize,
) -> (Vec<Result<Connection, ClientError>>, Histogram) {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut set = JoinSet::new();
    let count = clients.len();
    for (index, options) in clients.into_iter().enumerate() {
        let permits = Arc::clone(&permits);
        set.spawn(async move {
            // The semaphore is never closed, so acquiring only waits.
            let _permit = permits.acquire_owned().await;
            let started = Instant::now();
            let result = Connection::open(&options).await;
            (index, result, started.elapsed())
        });
    }
    let mut results: Vec<Option<Result<Connection, ClientError>>> =
        (0..count).map(|_| None).collect();
    let mut latency = Histogram::default();
    while let Some(joined) = set.join_next().await {
        if let Ok((index, result, took)) = joined {
            if result.is_ok() {
                latency.record(took.as_nanos() as u64);
            }
            results[index] = Some(result);
        }
    }
    let results = results
        .into_iter()
        .map(|r| r.unwrap_or(Err(ClientError::Protocol("connect task panicked".into()))))
        .collect();
    (results, latency)
}
