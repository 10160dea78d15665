//! Plan limits with real clients: each limit hit and the reason code the client sees.
//! Connections and subscriptions per session are in `api_routes.rs`; here the rates, the
//! retained count and the message rate's backpressure.

mod api;
mod common;

use aviary_codec::ProtocolVersion;
use serde_json::{json, Value};

use api::{start_api, Api};
use common::{connect_v311_hex, connect_v5_hex, packet_hex, str_hex, RawClient};

/// Changes some limits through the API.
async fn set_limits(api: &Api, changes: Value) {
    let (_, mut limits) = api.call("GET", "/api/v1/limits", None).await;
    for (k, v) in changes.as_object().unwrap() {
        limits[k] = v.clone();
    }
    let (status, body) = api.call("PUT", "/api/v1/limits", Some(limits)).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn connects_over_the_rate_get_0x9f() {
    let api = start_api(|_| {}).await;
    // One CONNECT per second: the second within the same second is refused.
    set_limits(&api, json!({"connect_rate": 1})).await;
    let _first = RawClient::connect_v5(api.mqtt, "first").await;
    let mut second = RawClient::open(api.mqtt, ProtocolVersion::V5).await;
    second
        .send_hex(&connect_v5_hex("second", 0x02, 60, ""))
        .await;
    second.expect_connack(0x9f).await;
    second.expect_closed().await;
    // 3.x has no such code: CONNACK 0x03 Server unavailable.
    let mut old = RawClient::open(api.mqtt, ProtocolVersion::V3_1_1).await;
    old.send_hex(&connect_v311_hex("old", 0x02, 60)).await;
    old.expect_connack(0x03).await;
    let (_, stats) = api.call("GET", "/api/v1/stats", None).await;
    assert_eq!(stats["connects_refused"], 2);
    api.shutdown().await;
}

#[tokio::test]
async fn connects_with_a_will_over_their_rate_get_0x9f() {
    let api = start_api(|_| {}).await;
    set_limits(&api, json!({"will_connect_rate": 1})).await;
    // CONNECT 5.0 with a will on "w" (QoS 0), Clean Start; no properties, no will
    // properties.
    let with_will = |id: &str| {
        packet_hex(
            0x10,
            &format!(
                "0004 4d515454 05 06 003c 00 {} 00 {} {}",
                str_hex(id),
                str_hex("w"),
                str_hex("x")
            ),
        )
    };
    let mut first = RawClient::open(api.mqtt, ProtocolVersion::V5).await;
    first.send_hex(&with_will("will-1")).await;
    first.expect_connack(0x00).await;
    let mut second = RawClient::open(api.mqtt, ProtocolVersion::V5).await;
    second.send_hex(&with_will("will-2")).await;
    second.expect_connack(0x9f).await;
    // Without a will, the connect rate alone applies.
    let _plain = RawClient::connect_v5(api.mqtt, "no-will").await;
    api.shutdown().await;
}

#[tokio::test]
async fn retained_messages_over_the_count_get_0x97() {
    let api = start_api(|_| {}).await;
    set_limits(&api, json!({"max_retained": 1})).await;
    let mut c = RawClient::connect_v5(api.mqtt, "retainer").await;
    // PUBLISH QoS 1, RETAIN, id 1 on "r/a": stored (0x10: no subscriber matched).
    c.send_hex(&packet_hex(
        0x33,
        &format!("{} 0001 00 6869", str_hex("r/a")),
    ))
    .await;
    c.expect_hex("40 03 00 01 10").await;
    // A second topic would exceed the count: 0x97 Quota exceeded, not stored.
    c.send_hex(&packet_hex(
        0x33,
        &format!("{} 0002 00 6869", str_hex("r/b")),
    ))
    .await;
    let ack = c.read_frame().await;
    assert_eq!(&ack.body[..3], [0x00, 0x02, 0x97], "{ack:?}");
    // Replacing the stored one is fine.
    c.send_hex(&packet_hex(
        0x33,
        &format!("{} 0003 00 6869", str_hex("r/a")),
    ))
    .await;
    c.expect_hex("40 03 00 03 10").await;
    let (_, list) = api.call("GET", "/api/v1/retained", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    api.shutdown().await;
}

#[tokio::test]
async fn messages_over_the_rate_are_slowed_not_refused() {
    let api = start_api(|_| {}).await;
    set_limits(&api, json!({"max_messages_per_second": 20})).await;
    let mut sub = RawClient::connect_v311(api.mqtt, "slow-sub").await;
    sub.send_hex(&packet_hex(0x82, &format!("0001 {} 00", str_hex("flood"))))
        .await;
    sub.expect_hex("90 03 00 01 00").await;
    let mut publisher = RawClient::connect_v311(api.mqtt, "flooder").await;
    // 40 QoS 0 messages: twice a second's worth, sent at once.
    let one = packet_hex(0x30, &format!("{} 78", str_hex("flood")));
    publisher.send_hex(&one.repeat(40)).await;
    for _ in 0..40 {
        let frame = sub.read_frame().await;
        assert_eq!(frame.first, 0x30);
    }
    // The publisher was paused, not disconnected: it still gets its PINGRESP.
    publisher.send_hex("c0 00").await;
    publisher.expect_hex("d0 00").await;
    // The pause is counted.
    let mut paused = false;
    for _ in 0..100 {
        let text = api
            .http
            .get(format!("{}/metrics", api.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let count = text
            .lines()
            .find_map(|l| l.strip_prefix("aviary_reads_paused_total "))
            .and_then(|v| v.trim().parse::<u64>().ok());
        if count.is_some_and(|n| n >= 1) {
            paused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(paused, "aviary_reads_paused_total never counted a pause");
    api.shutdown().await;
}
