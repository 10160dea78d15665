//! Persistent sessions: offline queueing, resumption with resends, expiry.

use aviary_codec::{QoS, ReasonCode};

use super::*;

/// A persistent 3.1.1 subscriber "sub" to "a" at `qos`, now offline; publisher on conn 2.
fn offline_subscriber(h: &mut Harness, qos: QoS) {
    h.connected(1, connect(V3_1_1, "sub", false));
    h.subscribe(1, "a", qos);
    h.close(1);
    h.client(2, "pub");
}

#[test]
fn offline_persistent_session_queues_qos1_and_2_but_not_qos0() {
    let mut h = Harness::new();
    offline_subscriber(&mut h, QoS::ExactlyOnce);
    h.send(2, publish("a", QoS::AtMostOnce, 0, "0"));
    h.send(2, publish("a", QoS::AtLeastOnce, 1, "1"));
    h.send(2, publish("a", QoS::ExactlyOnce, 2, "2"));
    h.drain();
    assert_eq!(h.broker.stats().dropped.qos0_offline, 1);
    assert_eq!(
        h.connect(3, connect(V3_1_1, "sub", false)),
        vec![
            packet(3, connack(true, ReasonCode::SUCCESS)),
            packet(3, delivered("a", QoS::AtLeastOnce, 1, "1")),
            packet(3, delivered("a", QoS::ExactlyOnce, 2, "2")),
        ]
    );
}

#[test]
fn mqtt_4_4_0_1_unacknowledged_messages_are_resent_on_resumption_in_order_with_dup() {
    let mut h = Harness::new();
    h.connected(1, connect(V3_1_1, "sub", false));
    h.subscribe(1, "a", QoS::ExactlyOnce);
    h.client(2, "pub");
    h.send(2, publish("a", QoS::AtLeastOnce, 1, "1"));
    h.send(2, publish("a", QoS::ExactlyOnce, 2, "2"));
    h.send(2, publish("a", QoS::ExactlyOnce, 3, "3"));
    h.drain();
    // Message 3 reached PUBREC: it is resent as PUBREL.
    h.send(1, pubrec(3));
    assert_eq!(h.drain(), vec![packet(1, pubrel(3))]);
    h.close(1);
    assert_eq!(
        h.connect(4, connect(V3_1_1, "sub", false)),
        vec![
            packet(4, connack(true, ReasonCode::SUCCESS)),
            packet(4, with_dup(delivered("a", QoS::AtLeastOnce, 1, "1"))),
            packet(4, with_dup(delivered("a", QoS::ExactlyOnce, 2, "2"))),
            packet(4, pubrel(3)),
        ]
    );
    h.send(4, puback(1));
    h.send(4, pubrec(2));
    assert_eq!(h.drain(), vec![packet(4, pubrel(2))]);
    h.send(4, pubcomp(2));
    h.send(4, pubcomp(3));
    assert_eq!(h.drain(), vec![]);
}

#[test]
fn resumption_resends_in_flight_before_queued_messages() {
    let mut h = Harness::with_config(BrokerConfig {
        max_inflight: 1,
        ..BrokerConfig::default()
    });
    h.connected(1, connect(V3_1_1, "sub", false));
    h.subscribe(1, "a", QoS::AtLeastOnce);
    h.client(2, "pub");
    h.send(2, publish("a", QoS::AtLeastOnce, 1, "1"));
    h.send(2, publish("a", QoS::AtLeastOnce, 2, "2"));
    h.drain();
    h.close(1);
    assert_eq!(
        h.connect(3, connect(V3_1_1, "sub", false)),
        vec![
            packet(3, connack(true, ReasonCode::SUCCESS)),
            packet(3, with_dup(delivered("a", QoS::AtLeastOnce, 1, "1"))),
        ]
    );
    h.send(3, puback(1));
    assert_eq!(
        h.drain(),
        vec![packet(3, delivered("a", QoS::AtLeastOnce, 2, "2"))]
    );
}

#[test]
fn v3_persistent_session_does_not_expire() {
    let mut h = Harness::new();
    offline_subscriber(&mut h, QoS::AtLeastOnce);
    h.advance_secs(10 * 365 * 24 * 3600);
    assert_eq!(h.broker.stats().sessions, 2);
}

#[test]
fn v5_session_expires_after_its_interval() {
    let mut h = Harness::new();
    h.connected(1, connect_v5_expiry("sub", true, 60));
    h.subscribe(1, "a", QoS::AtLeastOnce);
    h.close(1);
    h.advance_secs(59);
    assert_eq!(h.broker.stats().sessions, 1);
    h.advance_secs(1);
    assert_eq!(h.broker.stats().sessions, 0);
    assert_eq!(h.broker.stats().subscriptions, 0);
    assert_eq!(
        h.connect(2, connect_v5_expiry("sub", false, 60)),
        vec![packet(
            2,
            aviary_codec::Packet::ConnAck(Box::new(aviary_codec::ConnAck {
                session_present: false,
                reason_code: ReasonCode::SUCCESS,
                properties: v5_connack_properties(),
            }))
        )]
    );
}

#[test]
fn reconnecting_stops_the_session_expiry() {
    let mut h = Harness::new();
    h.connected(1, connect_v5_expiry("sub", true, 60));
    h.close(1);
    h.advance_secs(30);
    h.connected(2, connect_v5_expiry("sub", false, 60));
    h.advance_secs(100);
    assert_eq!(h.broker.stats().sessions, 1);
}

#[test]
fn mqtt_3_14_2_2_disconnect_may_not_turn_expiry_0_into_non_zero() {
    let mut h = Harness::new();
    h.client_v5(1, "c");
    h.send(1, disconnect_with_expiry(30));
    assert_eq!(
        h.drain(),
        vec![packet(1, disconnect(ReasonCode::PROTOCOL_ERROR)), close(1)]
    );
}

#[test]
fn disconnect_can_change_a_non_zero_session_expiry() {
    let mut h = Harness::new();
    h.connected(1, connect_v5_expiry("c", true, 30));
    h.send(1, disconnect_with_expiry(0));
    assert_eq!(h.drain(), vec![close(1)]);
    assert_eq!(h.broker.stats().sessions, 0);
    h.connected(2, connect_v5_expiry("d", true, 30));
    h.send(2, disconnect_with_expiry(300));
    h.drain();
    h.advance_secs(299);
    assert_eq!(h.broker.stats().sessions, 1);
    h.advance_secs(1);
    assert_eq!(h.broker.stats().sessions, 0);
}

#[test]
fn queued_messages_for_an_offline_session_are_bounded() {
    let mut h = Harness::with_config(BrokerConfig {
        max_queued_messages: 2,
        ..BrokerConfig::default()
    });
    offline_subscriber(&mut h, QoS::AtLeastOnce);
    for n in 1..=4 {
        h.send(2, publish("a", QoS::AtLeastOnce, n, &n.to_string()));
    }
    h.drain();
    assert_eq!(h.broker.stats().dropped.queue_full, 2);
    let out = h.connect(3, connect(V3_1_1, "sub", false));
    assert_eq!(
        out[1..],
        [
            packet(3, delivered("a", QoS::AtLeastOnce, 1, "1")),
            packet(3, delivered("a", QoS::AtLeastOnce, 2, "2")),
        ]
    );
}

#[test]
fn takeover_of_a_persistent_session_resends_its_in_flight_messages_on_the_new_connection() {
    let mut h = Harness::new();
    h.connected(1, connect(V3_1_1, "sub", false));
    h.subscribe(1, "a", QoS::AtLeastOnce);
    h.client(2, "pub");
    h.send(2, publish("a", QoS::AtLeastOnce, 1, "x"));
    h.drain();
    assert_eq!(
        h.connect(3, connect(V3_1_1, "sub", false)),
        vec![
            close(1),
            packet(3, connack(true, ReasonCode::SUCCESS)),
            packet(3, with_dup(delivered("a", QoS::AtLeastOnce, 1, "x"))),
        ]
    );
    // The old connection's late packets are ignored.
    h.send(1, puback(1));
    h.send(3, puback(1));
    assert_eq!(h.drain(), vec![]);
}

#[test]
fn subscriptions_of_a_persistent_session_survive_reconnection() {
    let mut h = Harness::new();
    h.connected(1, connect_v5_expiry("sub", true, 100));
    h.subscribe(1, "a", QoS::AtMostOnce);
    h.close(1);
    h.connected(2, connect_v5_expiry("sub", false, 100));
    h.client(3, "pub");
    h.send(3, publish("a", QoS::AtMostOnce, 0, "x"));
    assert_eq!(
        h.drain_packets(2),
        vec![delivered("a", QoS::AtMostOnce, 0, "x")]
    );
}

#[test]
fn v5_session_expiry_u32_max_never_expires() {
    let mut h = Harness::new();
    h.connected(1, connect_v5_expiry("sub", true, u32::MAX));
    h.close(1);
    h.advance_secs(u64::from(u32::MAX) + 10);
    assert_eq!(h.broker.stats().sessions, 1);
}

#[test]
fn refused_connects_do_not_take_connection_slots() {
    let mut h = Harness::with_config(BrokerConfig {
        max_connections: 1,
        ..BrokerConfig::default()
    });
    h.connect(1, connect(V3_1_1, "", false));
    h.connect(2, connect(V5, "x".repeat(300).as_str(), true));
    assert_eq!(h.broker.stats().connects_refused, 2);
    assert_eq!(h.broker.stats().connections, 0);
    h.client(3, "ok");
}
