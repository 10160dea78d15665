//! Wire tests with literal hex bytes: one `check` per packet form and version, then one
//! negative test per spec rule, named after the rule.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};

use super::*;
use crate::ProtocolVersion::{V3_1, V3_1_1, V5};

const MAX: u32 = 1 << 20;

pub(crate) fn bytes(hex: &str) -> BytesMut {
    let hex: String = hex.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(hex.len().is_multiple_of(2), "odd hex {hex}");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect::<Vec<u8>>()
        .as_slice()
        .into()
}

/// Decodes `hex` to exactly `expected` (consuming every byte), and every strict prefix to
/// "need more bytes".
pub(crate) fn check_decode(v: ProtocolVersion, hex: &str, expected: Packet) {
    let wire = bytes(hex);
    for cut in 0..wire.len() {
        let mut partial = BytesMut::from(&wire[..cut]);
        assert_eq!(
            decode(&mut partial, v, MAX),
            Ok(None),
            "prefix {cut} of {hex}"
        );
        assert_eq!(&partial[..], &wire[..cut]);
    }
    let mut buf = wire;
    assert_eq!(decode(&mut buf, v, MAX), Ok(Some(expected)), "{hex}");
    assert!(buf.is_empty(), "bytes left after {hex}");
}

/// [`check_decode`], and `expected` encodes back to exactly `hex` (the canonical form).
pub(crate) fn check(v: ProtocolVersion, hex: &str, expected: Packet) {
    check_decode(v, hex, expected.clone());
    let mut out = BytesMut::new();
    encode(&expected, v, &mut out).unwrap();
    assert_eq!(out, bytes(hex), "encoding of {expected:?}");
    assert_eq!(encoded_len(&expected, v), out.len());
}

/// Decoding `hex` fails with `expected`'s variant (messages are not compared, except for the
/// variants that carry numbers).
pub(crate) fn check_err(v: ProtocolVersion, hex: &str, expected: DecodeError) {
    let got = decode(&mut bytes(hex), v, MAX);
    match (&got, &expected) {
        (Err(g), e) if std::mem::discriminant(g) == std::mem::discriminant(e) => {
            if matches!(
                e,
                DecodeError::PacketTooLarge { .. } | DecodeError::UnsupportedProtocolVersion { .. }
            ) {
                assert_eq!(g, e, "{hex}");
            }
        }
        _ => panic!("{hex}: expected {expected:?}, got {got:?}"),
    }
}

fn malformed() -> DecodeError {
    DecodeError::Malformed("")
}

fn protocol() -> DecodeError {
    DecodeError::Protocol("")
}

fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

fn topic(s: &str) -> TopicName {
    TopicName::new(s).unwrap()
}

fn filter(s: &str) -> TopicFilter {
    TopicFilter::new(s).unwrap()
}

fn ack(n: u16, code: ReasonCode) -> Ack {
    Ack {
        packet_id: pid(n),
        reason_code: code,
        properties: AckProperties::default(),
    }
}

fn connect(protocol: ProtocolVersion) -> Connect {
    Connect {
        protocol,
        clean_start: true,
        keep_alive: 60,
        client_id: "abc".into(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

fn publish(qos: QoS, id: Option<u16>) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic("a/b"),
        packet_id: id.map(pid),
        properties: PublishProperties::default(),
        payload: Bytes::from_static(b"hi"),
    }
}

// ---- CONNECT --------------------------------------------------------------------------------

#[test]
fn connect_3_1_1() {
    let c = connect(V3_1_1);
    check(
        V5,
        "100f 00044d515454 04 02 003c 0003616263",
        Packet::Connect(Box::new(c)),
    );
}

#[test]
fn connect_3_1_mqisdp() {
    let c = connect(V3_1);
    check(
        V3_1_1,
        "1011 00064d5149736470 03 02 003c 0003616263",
        Packet::Connect(Box::new(c)),
    );
}

#[test]
fn connect_3_1_client_id_length_is_not_checked_by_the_codec() {
    let mut c = connect(V3_1);
    c.client_id = "a-client-identifier-longer-than-23".into();
    let mut out = BytesMut::new();
    encode(&Packet::Connect(Box::new(c.clone())), V3_1, &mut out).unwrap();
    assert_eq!(
        decode(&mut out, V3_1, MAX),
        Ok(Some(Packet::Connect(Box::new(c))))
    );
}

#[test]
fn connect_5_with_will_user_password_and_properties() {
    let c = Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 10,
        client_id: "cid".into(),
        will: Some(Will {
            topic: topic("w/t"),
            payload: Bytes::from_static(b"hi"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: WillProperties {
                will_delay_interval: Some(5),
                ..Default::default()
            },
        }),
        username: Some("u".into()),
        password: Some(Bytes::from_static(b"p")),
        properties: ConnectProperties {
            session_expiry_interval: Some(10),
            ..Default::default()
        },
    };
    check(
        V3_1_1,
        "102a 00044d515454 05 ce 000a 05 110000000a 0003636964 05 1800000005 0003772f74
         00026869 000175 000170",
        Packet::Connect(Box::new(c)),
    );
}

#[test]
fn connect_3_1_1_will_retain_qos2_and_username() {
    let mut c = connect(V3_1_1);
    c.will = Some(Will {
        topic: topic("w"),
        payload: Bytes::new(),
        qos: QoS::ExactlyOnce,
        retain: true,
        properties: WillProperties::default(),
    });
    c.username = Some("u".into());
    // flags: user name, will retain, will QoS 2, will flag, clean session.
    check(
        V3_1_1,
        "1017 00044d515454 04 b6 003c 0003616263 000177 0000 000175",
        Packet::Connect(Box::new(c)),
    );
}

#[test]
fn mqtt_3_1_2_1_unknown_protocol_name_is_a_protocol_error() {
    check_err(V5, "100f 00044d515458 04 02 003c 0003616263", protocol());
}

#[test]
fn mqtt_3_1_2_2_unsupported_level() {
    let e = |level| DecodeError::UnsupportedProtocolVersion { level };
    check_err(V5, "100f 00044d515454 06 02 003c 0003616263", e(6));
    check_err(V5, "100f 00044d515454 03 02 003c 0003616263", e(3));
    check_err(V5, "1011 00064d5149736470 04 02 003c 0003616263", e(4));
}

#[test]
fn mqtt_3_1_2_3_reserved_connect_flag_is_malformed() {
    check_err(V5, "100f 00044d515454 04 03 003c 0003616263", malformed());
}

#[test]
fn mqtt_3_1_2_13_will_qos_without_will_flag_is_malformed() {
    check_err(V5, "100f 00044d515454 04 0a 003c 0003616263", malformed());
}

#[test]
fn mqtt_3_1_2_14_will_qos_3_is_malformed() {
    check_err(
        V5,
        "1014 00044d515454 04 1e 003c 0003616263 000177 0000",
        malformed(),
    );
}

#[test]
fn mqtt_3_1_2_15_will_retain_without_will_flag_is_malformed() {
    check_err(V5, "100f 00044d515454 04 22 003c 0003616263", malformed());
}

#[test]
fn mqtt_3_1_2_22_password_without_user_name() {
    check_err(
        V5,
        "1012 00044d515454 04 42 003c 0003616263 000170",
        malformed(),
    );
    check_err(
        V5,
        "1014 00064d5149736470 03 42 003c 0003616263 000170",
        malformed(),
    );
    // 5.0 allows it.
    let mut c = connect(V5);
    c.password = Some(Bytes::from_static(b"p"));
    check(
        V5,
        "1013 00044d515454 05 42 003c 00 0003616263 000170",
        Packet::Connect(Box::new(c)),
    );
}

#[test]
fn will_topic_with_wildcard_is_invalid() {
    check_err(
        V5,
        "1014 00044d515454 04 06 003c 0003616263 00012b 0000",
        DecodeError::TopicNameInvalid(""),
    );
}

#[test]
fn connect_authentication_data_without_method_is_a_protocol_error() {
    check_err(
        V5,
        "1014 00044d515454 05 02 003c 04 1600 0161 0003616263",
        protocol(),
    );
}

#[test]
fn connect_receive_maximum_and_maximum_packet_size_zero_are_protocol_errors() {
    check_err(
        V5,
        "1013 00044d515454 05 02 003c 03 210000 0003616263",
        protocol(),
    );
    check_err(
        V5,
        "1015 00044d515454 05 02 003c 05 2700000000 0003616263",
        protocol(),
    );
}

#[test]
fn connect_property_not_allowed_is_a_protocol_error() {
    // Topic alias (0x23) belongs to PUBLISH.
    check_err(
        V5,
        "1013 00044d515454 05 02 003c 03 230001 0003616263",
        protocol(),
    );
}

#[test]
fn connect_boolean_property_out_of_range_is_a_protocol_error() {
    check_err(
        V5,
        "1012 00044d515454 05 02 003c 02 1702 0003616263",
        protocol(),
    );
}

#[test]
fn connect_missing_payload_is_malformed() {
    check_err(V5, "100a 00044d515454 04 02 003c", malformed());
}

// ---- CONNACK --------------------------------------------------------------------------------

fn connack(session_present: bool, reason_code: ReasonCode) -> Packet {
    Packet::ConnAck(ConnAck {
        session_present,
        reason_code,
        properties: ConnAckProperties::default(),
    })
}

#[test]
fn connack_3_1_1() {
    check(V3_1_1, "20020100", connack(true, ReasonCode::SUCCESS));
    check(
        V3_1_1,
        "20020005",
        connack(false, ReasonCode::NOT_AUTHORIZED),
    );
    check(
        V3_1_1,
        "20020001",
        connack(false, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION),
    );
}

#[test]
fn connack_3_x_maps_5_0_codes_to_return_codes() {
    let mut out = BytesMut::new();
    encode(&connack(false, ReasonCode::BANNED), V3_1_1, &mut out).unwrap();
    assert_eq!(out, bytes("20020005"));
    out.clear();
    encode(&connack(false, ReasonCode::SERVER_BUSY), V3_1_1, &mut out).unwrap();
    assert_eq!(out, bytes("20020003"));
}

#[test]
fn connack_3_1_has_no_session_present_flag() {
    check(V3_1, "20020000", connack(false, ReasonCode::SUCCESS));
    let mut out = BytesMut::new();
    encode(&connack(true, ReasonCode::SUCCESS), V3_1, &mut out).unwrap();
    assert_eq!(out, bytes("20020000"));
}

#[test]
fn connack_5() {
    check(V5, "2003 00 00 00", connack(false, ReasonCode::SUCCESS));
    check(
        V5,
        "2003 00 8c 00",
        connack(false, ReasonCode::BAD_AUTHENTICATION_METHOD),
    );
    let p = Packet::ConnAck(ConnAck {
        session_present: true,
        reason_code: ReasonCode::SUCCESS,
        properties: ConnAckProperties {
            maximum_qos: Some(QoS::AtLeastOnce),
            topic_alias_maximum: Some(10),
            ..Default::default()
        },
    });
    check(V5, "2008 01 00 05 2401 22000a", p);
}

#[test]
fn mqtt_3_2_2_1_connack_reserved_flags_are_malformed() {
    check_err(V3_1_1, "20020200", malformed());
    check_err(V5, "2003020000", malformed());
}

#[test]
fn mqtt_3_2_2_6_session_present_with_error_is_a_protocol_error() {
    check_err(V3_1_1, "20020105", protocol());
    check_err(V5, "2003018700", protocol());
}

#[test]
fn connack_reserved_codes_are_protocol_errors() {
    check_err(V3_1_1, "20020006", protocol());
    check_err(V5, "2003000400", protocol());
}

#[test]
fn connack_maximum_qos_2_is_a_protocol_error() {
    check_err(V5, "200500000224 02", protocol());
}

// ---- PUBLISH --------------------------------------------------------------------------------

#[test]
fn publish_3_x() {
    for v in [V3_1, V3_1_1] {
        check(
            v,
            "3007 0003612f62 6869",
            Packet::Publish(publish(QoS::AtMostOnce, None)),
        );
        check(
            v,
            "3209 0003612f62 000a 6869",
            Packet::Publish(publish(QoS::AtLeastOnce, Some(10))),
        );
        let mut p = publish(QoS::ExactlyOnce, Some(1));
        p.dup = true;
        p.retain = true;
        check(v, "3d09 0003612f62 0001 6869", Packet::Publish(p));
    }
}

#[test]
fn publish_5_with_properties() {
    let mut p = publish(QoS::AtLeastOnce, Some(10));
    p.properties.topic_alias = NonZeroU16::new(1);
    p.properties.subscription_identifiers = vec![NonZeroU32::new(128).unwrap()];
    check(
        V5,
        "3210 0003612f62 000a 06 230001 0b8001 6869",
        Packet::Publish(p),
    );
    check(
        V5,
        "3008 0003612f62 00 6869",
        Packet::Publish(publish(QoS::AtMostOnce, None)),
    );
}

#[test]
fn publish_5_empty_topic_with_alias() {
    let mut p = publish(QoS::AtMostOnce, None);
    p.topic = TopicName::empty();
    p.properties.topic_alias = NonZeroU16::new(1);
    check(V5, "3008 0000 03230001 6869", Packet::Publish(p));
}

#[test]
fn publish_empty_payload() {
    let mut p = publish(QoS::AtMostOnce, None);
    p.payload = Bytes::new();
    check(V3_1_1, "3005 0003612f62", Packet::Publish(p));
}

#[test]
fn publish_payload_is_a_slice_of_the_read_buffer() {
    let mut buf = bytes("3007 0003612f62 6869");
    let start = buf.as_ptr() as usize;
    let Ok(Some(Packet::Publish(p))) = decode(&mut buf, V3_1_1, MAX) else {
        panic!("not a publish")
    };
    assert_eq!(p.payload.as_ptr() as usize, start + 7);
}

#[test]
fn mqtt_3_3_1_4_qos_3_is_malformed() {
    check_err(V3_1_1, "3609 0003612f62 000a 6869", malformed());
}

#[test]
fn mqtt_3_3_1_2_dup_with_qos_0_is_malformed() {
    check_err(V3_1_1, "3807 0003612f62 6869", malformed());
}

#[test]
fn mqtt_2_2_1_3_packet_id_0_is_a_protocol_error() {
    check_err(V3_1_1, "3209 0003612f62 0000 6869", protocol());
    check_err(V3_1_1, "40020000", protocol());
    check_err(V5, "820900000000036 12f6200", protocol());
}

#[test]
fn mqtt_3_3_2_2_wildcard_topic_is_invalid() {
    check_err(
        V3_1_1,
        "3007 0003612f2b 6869",
        DecodeError::TopicNameInvalid(""),
    );
    check_err(
        V5,
        "3008 0003232f62 00 6869",
        DecodeError::TopicNameInvalid(""),
    );
}

#[test]
fn empty_topic_without_alias_is_invalid() {
    check_err(V3_1_1, "30040000 6869", DecodeError::TopicNameInvalid(""));
    check_err(V5, "3005000000 6869", DecodeError::TopicNameInvalid(""));
}

#[test]
fn mqtt_1_5_4_2_nul_in_topic_is_malformed() {
    check_err(V3_1_1, "3007 0003610062 6869", malformed());
}

#[test]
fn publish_property_rules() {
    // Duplicate payload format indicator.
    check_err(V5, "300c 0003612f62 04 01010101 6869", protocol());
    // Payload format indicator 2.
    check_err(V5, "300a 0003612f62 02 0102 6869", protocol());
    // Session expiry interval is not a PUBLISH property.
    check_err(V5, "300d 0003612f62 05 1100000001 6869", protocol());
    // Topic alias 0.
    check_err(V5, "300b 0003612f62 03 230000 6869", protocol());
    // Subscription identifier 0.
    check_err(V5, "300a 0003612f62 02 0b00 6869", protocol());
    // Property length past the end of the packet.
    check_err(V5, "3006 0003612f62 09", malformed());
    // Response topic with a wildcard.
    check_err(V5, "300c 0003612f62 04 0800012b 6869", protocol());
    // Unknown identifier.
    check_err(V5, "300a 0003612f62 02 7f00 6869", protocol());
}

// ---- PUBACK, PUBREC, PUBREL, PUBCOMP ---------------------------------------------------------

#[test]
fn acks_3_x_and_5_short_form() {
    for v in [V3_1, V3_1_1, V5] {
        check(v, "40020001", Packet::PubAck(ack(1, ReasonCode::SUCCESS)));
        check(v, "50020002", Packet::PubRec(ack(2, ReasonCode::SUCCESS)));
        check(v, "62020003", Packet::PubRel(ack(3, ReasonCode::SUCCESS)));
        check(
            v,
            "7002ffff",
            Packet::PubComp(ack(0xFFFF, ReasonCode::SUCCESS)),
        );
    }
}

#[test]
fn acks_5_with_reason_and_properties() {
    check(
        V5,
        "4003000110",
        Packet::PubAck(ack(1, ReasonCode::NO_MATCHING_SUBSCRIBERS)),
    );
    check(
        V5,
        "5003000191",
        Packet::PubRec(ack(1, ReasonCode::PACKET_IDENTIFIER_IN_USE)),
    );
    check(
        V5,
        "6203000192",
        Packet::PubRel(ack(1, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND)),
    );
    let mut a = ack(1, ReasonCode::QUOTA_EXCEEDED);
    a.properties.reason_string = Some("q".into());
    check(V5, "4008 0001 97 04 1f000171", Packet::PubAck(a.clone()));
    a.reason_code = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
    check(V5, "7008 0001 92 04 1f000171", Packet::PubComp(a.clone()));
    a.reason_code = ReasonCode::SUCCESS;
    check(V5, "4008 0001 00 04 1f000171", Packet::PubAck(a));
    // Long forms of Success decode to the same value.
    check_decode(
        V5,
        "400300 0100",
        Packet::PubAck(ack(1, ReasonCode::SUCCESS)),
    );
    check_decode(
        V5,
        "40040001 0000",
        Packet::PubAck(ack(1, ReasonCode::SUCCESS)),
    );
}

#[test]
fn ack_reason_codes_not_allowed_are_protocol_errors() {
    check_err(V5, "6203000110", protocol());
    check_err(V5, "7003000110", protocol());
    check_err(V5, "4003000192", protocol());
    check_err(V5, "5003000101", protocol());
}

#[test]
fn acks_3_x_have_only_a_packet_id() {
    check_err(V3_1_1, "4003000110", malformed());
    check_err(V3_1_1, "400100", malformed());
}

#[test]
fn mqtt_2_2_2_2_pubrel_flags_must_be_0010() {
    check_err(V3_1_1, "60020001", malformed());
    check_err(V3_1_1, "63020001", malformed());
    check_err(V3_1_1, "42020001", malformed());
}

// ---- SUBSCRIBE / SUBACK ---------------------------------------------------------------------

#[test]
fn subscribe_3_x() {
    for v in [V3_1, V3_1_1] {
        let s = Subscribe {
            packet_id: pid(1),
            properties: SubscribeProperties::default(),
            filters: vec![
                (
                    filter("a/b"),
                    SubscriptionOptions::with_qos(QoS::AtLeastOnce),
                ),
                (
                    filter("c/#"),
                    SubscriptionOptions::with_qos(QoS::ExactlyOnce),
                ),
            ],
        };
        check(
            v,
            "820e 0001 0003612f62 01 0003632f23 02",
            Packet::Subscribe(s),
        );
    }
}

#[test]
fn subscribe_5_with_options_and_identifier() {
    let s = Subscribe {
        packet_id: pid(1),
        properties: SubscribeProperties {
            subscription_identifier: NonZeroU32::new(1),
            ..Default::default()
        },
        filters: vec![(
            filter("$share/g/a"),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::DoNotSend,
            },
        )],
    };
    check(
        V5,
        "8212 0001 02 0b01 000a2473686172652f672f61 2d",
        Packet::Subscribe(s),
    );
}

#[test]
fn mqtt_3_8_3_2_subscribe_without_filters_is_a_protocol_error() {
    check_err(V3_1_1, "82020001", protocol());
    check_err(V5, "8203000100", protocol());
}

#[test]
fn mqtt_2_2_2_2_subscribe_flags_must_be_0010() {
    check_err(V3_1_1, "800800010003612f6201", malformed());
}

#[test]
fn mqtt_3_8_3_4_subscribe_3_x_reserved_option_bits_are_malformed() {
    check_err(V3_1_1, "820800010003612f6205", malformed());
}

#[test]
fn mqtt_3_8_3_5_subscribe_5_reserved_option_bits_are_malformed() {
    check_err(V5, "82090001000003612f6241", malformed());
    // Retain handling 3.
    check_err(V5, "82090001000003612f6230", malformed());
}

#[test]
fn subscribe_qos_3_is_malformed() {
    check_err(V3_1_1, "820800010003612f6203", malformed());
}

#[test]
fn subscribe_invalid_filter() {
    check_err(
        V3_1_1,
        "8207 0001 00026123 00",
        DecodeError::TopicFilterInvalid(""),
    );
    check_err(
        V3_1_1,
        "8208 0001 0003232f61 00",
        DecodeError::TopicFilterInvalid(""),
    );
}

#[test]
fn subscribe_duplicate_subscription_identifier_is_a_protocol_error() {
    check_err(V5, "820b 0001 04 0b010b02 0001 61 00", protocol());
}

#[test]
fn suback() {
    let s = |codes: Vec<ReasonCode>| {
        Packet::SubAck(SubAck {
            packet_id: pid(1),
            properties: AckProperties::default(),
            reason_codes: codes,
        })
    };
    for v in [V3_1, V3_1_1] {
        check(
            v,
            "9006 0001 00010280",
            s(vec![
                ReasonCode(0),
                ReasonCode(1),
                ReasonCode(2),
                ReasonCode(0x80),
            ]),
        );
        check_err(v, "9003 0001 03", protocol());
        check_err(v, "9003 0001 a2", protocol());
    }
    check(
        V5,
        "9005 0001 00 01a2",
        s(vec![ReasonCode(1), ReasonCode(0xA2)]),
    );
    check_err(V5, "9004 0001 00 03", protocol());
}

// ---- UNSUBSCRIBE / UNSUBACK -----------------------------------------------------------------

#[test]
fn unsubscribe() {
    let u = Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(1),
        properties: UnsubscribeProperties::default(),
        filters: vec![filter("a/b"), filter("+")],
    });
    check(V3_1_1, "a20a 0001 0003612f62 00012b", u.clone());
    check(V5, "a20b 0001 00 0003612f62 00012b", u);
}

#[test]
fn mqtt_3_10_3_2_unsubscribe_without_filters_is_a_protocol_error() {
    check_err(V3_1_1, "a2020001", protocol());
    check_err(V5, "a203000100", protocol());
}

#[test]
fn mqtt_2_2_2_2_unsubscribe_flags_must_be_0010() {
    check_err(V3_1_1, "a00700010003612f62", malformed());
}

#[test]
fn unsuback() {
    let u = |codes: Vec<ReasonCode>| {
        Packet::UnsubAck(UnsubAck {
            packet_id: pid(7),
            properties: AckProperties::default(),
            reason_codes: codes,
        })
    };
    check(V3_1, "b0020007", u(vec![]));
    check(V3_1_1, "b0020007", u(vec![]));
    check(
        V5,
        "b005 0007 00 1100",
        u(vec![ReasonCode(0x11), ReasonCode(0)]),
    );
    check_err(V3_1_1, "b003000700", malformed());
    check_err(V5, "b004000700 01", protocol());
}

// ---- DISCONNECT / AUTH / reserved types -------------------------------------------------------

#[test]
fn disconnect() {
    let d = |code| Packet::Disconnect(Disconnect::with_reason(code));
    check(V3_1_1, "e000", d(ReasonCode::NORMAL_DISCONNECTION));
    check(V5, "e000", d(ReasonCode::NORMAL_DISCONNECTION));
    check(V5, "e00104", d(ReasonCode::DISCONNECT_WITH_WILL_MESSAGE));
    check_decode(V5, "e0028e00", d(ReasonCode::SESSION_TAKEN_OVER));
    let mut with_props = Disconnect::with_reason(ReasonCode::SERVER_MOVED);
    with_props.properties.server_reference = Some("b".into());
    check(V5, "e006 9d 04 1c000162", Packet::Disconnect(with_props));
    // 3.x encodes no body whatever the reason.
    let mut out = BytesMut::new();
    encode(&d(ReasonCode::SERVER_BUSY), V3_1, &mut out).unwrap();
    assert_eq!(out, bytes("e000"));
    check_err(V3_1_1, "e00100", malformed());
    check_err(V5, "e00101", protocol());
    check_err(V5, "e00400022300", protocol());
}

#[test]
fn auth() {
    let a = |code, method: Option<&str>| {
        Packet::Auth(Auth {
            reason_code: code,
            properties: AuthProperties {
                authentication_method: method.map(Into::into),
                ..Default::default()
            },
        })
    };
    check(V5, "f000", a(ReasonCode::SUCCESS, None));
    check(V5, "f00118", a(ReasonCode::CONTINUE_AUTHENTICATION, None));
    check(
        V5,
        "f008 18 06 150003616263",
        a(ReasonCode::CONTINUE_AUTHENTICATION, Some("abc")),
    );
    check_decode(V5, "f0021900", a(ReasonCode::RE_AUTHENTICATE, None));
    check_err(V5, "f00101", protocol());
    check_err(V5, "f00318017f", protocol());
}

#[test]
fn auth_before_5_is_malformed_and_not_encodable() {
    check_err(V3_1_1, "f000", malformed());
    check_err(V3_1, "f000", malformed());
    let mut out = BytesMut::from(&b"x"[..]);
    let auth = Packet::Auth(Auth {
        reason_code: ReasonCode::SUCCESS,
        properties: AuthProperties::default(),
    });
    assert_eq!(
        encode(&auth, V3_1_1, &mut out),
        Err(EncodeError::NotInVersion)
    );
    assert_eq!(&out[..], b"x");
}

#[test]
fn packet_type_0_is_malformed() {
    check_err(V5, "0000", malformed());
}

#[test]
fn mqtt_2_2_2_2_connect_flags_must_be_0() {
    check_err(V5, "1f0f00044d5154540402003c0003616263", malformed());
}

// ---- Fixed header, sizes --------------------------------------------------------------------

#[test]
fn remaining_length_with_fifth_byte_is_malformed() {
    check_err(V5, "30ffffffff01", malformed());
    // Detected before the fifth byte even arrives.
    check_err(V5, "30ffffffff", malformed());
}

#[test]
fn huge_remaining_length_is_refused_before_the_body_arrives() {
    let mut buf = bytes("30ffffff7f");
    assert_eq!(
        decode(&mut buf, V5, 1024),
        Err(DecodeError::PacketTooLarge {
            size: 5 + 268_435_455,
            max: 1024
        })
    );
}

#[test]
fn a_header_alone_does_not_make_decode_allocate_the_whole_packet() {
    let mut buf = bytes("30ffffff7f");
    assert_eq!(decode(&mut buf, V5, u32::MAX), Ok(None));
    assert!(buf.capacity() <= 128 * 1024, "reserved {}", buf.capacity());
}

#[test]
fn maximum_packet_size_counts_the_whole_packet() {
    let wire = "3007 0003612f62 6869";
    assert!(decode(&mut bytes(wire), V3_1_1, 9).unwrap().is_some());
    assert_eq!(
        decode(&mut bytes(wire), V3_1_1, 8),
        Err(DecodeError::PacketTooLarge { size: 9, max: 8 })
    );
}

#[test]
fn non_minimal_remaining_length_is_accepted() {
    check_decode(
        V3_1_1,
        "4082000001",
        Packet::PubAck(ack(1, ReasonCode::SUCCESS)),
    );
}

#[test]
fn two_packets_in_one_buffer_decode_one_at_a_time() {
    let mut buf = bytes("c000 40020001 d0");
    assert_eq!(decode(&mut buf, V3_1_1, MAX), Ok(Some(Packet::PingReq)));
    assert_eq!(
        decode(&mut buf, V3_1_1, MAX),
        Ok(Some(Packet::PubAck(ack(1, ReasonCode::SUCCESS))))
    );
    assert_eq!(decode(&mut buf, V3_1_1, MAX), Ok(None));
    assert_eq!(&buf[..], &[0xd0]);
}

// ---- Encode errors --------------------------------------------------------------------------

#[test]
fn encode_refuses_overlong_fields_and_leaves_the_buffer_alone() {
    let mut c = connect(V3_1_1);
    c.client_id = "x".repeat(65_536);
    let mut out = BytesMut::new();
    assert_eq!(
        encode(&Packet::Connect(Box::new(c)), V3_1_1, &mut out),
        Err(EncodeError::FieldTooLong("client identifier"))
    );
    assert!(out.is_empty());
}

#[test]
fn encode_refuses_remaining_length_over_268_435_455() {
    let mut p = publish(QoS::AtMostOnce, None);
    // calloc'd and never touched: the size is refused while counting.
    p.payload = Bytes::from(vec![0u8; 268_435_455]);
    let mut out = BytesMut::new();
    assert_eq!(
        encode(&Packet::Publish(p), V3_1_1, &mut out),
        Err(EncodeError::TooLarge(268_435_455 + 5))
    );
    assert!(out.is_empty());
}
