//! Wire tests with literal hex bytes: one `check` per packet form and version, then one
//! negative test per spec rule, named after the rule.

pub(super) use std::num::{NonZeroU16, NonZeroU32};

pub(super) use bytes::{Bytes, BytesMut};

pub(super) use super::*;
pub(super) use crate::ProtocolVersion::{V3_1, V3_1_1, V5};

pub(super) const MAX: u32 = 1 << 20;

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
    if let Packet::Publish(p) = &expected {
        // The same packet from its parts.
        let mut parts = BytesMut::new();
        encode_publish(&p.as_ref(), v, &mut parts).unwrap();
        assert_eq!(parts, out, "encode_publish of {expected:?}");
    }
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

pub(super) fn malformed() -> DecodeError {
    DecodeError::Malformed("")
}

pub(super) fn protocol() -> DecodeError {
    DecodeError::Protocol("")
}

pub(super) fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

pub(super) fn topic(s: &str) -> TopicName {
    TopicName::new(s).unwrap()
}

pub(super) fn filter(s: &str) -> TopicFilter {
    TopicFilter::new(s).unwrap()
}

pub(super) fn ack(n: u16, code: ReasonCode) -> Ack {
    Ack {
        packet_id: pid(n),
        reason_code: code,
        properties: AckProperties::default(),
    }
}

pub(super) fn connect(protocol: ProtocolVersion) -> Connect {
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

pub(super) fn publish(qos: QoS, id: Option<u16>) -> Publish {
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

mod connect;
mod control;
mod publish;
mod subscribe;
