//! Wire tests: PUBLISH and its acknowledgements.

use super::*;

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
fn mqtt_3_3_2_1_empty_topic_without_alias_is_a_protocol_error() {
    check_err(V3_1_1, "30040000 6869", protocol());
    check_err(V5, "3005000000 6869", protocol());
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
    // Session expiry interval is not a PUBLISH property: malformed (2.2.2.2).
    check_err(V5, "300d 0003612f62 05 1100000001 6869", malformed());
    // Topic alias 0 [MQTT-3.3.2-8].
    check_err(
        V5,
        "300b 0003612f62 03 230000 6869",
        DecodeError::TopicAliasInvalid(""),
    );
    // Subscription identifier 0.
    check_err(V5, "300a 0003612f62 02 0b00 6869", protocol());
    // Property length past the end of the packet.
    check_err(V5, "3006 0003612f62 09", malformed());
    // Response topic with a wildcard.
    check_err(V5, "300c 0003612f62 04 0800012b 6869", protocol());
    // Unknown identifier: malformed (2.2.2.2).
    check_err(V5, "300a 0003612f62 02 7f00 6869", malformed());
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
