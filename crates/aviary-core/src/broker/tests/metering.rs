//! Usage metering: exact unit counts for each multiplier case.

use aviary_codec::{QoS, ReasonCode};

use super::*;

fn units(h: &Harness) -> u64 {
    h.broker.stats().units
}

/// Subscriber "sub" (persistent or not) on conn 1 to "a" at QoS 2, publisher on conn 2
/// (3.1.1, clean); returns the harness with the counter after both connects (2 units).
fn metered(persistent_subscriber: bool) -> Harness {
    let mut h = Harness::new();
    h.connected(1, connect(V3_1_1, "sub", !persistent_subscriber));
    h.subscribe(1, "a", QoS::ExactlyOnce);
    h.client(2, "pub");
    assert_eq!(units(&h), 2);
    h
}

#[test]
fn qos0_counts_1_each_way() {
    let mut h = metered(false);
    h.send(2, publish("a", QoS::AtMostOnce, 0, "x"));
    h.drain();
    assert_eq!(units(&h), 2 + 1 + 1);
}

#[test]
fn qos1_counts_2_with_clean_sessions_and_5_with_persistent_ones() {
    let mut h = metered(false);
    h.send(2, publish("a", QoS::AtLeastOnce, 1, "x"));
    h.drain();
    assert_eq!(units(&h), 2 + 2 + 2);
    let mut h = metered(true);
    h.send(2, publish("a", QoS::AtLeastOnce, 1, "x"));
    h.drain();
    assert_eq!(units(&h), 2 + 2 + 5);
}

/// The publisher's session decides the units of its QoS 1 messages only (the core looks
/// the session up for those alone): a persistent publisher (no subscriber here) pays 5
/// for QoS 1, and as any other for QoS 0 (1), QoS 2 (5) and retained messages (10).
#[test]
fn a_persistent_publishers_qos1_counts_5_and_its_other_messages_as_usual() {
    let mut h = Harness::new();
    h.connected(2, connect(V3_1_1, "pub", false));
    assert_eq!(units(&h), 1);
    h.send(2, publish("a", QoS::AtLeastOnce, 1, "x"));
    h.drain();
    assert_eq!(units(&h), 1 + 5);
    h.send(2, publish("a", QoS::AtMostOnce, 0, "x"));
    assert_eq!(units(&h), 1 + 5 + 1);
    h.send(2, publish("a", QoS::ExactlyOnce, 2, "x"));
    h.drain();
    assert_eq!(units(&h), 1 + 5 + 1 + 5);
    h.send(2, retained_publish("a", QoS::AtLeastOnce, 3, "x"));
    h.drain();
    assert_eq!(units(&h), 1 + 5 + 1 + 5 + 10);
}

#[test]
fn qos2_counts_5() {
    let mut h = metered(false);
    h.send(2, publish("a", QoS::ExactlyOnce, 1, "x"));
    h.drain();
    assert_eq!(units(&h), 2 + 5 + 5);
}

#[test]
fn retained_messages_count_10() {
    let mut h = metered(false);
    h.send(2, retained_publish("a", QoS::AtMostOnce, 0, "x"));
    h.drain();
    // In with RETAIN: 10; the live copy goes out with RETAIN=0: 1.
    assert_eq!(units(&h), 2 + 10 + 1);
    // Sent on subscribe with RETAIN=1: 10.
    h.send(1, subscribe(2, &[("a", QoS::AtMostOnce)]));
    h.drain();
    assert_eq!(units(&h), 2 + 10 + 1 + 10);
}

#[test]
fn wills_count_10_and_disconnects_1() {
    let mut h = Harness::new();
    let mut c = connect(V3_1_1, "c", true);
    c.will = Some(will("w", "gone", QoS::AtMostOnce, false));
    h.connected(1, c);
    h.close(1);
    assert_eq!(units(&h), 1 + 1 + 10);
    h.client(2, "d");
    h.send(2, disconnect(ReasonCode::SUCCESS));
    assert_eq!(units(&h), 12 + 1 + 1);
}

#[test]
fn per_client_units_are_reported() {
    let mut h = metered(false);
    h.send(2, publish("a", QoS::ExactlyOnce, 1, "x"));
    h.drain();
    let mut clients: Vec<_> = h.broker.clients().map(|c| (c.client_id, c.units)).collect();
    clients.sort();
    assert_eq!(
        clients,
        vec![("pub".to_owned(), 1 + 5), ("sub".to_owned(), 1 + 5)]
    );
}
