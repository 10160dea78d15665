//! The broker driven with literal wire bytes through the real codec, as the shell drives
//! it: each test feeds hex and asserts the exact bytes that come back.

use std::time::Duration;

use aviary_codec::{Packet, ReasonCode};

use super::*;

/// CONNECT 3.1.1, clean session, keep alive 60, client id "c1".
const CONNECT_311_C1: &str = "10 0e 00 04 4d 51 54 54 04 02 00 3c 00 02 63 31";
/// CONNECT 3.1.1, clean session, keep alive 60, client id "c2".
const CONNECT_311_C2: &str = "10 0e 00 04 4d 51 54 54 04 02 00 3c 00 02 63 32";
/// CONNECT 5.0, clean start, keep alive 60, no properties, client id "c1".
const CONNECT_5_C1: &str = "10 0f 00 04 4d 51 54 54 05 02 00 3c 00 00 02 63 31";
/// CONNACK 3.x, accepted.
const CONNACK_OK: &str = "20 02 00 00";

/// The hex of an ASCII text (for reason strings).
fn text(s: &str) -> String {
    hex(s.as_bytes())
}

#[test]
fn mqtt_3_1_1_connect_gets_connack_0() {
    let mut h = Harness::new();
    h.open(1);
    h.feed(1, CONNECT_311_C1);
    assert_eq!(h.wire_out(), out(&[(1, CONNACK_OK)]));
}

#[test]
fn mqtt_3_1_mqisdp_connect_gets_connack_0() {
    let mut h = Harness::new();
    h.open(1);
    h.feed(1, "10 10 00 06 4d 51 49 73 64 70 03 02 00 3c 00 02 63 31");
    assert_eq!(h.wire_out(), out(&[(1, CONNACK_OK)]));
}

#[test]
fn mqtt_3_1_2_2_unknown_protocol_level_gets_connack_1() {
    let mut h = Harness::new();
    h.open(1);
    h.feed(1, "10 0e 00 04 4d 51 54 54 07 02 00 3c 00 02 63 31");
    assert_eq!(h.wire_out(), out(&[(1, "20 02 00 01"), (1, "close")]));
}

#[test]
fn mqtt_3_1_3_8_empty_id_without_clean_session_gets_connack_2() {
    let mut h = Harness::new();
    h.open(1);
    h.feed(1, "10 0c 00 04 4d 51 54 54 04 00 00 3c 00 00");
    assert_eq!(h.wire_out(), out(&[(1, "20 02 00 02"), (1, "close")]));
}

#[test]
fn v5_connect_gets_connack_with_the_brokers_properties() {
    let mut h = Harness::new();
    h.open(1);
    h.feed(1, CONNECT_5_C1);
    let sent = h.drain();
    assert_eq!(
        sent,
        vec![packet(
            1,
            Packet::ConnAck(Box::new(aviary_codec::ConnAck {
                session_present: false,
                reason_code: ReasonCode::SUCCESS,
                properties: v5_connack_properties(),
            }))
        )]
    );
    // And it encodes and decodes back to the same packet.
    let Transmit::Packet { packet: p, .. } = &sent[0] else {
        unreachable!()
    };
    let mut buf = BytesMut::new();
    aviary_codec::encode(p, V5, &mut buf).unwrap();
    let decoded = aviary_codec::decode(&mut buf, V5, u32::MAX)
        .unwrap()
        .unwrap();
    assert_eq!(&decoded, p);
}

#[test]
fn mqtt_3_1_0_1_bytes_before_connect_close_the_connection() {
    let mut h = Harness::new();
    h.open(1);
    h.feed(1, "c0 00");
    assert_eq!(h.wire_out(), out(&[(1, "close")]));
}

#[test]
fn pingreq_gets_pingresp() {
    let mut h = Harness::new();
    h.open(1);
    h.feed(1, CONNECT_311_C1);
    h.feed(1, "c0 00");
    assert_eq!(h.wire_out(), out(&[(1, CONNACK_OK), (1, "d0 00")]));
}

#[test]
fn connect_and_ping_in_one_read_are_both_handled() {
    let mut h = Harness::new();
    h.open(1);
    h.feed(1, &format!("{CONNECT_311_C1} c0 00"));
    assert_eq!(h.wire_out(), out(&[(1, CONNACK_OK), (1, "d0 00")]));
}

/// Subscriber c1 on conn 1 ("a" at QoS 2), publisher c2 on conn 2.
fn wired_pair() -> Harness {
    let mut h = Harness::new();
    h.open(1);
    h.feed(1, CONNECT_311_C1);
    h.feed(1, "82 06 00 01 00 01 61 02");
    assert_eq!(h.wire_out(), out(&[(1, CONNACK_OK), (1, "90 03 00 01 02")]));
    h.open(2);
    h.feed(2, CONNECT_311_C2);
    assert_eq!(h.wire_out(), out(&[(2, CONNACK_OK)]));
    h
}

#[test]
fn qos0_publish_bytes_are_forwarded() {
    let mut h = wired_pair();
    h.feed(2, "30 04 00 01 61 78");
    assert_eq!(h.wire_out(), out(&[(1, "30 04 00 01 61 78")]));
}

#[test]
fn qos1_publish_gets_puback_and_is_forwarded_with_our_packet_id() {
    let mut h = wired_pair();
    h.feed(2, "32 06 00 01 61 00 07 78");
    assert_eq!(
        h.wire_out(),
        out(&[(2, "40 02 00 07"), (1, "32 06 00 01 61 00 01 78")])
    );
    h.feed(1, "40 02 00 01");
    assert_eq!(h.wire_out(), out(&[]));
}

#[test]
fn qos2_exchange_in_both_directions() {
    let mut h = wired_pair();
    h.feed(2, "34 06 00 01 61 00 07 78");
    assert_eq!(
        h.wire_out(),
        out(&[(2, "50 02 00 07"), (1, "34 06 00 01 61 00 01 78")])
    );
    // A duplicate before PUBREL is acknowledged, not forwarded [MQTT-4.3.3].
    h.feed(2, "3c 06 00 01 61 00 07 78");
    assert_eq!(h.wire_out(), out(&[(2, "50 02 00 07")]));
    h.feed(2, "62 02 00 07");
    assert_eq!(h.wire_out(), out(&[(2, "70 02 00 07")]));
    h.feed(1, "50 02 00 01");
    assert_eq!(h.wire_out(), out(&[(1, "62 02 00 01")]));
    h.feed(1, "70 02 00 01");
    assert_eq!(h.wire_out(), out(&[]));
}

#[test]
fn mqtt_3_3_1_9_retained_publish_is_sent_on_subscribe_with_the_retain_bit() {
    let mut h = Harness::new();
    h.open(2);
    h.feed(2, CONNECT_311_C2);
    h.feed(2, "31 04 00 01 61 78");
    h.open(1);
    h.feed(1, CONNECT_311_C1);
    h.feed(1, "82 06 00 01 00 01 61 00");
    assert_eq!(
        h.wire_out(),
        out(&[
            (2, CONNACK_OK),
            (1, CONNACK_OK),
            (1, "90 03 00 01 00"),
            (1, "31 04 00 01 61 78")
        ])
    );
    // An empty retained payload deletes it [MQTT-3.3.1-6]; the live copy has RETAIN=0.
    h.feed(2, "31 03 00 01 61");
    assert_eq!(h.wire_out(), out(&[(1, "30 03 00 01 61")]));
    h.feed(1, "82 06 00 02 00 01 61 00");
    assert_eq!(h.wire_out(), out(&[(1, "90 03 00 02 00")]));
}

#[test]
fn disconnect_bytes_close_without_the_will() {
    let mut h = Harness::new();
    h.open(9);
    h.feed(9, "10 0e 00 04 4d 51 54 54 04 02 00 3c 00 02 77 77");
    h.feed(9, "82 06 00 01 00 01 77 00");
    h.wire_out();
    // CONNECT with will "w" = "bye", QoS 0.
    h.open(1);
    h.feed(
        1,
        "10 16 00 04 4d 51 54 54 04 06 00 3c 00 02 63 31 00 01 77 00 03 62 79 65",
    );
    h.feed(1, "e0 00");
    assert_eq!(h.wire_out(), out(&[(1, CONNACK_OK), (1, "close")]));
    // The same client losing its transport instead publishes the will.
    h.open(2);
    h.feed(
        2,
        "10 16 00 04 4d 51 54 54 04 06 00 3c 00 02 63 31 00 01 77 00 03 62 79 65",
    );
    h.close(2);
    assert_eq!(
        h.wire_out(),
        out(&[(2, CONNACK_OK), (9, "30 06 00 01 77 62 79 65")])
    );
}

#[test]
fn malformed_bytes_close_a_3_1_1_connection() {
    let mut h = Harness::new();
    h.open(1);
    h.feed(1, CONNECT_311_C1);
    // QoS 3 is malformed [MQTT-3.3.1-4].
    h.feed(1, "36 06 00 01 61 00 07 78");
    assert_eq!(h.wire_out(), out(&[(1, CONNACK_OK), (1, "close")]));
}

#[test]
fn malformed_bytes_get_disconnect_0x81_in_5_0() {
    let mut h = Harness::new();
    h.open(1);
    h.feed(1, CONNECT_5_C1);
    h.drain();
    h.feed(1, "36 07 00 01 61 00 07 00 78");
    let sent = h.wire_out();
    // DISCONNECT 0x81 (with the decoder's explanation as reason string), then close.
    let bytes = unhex(&sent[0].1);
    assert_eq!((sent[0].0, bytes[0], bytes[2]), (1, 0xe0, 0x81), "{sent:?}");
    assert_eq!(sent[1], (1, "close".to_owned()));
}

#[test]
fn mqtt_3_1_2_24_keep_alive_expiry_closes_the_connection() {
    let mut h = Harness::new();
    h.open(1);
    // Keep alive 2 s.
    h.feed(1, "10 0e 00 04 4d 51 54 54 04 02 00 02 00 02 63 31");
    h.advance(Duration::from_millis(2999));
    assert_eq!(h.wire_out(), out(&[(1, CONNACK_OK)]));
    h.advance(Duration::from_millis(1));
    assert_eq!(h.wire_out(), out(&[(1, "close")]));
}

#[test]
fn v5_topic_alias_bytes_are_resolved() {
    let mut h = Harness::new();
    h.open(1);
    h.feed(1, CONNECT_311_C1);
    h.feed(1, "82 06 00 01 00 01 61 00");
    h.wire_out();
    h.open(2);
    h.feed(2, "10 0f 00 04 4d 51 54 54 05 02 00 3c 00 00 02 63 32");
    h.drain();
    // PUBLISH "a" with alias 1, then an empty topic with alias 1.
    h.feed(2, "30 08 00 01 61 03 23 00 01 78");
    h.feed(2, "30 07 00 00 03 23 00 01 79");
    assert_eq!(
        h.wire_out(),
        out(&[(1, "30 04 00 01 61 78"), (1, "30 04 00 01 61 79")])
    );
    // Alias 65 is above our maximum of 64 [MQTT-3.3.2-9].
    h.feed(2, "30 08 00 01 61 03 23 00 41 78");
    assert_eq!(
        h.wire_out(),
        out(&[
            (
                2,
                &format!(
                    "e0 22 94 20 1f 00 1d {}",
                    text("topic alias above the maximum")
                )
            ),
            (2, "close")
        ])
    );
}

#[test]
fn v5_pubrel_for_an_unknown_id_gets_pubcomp_0x92() {
    let mut h = Harness::new();
    h.open(1);
    h.feed(1, CONNECT_5_C1);
    h.drain();
    h.feed(1, "62 02 00 05");
    assert_eq!(
        h.wire_out(),
        out(&[(
            1,
            &format!(
                "70 22 00 05 92 1e 1f 00 1b {}",
                text("packet identifier not found")
            )
        )])
    );
}

#[test]
fn v5_unsuback_bytes_carry_a_code_per_filter() {
    let mut h = Harness::new();
    h.open(1);
    h.feed(1, CONNECT_5_C1);
    h.drain();
    // SUBSCRIBE "a" QoS 1, then UNSUBSCRIBE "a", "b".
    h.feed(1, "82 07 00 01 00 00 01 61 01");
    assert_eq!(h.wire_out(), out(&[(1, "90 04 00 01 00 01")]));
    h.feed(1, "a2 09 00 02 00 00 01 61 00 01 62");
    assert_eq!(h.wire_out(), out(&[(1, "b0 05 00 02 00 00 11")]));
}

#[test]
fn v5_disconnect_0x04_publishes_the_will() {
    let mut h = Harness::new();
    h.open(9);
    h.feed(9, CONNECT_311_C2);
    h.feed(9, "82 06 00 01 00 01 77 00");
    h.wire_out();
    // 5.0 CONNECT with will "w" = "bye" (no will properties).
    h.open(1);
    h.feed(
        1,
        "10 18 00 04 4d 51 54 54 05 06 00 3c 00 00 02 63 31 00 00 01 77 00 03 62 79 65",
    );
    h.drain();
    h.feed(1, "e0 01 04");
    assert_eq!(
        h.wire_out(),
        out(&[(1, "close"), (9, "30 06 00 01 77 62 79 65")])
    );
}

#[test]
fn second_connect_bytes_close_a_3_1_1_connection() {
    let mut h = Harness::new();
    h.open(1);
    h.feed(1, CONNECT_311_C1);
    h.feed(1, CONNECT_311_C1);
    assert_eq!(h.wire_out(), out(&[(1, CONNACK_OK), (1, "close")]));
    assert_eq!(h.broker.stats().connections, 0);
}

#[test]
fn v5_authentication_method_gets_connack_0x8c_bytes() {
    let mut h = Harness::new();
    h.open(1);
    h.feed(
        1,
        "10 13 00 04 4d 51 54 54 05 02 00 3c 04 15 00 01 78 00 02 63 31",
    );
    assert_eq!(
        h.wire_out(),
        out(&[
            (
                1,
                &format!(
                    "20 2e 00 8c 2b 1f 00 28 {}",
                    text("enhanced authentication is not supported")
                )
            ),
            (1, "close")
        ])
    );
}

#[test]
fn max_connections_bytes_in_3_1_1_and_5_0() {
    let mut h = Harness::with_config(BrokerConfig {
        max_connections: 1,
        ..BrokerConfig::default()
    });
    h.open(1);
    h.feed(1, CONNECT_311_C1);
    h.open(2);
    h.feed(2, CONNECT_311_C2);
    h.open(3);
    h.feed(3, "10 0f 00 04 4d 51 54 54 05 02 00 3c 00 00 02 63 33");
    assert_eq!(
        h.wire_out(),
        out(&[
            (1, CONNACK_OK),
            (2, "20 02 00 03"),
            (2, "close"),
            (
                3,
                &format!(
                    "20 1e 00 97 1b 1f 00 18 {}",
                    text("connection limit reached")
                )
            ),
            (3, "close"),
        ])
    );
}

#[test]
fn v5_keep_alive_timeout_sends_disconnect_0x8d_bytes() {
    let mut h = Harness::new();
    h.open(1);
    h.feed(1, "10 0f 00 04 4d 51 54 54 05 02 00 01 00 00 02 63 31");
    h.drain();
    h.advance(Duration::from_millis(1500));
    assert_eq!(
        h.wire_out(),
        out(&[
            (
                1,
                &format!("e0 17 8d 15 1f 00 12 {}", text("keep alive timeout"))
            ),
            (1, "close")
        ])
    );
}

#[test]
fn v5_takeover_sends_disconnect_0x8e_bytes() {
    let mut h = Harness::new();
    h.open(1);
    h.feed(1, CONNECT_5_C1);
    h.drain();
    h.open(2);
    h.feed(2, CONNECT_5_C1);
    let out_bytes = h.wire_out();
    assert_eq!(
        out_bytes[..2],
        out(&[
            (
                1,
                &format!("e0 17 8e 15 1f 00 12 {}", text("session taken over"))
            ),
            (1, "close")
        ])[..]
    );
    assert_eq!(out_bytes[2].0, 2);
}

#[test]
fn v5_shutdown_sends_disconnect_0x8b_bytes() {
    let mut h = Harness::new();
    h.open(1);
    h.feed(1, CONNECT_5_C1);
    h.open(2);
    h.feed(2, CONNECT_311_C2);
    h.drain();
    h.broker.handle_shutdown(h.now);
    assert_eq!(
        h.wire_out(),
        out(&[
            (
                1,
                &format!("e0 19 8b 17 1f 00 14 {}", text("server shutting down"))
            ),
            (1, "close"),
            (2, "close")
        ])
    );
}

#[test]
fn v5_subscription_identifier_bytes_come_back_on_delivery() {
    let mut h = Harness::new();
    h.open(1);
    h.feed(1, CONNECT_5_C1);
    h.drain();
    // SUBSCRIBE id 1, Subscription Identifier 5, "a" QoS 0.
    h.feed(1, "82 09 00 01 02 0b 05 00 01 61 00");
    assert_eq!(h.wire_out(), out(&[(1, "90 04 00 01 00 00")]));
    h.open(2);
    h.feed(2, CONNECT_311_C2);
    h.feed(2, "30 04 00 01 61 78");
    assert_eq!(
        h.wire_out(),
        out(&[(2, CONNACK_OK), (1, "30 07 00 01 61 02 0b 05 78")])
    );
}

#[test]
fn v5_receive_maximum_exceeded_sends_disconnect_0x93_bytes() {
    let mut h = Harness::with_config(BrokerConfig {
        receive_maximum: 1,
        ..BrokerConfig::default()
    });
    h.open(1);
    h.feed(1, CONNECT_5_C1);
    h.drain();
    // Two QoS 2 PUBLISHes without PUBREL; no subscriber, so PUBREC says 0x10.
    h.feed(1, "34 07 00 01 61 00 01 00 78");
    assert_eq!(h.wire_out(), out(&[(1, "50 03 00 01 10")]));
    h.feed(1, "34 07 00 01 61 00 02 00 78");
    assert_eq!(
        h.wire_out(),
        out(&[
            (
                1,
                &format!("e0 1d 93 1b 1f 00 18 {}", text("receive maximum exceeded"))
            ),
            (1, "close")
        ])
    );
}

#[test]
fn subscription_limit_bytes_in_3_1_1_and_5_0() {
    let mut h = Harness::with_config(BrokerConfig {
        max_subscriptions_per_session: 1,
        ..BrokerConfig::default()
    });
    h.open(1);
    h.feed(1, CONNECT_311_C1);
    h.feed(1, "82 0a 00 01 00 01 61 00 00 01 62 01");
    assert_eq!(
        h.wire_out(),
        out(&[(1, CONNACK_OK), (1, "90 04 00 01 00 80")])
    );
    h.open(2);
    h.feed(2, "10 0f 00 04 4d 51 54 54 05 02 00 3c 00 00 02 63 32");
    h.drain();
    h.feed(2, "82 0b 00 01 00 00 01 61 00 00 01 62 01");
    assert_eq!(
        h.wire_out(),
        out(&[(
            2,
            &format!(
                "90 31 00 01 2c 1f 00 29 {} 00 97",
                text("subscription limit of the session reached")
            )
        )])
    );
}

#[test]
fn mqtt_3_8_3_4_v5_no_local_on_shared_subscription_bytes() {
    let mut h = Harness::new();
    h.open(1);
    h.feed(1, CONNECT_5_C1);
    h.drain();
    // "$share/g/a" with No Local (option bit 2).
    h.feed(1, "82 10 00 01 00 00 0a 24 73 68 61 72 65 2f 67 2f 61 04");
    assert_eq!(
        h.wire_out(),
        out(&[
            (
                1,
                &format!(
                    "e0 26 82 24 1f 00 21 {}",
                    text("no local on a shared subscription")
                )
            ),
            (1, "close")
        ])
    );
}

#[test]
fn shared_subscription_bytes_deliver_to_one_member() {
    let mut h = Harness::new();
    for (conn, connect) in [(1, CONNECT_311_C1), (2, CONNECT_311_C2)] {
        h.open(conn);
        h.feed(conn, connect);
        // "$share/g/a" QoS 0.
        h.feed(conn, "82 0f 00 01 00 0a 24 73 68 61 72 65 2f 67 2f 61 00");
    }
    h.wire_out();
    h.open(3);
    h.feed(3, "10 0e 00 04 4d 51 54 54 04 02 00 3c 00 02 63 33");
    h.feed(3, "30 04 00 01 61 78");
    let sent = h.wire_out();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0], (3, CONNACK_OK.to_owned()));
    assert!(sent[1].0 == 1 || sent[1].0 == 2);
    assert_eq!(sent[1].1, "30 04 00 01 61 78");
}
