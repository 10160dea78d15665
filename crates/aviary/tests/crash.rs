//! Crash tests: the `aviary` binary as a child process on a temporary data directory,
//! killed with SIGKILL at random moments while persistent publishers and subscribers
//! work and once more while the offline subscribers drain, restarted on the same
//! directory each time. Asserts the durability
//! contract: no acknowledged message is lost for any persistent subscriber (online or
//! offline), no QoS 2 message is delivered twice, order per publisher is kept, and the
//! retained message is the last one acknowledged.
//!
//! The clients are small raw MQTT 3.1.1 clients on `aviary_codec` so that every resend,
//! DUP flag and packet id is under the test's control.

mod store_support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aviary_codec::{
    Disconnect, Packet, PacketId, Publish, QoS, ReasonCode, Subscribe, SubscriptionOptions,
    TopicFilter, TopicName,
};
use bytes::Bytes;
use store_support::{ack, free_addr, pid, Broker, Conn};

/// Kills during the run.
const KILLS: usize = 5;
/// Most messages each publisher sends (bounds the drain).
const MAX_PER_PUBLISHER: u32 = 3_000;
/// Unacknowledged PUBLISHes a publisher keeps in flight.
const WINDOW: usize = 10;
/// Pause after each new PUBLISH, so publishing spans every kill and the drain stays short.
const PACE: Duration = Duration::from_millis(8);
/// Bound on the whole test's waiting.
const DEADLINE: Duration = Duration::from_secs(90);

/// A tiny xorshift generator: the seed is printed so a failing run can be repeated.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// What a publisher has had acknowledged (PUBACK for QoS 1, PUBREC for QoS 2).
#[derive(Default)]
struct Acked {
    seqs: Vec<u32>,
}

/// One unacknowledged PUBLISH (or QoS 2 awaiting PUBCOMP) of a publisher.
struct Outgoing {
    seq: u32,
    packet_id: PacketId,
    /// QoS 2: PUBREC received, PUBREL sent.
    released: bool,
}

/// Publishes `crash/<name>` payloads "<name>:<seq>" (or retained on `retained/<name>`),
/// resending what is unacknowledged after every reconnect, until `stop`.
async fn publisher(
    addr: SocketAddr,
    name: &'static str,
    qos: QoS,
    retain: bool,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Acked>>,
    deadline: Instant,
) {
    let topic = if retain {
        format!("retained/{name}")
    } else {
        format!("crash/{name}")
    };
    let window = if retain { 1 } else { WINDOW };
    let publish = |seq: u32, packet_id: PacketId, dup: bool| {
        Packet::Publish(Publish {
            dup,
            qos,
            retain,
            topic: TopicName::new(&topic).unwrap(),
            packet_id: Some(packet_id),
            properties: Default::default(),
            payload: Bytes::from(format!("{name}:{seq}")),
        })
    };
    let mut inflight: Vec<Outgoing> = Vec::new();
    let mut next_seq = 1u32;
    'connection: while let Some(mut conn) = Conn::open(addr, name, deadline).await {
        // Resend everything unacknowledged, in order [MQTT-4.4.0-1].
        for out in &inflight {
            let packet = if out.released {
                Packet::PubRel(ack(out.packet_id))
            } else {
                publish(out.seq, out.packet_id, true)
            };
            if conn.send(&packet).await.is_err() {
                continue 'connection;
            }
        }
        loop {
            let stopping = stop.load(Ordering::SeqCst) || next_seq > MAX_PER_PUBLISHER;
            while !stopping && inflight.len() < window {
                let packet_id = pid((next_seq % 60_000 + 1) as u16);
                let seq = next_seq;
                next_seq += 1;
                inflight.push(Outgoing {
                    seq,
                    packet_id,
                    released: false,
                });
                if conn.send(&publish(seq, packet_id, false)).await.is_err() {
                    continue 'connection;
                }
                tokio::time::sleep(PACE).await;
            }
            if stopping && inflight.is_empty() {
                let _ = conn
                    .send(&Packet::Disconnect(Disconnect::with_reason(
                        ReasonCode::NORMAL_DISCONNECTION,
                    )))
                    .await;
                return;
            }
            let packet = match conn.recv(Duration::from_millis(200)).await {
                Ok(Some(packet)) => packet,
                Ok(None) => continue,
                Err(_) => continue 'connection,
            };
            match packet {
                Packet::PubAck(a) => {
                    if let Some(i) = inflight.iter().position(|o| o.packet_id == a.packet_id) {
                        acked.lock().unwrap().seqs.push(inflight.remove(i).seq);
                    }
                }
                Packet::PubRec(a) => {
                    if let Some(out) = inflight.iter_mut().find(|o| o.packet_id == a.packet_id) {
                        if !out.released {
                            out.released = true;
                            acked.lock().unwrap().seqs.push(out.seq);
                        }
                    }
                    if conn.send(&Packet::PubRel(ack(a.packet_id))).await.is_err() {
                        continue 'connection;
                    }
                }
                Packet::PubComp(a) => inflight.retain(|o| o.packet_id != a.packet_id),
                other => panic!("{name}: unexpected {other:?}"),
            }
        }
    }
    panic!("{name}: could not reach the broker before the deadline");
}

/// What a subscriber's application saw: (publisher, seq) in arrival order.
type Seen = Arc<Mutex<Vec<(String, u32)>>>;

/// Receives on `crash/#` with clean session 0 as `name`, acknowledging as the receiver of
/// each QoS (QoS 2: a packet id awaiting PUBREL is not delivered again), until `done`
/// says it has everything.
async fn subscriber(
    addr: SocketAddr,
    name: &'static str,
    seen: Seen,
    done: impl Fn(&[(String, u32)]) -> bool,
    deadline: Instant,
) {
    // The client's own QoS 2 state survives the broker's crashes (the client does not
    // crash).
    let mut awaiting_pubrel: HashSet<PacketId> = HashSet::new();
    'connection: while let Some(mut conn) = Conn::open(addr, name, deadline).await {
        loop {
            if done(&seen.lock().unwrap()) {
                let _ = conn
                    .send(&Packet::Disconnect(Disconnect::with_reason(
                        ReasonCode::NORMAL_DISCONNECTION,
                    )))
                    .await;
                return;
            }
            if Instant::now() > deadline {
                return;
            }
            let packet = match conn.recv(Duration::from_millis(200)).await {
                Ok(Some(packet)) => packet,
                Ok(None) => continue,
                Err(_) => continue 'connection,
            };
            let reply = match packet {
                Packet::Publish(p) => {
                    let text = String::from_utf8(p.payload.to_vec()).unwrap();
                    let (publisher, seq) = text.split_once(':').unwrap();
                    let record = (publisher.to_owned(), seq.parse::<u32>().unwrap());
                    let packet_id = p.packet_id.expect("QoS 1/2 only");
                    match p.qos {
                        QoS::ExactlyOnce => {
                            if awaiting_pubrel.insert(packet_id) {
                                seen.lock().unwrap().push(record);
                            }
                            Packet::PubRec(ack(packet_id))
                        }
                        _ => {
                            seen.lock().unwrap().push(record);
                            Packet::PubAck(ack(packet_id))
                        }
                    }
                }
                Packet::PubRel(a) => {
                    awaiting_pubrel.remove(&a.packet_id);
                    Packet::PubComp(ack(a.packet_id))
                }
                other => panic!("{name}: unexpected {other:?}"),
            };
            if conn.send(&reply).await.is_err() {
                continue 'connection;
            }
        }
    }
}

/// Connects `name`, subscribes to `filter` at `qos` (clean session 0), disconnects.
async fn subscribe_once(addr: SocketAddr, name: &str, filter: &str, qos: QoS) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut conn = Conn::open(addr, name, deadline).await.expect("connect");
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        properties: Default::default(),
        filters: vec![(
            TopicFilter::new(filter).unwrap(),
            SubscriptionOptions::with_qos(qos),
        )],
    });
    conn.send(&subscribe).await.unwrap();
    match conn.recv(Duration::from_secs(10)).await {
        Ok(Some(Packet::SubAck(s))) => assert_eq!(s.reason_codes, [ReasonCode(qos as u8)]),
        other => panic!("{name}: no SUBACK: {other:?}"),
    }
    conn.send(&Packet::Disconnect(Disconnect::with_reason(
        ReasonCode::NORMAL_DISCONNECTION,
    )))
    .await
    .unwrap();
}

/// The first occurrence of each seq per publisher, in arrival order.
fn first_seen(seen: &[(String, u32)]) -> BTreeMap<String, Vec<u32>> {
    let mut firsts: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut known: HashSet<(String, u32)> = HashSet::new();
    for entry in seen {
        if known.insert(entry.clone()) {
            firsts.entry(entry.0.clone()).or_default().push(entry.1);
        }
    }
    firsts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_messages_survive_kill_9() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    eprintln!("crash test seed {seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut broker = Broker::spawn(
        addr,
        dir.path(),
        &[("AVIARY_MQTT_MAX_QUEUED_MESSAGES", "1000000")],
    );
    let deadline = Instant::now() + DEADLINE;

    // Persistent subscribers: two stay online, two are offline until the drain.
    let subs = [
        ("sub-q1-online", QoS::AtLeastOnce),
        ("sub-q2-online", QoS::ExactlyOnce),
        ("sub-q1-offline", QoS::AtLeastOnce),
        ("sub-q2-offline", QoS::ExactlyOnce),
    ];
    for (name, qos) in subs {
        subscribe_once(addr, name, "crash/#", qos).await;
    }

    let publishers = [("pub-q1", QoS::AtLeastOnce), ("pub-q2", QoS::ExactlyOnce)];
    let stop = Arc::new(AtomicBool::new(false));
    let acked: HashMap<&str, Arc<Mutex<Acked>>> = publishers
        .iter()
        .map(|(name, _)| (*name, Arc::default()))
        .chain([("pub-retained", Arc::default())])
        .collect();
    let mut pub_tasks = Vec::new();
    for (name, qos) in publishers {
        pub_tasks.push(tokio::spawn(publisher(
            addr,
            name,
            qos,
            false,
            stop.clone(),
            acked[name].clone(),
            deadline,
        )));
    }
    pub_tasks.push(tokio::spawn(publisher(
        addr,
        "pub-retained",
        QoS::AtLeastOnce,
        true,
        stop.clone(),
        acked["pub-retained"].clone(),
        deadline,
    )));

    // "Everything acknowledged has arrived", once the publishers are done.
    let publishers_done = Arc::new(AtomicBool::new(false));
    let complete = {
        let acked = acked.clone();
        let publishers_done = publishers_done.clone();
        move |seen: &[(String, u32)]| {
            if !publishers_done.load(Ordering::SeqCst) {
                return false;
            }
            let firsts = first_seen(seen);
            publishers.iter().all(|(name, _)| {
                let got: HashSet<u32> = firsts
                    .get(*name)
                    .map(|v| v.iter().copied().collect())
                    .unwrap_or_default();
                acked[name]
                    .lock()
                    .unwrap()
                    .seqs
                    .iter()
                    .all(|s| got.contains(s))
            })
        }
    };
    let seen: HashMap<&str, Seen> = subs.iter().map(|(n, _)| (*n, Seen::default())).collect();
    let mut sub_tasks = Vec::new();
    for name in ["sub-q1-online", "sub-q2-online"] {
        sub_tasks.push(tokio::spawn(subscriber(
            addr,
            name,
            seen[name].clone(),
            complete.clone(),
            deadline,
        )));
    }

    // Kill -9 at random moments, restarting on the same data directory each time.
    for kill in 1..=KILLS {
        let wait = 300 + rng.next() % 2_000;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let counts: Vec<usize> = acked
            .values()
            .map(|a| a.lock().unwrap().seqs.len())
            .collect();
        eprintln!("kill {kill} after {wait} ms; acknowledged so far {counts:?}");
        broker.crash_and_restart();
    }
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    stop.store(true, Ordering::SeqCst);
    for task in pub_tasks {
        tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap();
    }
    publishers_done.store(true, Ordering::SeqCst);

    // Drain: the offline subscribers come back now.
    for name in ["sub-q1-offline", "sub-q2-offline"] {
        sub_tasks.push(tokio::spawn(subscriber(
            addr,
            name,
            seen[name].clone(),
            complete.clone(),
            deadline,
        )));
    }
    // Once more while the offline subscribers drain their backlog: copies in flight (QoS 2
    // ones sent or released) survive too.
    let wait = 50 + rng.next() % 300;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    eprintln!("kill during the drain after {wait} ms");
    broker.crash_and_restart();
    for task in sub_tasks {
        tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap();
    }

    for (sub, sub_qos) in subs {
        let seen = seen[sub].lock().unwrap().clone();
        let firsts = first_seen(&seen);
        for (publisher, pub_qos) in publishers {
            let acked = acked[publisher].lock().unwrap().seqs.clone();
            assert!(!acked.is_empty(), "{publisher} got nothing acknowledged");
            let got = firsts.get(publisher).cloned().unwrap_or_default();
            let got_set: HashSet<u32> = got.iter().copied().collect();
            let lost: Vec<u32> = acked
                .iter()
                .copied()
                .filter(|s| !got_set.contains(s))
                .collect();
            assert!(
                lost.is_empty(),
                "seed {seed}: {sub} lost acknowledged {publisher} messages {lost:?}"
            );
            // Order per publisher: first deliveries come in publish order.
            assert!(
                got.windows(2).all(|w| w[0] < w[1]),
                "seed {seed}: {sub} got {publisher} out of order: {got:?}"
            );
            if sub_qos == QoS::ExactlyOnce && pub_qos == QoS::ExactlyOnce {
                let deliveries = seen.iter().filter(|(p, _)| p == publisher).count();
                assert_eq!(
                    deliveries,
                    got.len(),
                    "seed {seed}: {sub} got a QoS 2 message of {publisher} twice"
                );
            }
        }
        eprintln!("{sub}: {} deliveries", seen.len());
    }

    // The retained message is the last one acknowledged.
    let last = *acked["pub-retained"]
        .lock()
        .unwrap()
        .seqs
        .iter()
        .max()
        .unwrap();
    let mut conn = Conn::open(addr, "retained-check", deadline).await.unwrap();
    conn.send(&Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        properties: Default::default(),
        filters: vec![(
            TopicFilter::new("retained/#").unwrap(),
            SubscriptionOptions::with_qos(QoS::AtMostOnce),
        )],
    }))
    .await
    .unwrap();
    let mut retained = None;
    while let Ok(Some(packet)) = conn.recv(Duration::from_secs(2)).await {
        if let Packet::Publish(p) = packet {
            retained = Some(String::from_utf8(p.payload.to_vec()).unwrap());
        }
    }
    assert_eq!(
        retained,
        Some(format!("pub-retained:{last}")),
        "seed {seed}"
    );
    drop(broker);
}
