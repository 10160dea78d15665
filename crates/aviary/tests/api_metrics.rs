//! Every metric the operations issue lists, read from `/metrics` after real traffic over
//! TCP with a real value: connections, connects and refusals by reason, messages and wire
//! bytes in and out by QoS (exact byte counts of known packets), drops by reason, queue
//! depth, in flight, retained count, authentication failures, the publish-to-deliver and
//! store commit latency histograms, metered units. And the `$SYS/broker/...` statistics.

mod api;
mod common;

use std::time::{Duration, Instant};

use aviary_codec::{Packet, ProtocolVersion};
use serde_json::json;

use api::{sample, start_api, Api, WAIT};
use common::{connect_with_credentials_hex, RawClient};

/// `/metrics` once every `(sample, value)` is there (the queue gauges and usage by
/// listener and user follow the attribution round of each tick), or the last text after
/// `WAIT`.
async fn metrics_with(api: &Api, wanted: &[(&str, f64)]) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = api.metrics_text().await;
        let all = wanted.iter().all(|(n, v)| sample(&text, n) == Some(*v));
        if all || Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The wire size of a 3.1.1 PUBLISH of `payload` on `topic` at `qos`.
fn publish_len(topic: &str, qos: u8, payload: &[u8]) -> f64 {
    let body = 2 + topic.len() + if qos > 0 { 2 } else { 0 } + payload.len();
    assert!(body < 128, "one-byte remaining length");
    (2 + body) as f64
}

#[tokio::test]
async fn every_listed_metric_counts_real_traffic() {
    let api = start_api(|c| {
        // One message in flight per 3.1.1 session and one queued behind it: the third
        // QoS 1/2 message to a session that does not acknowledge is a drop (queue_full).
        c.mqtt.max_inflight = 1;
        c.mqtt.max_queued_messages = 1;
        // Connections that talked park once quiet for this long (below).
        c.listener.park_after = Duration::from_secs(1);
        // Both clients talk after their CONNACK, so they park one to two `park_after`
        // after their last packet: short here, so that the parked gauge counts them.
        c.listener.park_after = std::time::Duration::from_secs(1);
    })
    .await;
    let mut sub = RawClient::connect_v311(api.mqtt, "m-sub").await;
    sub.subscribe(1, "m/#", 2).await;
    let mut publisher = RawClient::connect_v311(api.mqtt, "m-pub").await;

    // QoS 0, 1 and 2 from the publisher; the subscriber gets QoS 0 and QoS 1 at once and
    // does not acknowledge, so the QoS 2 copy waits in its queue.
    publisher.publish("m/a", 0, 0, b"zero").await;
    publisher.publish("m/a", 1, 1, b"one").await;
    publisher.expect_ack(0x40, 1).await;
    publisher.publish("m/a", 2, 2, b"two!").await;
    publisher.expect_ack(0x50, 2).await;
    publisher.send_hex("62 02 00 02").await; // PUBREL
    publisher.expect_ack(0x70, 2).await;
    for qos in [0, 1] {
        match sub.read_packet().await {
            Packet::Publish(p) => assert_eq!(p.qos as u8, qos),
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    // A fourth message finds the queue full.
    let (status, _) = api
        .call(
            "POST",
            "/api/v1/publish",
            Some(json!({"topic": "m/b", "payload": "x", "qos": 1})),
        )
        .await;
    assert_eq!(status, 200);

    // A persistent session subscribed at QoS 0 and offline: a QoS 0 message is dropped.
    let mut offline = RawClient::connect_v311_with(api.mqtt, "m-off", 0x00, 60).await;
    offline.subscribe(1, "off/t", 0).await;
    offline.send_hex("e0 00").await;
    offline.expect_closed().await;
    api.wait_for("/api/v1/stats", |s| s["connections"] == 2)
        .await;
    let (status, _) = api
        .call(
            "POST",
            "/api/v1/publish",
            Some(json!({"topic": "off/t", "payload": "lost", "retain": true})),
        )
        .await;
    assert_eq!(status, 200);

    // The first user ends anonymous access ("auto"); a wrong password is refused (0x86,
    // 3.1.1 return code 4) and counted as an authentication failure.
    let (status, _) = api
        .call(
            "POST",
            "/api/v1/users",
            Some(json!({"username": "alice", "password": "right-password"})),
        )
        .await;
    assert_eq!(status, 201);
    let mut refused = RawClient::open(api.mqtt, ProtocolVersion::V3_1_1).await;
    refused
        .send_hex(&connect_with_credentials_hex(
            ProtocolVersion::V3_1_1,
            "m-bad",
            Some("alice"),
            Some(b"wrong"),
        ))
        .await;
    refused.expect_hex("20 02 00 04").await;

    let (_, stats) = api.call("GET", "/api/v1/stats", None).await;
    let units = stats["units"].as_f64().unwrap();
    assert!(units > 0.0);
    let (p0, p1, p2) = (
        publish_len("m/a", 0, b"zero"),
        publish_len("m/a", 1, b"one"),
        publish_len("m/a", 2, b"two!"),
    );
    let wanted: &[(&str, f64)] = &[
        ("aviary_connections", 2.0),
        // Both connections have been quiet for longer than `park_after` (1 s): both are
        // parked (tests/parking.rs drives parked connections).
        ("aviary_connections_parked", 2.0),
        ("aviary_connacks_total{reason=\"0x00\"}", 3.0),
        ("aviary_connacks_total{reason=\"0x86\"}", 1.0),
        ("aviary_connects_refused_total", 1.0),
        ("aviary_auth_failures_total", 1.0),
        ("aviary_messages_received_total{qos=\"0\"}", 1.0),
        ("aviary_messages_received_total{qos=\"1\"}", 1.0),
        ("aviary_messages_received_total{qos=\"2\"}", 1.0),
        ("aviary_messages_sent_total{qos=\"0\"}", 1.0),
        ("aviary_messages_sent_total{qos=\"1\"}", 1.0),
        ("aviary_messages_sent_total{qos=\"2\"}", 0.0),
        // Wire bytes: exactly the PUBLISH packets above, both ways.
        ("aviary_bytes_received_total{qos=\"0\"}", p0),
        ("aviary_bytes_received_total{qos=\"1\"}", p1),
        ("aviary_bytes_received_total{qos=\"2\"}", p2),
        ("aviary_bytes_sent_total{qos=\"0\"}", p0),
        ("aviary_bytes_sent_total{qos=\"1\"}", p1),
        ("aviary_bytes_sent_total{qos=\"2\"}", 0.0),
        ("aviary_payload_bytes_received_total{qos=\"2\"}", 4.0),
        ("aviary_messages_dropped_total{reason=\"queue_full\"}", 1.0),
        (
            "aviary_messages_dropped_total{reason=\"qos0_offline\"}",
            1.0,
        ),
        ("aviary_queued_messages", 1.0),
        ("aviary_inflight_messages", 1.0),
        ("aviary_retained_messages", 1.0),
        ("aviary_usage_units_total", units),
        (
            "aviary_usage_units_by_listener_total{listener=\"default\"}",
            units,
        ),
    ];
    let text = metrics_with(&api, wanted).await;
    for (name, value) in wanted {
        assert_eq!(sample(&text, name), Some(*value), "{name} in\n{text}");
    }
    // Every other packet (CONNECT, SUBSCRIBE, acks, DISCONNECT) is counted apart:
    // CONNACK, SUBACK, PUBACK, PUBREC, PUBCOMP went out at least.
    let control_out = sample(&text, "aviary_bytes_sent_total{qos=\"none\"}").unwrap();
    assert!(control_out >= 5.0 * 4.0, "{control_out}");
    let control_in = sample(&text, "aviary_bytes_received_total{qos=\"none\"}").unwrap();
    assert!(control_in > 4.0 * 14.0, "{control_in}");
    assert!(
        text.contains("# HELP aviary_bytes_received_total"),
        "{text}"
    );
    // Two deliveries measured; the persistent session's subscription was committed.
    let delivered = sample(&text, "aviary_publish_to_deliver_seconds_count").unwrap();
    assert!(delivered >= 2.0, "{delivered}");
    let commits = sample(&text, "aviary_store_commit_seconds_count").unwrap();
    assert!(commits >= 1.0, "{commits}");
    api.shutdown().await;
}

/// A scrape copies the broker's counters when it is made: a message published just before
/// is counted in the very next scrape, not up to a second later. Every family the text
/// carries has its help and type.
#[tokio::test]
async fn a_scrape_counts_what_happened_just_before_it() {
    let api = start_api(|_| {}).await;
    let mut publisher = RawClient::connect_v311(api.mqtt, "m-now").await;
    for round in 1..=3u8 {
        publisher.publish("now/t", 1, u16::from(round), b"x").await;
        publisher.expect_ack(0x40, u16::from(round)).await;
        // One scrape, no retry: the PUBACK came after the broker counted the message.
        let text = api.metrics_text().await;
        assert_eq!(
            sample(&text, "aviary_messages_received_total{qos=\"1\"}"),
            Some(f64::from(round)),
            "round {round}:\n{text}"
        );
    }
    let text = api.metrics_text().await;
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert!(families.len() > 20, "{text}");
    for family in families {
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "{family} has no help:\n{text}"
        );
    }
    api.shutdown().await;
}

#[tokio::test]
async fn sys_topics_carry_uptime_version_clients_messages_and_bytes() {
    let api = start_api(|_| {}).await;
    let mut watcher = RawClient::connect_v311(api.mqtt, "sys-all").await;
    watcher.subscribe(1, "$SYS/broker/#", 0).await;
    watcher.publish("traffic", 0, 0, b"x").await;
    let wanted = [
        "$SYS/broker/uptime",
        "$SYS/broker/version",
        "$SYS/broker/clients/connected",
        "$SYS/broker/clients/disconnected",
        "$SYS/broker/messages/received",
        "$SYS/broker/messages/sent",
        "$SYS/broker/bytes/received",
        "$SYS/broker/bytes/sent",
        "$SYS/broker/subscriptions/count",
        "$SYS/broker/retained messages/count",
    ];
    // Published every 10 seconds: at most one round and a half to see them all.
    let mut seen = std::collections::BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(16);
    while !wanted.iter().all(|t| seen.contains_key(*t)) && Instant::now() < deadline {
        if let common::Next::Frame(frame) = watcher.next(Duration::from_secs(2)).await {
            if let Packet::Publish(p) = watcher.decode(&frame) {
                let payload = String::from_utf8(p.payload.to_vec()).unwrap();
                seen.insert(p.topic.as_str().to_owned(), payload);
            }
        }
    }
    for topic in wanted {
        assert!(
            seen.contains_key(topic),
            "{topic} not published; saw {seen:?}"
        );
    }
    let number = |t: &str| {
        seen[t]
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("{t}: {}", seen[t]))
    };
    assert_eq!(seen["$SYS/broker/version"], env!("CARGO_PKG_VERSION"));
    let uptime = seen["$SYS/broker/uptime"].strip_suffix(" seconds").unwrap();
    assert!(uptime.parse::<u64>().unwrap() < 60, "{uptime}");
    assert_eq!(number("$SYS/broker/clients/connected"), 1);
    assert_eq!(number("$SYS/broker/clients/disconnected"), 0);
    assert_eq!(number("$SYS/broker/subscriptions/count"), 1);
    assert!(number("$SYS/broker/messages/received") >= 1);
    // CONNECT + SUBSCRIBE + PUBLISH at least, and CONNACK + SUBACK.
    let topic_publish = 2 + 2 + "traffic".len() as u64 + 1;
    assert!(number("$SYS/broker/bytes/received") >= 14 + topic_publish);
    assert!(number("$SYS/broker/bytes/sent") >= 4 + 5);
    api.shutdown().await;
}
