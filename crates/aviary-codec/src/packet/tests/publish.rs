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

// ---- fast paths -----------------------------------------------------------------------------

#[test]
fn topic_cache_shares_a_repeated_topic_and_still_refuses_what_decode_refuses() {
    let mut cache = TopicCache::default();
    let topic = |hex: &str, cache: &mut TopicCache| match decode_with(
        &mut bytes(hex),
        V3_1_1,
        MAX,
        cache,
    ) {
        Ok(Some(Packet::Publish(p))) => Ok(p.topic),
        Ok(other) => panic!("{hex}: {other:?}"),
        Err(e) => Err(e),
    };
    let first = topic("3007 0003612f62 6869", &mut cache).unwrap();
    let again = topic("3007 0003612f62 6869", &mut cache).unwrap();
    assert_eq!(again.as_str(), "a/b");
    assert_eq!(
        again.as_str().as_ptr(),
        first.as_str().as_ptr(),
        "shared, not copied"
    );
    // A different topic is decoded (and cached) on its own.
    let other = topic("3007 0003612f63 6869", &mut cache).unwrap();
    assert_eq!(other.as_str(), "a/c");
    assert_ne!(other.as_str().as_ptr(), first.as_str().as_ptr());
    // A shorter length that makes a prefix of the cached topic is no hit.
    assert_eq!(
        topic("3007 0002612f 626869", &mut cache).unwrap().as_str(),
        "a/"
    );
    // What is refused without the cache is refused with it, whatever is cached.
    for bad in [
        "3007 0003612f2b 6869",
        "3007 0003612f00 6869",
        "3007 0003612fff 6869",
        "3003 0000 00",
    ] {
        let _ = topic("3007 0003612f62 6869", &mut cache).unwrap();
        let expected = decode(&mut bytes(bad), V3_1_1, MAX).unwrap_err();
        assert_eq!(topic(bad, &mut cache).unwrap_err(), expected, "{bad}");
    }
    // A cached topic in a packet refused for another reason: the same error.
    let _ = topic("3007 0003612f62 6869", &mut cache).unwrap();
    assert_eq!(
        topic("3207 0003612f62 0000", &mut cache).unwrap_err(),
        decode(&mut bytes("3207 0003612f62 0000"), V3_1_1, MAX).unwrap_err()
    );
}

#[test]
fn encode_ack_writes_what_encode_writes_for_the_ack_packet() {
    /// An acknowledgement kind and the packet variant it encodes as.
    type Kind = (AckKind, fn(Ack) -> Packet);
    let kinds: [Kind; 4] = [
        (AckKind::PubAck, Packet::PubAck),
        (AckKind::PubRec, Packet::PubRec),
        (AckKind::PubRel, Packet::PubRel),
        (AckKind::PubComp, Packet::PubComp),
    ];
    for v in [V3_1, V3_1_1, V5] {
        for (kind, packet) in kinds {
            for code in [0x00, 0x10, 0x80, 0x92] {
                let id = PacketId::new(0x1234).unwrap();
                let ack = Ack {
                    packet_id: id,
                    reason_code: ReasonCode(code),
                    properties: Default::default(),
                };
                let packet = packet(ack);
                assert_eq!(kind.packet_type(), packet.packet_type());
                let mut expected = BytesMut::from(&b"before"[..]);
                encode(&packet, v, &mut expected).unwrap();
                let mut got = BytesMut::from(&b"before"[..]);
                encode_ack(kind, id, ReasonCode(code), v, &mut got).unwrap();
                assert_eq!(got, expected, "{packet:?} in {v:?}");
            }
        }
    }
}

#[test]
fn publish_properties_box_is_empty_exactly_without_properties() {
    use crate::properties::{PublishProperties, PublishPropertiesBox};
    assert!(PublishPropertiesBox::from(PublishProperties::NONE)
        .into_boxed()
        .is_none());
    assert!(PublishPropertiesBox::from(PublishProperties::default())
        .into_boxed()
        .is_none());
    let one_each: Vec<PublishProperties> = vec![
        PublishProperties {
            payload_format_indicator: Some(false),
            ..Default::default()
        },
        PublishProperties {
            message_expiry_interval: Some(0),
            ..Default::default()
        },
        PublishProperties {
            topic_alias: NonZeroU16::new(1),
            ..Default::default()
        },
        PublishProperties {
            response_topic: Some(TopicName::new("r").unwrap()),
            ..Default::default()
        },
        PublishProperties {
            correlation_data: Some(Bytes::new()),
            ..Default::default()
        },
        PublishProperties {
            user_properties: vec![(String::new(), String::new())],
            ..Default::default()
        },
        PublishProperties {
            subscription_identifiers: vec![NonZeroU32::new(1).unwrap()],
            ..Default::default()
        },
        PublishProperties {
            content_type: Some(String::new()),
            ..Default::default()
        },
    ];
    for properties in one_each {
        assert!(!properties.is_none(), "{properties:?}");
        let boxed = PublishPropertiesBox::from(properties.clone());
        assert_eq!(*boxed, properties);
        assert_eq!(boxed.into_boxed().as_deref(), Some(&properties));
    }
    // A box from an allocation is kept as is and compares by value.
    let from_boxed = PublishPropertiesBox::from_boxed(Some(Box::default()));
    assert_eq!(from_boxed, PublishPropertiesBox::default());
}

#[test]
fn encode_publish_without_properties_refuses_what_encode_refuses() {
    let long = "t".repeat(70_000);
    let properties = crate::properties::PublishProperties::NONE;
    for v in [V3_1_1, V5] {
        let publish = PublishRef {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: &long,
            packet_id: PacketId::new(1),
            properties: &properties,
            payload: b"x",
        };
        let mut out = BytesMut::from(&b"kept"[..]);
        assert_eq!(
            encode_publish(&publish, v, &mut out),
            Err(EncodeError::FieldTooLong("topic name"))
        );
        assert_eq!(&out[..], b"kept", "nothing appended on error");
    }
    // Lengths that need more than one byte of remaining length, in both dialects.
    for v in [V3_1, V3_1_1, V5] {
        for (qos, id) in [
            (QoS::AtMostOnce, None),
            (QoS::ExactlyOnce, PacketId::new(0xBEEF)),
        ] {
            for payload_len in [0usize, 100, 200, 20_000] {
                let mut p = publish(qos, id.map(|id| id.get()));
                p.payload = vec![7; payload_len].into();
                let mut expected = BytesMut::new();
                encode(&Packet::Publish(p.clone()), v, &mut expected).unwrap();
                let mut got = BytesMut::new();
                encode_publish(&p.as_ref(), v, &mut got).unwrap();
                assert_eq!(got, expected, "{v:?} {qos:?} {payload_len}");
            }
        }
    }
}
