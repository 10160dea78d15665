//! The connection scenarios: idle connections (broker memory per connection) and the
//! connection rate (CONNECT → CONNACK → DISCONNECT round trips per second), over TCP or,
//! with `tls_ca`, over TLS (each round trip a full handshake: no session resumption).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::sync::Mutex;

use super::{broker_sample, open_all, Errors, RunOptions};
use crate::client::{ClientError, ConnectOptions, Connection, HANDSHAKE_TIMEOUT};
use crate::procstat;
use crate::report::{BrokerUsage, ConnectionFigures, RunReport};
use crate::stats::{Histogram, LatencySummary};

/// Time given to the broker to settle (free handshake buffers) before memory is read.
const SETTLE: Duration = Duration::from_secs(1);
/// How long an idle worker process may take to open its connections or to report.
const WORKER_TIMEOUT: Duration = Duration::from_secs(120);

/// Scenario 5: opens `connections` clients (in `processes` generator processes, each
/// limited by its open-file limit), holds them idle for `duration`, checks that every one
/// still answers PINGREQ, and reports the broker's RSS growth per connection.
pub async fn idle(options: &RunOptions) -> anyhow::Result<RunReport> {
    let mut errors = Errors::default();
    let before = broker_sample(options, &mut errors);
    let start = Instant::now();
    let mut held = if options.processes > 1 {
        HeldSet::spawn_workers(options).await?
    } else {
        HeldSet::open_here(options, 0, options.connections).await
    };
    let connect_time = start.elapsed();
    tokio::time::sleep(SETTLE.max(options.duration)).await;
    let during = broker_sample(options, &mut errors);
    let summary = held.release().await;
    for (k, v) in summary.errors {
        *errors.0.entry(k).or_default() += v;
    }
    let opened = summary.opened;
    if summary.alive < opened {
        errors.add(format!(
            "{} of {opened} idle connections did not answer PINGREQ",
            opened - summary.alive
        ));
    }
    let bytes_per_connection = match (before, during) {
        (Some(b), Some(d)) if opened > 0 => {
            Some((d.rss_kib as f64 - b.rss_kib as f64) * 1024.0 / opened as f64)
        }
        _ => None,
    };
    let broker_usage = match (options.broker_pid, before, during) {
        (Some(pid), Some(b), Some(d)) => Some(BrokerUsage::between(
            pid,
            b,
            d,
            procstat::clock_tick(),
            opened,
        )),
        _ => None,
    };
    Ok(RunReport {
        elapsed_s: connect_time.as_secs_f64(),
        broker_usage,
        connections: Some(ConnectionFigures {
            opened,
            failed: summary.failed,
            // How fast the connections were opened (`connect_concurrency` at a time).
            per_s: opened as f64 / connect_time.as_secs_f64().max(1e-9),
            connect_latency: summary.connect_latency,
            connect_histogram: summary.connect_histogram,
            broker_bytes_per_connection: bytes_per_connection,
        }),
        ok: errors.0.is_empty(),
        errors: errors.0,
        ..RunReport::default()
    })
}

/// What a set of held connections amounts to; also the JSON lines an idle worker process
/// prints (first after connecting, then after the ping check).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HeldSummary {
    pub opened: u64,
    pub failed: u64,
    /// Connections that answered PINGREQ at the end (0 until then).
    pub alive: u64,
    pub connect_latency: LatencySummary,
    /// The histogram behind `connect_latency` (a worker's reaches the parent process in its
    /// JSON line); `None` when a worker did not send one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_histogram: Option<Histogram>,
    pub errors: BTreeMap<String, u64>,
}

/// Idle connections held in this process, or by worker processes.
enum HeldSet {
    Here {
        conns: Vec<Connection>,
        summary: HeldSummary,
    },
    Workers(Vec<Worker>),
}

/// An idle worker process: it holds its connections until its stdin closes.
struct Worker {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    summary: HeldSummary,
}

impl HeldSet {
    /// Opens clients `first..first + count` in this process.
    async fn open_here(options: &RunOptions, first: usize, count: usize) -> Self {
        let clients: Vec<_> = (first..first + count)
            .map(|i| options.client("idle", i, true))
            .collect();
        let (results, latency) = open_all(clients, options.connect_concurrency).await;
        let mut errors = Errors::default();
        let mut conns = Vec::new();
        for result in results {
            match result {
                Ok(conn) => conns.push(conn),
                Err(e) => errors.add(format!("connect: {e}")),
            }
        }
        let summary = HeldSummary {
            opened: conns.len() as u64,
            failed: (count - conns.len()) as u64,
            alive: 0,
            connect_latency: latency.summary(),
            connect_histogram: Some(latency),
            errors: errors.0,
        };
        Self::Here { conns, summary }
    }

    /// Starts `processes` idle workers, each with its share of the connections, and waits
    /// until each has reported its connections open.
    async fn spawn_workers(options: &RunOptions) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let share = options.connections.div_ceil(options.processes);
        let mut workers = Vec::new();
        for p in 0..options.processes {
            let first = p * share;
            let count = share.min(options.connections.saturating_sub(first));
            if count == 0 {
                break;
            }
            let mut child = tokio::process::Command::new(&exe)
                .arg("idle-worker")
                .arg(format!("--broker={}", options.broker))
                .arg(format!("--connections={count}"))
                .arg(format!("--first-index={first}"))
                .arg(format!("--source-ips={}", options.source_ips))
                .arg(format!(
                    "--connect-concurrency={}",
                    options.connect_concurrency
                ))
                .arg(format!("--mqtt={}", options.version.level()))
                .arg(format!("--run-id={}", options.run_id))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()?;
            let stdout = child
                .stdout
                .take()
                .ok_or_else(|| anyhow::anyhow!("worker stdout"))?;
            workers.push(Worker {
                child,
                lines: BufReader::new(stdout).lines(),
                summary: HeldSummary::default(),
            });
        }
        for worker in &mut workers {
            worker.summary = read_summary(&mut worker.lines).await?;
        }
        Ok(Self::Workers(workers))
    }

    /// Pings every connection, closes them all and sums up.
    async fn release(&mut self) -> HeldSummary {
        match self {
            Self::Here { conns, summary } => {
                let mut summary = summary.clone();
                let mut errors = Errors(std::mem::take(&mut summary.errors));
                summary.alive = ping_all(std::mem::take(conns), &mut errors).await;
                summary.errors = errors.0;
                summary
            }
            Self::Workers(workers) => {
                let mut total = HeldSummary {
                    connect_histogram: Some(Histogram::default()),
                    ..HeldSummary::default()
                };
                let mut p50 = Vec::new();
                for worker in workers.iter_mut() {
                    // Closing stdin tells the worker to check and close its connections.
                    drop(worker.child.stdin.take());
                    let end = read_summary(&mut worker.lines).await.unwrap_or_else(|e| {
                        let mut s = HeldSummary::default();
                        s.errors.insert(format!("idle worker: {e}"), 1);
                        s
                    });
                    let _ = worker.child.wait().await;
                    let s = &worker.summary;
                    total.opened += s.opened;
                    total.failed += s.failed;
                    total.alive += end.alive;
                    p50.push(s.connect_latency.p50_us);
                    // Quantiles of separate processes do not add up: the worst p99 stands
                    // for all, the median of the medians for p50.
                    total.connect_latency.p99_us =
                        total.connect_latency.p99_us.max(s.connect_latency.p99_us);
                    total.connect_latency.samples += s.connect_latency.samples;
                    // Histograms do add up: all workers' samples pooled, if each sent its own.
                    total.connect_histogram = total
                        .connect_histogram
                        .take()
                        .zip(s.connect_histogram.as_ref())
                        .map(|(mut all, h)| {
                            all.merge(h);
                            all
                        });
                    for (k, v) in s.errors.iter().chain(&end.errors) {
                        *total.errors.entry(k.clone()).or_default() += v;
                    }
                }
                total.connect_latency.p50_us = crate::compare::median(p50).unwrap_or(0.0);
                total
            }
        }
    }
}

/// The next JSON line of a worker, within [`WORKER_TIMEOUT`].
async fn read_summary(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> anyhow::Result<HeldSummary> {
    let line = tokio::time::timeout(WORKER_TIMEOUT, lines.next_line())
        .await
        .map_err(|_| anyhow::anyhow!("idle worker did not report within {WORKER_TIMEOUT:?}"))??
        .ok_or_else(|| anyhow::anyhow!("idle worker exited early"))?;
    Ok(serde_json::from_str(&line)?)
}

/// One PINGREQ → PINGRESP on every connection, all at once, then DISCONNECT; returns how
/// many answered. Disconnecting (the broker closes first) leaves TCP's TIME_WAIT on the
/// broker's side: dropped by us, 19,000 connections left 19,000 TIME_WAIT sockets on our
/// source addresses, and the next round's `bind` to those addresses searched the kernel's
/// bind table past all of them (a third burst within a minute took 5-48 s instead of 0.8 s,
/// with either broker).
async fn ping_all(conns: Vec<Connection>, errors: &mut Errors) -> u64 {
    let mut pings = tokio::task::JoinSet::new();
    for mut conn in conns {
        pings.spawn(async move {
            let answered = conn.ping().await;
            let disconnected = match &answered {
                Ok(()) => conn.disconnect().await,
                Err(_) => Ok(()),
            };
            (answered, disconnected)
        });
    }
    let mut alive = 0;
    while let Some(joined) = pings.join_next().await {
        match joined {
            Ok((Ok(()), disconnected)) => {
                alive += 1;
                if let Err(e) = disconnected {
                    errors.add(format!("disconnect: {e}"));
                }
            }
            Ok((Err(e), _)) => errors.add(format!("idle connection lost: {e}")),
            Err(e) => errors.add(format!("ping task: {e}")),
        }
    }
    alive
}

/// The `idle-worker` process: opens clients `first..first + connections`, prints a
/// [`HeldSummary`] line, holds them until stdin closes (or `hold_limit`), pings them all,
/// prints the final line.
pub async fn idle_worker(
    options: &RunOptions,
    first: usize,
    hold_limit: Duration,
) -> anyhow::Result<()> {
    let mut held = HeldSet::open_here(options, first, options.connections).await;
    if let HeldSet::Here { summary, .. } = &held {
        println!("{}", serde_json::to_string(summary)?);
    }
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    let wait_eof = async {
        // Bounded by `hold_limit` below.
        while let Ok(n) = stdin.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(hold_limit, wait_eof).await;
    let end = held.release().await;
    println!("{}", serde_json::to_string(&end)?);
    Ok(())
}

/// Scenario 6: `connections` workers each connect and disconnect in a loop for `duration`.
pub async fn rate(options: &RunOptions) -> anyhow::Result<RunReport> {
    let mut errors = Errors::default();
    let before = broker_sample(options, &mut errors);
    let start = Instant::now();
    let until = start + options.duration;
    let shared = Arc::new(Mutex::new((Histogram::default(), Errors::default(), 0u64)));
    let workers = options.connections.max(1);
    let tls = options.tls_ca.as_deref().map(tls_connector).transpose()?;
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let options = options.clone();
        let shared = Arc::clone(&shared);
        let tls = tls.clone();
        tasks.push(tokio::spawn(async move {
            let mut local = Histogram::default();
            let mut local_errors = Errors::default();
            let mut failed = 0u64;
            let mut round = 0usize;
            // Bounded by the deadline; each iteration is bounded by the handshake timeout.
            while Instant::now() < until {
                let client = options.client("conn", worker + round * workers, true);
                round += 1;
                let t0 = Instant::now();
                if let Some(tls) = &tls {
                    match tls_round_trip(tls, &client, &mut local, t0).await {
                        Ok(()) => {}
                        Err(e) => {
                            failed += 1;
                            local_errors.add(format!("TLS connect: {e}"));
                        }
                    }
                    continue;
                }
                match Connection::open(&client).await {
                    Ok(conn) => {
                        local.record(t0.elapsed().as_nanos() as u64);
                        if let Err(e) = conn.disconnect().await {
                            local_errors.add(format!("disconnect: {e}"));
                        }
                    }
                    Err(e) => {
                        failed += 1;
                        local_errors.add(format!("connect: {e}"));
                    }
                }
            }
            let mut guard = shared.lock().await;
            guard.0.merge(&local);
            for (k, v) in local_errors.0 {
                *guard.1 .0.entry(k).or_default() += v;
            }
            guard.2 += failed;
        }));
    }
    for task in tasks {
        if let Err(e) = task.await {
            errors.add(format!("worker: {e}"));
        }
    }
    let elapsed = start.elapsed();
    let after = broker_sample(options, &mut errors);
    let mut guard = shared.lock().await;
    let (latency, worker_errors, failed) = (
        std::mem::take(&mut guard.0),
        std::mem::take(&mut guard.1),
        guard.2,
    );
    for (k, v) in worker_errors.0 {
        *errors.0.entry(k).or_default() += v;
    }
    let opened = latency.len();
    let broker_usage = match (options.broker_pid, before, after) {
        (Some(pid), Some(b), Some(a)) => Some(BrokerUsage::between(
            pid,
            b,
            a,
            procstat::clock_tick(),
            opened,
        )),
        _ => None,
    };
    Ok(RunReport {
        subscribers: 0,
        elapsed_s: elapsed.as_secs_f64(),
        broker_usage,
        connections: Some(ConnectionFigures {
            opened,
            failed,
            per_s: opened as f64 / elapsed.as_secs_f64().max(1e-9),
            connect_latency: latency.summary(),
            connect_histogram: Some(latency),
            broker_bytes_per_connection: None,
        }),
        ok: errors.0.is_empty(),
        errors: errors.0,
        ..RunReport::default()
    })
}

/// A TLS client trusting the CA in `ca` (PEM), with the ring provider.
fn tls_connector(ca: &std::path::Path) -> anyhow::Result<tokio_rustls::TlsConnector> {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// One connection-rate round trip over TLS: TCP connect, handshake, CONNECT → CONNACK
/// (recorded in `latency` from `t0`), DISCONNECT, and a wait (at most a second) for the
/// broker to close, as over TCP.
async fn tls_round_trip(
    tls: &tokio_rustls::TlsConnector,
    client: &ConnectOptions,
    latency: &mut Histogram,
    t0: Instant,
) -> Result<(), ClientError> {
    use aviary_codec::{decode, encode, Connect, Disconnect, Packet, ReasonCode};
    use bytes::BytesMut;
    use tokio::io::AsyncWriteExt as _;

    let tcp = tokio::net::TcpStream::connect(client.broker).await?;
    tcp.set_nodelay(true)?;
    let name = rustls_pki_types::ServerName::try_from("localhost")
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    let mut stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.connect(name, tcp))
        .await
        .map_err(|_| ClientError::Timeout("TLS handshake"))??;
    let mut buf = BytesMut::with_capacity(256);
    let connect = Packet::Connect(Box::new(Connect {
        protocol: client.version,
        clean_start: true,
        keep_alive: client.keep_alive,
        client_id: client.client_id.clone(),
        will: None,
        username: None,
        password: None,
        properties: Default::default(),
    }));
    encode(&connect, client.version, &mut buf)?;
    stream.write_all(&buf).await?;
    stream.flush().await?;
    buf.clear();
    let connack = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        loop {
            if let Some(packet) = decode(&mut buf, client.version, 1 << 16)? {
                return Ok(packet);
            }
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(ClientError::Closed);
            }
        }
    })
    .await
    .map_err(|_| ClientError::Timeout("CONNACK"))??;
    match connack {
        Packet::ConnAck(ack) if ack.reason_code == ReasonCode::SUCCESS => {}
        Packet::ConnAck(ack) => return Err(ClientError::Refused(ack.reason_code.0)),
        other => {
            return Err(ClientError::Protocol(format!(
                "expected CONNACK, got {:?}",
                other.packet_type()
            )))
        }
    }
    latency.record(t0.elapsed().as_nanos() as u64);
    buf.clear();
    let disconnect = Packet::Disconnect(Disconnect::with_reason(ReasonCode::NORMAL_DISCONNECTION));
    encode(&disconnect, client.version, &mut buf)?;
    stream.write_all(&buf).await?;
    stream.flush().await?;
    let wait_close = async {
        loop {
            buf.clear();
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), wait_close).await;
    Ok(())
}
