//! The store across restarts of the `aviary` binary: expiry keeps counting while the
//! broker is down (from the crash for sessions that were connected), the wills of
//! connections open at a crash are published after the restart, queue limits bound what
//! is stored, and a damaged or newer store stops the start with a message that says what
//! to do.

mod store_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aviary_codec::properties::{PublishProperties, WillProperties};
use aviary_codec::{
    Disconnect, Packet, ProtocolVersion, Publish, QoS, ReasonCode, Subscribe, SubscriptionOptions,
    TopicFilter, TopicName, Will,
};
use bytes::Bytes;
use store_support::{ack, connect_packet, free_addr, pid, Broker, Conn};

const WAIT: Duration = Duration::from_secs(20);

/// Subscribes `conn` to `filter` at QoS 1 and waits for the SUBACK.
async fn subscribe(conn: &mut Conn, filter: &str) {
    conn.send(&Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        properties: Default::default(),
        filters: vec![(
            TopicFilter::new(filter).unwrap(),
            SubscriptionOptions::with_qos(QoS::AtLeastOnce),
        )],
    }))
    .await
    .unwrap();
    match conn.recv(WAIT).await {
        Ok(Some(Packet::SubAck(_))) => {}
        other => panic!("no SUBACK: {other:?}"),
    }
}

/// Publishes at QoS 1 and waits for the PUBACK (so the message is on disk).
async fn publish(conn: &mut Conn, topic: &str, payload: &[u8], expiry: Option<u32>, id: u16) {
    conn.send(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: TopicName::new(topic).unwrap(),
        packet_id: Some(pid(id)),
        properties: PublishProperties {
            message_expiry_interval: expiry,
            ..PublishProperties::default()
        }
        .into(),
        payload: Bytes::copy_from_slice(payload),
    }))
    .await
    .unwrap();
    match conn.recv(WAIT).await {
        Ok(Some(Packet::PubAck(a))) => assert_eq!(a.packet_id, pid(id)),
        other => panic!("no PUBACK: {other:?}"),
    }
}

/// Every PUBLISH that arrives until the connection is quiet for a second, acknowledged.
async fn drain(conn: &mut Conn) -> Vec<Publish> {
    let mut got = Vec::new();
    while let Ok(Some(packet)) = conn.recv(Duration::from_secs(1)).await {
        let Packet::Publish(p) = packet else {
            panic!("unexpected {packet:?}");
        };
        if let Some(id) = p.packet_id {
            conn.send(&Packet::PubAck(ack(id))).await.unwrap();
        }
        got.push(p);
        assert!(got.len() < 10_000, "runaway");
    }
    got
}

async fn v5(addr: std::net::SocketAddr, id: &str, expiry: u32) -> (Conn, bool) {
    let connect = connect_packet(ProtocolVersion::V5, id, false, Some(expiry));
    let (conn, connack) = Conn::open_with(addr, connect, Instant::now() + WAIT)
        .await
        .expect("connect");
    (conn, connack.session_present)
}

#[tokio::test]
async fn session_and_message_expiry_keep_counting_while_the_broker_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut broker = Broker::spawn(addr, dir.path(), &[]);

    // "short" lives 2 s after its connection ends; "long" an hour.
    for (id, expiry) in [("short", 2), ("long", 3600)] {
        let (mut conn, _) = v5(addr, id, expiry).await;
        subscribe(&mut conn, "e/#").await;
        drop(conn);
    }
    // The messages must find both sessions offline (queued, not in flight): give the
    // broker a moment to see the connections close.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut publisher, _) = v5(addr, "pub", 0).await;
    publish(&mut publisher, "e/brief", b"brief", Some(1), 1).await;
    publish(&mut publisher, "e/lasting", b"lasting", Some(600), 2).await;
    drop(publisher);

    // Down for longer than "short"'s session and "e/brief"'s message live.
    broker.child.kill().unwrap();
    broker.child.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    broker.crash_and_restart();

    let (_, present) = v5(addr, "short", 2).await;
    assert!(
        !present,
        "the 2 s session expired while the broker was down"
    );
    let (mut long, present) = v5(addr, "long", 3600).await;
    assert!(present);
    let got = drain(&mut long).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].payload, Bytes::from_static(b"lasting"));
    // The remaining expiry counts the time the broker was down [MQTT-3.3.2-6].
    let remaining = got[0].properties.message_expiry_interval.unwrap();
    assert!(remaining <= 597, "remaining expiry {remaining}");
}

#[tokio::test]
async fn sessions_connected_at_a_crash_count_their_expiry_from_the_crash() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut broker = Broker::spawn(addr, dir.path(), &[]);

    // Both stay connected until the broker is killed: "short" lives 2 s after its
    // connection ends, "long" an hour.
    let (mut short, _) = v5(addr, "short", 2).await;
    subscribe(&mut short, "e/#").await;
    let (mut long, _) = v5(addr, "long", 3600).await;
    subscribe(&mut long, "e/#").await;
    let (mut publisher, _) = v5(addr, "pub", 0).await;
    publish(&mut publisher, "e/lasting", b"lasting", Some(600), 1).await;
    // Delivered to "long" but never acknowledged: in flight at the crash.
    match long.recv(WAIT).await {
        Ok(Some(Packet::Publish(p))) => assert_eq!(p.payload, Bytes::from_static(b"lasting")),
        other => panic!("no delivery: {other:?}"),
    }

    broker.child.kill().unwrap();
    broker.child.wait().unwrap();
    drop((short, long, publisher));
    // Down for 3 s: longer than "short" lives after the crash.
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    broker.crash_and_restart();

    let (_, present) = v5(addr, "short", 2).await;
    assert!(!present, "the 2 s session ended with the crash, 3 s ago");
    let (mut long, present) = v5(addr, "long", 3600).await;
    assert!(present);
    let got = drain(&mut long).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].dup, "resent in flight");
    // The message's expiry kept counting while the broker was down [MQTT-3.3.2-6].
    let remaining = got[0].properties.message_expiry_interval.unwrap();
    assert!(remaining <= 597, "remaining expiry {remaining}");
}

/// A 5.0 CONNECT of `id` with session expiry `expiry` and a will on `will/<id>` with
/// `delay`.
fn with_will(id: &str, version: ProtocolVersion, expiry: u32, delay: u32) -> aviary_codec::Connect {
    let v5 = version == ProtocolVersion::V5;
    let mut connect = connect_packet(version, id, !v5, v5.then_some(expiry));
    connect.will = Some(Will {
        topic: TopicName::new(&format!("will/{id}")).unwrap(),
        payload: Bytes::from_static(b"offline"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: WillProperties {
            will_delay_interval: (v5 && delay > 0).then_some(delay),
            ..WillProperties::default()
        },
    });
    connect
}

#[tokio::test]
async fn the_wills_of_connections_open_at_a_crash_are_published_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut broker = Broker::spawn(addr, dir.path(), &[]);
    let deadline = Instant::now() + WAIT;
    let mut watcher = Conn::open(addr, "watcher", deadline).await.unwrap();
    subscribe(&mut watcher, "will/#").await;
    drop(watcher);

    let mut open = Vec::new();
    for connect in [
        // A clean session: its will is published at once after the restart.
        with_will("clean", ProtocolVersion::V3_1_1, 0, 0),
        // A session that outlives the connection, will delayed 1 s.
        with_will("delayed", ProtocolVersion::V5, 600, 1),
        // The will delay (an hour) is cut short by the session's end (1 s)
        // [MQTT-3.1.3-9].
        with_will("bounded", ProtocolVersion::V5, 1, 3600),
        // Its will is due in an hour: not during this test.
        with_will("later", ProtocolVersion::V5, 7200, 3600),
    ] {
        let (conn, _) = Conn::open_with(addr, connect, deadline).await.unwrap();
        open.push(conn);
    }
    // A normal DISCONNECT discards the will [MQTT-3.14.4-3].
    let (mut polite, _) = Conn::open_with(
        addr,
        with_will("polite", ProtocolVersion::V3_1_1, 0, 0),
        deadline,
    )
    .await
    .unwrap();
    polite
        .send(&Packet::Disconnect(Disconnect::with_reason(
            ReasonCode::NORMAL_DISCONNECTION,
        )))
        .await
        .unwrap();
    // The CONNACKs waited for their commits (the wills are on disk); let the DISCONNECT
    // be committed too.
    tokio::time::sleep(Duration::from_millis(500)).await;

    broker.crash_and_restart();
    drop(open);
    let mut watcher = Conn::open(addr, "watcher", deadline).await.unwrap();
    let mut topics = Vec::new();
    let until = Instant::now() + Duration::from_secs(10);
    while topics.len() < 3 && Instant::now() < until {
        if let Ok(Some(Packet::Publish(p))) = watcher.recv(Duration::from_millis(200)).await {
            assert_eq!(p.payload, Bytes::from_static(b"offline"));
            if let Some(id) = p.packet_id {
                watcher.send(&Packet::PubAck(ack(id))).await.unwrap();
            }
            topics.push(p.topic.as_str().to_owned());
        }
    }
    // Nothing else until quiet for a second ("later" is an hour away, "polite" never).
    topics.extend(
        drain(&mut watcher)
            .await
            .iter()
            .map(|p| p.topic.as_str().to_owned()),
    );
    topics.sort();
    assert_eq!(topics, ["will/bounded", "will/clean", "will/delayed"]);

    // Published as PUBLISHes from their clients: retained as asked.
    let mut check = Conn::open(addr, "check", deadline).await.unwrap();
    subscribe(&mut check, "will/clean").await;
    match check.recv(WAIT).await {
        Ok(Some(Packet::Publish(p))) => assert!(p.retain && p.payload == "offline"),
        other => panic!("no retained will: {other:?}"),
    }
}

#[tokio::test]
async fn queue_limits_bound_what_is_stored_for_offline_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut broker = Broker::spawn(
        addr,
        dir.path(),
        &[
            ("AVIARY_MQTT_MAX_QUEUED_MESSAGES", "5"),
            // Three 103-byte messages (topic "b/x", 100-byte payload) fit; a fourth not.
            ("AVIARY_MQTT_MAX_QUEUED_BYTES", "320"),
        ],
    );
    let deadline = Instant::now() + WAIT;
    for (id, filter) in [("count", "c/#"), ("bytes", "b/#")] {
        let mut conn = Conn::open(addr, id, deadline).await.unwrap();
        subscribe(&mut conn, filter).await;
    }
    let mut publisher = Conn::open(addr, "pub", deadline).await.unwrap();
    for i in 1..=8u16 {
        publish(&mut publisher, "c/x", &[b'0' + i as u8], None, i).await;
        publish(&mut publisher, "b/x", &[i as u8; 100], None, i + 100).await;
    }
    drop(publisher);
    broker.crash_and_restart();

    let mut count = Conn::open(addr, "count", deadline).await.unwrap();
    let got: Vec<Bytes> = drain(&mut count)
        .await
        .into_iter()
        .map(|p| p.payload)
        .collect();
    let expected: Vec<Bytes> = (1..=5u8).map(|i| Bytes::from(vec![b'0' + i])).collect();
    assert_eq!(got, expected, "the first five were kept (drop_new)");
    let mut bytes = Conn::open(addr, "bytes", deadline).await.unwrap();
    let got: Vec<u8> = drain(&mut bytes)
        .await
        .iter()
        .map(|p| p.payload[0])
        .collect();
    assert_eq!(got, [1, 2, 3]);
}

/// Runs the binary on `dir` and returns its exit status and standard error.
fn start_expecting_failure(dir: &std::path::Path) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aviary"))
        .env("AVIARY_LISTENER_BIND", free_addr().to_string())
        .env("AVIARY_DATA_DIR", dir)
        .env("AVIARY_API_BIND", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!("the broker started on a store it should refuse");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    use std::io::Read as _;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr)
}

#[test]
fn a_damaged_store_stops_the_start_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("aviary.redb");
    std::fs::write(&file, vec![0x5a; 20_000]).unwrap();
    let (status, stderr) = start_expecting_failure(dir.path());
    assert!(!status.success());
    assert!(stderr.contains("is damaged"), "{stderr}");
    assert!(stderr.contains("restore it from a backup"), "{stderr}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        vec![0x5a; 20_000],
        "left alone"
    );
}

#[test]
fn a_store_from_a_newer_aviary_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("aviary.redb");
    {
        let db = redb::Database::create(&file).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<&str, u32>::new("meta"))
            .unwrap()
            .insert("schema", 3)
            .unwrap();
        txn.commit().unwrap();
    }
    let (status, stderr) = start_expecting_failure(dir.path());
    assert!(!status.success());
    assert!(
        stderr.contains(&format!(
            "{} was written by a newer Aviary (schema 3, this build reads 2): upgrade Aviary \
             or point data_dir elsewhere",
            file.display()
        )),
        "{stderr}"
    );
}

#[test]
fn an_unusable_data_dir_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let (status, stderr) = start_expecting_failure(&not_a_dir);
    assert!(!status.success());
    assert!(stderr.contains("check that data_dir"), "{stderr}");
}

#[tokio::test]
async fn a_graceful_restart_keeps_sessions_and_their_queued_messages() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut broker = Broker::spawn(addr, dir.path(), &[]);
    let deadline = Instant::now() + WAIT;
    let mut sub = Conn::open(addr, "sub", deadline).await.unwrap();
    subscribe(&mut sub, "g/#").await;
    drop(sub);
    let mut publisher = Conn::open(addr, "pub", deadline).await.unwrap();
    publish(&mut publisher, "g/1", b"queued", None, 1).await;
    drop(publisher);
    // SIGTERM: a graceful shutdown, then a start on the same directory.
    let _ = Command::new("kill")
        .arg(broker.child.id().to_string())
        .status();
    let until = Instant::now() + WAIT;
    while broker.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < until, "no graceful exit");
        std::thread::sleep(Duration::from_millis(50));
    }
    broker.crash_and_restart();
    let mut sub = Conn::open(addr, "sub", deadline).await.unwrap();
    let got = drain(&mut sub).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, Bytes::from_static(b"queued"));
}
