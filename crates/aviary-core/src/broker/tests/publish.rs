//! PUBLISH in both directions: the QoS 0/1/2 flows, downgrade, overlapping subscriptions,
//! No Local, exactly-once on the receiving side.

use aviary_codec::{Packet, QoS, ReasonCode};

use super::*;

/// Subscriber on conn 1 ("sub", filter at qos), publisher on conn 2 ("pub").
fn pair(filter: &str, qos: QoS) -> Harness {
    let mut h = Harness::new();
    h.client(1, "sub");
    h.subscribe(1, filter, qos);
    h.client(2, "pub");
    h
}

#[test]
fn qos0_is_forwarded_without_ack() {
    let mut h = pair("a/+", QoS::AtMostOnce);
    h.send(2, publish("a/b", QoS::AtMostOnce, 0, "hi"));
    assert_eq!(
        h.drain(),
        vec![packet(1, delivered("a/b", QoS::AtMostOnce, 0, "hi"))]
    );
    assert_eq!(h.broker.stats().messages_in, 1);
    assert_eq!(h.broker.stats().messages_out, 1);
}

#[test]
fn qos1_flow_both_ways() {
    let mut h = pair("a", QoS::AtLeastOnce);
    h.send(2, publish("a", QoS::AtLeastOnce, 7, "x"));
    assert_eq!(
        h.drain(),
        vec![
            packet(2, puback(7)),
            packet(1, delivered("a", QoS::AtLeastOnce, 1, "x")),
        ]
    );
    h.send(1, puback(1));
    assert_eq!(h.drain(), vec![]);
}

/// The server wakes connections in transmit order and tokio runs the last one woken first:
/// the ack to the publisher comes out ahead of the deliveries its message caused, so the
/// subscribers' writes are not held up by the publisher's. A publisher subscribed to its
/// own topic gets its ack before its copy.
#[test]
fn the_publishers_ack_comes_out_before_the_deliveries_of_its_message() {
    let mut h = pair("a", QoS::AtLeastOnce);
    h.subscribe(2, "a", QoS::AtLeastOnce);
    h.client(3, "other");
    h.subscribe(3, "a", QoS::ExactlyOnce);
    h.send(2, publish("a", QoS::AtLeastOnce, 7, "x"));
    let order: Vec<(u64, &str)> = h
        .drain()
        .iter()
        .map(|t| match t {
            Transmit::Packet { conn, packet } => (
                conn.0,
                match packet {
                    Packet::PubAck(_) => "puback",
                    Packet::Publish(_) => "publish",
                    _ => "other",
                },
            ),
            Transmit::Close { conn } => (conn.0, "close"),
        })
        .collect();
    assert_eq!(order[0], (2, "puback"));
    let mut deliveries = order[1..].to_vec();
    deliveries.sort_unstable();
    assert_eq!(
        deliveries,
        vec![(1, "publish"), (2, "publish"), (3, "publish")]
    );
    // The same for QoS 2's PUBREC.
    h.send(2, publish("a", QoS::ExactlyOnce, 8, "y"));
    let first = h.drain().into_iter().next();
    assert_eq!(first, Some(packet(2, pubrec(8))));
}

#[test]
fn qos2_flow_both_ways() {
    let mut h = pair("a", QoS::ExactlyOnce);
    h.send(2, publish("a", QoS::ExactlyOnce, 9, "x"));
    assert_eq!(
        h.drain(),
        vec![
            packet(2, pubrec(9)),
            packet(1, delivered("a", QoS::ExactlyOnce, 1, "x")),
        ]
    );
    h.send(2, pubrel(9));
    assert_eq!(h.drain(), vec![packet(2, pubcomp(9))]);
    h.send(1, pubrec(1));
    assert_eq!(h.drain(), vec![packet(1, pubrel(1))]);
    h.send(1, pubcomp(1));
    assert_eq!(h.drain(), vec![]);
}

#[test]
fn mqtt_4_3_3_qos2_resent_before_pubrel_is_not_delivered_twice() {
    let mut h = pair("a", QoS::ExactlyOnce);
    h.send(2, publish("a", QoS::ExactlyOnce, 9, "x"));
    h.drain();
    h.send(2, with_dup(publish("a", QoS::ExactlyOnce, 9, "x")));
    assert_eq!(h.drain(), vec![packet(2, pubrec(9))]);
    h.send(2, pubrel(9));
    assert_eq!(h.drain(), vec![packet(2, pubcomp(9))]);
    // After PUBREL the id is free: a new message with it is delivered.
    h.send(2, publish("a", QoS::ExactlyOnce, 9, "y"));
    assert_eq!(
        h.drain(),
        vec![
            packet(2, pubrec(9)),
            packet(1, delivered("a", QoS::ExactlyOnce, 2, "y")),
        ]
    );
}

#[test]
fn mqtt_4_3_3_qos2_state_survives_reconnection_of_a_persistent_session() {
    let mut h = Harness::new();
    h.client(1, "sub");
    h.subscribe(1, "a", QoS::AtMostOnce);
    h.connected(2, connect(V3_1_1, "pub", false));
    h.send(2, publish("a", QoS::ExactlyOnce, 5, "x"));
    h.drain();
    h.close(2);
    h.connected(3, connect(V3_1_1, "pub", false));
    h.send(3, with_dup(publish("a", QoS::ExactlyOnce, 5, "x")));
    assert_eq!(h.drain(), vec![packet(3, pubrec(5))]);
    h.send(3, pubrel(5));
    assert_eq!(h.drain(), vec![packet(3, pubcomp(5))]);
}

#[test]
fn pubrel_for_unknown_id_gets_pubcomp_0x92_in_v5() {
    let mut h = Harness::new();
    h.client_v5(1, "a");
    h.send(1, pubrel(3));
    assert_eq!(
        h.drain(),
        vec![packet(
            1,
            Packet::PubComp(ack(3, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND))
        )]
    );
    h.client(2, "b");
    h.send(2, pubrel(3));
    assert_eq!(h.drain(), vec![packet(2, pubcomp(3))]);
}

#[test]
fn mqtt_3_8_4_8_qos_is_downgraded_to_the_subscription() {
    let mut h = pair("a", QoS::AtLeastOnce);
    h.send(2, publish("a", QoS::ExactlyOnce, 1, "x"));
    assert_eq!(
        h.drain(),
        vec![
            packet(2, pubrec(1)),
            packet(1, delivered("a", QoS::AtLeastOnce, 1, "x")),
        ]
    );
    let mut h = pair("a", QoS::ExactlyOnce);
    h.send(2, publish("a", QoS::AtMostOnce, 0, "x"));
    assert_eq!(
        h.drain(),
        vec![packet(1, delivered("a", QoS::AtMostOnce, 0, "x"))]
    );
}

#[test]
fn mqtt_3_3_4_2_overlapping_subscriptions_give_one_copy_at_the_highest_qos() {
    let mut h = Harness::new();
    h.client(1, "sub");
    h.send(
        1,
        subscribe(
            1,
            &[
                ("a/+", QoS::AtMostOnce),
                ("a/#", QoS::ExactlyOnce),
                ("a/b", QoS::AtLeastOnce),
            ],
        ),
    );
    assert_eq!(h.drain(), vec![packet(1, suback(1, &[0, 2, 1]))]);
    h.client(2, "pub");
    h.send(2, publish("a/b", QoS::ExactlyOnce, 4, "x"));
    assert_eq!(
        h.drain(),
        vec![
            packet(2, pubrec(4)),
            packet(1, delivered("a/b", QoS::ExactlyOnce, 1, "x")),
        ]
    );
}

#[test]
fn message_goes_to_every_matching_session() {
    let mut h = Harness::new();
    h.client(1, "s1");
    h.subscribe(1, "a/#", QoS::AtMostOnce);
    h.client(2, "s2");
    h.subscribe(2, "+/b", QoS::AtMostOnce);
    h.client(3, "s3");
    h.subscribe(3, "c", QoS::AtMostOnce);
    h.send(3, publish("a/b", QoS::AtMostOnce, 0, "x"));
    let mut out = h.drain();
    out.sort_by_key(|t| format!("{t:?}"));
    assert_eq!(
        out,
        vec![
            packet(1, delivered("a/b", QoS::AtMostOnce, 0, "x")),
            packet(2, delivered("a/b", QoS::AtMostOnce, 0, "x")),
        ]
    );
}

#[test]
fn publisher_receives_its_own_message_without_no_local() {
    let mut h = Harness::new();
    h.client(1, "c");
    h.subscribe(1, "a", QoS::AtMostOnce);
    h.send(1, publish("a", QoS::AtMostOnce, 0, "x"));
    assert_eq!(
        h.drain(),
        vec![packet(1, delivered("a", QoS::AtMostOnce, 0, "x"))]
    );
}

#[test]
fn mqtt_4_7_2_1_wildcards_do_not_match_dollar_topics() {
    let mut h = pair("#", QoS::AtMostOnce);
    h.send(2, publish("$data/x", QoS::AtMostOnce, 0, "x"));
    assert_eq!(h.drain(), vec![]);
    h.subscribe(1, "$data/+", QoS::AtMostOnce);
    h.send(2, publish("$data/x", QoS::AtMostOnce, 0, "x"));
    assert_eq!(
        h.drain(),
        vec![packet(1, delivered("$data/x", QoS::AtMostOnce, 0, "x"))]
    );
}

#[test]
fn clients_cannot_publish_on_the_brokers_reserved_topics() {
    let mut h = pair("$SYS/#", QoS::AtLeastOnce);
    h.subscribe(1, "$events/#", QoS::AtLeastOnce);
    h.send(2, publish("$SYS/x", QoS::AtMostOnce, 0, "x"));
    h.send(2, publish("$events/x", QoS::AtLeastOnce, 1, "x"));
    h.send(2, publish("$SYS/y", QoS::ExactlyOnce, 2, "x"));
    h.send(2, pubrel(2));
    assert_eq!(
        h.drain(),
        vec![
            packet(2, puback(1)),
            packet(2, pubrec(2)),
            packet(2, pubcomp(2))
        ]
    );
    h.client_v5(3, "v5");
    h.send(3, publish("$SYS/x", QoS::AtLeastOnce, 1, "x"));
    h.send(3, publish("$SYS/x", QoS::ExactlyOnce, 2, "x"));
    assert_eq!(
        h.drain(),
        vec![
            packet(3, Packet::PubAck(ack(1, ReasonCode::NOT_AUTHORIZED))),
            packet(3, Packet::PubRec(ack(2, ReasonCode::NOT_AUTHORIZED))),
        ]
    );
    assert_eq!(h.broker.stats().dropped.reserved_topic, 5);
    // The broker itself may publish there.
    h.broker.publish(
        topic("$SYS/uptime"),
        bytes::Bytes::from_static(b"1"),
        QoS::AtMostOnce,
        false,
        Default::default(),
        h.now,
    );
    assert_eq!(
        h.drain(),
        vec![packet(1, delivered("$SYS/uptime", QoS::AtMostOnce, 0, "1"))]
    );
}

#[test]
fn packet_ids_are_allocated_per_session_and_skip_ids_in_flight() {
    let mut h = pair("a", QoS::AtLeastOnce);
    for i in 0..3 {
        h.send(2, publish("a", QoS::AtLeastOnce, 10 + i, "x"));
    }
    let ids: Vec<u16> = h
        .drain_packets(1)
        .into_iter()
        .map(|p| match p {
            Packet::Publish(p) => p.packet_id.unwrap().get(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, vec![1, 2, 3]);
}

#[test]
fn packet_id_wraps_around_and_skips_one_still_in_flight() {
    let mut h = pair("a", QoS::AtLeastOnce);
    // Message 1 stays unacknowledged; 65,534 more are acknowledged one by one.
    h.send(2, publish("a", QoS::AtLeastOnce, 1, "first"));
    h.drain();
    for n in 2..=u16::MAX {
        h.send(2, publish("a", QoS::AtLeastOnce, 1, "y"));
        let out = h.drain_packets(1);
        assert_eq!(out, vec![delivered("a", QoS::AtLeastOnce, n, "y")]);
        h.send(1, puback(n));
    }
    // Wrapped: 1 is still in flight, so 2 is next.
    h.send(2, publish("a", QoS::AtLeastOnce, 1, "z"));
    assert_eq!(
        h.drain_packets(1),
        vec![delivered("a", QoS::AtLeastOnce, 2, "z")]
    );
}

#[test]
fn puback_for_unknown_id_is_ignored() {
    let mut h = pair("a", QoS::AtLeastOnce);
    h.send(1, puback(42));
    h.send(1, pubcomp(42));
    assert_eq!(h.drain(), vec![]);
    assert_eq!(h.broker.stats().connections, 2);
}

#[test]
fn max_topic_levels_refuses_deeper_publish() {
    let mut h = Harness::with_config(BrokerConfig {
        max_topic_levels: 3,
        ..BrokerConfig::default()
    });
    h.client(1, "a");
    h.send(1, publish("a/b/c", QoS::AtMostOnce, 0, "x"));
    assert_eq!(h.drain(), vec![]);
    h.send(1, publish("a/b/c/d", QoS::AtMostOnce, 0, "x"));
    assert_eq!(h.drain(), vec![close(1)]);
    h.client_v5(2, "b");
    h.send(2, publish("a/b/c/d", QoS::AtLeastOnce, 1, "x"));
    assert_eq!(
        h.drain(),
        vec![
            packet(2, disconnect(ReasonCode::TOPIC_NAME_INVALID)),
            close(2)
        ]
    );
}

/// At the default limit (128) names shorter than 128 bytes skip the level count (they
/// cannot have more than 128 levels); the boundary is exact on both sides.
#[test]
fn max_topic_levels_boundary_at_the_default_limit() {
    let mut h = Harness::new();
    assert_eq!(BrokerConfig::default().max_topic_levels, 128);
    h.client(1, "a");
    h.subscribe(1, "#", QoS::AtMostOnce);
    // 127 bytes, 128 levels (all empty): allowed.
    let deepest = "/".repeat(127);
    h.send(1, publish(&deepest, QoS::AtMostOnce, 0, "x"));
    assert_eq!(
        h.drain(),
        vec![packet(1, publish(&deepest, QoS::AtMostOnce, 0, "x"))]
    );
    // 128 bytes, 128 levels: allowed.
    let long = format!("{}a", "/".repeat(127));
    h.send(1, publish(&long, QoS::AtMostOnce, 0, "x"));
    assert_eq!(
        h.drain(),
        vec![packet(1, publish(&long, QoS::AtMostOnce, 0, "x"))]
    );
    // 128 bytes, 129 levels: refused.
    h.send(1, publish(&"/".repeat(128), QoS::AtMostOnce, 0, "x"));
    assert_eq!(h.drain(), vec![close(1)]);
}

#[test]
fn payload_is_shared_not_copied_per_subscriber() {
    let mut h = Harness::new();
    h.client(1, "s1");
    h.subscribe(1, "a", QoS::AtMostOnce);
    h.client(2, "s2");
    h.subscribe(2, "a", QoS::AtMostOnce);
    let payload = bytes::Bytes::from(vec![7u8; 1000]);
    let Packet::Publish(mut p) = publish("a", QoS::AtMostOnce, 0, "") else {
        unreachable!()
    };
    p.payload = payload.clone();
    h.send(1, Packet::Publish(p));
    for t in h.drain() {
        let Transmit::Packet {
            packet: Packet::Publish(p),
            ..
        } = t
        else {
            panic!("{t:?}")
        };
        assert_eq!(p.payload.as_ptr(), payload.as_ptr());
    }
}
