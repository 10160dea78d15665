//! Flow control: in-flight window, queue overflow policy, retries, Receive Maximum.

use std::num::NonZeroU16;

use aviary_codec::{Packet, QoS, ReasonCode};

use super::*;
use crate::QueueOverflow;

fn publish_ids(packets: &[Packet]) -> Vec<u16> {
    packets
        .iter()
        .map(|p| match p {
            Packet::Publish(p) => p.packet_id.map_or(0, |id| id.get()),
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn v3_in_flight_window_is_max_inflight_and_the_rest_waits() {
    let mut h = Harness::new();
    h.client(1, "sub");
    h.subscribe(1, "a", QoS::AtLeastOnce);
    h.client(2, "pub");
    for n in 1..=20 {
        h.send(2, publish("a", QoS::AtLeastOnce, n, "x"));
    }
    let sent = h.drain_packets(1);
    assert_eq!(publish_ids(&sent), (1..=16).collect::<Vec<_>>());
    // QoS 0 is not held back by the window.
    h.send(2, publish("a", QoS::AtMostOnce, 0, "q0"));
    assert_eq!(
        h.drain_packets(1),
        vec![delivered("a", QoS::AtMostOnce, 0, "q0")]
    );
    // Each PUBACK lets one queued message out.
    h.send(1, puback(3));
    assert_eq!(publish_ids(&h.drain_packets(1)), vec![17]);
    h.send(1, puback(1));
    h.send(1, puback(2));
    assert_eq!(publish_ids(&h.drain_packets(1)), vec![18, 19]);
}

#[test]
fn queue_overflow_drop_new_keeps_the_oldest() {
    let mut h = Harness::with_config(BrokerConfig {
        max_inflight: 1,
        max_queued_messages: 2,
        queue_overflow: QueueOverflow::DropNew,
        ..BrokerConfig::default()
    });
    h.client(1, "sub");
    h.subscribe(1, "a", QoS::AtLeastOnce);
    h.client(2, "pub");
    for n in 1..=5 {
        h.send(2, publish("a", QoS::AtLeastOnce, n, &n.to_string()));
    }
    h.drain();
    assert_eq!(h.broker.stats().dropped.queue_full, 2);
    h.send(1, puback(1));
    h.send(1, puback(2));
    h.send(1, puback(3));
    assert_eq!(
        h.drain_packets(1),
        vec![
            delivered("a", QoS::AtLeastOnce, 2, "2"),
            delivered("a", QoS::AtLeastOnce, 3, "3"),
        ]
    );
}

#[test]
fn queue_overflow_drop_oldest_keeps_the_newest() {
    let mut h = Harness::with_config(BrokerConfig {
        max_inflight: 1,
        max_queued_messages: 2,
        queue_overflow: QueueOverflow::DropOldest,
        ..BrokerConfig::default()
    });
    h.client(1, "sub");
    h.subscribe(1, "a", QoS::AtLeastOnce);
    h.client(2, "pub");
    for n in 1..=5 {
        h.send(2, publish("a", QoS::AtLeastOnce, n, &n.to_string()));
    }
    h.drain();
    assert_eq!(h.broker.stats().dropped.queue_full, 2);
    h.send(1, puback(1));
    h.send(1, puback(2));
    assert_eq!(
        h.drain_packets(1),
        vec![
            delivered("a", QoS::AtLeastOnce, 2, "4"),
            delivered("a", QoS::AtLeastOnce, 3, "5"),
        ]
    );
}

#[test]
fn v3_unacknowledged_publish_is_resent_with_dup_after_the_retry_interval() {
    let mut h = Harness::new();
    h.client(1, "sub");
    h.subscribe(1, "a", QoS::ExactlyOnce);
    h.client(2, "pub");
    h.send(2, publish("a", QoS::AtLeastOnce, 1, "1"));
    h.drain();
    h.advance_secs(60);
    h.send(2, publish("a", QoS::ExactlyOnce, 2, "2"));
    h.drain();
    h.advance_secs(60);
    assert_eq!(
        h.drain(),
        vec![packet(
            1,
            with_dup(delivered("a", QoS::AtLeastOnce, 1, "1"))
        )]
    );
    h.send(1, pubrec(2));
    assert_eq!(h.drain(), vec![packet(1, pubrel(2))]);
    // PUBREL sent at t=120 is resent at t=240; message 1 again at t=240 too.
    h.advance_secs(119);
    assert_eq!(h.drain(), vec![]);
    h.advance_secs(1);
    assert_eq!(
        h.drain(),
        vec![
            packet(1, with_dup(delivered("a", QoS::AtLeastOnce, 1, "1"))),
            packet(1, pubrel(2)),
        ]
    );
    h.send(1, puback(1));
    h.send(1, pubcomp(2));
    h.advance_secs(1000);
    assert_eq!(h.drain(), vec![]);
}

#[test]
fn retry_interval_none_turns_resending_off() {
    let mut h = Harness::with_config(BrokerConfig {
        retry_interval: None,
        ..BrokerConfig::default()
    });
    h.client(1, "sub");
    h.subscribe(1, "a", QoS::AtLeastOnce);
    h.client(2, "pub");
    h.send(2, publish("a", QoS::AtLeastOnce, 1, "1"));
    h.drain();
    h.advance_secs(10_000);
    assert_eq!(h.drain(), vec![]);
}

#[test]
fn mqtt_4_4_0_1_v5_does_not_resend_while_connected() {
    let mut h = Harness::new();
    h.client_v5(1, "sub");
    h.subscribe(1, "a", QoS::AtLeastOnce);
    h.client(2, "pub");
    h.send(2, publish("a", QoS::AtLeastOnce, 1, "1"));
    h.drain();
    h.advance_secs(10_000);
    assert_eq!(h.drain(), vec![]);
}

#[test]
fn v5_window_is_the_clients_receive_maximum() {
    let mut h = Harness::new();
    let mut c = connect(V5, "sub", true);
    c.properties.receive_maximum = NonZeroU16::new(2);
    h.connected(1, c);
    h.subscribe(1, "a", QoS::AtLeastOnce);
    h.client(2, "pub");
    for n in 1..=3 {
        h.send(2, publish("a", QoS::AtLeastOnce, n, "x"));
    }
    assert_eq!(publish_ids(&h.drain_packets(1)), vec![1, 2]);
    h.send(1, puback(1));
    assert_eq!(publish_ids(&h.drain_packets(1)), vec![3]);
}

#[test]
fn v5_window_without_receive_maximum_is_capped_by_max_inflight_v5() {
    let mut h = Harness::with_config(BrokerConfig {
        max_inflight_v5: 3,
        ..BrokerConfig::default()
    });
    h.client_v5(1, "sub");
    h.subscribe(1, "a", QoS::AtLeastOnce);
    h.client(2, "pub");
    for n in 1..=5 {
        h.send(2, publish("a", QoS::AtLeastOnce, n, "x"));
    }
    assert_eq!(publish_ids(&h.drain_packets(1)), vec![1, 2, 3]);
}

#[test]
fn mqtt_3_3_4_9_v5_client_exceeding_our_receive_maximum_gets_0x93() {
    let mut h = Harness::with_config(BrokerConfig {
        receive_maximum: 2,
        ..BrokerConfig::default()
    });
    h.client_v5(1, "pub");
    h.send(1, publish("a", QoS::ExactlyOnce, 1, "x"));
    h.send(1, publish("a", QoS::ExactlyOnce, 2, "x"));
    h.drain();
    // A QoS 1 message is acknowledged at once and does not count.
    h.send(1, publish("a", QoS::AtLeastOnce, 3, "x"));
    h.drain();
    h.send(1, publish("a", QoS::ExactlyOnce, 4, "x"));
    assert_eq!(
        h.drain(),
        vec![
            packet(1, disconnect(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED)),
            close(1)
        ]
    );
}

#[test]
fn v5_pubrec_error_code_ends_the_qos2_delivery() {
    let mut h = Harness::new();
    let mut c = connect(V5, "sub", true);
    c.properties.receive_maximum = NonZeroU16::new(1);
    h.connected(1, c);
    h.subscribe(1, "a", QoS::ExactlyOnce);
    h.client(2, "pub");
    h.send(2, publish("a", QoS::ExactlyOnce, 1, "1"));
    h.send(2, publish("a", QoS::ExactlyOnce, 2, "2"));
    h.drain();
    h.send(1, Packet::PubRec(ack(1, ReasonCode::UNSPECIFIED_ERROR)));
    assert_eq!(
        h.drain_packets(1),
        vec![delivered("a", QoS::ExactlyOnce, 2, "2")]
    );
}

#[test]
fn v5_pubrec_for_unknown_id_gets_pubrel_0x92() {
    let mut h = Harness::new();
    h.client_v5(1, "c");
    h.send(1, pubrec(9));
    assert_eq!(
        h.drain(),
        vec![packet(
            1,
            Packet::PubRel(ack(9, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND))
        )]
    );
}

#[test]
fn zero_retry_interval_turns_resending_off() {
    let mut h = Harness::with_config(BrokerConfig {
        retry_interval: Some(std::time::Duration::ZERO),
        ..BrokerConfig::default()
    });
    h.client(1, "sub");
    h.subscribe(1, "a", QoS::AtLeastOnce);
    h.client(2, "pub");
    h.send(2, publish("a", QoS::AtLeastOnce, 1, "1"));
    h.drain();
    h.advance_secs(10_000);
    assert_eq!(h.drain(), vec![]);
}

#[test]
fn v3_unacknowledged_qos2_publish_is_resent_with_dup_until_pubrec() {
    let mut h = Harness::new();
    h.client(1, "sub");
    h.subscribe(1, "a", QoS::ExactlyOnce);
    h.client(2, "pub");
    h.send(2, publish("a", QoS::ExactlyOnce, 1, "x"));
    h.drain();
    h.advance_secs(120);
    assert_eq!(
        h.drain(),
        vec![packet(
            1,
            with_dup(delivered("a", QoS::ExactlyOnce, 1, "x"))
        )]
    );
    h.send(1, pubrec(1));
    assert_eq!(h.drain(), vec![packet(1, pubrel(1))]);
    h.send(1, pubcomp(1));
    h.advance_secs(1000);
    assert_eq!(h.drain(), vec![]);
}

#[test]
fn retry_v5_turns_resending_on_for_5_0_clients() {
    let mut h = Harness::with_config(BrokerConfig {
        retry_v5: true,
        ..BrokerConfig::default()
    });
    h.client_v5(1, "sub");
    h.subscribe(1, "a", QoS::AtLeastOnce);
    h.client(2, "pub");
    h.send(2, publish("a", QoS::AtLeastOnce, 1, "1"));
    h.drain();
    h.advance_secs(120);
    assert_eq!(
        h.drain(),
        vec![packet(
            1,
            with_dup(delivered("a", QoS::AtLeastOnce, 1, "1"))
        )]
    );
}
