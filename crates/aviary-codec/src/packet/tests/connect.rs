//! Wire tests: CONNECT and CONNACK.

use super::*;

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
fn mqtt_2_2_2_2_connect_property_not_allowed_is_malformed() {
    // Topic alias (0x23) belongs to PUBLISH.
    check_err(
        V5,
        "1013 00044d515454 05 02 003c 03 230001 0003616263",
        malformed(),
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
    Packet::ConnAck(Box::new(ConnAck {
        session_present,
        reason_code,
        properties: ConnAckProperties::default(),
    }))
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
    let p = Packet::ConnAck(Box::new(ConnAck {
        session_present: true,
        reason_code: ReasonCode::SUCCESS,
        properties: ConnAckProperties {
            maximum_qos: Some(QoS::AtLeastOnce),
            topic_alias_maximum: Some(10),
            ..Default::default()
        },
    }));
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
