//! Parked connections (`listener.park_after`, here 1 s; just after connecting, a connection
//! parks after 1 s of silence): an idle plain TCP connection gives up its task, and everything a
//! connection can be asked to do still reaches it. Each test waits until
//! `aviary_connections_parked` on `/metrics` says its clients are parked, then drives them
//! with real traffic: deliveries at QoS 0 and 1 and their acknowledgement, PINGREQ and
//! PUBLISH from the client, its hang-up, keep-alive expiry with its will, a kick through the
//! management API, a takeover, its listener switched off, and graceful shutdown.

mod api;
mod common;

use std::time::Duration;

use aviary_codec::{Packet, ProtocolVersion, QoS, ReasonCode};

use api::{start_api, Api, WAIT};
use common::{packet_hex, str_hex, Next, RawClient};

/// A broker whose plain TCP connections park after one idle second.
async fn start() -> Api {
    start_api(|config| config.listener.park_after = Duration::from_secs(1)).await
}

/// Waits until exactly `n` connections are parked.
async fn wait_parked(api: &Api, n: u32) {
    api.wait_metric("aviary_connections_parked", f64::from(n))
        .await;
}

#[tokio::test]
async fn a_parked_subscriber_receives_qos0_and_qos1_and_its_puback_completes_the_flow() {
    let api = start().await;
    let mut sub = RawClient::connect_v311(api.mqtt, "parked-sub").await;
    sub.subscribe(1, "park/t", 1).await;
    wait_parked(&api, 1).await;

    let mut publisher = RawClient::connect_v311(api.mqtt, "parked-pub").await;
    publisher.publish("park/t", 0, 0, b"zero").await;
    publisher.publish("park/t", 1, 7, b"one").await;
    publisher.expect_hex("40 02 00 07").await;

    match sub.read_packet().await {
        Packet::Publish(p) => {
            assert_eq!((p.qos, &p.payload[..]), (QoS::AtMostOnce, &b"zero"[..]));
        }
        other => panic!("expected the QoS 0 PUBLISH, got {other:?}"),
    }
    let id = match sub.read_packet().await {
        Packet::Publish(p) => {
            assert_eq!((p.qos, &p.payload[..]), (QoS::AtLeastOnce, &b"one"[..]));
            p.packet_id.expect("QoS 1 has a packet id").get()
        }
        other => panic!("expected the QoS 1 PUBLISH, got {other:?}"),
    };
    // Unacknowledged, the message is in flight; the PUBACK (read by the resumed task, or
    // by another resume if it parked again meanwhile) ends the flow.
    api.wait_metric("aviary_inflight_messages", 1.0).await;
    sub.send_hex(&format!("40 02 {:04x}", id)).await;
    api.wait_metric("aviary_inflight_messages", 0.0).await;
    // Both park once idle again, and still serve.
    wait_parked(&api, 2).await;
    sub.ping().await;
    api.shutdown().await;
}

#[tokio::test]
async fn a_parked_client_is_answered_pingreq_and_publish() {
    let api = start().await;
    let mut v5 = RawClient::connect_v5(api.mqtt, "parked-ping").await;
    wait_parked(&api, 1).await;
    v5.ping().await;
    wait_parked(&api, 1).await;
    v5.publish("park/p", 1, 3, b"x").await;
    match v5.read_packet().await {
        Packet::PubAck(ack) => assert_eq!(ack.packet_id.get(), 3),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    api.shutdown().await;
}

#[tokio::test]
async fn keep_alive_expiry_disconnects_a_parked_client_and_publishes_its_will() {
    let api = start().await;
    let mut watcher = RawClient::connect_v311(api.mqtt, "will-watcher").await;
    watcher.subscribe(1, "park/will", 0).await;
    // 3.1.1 CONNECT, Clean Session and a QoS 0 will, keep alive 3 s: the broker ends the
    // connection after 4.5 s of silence [MQTT-3.1.2-24].
    let mut silent = RawClient::open(api.mqtt, ProtocolVersion::V3_1_1).await;
    silent
        .send_hex(&packet_hex(
            0x10,
            &format!(
                "00 04 4d 51 54 54 04 06 00 03 {} {} {}",
                str_hex("parked-silent"),
                str_hex("park/will"),
                str_hex("gone")
            ),
        ))
        .await;
    silent.expect_connack(0x00).await;
    wait_parked(&api, 2).await;

    match watcher.next(Duration::from_secs(10)).await {
        Next::Frame(frame) => match watcher.decode(&frame) {
            Packet::Publish(p) => assert_eq!(&p.payload[..], b"gone"),
            other => panic!("expected the will, got {other:?}"),
        },
        other => panic!("expected the will, got {other:?}"),
    }
    silent.expect_closed().await;
    api.shutdown().await;
}

#[tokio::test]
async fn a_kick_through_the_api_ends_a_parked_connection() {
    let api = start().await;
    let mut v5 = RawClient::connect_v5(api.mqtt, "parked-kick").await;
    wait_parked(&api, 1).await;
    let (status, _) = api
        .call("DELETE", "/api/v1/clients/parked-kick", None)
        .await;
    assert_eq!(status, 204);
    v5.expect_disconnect(ReasonCode::ADMINISTRATIVE_ACTION.0)
        .await;
    wait_parked(&api, 0).await;
    api.shutdown().await;
}

#[tokio::test]
async fn a_takeover_sends_0x8e_to_a_parked_connection() {
    let api = start().await;
    let mut old = RawClient::connect_v5(api.mqtt, "parked-twice").await;
    wait_parked(&api, 1).await;
    let mut new = RawClient::connect_v5(api.mqtt, "parked-twice").await;
    old.expect_disconnect(0x8e).await;
    new.ping().await;
    api.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_sends_0x8b_to_a_parked_5_0_client() {
    let api = start().await;
    let mut v5 = RawClient::connect_v5(api.mqtt, "parked-shutdown").await;
    let mut v311 = RawClient::connect_v311(api.mqtt, "parked-shutdown-3").await;
    wait_parked(&api, 2).await;
    let shutdown = tokio::spawn(api.shutdown());
    v5.expect_disconnect(0x8b).await;
    v311.expect_closed().await;
    tokio::time::timeout(WAIT, shutdown)
        .await
        .expect("shutdown waits for parked connections to close, boundedly")
        .unwrap();
}

#[tokio::test]
async fn a_parked_client_that_hangs_up_is_gone_at_once_and_its_will_published() {
    let api = start().await;
    let mut watcher = RawClient::connect_v311(api.mqtt, "hangup-watcher").await;
    watcher.subscribe(1, "park/hangup", 0).await;
    let mut leaving = RawClient::open(api.mqtt, ProtocolVersion::V3_1_1).await;
    leaving
        .send_hex(&packet_hex(
            0x10,
            &format!(
                "00 04 4d 51 54 54 04 06 00 3c {} {} {}",
                str_hex("parked-hangup"),
                str_hex("park/hangup"),
                str_hex("bye")
            ),
        ))
        .await;
    leaving.expect_connack(0x00).await;
    wait_parked(&api, 2).await;
    // Keep alive is 60 s: only the socket's end, seen by the parking poll, explains a will
    // within the wait.
    drop(leaving);
    match watcher.read_packet().await {
        Packet::Publish(p) => assert_eq!(&p.payload[..], b"bye"),
        other => panic!("expected the will, got {other:?}"),
    }
    api.wait_metric("aviary_connections", 1.0).await;
    api.shutdown().await;
}

#[tokio::test]
async fn switching_the_listener_off_ends_its_parked_connections() {
    let api = start().await;
    let mut v5 = RawClient::connect_v5(api.mqtt, "parked-listener-off").await;
    wait_parked(&api, 1).await;
    let (status, off) = api
        .call(
            "PATCH",
            "/api/v1/listeners/default",
            Some(serde_json::json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, 200, "{off}");
    match v5.read_packet().await {
        Packet::Disconnect(d) => assert_eq!(d.reason_code, ReasonCode::ADMINISTRATIVE_ACTION),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    v5.expect_closed().await;
    api.shutdown().await;
}
