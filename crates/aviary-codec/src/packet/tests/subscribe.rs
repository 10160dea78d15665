//! Wire tests: SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK.

use super::*;

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
}

#[test]
fn v5_subscribe_retain_handling_3_and_qos_3_are_protocol_errors() {
    check_err(V5, "82090001000003612f6230", protocol());
    check_err(V5, "82090001000003612f6203", protocol());
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
