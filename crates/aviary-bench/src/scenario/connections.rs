//! The connection scenarios: idle connections (broker memory per connection) and the
//! connection rate (CONNECT → CONNACK → DISCONNECT round trips per second).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::{broker_sample, open_all, Errors, RunOptions};
use crate::client::Connection;
use crate::procstat;
use crate::report::{BrokerUsage, ConnectionFigures, RunReport};
use crate::stats::Histogram;

/// Time given to the broker to settle (free handshake buffers) before memory is read.
const SETTLE: Duration = Duration::from_secs(1);

/// Scenario 5: opens `connections` clients, holds them idle for `duration`, and reports the
/// broker's RSS growth per connection.
pub async fn idle(options: &RunOptions) -> anyhow::Result<RunReport> {
    let mut errors = Errors::default();
    let before = broker_sample(options, &mut errors);
    let clients: Vec<_> = (0..options.connections)
        .map(|i| options.client("idle", i, true))
        .collect();
    let start = Instant::now();
    let (results, connect_latency) = open_all(clients, options.connect_concurrency).await;
    let connect_time = start.elapsed();
    let mut open = Vec::new();
    for result in results {
        match result {
            Ok(conn) => open.push(conn),
            Err(e) => errors.add(format!("connect: {e}")),
        }
    }
    tokio::time::sleep(SETTLE.max(options.duration)).await;
    let held = broker_sample(options, &mut errors);
    // Every held connection must still be alive: one PINGREQ → PINGRESP each.
    let mut pings = tokio::task::JoinSet::new();
    for mut conn in open {
        pings.spawn(async move { conn.ping().await.map(|()| conn) });
    }
    let mut open = Vec::new();
    while let Some(joined) = pings.join_next().await {
        match joined {
            Ok(Ok(conn)) => open.push(conn),
            Ok(Err(e)) => errors.add(format!("idle connection lost: {e}")),
            Err(e) => errors.add(format!("ping task: {e}")),
        }
    }
    let opened = connect_latency.len();
    let bytes_per_connection = match (before, held) {
        (Some(b), Some(h)) if opened > 0 => {
            Some((h.rss_kib as f64 - b.rss_kib as f64) * 1024.0 / opened as f64)
        }
        _ => None,
    };
    let broker_usage = match (options.broker_pid, before, held) {
        (Some(pid), Some(b), Some(h)) => Some(BrokerUsage::between(
            pid,
            b,
            h,
            procstat::clock_tick(),
            opened,
        )),
        _ => None,
    };
    // Close without a DISCONNECT handshake each: dropping is enough and fast.
    drop(open);
    let failed = options.connections as u64 - opened;
    Ok(RunReport {
        elapsed_s: connect_time.as_secs_f64(),
        broker_usage,
        connections: Some(ConnectionFigures {
            opened,
            failed,
            // How fast the connections were opened (with `connect_concurrency` in parallel).
            per_s: opened as f64 / connect_time.as_secs_f64().max(1e-9),
            connect_latency: connect_latency.summary(),
            broker_bytes_per_connection: bytes_per_connection,
        }),
        ok: errors.0.is_empty(),
        errors: errors.0,
        ..RunReport::default()
    })
}

/// Scenario 6: `connections` workers each connect and disconnect in a loop for `duration`.
pub async fn rate(options: &RunOptions) -> anyhow::Result<RunReport> {
    let mut errors = Errors::default();
    let before = broker_sample(options, &mut errors);
    let start = Instant::now();
    let until = start + options.duration;
    let shared = Arc::new(Mutex::new((Histogram::default(), Errors::default(), 0u64)));
    let workers = options.connections.max(1);
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let options = options.clone();
        let shared = Arc::clone(&shared);
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
    let (latency, worker_errors, failed) =
        (&guard.0.clone(), std::mem::take(&mut guard.1), guard.2);
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
            broker_bytes_per_connection: None,
        }),
        ok: errors.0.is_empty(),
        errors: errors.0,
        ..RunReport::default()
    })
}
