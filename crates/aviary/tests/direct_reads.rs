//! Direct reads (`crate::direct_reads`): on a runtime of one worker thread (these tests'
//! own), a plain TCP client that talks (its reader woke more than once) is handed to the
//! broker task, which then reads its socket itself. Each test waits until
//! `aviary_connections_direct` on `/metrics` counts its clients, then drives them with what
//! the broker task must get right: packets split across reads and several in one read,
//! acknowledgements, a large message, undecodable bytes, DISCONNECT, a kick, a takeover,
//! a quiet connection parking and coming back, and graceful shutdown.

mod api;
mod common;

use std::time::Duration;

use aviary_codec::{Packet, QoS, ReasonCode};

use api::{start_api, Api};
use common::{packet_hex, str_hex, to_hex, RawClient};

/// Waits until the broker task reads exactly `n` connections itself.
async fn wait_direct(api: &Api, n: u32) {
    api.wait_metric("aviary_connections_direct", f64::from(n))
        .await;
}

/// A 3.1.1 PUBLISH at QoS 0 or 1 as wire bytes.
fn publish_bytes(topic: &str, qos: u8, packet_id: u16, payload: &[u8]) -> Vec<u8> {
    let pid = if qos > 0 {
        to_hex(&packet_id.to_be_bytes())
    } else {
        String::new()
    };
    common::hex(&packet_hex(
        0x30 | (qos << 1),
        &format!("{} {pid} {}", str_hex(topic), to_hex(payload)),
    ))
}

/// The payload of the next packet, which must be a PUBLISH at `qos`; its packet id.
async fn expect_publish(client: &mut RawClient, qos: QoS, payload: &[u8]) -> Option<u16> {
    match client.read_packet().await {
        Packet::Publish(p) => {
            assert_eq!(p.qos, qos);
            assert_eq!(p.payload.len(), payload.len());
            assert!(p.payload[..] == *payload, "payload differs");
            p.packet_id.map(|id| id.get())
        }
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

/// A subscriber of `topic` (QoS 1) and a publisher, both read by the broker task.
async fn pair(api: &Api, topic: &str) -> (RawClient, RawClient) {
    let mut sub = RawClient::connect_v311(api.mqtt, &format!("{topic}-sub")).await;
    sub.subscribe(1, topic, 1).await;
    let mut publisher = RawClient::connect_v311(api.mqtt, &format!("{topic}-pub")).await;
    publisher.ping().await;
    wait_direct(api, 2).await;
    (sub, publisher)
}

#[tokio::test]
async fn packets_split_across_reads_and_many_in_one_read_arrive_whole_and_in_order() {
    let api = start_api(|_| {}).await;
    let (mut sub, mut publisher) = pair(&api, "direct").await;

    // One PUBLISH in two writes, 100 ms apart: the first half waits in the broker task.
    let split = publish_bytes("direct", 0, 0, b"split in two");
    publisher.send(&split[..7]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    publisher.send(&split[7..]).await;
    expect_publish(&mut sub, QoS::AtMostOnce, b"split in two").await;

    // Three QoS 1 PUBLISHes and a PINGREQ in one write: three PUBACKs and a PINGRESP, in
    // order, and three deliveries, whose PUBACKs the subscriber sends in one write too.
    let mut burst = Vec::new();
    for id in 1..=3u16 {
        burst.extend(publish_bytes("direct", 1, id, &[b'm', id as u8]));
    }
    burst.extend(common::hex("c0 00"));
    publisher.send(&burst).await;
    for id in 1..=3 {
        publisher.expect_ack(0x40, id).await;
    }
    publisher.expect_hex("d0 00").await;
    let mut acks = String::new();
    for id in 1..=3u16 {
        let pid = expect_publish(&mut sub, QoS::AtLeastOnce, &[b'm', id as u8])
            .await
            .expect("QoS 1 has a packet id");
        acks += &format!("40 02 {pid:04x} ");
    }
    sub.send_hex(&acks).await;
    api.wait_metric("aviary_inflight_messages", 0.0).await;

    // A 256 KiB message: more than a socket takes at once, so the subscriber's writes
    // (and the publisher's reads) go on in tasks, which hand the connections back.
    let large: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    publisher.publish("direct", 0, 0, &large).await;
    expect_publish(&mut sub, QoS::AtMostOnce, &large).await;
    wait_direct(&api, 2).await;
    sub.ping().await;

    // DISCONNECT ends the publisher's connection; the subscriber stays.
    publisher.send_hex("e0 00").await;
    publisher.expect_closed().await;
    wait_direct(&api, 1).await;
    sub.ping().await;
    api.shutdown().await;
}

#[tokio::test]
async fn undecodable_bytes_from_a_connection_the_broker_task_reads_close_it_alone() {
    let api = start_api(|_| {}).await;
    let (mut sub, mut publisher) = pair(&api, "garbage").await;
    // A packet type 0 is malformed: 3.1.1 closes the connection without a reply.
    publisher.send_hex("00 00").await;
    publisher.expect_closed().await;
    wait_direct(&api, 1).await;
    publisher = RawClient::connect_v311(api.mqtt, "garbage-pub").await;
    publisher.publish("garbage", 0, 0, b"still served").await;
    expect_publish(&mut sub, QoS::AtMostOnce, b"still served").await;
    api.shutdown().await;
}

#[tokio::test]
async fn a_kick_and_a_takeover_reach_connections_the_broker_task_reads() {
    let api = start_api(|_| {}).await;
    let mut kicked = RawClient::connect_v5(api.mqtt, "direct-kick").await;
    kicked.ping().await;
    let mut old = RawClient::connect_v5(api.mqtt, "direct-twice").await;
    old.ping().await;
    wait_direct(&api, 2).await;

    let (status, _) = api
        .call("DELETE", "/api/v1/clients/direct-kick", None)
        .await;
    assert_eq!(status, 204);
    kicked
        .expect_disconnect(ReasonCode::ADMINISTRATIVE_ACTION.0)
        .await;

    let mut new = RawClient::connect_v5(api.mqtt, "direct-twice").await;
    old.expect_disconnect(0x8e).await;
    new.ping().await;
    api.shutdown().await;
}

#[tokio::test]
async fn a_quiet_connection_parks_and_is_read_by_the_broker_task_again_when_it_talks() {
    let api = start_api(|config| config.listener.park_after = Duration::from_secs(1)).await;
    let (mut sub, mut publisher) = pair(&api, "quiet").await;
    // Quiet for `park_after`: both leave the broker task for the parking thread.
    api.wait_metric("aviary_connections_parked", 2.0).await;
    wait_direct(&api, 0).await;
    publisher.publish("quiet", 1, 9, b"after parking").await;
    publisher.expect_ack(0x40, 9).await;
    let id = expect_publish(&mut sub, QoS::AtLeastOnce, b"after parking")
        .await
        .expect("QoS 1 has a packet id");
    sub.send_hex(&format!("40 02 {id:04x}")).await;
    // The publisher's PUBLISH went from the parking thread straight to the broker task;
    // the subscriber, woken for the delivery, runs in a task until it talks (its PUBACK),
    // and is then handed over too.
    wait_direct(&api, 2).await;
    api.wait_metric("aviary_connections_parked", 0.0).await;
    api.wait_metric("aviary_inflight_messages", 0.0).await;
    publisher.ping().await;
    api.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_sends_0x8b_to_a_5_0_client_the_broker_task_reads() {
    let api = start_api(|_| {}).await;
    let mut v5 = RawClient::connect_v5(api.mqtt, "direct-bye").await;
    v5.ping().await;
    wait_direct(&api, 1).await;
    let stopping = tokio::spawn(api.shutdown());
    v5.expect_disconnect(0x8b).await;
    stopping.await.unwrap();
}
