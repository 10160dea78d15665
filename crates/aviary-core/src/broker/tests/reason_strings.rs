//! 5.0 reason strings: on every DISCONNECT and refusing CONNACK from the server, and on
//! error acks unless the client set Request Problem Information to 0 [MQTT-3.1.2-29].

use aviary_codec::properties::{AckProperties, ConnAckProperties, DisconnectProperties};
use aviary_codec::{ConnAck, Disconnect, Packet, QoS, ReasonCode};

use super::*;

fn reason_string(t: &Transmit) -> Option<String> {
    match t {
        Transmit::Packet { packet, .. } => match packet {
            Packet::Disconnect(p) => p.properties.reason_string.clone(),
            Packet::ConnAck(p) => p.properties.reason_string.clone(),
            Packet::PubAck(p) | Packet::PubRec(p) | Packet::PubRel(p) | Packet::PubComp(p) => {
                p.properties.reason_string.clone()
            }
            Packet::SubAck(p) => p.properties.reason_string.clone(),
            _ => None,
        },
        Transmit::Close { .. } => None,
    }
}

#[test]
fn server_disconnect_carries_a_reason_string() {
    let mut h = Harness::new();
    h.client_v5(1, "c");
    h.send(1, Packet::PingResp);
    assert_eq!(
        h.drain_raw(),
        vec![
            packet(
                1,
                Packet::Disconnect(Disconnect {
                    reason_code: ReasonCode::PROTOCOL_ERROR,
                    properties: DisconnectProperties {
                        reason_string: Some("packet not allowed from a client here".into()),
                        ..DisconnectProperties::default()
                    },
                })
            ),
            close(1)
        ]
    );
}

#[test]
fn decode_errors_explain_themselves() {
    let mut h = Harness::new();
    h.client_v5(1, "c");
    let error = aviary_codec::DecodeError::Malformed("remaining length too long");
    h.broker.handle_decode_error(ConnId(1), &error, h.now);
    let out = h.drain_raw();
    assert_eq!(reason_string(&out[0]), Some(error.to_string()));
}

#[test]
fn refusing_v5_connack_carries_a_reason_string_and_3_x_none() {
    let mut h = Harness::new();
    let mut c = connect(V5, "c", true);
    c.properties.authentication_method = Some("X".into());
    h.open(1);
    h.send(1, Packet::Connect(Box::new(c)));
    assert_eq!(
        h.drain_raw()[0],
        packet(
            1,
            Packet::ConnAck(Box::new(ConnAck {
                session_present: false,
                reason_code: ReasonCode::BAD_AUTHENTICATION_METHOD,
                properties: ConnAckProperties {
                    reason_string: Some("enhanced authentication is not supported".into()),
                    ..ConnAckProperties::default()
                },
            }))
        )
    );
    h.open(2);
    h.send(2, Packet::Connect(Box::new(connect(V3_1_1, "", false))));
    assert_eq!(reason_string(&h.drain_raw()[0]), None);
}

#[test]
fn error_acks_carry_reason_strings_by_default() {
    let mut h = Harness::with_config(BrokerConfig {
        max_subscriptions_per_session: 1,
        ..BrokerConfig::default()
    });
    h.client_v5(1, "c");
    h.send(
        1,
        subscribe(1, &[("a", QoS::AtMostOnce), ("b", QoS::AtMostOnce)]),
    );
    h.send(1, pubrel(9));
    h.send(1, publish("$SYS/x", QoS::AtLeastOnce, 2, "x"));
    let strings: Vec<Option<String>> = h.drain_raw().iter().map(reason_string).collect();
    assert_eq!(
        strings,
        vec![
            Some("subscription limit of the session reached".into()),
            Some("packet identifier not found".into()),
            Some("topic reserved for the broker".into()),
        ]
    );
    // Success acks carry none.
    h.send(1, publish("z", QoS::AtLeastOnce, 3, "x"));
    assert_eq!(
        h.drain_raw(),
        vec![packet(
            1,
            Packet::PubAck(aviary_codec::Ack {
                packet_id: pid(3),
                reason_code: ReasonCode::NO_MATCHING_SUBSCRIBERS,
                properties: AckProperties::default(),
            })
        )]
    );
}

#[test]
fn mqtt_3_1_2_29_request_problem_information_0_suppresses_ack_reason_strings() {
    let mut h = Harness::new();
    let mut c = connect(V5, "c", true);
    c.properties.request_problem_information = Some(false);
    h.connected(1, c);
    h.send(1, pubrel(9));
    h.send(1, publish("$SYS/x", QoS::ExactlyOnce, 2, "x"));
    let out = h.drain_raw();
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|t| reason_string(t).is_none()), "{out:?}");
    // DISCONNECT may still carry one.
    h.send(1, Packet::PingResp);
    assert!(reason_string(&h.drain_raw()[0]).is_some());
}

#[test]
fn reason_strings_are_left_out_when_the_packet_would_exceed_the_clients_maximum() {
    let mut h = Harness::new();
    let mut c = connect(V5, "c", true);
    c.properties.maximum_packet_size = std::num::NonZeroU32::new(16);
    c.keep_alive = 1;
    h.connected(1, c);
    h.send(1, pubrel(9));
    let out = h.drain_raw();
    assert_eq!(
        out,
        vec![packet(
            1,
            Packet::PubComp(aviary_codec::Ack {
                packet_id: pid(9),
                reason_code: ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
                properties: AckProperties::default(),
            })
        )]
    );
    h.advance_secs(2);
    assert_eq!(
        h.drain_raw(),
        vec![
            packet(
                1,
                Packet::Disconnect(Disconnect::with_reason(ReasonCode::KEEP_ALIVE_TIMEOUT))
            ),
            close(1)
        ]
    );
    let mut c = connect(V5, "d", true);
    c.properties.maximum_packet_size = std::num::NonZeroU32::new(16);
    c.properties.authentication_method = Some("X".into());
    h.open(2);
    h.send(2, Packet::Connect(Box::new(c)));
    assert_eq!(reason_string(&h.drain_raw()[0]), None);
}
