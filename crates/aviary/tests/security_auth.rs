//! End to end: authentication and authorization over real TCP with literal wire bytes.
//! Users (argon2id), device access tokens, anonymous access, policies; every refusal with
//! its exact code, and the other clients unaffected.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aviary::auth::policies::PolicyDoc;
use aviary::auth::{DeviceSpec, Secret};
use aviary_codec::ProtocolVersion;
use common::*;

async fn refused(
    addr: SocketAddr,
    version: ProtocolVersion,
    client_id: &str,
    user: Option<&str>,
    password: Option<&[u8]>,
    code: u8,
) {
    let (mut c, got) = connect_code(addr, version, client_id, user, password).await;
    assert_eq!(got, code, "CONNACK code for {client_id}");
    c.expect_closed().await;
}

fn with_user(config: &mut aviary::Config) {
    config
        .security
        .users
        .push(("alice".into(), Secret::Password("s3cret".into())));
}

#[tokio::test]
async fn users_authenticate_and_refusals_carry_exact_codes() {
    let (server, _dir) = start_server(with_user).await;
    let addr = server.mqtt_addr();
    let v3 = ProtocolVersion::V3_1_1;
    let v5 = ProtocolVersion::V5;
    let (mut alice, code) = connect_code(addr, v3, "a1", Some("alice"), Some(b"s3cret")).await;
    assert_eq!(code, 0);
    let (mut alice5, code) = connect_code(addr, v5, "a2", Some("alice"), Some(b"s3cret")).await;
    assert_eq!(code, 0);

    // Wrong password: 3.x 4, 5.0 0x86. Unknown user: the same (no user enumeration).
    refused(addr, v3, "x1", Some("alice"), Some(b"wrong"), 0x04).await;
    refused(addr, v5, "x2", Some("alice"), Some(b"wrong"), 0x86).await;
    refused(addr, v5, "x3", Some("mallory"), Some(b"pw"), 0x86).await;
    // No credentials once a user exists (anonymous "auto" is off): 3.x 5, 5.0 0x87.
    refused(addr, v3, "x4", None, None, 0x05).await;
    refused(addr, v5, "x5", None, None, 0x87).await;

    // The accepted clients were not affected.
    alice.ping().await;
    alice5.ping().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn disabled_user_is_not_authorized_and_anonymous_can_be_switched_on() {
    let (server, _dir) = start_server(|c| {
        with_user(c);
        c.security.auth.anonymous = aviary::auth::Anonymous::Allow;
    })
    .await;
    let addr = server.mqtt_addr();
    let (mut anon, code) = connect_code(addr, ProtocolVersion::V3_1_1, "anon", None, None).await;
    assert_eq!(code, 0, "anonymous access switched on");
    server
        .security()
        .auth
        .users
        .update("alice", None, Some(false))
        .unwrap();
    refused(
        addr,
        ProtocolVersion::V5,
        "a",
        Some("alice"),
        Some(b"s3cret"),
        0x87,
    )
    .await;
    refused(
        addr,
        ProtocolVersion::V3_1_1,
        "a",
        Some("alice"),
        Some(b"s3cret"),
        0x05,
    )
    .await;
    anon.ping().await;
    server.shutdown().await.unwrap();
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn device_tokens_signed_with_either_key_are_accepted_and_add_properties() {
    let (server, _dir) = start_server(|_| {}).await;
    let addr = server.mqtt_addr();
    let devices = &server.security().auth.devices;
    let device = devices
        .create(
            "car-1",
            DeviceSpec {
                properties: Some(vec![("fleet".into(), "north".into())]),
                ..DeviceSpec::default()
            },
        )
        .unwrap();
    // An anonymous watcher is refused now (a device exists), so watch as a second device.
    let watcher = devices.create("watch", DeviceSpec::default()).unwrap();
    let expiry = unix_now() + 3600;
    let token = aviary::auth::devices::make_token(&watcher.primary_key, "watch", expiry).unwrap();
    let (mut watch, code) = connect_code(
        addr,
        ProtocolVersion::V5,
        "watch",
        None,
        Some(token.as_bytes()),
    )
    .await;
    assert_eq!(code, 0);
    watch.subscribe(1, "cars/#", 0).await;

    let secondary =
        aviary::auth::devices::make_token(&device.secondary_key, "car-1", expiry).unwrap();
    let (mut car, code) = connect_code(
        addr,
        ProtocolVersion::V3_1_1,
        "car-1",
        Some("car-1"),
        Some(secondary.as_bytes()),
    )
    .await;
    assert_eq!(code, 0);
    car.publish("cars/1", 0, 0, b"hi").await;
    let delivered = watch.read_packet().await;
    let aviary_codec::Packet::Publish(p) = delivered else {
        panic!("{delivered:?}");
    };
    assert_eq!(
        p.properties.user_properties,
        vec![("fleet".to_owned(), "north".to_owned())]
    );

    // Expired, malformed, signed for another client id, wrong key: 0x86 / 4.
    let expired =
        aviary::auth::devices::make_token(&device.primary_key, "car-1", unix_now() - 1).unwrap();
    refused(
        addr,
        ProtocolVersion::V5,
        "car-1",
        None,
        Some(expired.as_bytes()),
        0x86,
    )
    .await;
    refused(
        addr,
        ProtocolVersion::V5,
        "car-1",
        None,
        Some(b"v1.nonsense"),
        0x86,
    )
    .await;
    let other = aviary::auth::devices::make_token(&device.primary_key, "car-2", expiry).unwrap();
    refused(
        addr,
        ProtocolVersion::V3_1_1,
        "car-1",
        Some("u"),
        Some(other.as_bytes()),
        0x04,
    )
    .await;
    let foreign = aviary::auth::devices::make_token(&watcher.primary_key, "car-1", expiry).unwrap();
    refused(
        addr,
        ProtocolVersion::V5,
        "car-1",
        None,
        Some(foreign.as_bytes()),
        0x86,
    )
    .await;
    // Disabled: 0x87.
    devices
        .update(
            "car-1",
            DeviceSpec {
                enabled: Some(false),
                ..DeviceSpec::default()
            },
        )
        .unwrap();
    let fresh = aviary::auth::devices::make_token(&device.primary_key, "car-1", expiry).unwrap();
    refused(
        addr,
        ProtocolVersion::V5,
        "car-1",
        None,
        Some(fresh.as_bytes()),
        0x87,
    )
    .await;
    watch.ping().await;
    server.shutdown().await.unwrap();
}

fn doc(id: &str, priority: i32, effect: &str, actions: &[&str], resources: &[&str]) -> PolicyDoc {
    PolicyDoc {
        id: id.into(),
        priority,
        effect: effect.into(),
        actions: actions.iter().map(|s| s.to_string()).collect(),
        resources: resources.iter().map(|s| s.to_string()).collect(),
        client_ids: vec![],
        usernames: vec![],
        source_cidrs: vec![],
        qos: vec![],
        retain: None,
    }
}

#[tokio::test]
async fn policies_from_config_and_api_apply_to_open_connections() {
    let (server, _dir) = start_server(|c| {
        c.security.policies = vec![
            doc("connect", 0, "allow", &["connect"], &[]),
            doc(
                "own",
                1,
                "allow",
                &["publish", "subscribe"],
                &["devices/${clientid}/#"],
            ),
        ];
    })
    .await;
    let addr = server.mqtt_addr();
    let mut d1 = RawClient::connect_v5(addr, "d1").await;
    let mut d2 = RawClient::connect_v311(addr, "d2").await;
    d1.subscribe(1, "devices/d1/#", 1).await;

    // 5.0: SUBACK 0x87 for another device's topics; 3.1.1: 0x80.
    d1.send_hex(&packet_hex(
        0x82,
        &format!("00 02 00 {} 00", str_hex("devices/d2/#")),
    ))
    .await;
    let suback = d1.read_frame().await;
    assert_eq!(
        (suback.first, suback.body.last().copied()),
        (0x90, Some(0x87))
    );
    d2.send_hex(&packet_hex(
        0x82,
        &format!("00 03 {} 00", str_hex("devices/d1/#")),
    ))
    .await;
    d2.expect_hex("90 03 00 03 80").await;

    // 5.0 QoS 1 publish to a foreign topic: PUBACK 0x87; 3.1.1: PUBACK 0, not delivered.
    d1.publish("devices/d2/x", 1, 7, b"no").await;
    let ack = d1.read_frame().await;
    assert_eq!(
        (ack.first, ack.body[2]),
        (0x40, 0x87),
        "{}",
        to_hex(&ack.raw())
    );
    d2.publish("devices/d1/x", 1, 8, b"no").await;
    d2.expect_hex("40 02 00 08").await;
    d1.expect_silence().await;

    // A policy added at runtime lets d2 write to d1 on the open connection.
    server
        .security()
        .policies
        .create(doc(
            "d2-to-d1",
            2,
            "allow",
            &["publish"],
            &["devices/d1/inbox"],
        ))
        .unwrap();
    d2.publish("devices/d1/inbox", 0, 0, b"yes").await;
    let delivered = d1.read_packet().await;
    assert!(
        matches!(delivered, aviary_codec::Packet::Publish(ref p) if p.topic.as_str() == "devices/d1/inbox"),
        "{delivered:?}"
    );
    // And removing the connect policy refuses new connections with 0x87 / 5.
    server.security().policies.delete("connect").unwrap();
    refused(addr, ProtocolVersion::V5, "d3", None, None, 0x87).await;
    refused(addr, ProtocolVersion::V3_1_1, "d3", None, None, 0x05).await;
    d1.ping().await;
    d2.ping().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn repeated_failures_are_still_answered_with_the_same_code() {
    // The slow-down delays answers (0.25 s from the third failure); the code stays exact.
    let (server, _dir) = start_server(with_user).await;
    let addr = server.mqtt_addr();
    for _ in 0..4 {
        refused(
            addr,
            ProtocolVersion::V5,
            "brute",
            Some("alice"),
            Some(b"guess"),
            0x86,
        )
        .await;
    }
    let started = std::time::Instant::now();
    let (_ok, code) = tokio::time::timeout(
        Duration::from_secs(10),
        connect_code(
            addr,
            ProtocolVersion::V5,
            "other",
            Some("alice"),
            Some(b"s3cret"),
        ),
    )
    .await
    .unwrap();
    // Same address, so slowed down too (4 failures: 0.5 s; a loose lower bound), but
    // accepted.
    assert_eq!(code, 0);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "the answer was not delayed: {:?}",
        started.elapsed()
    );
    server.shutdown().await.unwrap();
}

/// A client may send more packets right behind its CONNECT, in the same write: on a
/// listener with authentication they wait for the outcome and are then served in order,
/// and behind a refused CONNECT none of them is.
#[tokio::test]
async fn packets_behind_the_connect_in_the_same_write_wait_for_its_authentication() {
    let (server, _dir) = start_server(with_user).await;
    let addr = server.mqtt_addr();
    let mut alice = connect_with_packets_behind(addr, "pipe1", b"s3cret", "pipe/a").await;
    alice.expect_connack(0).await;
    let suback = alice.read_frame().await;
    assert_eq!((suback.first, suback.packet_id()), (0x90, 1));
    let delivery = alice.read_frame().await;
    assert_eq!(delivery.first, 0x30);
    assert_eq!(
        to_hex(&delivery.body),
        to_hex(&hex(&format!("{} {}", str_hex("pipe/a"), to_hex(b"hi"))))
    );
    alice.expect_hex("d0 00").await;

    // Refused: the SUBSCRIBE and PUBLISH behind it are never served.
    let v3 = ProtocolVersion::V3_1_1;
    let (mut watcher, code) = connect_code(addr, v3, "pipe2", Some("alice"), Some(b"s3cret")).await;
    assert_eq!(code, 0);
    watcher.subscribe(1, "pipe/b", 0).await;
    let mut mallory = connect_with_packets_behind(addr, "pipe3", b"wrong", "pipe/b").await;
    mallory.expect_connack(0x04).await;
    mallory.expect_closed().await;
    watcher.expect_silence().await;
    server.shutdown().await.unwrap();
}

/// Sends, in one write, alice's 3.1.1 CONNECT with `password`, then SUBSCRIBE (packet id
/// 1) to `topic`, a QoS 0 PUBLISH of "hi" to it, and PINGREQ.
async fn connect_with_packets_behind(
    addr: SocketAddr,
    client_id: &str,
    password: &[u8],
    topic: &str,
) -> RawClient {
    let v3 = ProtocolVersion::V3_1_1;
    let mut c = RawClient::open(addr, v3).await;
    c.send_hex(&format!(
        "{} {} {} c0 00",
        connect_with_credentials_hex(v3, client_id, Some("alice"), Some(password)),
        packet_hex(0x82, &format!("00 01 {} 00", str_hex(topic))),
        packet_hex(0x30, &format!("{} {}", str_hex(topic), to_hex(b"hi")))
    ))
    .await;
    c
}
