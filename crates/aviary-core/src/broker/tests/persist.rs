//! Persistence: the store operations the broker records, and a restart from them. A
//! [`Model`] applies the operations like a store would; [`Model::restore`] hands them to a
//! fresh broker, which is what the shell does after a crash.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use aviary_codec::{QoS, ReasonCode};

use super::*;
use crate::broker::{
    DeliveryState, PersistedDelivery, PersistedSession, Restore, RestoredDelivery, RestoredSession,
    StoreOp,
};
use crate::Message;

/// What a store would hold after applying the operations.
#[derive(Default)]
struct Model {
    sessions: BTreeMap<Arc<str>, PersistedSession>,
    deliveries: BTreeMap<(Arc<str>, u64), (PersistedDelivery, DeliveryState)>,
    qos2: BTreeSet<(Arc<str>, PacketId)>,
    retained: BTreeMap<String, Arc<Message>>,
    /// Wills of open connections (the model publishes them all at the restart, as a store
    /// does for connections without a session that outlives them).
    wills: BTreeMap<Arc<str>, Arc<Message>>,
    max_id: u64,
}

impl Model {
    fn apply(&mut self, broker: &mut Broker) {
        let mut ops = Vec::new();
        broker.drain_store_ops(&mut ops);
        for op in ops {
            match op {
                StoreOp::SessionPut { client_id, session } => {
                    self.sessions.insert(client_id, session);
                }
                StoreOp::SessionDeleted { client_id } => {
                    self.sessions.remove(&client_id);
                    self.deliveries.retain(|(c, _), _| *c != client_id);
                    self.qos2.retain(|(c, _)| *c != client_id);
                }
                StoreOp::Delivered {
                    client_id,
                    delivery_id,
                    delivery,
                    state,
                } => {
                    self.max_id = self.max_id.max(delivery_id).max(delivery.message_id);
                    self.deliveries
                        .insert((client_id, delivery_id), (delivery, state));
                }
                StoreOp::DeliveryState {
                    client_id,
                    delivery_id,
                    state,
                } => {
                    let entry = self.deliveries.get_mut(&(client_id, delivery_id));
                    entry.expect("state of a stored delivery").1 = state;
                }
                StoreOp::DeliveryDone {
                    client_id,
                    delivery_id,
                } => {
                    self.deliveries.remove(&(client_id, delivery_id));
                }
                StoreOp::Qos2Received {
                    client_id,
                    packet_id,
                } => {
                    self.qos2.insert((client_id, packet_id));
                }
                StoreOp::Qos2Released {
                    client_id,
                    packet_id,
                } => {
                    self.qos2.remove(&(client_id, packet_id));
                }
                StoreOp::RetainedSet(message) => {
                    self.retained
                        .insert(message.topic.as_str().to_owned(), message);
                }
                StoreOp::RetainedCleared(topic) => {
                    self.retained.remove(topic.as_str());
                }
                StoreOp::WillSet {
                    client_id, message, ..
                } => {
                    self.wills.insert(client_id, message);
                }
                StoreOp::WillCleared { client_id } => {
                    self.wills.remove(&client_id);
                }
            }
        }
    }

    fn restore(&self) -> Restore {
        Restore {
            sessions: self
                .sessions
                .iter()
                .map(|(client_id, session)| RestoredSession {
                    client_id: client_id.clone(),
                    session: session.clone(),
                    deliveries: self
                        .deliveries
                        .iter()
                        .filter(|((c, _), _)| c == client_id)
                        .map(|((_, id), (delivery, state))| RestoredDelivery {
                            delivery_id: *id,
                            delivery: delivery.clone(),
                            state: *state,
                        })
                        .collect(),
                    incoming_qos2: self
                        .qos2
                        .iter()
                        .filter(|(c, _)| c == client_id)
                        .map(|(_, id)| *id)
                        .collect(),
                })
                .collect(),
            retained: self.retained.values().cloned().collect(),
            next_id: self.max_id + 1,
            wills: self
                .wills
                .iter()
                .map(|(c, m)| (c.clone(), m.clone()))
                .collect(),
        }
    }
}

fn persistent() -> BrokerConfig {
    BrokerConfig {
        persistence: true,
        ..BrokerConfig::default()
    }
}

/// "Crashes" `h` and starts a new broker from what the model holds, at the same time.
fn restart(h: &mut Harness, model: &mut Model) {
    model.apply(&mut h.broker);
    let now = h.now;
    *h = Harness::with_config(persistent());
    h.now = now;
    h.broker.restore(model.restore(), now);
}

#[test]
fn clean_sessions_and_qos_0_record_nothing() {
    let mut h = Harness::with_config(persistent());
    let mut model = Model::default();
    h.client(1, "sub");
    h.subscribe(1, "a", QoS::ExactlyOnce);
    h.client(2, "pub");
    h.send(2, publish("a", QoS::AtLeastOnce, 1, "x"));
    h.send(2, publish("a", QoS::ExactlyOnce, 2, "y"));
    h.close(1);
    let mut ops = Vec::new();
    h.broker.drain_store_ops(&mut ops);
    assert!(ops.is_empty(), "{ops:?}");
    h.drain();
    let _ = &mut model;
}

#[test]
fn persistence_off_records_nothing() {
    let mut h = Harness::new();
    h.connected(1, connect(V3_1_1, "sub", false));
    h.subscribe(1, "a", QoS::AtLeastOnce);
    let mut ops = Vec::new();
    h.broker.drain_store_ops(&mut ops);
    assert!(ops.is_empty());
}

#[test]
fn queued_and_in_flight_messages_survive_a_restart_and_are_resent_with_dup() {
    let mut h = Harness::with_config(persistent());
    let mut model = Model::default();
    h.connected(1, connect(V3_1_1, "sub", false));
    h.subscribe(1, "a", QoS::ExactlyOnce);
    h.client(2, "pub");
    h.send(2, publish("a", QoS::AtLeastOnce, 1, "1"));
    h.send(2, publish("a", QoS::ExactlyOnce, 2, "2"));
    h.send(2, publish("a", QoS::ExactlyOnce, 3, "3"));
    h.send(2, publish("a", QoS::AtLeastOnce, 4, "4"));
    h.drain();
    h.send(1, puback(4)); // 4 is done
    h.send(1, pubrec(3)); // 3 awaits PUBCOMP
    h.drain();
    h.close(1);
    // Offline: queued.
    h.send(2, publish("a", QoS::AtLeastOnce, 5, "5"));
    h.drain();
    restart(&mut h, &mut model);
    assert_eq!(
        h.connect(7, connect(V3_1_1, "sub", false)),
        vec![
            packet(7, connack(true, ReasonCode::SUCCESS)),
            packet(7, with_dup(delivered("a", QoS::AtLeastOnce, 1, "1"))),
            packet(7, with_dup(delivered("a", QoS::ExactlyOnce, 2, "2"))),
            packet(7, pubrel(3)),
            // Packet ids go on after the highest one in flight.
            packet(7, delivered("a", QoS::AtLeastOnce, 4, "5")),
        ]
    );
    // The subscription came back too.
    h.client(8, "pub2");
    h.send(8, publish("a", QoS::AtLeastOnce, 1, "6"));
    assert!(h
        .drain_packets(7)
        .contains(&delivered("a", QoS::AtLeastOnce, 5, "6")));
}

#[test]
fn acknowledged_messages_are_not_resent_after_a_restart() {
    let mut h = Harness::with_config(persistent());
    let mut model = Model::default();
    h.connected(1, connect(V3_1_1, "sub", false));
    h.subscribe(1, "a", QoS::ExactlyOnce);
    h.client(2, "pub");
    h.send(2, publish("a", QoS::AtLeastOnce, 1, "1"));
    h.send(2, publish("a", QoS::ExactlyOnce, 2, "2"));
    h.drain();
    h.send(1, puback(1));
    h.send(1, pubrec(2));
    h.send(1, pubcomp(2));
    h.drain();
    model.apply(&mut h.broker);
    assert!(model.deliveries.is_empty());
    restart(&mut h, &mut model);
    assert_eq!(
        h.connect(7, connect(V3_1_1, "sub", false)),
        vec![packet(7, connack(true, ReasonCode::SUCCESS))]
    );
}

#[test]
fn spec_4_3_3_incoming_qos2_is_not_delivered_twice_across_a_restart() {
    let mut h = Harness::with_config(persistent());
    let mut model = Model::default();
    h.connected(1, connect(V3_1_1, "sub", false));
    h.subscribe(1, "a", QoS::AtLeastOnce);
    h.connected(2, connect(V3_1_1, "pub", false));
    h.send(2, publish("a", QoS::ExactlyOnce, 9, "x"));
    h.drain();
    restart(&mut h, &mut model);
    h.connected(3, connect(V3_1_1, "sub", false));
    h.connected(4, connect(V3_1_1, "pub", false));
    // The subscriber gets its copy once (resent, DUP); the publisher's resend is only
    // acknowledged.
    h.send(4, with_dup(publish("a", QoS::ExactlyOnce, 9, "x")));
    let out = h.drain();
    assert_eq!(
        out,
        vec![packet(4, Packet::PubRec(ack(9, ReasonCode::SUCCESS)))]
    );
    h.send(4, pubrel(9));
    assert_eq!(
        h.drain(),
        vec![packet(4, Packet::PubComp(ack(9, ReasonCode::SUCCESS)))]
    );
    model.apply(&mut h.broker);
    assert!(model.qos2.is_empty());
}

#[test]
fn clean_start_and_expiry_zero_delete_the_stored_session() {
    let mut h = Harness::with_config(persistent());
    let mut model = Model::default();
    h.connected(1, connect(V3_1_1, "a", false));
    h.connected(2, connect_v5_expiry("b", false, 60));
    model.apply(&mut h.broker);
    assert_eq!(model.sessions.len(), 2);
    h.close(1);
    h.close(2);
    h.connected(3, connect(V3_1_1, "a", true));
    // Resumed with expiry 0: the session ends with this connection, so it leaves the store.
    h.connected(4, connect_v5_expiry("b", false, 0));
    model.apply(&mut h.broker);
    assert!(model.sessions.is_empty(), "{:?}", model.sessions.keys());
}

#[test]
fn session_expiry_after_a_restart_counts_from_the_stored_time() {
    let mut h = Harness::with_config(persistent());
    let mut model = Model::default();
    h.connected(1, connect_v5_expiry("s", false, 100));
    h.close(1);
    h.advance_secs(60);
    restart(&mut h, &mut model);
    h.advance_secs(41);
    h.drain();
    assert_eq!(
        h.broker.stats().sessions,
        0,
        "expired 100 s after the close"
    );
    model.apply(&mut h.broker);
    assert!(model.sessions.is_empty());
}

#[test]
fn retained_messages_are_recorded_and_restored() {
    let mut h = Harness::with_config(persistent());
    let mut model = Model::default();
    h.client(1, "pub");
    h.send(1, retained_publish("r/1", QoS::AtLeastOnce, 1, "one"));
    h.send(1, retained_publish("r/2", QoS::AtLeastOnce, 2, "two"));
    h.send(1, retained_publish("r/2", QoS::AtLeastOnce, 3, ""));
    h.drain();
    restart(&mut h, &mut model);
    assert_eq!(model.retained.len(), 1);
    h.client(2, "sub");
    h.send(2, subscribe(1, &[("r/#", QoS::AtLeastOnce)]));
    let packets = h.drain_packets(2);
    assert_eq!(
        packets[1..],
        [with_retain(delivered("r/1", QoS::AtLeastOnce, 1, "one"))]
    );
}

#[test]
fn queue_limit_in_bytes_applies_to_offline_sessions() {
    let mut h = Harness::with_config(BrokerConfig {
        max_queued_bytes: 10,
        ..persistent()
    });
    let mut model = Model::default();
    h.connected(1, connect(V3_1_1, "sub", false));
    h.subscribe(1, "a", QoS::AtLeastOnce);
    h.close(1);
    h.client(2, "pub");
    // Each copy counts 1 (topic) + 4 (payload) bytes: two fit in 10.
    for i in 1..=3u16 {
        h.send(2, publish("a", QoS::AtLeastOnce, i, &format!("m{i:03}")));
    }
    h.drain();
    assert_eq!(h.broker.stats().dropped.queue_full, 1);
    model.apply(&mut h.broker);
    assert_eq!(model.deliveries.len(), 2);
}

#[test]
fn a_delayed_will_survives_a_restart() {
    let mut h = Harness::with_config(persistent());
    let mut model = Model::default();
    h.client(9, "watcher");
    h.subscribe(9, "w", QoS::AtLeastOnce);
    let mut c = connect_v5_expiry("dev", false, 300);
    let mut w = will("w", "gone", QoS::AtLeastOnce, false);
    w.properties.will_delay_interval = Some(30);
    c.will = Some(w);
    h.connected(1, c);
    h.close(1);
    restart(&mut h, &mut model);
    h.client(9, "watcher");
    h.subscribe(9, "w", QoS::AtLeastOnce);
    h.advance_secs(31);
    let packets = h.drain_packets(9);
    assert_eq!(packets, [delivered("w", QoS::AtLeastOnce, 1, "gone")]);
}

#[test]
fn the_will_of_a_connection_open_at_a_crash_is_published_after_the_restart() {
    let mut h = Harness::with_config(persistent());
    let mut model = Model::default();
    h.connected(9, connect(V3_1_1, "watcher", false));
    h.subscribe(9, "w/#", QoS::AtLeastOnce);
    h.close(9);
    let mut c = connect(V3_1_1, "dev", true);
    c.will = Some(will("w/dev", "gone", QoS::AtLeastOnce, false));
    h.connected(1, c);
    let mut c = connect(V3_1_1, "polite", true);
    c.will = Some(will("w/polite", "gone", QoS::AtLeastOnce, false));
    h.connected(2, c);
    // A normal DISCONNECT discards the will [MQTT-3.14.4-3]: nothing to publish later.
    h.send(2, disconnect(ReasonCode::NORMAL_DISCONNECTION));
    model.apply(&mut h.broker);
    assert_eq!(
        model.wills.keys().map(|c| &**c).collect::<Vec<_>>(),
        ["dev"]
    );
    // The broker dies with "dev" connected.
    restart(&mut h, &mut model);
    model.apply(&mut h.broker);
    assert!(model.wills.is_empty(), "published, then cleared");
    let out = h.connect(9, connect(V3_1_1, "watcher", false));
    let wills: Vec<&Packet> = out
        .iter()
        .filter_map(|t| match t {
            Transmit::Packet { packet, .. } if matches!(packet, Packet::Publish(_)) => Some(packet),
            _ => None,
        })
        .collect();
    assert_eq!(wills, [&delivered("w/dev", QoS::AtLeastOnce, 1, "gone")]);
}

#[test]
fn restored_retained_messages_stored_for_sessions_get_distinct_message_ids() {
    let mut h = Harness::with_config(persistent());
    let mut model = Model::default();
    h.client(1, "pub");
    h.send(1, retained_publish("r/1", QoS::AtLeastOnce, 1, "one"));
    h.send(1, retained_publish("r/2", QoS::AtLeastOnce, 2, "two"));
    h.drain();
    restart(&mut h, &mut model);
    h.connected(2, connect(V3_1_1, "sub", false));
    h.send(2, subscribe(1, &[("r/#", QoS::AtLeastOnce)]));
    h.drain();
    let mut ops = Vec::new();
    h.broker.drain_store_ops(&mut ops);
    let ids: Vec<u64> = ops
        .iter()
        .filter_map(|op| match op {
            StoreOp::Delivered { delivery, .. } => Some(delivery.message_id),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1]);
}
