//! CONNECT / CONNACK: admission rules, client identifiers, takeover, session present,
//! keep alive.

use std::time::Duration;

use aviary_codec::properties::ConnAckProperties;
use aviary_codec::{ConnAck, DecodeError, Packet, QoS, ReasonCode};

use super::*;

fn connack_v5(session_present: bool, properties: ConnAckProperties) -> Packet {
    Packet::ConnAck(Box::new(ConnAck {
        session_present,
        reason_code: ReasonCode::SUCCESS,
        properties,
    }))
}

#[test]
fn connack_accepts_3_1_1_client() {
    let mut h = Harness::new();
    assert_eq!(
        h.connect(1, connect(V3_1_1, "c1", true)),
        vec![packet(1, connack(false, ReasonCode::SUCCESS))]
    );
    assert_eq!(h.broker.connection_protocol(ConnId(1)), Some(V3_1_1));
    assert_eq!(h.broker.stats().connections, 1);
}

#[test]
fn connack_accepts_3_1_client() {
    let mut h = Harness::new();
    assert_eq!(
        h.connect(1, connect(V3_1, "c1", true)),
        vec![packet(1, connack(false, ReasonCode::SUCCESS))]
    );
}

#[test]
fn v5_connack_announces_limits_and_features() {
    let mut h = Harness::new();
    assert_eq!(
        h.connect(1, connect(V5, "c1", true)),
        vec![packet(1, connack_v5(false, v5_connack_properties()))]
    );
}

#[test]
fn mqtt_3_1_0_1_first_packet_must_be_connect() {
    let mut h = Harness::new();
    h.open(1);
    h.send(1, Packet::PingReq);
    assert_eq!(h.drain(), vec![close(1)]);
    // Later packets on the forgotten connection are ignored.
    h.send(1, Packet::PingReq);
    assert_eq!(h.drain(), vec![]);
}

#[test]
fn mqtt_3_1_0_2_second_connect_is_a_protocol_error() {
    let mut h = Harness::new();
    h.client(1, "c1");
    h.send(1, Packet::Connect(Box::new(connect(V3_1_1, "c1", true))));
    assert_eq!(h.drain(), vec![close(1)]);

    h.client_v5(2, "c2");
    h.send(2, Packet::Connect(Box::new(connect(V5, "c2", true))));
    assert_eq!(
        h.drain(),
        vec![packet(2, disconnect(ReasonCode::PROTOCOL_ERROR)), close(2)]
    );
    assert_eq!(h.broker.stats().connections, 0);
}

#[test]
fn mqtt_3_1_3_8_empty_client_id_with_clean_session_0_is_rejected() {
    let mut h = Harness::new();
    assert_eq!(
        h.connect(1, connect(V3_1_1, "", false)),
        vec![
            packet(1, connack(false, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID)),
            close(1)
        ]
    );
    assert_eq!(h.broker.stats().connects_refused, 1);
}

#[test]
fn mqtt_3_1_3_6_empty_client_id_with_clean_session_1_is_assigned() {
    let mut h = Harness::new();
    assert_eq!(
        h.connect(1, connect(V3_1_1, "", true)),
        vec![packet(1, connack(false, ReasonCode::SUCCESS))]
    );
    let id = h.broker.connection_client_id(ConnId(1)).unwrap().to_owned();
    assert!(!id.is_empty());
    h.connected(2, connect(V3_1_1, "", true));
    assert_ne!(h.broker.connection_client_id(ConnId(2)).unwrap(), id);
}

#[test]
fn mqtt_3_1_empty_client_id_is_rejected() {
    let mut h = Harness::new();
    assert_eq!(
        h.connect(1, connect(V3_1, "", true)),
        vec![
            packet(1, connack(false, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID)),
            close(1)
        ]
    );
}

#[test]
fn mqtt_3_1_client_id_longer_than_23_is_accepted_up_to_the_maximum() {
    let mut h = Harness::new();
    let id = "x".repeat(40);
    h.connected(1, connect(V3_1, &id, true));
}

#[test]
fn mqtt_3_2_2_16_v5_empty_client_id_is_assigned_and_returned() {
    let mut h = Harness::new();
    let out = h.connect(1, connect(V5, "", false));
    let id = h.broker.connection_client_id(ConnId(1)).unwrap().to_owned();
    let properties = ConnAckProperties {
        assigned_client_identifier: Some(id),
        ..v5_connack_properties()
    };
    assert_eq!(out, vec![packet(1, connack_v5(false, properties))]);
}

#[test]
fn client_id_longer_than_the_maximum_is_rejected() {
    let mut h = Harness::with_config(BrokerConfig {
        max_client_id_len: 8,
        ..BrokerConfig::default()
    });
    assert_eq!(
        h.connect(1, connect(V3_1_1, "123456789", true)),
        vec![
            packet(1, connack(false, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID)),
            close(1)
        ]
    );
    assert_eq!(
        h.connect(2, connect(V5, "123456789", true)),
        vec![
            packet(2, connack(false, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID)),
            close(2)
        ]
    );
    h.client(3, "12345678");
}

#[test]
fn max_connections_refuses_with_0x03_in_3_x_and_0x97_in_5_0() {
    let mut h = Harness::with_config(BrokerConfig {
        max_connections: 1,
        ..BrokerConfig::default()
    });
    h.client(1, "a");
    assert_eq!(
        h.connect(2, connect(V3_1_1, "b", true)),
        vec![
            packet(2, connack(false, ReasonCode::SERVER_UNAVAILABLE)),
            close(2)
        ]
    );
    assert_eq!(
        h.connect(3, connect(V5, "b", true)),
        vec![
            packet(3, connack(false, ReasonCode::QUOTA_EXCEEDED)),
            close(3)
        ]
    );
    // Taking over the connected client id does not need a new slot.
    assert_eq!(
        h.connect(4, connect(V3_1_1, "a", true)),
        vec![close(1), packet(4, connack(false, ReasonCode::SUCCESS))]
    );
    // A slot frees up when a client leaves.
    h.send(4, disconnect(ReasonCode::SUCCESS));
    h.drain();
    h.client(5, "b");
}

#[test]
fn v5_authentication_method_gets_0x8c() {
    let mut h = Harness::new();
    let mut c = connect(V5, "c1", true);
    c.properties.authentication_method = Some("SCRAM-SHA-1".into());
    assert_eq!(
        h.connect(1, c),
        vec![
            packet(1, connack(false, ReasonCode::BAD_AUTHENTICATION_METHOD)),
            close(1)
        ]
    );
}

#[test]
fn mqtt_3_1_4_3_takeover_disconnects_the_old_v5_connection_with_0x8e() {
    let mut h = Harness::new();
    h.client_v5(1, "c1");
    assert_eq!(
        h.connect(2, connect(V5, "c1", true)),
        vec![
            packet(1, disconnect(ReasonCode::SESSION_TAKEN_OVER)),
            close(1),
            packet(2, connack_v5(false, v5_connack_properties())),
        ]
    );
    assert_eq!(h.broker.stats().connections, 1);
    // The old connection is forgotten: its late close changes nothing.
    h.close(1);
    assert_eq!(h.broker.stats().connections, 1);
    h.send(2, Packet::PingReq);
    assert_eq!(h.drain(), vec![packet(2, Packet::PingResp)]);
}

#[test]
fn mqtt_3_1_4_3_takeover_closes_the_old_3_1_1_connection() {
    let mut h = Harness::new();
    h.connected(1, connect(V3_1_1, "c1", false));
    h.subscribe(1, "t", QoS::AtLeastOnce);
    assert_eq!(
        h.connect(2, connect(V3_1_1, "c1", false)),
        vec![close(1), packet(2, connack(true, ReasonCode::SUCCESS))]
    );
}

#[test]
fn mqtt_3_2_2_session_present_flag() {
    let mut h = Harness::new();
    // No session yet [MQTT-3.2.2-3].
    assert_eq!(
        h.connect(1, connect(V3_1_1, "c1", false)),
        vec![packet(1, connack(false, ReasonCode::SUCCESS))]
    );
    h.close(1);
    // Resumed [MQTT-3.2.2-2].
    assert_eq!(
        h.connect(2, connect(V3_1_1, "c1", false)),
        vec![packet(2, connack(true, ReasonCode::SUCCESS))]
    );
    h.close(2);
    // Clean session discards it [MQTT-3.2.2-1].
    assert_eq!(
        h.connect(3, connect(V3_1_1, "c1", true)),
        vec![packet(3, connack(false, ReasonCode::SUCCESS))]
    );
    h.close(3);
    // ... and a clean session does not outlive its connection.
    assert_eq!(
        h.connect(4, connect(V3_1_1, "c1", false)),
        vec![packet(4, connack(false, ReasonCode::SUCCESS))]
    );
}

#[test]
fn mqtt_3_1_2_24_keep_alive_closes_after_one_and_a_half_periods_of_silence() {
    let mut h = Harness::new();
    let mut c = connect(V3_1_1, "c1", true);
    c.keep_alive = 10;
    h.connected(1, c);
    h.advance_secs(14);
    assert_eq!(h.drain(), vec![]);
    h.advance_secs(1);
    assert_eq!(h.drain(), vec![close(1)]);
    assert_eq!(h.broker.stats().connections, 0);
}

#[test]
fn keep_alive_is_reset_by_any_packet() {
    let mut h = Harness::new();
    let mut c = connect(V3_1_1, "c1", true);
    c.keep_alive = 10;
    h.connected(1, c);
    h.advance_secs(10);
    h.send(1, Packet::PingReq);
    assert_eq!(h.drain(), vec![packet(1, Packet::PingResp)]);
    h.advance_secs(14);
    assert_eq!(h.drain(), vec![]);
    h.advance_secs(1);
    assert_eq!(h.drain(), vec![close(1)]);
}

#[test]
fn v5_keep_alive_timeout_sends_disconnect_0x8d() {
    let mut h = Harness::new();
    let mut c = connect(V5, "c1", true);
    c.keep_alive = 2;
    h.connected(1, c);
    h.advance_secs(3);
    assert_eq!(
        h.drain(),
        vec![
            packet(1, disconnect(ReasonCode::KEEP_ALIVE_TIMEOUT)),
            close(1)
        ]
    );
}

#[test]
fn keep_alive_0_never_times_out() {
    let mut h = Harness::new();
    h.client(1, "c1");
    h.advance_secs(100_000);
    assert_eq!(h.drain(), vec![]);
    assert_eq!(h.broker.poll_timeout(), None);
}

#[test]
fn mqtt_3_2_2_21_v5_client_asking_more_than_max_keep_alive_gets_server_keep_alive() {
    let mut h = Harness::with_config(BrokerConfig {
        max_keep_alive: 60,
        ..BrokerConfig::default()
    });
    let mut c = connect(V5, "c1", true);
    c.keep_alive = 100;
    let properties = ConnAckProperties {
        server_keep_alive: Some(60),
        ..v5_connack_properties()
    };
    assert_eq!(
        h.connect(1, c),
        vec![packet(1, connack_v5(false, properties.clone()))]
    );
    // Enforced as 1.5 × 60 s.
    h.advance_secs(89);
    assert_eq!(h.drain(), vec![]);
    h.advance_secs(1);
    assert_eq!(
        h.drain(),
        vec![
            packet(1, disconnect(ReasonCode::KEEP_ALIVE_TIMEOUT)),
            close(1)
        ]
    );
    // Keep alive 0 (off) is also more than the maximum.
    let c = connect(V5, "c2", true);
    assert_eq!(
        h.connect(2, c),
        vec![packet(2, connack_v5(false, properties))]
    );
    // Within the limit: as asked, nothing announced.
    let mut c = connect(V5, "c3", true);
    c.keep_alive = 30;
    assert_eq!(
        h.connect(3, c),
        vec![packet(3, connack_v5(false, v5_connack_properties()))]
    );
}

#[test]
fn v3_client_asking_more_than_max_keep_alive_is_refused() {
    let mut h = Harness::with_config(BrokerConfig {
        max_keep_alive: 60,
        ..BrokerConfig::default()
    });
    let mut c = connect(V3_1_1, "c1", true);
    c.keep_alive = 61;
    assert_eq!(
        h.connect(1, c),
        vec![
            packet(1, connack(false, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID)),
            close(1)
        ]
    );
    let mut c = connect(V3_1_1, "c1", true);
    c.keep_alive = 60;
    h.connected(2, c);
}

#[test]
fn mqtt_3_1_2_2_unsupported_protocol_level_gets_connack_0x01() {
    let mut h = Harness::new();
    h.open(1);
    h.broker.handle_decode_error(
        ConnId(1),
        &DecodeError::UnsupportedProtocolVersion { level: 6 },
        h.now,
    );
    assert_eq!(
        h.drain(),
        vec![
            packet(1, connack(false, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION)),
            close(1)
        ]
    );
}

#[test]
fn malformed_connect_closes_without_answer() {
    let mut h = Harness::new();
    h.open(1);
    h.broker
        .handle_decode_error(ConnId(1), &DecodeError::Malformed("x"), h.now);
    assert_eq!(h.drain(), vec![close(1)]);
}

#[test]
fn connection_without_connect_is_closed_after_the_connect_timeout() {
    let mut h = Harness::new();
    h.open(1);
    h.advance_secs(9);
    assert_eq!(h.drain(), vec![]);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.drain(), vec![close(1)]);
}

#[test]
fn v5_session_expiry_above_the_maximum_is_capped_and_announced() {
    let mut h = Harness::with_config(BrokerConfig {
        max_session_expiry_interval: 100,
        ..BrokerConfig::default()
    });
    let properties = ConnAckProperties {
        session_expiry_interval: Some(100),
        ..v5_connack_properties()
    };
    assert_eq!(
        h.connect(1, connect_v5_expiry("c1", true, 1000)),
        vec![packet(1, connack_v5(false, properties))]
    );
}

#[test]
fn shutdown_sends_0x8b_to_v5_clients_and_closes_all() {
    let mut h = Harness::new();
    h.client_v5(1, "a");
    h.client(2, "b");
    h.open(3);
    h.broker.handle_shutdown(h.now);
    assert_eq!(
        h.drain(),
        vec![
            packet(1, disconnect(ReasonCode::SERVER_SHUTTING_DOWN)),
            close(1),
            close(2),
            close(3),
        ]
    );
    assert_eq!(h.broker.stats().connections, 0);
}

#[test]
fn unexpected_server_packets_from_a_client_are_protocol_errors() {
    let mut h = Harness::new();
    for (conn, p) in [
        (1, Packet::PingResp),
        (2, suback(1, &[0])),
        (3, unsuback(1, &[])),
        (4, connack(false, ReasonCode::SUCCESS)),
    ] {
        h.client_v5(conn, &format!("c{conn}"));
        h.send(conn, p);
        assert_eq!(
            h.drain(),
            vec![
                packet(conn, disconnect(ReasonCode::PROTOCOL_ERROR)),
                close(conn)
            ]
        );
    }
}

#[test]
fn decode_error_on_v5_connection_sends_its_reason_code() {
    let mut h = Harness::new();
    h.client_v5(1, "c1");
    h.broker.handle_decode_error(
        ConnId(1),
        &DecodeError::PacketTooLarge { size: 10, max: 5 },
        h.now,
    );
    assert_eq!(
        h.drain(),
        vec![
            packet(1, disconnect(ReasonCode::PACKET_TOO_LARGE)),
            close(1)
        ]
    );
    h.client(2, "c2");
    h.broker
        .handle_decode_error(ConnId(2), &DecodeError::Malformed("x"), h.now);
    assert_eq!(h.drain(), vec![close(2)]);
}

#[test]
fn connection_churn_does_not_grow_the_timer_heap_without_bound() {
    let mut h = Harness::new();
    for n in 0..20_000u64 {
        let mut c = connect(V3_1_1, "churn", true);
        c.keep_alive = u16::MAX;
        h.connected(n, c);
        h.close(n);
    }
    // Each connection left a keep alive and a connect timeout entry; most were swept.
    assert!(
        h.broker.fx.timers.len() < 5_000,
        "{}",
        h.broker.fx.timers.len()
    );
    // And live timers still fire.
    let mut c = connect(V3_1_1, "live", true);
    c.keep_alive = 1;
    h.connected(100_000, c);
    h.advance(Duration::from_millis(1500));
    assert_eq!(h.drain(), vec![close(100_000)]);
}
