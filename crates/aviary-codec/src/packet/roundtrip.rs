//! Property tests: every packet that is valid in a version survives encode → decode
//! unchanged, and `encoded_len` predicts the encoded size. The generators only produce values
//! the version can carry (no properties in 3.x, reason codes the packet allows, ...).

use std::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::properties::PublishProperties;
use crate::ProtocolVersion::{V3_1, V3_1_1, V5};

fn text() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,6}"
}

fn binary() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..12).prop_map(Bytes::from)
}

fn topic_name() -> impl Strategy<Value = TopicName> {
    "[a-z0-9/$é]{1,10}".prop_map(|s| TopicName::new(&s).unwrap())
}

fn topic_filter() -> impl Strategy<Value = TopicFilter> {
    let level = prop_oneof!["[a-z$]{0,3}", Just("+".to_string())];
    (
        prop::collection::vec(level, 1..4),
        any::<bool>(),
        prop::option::of("[a-z]{1,3}"),
    )
        .prop_filter_map("not a valid filter", |(levels, hash, share)| {
            let mut f = levels.join("/");
            if hash {
                f.push_str("/#");
            }
            if let Some(group) = share {
                f = format!("$share/{group}/{f}");
            }
            TopicFilter::new(&f).ok()
        })
}

fn users() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((text(), text()), 0..3)
}

fn nz16() -> impl Strategy<Value = NonZeroU16> {
    (1..=u16::MAX).prop_map(|n| NonZeroU16::new(n).unwrap())
}

fn nz32() -> impl Strategy<Value = NonZeroU32> {
    (1..=u32::MAX).prop_map(|n| NonZeroU32::new(n).unwrap())
}

fn subscription_id() -> impl Strategy<Value = NonZeroU32> {
    (1..=268_435_455u32).prop_map(|n| NonZeroU32::new(n).unwrap())
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn packet_id() -> impl Strategy<Value = PacketId> {
    nz16().prop_map(PacketId)
}

fn code(codes: &'static [u8]) -> impl Strategy<Value = ReasonCode> {
    prop::sample::select(codes).prop_map(ReasonCode)
}

fn connect_properties() -> impl Strategy<Value = ConnectProperties> {
    (
        any::<Option<u32>>(),
        prop::option::of(nz16()),
        prop::option::of(nz32()),
        any::<Option<u16>>(),
        any::<Option<bool>>(),
        any::<Option<bool>>(),
        users(),
        prop::option::of((text(), prop::option::of(binary()))),
    )
        .prop_map(|(se, rm, mps, tam, rri, rpi, user_properties, auth)| {
            let (authentication_method, authentication_data) = match auth {
                Some((m, d)) => (Some(m), d),
                None => (None, None),
            };
            ConnectProperties {
                session_expiry_interval: se,
                receive_maximum: rm,
                maximum_packet_size: mps,
                topic_alias_maximum: tam,
                request_response_information: rri,
                request_problem_information: rpi,
                user_properties,
                authentication_method,
                authentication_data,
            }
        })
}

fn will_properties() -> impl Strategy<Value = WillProperties> {
    (
        any::<Option<u32>>(),
        any::<Option<bool>>(),
        any::<Option<u32>>(),
        prop::option::of(text()),
        prop::option::of(topic_name()),
        prop::option::of(binary()),
        users(),
    )
        .prop_map(
            |(wd, pfi, mei, ct, rt, cd, user_properties)| WillProperties {
                will_delay_interval: wd,
                payload_format_indicator: pfi,
                message_expiry_interval: mei,
                content_type: ct,
                response_topic: rt,
                correlation_data: cd,
                user_properties,
            },
        )
}

fn connect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let will = (
        topic_name(),
        binary(),
        qos(),
        any::<bool>(),
        will_properties(),
    )
        .prop_map(move |(topic, payload, qos, retain, properties)| Will {
            topic,
            payload,
            qos,
            retain,
            properties: if v.is_v5() {
                properties
            } else {
                WillProperties::default()
            },
        });
    (
        any::<bool>(),
        any::<u16>(),
        text(),
        prop::option::of(will),
        prop::option::of(text()),
        prop::option::of(binary()),
        connect_properties(),
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, will, username, password, props)| {
                // [MQTT-3.1.2-22]: before 5.0 a password needs a user name.
                let password = if v.is_v5() || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::Connect(Box::new(Connect {
                    protocol: v,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties: if v.is_v5() {
                        props
                    } else {
                        ConnectProperties::default()
                    },
                }))
            },
        )
}

fn connack_properties() -> impl Strategy<Value = ConnAckProperties> {
    let first = (
        any::<Option<u32>>(),
        prop::option::of(nz16()),
        prop::option::of(prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)]),
        any::<Option<bool>>(),
        prop::option::of(nz32()),
        prop::option::of(text()),
        any::<Option<u16>>(),
        prop::option::of(text()),
        users(),
    );
    let second = (
        any::<Option<bool>>(),
        any::<Option<bool>>(),
        any::<Option<bool>>(),
        any::<Option<u16>>(),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(binary()),
    );
    (first, second).prop_map(
        |(
            (se, rm, mq, ra, mps, aci, tam, rs, user_properties),
            (wsa, sia, ssa, ska, ri, sr, am, ad),
        )| {
            ConnAckProperties {
                session_expiry_interval: se,
                receive_maximum: rm,
                maximum_qos: mq,
                retain_available: ra,
                maximum_packet_size: mps,
                assigned_client_identifier: aci,
                topic_alias_maximum: tam,
                reason_string: rs,
                user_properties,
                wildcard_subscription_available: wsa,
                subscription_identifiers_available: sia,
                shared_subscription_available: ssa,
                server_keep_alive: ska,
                response_information: ri,
                server_reference: sr,
                authentication_method: am,
                authentication_data: ad,
            }
        },
    )
}

const CONNACK_V5: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
// The 5.0 codes that a 3.x return code maps back to.
const CONNACK_V3: &[u8] = &[0x00, 0x84, 0x85, 0x88, 0x86, 0x87];

fn connack(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = if v.is_v5() { CONNACK_V5 } else { CONNACK_V3 };
    (any::<bool>(), code(codes), connack_properties()).prop_map(move |(sp, reason_code, props)| {
        Packet::ConnAck(Box::new(ConnAck {
            // [MQTT-3.2.2-6]; 3.1 has no session present flag.
            session_present: sp && reason_code == ReasonCode::SUCCESS && v != V3_1,
            reason_code,
            properties: if v.is_v5() {
                props
            } else {
                ConnAckProperties::default()
            },
        }))
    })
}

fn publish_properties() -> impl Strategy<Value = PublishProperties> {
    (
        any::<Option<bool>>(),
        any::<Option<u32>>(),
        prop::option::of(nz16()),
        prop::option::of(topic_name()),
        prop::option::of(binary()),
        users(),
        prop::collection::vec(subscription_id(), 0..3),
        prop::option::of(text()),
    )
        .prop_map(
            |(pfi, mei, ta, rt, cd, user_properties, ids, ct)| PublishProperties {
                payload_format_indicator: pfi,
                message_expiry_interval: mei,
                topic_alias: ta,
                response_topic: rt,
                correlation_data: cd,
                user_properties,
                subscription_identifiers: ids,
                content_type: ct,
            },
        )
}

fn publish(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        topic_name(),
        any::<bool>(),
        packet_id(),
        publish_properties(),
        binary(),
    )
        .prop_map(
            move |(dup, qos, retain, topic, empty_topic, id, props, payload)| {
                let properties = if v.is_v5() {
                    props
                } else {
                    PublishProperties::default()
                };
                // An empty topic only with a 5.0 topic alias.
                let topic = if empty_topic && properties.topic_alias.is_some() {
                    TopicName::empty()
                } else {
                    topic
                };
                let at_most_once = qos == QoS::AtMostOnce;
                Packet::Publish(Publish {
                    dup: dup && !at_most_once,
                    qos,
                    retain,
                    topic,
                    packet_id: (!at_most_once).then_some(id),
                    properties: properties.into(),
                    payload,
                })
            },
        )
}

fn ack_properties(v: ProtocolVersion) -> impl Strategy<Value = AckProperties> {
    (prop::option::of(text()), users()).prop_map(move |(reason_string, user_properties)| {
        if v.is_v5() {
            AckProperties {
                reason_string,
                user_properties,
            }
        } else {
            AckProperties::default()
        }
    })
}

const PUBACK_V5: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_V5: &[u8] = &[0x00, 0x92];

fn ack(v: ProtocolVersion, codes: &'static [u8]) -> impl Strategy<Value = Ack> {
    let codes = if v.is_v5() { codes } else { &[0x00] };
    (packet_id(), code(codes), ack_properties(v)).prop_map(
        |(packet_id, reason_code, properties)| Ack {
            packet_id,
            reason_code,
            properties,
        },
    )
}

fn options(v: ProtocolVersion) -> impl Strategy<Value = SubscriptionOptions> {
    let rh = prop_oneof![
        Just(RetainHandling::SendOnSubscribe),
        Just(RetainHandling::SendOnNewSubscribe),
        Just(RetainHandling::DoNotSend)
    ];
    (qos(), any::<bool>(), any::<bool>(), rh).prop_map(move |(qos, nl, rap, rh)| {
        if v.is_v5() {
            SubscriptionOptions {
                qos,
                no_local: nl,
                retain_as_published: rap,
                retain_handling: rh,
            }
        } else {
            SubscriptionOptions::with_qos(qos)
        }
    })
}

fn subscribe(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        prop::option::of(subscription_id()),
        users(),
        prop::collection::vec((topic_filter(), options(v)), 1..4),
    )
        .prop_map(move |(packet_id, id, user_properties, filters)| {
            let properties = if v.is_v5() {
                SubscribeProperties {
                    subscription_identifier: id,
                    user_properties,
                }
            } else {
                SubscribeProperties::default()
            };
            Packet::Subscribe(Subscribe {
                packet_id,
                properties,
                filters,
            })
        })
}

const SUBACK_V5: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
const SUBACK_V3: &[u8] = &[0x00, 0x01, 0x02, 0x80];
const UNSUBACK_V5: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];

fn suback(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = if v.is_v5() { SUBACK_V5 } else { SUBACK_V3 };
    (
        packet_id(),
        ack_properties(v),
        prop::collection::vec(code(codes), 1..5),
    )
        .prop_map(|(packet_id, properties, reason_codes)| {
            Packet::SubAck(SubAck {
                packet_id,
                properties,
                reason_codes,
            })
        })
}

fn unsubscribe(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        users(),
        prop::collection::vec(topic_filter(), 1..4),
    )
        .prop_map(move |(packet_id, user_properties, filters)| {
            let user_properties = if v.is_v5() { user_properties } else { vec![] };
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties: UnsubscribeProperties { user_properties },
                filters,
            })
        })
}

fn unsuback(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        ack_properties(v),
        prop::collection::vec(code(UNSUBACK_V5), 1..5),
    )
        .prop_map(move |(packet_id, properties, codes)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                properties,
                reason_codes: if v.is_v5() { codes } else { vec![] },
            })
        })
}

const DISCONNECT_V5: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];

fn disconnect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        code(DISCONNECT_V5),
        any::<Option<u32>>(),
        prop::option::of(text()),
        users(),
        prop::option::of(text()),
    )
        .prop_map(move |(reason_code, se, rs, user_properties, sr)| {
            Packet::Disconnect(if v.is_v5() {
                Disconnect {
                    reason_code,
                    properties: DisconnectProperties {
                        session_expiry_interval: se,
                        reason_string: rs,
                        user_properties,
                        server_reference: sr,
                    },
                }
            } else {
                Disconnect::with_reason(ReasonCode::NORMAL_DISCONNECTION)
            })
        })
}

fn auth() -> impl Strategy<Value = Packet> {
    (
        code(&[0x00, 0x18, 0x19]),
        prop::option::of(text()),
        prop::option::of(binary()),
        prop::option::of(text()),
        users(),
    )
        .prop_map(|(reason_code, am, ad, rs, user_properties)| {
            Packet::Auth(Box::new(Auth {
                reason_code,
                properties: AuthProperties {
                    authentication_method: am,
                    authentication_data: ad,
                    reason_string: rs,
                    user_properties,
                },
            }))
        })
}

/// Any packet that is valid in `v`.
fn packet(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let mut kinds = vec![
        connect(v).boxed(),
        connack(v).boxed(),
        publish(v).boxed(),
        ack(v, PUBACK_V5).prop_map(Packet::PubAck).boxed(),
        ack(v, PUBACK_V5).prop_map(Packet::PubRec).boxed(),
        ack(v, PUBREL_V5).prop_map(Packet::PubRel).boxed(),
        ack(v, PUBREL_V5).prop_map(Packet::PubComp).boxed(),
        subscribe(v).boxed(),
        suback(v).boxed(),
        unsubscribe(v).boxed(),
        unsuback(v).boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        disconnect(v).boxed(),
    ];
    if v.is_v5() {
        kinds.push(auth().boxed());
    }
    prop::strategy::Union::new(kinds).boxed()
}

fn round_trip(v: ProtocolVersion, packet: &Packet) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::new();
    encode(packet, v, &mut buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(buf.len(), encoded_len(packet, v));
    if let Packet::Publish(p) = packet {
        // The same bytes from its parts (the fast path without properties included).
        let mut parts = BytesMut::from(&b"x"[..]);
        encode_publish(&p.as_ref(), v, &mut parts)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&parts[1..], &buf[..]);
    }
    let len = u32::try_from(buf.len()).unwrap();
    // Exactly the encoded size is allowed; one byte less is refused.
    if len > 1 {
        let too_large = matches!(
            decode(&mut buf.clone(), v, len - 1),
            Err(DecodeError::PacketTooLarge { .. })
        );
        prop_assert!(too_large);
    }
    let decoded = decode(&mut buf, v, len);
    prop_assert_eq!(decoded, Ok(Some(packet.clone())));
    prop_assert!(buf.is_empty());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn round_trip_3_1(p in packet(V3_1)) {
        round_trip(V3_1, &p)?;
    }

    #[test]
    fn round_trip_3_1_1(p in packet(V3_1_1)) {
        round_trip(V3_1_1, &p)?;
    }

    #[test]
    fn round_trip_5(p in packet(V5)) {
        round_trip(V5, &p)?;
    }

    /// Every prefix of an encoded packet is "need more bytes", never an error.
    #[test]
    fn prefixes_need_more_bytes(p in packet(V5)) {
        let mut buf = BytesMut::new();
        encode(&p, V5, &mut buf).unwrap();
        for cut in 0..buf.len() {
            let mut part = BytesMut::from(&buf[..cut]);
            prop_assert_eq!(decode(&mut part, V5, u32::MAX), Ok(None));
        }
    }
}

/// What the fuzz target checks, for CI on stable: decoding any bytes never panics, and
/// whatever decodes re-encodes to something that decodes to the same packet.
fn decode_reencode(data: &[u8]) -> Result<(), TestCaseError> {
    for v in [V3_1, V3_1_1, V5] {
        let mut buf = BytesMut::from(data);
        while let Ok(Some(packet)) = decode(&mut buf, v, 4096) {
            let dialect = match &packet {
                Packet::Connect(c) => c.protocol,
                _ => v,
            };
            let mut out = BytesMut::new();
            encode(&packet, dialect, &mut out).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(out.len(), encoded_len(&packet, dialect));
            prop_assert_eq!(decode(&mut out, dialect, u32::MAX), Ok(Some(packet)));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn arbitrary_bytes_decode_without_panic(data in prop::collection::vec(any::<u8>(), 0..64)) {
        decode_reencode(&data)?;
    }

    /// Valid packets with one byte changed reach much deeper than random bytes.
    #[test]
    fn mutated_packets_decode_without_panic(
        (v, p) in prop_oneof![Just(V3_1), Just(V3_1_1), Just(V5)]
            .prop_flat_map(|v| (Just(v), packet(v))),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut buf = BytesMut::new();
        encode(&p, v, &mut buf).unwrap();
        let i = at.index(buf.len());
        buf[i] = byte;
        decode_reencode(&buf)?;
    }
}

/// Decodes `wire` packet by packet, once with `cache` and once without: the same results,
/// errors included.
fn cached_agrees(
    v: ProtocolVersion,
    wire: &[u8],
    cache: &mut TopicCache,
) -> Result<(), TestCaseError> {
    let mut plain = BytesMut::from(wire);
    let mut cached = BytesMut::from(wire);
    loop {
        let expected = decode(&mut plain, v, 4096);
        let got = decode_with(&mut cached, v, 4096, cache);
        prop_assert_eq!(&got, &expected);
        if !matches!(expected, Ok(Some(_))) {
            return Ok(());
        }
        prop_assert_eq!(&plain[..], &cached[..]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// A PUBLISH warms the topic cache; the same PUBLISH again, then with one byte changed
    /// (its topic, its length, anything), decodes with the cache exactly as without it.
    #[test]
    fn topic_cache_changes_no_result(
        (v, p) in prop_oneof![Just(V3_1), Just(V3_1_1), Just(V5)]
            .prop_flat_map(|v| (Just(v), publish(v))),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut buf = BytesMut::new();
        encode(&p, v, &mut buf).unwrap();
        let mut cache = TopicCache::default();
        let mut twice = buf.clone();
        twice.extend_from_slice(&buf);
        cached_agrees(v, &twice, &mut cache)?;
        let i = at.index(buf.len());
        buf[i] = byte;
        cached_agrees(v, &buf, &mut cache)?;
    }
}

proptest! {
    /// The word-at-a-time level count agrees with counting the slashes one by one.
    #[test]
    fn level_count_counts_every_slash(t in "[a/\u{2f}\u{ef}\u{7f}é€]{0,40}") {
        if let Ok(topic) = TopicName::new(&t) {
            prop_assert_eq!(topic.level_count(), t.bytes().filter(|&b| b == b'/').count() + 1);
            prop_assert_eq!(topic.level_count(), topic.levels().count());
        }
    }
}
