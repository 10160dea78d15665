//! The message scenarios: who publishes where, who subscribes to what, and the run itself.
//!
//! Order of a run: connect and subscribe every subscriber (they start receiving at once);
//! connect every publisher; sample the broker; let every publisher go at the same instant
//! (fixed-rate ones staggered over one interval); when all publishers are done, wait until
//! every expected delivery arrived, or nothing arrived for [`QUIET`], or the drain timeout;
//! sample the broker again; stop the subscribers; check sequences per delivery group.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aviary_codec::{QoS, TopicFilter, TopicName};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use super::{broker_sample, open_all, Errors, RunOptions, Scenario};
use crate::client::pace::Pacer;
use crate::client::publisher::{self, Credit, PublishPlan, PublisherReport};
use crate::client::subscriber::{self, SubscriberControl, SubscriberReport};
use crate::client::{Connection, Progress};
use crate::procstat;
use crate::report::{BrokerUsage, RunReport};
use crate::stats::{DeliveryCheck, Histogram, SequenceTracker};

/// Deliveries are considered over when nothing arrived for this long.
const QUIET: Duration = Duration::from_secs(2);
/// How often the runner looks at the delivery counter while waiting.
const POLL: Duration = Duration::from_millis(5);

/// Who talks to whom in a scenario.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Topology {
    /// Topic of each live publisher; the index is the publisher id.
    pub(crate) publishers: Vec<TopicName>,
    /// Receivers that together should get every message of their publishers once: a
    /// plain subscriber is a group of one; a shared subscription group has several members.
    pub(crate) groups: Vec<Group>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Group {
    /// One filter per member connection.
    pub(crate) members: Vec<TopicFilter>,
    /// Publisher ids whose messages this group should receive.
    pub(crate) publishers: Vec<u32>,
}

/// Builds the topology of a message scenario with `prefix` before every topic.
pub(crate) fn topology(
    scenario: Scenario,
    prefix: &str,
    publishers: Option<usize>,
    subscribers: Option<usize>,
) -> anyhow::Result<Topology> {
    let name = |s: String| TopicName::new(&s).map_err(|e| anyhow::anyhow!("topic {s}: {e}"));
    let filter = |s: String| TopicFilter::new(&s).map_err(|e| anyhow::anyhow!("filter {s}: {e}"));
    let one_to_one = || -> anyhow::Result<Topology> {
        Ok(Topology {
            publishers: vec![name(format!("{prefix}/t"))?],
            groups: vec![Group {
                members: vec![filter(format!("{prefix}/t"))?],
                publishers: vec![0],
            }],
        })
    };
    Ok(match scenario {
        Scenario::OneToOne | Scenario::Persistent => one_to_one()?,
        Scenario::FanIn | Scenario::FanInShared => {
            let n = publishers.unwrap_or(1000).max(1);
            let shared = scenario == Scenario::FanInShared;
            let members = if shared {
                subscribers.unwrap_or(4).max(1)
            } else {
                1
            };
            let member_filter = if shared {
                format!("$share/bench/{prefix}/in/+")
            } else {
                format!("{prefix}/in/+")
            };
            Topology {
                publishers: (0..n)
                    .map(|i| name(format!("{prefix}/in/{i}")))
                    .collect::<Result<_, _>>()?,
                groups: vec![Group {
                    members: (0..members)
                        .map(|_| filter(member_filter.clone()))
                        .collect::<Result<_, _>>()?,
                    publishers: (0..n as u32).collect(),
                }],
            }
        }
        Scenario::FanOut => {
            let n = subscribers.unwrap_or(1000).max(1);
            Topology {
                publishers: vec![name(format!("{prefix}/out"))?],
                groups: (0..n)
                    .map(|_| {
                        Ok(Group {
                            members: vec![filter(format!("{prefix}/out"))?],
                            publishers: vec![0],
                        })
                    })
                    .collect::<anyhow::Result<_>>()?,
            }
        }
        Scenario::Iot => {
            let devices = publishers.unwrap_or(10_000).max(1);
            let backends = subscribers.unwrap_or(4).max(1);
            // Device i reports to partition i % backends; back end b owns partition b.
            Topology {
                publishers: (0..devices)
                    .map(|i| name(format!("{prefix}/iot/{}/{i}/telemetry", i % backends)))
                    .collect::<Result<_, _>>()?,
                groups: (0..backends)
                    .map(|b| {
                        Ok(Group {
                            members: vec![filter(format!("{prefix}/iot/{b}/+/telemetry"))?],
                            publishers: (b..devices).step_by(backends).map(|i| i as u32).collect(),
                        })
                    })
                    .collect::<anyhow::Result<_>>()?,
            }
        }
        Scenario::Idle | Scenario::ConnRate => {
            anyhow::bail!("{} is not a message scenario", scenario.name())
        }
    })
}

/// Runs a message scenario.
pub async fn run(options: &RunOptions) -> anyhow::Result<RunReport> {
    let mut topo = topology(
        options.scenario,
        &options.run_id,
        options.publishers,
        options.subscribers,
    )?;
    let persistent = options.scenario == Scenario::Persistent;
    let qos = options.qos;
    let epoch = Instant::now();
    let mut errors = Errors::default();
    // Publisher id 0 of the persistent scenario sends while the subscriber is away.
    let mut offline_sent: Option<PublisherReport> = None;
    if persistent {
        let offline = offline_phase(options, &topo, epoch).await?;
        if let Some(e) = &offline.error {
            errors.add(format!("offline publisher: {e}"));
        }
        offline_sent = Some(offline);
        // The live publishers (`--publishers`, one by default) are publishers 1.., on the
        // same topic: several show how commits gather their messages.
        let live = options.publishers.unwrap_or(1).max(1);
        let topic = topo.publishers[0].clone();
        topo.publishers = vec![topic; 1 + live];
        topo.groups[0].publishers = (0..=live as u32).collect();
    }
    let first_live = usize::from(persistent);

    // Subscribers, on their own thread and runtime (see `SideRuntime`).
    let side = SideRuntime::start()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let progress = Arc::new(Progress::default());
    let control = SubscriberControl {
        stop: stop_rx,
        progress: Arc::clone(&progress),
        epoch,
        publishers: topo.publishers.len() as u32,
    };
    let permits = Arc::new(Semaphore::new(options.connect_concurrency.max(1)));
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<Result<(), String>>();
    let mut member_tasks = Vec::new();
    let mut index = 0;
    for group in &topo.groups {
        let mut tasks = Vec::new();
        for filter in &group.members {
            let client = options.client("sub", index, !persistent);
            index += 1;
            let (filter, control, permits, ready) = (
                filter.clone(),
                control.clone(),
                Arc::clone(&permits),
                ready_tx.clone(),
            );
            tasks.push(side.handle.spawn(async move {
                let setup = async {
                    // The semaphore is never closed, so acquiring only waits.
                    let _permit = permits.acquire_owned().await;
                    subscribe(Connection::open(&client).await, &filter, qos, persistent).await
                };
                match setup.await {
                    Ok(conn) => {
                        let _ = ready.send(Ok(()));
                        Some(subscriber::run(conn, control).await)
                    }
                    Err(e) => {
                        let _ = ready.send(Err(format!("subscriber: {e}")));
                        None
                    }
                }
            }));
        }
        member_tasks.push(tasks);
    }
    drop(ready_tx);
    // Every subscriber reports exactly once (its sender lives on while it runs), within
    // the connect and subscribe timeouts.
    for _ in 0..index {
        match ready_rx.recv().await {
            Some(Err(e)) => errors.add(e),
            Some(Ok(())) => {}
            None => break, // a task ended without reporting (it panicked)
        }
    }

    // Publishers.
    let pub_options: Vec<_> = (first_live..topo.publishers.len())
        .map(|i| options.client("pub", i, !persistent))
        .collect();
    let (pub_conns, _) = open_all(pub_options, options.connect_concurrency).await;
    let live = topo.publishers.len() - first_live;
    let interval = options
        .rate
        .filter(|r| *r > 0.0)
        .map(|rate| Duration::from_secs_f64(live as f64 / rate));
    // Deliveries each publisher's messages cause: one per group that listens to it.
    let mut fanout = vec![0u64; topo.publishers.len()];
    for group in &topo.groups {
        for &p in &group.publishers {
            fanout[p as usize] += 1;
        }
    }
    let subscriber_count: usize = topo.groups.iter().map(|g| g.members.len()).sum();
    // A fixed offered rate is an open loop: the credit would turn it back into a closed
    // one (and wake thousands of rate-limited publishers on every delivery).
    let credit = (options.e2e_window > 0 && interval.is_none()).then(|| {
        Arc::new(Credit {
            owed: AtomicU64::new(0),
            progress: Arc::clone(&progress),
            limit: options.e2e_window * subscriber_count.max(1) as u64,
        })
    });
    // Fixed-rate publishers are woken by a timer finer than tokio's millisecond.
    let pacer = match interval {
        Some(_) => Some(Arc::new(Pacer::start()?)),
        None => None,
    };
    let broker_before = broker_sample(options, &mut errors);
    let start = Instant::now() + Duration::from_millis(20);
    let send_until = start + options.duration;
    let mut pub_tasks = Vec::new();
    for (offset, conn) in pub_conns.into_iter().enumerate() {
        let id = first_live + offset;
        let conn = match conn {
            Ok(conn) => conn,
            Err(e) => {
                errors.add(format!("publisher connect: {e}"));
                continue;
            }
        };
        let stagger = interval.map_or(Duration::ZERO, |i| i.mul_f64(offset as f64 / live as f64));
        let plan = PublishPlan {
            publisher: id as u32,
            topic: topo.publishers[id].clone(),
            qos,
            payload_len: options.payload,
            // Persistent: `--messages` is the offline batch; the live publisher runs for
            // the duration.
            max_messages: if persistent { None } else { options.messages },
            send_until,
            drain_until: send_until + options.drain_timeout,
            interval,
            pacer: pacer.clone(),
            max_inflight: options.max_inflight,
            epoch,
            first_send: start + stagger,
            credit: credit.as_ref().map(|c| (Arc::clone(c), fanout[id])),
        };
        pub_tasks.push(tokio::spawn(publisher::run(conn, plan)));
    }
    let mut sent_by: Vec<u64> = vec![0; topo.publishers.len()];
    let mut last_send = start;
    let mut send_lag = Histogram::default();
    if let Some(offline) = &offline_sent {
        sent_by[0] = offline.sent;
    }
    for task in pub_tasks {
        match task.await {
            Ok(report) => {
                sent_by[report.publisher as usize] = report.sent;
                send_lag.merge(&report.send_lag);
                if let Some(t) = report.last_send {
                    last_send = last_send.max(t);
                }
                if let Some(e) = report.error {
                    errors.add(format!("publisher: {e}"));
                }
            }
            Err(e) => errors.add(format!("publisher task: {e}")),
        }
    }

    // Wait for the deliveries.
    let expected: u64 = topo
        .groups
        .iter()
        .map(|g| {
            g.publishers
                .iter()
                .map(|&p| sent_by[p as usize])
                .sum::<u64>()
        })
        .sum();
    wait_for_deliveries(&progress, expected, Instant::now() + options.drain_timeout).await;
    let broker_after = broker_sample(options, &mut errors);
    let _ = stop_tx.send(true);

    // Collect and check.
    let mut latency = Histogram::default();
    let mut delivery = DeliveryCheck::default();
    let mut delivered = 0;
    let mut last_receive = start;
    for (group, tasks) in topo.groups.iter().zip(member_tasks) {
        let mut tracker = SequenceTracker::new(topo.publishers.len() as u32);
        for task in tasks {
            let report: SubscriberReport = match task.await {
                Ok(Some(report)) => report,
                Ok(None) => continue, // its setup error is already counted
                Err(e) => {
                    errors.add(format!("subscriber task: {e}"));
                    continue;
                }
            };
            if let Some(e) = &report.error {
                errors.add(format!("subscriber: {e}"));
            }
            delivered += report.received;
            latency.merge(&report.latency);
            tracker.merge(&report.tracker);
            if let Some(t) = report.last_receive {
                last_receive = last_receive.max(t);
            }
        }
        let sent: Vec<(u32, u64)> = group
            .publishers
            .iter()
            .map(|&p| (p, sent_by[p as usize]))
            .collect();
        delivery.add(&tracker.check(&sent));
    }
    let elapsed = last_receive.max(last_send).saturating_duration_since(start);
    let broker_usage = match (options.broker_pid, broker_before, broker_after) {
        (Some(pid), Some(before), Some(after)) => Some(BrokerUsage::between(
            pid,
            before,
            after,
            procstat::clock_tick(),
            delivered,
        )),
        _ => None,
    };
    let ok = errors.0.is_empty()
        && delivery.foreign == 0
        && (qos == QoS::AtMostOnce || delivery.missing == 0)
        && (qos != QoS::ExactlyOnce || delivery.duplicates == 0);
    Ok(RunReport {
        publishers: topo.publishers.len(),
        subscribers: topo.groups.iter().map(|g| g.members.len()).sum(),
        elapsed_s: elapsed.as_secs_f64(),
        sent: sent_by.iter().sum(),
        delivered,
        delivered_per_s: if elapsed.is_zero() {
            0.0
        } else {
            delivered as f64 / elapsed.as_secs_f64()
        },
        delivery,
        latency: latency.summary(),
        latency_histogram: Some(latency),
        send_lag: (!send_lag.is_empty()).then(|| send_lag.summary()),
        broker_usage,
        errors: errors.0,
        ok,
        ..RunReport::default()
    })
}

/// A second single-threaded runtime on its own thread, for the subscribers. In one runtime
/// with thousands of publisher tasks, a subscriber waits behind all of them before it can
/// acknowledge, and at QoS 2 (two round trips per message through a window of 16) that
/// throttles the broker's deliveries to it: the generator, not the broker, would be measured.
/// Dropping it stops the thread.
struct SideRuntime {
    handle: Handle,
    done: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SideRuntime {
    fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (done, done_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("subscribers".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = done_rx.await;
                });
                // Tasks still blocked on a dead broker are dropped here.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(Self {
            handle,
            done: Some(done),
            thread: Some(thread),
        })
    }
}

impl Drop for SideRuntime {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Subscribes a fresh connection; a resumed persistent session already has its
/// subscription, which the broker must have kept [MQTT-3.1.2-4].
async fn subscribe(
    conn: Result<Connection, crate::client::ClientError>,
    filter: &TopicFilter,
    qos: QoS,
    resumed: bool,
) -> Result<Connection, crate::client::ClientError> {
    let mut conn = conn?;
    if resumed {
        if !conn.session_present {
            return Err(crate::client::ClientError::Protocol(
                "persistent session not resumed (session present = 0)".into(),
            ));
        }
        return Ok(conn);
    }
    conn.subscribe(std::slice::from_ref(filter), qos).await?;
    Ok(conn)
}

/// Persistent scenario, first half: the subscriber creates its session and leaves; publisher
/// 0 then sends `--messages` (default 100) messages that the broker must queue for it.
async fn offline_phase(
    options: &RunOptions,
    topo: &Topology,
    epoch: Instant,
) -> anyhow::Result<PublisherReport> {
    let filter = &topo.groups[0].members[0];
    let mut sub = Connection::open(&options.client("sub", 0, false)).await?;
    sub.subscribe(std::slice::from_ref(filter), options.qos)
        .await?;
    sub.disconnect().await?;
    let conn = Connection::open(&options.client("pub", 0, false)).await?;
    let now = Instant::now();
    let plan = PublishPlan {
        publisher: 0,
        topic: topo.publishers[0].clone(),
        qos: options.qos,
        payload_len: options.payload,
        max_messages: Some(options.messages.unwrap_or(100)),
        send_until: now + options.duration,
        drain_until: now + options.duration + options.drain_timeout,
        interval: None,
        pacer: None,
        max_inflight: options.max_inflight,
        epoch,
        first_send: now,
        credit: None,
    };
    Ok(publisher::run(conn, plan).await)
}

/// Returns when deliveries reach `expected`, when they stop for [`QUIET`], or at
/// `deadline`, whichever is first.
async fn wait_for_deliveries(progress: &Progress, expected: u64, deadline: Instant) {
    let mut last = progress.received();
    let mut last_change = Instant::now();
    loop {
        let now = Instant::now();
        let count = progress.received();
        if count >= expected || now >= deadline {
            return;
        }
        if count != last {
            last = count;
            last_change = now;
        } else if now.duration_since(last_change) >= QUIET {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fan_in_shared_is_one_group_of_four_members() {
        let t = topology(Scenario::FanInShared, "r", Some(3), None).unwrap();
        assert_eq!(t.publishers.len(), 3);
        assert_eq!(t.groups.len(), 1);
        assert_eq!(t.groups[0].members.len(), 4);
        assert_eq!(t.groups[0].members[0].as_str(), "$share/bench/r/in/+");
        assert_eq!(t.groups[0].publishers, vec![0, 1, 2]);
    }

    #[test]
    fn fan_out_is_one_group_per_subscriber() {
        let t = topology(Scenario::FanOut, "r", None, Some(5)).unwrap();
        assert_eq!(t.publishers.len(), 1);
        assert_eq!(t.groups.len(), 5);
        assert!(t.groups.iter().all(|g| g.publishers == vec![0]));
    }

    /// Every device is received by exactly the back end whose wildcard matches its topic.
    #[test]
    fn iot_partitions_devices_over_back_ends() {
        let t = topology(Scenario::Iot, "r", Some(10), Some(3)).unwrap();
        let mut owners = [0; 10];
        for group in &t.groups {
            for &p in &group.publishers {
                owners[p as usize] += 1;
                assert!(group.members[0].matches(&t.publishers[p as usize]));
            }
        }
        assert!(owners.iter().all(|&n| n == 1));
    }

    #[test]
    fn connection_scenarios_have_no_topology() {
        assert!(topology(Scenario::Idle, "r", None, None).is_err());
    }
}
