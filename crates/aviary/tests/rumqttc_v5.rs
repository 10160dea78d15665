//! End-to-end tests with a real third-party MQTT 5.0 client, `rumqttc::v5`, over TCP; raw-byte
//! clients where rumqttc hides the detail (Receive Maximum, Maximum Packet Size and topic
//! aliases towards the client, DISCONNECT 0x04).

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use aviary_codec::{Packet as WirePacket, ProtocolVersion};
use bytes::Bytes;
use common::{start_broker, to_hex, RawClient, QUIET, WAIT};
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, ConnectReturnCode, DisconnectReasonCode, Filter, LastWill, LastWillProperties, Packet,
    Publish, PublishProperties, RetainForwardRule, SubscribeProperties, SubscribeReasonCode,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, StateError};
use rumqttc::Outgoing;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};

/// A rumqttc 5.0 client whose event loop runs in a task and reports every event (and the first
/// error, after which it stops).
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

fn topic_of(p: &Publish) -> &str {
    std::str::from_utf8(&p.topic).expect("utf-8 topic")
}

impl Client {
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

    async fn recv_publish(&mut self) -> Publish {
        self.wait_for("PUBLISH", |e| match e {
            Event::Incoming(Packet::Publish(p)) => Some(p.clone()),
            _ => None,
        })
        .await
    }

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

    async fn suback(&mut self) -> Vec<SubscribeReasonCode> {
        self.wait_for("SUBACK", |e| match e {
            Event::Incoming(Packet::SubAck(ack)) => Some(ack.return_codes.clone()),
            _ => None,
        })
        .await
    }

    async fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<SubscribeReasonCode> {
        self.client.subscribe(filter, qos).await.expect("subscribe");
        self.suback().await
    }

    async fn subscribe_filter(&mut self, filter: Filter, props: Option<SubscribeProperties>) {
        match props {
            Some(props) => self
                .client
                .subscribe_many_with_properties([filter], props)
                .await
                .expect("subscribe"),
            None => self
                .client
                .subscribe_many([filter])
                .await
                .expect("subscribe"),
        }
        let codes = self.suback().await;
        assert!(
            matches!(codes[..], [SubscribeReasonCode::Success(_)]),
            "{codes:?}"
        );
    }

    async fn wait_acked(&mut self, qos: QoS) {
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

    async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        self.client
            .publish(topic, qos, retain, payload.to_vec())
            .await
            .expect("publish");
        self.wait_acked(qos).await;
    }

    async fn publish_with(
        &mut self,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: &[u8],
        props: PublishProperties,
    ) {
        self.client
            .publish_with_properties(topic, qos, retain, payload.to_vec(), props)
            .await
            .expect("publish");
        self.wait_acked(qos).await;
    }

    async fn disconnect(mut self) {
        self.client.disconnect().await.expect("disconnect");
        let deadline = Instant::now() + WAIT;
        loop {
            match timeout_at(deadline, self.events.recv()).await {
                Err(_) => panic!("connection not closed after DISCONNECT"),
                Ok(None) | Ok(Some(Err(_))) => break,
                Ok(Some(Ok(_))) => {}
            }
        }
        self.task.abort();
    }

    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Whether the event loop ended because the server sent DISCONNECT with `reason`.
///
/// rumqttc 0.25 cannot decode a DISCONNECT whose remaining length is 1 (reason code, no
/// property length), which the spec allows [MQTT-3.14.2.2.1: "If the Remaining Length is
/// less than 2, a value of 0 is used"]: it drops the frame and reports `ConnectionAborted`.
/// So that form is accepted here; the exact reason code is pinned by the raw-client tests.
fn ended_by_server_disconnect(err: &ConnectionError, reason: DisconnectReasonCode) -> bool {
    server_disconnect_reason(err) == Some(reason)
        || matches!(
            err,
            ConnectionError::MqttState(StateError::ConnectionAborted)
        )
}

fn server_disconnect_reason(err: &ConnectionError) -> Option<DisconnectReasonCode> {
    match err {
        ConnectionError::MqttState(StateError::ServerDisconnect { reason_code, .. }) => {
            Some(*reason_code)
        }
        _ => None,
    }
}

#[tokio::test]
async fn mqtt_3_2_2_connack_announces_the_broker_limits() {
    let broker = start_broker(|_| {}).await;
    let (c, ack) = connect(broker.addr, "limits", |_| {}).await;
    assert!(!ack.session_present);
    let props = ack.properties.expect("CONNACK properties");
    assert_eq!(props.topic_alias_max, Some(64));
    assert_eq!(props.receive_max, Some(1024));
    assert_eq!(props.max_packet_size, Some(1024 * 1024));
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
        assert_eq!(topic_of(&p), topic);
        assert_eq!(&p.payload[..], format!("m{i}").as_bytes());
        assert_eq!(p.qos, qos);
    }
    publ.subscribe("back", QoS::ExactlyOnce).await;
    sub.publish("back", QoS::ExactlyOnce, false, b"reply").await;
    let p = publ.recv_publish().await;
    assert_eq!((&p.payload[..], p.qos), (&b"reply"[..], QoS::ExactlyOnce));
}

#[tokio::test]
async fn mqtt_3_3_2_17_user_and_request_response_properties_pass_through_unchanged() {
    let broker = start_broker(|_| {}).await;
    let (mut s, _) = connect(broker.addr, "s", |_| {}).await;
    let (mut p, _) = connect(broker.addr, "p", |_| {}).await;
    s.subscribe("props", QoS::AtLeastOnce).await;
    let sent = PublishProperties {
        payload_format_indicator: Some(1),
        response_topic: Some("reply/here".into()),
        correlation_data: Some(Bytes::from_static(b"\x00corr")),
        user_properties: vec![
            ("k".into(), "v1".into()),
            ("k".into(), "v2".into()),
            ("other".into(), "x".into()),
        ],
        content_type: Some("text/plain".into()),
        ..Default::default()
    };
    p.publish_with("props", QoS::AtLeastOnce, false, b"hello", sent.clone())
        .await;
    let got = s.recv_publish().await;
    let props = got.properties.expect("properties");
    assert_eq!(props.payload_format_indicator, Some(1));
    assert_eq!(props.response_topic, sent.response_topic);
    assert_eq!(props.correlation_data, sent.correlation_data);
    assert_eq!(
        props.user_properties, sent.user_properties,
        "order kept [MQTT-3.3.2-18]"
    );
    assert_eq!(props.content_type, sent.content_type);
}

#[tokio::test]
async fn mqtt_3_3_4_3_subscription_identifiers_of_all_matching_subscriptions() {
    let broker = start_broker(|_| {}).await;
    let (mut s, _) = connect(broker.addr, "s", |_| {}).await;
    let (mut p, _) = connect(broker.addr, "p", |_| {}).await;
    let with_id = |id| SubscribeProperties {
        id: Some(id),
        user_properties: vec![],
    };
    s.subscribe_filter(Filter::new("sid/+", QoS::AtLeastOnce), Some(with_id(7)))
        .await;
    s.subscribe_filter(Filter::new("sid/#", QoS::AtLeastOnce), Some(with_id(9)))
        .await;
    s.subscribe_filter(Filter::new("sid/none", QoS::AtLeastOnce), None)
        .await;
    p.publish("sid/a", QoS::AtLeastOnce, false, b"x").await;
    let got = s.recv_publish().await;
    let mut ids = got.properties.expect("properties").subscription_identifiers;
    ids.sort_unstable();
    assert_eq!(ids, vec![7, 9]);
    s.expect_no_publish().await;
    p.publish("sid/none", QoS::AtLeastOnce, false, b"y").await;
    let got = s.recv_publish().await;
    let mut ids = got
        .properties
        .map(|p| p.subscription_identifiers)
        .unwrap_or_default();
    ids.sort_unstable();
    assert_eq!(ids, vec![7, 9], "the id-less subscription adds none");
}

#[tokio::test]
async fn mqtt_3_8_3_3_no_local_suppresses_own_publications() {
    let broker = start_broker(|_| {}).await;
    let (mut me, _) = connect(broker.addr, "me", |_| {}).await;
    let (mut other, _) = connect(broker.addr, "other", |_| {}).await;
    let mut filter = Filter::new("nl", QoS::AtLeastOnce);
    filter.nolocal = true;
    me.subscribe_filter(filter, None).await;
    me.publish("nl", QoS::AtLeastOnce, false, b"mine").await;
    me.expect_no_publish().await;
    other
        .publish("nl", QoS::AtLeastOnce, false, b"theirs")
        .await;
    assert_eq!(&me.recv_publish().await.payload[..], b"theirs");
}

#[tokio::test]
async fn mqtt_3_3_1_9_retain_handling_0_1_2() {
    let broker = start_broker(|_| {}).await;
    let (mut p, _) = connect(broker.addr, "p", |_| {}).await;
    p.publish("rh", QoS::AtLeastOnce, true, b"kept").await;
    let (mut s, _) = connect(broker.addr, "s", |_| {}).await;
    for (rule, first, again) in [
        (RetainForwardRule::OnEverySubscribe, true, true),
        (RetainForwardRule::OnNewSubscribe, true, false),
        (RetainForwardRule::Never, false, false),
    ] {
        for expected in [first, again] {
            let mut filter = Filter::new("rh", QoS::AtLeastOnce);
            filter.retain_forward_rule = rule.clone();
            s.subscribe_filter(filter, None).await;
            if expected {
                let got = s.recv_publish().await;
                assert!(
                    got.retain && &got.payload[..] == b"kept",
                    "{rule:?}: {got:?}"
                );
            }
            s.expect_no_publish().await;
        }
        s.client.unsubscribe("rh").await.expect("unsubscribe");
        s.wait_for("UNSUBACK", |e| {
            matches!(e, Event::Incoming(Packet::UnsubAck(_))).then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn mqtt_3_3_1_12_retain_as_published() {
    let broker = start_broker(|_| {}).await;
    let (mut keep, _) = connect(broker.addr, "keep", |_| {}).await;
    let (mut clear, _) = connect(broker.addr, "clear", |_| {}).await;
    let mut filter = Filter::new("rap", QoS::AtLeastOnce);
    filter.preserve_retain = true;
    keep.subscribe_filter(filter, None).await;
    clear.subscribe("rap", QoS::AtLeastOnce).await;
    let (mut p, _) = connect(broker.addr, "p", |_| {}).await;
    p.publish("rap", QoS::AtLeastOnce, true, b"r").await;
    assert!(keep.recv_publish().await.retain, "[MQTT-3.3.1-13]");
    assert!(!clear.recv_publish().await.retain, "[MQTT-3.3.1-12]");
}

#[tokio::test]
async fn mqtt_3_3_2_5_expired_messages_are_not_delivered_and_remaining_interval_is_sent() {
    let broker = start_broker(|_| {}).await;
    let (s, _) = connect(broker.addr, "away", |o| {
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(300));
    })
    .await;
    let mut s = s;
    s.subscribe("exp", QoS::AtLeastOnce).await;
    s.disconnect().await;
    let (mut p, _) = connect(broker.addr, "p", |_| {}).await;
    let expiring = |secs| PublishProperties {
        message_expiry_interval: Some(secs),
        ..Default::default()
    };
    p.publish_with("exp", QoS::AtLeastOnce, false, b"short", expiring(1))
        .await;
    p.publish_with("exp", QoS::AtLeastOnce, false, b"long", expiring(1000))
        .await;
    // A retained message that expires, too.
    p.publish_with("exp/retained", QoS::AtLeastOnce, true, b"gone", expiring(1))
        .await;
    // Let the short ones expire (no timing is asserted, only that 1 s has passed).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (mut s, ack) = connect(broker.addr, "away", |o| {
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(300));
    })
    .await;
    assert!(ack.session_present);
    let got = s.recv_publish().await;
    assert_eq!(&got.payload[..], b"long");
    let left = got
        .properties
        .and_then(|p| p.message_expiry_interval)
        .expect("remaining interval [MQTT-3.3.2-6]");
    assert!(left < 1000 && left > 0, "remaining {left}");
    s.expect_no_publish().await;
    s.subscribe("exp/retained", QoS::AtLeastOnce).await;
    s.expect_no_publish().await;
}

#[tokio::test]
async fn mqtt_3_3_2_12_topic_alias_from_the_client() {
    let broker = start_broker(|_| {}).await;
    let (mut s, _) = connect(broker.addr, "s", |_| {}).await;
    s.subscribe("alias/+", QoS::AtLeastOnce).await;
    let (mut p, _) = connect(broker.addr, "p", |_| {}).await;
    let alias = |n| PublishProperties {
        topic_alias: Some(n),
        ..Default::default()
    };
    p.publish_with("alias/one", QoS::AtLeastOnce, false, b"1", alias(1))
        .await;
    p.publish_with("", QoS::AtLeastOnce, false, b"2", alias(1))
        .await;
    // Re-map alias 1 to another topic.
    p.publish_with("alias/two", QoS::AtLeastOnce, false, b"3", alias(1))
        .await;
    p.publish_with("", QoS::AtLeastOnce, false, b"4", alias(1))
        .await;
    for (payload, topic) in [
        ("1", "alias/one"),
        ("2", "alias/one"),
        ("3", "alias/two"),
        ("4", "alias/two"),
    ] {
        let got = s.recv_publish().await;
        assert_eq!(
            (topic_of(&got), &got.payload[..]),
            (topic, payload.as_bytes())
        );
    }
}

#[tokio::test]
async fn mqtt_3_2_2_21_server_keep_alive_caps_the_clients_keep_alive() {
    let broker = start_broker(|c| c.max_keep_alive = 10).await;
    let (c, ack) = connect(broker.addr, "ka", |o| {
        o.set_keep_alive(Duration::from_secs(60));
    })
    .await;
    assert_eq!(ack.properties.and_then(|p| p.server_keep_alive), Some(10));
    c.disconnect().await;
    let (c, ack) = connect(broker.addr, "ka2", |o| {
        o.set_keep_alive(Duration::from_secs(5));
    })
    .await;
    assert_eq!(
        ack.properties.and_then(|p| p.server_keep_alive),
        None,
        "no Server Keep Alive when within the maximum"
    );
    c.disconnect().await;
}

#[tokio::test]
async fn mqtt_3_2_2_16_empty_client_id_gets_an_assigned_identifier() {
    let broker = start_broker(|_| {}).await;
    let (c, ack) = connect(broker.addr, "", |_| {}).await;
    let id = ack
        .properties
        .and_then(|p| p.assigned_client_identifier)
        .expect("Assigned Client Identifier [MQTT-3.2.2-16]");
    assert!(!id.is_empty());
    c.disconnect().await;
}

#[tokio::test]
async fn mqtt_3_1_4_3_takeover_sends_disconnect_0x8e_to_the_old_connection() {
    let broker = start_broker(|_| {}).await;
    let (mut old, _) = connect(broker.addr, "same", |_| {}).await;
    let (mut new, _) = connect(broker.addr, "same", |_| {}).await;
    let err = old.wait_error().await;
    assert!(
        ended_by_server_disconnect(&err, DisconnectReasonCode::SessionTakenOver),
        "{err:?}"
    );
    new.subscribe("t", QoS::AtLeastOnce).await;
    new.publish("t", QoS::AtLeastOnce, false, b"here").await;
    new.recv_publish().await;
}

#[tokio::test]
async fn mqtt_3_1_2_4_session_expiry_keeps_subscriptions_and_queues() {
    let broker = start_broker(|_| {}).await;
    let persistent = |o: &mut MqttOptions| {
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(60));
    };
    let (mut s, ack) = connect(broker.addr, "durable", persistent).await;
    assert!(!ack.session_present);
    s.subscribe("d/+", QoS::ExactlyOnce).await;
    s.disconnect().await;
    let (mut p, _) = connect(broker.addr, "p", |_| {}).await;
    p.publish("d/1", QoS::AtLeastOnce, false, b"a").await;
    p.publish("d/2", QoS::ExactlyOnce, false, b"b").await;
    let (mut s, ack) = connect(broker.addr, "durable", persistent).await;
    assert!(ack.session_present, "[MQTT-3.2.2-2]");
    assert_eq!(&s.recv_publish().await.payload[..], b"a");
    assert_eq!(&s.recv_publish().await.payload[..], b"b");
}

#[tokio::test]
async fn mqtt_4_8_2_shared_subscription_round_robin() {
    let broker = start_broker(|_| {}).await;
    let (mut a, _) = connect(broker.addr, "a", |_| {}).await;
    let (mut b, _) = connect(broker.addr, "b", |_| {}).await;
    a.subscribe("$share/g/jobs/#", QoS::AtLeastOnce).await;
    b.subscribe("$share/g/jobs/#", QoS::AtLeastOnce).await;
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
    assert_eq!(got, (0..10).collect::<Vec<u8>>());
}

#[tokio::test]
async fn subscription_limit_refuses_the_31st_filter_with_0x97() {
    let broker = start_broker(|_| {}).await;
    let (mut c, _) = connect(broker.addr, "greedy", |_| {}).await;
    let filters: Vec<Filter> = (0..31)
        .map(|i| Filter::new(format!("lim/{i}"), QoS::AtLeastOnce))
        .collect();
    c.client.subscribe_many(filters).await.expect("subscribe");
    let codes = c.suback().await;
    assert_eq!(codes.len(), 31);
    assert!(codes[..30]
        .iter()
        .all(|c| *c == SubscribeReasonCode::Success(QoS::AtLeastOnce)));
    assert_eq!(codes[30], SubscribeReasonCode::QuotaExceeded);
}

#[tokio::test]
async fn max_connections_refuses_with_connack_0x97() {
    let broker = start_broker(|c| c.max_connections = 1).await;
    let (_a, _) = connect(broker.addr, "a", |_| {}).await;
    let mut b = spawn(options(broker.addr, "b"));
    let err = b.wait_error().await;
    assert!(
        matches!(
            err,
            ConnectionError::ConnectionRefused(ConnectReturnCode::QuotaExceeded)
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn mqtt_3_1_2_8_will_on_abnormal_loss_not_after_normal_disconnect() {
    let broker = start_broker(|_| {}).await;
    let (mut s, _) = connect(broker.addr, "watcher", |_| {}).await;
    s.subscribe("will/#", QoS::AtLeastOnce).await;
    let will = |name: &str| {
        let props = LastWillProperties {
            user_properties: vec![("who".into(), name.into())],
            ..will_props()
        };
        LastWill::new(
            format!("will/{name}"),
            "gone",
            QoS::AtLeastOnce,
            false,
            Some(props),
        )
    };
    let (polite, _) = connect(broker.addr, "polite", |o| {
        o.set_last_will(will("polite"));
    })
    .await;
    polite.disconnect().await;
    s.expect_no_publish().await;

    let (dying, _) = connect(broker.addr, "dying", |o| {
        o.set_last_will(will("dying"));
    })
    .await;
    dying.kill().await;
    let got = s.recv_publish().await;
    assert_eq!(topic_of(&got), "will/dying");
    assert_eq!(
        got.properties.map(|p| p.user_properties),
        Some(vec![("who".to_string(), "dying".to_string())])
    );
}

#[tokio::test]
async fn mqtt_3_14_2_disconnect_with_will_message_0x04_publishes_the_will() {
    let broker = start_broker(|_| {}).await;
    let (mut s, _) = connect(broker.addr, "watcher", |_| {}).await;
    s.subscribe("w", QoS::AtLeastOnce).await;
    // CONNECT 5.0, will flag + will QoS 1, will topic "w", payload "bye".
    let mut c = RawClient::open(broker.addr, ProtocolVersion::V5).await;
    c.send_hex("10 18 00 04 4d 51 54 54 05 0e 00 3c 00 00 02 69 64 00 00 01 77 00 03 62 79 65")
        .await;
    c.expect_connack(0x00).await;
    c.send_hex("e0 01 04").await;
    c.expect_closed().await;
    assert_eq!(&s.recv_publish().await.payload[..], b"bye");
}

#[tokio::test]
async fn mqtt_3_1_3_9_will_delay_interval_is_waited_and_cancelled_by_reconnect() {
    let broker = start_broker(|_| {}).await;
    let (mut s, _) = connect(broker.addr, "watcher", |_| {}).await;
    s.subscribe("wd/#", QoS::AtLeastOnce).await;
    let delayed = |name: &str| {
        let props = LastWillProperties {
            delay_interval: Some(2),
            ..will_props()
        };
        LastWill::new(
            format!("wd/{name}"),
            "late",
            QoS::AtLeastOnce,
            false,
            Some(props),
        )
    };
    // Reconnecting within the delay cancels the will [MQTT-3.1.3-9].
    let (back, _) = connect(broker.addr, "back", |o| {
        o.set_last_will(delayed("back"));
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(60));
    })
    .await;
    back.kill().await;
    let (_back, _) = connect(broker.addr, "back", |o| {
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(60));
    })
    .await;
    // Not reconnecting: the will comes after the delay.
    let (gone, _) = connect(broker.addr, "gone", |o| {
        o.set_last_will(delayed("gone"));
        o.set_session_expiry_interval(Some(60));
    })
    .await;
    gone.kill().await;
    let got = s.recv_publish().await;
    assert_eq!(topic_of(&got), "wd/gone");
    s.expect_no_publish().await;
}

/// Will properties with nothing set.
fn will_props() -> LastWillProperties {
    LastWillProperties {
        delay_interval: None,
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        user_properties: vec![],
    }
}

/// Reads one PUBLISH with a raw client.
async fn raw_publish(c: &mut RawClient) -> aviary_codec::Publish {
    let frame = c.read_frame().await;
    match c.decode(&frame) {
        WirePacket::Publish(p) => p,
        _ => panic!("expected PUBLISH, got {}", to_hex(&frame.raw())),
    }
}

#[tokio::test]
async fn mqtt_3_3_4_8_clients_receive_maximum_bounds_the_inflight_window() {
    let broker = start_broker(|_| {}).await;
    // Receive Maximum 3 (0x21 00 03).
    let (mut s, _) = RawClient::connect_v5_with(broker.addr, "rm", 0x02, 60, "21 00 03").await;
    s.subscribe(1, "rm", 1).await;
    let (mut p, _) = connect(broker.addr, "p", |_| {}).await;
    for i in 0..10u8 {
        p.publish("rm", QoS::AtLeastOnce, false, &[i]).await;
    }
    let mut ids = Vec::new();
    for i in 0..3u8 {
        let got = raw_publish(&mut s).await;
        assert_eq!(&got.payload[..], &[i]);
        ids.push(got.packet_id.expect("id").get());
    }
    s.expect_silence().await;
    s.send_hex(&format!("40 02 {}", to_hex(&ids[0].to_be_bytes())))
        .await;
    let got = raw_publish(&mut s).await;
    assert_eq!(&got.payload[..], &[3]);
    s.expect_silence().await;
}

#[tokio::test]
async fn mqtt_3_1_2_24_packets_over_the_clients_maximum_packet_size_are_not_sent() {
    let broker = start_broker(|_| {}).await;
    // Maximum Packet Size 64 (0x27 00 00 00 40).
    let (mut s, _) =
        RawClient::connect_v5_with(broker.addr, "small", 0x02, 60, "27 00 00 00 40").await;
    s.subscribe(1, "mps", 1).await;
    let (mut p, _) = connect(broker.addr, "p", |_| {}).await;
    p.publish("mps", QoS::AtLeastOnce, false, &[0x55; 200])
        .await;
    p.publish("mps", QoS::AtLeastOnce, false, b"small").await;
    let got = raw_publish(&mut s).await;
    assert_eq!(&got.payload[..], b"small");
    s.send_hex(&format!(
        "40 02 {}",
        to_hex(&got.packet_id.expect("id").get().to_be_bytes())
    ))
    .await;
    s.expect_silence().await;
}

#[tokio::test]
async fn mqtt_3_3_2_3_4_broker_assigns_topic_aliases_when_the_client_allows_them() {
    let broker = start_broker(|_| {}).await;
    // Topic Alias Maximum 5 (0x22 00 05).
    let (mut s, _) = RawClient::connect_v5_with(broker.addr, "ta", 0x02, 60, "22 00 05").await;
    s.subscribe(1, "a/long/topic/name", 0).await;
    let (mut p, _) = connect(broker.addr, "p", |_| {}).await;
    p.publish("a/long/topic/name", QoS::AtMostOnce, false, b"1")
        .await;
    p.publish("a/long/topic/name", QoS::AtMostOnce, false, b"2")
        .await;
    let first = raw_publish(&mut s).await;
    let second = raw_publish(&mut s).await;
    let alias = first.properties.topic_alias.expect("alias assigned").get();
    assert!(
        (1..=5).contains(&alias),
        "within the client's maximum [MQTT-3.3.2-11]"
    );
    assert_eq!(first.topic.as_str(), "a/long/topic/name");
    assert_eq!(second.properties.topic_alias.map(|a| a.get()), Some(alias));
    assert_eq!(second.topic.as_str(), "", "the alias replaces the topic");
}

#[tokio::test]
async fn mqtt_3_2_2_topic_alias_maximum_0_means_no_aliases_towards_the_client() {
    let broker = start_broker(|_| {}).await;
    let mut s = RawClient::connect_v5(broker.addr, "noalias").await;
    s.subscribe(1, "na", 0).await;
    let (mut p, _) = connect(broker.addr, "p", |_| {}).await;
    for _ in 0..2 {
        p.publish("na", QoS::AtMostOnce, false, b"x").await;
    }
    for _ in 0..2 {
        let got = raw_publish(&mut s).await;
        assert_eq!(got.topic.as_str(), "na");
        assert_eq!(got.properties.topic_alias, None, "[MQTT-3.3.2-10]");
    }
}

#[tokio::test]
async fn mqtt_4_4_0_1_unacked_publish_is_resent_with_dup_on_session_resume() {
    let broker = start_broker(|_| {}).await;
    // Clean Start 0, Session Expiry Interval 60 (0x11 00 00 00 3c).
    let (mut s, _) =
        RawClient::connect_v5_with(broker.addr, "resume", 0x00, 60, "11 00 00 00 3c").await;
    s.subscribe(1, "re", 1).await;
    let (mut p, _) = connect(broker.addr, "p", |_| {}).await;
    p.publish("re", QoS::AtLeastOnce, false, b"again").await;
    let first = raw_publish(&mut s).await;
    assert!(!first.dup);
    drop(s);
    let (mut s, ack) =
        RawClient::connect_v5_with(broker.addr, "resume", 0x00, 60, "11 00 00 00 3c").await;
    assert_eq!(ack.body[0], 0x01, "session present");
    let again = raw_publish(&mut s).await;
    assert!(again.dup, "DUP=1 on resend [MQTT-4.4.0-1]");
    assert_eq!(again.packet_id, first.packet_id);
    assert_eq!(&again.payload[..], b"again");
}

#[tokio::test]
async fn graceful_shutdown_sends_disconnect_0x8b_to_5_0_clients() {
    let broker = start_broker(|_| {}).await;
    let mut raw = RawClient::connect_v5(broker.addr, "raw").await;
    let (mut c, _) = connect(broker.addr, "rumqttc", |_| {}).await;
    broker.shutdown().await;
    raw.expect_disconnect(0x8b).await;
    let err = c.wait_error().await;
    assert!(
        ended_by_server_disconnect(&err, DisconnectReasonCode::ServerShuttingDown),
        "{err:?}"
    );
}

#[tokio::test]
async fn mqtt_3_1_4_3_takeover_raw_old_connection_gets_disconnect_0x8e() {
    let broker = start_broker(|_| {}).await;
    let mut old = RawClient::connect_v5(broker.addr, "same").await;
    let mut new = RawClient::connect_v5(broker.addr, "same").await;
    old.expect_disconnect(0x8e).await;
    new.ping().await;
}

#[tokio::test]
async fn mqtt_3_1_2_11_2_session_expires_after_its_interval() {
    let broker = start_broker(|_| {}).await;
    let short = |o: &mut MqttOptions| {
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(2));
    };
    let (mut s, _) = connect(broker.addr, "brief", short).await;
    s.subscribe("x", QoS::AtLeastOnce).await;
    s.disconnect().await;
    let (s, ack) = connect(broker.addr, "brief", short).await;
    assert!(ack.session_present, "resumed within the interval");
    s.disconnect().await;
    // No timing is asserted: only that more than the 2 s interval has passed.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let (_s, ack) = connect(broker.addr, "brief", short).await;
    assert!(!ack.session_present, "expired [MQTT-3.1.2-23]");
}

#[tokio::test]
async fn mqtt_3_8_4_6_delivery_is_downgraded_to_the_granted_qos() {
    let broker = start_broker(|_| {}).await;
    let (mut s, _) = connect(broker.addr, "s", |_| {}).await;
    let (mut p, _) = connect(broker.addr, "p", |_| {}).await;
    s.subscribe("down", QoS::AtLeastOnce).await;
    p.publish("down", QoS::ExactlyOnce, false, b"x").await;
    assert_eq!(s.recv_publish().await.qos, QoS::AtLeastOnce);
    p.publish("down", QoS::AtMostOnce, false, b"y").await;
    assert_eq!(s.recv_publish().await.qos, QoS::AtMostOnce);
}

#[tokio::test]
async fn mqtt_3_2_2_21_server_keep_alive_is_enforced() {
    let broker = start_broker(|c| c.max_keep_alive = 1).await;
    let (mut c, ack) = RawClient::connect_v5_with(broker.addr, "lazy", 0x02, 60, "").await;
    let WirePacket::ConnAck(ack) = c.decode(&ack) else {
        unreachable!()
    };
    assert_eq!(ack.properties.server_keep_alive, Some(1));
    // Silent for longer than 1.5 × 1 s: closed (DISCONNECT 0x8D first is allowed).
    match c.next(WAIT).await {
        common::Next::Closed(rest) => assert!(rest.is_empty()),
        common::Next::Frame(frame) => {
            assert_eq!((frame.first, frame.body.first()), (0xe0, Some(&0x8d)));
            c.expect_closed().await;
        }
        common::Next::Silent => panic!("the Server Keep Alive of 1 s was not enforced"),
    }
}

#[tokio::test]
async fn mqtt_3_11_3_unsuback_0x11_when_no_subscription_existed() {
    let broker = start_broker(|_| {}).await;
    let mut c = RawClient::connect_v5(broker.addr, "unsub").await;
    c.subscribe(1, "here", 1).await;
    // UNSUBSCRIBE id 2: "here", "nope".
    c.send_hex("a2 0f 00 02 00 00 04 68 65 72 65 00 04 6e 6f 70 65")
        .await;
    let WirePacket::UnsubAck(ack) = c.read_packet().await else {
        panic!("expected UNSUBACK")
    };
    assert_eq!(ack.packet_id.get(), 2);
    assert_eq!(
        ack.reason_codes,
        vec![
            aviary_codec::ReasonCode(0x00),
            aviary_codec::ReasonCode(0x11)
        ]
    );
}

#[tokio::test]
async fn mqtt_3_2_2_3_2_session_expiry_above_the_maximum_is_capped_in_connack() {
    let broker = start_broker(|c| c.max_session_expiry_interval = 10).await;
    let (c, ack) = connect(broker.addr, "long", |o| {
        o.set_session_expiry_interval(Some(1000));
    })
    .await;
    assert_eq!(
        ack.properties.and_then(|p| p.session_expiry_interval),
        Some(10)
    );
    c.disconnect().await;
}
