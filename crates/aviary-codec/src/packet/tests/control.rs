//! Wire tests: DISCONNECT, AUTH, reserved packet types, the fixed header, sizes, encode errors.

use super::*;

// ---- DISCONNECT / AUTH / reserved types -------------------------------------------------------

#[test]
fn disconnect() {
    let d = |code| Packet::Disconnect(Disconnect::with_reason(code));
    check(V3_1_1, "e000", d(ReasonCode::NORMAL_DISCONNECTION));
    check(V5, "e000", d(ReasonCode::NORMAL_DISCONNECTION));
    // The short form is read; an error code is written with its (empty) property block.
    check_decode(V5, "e00104", d(ReasonCode::DISCONNECT_WITH_WILL_MESSAGE));
    check(V5, "e0028e00", d(ReasonCode::SESSION_TAKEN_OVER));
    let mut with_props = Disconnect::with_reason(ReasonCode::SERVER_MOVED);
    with_props.properties.server_reference = Some("b".into());
    check(V5, "e006 9d 04 1c000162", Packet::Disconnect(with_props));
    // 3.x encodes no body whatever the reason.
    let mut out = BytesMut::new();
    encode(&d(ReasonCode::SERVER_BUSY), V3_1, &mut out).unwrap();
    assert_eq!(out, bytes("e000"));
    check_err(V3_1_1, "e00100", malformed());
    check_err(V5, "e00101", protocol());
    // A property not valid for the packet type is malformed (2.2.2.2).
    check_err(V5, "e00400022300", malformed());
}

#[test]
fn auth() {
    let a = |code, method: Option<&str>| {
        Packet::Auth(Box::new(Auth {
            reason_code: code,
            properties: AuthProperties {
                authentication_method: method.map(Into::into),
                ..Default::default()
            },
        }))
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
    check_err(V5, "f00318017f", malformed());
}

#[test]
fn auth_before_5_is_malformed_and_not_encodable() {
    check_err(V3_1_1, "f000", malformed());
    check_err(V3_1, "f000", malformed());
    let mut out = BytesMut::from(&b"x"[..]);
    let auth = Packet::Auth(Box::new(Auth {
        reason_code: ReasonCode::SUCCESS,
        properties: AuthProperties::default(),
    }));
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
