//! Usage metering end to end: real connections, and the exact units the API reports for
//! each multiplier case (DESIGN.md, "Usage metering"): QoS 0: 1; QoS 1 with a clean
//! session: 2, with a persistent one: 5; QoS 2: 5; retain flag and will messages: 10;
//! connect and disconnect: 1 each. Each case runs on its own broker so the broker total is
//! exact too.

mod api;
mod common;

use serde_json::Value;

use api::{start_api, Api};
use common::{connect_v311_hex, packet_hex, str_hex, RawClient};

/// Waits until the usage of `client` is `expected`; then the broker total must be `total`.
async fn expect_units(api: &Api, client: &str, expected: u64, total: u64) {
    let path = format!("/api/v1/usage/client/{client}");
    api.wait_for(&path, |u| u["total"] == expected).await;
    api.wait_for("/api/v1/usage", |u: &Value| u["total"]["total"] == total)
        .await;
}

/// A client publishes one message (with the QoS flow done) and disconnects cleanly.
async fn publish_case(flags: u8, first: u8, expected: u64) {
    let api = start_api(|_| {}).await;
    let mut c = RawClient::open(api.mqtt, aviary_codec::ProtocolVersion::V3_1_1).await;
    c.send_hex(&connect_v311_hex("m", flags, 60)).await;
    c.expect_connack(0x00).await;
    let qos = (first >> 1) & 3;
    let id = if qos > 0 { "0001" } else { "" };
    c.send_hex(&packet_hex(first, &format!("{} {id} 6869", str_hex("m/t"))))
        .await;
    match qos {
        1 => c.expect_hex("40 02 00 01").await,
        2 => {
            c.expect_hex("50 02 00 01").await;
            c.send_hex("62 02 00 01").await;
            c.expect_hex("70 02 00 01").await;
        }
        _ => {}
    }
    c.send_hex("e0 00").await;
    c.expect_closed().await;
    expect_units(&api, "m", expected, expected).await;
    api.shutdown().await;
}

#[tokio::test]
async fn qos_0_counts_1() {
    publish_case(0x02, 0x30, 1 + 1 + 1).await;
}

#[tokio::test]
async fn qos_1_with_a_clean_session_counts_2() {
    publish_case(0x02, 0x32, 1 + 2 + 1).await;
}

#[tokio::test]
async fn qos_1_with_a_persistent_session_counts_5() {
    publish_case(0x00, 0x32, 1 + 5 + 1).await;
}

#[tokio::test]
async fn qos_2_counts_5() {
    publish_case(0x02, 0x34, 1 + 5 + 1).await;
}

#[tokio::test]
async fn a_retained_message_counts_10() {
    publish_case(0x02, 0x31, 1 + 10 + 1).await;
}

#[tokio::test]
async fn deliveries_count_for_the_receiver() {
    let api = start_api(|_| {}).await;
    let mut sub = RawClient::connect_v311(api.mqtt, "sub").await;
    sub.send_hex(&packet_hex(0x82, &format!("0001 {} 01", str_hex("d/#"))))
        .await;
    sub.expect_hex("90 03 00 01 01").await;
    let mut publisher = RawClient::connect_v311(api.mqtt, "pub").await;
    publisher
        .send_hex(&packet_hex(0x32, &format!("{} 0001 6869", str_hex("d/x"))))
        .await;
    publisher.expect_hex("40 02 00 01").await;
    let delivery = sub.read_frame().await;
    assert_eq!(delivery.first, 0x32);
    // The broker's first packet id is 1.
    assert_eq!(delivery.body[2 + 3..2 + 3 + 2], [0x00, 0x01]);
    sub.send_hex("40 02 00 01").await;
    // Publisher: CONNECT 1 + QoS 1 in 2; subscriber: CONNECT 1 + QoS 1 out 2.
    expect_units(&api, "pub", 3, 6).await;
    expect_units(&api, "sub", 3, 6).await;
    api.shutdown().await;
}

#[tokio::test]
async fn a_will_counts_10_in_the_total() {
    let api = start_api(|_| {}).await;
    let mut c = RawClient::open(api.mqtt, aviary_codec::ProtocolVersion::V3_1_1).await;
    // CONNECT with a QoS 0 will on "w" and Clean Session.
    c.send_hex(&packet_hex(
        0x10,
        &format!(
            "0004 4d515454 04 06 003c {} {} {}",
            str_hex("willer"),
            str_hex("w"),
            str_hex("bye")
        ),
    ))
    .await;
    c.expect_connack(0x00).await;
    drop(c); // no DISCONNECT: the will is published
             // The client: CONNECT 1 + end 1; the broker: those and the will's 10.
    expect_units(&api, "willer", 2, 12).await;
    api.shutdown().await;
}

/// Connects a 3.1.1 client with a user name and password.
async fn connect_as(api: &Api, client_id: &str, user: &str, password: &[u8]) -> RawClient {
    let mut c = RawClient::open(api.mqtt, aviary_codec::ProtocolVersion::V3_1_1).await;
    c.send_hex(&common::connect_with_credentials_hex(
        aviary_codec::ProtocolVersion::V3_1_1,
        client_id,
        Some(user),
        Some(password),
    ))
    .await;
    c.expect_connack(0x00).await;
    c
}

#[tokio::test]
async fn usage_per_user_is_exact_and_clients_are_paged() {
    let api = start_api(|_| {}).await;
    for (user, password) in [("alice", "pw-a"), ("bob", "pw-b")] {
        let (status, body) = api
            .call(
                "POST",
                "/api/v1/users",
                Some(serde_json::json!({"username": user, "password": password})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let mut alice = connect_as(&api, "al", "alice", b"pw-a").await;
    alice
        .send_hex(&packet_hex(0x82, &format!("0001 {} 00", str_hex("u/#"))))
        .await;
    alice.expect_hex("90 03 00 01 00").await;
    let mut bob = connect_as(&api, "bo", "bob", b"pw-b").await;
    // Bob: three QoS 0 messages and one QoS 1 (clean session), all delivered to Alice's QoS 0
    // subscription.
    for i in 0..3u8 {
        bob.send_hex(&packet_hex(0x30, &format!("{} {i:02x}", str_hex("u/x"))))
            .await;
    }
    bob.send_hex(&packet_hex(0x32, &format!("{} 0007 09", str_hex("u/x"))))
        .await;
    bob.expect_hex("40 02 00 07").await;
    for _ in 0..4 {
        assert_eq!(alice.read_frame().await.first, 0x30);
    }
    // Bob: CONNECT 1 + 3 × 1 + 2 = 6; Alice: CONNECT 1 + 4 deliveries at QoS 0 = 5.
    let usage = api
        .wait_for("/api/v1/usage", |u: &Value| {
            u["users"]["alice"]["total"] == 5 && u["users"]["bob"]["total"] == 6
        })
        .await;
    assert_eq!(usage["total"]["total"], 11);
    assert_eq!(usage["listeners"]["default"]["total"], 11);
    let (_, one) = api.call("GET", "/api/v1/usage/user/bob", None).await;
    assert_eq!(one["total"], 6);
    let minutes: u64 = one["per_minute"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["units"].as_u64().unwrap())
        .sum();
    assert_eq!(minutes, 6, "every unit is in one minute: {one}");
    // The per-client part is filtered and paged, by client id.
    let (_, page) = api.call("GET", "/api/v1/usage?limit=1", None).await;
    assert_eq!(page["clients_total"], 2);
    assert_eq!(page["clients"].as_object().unwrap().len(), 1);
    assert_eq!(page["clients"]["al"]["total"], 5);
    let (_, page) = api
        .call("GET", "/api/v1/usage?limit=1&offset=1", None)
        .await;
    assert_eq!(page["clients"]["bo"]["total"], 6);
    assert_eq!(page["clients_offset"], 1);
    let (_, page) = api.call("GET", "/api/v1/usage?client_id=b*", None).await;
    assert_eq!(page["clients_total"], 1);
    assert!(page["clients"].get("al").is_none(), "{page}");
    assert_eq!(page["clients_evicted"]["clients"], 0);
    let (status, body) = api.call("GET", "/api/v1/usage?limit=0", None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_field")),
        "{body}"
    );
    // Per-user units are exported as metrics too.
    let text = api.metrics_text().await;
    assert!(
        text.lines()
            .any(|l| l == "aviary_usage_units_by_user_total{user=\"bob\"} 6"),
        "{text}"
    );
    api.shutdown().await;
}

/// More active clients than many slices of one attribution round: every client's units
/// arrive, exactly, and the slices, run back to back with a yield between them, leave
/// room for the traffic that flows meanwhile.
#[tokio::test]
async fn a_round_of_many_slices_attributes_every_client() {
    const CLIENTS: usize = 200;
    let api = start_api(|_| {}).await;
    let mut sub = RawClient::connect_v311(api.mqtt, "sub").await;
    sub.send_hex(&packet_hex(0x82, &format!("0001 {} 00", str_hex("m/#"))))
        .await;
    sub.expect_hex("90 03 00 01 00").await;
    let mut clients = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let mut c = RawClient::connect_v311(api.mqtt, &format!("c{i}")).await;
        c.send_hex(&packet_hex(0x30, &format!("{} 01", str_hex("m/t"))))
            .await;
        clients.push(c);
    }
    for _ in 0..CLIENTS {
        assert_eq!(sub.read_frame().await.first, 0x30);
    }
    // Each client: CONNECT 1 + one QoS 0 message 1; the subscriber: CONNECT 1 + SUBSCRIBE
    // is free + one delivery per client.
    let total = (CLIENTS * 2 + 1 + CLIENTS) as u64;
    let usage = api
        .wait_for(&format!("/api/v1/usage?limit={}", CLIENTS + 1), |u| {
            u["total"]["total"] == total
                && u["clients"].as_object().is_some_and(|c| {
                    c.len() == CLIENTS + 1
                        && (0..CLIENTS).all(|i| c[&format!("c{i}")]["total"] == 2)
                })
        })
        .await;
    assert_eq!(usage["clients"]["sub"]["total"], (1 + CLIENTS) as u64);
    // Traffic during the next rounds still flows: a message from each client is
    // delivered and counted again.
    for c in &mut clients {
        c.send_hex(&packet_hex(0x30, &format!("{} 02", str_hex("m/t"))))
            .await;
    }
    for _ in 0..CLIENTS {
        assert_eq!(sub.read_frame().await.first, 0x30);
    }
    api.wait_for("/api/v1/usage", |u| {
        u["total"]["total"] == total + 2 * CLIENTS as u64
    })
    .await;
    api.shutdown().await;
}
