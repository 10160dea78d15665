//! A deterministic random walk over the broker: several clients of every protocol version
//! send random (decodable) packets in random order while time jumps around. Nothing may
//! panic, and the broker's internal invariants hold after every step.

use std::collections::HashSet;
use std::num::{NonZeroU16, NonZeroU32};
use std::time::Duration;

use aviary_codec::{Packet, ProtocolVersion, QoS, ReasonCode, RetainHandling, SubscriptionOptions};

use super::*;
use crate::broker::connection::Connection;
use crate::QueueOverflow;

/// xorshift64*: small, deterministic, good enough to pick cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const TOPICS: [&str; 5] = ["a", "a/b", "a/c", "b", "$SYS/x"];
const FILTERS: [&str; 8] = [
    "a",
    "a/+",
    "#",
    "a/#",
    "+/b",
    "$share/g/a/#",
    "$share/h/#",
    "b",
];
const IDS: [&str; 4] = ["c1", "c2", "c3", ""];

fn random_topic(rng: &mut Rng) -> &'static str {
    TOPICS[rng.below(TOPICS.len() as u64) as usize]
}

fn random_filter(rng: &mut Rng) -> &'static str {
    FILTERS[rng.below(FILTERS.len() as u64) as usize]
}

fn qos(rng: &mut Rng) -> QoS {
    *rng.pick(&[QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

fn random_connect(rng: &mut Rng) -> Connect {
    let protocol = *rng.pick(&[
        ProtocolVersion::V3_1,
        ProtocolVersion::V3_1_1,
        ProtocolVersion::V5,
    ]);
    let mut id = *rng.pick(&IDS);
    if protocol == ProtocolVersion::V3_1 && id.is_empty() {
        id = "c1";
    }
    let mut c = connect(protocol, id, rng.below(2) == 0);
    c.keep_alive = *rng.pick(&[0, 1, 5, 30]);
    if rng.below(3) == 0 {
        let mut w = will(random_topic(rng), "will", qos(rng), rng.below(2) == 0);
        if protocol.is_v5() {
            w.properties.will_delay_interval = Some(*rng.pick(&[0, 2, 50]));
        }
        c.will = Some(w);
    }
    if protocol.is_v5() {
        c.properties.session_expiry_interval = Some(*rng.pick(&[0, 3, 100, u32::MAX]));
        c.properties.receive_maximum = NonZeroU16::new(*rng.pick(&[1, 2, 10, 65_535]));
        c.properties.topic_alias_maximum = Some(*rng.pick(&[0, 1, 3]));
        c.properties.maximum_packet_size = NonZeroU32::new(*rng.pick(&[40, 1000, 1 << 20]));
    }
    c
}

fn random_packet(rng: &mut Rng, v5: bool) -> Packet {
    let id = 1 + rng.below(6) as u16;
    match rng.below(24) {
        0..=9 => {
            let q = qos(rng);
            let mut p = publish(
                random_topic(rng),
                q,
                if q == QoS::AtMostOnce { 0 } else { id },
                "payload",
            );
            if let Packet::Publish(p) = &mut p {
                p.retain = rng.below(4) == 0;
                p.dup = rng.below(4) == 0;
                if v5 {
                    if rng.below(3) == 0 {
                        p.properties.topic_alias = NonZeroU16::new(1 + rng.below(3) as u16);
                        if rng.below(2) == 0 {
                            p.topic = TopicName::empty();
                        }
                    }
                    if rng.below(4) == 0 {
                        p.properties.message_expiry_interval = Some(rng.below(5) as u32);
                    }
                }
            }
            p
        }
        10 | 11 => puback(id),
        12 | 13 => pubrec(id),
        14 | 15 => pubrel(id),
        16 | 17 => pubcomp(id),
        18 | 19 => {
            let mut options = SubscriptionOptions::with_qos(qos(rng));
            if v5 {
                options.no_local = rng.below(5) == 0;
                options.retain_as_published = rng.below(2) == 0;
                options.retain_handling = *rng.pick(&[
                    RetainHandling::SendOnSubscribe,
                    RetainHandling::SendOnNewSubscribe,
                    RetainHandling::DoNotSend,
                ]);
            }
            let identifier = (v5 && rng.below(2) == 0).then(|| 1 + rng.below(3) as u32);
            subscribe_with(id, identifier, vec![(random_filter(rng), options)])
        }
        20 => unsubscribe(id, &[random_filter(rng)]),
        21 => Packet::PingReq,
        22 => disconnect(*rng.pick(&[
            ReasonCode::SUCCESS,
            ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
        ])),
        _ => Packet::PingResp,
    }
}

/// Checks the invariants that tie connections, sessions and the index together.
fn check_invariants(h: &Harness) {
    let b = &h.broker;
    let connected: Vec<_> = b
        .connections
        .iter()
        .filter_map(|(conn, c)| match c {
            Connection::Connected(c) => Some((*conn, c.session)),
            Connection::Connecting(_) => None,
        })
        .collect();
    assert_eq!(b.connected, connected.len());
    for (conn, sid) in &connected {
        let session = b.sessions.get(sid).expect("connected session exists");
        assert_eq!(session.link.as_ref().map(|l| l.conn), Some(*conn));
    }
    let mut subscriptions = 0;
    for (sid, session) in &b.sessions {
        assert_eq!(b.client_ids.get(&session.client_id), Some(sid));
        if let Some(link) = session.link.as_ref() {
            assert!(b.connections.contains_key(&link.conn));
        } else {
            assert!(
                session.expiry_interval != 0,
                "a session without connection must persist"
            );
        }
        let ids: HashSet<_> = session.inflight().map(|e| e.packet_id).collect();
        assert_eq!(
            ids.len(),
            session.inflight_len(),
            "packet ids in flight are unique"
        );
        assert!(session.queued_len() <= b.config.max_queued_messages);
        subscriptions += session.subscriptions.len();
    }
    assert_eq!(b.index.len(), subscriptions);
    assert_eq!(b.client_ids.len(), b.sessions.len());
}

fn walk(seed: u64, steps: usize, config: BrokerConfig) {
    let mut rng = Rng(seed);
    let mut h = Harness::with_config(config);
    let conns = 6u64;
    for step in 0..steps {
        let conn = 1 + rng.below(conns);
        let open = h.broker.connections.contains_key(&ConnId(conn));
        match rng.below(20) {
            0 => h.advance(Duration::from_millis(rng.below(8000))),
            1 => h.close(conn),
            2 if open => {
                h.broker.handle_decode_error(
                    ConnId(conn),
                    &aviary_codec::DecodeError::Malformed("chaos"),
                    h.now,
                );
            }
            _ if !open => {
                h.open(conn);
                h.send(conn, Packet::Connect(Box::new(random_connect(&mut rng))));
            }
            _ => {
                let v5 = h.broker.connection_protocol(ConnId(conn)) == Some(ProtocolVersion::V5);
                h.send(conn, random_packet(&mut rng, v5));
            }
        }
        // Like the shell: drain, and forget connections the broker closed.
        for t in h.drain() {
            if let Transmit::Packet { conn, .. } = t {
                // Packets only go to connections that were open at some point this step.
                assert!(conn.0 >= 1 && conn.0 <= conns, "step {step}");
            }
        }
        check_invariants(&h);
    }
    // Everything ends cleanly.
    h.broker.handle_shutdown(h.now);
    h.drain();
    h.advance(Duration::from_secs(u64::from(u32::MAX)));
    assert_eq!(h.broker.stats().connections, 0);
}

#[test]
fn random_walks_keep_invariants() {
    for seed in 1..=20u64 {
        walk(seed * 7919, 3000, BrokerConfig::default());
    }
}

#[test]
fn random_walks_with_tight_limits_keep_invariants() {
    let config = BrokerConfig {
        max_inflight: 2,
        max_inflight_v5: 2,
        max_queued_messages: 3,
        queue_overflow: QueueOverflow::DropOldest,
        retry_interval: Some(Duration::from_secs(2)),
        max_keep_alive: 10,
        max_subscriptions_per_session: 3,
        max_connections: 3,
        topic_alias_maximum: 2,
        receive_maximum: 2,
        max_session_expiry_interval: 20,
        connect_timeout: Duration::from_secs(1),
        ..BrokerConfig::default()
    };
    for seed in 1..=20u64 {
        walk(seed * 104_729, 3000, config.clone());
    }
}
