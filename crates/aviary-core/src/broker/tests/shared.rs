//! Shared subscriptions: one member per message, round robin, offline members, and the
//! hand-over of a leaving member's unacknowledged messages.

use std::collections::HashMap;

use aviary_codec::{Packet, QoS};

use super::*;

/// Members on conns 1..=n of `$share/g/a` at `qos`; publisher on conn 10.
fn group(h: &mut Harness, n: u64, qos: QoS) {
    for conn in 1..=n {
        h.client(conn, &format!("m{conn}"));
        h.subscribe(conn, "$share/g/a", qos);
    }
    h.client(10, "pub");
}

fn payloads_by_conn(out: Vec<Transmit>) -> HashMap<u64, Vec<String>> {
    let mut by = HashMap::new();
    for t in out {
        if let Transmit::Packet {
            conn,
            packet: Packet::Publish(p),
        } = t
        {
            by.entry(conn.0)
                .or_insert_with(Vec::new)
                .push(String::from_utf8(p.payload.to_vec()).unwrap());
        }
    }
    by
}

#[test]
fn each_message_goes_to_one_member_round_robin() {
    let mut h = Harness::new();
    group(&mut h, 3, QoS::AtMostOnce);
    for n in 0..6 {
        h.send(10, publish("a", QoS::AtMostOnce, 0, &n.to_string()));
    }
    let by = payloads_by_conn(h.drain());
    assert_eq!(by.len(), 3);
    let mut all: Vec<String> = by.values().flatten().cloned().collect();
    all.sort();
    assert_eq!(all, ["0", "1", "2", "3", "4", "5"]);
    for got in by.values() {
        assert_eq!(got.len(), 2, "{by:?}");
    }
}

#[test]
fn every_group_and_every_plain_subscriber_gets_a_copy() {
    let mut h = Harness::new();
    h.client(1, "m1");
    h.subscribe(1, "$share/g1/a", QoS::AtMostOnce);
    h.client(2, "m2");
    h.subscribe(2, "$share/g2/+", QoS::AtMostOnce);
    h.client(3, "plain");
    h.subscribe(3, "a", QoS::AtMostOnce);
    h.client(10, "pub");
    h.send(10, publish("a", QoS::AtMostOnce, 0, "x"));
    let by = payloads_by_conn(h.drain());
    assert_eq!(by.len(), 3);
}

#[test]
fn a_session_in_a_group_and_subscribed_plainly_gets_two_copies() {
    let mut h = Harness::new();
    h.client(1, "m1");
    h.subscribe(1, "$share/g/a", QoS::AtMostOnce);
    h.subscribe(1, "a", QoS::AtMostOnce);
    h.client(10, "pub");
    h.send(10, publish("a", QoS::AtMostOnce, 0, "x"));
    assert_eq!(h.drain_packets(1).len(), 2);
}

#[test]
fn connected_members_are_preferred_over_offline_ones() {
    let mut h = Harness::new();
    h.connected(1, connect(V3_1_1, "m1", false));
    h.subscribe(1, "$share/g/a", QoS::AtLeastOnce);
    h.close(1);
    h.client(2, "m2");
    h.subscribe(2, "$share/g/a", QoS::AtLeastOnce);
    h.client(10, "pub");
    for n in 1..=4 {
        h.send(10, publish("a", QoS::AtLeastOnce, n, "x"));
    }
    assert_eq!(h.drain_packets(2).len(), 4);
}

#[test]
fn with_no_member_connected_an_offline_member_queues_the_message() {
    let mut h = Harness::new();
    h.connected(1, connect(V3_1_1, "m1", false));
    h.subscribe(1, "$share/g/a", QoS::AtLeastOnce);
    h.close(1);
    h.client(10, "pub");
    h.send(10, publish("a", QoS::AtLeastOnce, 1, "x"));
    assert_eq!(h.drain(), vec![packet(10, puback(1))]);
    let out = h.connect(2, connect(V3_1_1, "m1", false));
    assert_eq!(out[1], packet(2, delivered("a", QoS::AtLeastOnce, 1, "x")));
}

#[test]
fn unacknowledged_messages_of_a_member_that_disconnects_go_to_another_member() {
    let mut h = Harness::new();
    group(&mut h, 2, QoS::AtLeastOnce);
    for n in 1..=4 {
        h.send(10, publish("a", QoS::AtLeastOnce, n, &n.to_string()));
    }
    let by = payloads_by_conn(h.drain());
    let got_by_1 = by[&1].clone();
    assert_eq!(got_by_1.len(), 2);
    h.close(1);
    let by = payloads_by_conn(h.drain());
    assert_eq!(by.get(&2), Some(&got_by_1));
}

#[test]
fn persistent_member_keeps_its_messages_when_no_other_member_is_connected() {
    let mut h = Harness::new();
    h.connected(1, connect(V3_1_1, "m1", false));
    h.subscribe(1, "$share/g/a", QoS::AtLeastOnce);
    h.client(10, "pub");
    h.send(10, publish("a", QoS::AtLeastOnce, 1, "x"));
    h.drain();
    h.close(1);
    assert_eq!(h.drain(), vec![]);
    let out = h.connect(2, connect(V3_1_1, "m1", false));
    assert_eq!(
        out[1],
        packet(2, with_dup(delivered("a", QoS::AtLeastOnce, 1, "x")))
    );
}

#[test]
fn unacknowledged_messages_go_to_another_member_on_unsubscribe() {
    let mut h = Harness::new();
    group(&mut h, 2, QoS::AtLeastOnce);
    for n in 1..=2 {
        h.send(10, publish("a", QoS::AtLeastOnce, n, &n.to_string()));
    }
    let by = payloads_by_conn(h.drain());
    let got_by_1 = by[&1].clone();
    h.send(1, unsubscribe(5, &["$share/g/a"]));
    let out = h.drain();
    assert_eq!(out[0], packet(1, unsuback(5, &[])));
    assert_eq!(payloads_by_conn(out).get(&2), Some(&got_by_1));
    // m1 no longer gets messages of the group.
    h.send(10, publish("a", QoS::AtLeastOnce, 3, "3"));
    assert_eq!(payloads_by_conn(h.drain()).keys().collect::<Vec<_>>(), [&2]);
}

#[test]
fn mqtt_4_8_2_4_qos2_message_in_flight_stays_with_its_member() {
    let mut h = Harness::new();
    h.connected(1, connect(V3_1_1, "m1", false));
    h.subscribe(1, "$share/g/a", QoS::ExactlyOnce);
    h.client(10, "pub");
    h.send(10, publish("a", QoS::ExactlyOnce, 1, "x"));
    h.drain();
    h.client(2, "m2");
    h.subscribe(2, "$share/g/a", QoS::ExactlyOnce);
    // m1 leaves before PUBREC: the message is not handed to m2 ...
    h.close(1);
    assert_eq!(payloads_by_conn(h.drain()), HashMap::new());
    // ... but completed with m1 when it comes back.
    let out = h.connect(3, connect(V3_1_1, "m1", false));
    assert_eq!(
        out[1],
        packet(3, with_dup(delivered("a", QoS::ExactlyOnce, 1, "x")))
    );
}

#[test]
fn mqtt_4_8_2_5_qos2_message_in_flight_is_not_sent_to_others_when_the_session_ends() {
    let mut h = Harness::new();
    group(&mut h, 2, QoS::ExactlyOnce);
    h.send(10, publish("a", QoS::ExactlyOnce, 1, "x"));
    let by = payloads_by_conn(h.drain());
    let (&holder, _) = by.iter().next().unwrap();
    h.close(holder); // clean session: it ends now
    assert_eq!(payloads_by_conn(h.drain()), HashMap::new());
}

#[test]
fn qos2_message_past_pubrec_stays_with_its_member() {
    let mut h = Harness::new();
    group(&mut h, 2, QoS::ExactlyOnce);
    h.send(10, publish("a", QoS::ExactlyOnce, 1, "x"));
    let by = payloads_by_conn(h.drain());
    let (&holder, _) = by.iter().next().unwrap();
    h.send(holder, pubrec(1));
    h.drain();
    h.close(holder);
    assert_eq!(payloads_by_conn(h.drain()), HashMap::new());
}

#[test]
fn queued_qos2_messages_not_yet_sent_go_to_another_member() {
    let mut h = Harness::with_config(BrokerConfig {
        max_inflight: 1,
        ..BrokerConfig::default()
    });
    h.client(1, "m1");
    h.subscribe(1, "$share/g/a", QoS::ExactlyOnce);
    h.client(10, "pub");
    h.send(10, publish("a", QoS::ExactlyOnce, 1, "1"));
    h.send(10, publish("a", QoS::ExactlyOnce, 2, "2"));
    h.drain();
    h.client(2, "m2");
    h.subscribe(2, "$share/g/a", QoS::ExactlyOnce);
    h.close(1);
    // "1" was in flight at QoS 2 and is lost with m1's clean session; "2" never left the
    // queue, so m2 gets it.
    assert_eq!(
        h.drain_packets(2),
        vec![delivered("a", QoS::ExactlyOnce, 1, "2")]
    );
}

#[test]
fn message_of_an_ending_session_with_no_other_member_is_counted_as_dropped() {
    let mut h = Harness::new();
    group(&mut h, 1, QoS::AtLeastOnce);
    h.send(10, publish("a", QoS::AtLeastOnce, 1, "x"));
    h.drain();
    h.close(1);
    assert_eq!(h.broker.stats().dropped.shared_no_member, 1);
}

#[test]
fn shared_qos_is_downgraded_to_the_members_subscription() {
    let mut h = Harness::new();
    group(&mut h, 1, QoS::AtMostOnce);
    h.send(10, publish("a", QoS::ExactlyOnce, 1, "x"));
    assert_eq!(
        h.drain_packets(1),
        vec![delivered("a", QoS::AtMostOnce, 0, "x")]
    );
}
