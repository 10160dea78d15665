//! End-to-end tests with a real third-party MQTT 3.1.1 client, `rumqttc`, over TCP; raw-byte
//! clients where rumqttc hides the detail (in-flight window, DUP on resend, MQTT 3.1).

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use aviary_codec::{Packet as WirePacket, ProtocolVersion};
use common::{start_broker, to_hex, RawClient, QUIET, WAIT};
use rumqttc::{
    AsyncClient, ConnAck, ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill,
    MqttOptions, Outgoing, Packet, Publish, QoS, SubscribeFilter, SubscribeReasonCode,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{timeout, timeout_at, Instant};

/// A rumqttc client whose event loop runs in a task and reports every event (and the first
/// error, after which it stops: no silent reconnects).
struct Client {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, ConnectionError>>,
    /// Events read while waiting for another one, in order; later waits look here first
    /// (a PUBLISH may arrive before the PUBACK a test is waiting for).
    backlog: VecDeque<Event>,
    task: JoinHandle<()>,
}

fn options(addr: SocketAddr, id: &str) -> MqttOptions {
    let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    opts
}

fn spawn(opts: MqttOptions) -> Client {
    let (client, mut eventloop): (AsyncClient, EventLoop) = AsyncClient::new(opts, 256);
    let (tx, events) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let event = eventloop.poll().await;
            let stop = event.is_err();
            if tx.send(event).is_err() || stop {
                break;
            }
        }
    });
    Client {
        client,
        events,
        backlog: VecDeque::new(),
        task,
    }
}

/// Connects and waits for CONNACK; panics if refused.
async fn connect(
    addr: SocketAddr,
    id: &str,
    tweak: impl FnOnce(&mut MqttOptions),
) -> (Client, ConnAck) {
    let mut opts = options(addr, id);
    tweak(&mut opts);
    let mut c = spawn(opts);
    let ack = c
        .wait_for("CONNACK", |e| match e {
            Event::Incoming(Packet::ConnAck(ack)) => Some(ack.clone()),
            _ => None,
        })
        .await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    (c, ack)
}

impl Client {
    /// Waits (bounded) for an event `pick` accepts; panics on a connection error.
    async fn wait_for<T>(&mut self, what: &str, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
        if let Some(i) = self.backlog.iter().position(|e| pick(e).is_some()) {
            let event = self.backlog.remove(i).expect("index from position");
            return pick(&event).expect("matched above");
        }
        let deadline = Instant::now() + WAIT;
        loop {
            match timeout_at(deadline, self.events.recv()).await {
                Err(_) => panic!("timed out waiting for {what}"),
                Ok(None) => panic!("event loop ended waiting for {what}"),
                Ok(Some(Err(e))) => panic!("connection error waiting for {what}: {e:?}"),
                Ok(Some(Ok(event))) => match pick(&event) {
                    Some(found) => return found,
                    None => self.backlog.push_back(event),
                },
            }
        }
    }

    /// The next PUBLISH from the broker.
    async fn recv_publish(&mut self) -> Publish {
        self.wait_for("PUBLISH", |e| match e {
            Event::Incoming(Packet::Publish(p)) => Some(p.clone()),
            _ => None,
        })
        .await
    }

    /// No PUBLISH arrives for [`QUIET`].
    async fn expect_no_publish(&mut self) {
        if let Some(p) = self
            .backlog
            .iter()
            .find(|e| matches!(e, Event::Incoming(Packet::Publish(_))))
        {
            panic!("unexpected {p:?}");
        }
        let deadline = Instant::now() + QUIET;
        while let Ok(event) = timeout_at(deadline, self.events.recv()).await {
            match event {
                Some(Ok(Event::Incoming(Packet::Publish(p)))) => panic!("unexpected {p:?}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("connection error: {e:?}"),
                None => panic!("event loop ended"),
            }
        }
    }

    /// The connection error that ends the event loop.
    async fn wait_error(&mut self) -> ConnectionError {
        let deadline = Instant::now() + WAIT;
        loop {
            match timeout_at(deadline, self.events.recv()).await {
                Err(_) => panic!("timed out waiting for the connection to end"),
                Ok(None) => panic!("event loop ended without an error"),
                Ok(Some(Err(e))) => return e,
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    async fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<SubscribeReasonCode> {
        self.client.subscribe(filter, qos).await.expect("subscribe");
        self.wait_for("SUBACK", |e| match e {
            Event::Incoming(Packet::SubAck(ack)) => Some(ack.return_codes.clone()),
            _ => None,
        })
        .await
    }

    async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        self.client
            .publish(topic, qos, retain, payload.to_vec())
            .await
            .expect("publish");
        // Wait until the broker has it (ack) or it left the client (QoS 0).
        match qos {
            QoS::AtMostOnce => {
                self.wait_for("PUBLISH sent", |e| {
                    matches!(e, Event::Outgoing(Outgoing::Publish(_))).then_some(())
                })
                .await
            }
            QoS::AtLeastOnce => {
                self.wait_for("PUBACK", |e| {
                    matches!(e, Event::Incoming(Packet::PubAck(_))).then_some(())
                })
                .await
            }
            QoS::ExactlyOnce => {
                self.wait_for("PUBCOMP", |e| {
                    matches!(e, Event::Incoming(Packet::PubComp(_))).then_some(())
                })
                .await
            }
        }
    }

    /// Sends DISCONNECT and waits until it left.
    async fn disconnect(mut self) {
        self.client.disconnect().await.expect("disconnect");
        let deadline = Instant::now() + WAIT;
        loop {
            match timeout_at(deadline, self.events.recv()).await {
                Err(_) => panic!("connection not closed after DISCONNECT"),
                Ok(None) | Ok(Some(Err(_))) => break,
                Ok(Some(Ok(Event::Outgoing(Outgoing::Disconnect)))) => {}
                Ok(Some(Ok(_))) => {}
            }
        }
        self.task.abort();
    }

    /// Drops the TCP connection without DISCONNECT (abnormal loss).
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

#[tokio::test]
async fn connect_clean_session_has_no_session_present() {
    let broker = start_broker(|_| {}).await;
    let (c, ack) = connect(broker.addr, "plain", |_| {}).await;
    assert!(!ack.session_present, "[MQTT-3.2.2-1]");
    c.disconnect().await;
}

#[tokio::test]
async fn publish_subscribe_qos_0_1_2() {
    let broker = start_broker(|_| {}).await;
    let (mut sub, _) = connect(broker.addr, "sub", |_| {}).await;
    let (mut publ, _) = connect(broker.addr, "pub", |_| {}).await;
    assert_eq!(
        sub.subscribe("q/#", QoS::ExactlyOnce).await,
        vec![SubscribeReasonCode::Success(QoS::ExactlyOnce)]
    );
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        let topic = format!("q/{i}");
        publ.publish(&topic, qos, false, format!("m{i}").as_bytes())
            .await;
        let p = sub.recv_publish().await;
        assert_eq!(p.topic, topic);
        assert_eq!(&p.payload[..], format!("m{i}").as_bytes());
        assert_eq!(p.qos, qos);
        assert!(!p.retain);
    }
    // And the other way round: the subscriber publishes, the publisher receives.
    publ.subscribe("back", QoS::ExactlyOnce).await;
    sub.publish("back", QoS::ExactlyOnce, false, b"reply").await;
    let p = publ.recv_publish().await;
    assert_eq!((&p.payload[..], p.qos), (&b"reply"[..], QoS::ExactlyOnce));
}

#[tokio::test]
async fn mqtt_3_8_4_6_delivery_is_downgraded_to_the_granted_qos() {
    let broker = start_broker(|_| {}).await;
    let (mut s0, _) = connect(broker.addr, "s0", |_| {}).await;
    let (mut s1, _) = connect(broker.addr, "s1", |_| {}).await;
    let (mut p, _) = connect(broker.addr, "p", |_| {}).await;
    s0.subscribe("down", QoS::AtMostOnce).await;
    s1.subscribe("down", QoS::AtLeastOnce).await;
    p.publish("down", QoS::ExactlyOnce, false, b"x").await;
    assert_eq!(s0.recv_publish().await.qos, QoS::AtMostOnce);
    assert_eq!(s1.recv_publish().await.qos, QoS::AtLeastOnce);
}

#[tokio::test]
async fn mqtt_3_3_5_1_overlapping_subscriptions_deliver_one_copy_at_the_maximum_qos() {
    let broker = start_broker(|_| {}).await;
    let (mut s, _) = connect(broker.addr, "s", |_| {}).await;
    let (mut p, _) = connect(broker.addr, "p", |_| {}).await;
    s.subscribe("o/+", QoS::AtMostOnce).await;
    s.subscribe("o/#", QoS::ExactlyOnce).await;
    p.publish("o/x", QoS::ExactlyOnce, false, b"once").await;
    let got = s.recv_publish().await;
    assert_eq!(got.qos, QoS::ExactlyOnce);
    s.expect_no_publish().await;
}

#[tokio::test]
async fn mqtt_4_7_2_1_hash_does_not_match_dollar_topics() {
    let broker = start_broker(|_| {}).await;
    let (mut s, _) = connect(broker.addr, "s", |_| {}).await;
    let (mut p, _) = connect(broker.addr, "p", |_| {}).await;
    s.subscribe("#", QoS::AtLeastOnce).await;
    s.subscribe("$data/+", QoS::AtLeastOnce).await;
    p.publish("$data/x", QoS::AtLeastOnce, false, b"dollar")
        .await;
    let got = s.recv_publish().await;
    assert_eq!(got.topic, "$data/x");
    s.expect_no_publish().await;
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let broker = start_broker(|_| {}).await;
    let (mut s, _) = connect(broker.addr, "s", |_| {}).await;
    let (mut p, _) = connect(broker.addr, "p", |_| {}).await;
    s.subscribe("u", QoS::AtLeastOnce).await;
    p.publish("u", QoS::AtLeastOnce, false, b"1").await;
    s.recv_publish().await;
    s.client.unsubscribe("u").await.expect("unsubscribe");
    s.wait_for("UNSUBACK", |e| {
        matches!(e, Event::Incoming(Packet::UnsubAck(_))).then_some(())
    })
    .await;
    p.publish("u", QoS::AtLeastOnce, false, b"2").await;
    s.expect_no_publish().await;
}

#[tokio::test]
async fn mqtt_3_3_1_5_retained_message_set_replace_delete() {
    let broker = start_broker(|_| {}).await;
    let (mut p, _) = connect(broker.addr, "p", |_| {}).await;
    p.publish("r/1", QoS::AtLeastOnce, true, b"first").await;
    p.publish("r/1", QoS::AtLeastOnce, true, b"second").await;

    let (mut s1, _) = connect(broker.addr, "s1", |_| {}).await;
    s1.subscribe("r/+", QoS::AtLeastOnce).await;
    let got = s1.recv_publish().await;
    assert_eq!(&got.payload[..], b"second", "replaced [MQTT-3.3.1-5]");
    assert!(got.retain, "sent because retained [MQTT-3.3.1-8]");
    s1.expect_no_publish().await;

    // A live message to an existing subscription has RETAIN 0 [MQTT-3.3.1-9].
    p.publish("r/1", QoS::AtLeastOnce, true, b"third").await;
    let live = s1.recv_publish().await;
    assert_eq!(&live.payload[..], b"third");
    assert!(!live.retain, "[MQTT-3.3.1-9]");

    // Empty payload deletes [MQTT-3.3.1-10], and is itself delivered to subscribers.
    p.publish("r/1", QoS::AtLeastOnce, true, b"").await;
    assert!(s1.recv_publish().await.payload.is_empty());
    let (mut s2, _) = connect(broker.addr, "s2", |_| {}).await;
    s2.subscribe("r/#", QoS::AtLeastOnce).await;
    s2.expect_no_publish().await;
}

#[tokio::test]
async fn mqtt_3_1_2_8_will_is_published_on_abnormal_loss() {
    let broker = start_broker(|_| {}).await;
    let (mut s, _) = connect(broker.addr, "watcher", |_| {}).await;
    s.subscribe("will/#", QoS::AtLeastOnce).await;
    let (dying, _) = connect(broker.addr, "dying", |o| {
        o.set_last_will(LastWill::new("will/dying", "gone", QoS::AtLeastOnce, false));
    })
    .await;
    dying.kill().await;
    let will = s.recv_publish().await;
    assert_eq!(
        (will.topic.as_str(), &will.payload[..]),
        ("will/dying", &b"gone"[..])
    );
    assert_eq!(will.qos, QoS::AtLeastOnce);
}

#[tokio::test]
async fn mqtt_3_1_2_10_will_is_not_published_after_disconnect() {
    let broker = start_broker(|_| {}).await;
    let (mut s, _) = connect(broker.addr, "watcher", |_| {}).await;
    s.subscribe("will/#", QoS::AtLeastOnce).await;
    let (polite, _) = connect(broker.addr, "polite", |o| {
        o.set_last_will(LastWill::new(
            "will/polite",
            "gone",
            QoS::AtLeastOnce,
            false,
        ));
    })
    .await;
    polite.disconnect().await;
    s.expect_no_publish().await;
}

#[tokio::test]
async fn mqtt_3_1_2_4_persistent_session_queues_offline_messages() {
    let broker = start_broker(|_| {}).await;
    let (mut s, ack) = connect(broker.addr, "durable", |o| {
        o.set_clean_session(false);
    })
    .await;
    assert!(!ack.session_present);
    s.subscribe("d/#", QoS::AtLeastOnce).await;
    s.disconnect().await;

    let (mut p, _) = connect(broker.addr, "p", |_| {}).await;
    for i in 0..3u8 {
        p.publish("d/x", QoS::AtLeastOnce, false, &[i]).await;
    }
    p.publish("d/x", QoS::AtMostOnce, false, b"qos0-may-be-dropped")
        .await;

    let (mut s, ack) = connect(broker.addr, "durable", |o| {
        o.set_clean_session(false);
    })
    .await;
    assert!(ack.session_present, "[MQTT-3.2.2-2]");
    for i in 0..3u8 {
        let got = s.recv_publish().await;
        assert_eq!(&got.payload[..], &[i], "in order [MQTT-4.6.0-6]");
        assert_eq!(got.qos, QoS::AtLeastOnce);
    }

    // Clean Session 1 discards it [MQTT-3.1.2-6].
    s.disconnect().await;
    let (_s, ack) = connect(broker.addr, "durable", |_| {}).await;
    assert!(!ack.session_present);
}

#[tokio::test]
async fn mqtt_3_1_4_2_second_connection_with_same_client_id_takes_over() {
    let broker = start_broker(|_| {}).await;
    let (mut old, _) = connect(broker.addr, "same", |_| {}).await;
    let (mut new, _) = connect(broker.addr, "same", |_| {}).await;
    let err = old.wait_error().await;
    assert!(
        matches!(err, ConnectionError::Io(_) | ConnectionError::MqttState(_)),
        "old connection closed: {err:?}"
    );
    new.subscribe("t", QoS::AtLeastOnce).await;
    new.publish("t", QoS::AtLeastOnce, false, b"still here")
        .await;
    new.recv_publish().await;
}

#[tokio::test]
async fn mqtt_4_8_2_shared_subscription_round_robin() {
    let broker = start_broker(|_| {}).await;
    let (mut a, _) = connect(broker.addr, "a", |_| {}).await;
    let (mut b, _) = connect(broker.addr, "b", |_| {}).await;
    a.subscribe("$share/g/jobs/+", QoS::AtLeastOnce).await;
    b.subscribe("$share/g/jobs/+", QoS::AtLeastOnce).await;
    let (mut p, _) = connect(broker.addr, "p", |_| {}).await;
    for i in 0..10u8 {
        p.publish("jobs/x", QoS::AtLeastOnce, false, &[i]).await;
    }
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(a.recv_publish().await.payload[0]);
        got.push(b.recv_publish().await.payload[0]);
    }
    a.expect_no_publish().await;
    b.expect_no_publish().await;
    got.sort_unstable();
    assert_eq!(
        got,
        (0..10).collect::<Vec<u8>>(),
        "each message to exactly one member"
    );
}

#[tokio::test]
async fn subscription_limit_refuses_the_31st_filter_with_0x80() {
    let broker = start_broker(|_| {}).await;
    let (mut c, _) = connect(broker.addr, "greedy", |_| {}).await;
    let filters = (0..31).map(|i| SubscribeFilter::new(format!("lim/{i}"), QoS::AtLeastOnce));
    c.client.subscribe_many(filters).await.expect("subscribe");
    let codes = c
        .wait_for("SUBACK", |e| match e {
            Event::Incoming(Packet::SubAck(ack)) => Some(ack.return_codes.clone()),
            _ => None,
        })
        .await;
    assert_eq!(codes.len(), 31);
    assert!(codes[..30]
        .iter()
        .all(|c| *c == SubscribeReasonCode::Success(QoS::AtLeastOnce)));
    assert_eq!(codes[30], SubscribeReasonCode::Failure);
    // The 30 work.
    c.publish("lim/29", QoS::AtLeastOnce, false, b"ok").await;
    assert_eq!(c.recv_publish().await.topic, "lim/29");
}

#[tokio::test]
async fn max_connections_refuses_with_connack_0x03() {
    let broker = start_broker(|c| c.max_connections = 2).await;
    let (_a, _) = connect(broker.addr, "a", |_| {}).await;
    let (_b, _) = connect(broker.addr, "b", |_| {}).await;
    let mut c = spawn(options(broker.addr, "c"));
    let err = c.wait_error().await;
    assert!(
        matches!(
            err,
            ConnectionError::ConnectionRefused(ConnectReturnCode::ServiceUnavailable)
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn mqtt_3_1_3_6_empty_client_id_with_clean_session_is_accepted() {
    let broker = start_broker(|_| {}).await;
    let mut c = RawClient::open(broker.addr, ProtocolVersion::V3_1_1).await;
    c.send_hex("10 0c 00 04 4d 51 54 54 04 02 00 3c 00 00")
        .await;
    c.expect_hex("20 02 00 00").await;
    c.ping().await;
}

#[tokio::test]
async fn mqtt_3_1_mqisdp_client_publishes_and_subscribes() {
    let broker = start_broker(|_| {}).await;
    let mut c = RawClient::open(broker.addr, ProtocolVersion::V3_1).await;
    c.send_hex(&common::connect_v31_hex("legacy", 60)).await;
    c.expect_hex("20 02 00 00").await;
    c.subscribe(1, "old/t", 1).await;
    let (mut p, _) = connect(broker.addr, "modern", |_| {}).await;
    p.publish("old/t", QoS::AtLeastOnce, false, b"hi").await;
    let WirePacket::Publish(got) = c.read_packet().await else {
        panic!("expected PUBLISH")
    };
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("old/t", &b"hi"[..])
    );
}

/// Reads one PUBLISH with a raw client, returning (packet id, payload, dup).
async fn raw_publish(c: &mut RawClient) -> (u16, Vec<u8>, bool) {
    let frame = c.read_frame().await;
    let WirePacket::Publish(p) = c.decode(&frame) else {
        panic!("expected PUBLISH, got {}", to_hex(&frame.raw()))
    };
    (
        p.packet_id.expect("QoS > 0").get(),
        p.payload.to_vec(),
        p.dup,
    )
}

#[tokio::test]
async fn inflight_window_of_16_for_3x_clients() {
    let broker = start_broker(|_| {}).await;
    let mut s = RawClient::connect_v311(broker.addr, "slow").await;
    s.subscribe(1, "flow", 1).await;
    let (mut p, _) = connect(broker.addr, "fast", |_| {}).await;
    for i in 0..100u8 {
        p.publish("flow", QoS::AtLeastOnce, false, &[i]).await;
    }
    let mut ids = Vec::new();
    for i in 0..16u8 {
        let (id, payload, _) = raw_publish(&mut s).await;
        assert_eq!(payload, [i]);
        ids.push(id);
    }
    s.expect_silence().await;
    // One ack opens one slot.
    s.send_hex(&format!("40 02 {}", to_hex(&ids[0].to_be_bytes())))
        .await;
    let (id, payload, _) = raw_publish(&mut s).await;
    assert_eq!(payload, [16]);
    ids.push(id);
    s.expect_silence().await;
    // Ack everything as it comes: all 100 arrive, in order.
    let mut next = 17u8;
    for id in ids.drain(1..).collect::<Vec<_>>() {
        s.send_hex(&format!("40 02 {}", to_hex(&id.to_be_bytes())))
            .await;
    }
    while next < 100 {
        let (id, payload, _) = timeout(WAIT, raw_publish(&mut s)).await.expect("more");
        assert_eq!(payload, [next]);
        next += 1;
        s.send_hex(&format!("40 02 {}", to_hex(&id.to_be_bytes())))
            .await;
    }
}

#[tokio::test]
async fn mqtt_4_4_0_1_unacked_publish_is_resent_with_dup_on_session_resume() {
    let broker = start_broker(|_| {}).await;
    let mut s = RawClient::connect_v311_with(broker.addr, "resume", 0x00, 60).await;
    s.subscribe(1, "re", 1).await;
    let (mut p, _) = connect(broker.addr, "p", |_| {}).await;
    p.publish("re", QoS::AtLeastOnce, false, b"again").await;
    let (id, payload, dup) = raw_publish(&mut s).await;
    assert_eq!((payload.as_slice(), dup), (&b"again"[..], false));
    drop(s);

    let mut s = RawClient::open(broker.addr, ProtocolVersion::V3_1_1).await;
    s.send_hex(&common::connect_v311_hex("resume", 0x00, 60))
        .await;
    s.expect_hex("20 02 01 00").await;
    let frame = s.read_frame().await;
    assert_eq!(
        frame.first & 0xf8,
        0x38,
        "PUBLISH with DUP=1: {}",
        to_hex(&frame.raw())
    );
    let WirePacket::Publish(again) = s.decode(&frame) else {
        unreachable!()
    };
    assert_eq!(again.packet_id.map(|i| i.get()), Some(id), "same packet id");
    assert_eq!(&again.payload[..], b"again");
    s.send_hex(&format!("40 02 {}", to_hex(&id.to_be_bytes())))
        .await;
    s.expect_silence().await;
}

#[tokio::test]
async fn graceful_shutdown_closes_3x_connections() {
    let broker = start_broker(|_| {}).await;
    let mut c = RawClient::connect_v311(broker.addr, "bye").await;
    broker.shutdown().await;
    c.expect_closed().await;
}

#[tokio::test]
async fn mqtt_4_4_unacked_publish_is_resent_with_dup_after_retry_interval() {
    let broker = start_broker(|c| c.retry_interval = Some(Duration::from_secs(1))).await;
    let mut s = RawClient::connect_v311(broker.addr, "retry").await;
    s.subscribe(1, "rt", 1).await;
    let (mut p, _) = connect(broker.addr, "p", |_| {}).await;
    p.publish("rt", QoS::AtLeastOnce, false, b"x").await;
    let (id, _, dup) = raw_publish(&mut s).await;
    assert!(!dup);
    // Not acknowledged: the same message comes again with DUP=1 (within WAIT).
    let (again, payload, dup) = raw_publish(&mut s).await;
    assert_eq!((again, payload.as_slice(), dup), (id, &b"x"[..], true));
    s.send_hex(&format!("40 02 {}", to_hex(&id.to_be_bytes())))
        .await;
    s.ping().await;
}

#[tokio::test]
async fn mqtt_4_8_2_shared_members_unacked_messages_go_to_another_member_when_it_leaves() {
    let broker = start_broker(|_| {}).await;
    let mut a = RawClient::connect_v311(broker.addr, "a").await;
    a.subscribe(1, "$share/g/work", 1).await;
    let (mut b, _) = connect(broker.addr, "b", |_| {}).await;
    b.subscribe("$share/g/work", QoS::AtLeastOnce).await;
    let (mut p, _) = connect(broker.addr, "p", |_| {}).await;
    for i in 0..4u8 {
        p.publish("work", QoS::AtLeastOnce, false, &[i]).await;
    }
    // Round robin: two each; `a` never acknowledges its two, then leaves.
    let mut at_a = Vec::new();
    for _ in 0..2 {
        at_a.push(raw_publish(&mut a).await.1[0]);
    }
    drop(a);
    let mut at_b = Vec::new();
    for _ in 0..4 {
        at_b.push(b.recv_publish().await.payload[0]);
    }
    b.expect_no_publish().await;
    at_b.sort_unstable();
    assert_eq!(
        at_b,
        vec![0, 1, 2, 3],
        "a's unacknowledged {at_a:?} went to b"
    );
}

/// Publishes 10 QoS 1 messages to a subscriber with an in-flight window of 2 and a queue of
/// 3 that acknowledges nothing at first; returns the payloads it finally gets.
async fn overflow_run(policy: aviary_core::QueueOverflow) -> Vec<u8> {
    let broker = start_broker(|c| {
        c.max_inflight = 2;
        c.max_queued_messages = 3;
        c.queue_overflow = policy;
    })
    .await;
    let mut s = RawClient::connect_v311(broker.addr, "full").await;
    s.subscribe(1, "of", 1).await;
    let (mut p, _) = connect(broker.addr, "p", |_| {}).await;
    for i in 0..10u8 {
        p.publish("of", QoS::AtLeastOnce, false, &[i]).await;
    }
    let mut got = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (id, payload, _) = raw_publish(&mut s).await;
        got.push(payload[0]);
        ids.push(id);
    }
    s.expect_silence().await;
    for id in ids {
        s.send_hex(&format!("40 02 {}", to_hex(&id.to_be_bytes())))
            .await;
    }
    for _ in 0..3 {
        let (id, payload, _) = raw_publish(&mut s).await;
        got.push(payload[0]);
        s.send_hex(&format!("40 02 {}", to_hex(&id.to_be_bytes())))
            .await;
    }
    s.expect_silence().await;
    got
}

#[tokio::test]
async fn queue_overflow_drop_new_keeps_the_oldest_messages() {
    assert_eq!(
        overflow_run(aviary_core::QueueOverflow::DropNew).await,
        vec![0, 1, 2, 3, 4]
    );
}

#[tokio::test]
async fn queue_overflow_drop_oldest_keeps_the_newest_messages() {
    assert_eq!(
        overflow_run(aviary_core::QueueOverflow::DropOldest).await,
        vec![0, 1, 7, 8, 9]
    );
}

#[tokio::test]
async fn mqtt_3_1_2_17_retained_will_is_kept() {
    let broker = start_broker(|_| {}).await;
    let (mut watcher, _) = connect(broker.addr, "watcher", |_| {}).await;
    watcher.subscribe("status/+", QoS::AtLeastOnce).await;
    let (dying, _) = connect(broker.addr, "dying", |o| {
        o.set_last_will(LastWill::new(
            "status/dying",
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
    })
    .await;
    dying.kill().await;
    // Once the will is out, it is also the topic's retained message.
    assert_eq!(&watcher.recv_publish().await.payload[..], b"offline");
    let (mut late, _) = connect(broker.addr, "late", |_| {}).await;
    late.subscribe("status/+", QoS::AtLeastOnce).await;
    let will = late.recv_publish().await;
    assert!(will.retain);
    assert_eq!(&will.payload[..], b"offline");
}

#[tokio::test]
async fn mqtt_3_1_2_23_pingreq_keeps_a_short_keep_alive_connection_open() {
    let broker = start_broker(|_| {}).await;
    let mut c = RawClient::connect_v311_with(broker.addr, "pinger", 0x02, 2).await;
    // Eight pings 0.5 s apart: 4 s in all, more than the 3 s grace, and still served.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.ping().await;
    }
}

#[tokio::test]
async fn mqtt_4_3_3_qos_2_duplicate_publish_is_delivered_exactly_once() {
    let broker = start_broker(|_| {}).await;
    let (mut s, _) = connect(broker.addr, "s", |_| {}).await;
    s.subscribe("once", QoS::ExactlyOnce).await;
    let mut p = RawClient::connect_v311(broker.addr, "p").await;
    // PUBLISH QoS 2, id 9, topic "once", payload "x"; then again with DUP=1.
    p.send_hex("34 09 00 04 6f 6e 63 65 00 09 78").await;
    p.expect_hex("50 02 00 09").await;
    p.send_hex("3c 09 00 04 6f 6e 63 65 00 09 78").await;
    p.expect_hex("50 02 00 09").await;
    p.send_hex("62 02 00 09").await;
    p.expect_hex("70 02 00 09").await;
    let got = s.recv_publish().await;
    assert_eq!((&got.payload[..], got.qos), (&b"x"[..], QoS::ExactlyOnce));
    s.expect_no_publish().await;
}
