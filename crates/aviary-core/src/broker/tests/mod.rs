//! Deterministic tests of the broker: a [`Harness`] owns a [`Broker`], a simulated clock
//! and helpers that build packets, so each test reads as "client sends X, broker answers
//! exactly Y". Test names cite the spec rule they pin where there is one.

mod admin;
mod authz;
mod chaos;
mod connect;
mod events;
mod flow;
mod footprint;
mod manage;
mod metering;
mod perf;
mod persist;
mod publish;
mod reason_strings;
mod retained;
mod session;
mod shared;
mod subscribe;
mod v5;
mod will;
mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::{NonZeroU16, NonZeroU32};
use std::time::{Duration, Instant};

use aviary_codec::properties::{
    AckProperties, ConnAckProperties, ConnectProperties, DisconnectProperties, PublishProperties,
    SubscribeProperties, UnsubscribeProperties, WillProperties,
};
use aviary_codec::{
    Ack, ConnAck, Connect, Disconnect, Packet, PacketId, ProtocolVersion, Publish, QoS, ReasonCode,
    SubAck, Subscribe, SubscriptionOptions, TopicFilter, TopicName, UnsubAck, Unsubscribe, Will,
};
use bytes::{Bytes, BytesMut};

use super::{Broker, BrokerConfig, ConnId, Transmit};

pub(super) use ProtocolVersion::{V3_1, V3_1_1, V5};

/// A broker with a simulated clock, and for wire tests each connection's read buffer and
/// protocol version (adopted from its CONNECT, like the shell does).
pub(super) struct Harness {
    pub(super) broker: Broker,
    pub(super) now: Instant,
    buffers: HashMap<u64, BytesMut>,
    versions: HashMap<u64, ProtocolVersion>,
}

impl Harness {
    pub(super) fn new() -> Self {
        Self::with_config(BrokerConfig::default())
    }

    pub(super) fn with_config(config: BrokerConfig) -> Self {
        Self {
            broker: Broker::new(config),
            now: Instant::now(),
            buffers: HashMap::new(),
            versions: HashMap::new(),
        }
    }

    /// Opens transport `conn`.
    pub(super) fn open(&mut self, conn: u64) {
        let peer: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        self.broker.handle_open(ConnId(conn), peer, self.now);
    }

    /// Feeds one packet from `conn`.
    pub(super) fn send(&mut self, conn: u64, packet: Packet) {
        self.broker.handle_packet(ConnId(conn), packet, self.now);
    }

    /// Opens `conn`, sends `connect` and returns what the broker answered.
    pub(super) fn connect(&mut self, conn: u64, connect: Connect) -> Vec<Transmit> {
        self.open(conn);
        self.send(conn, Packet::Connect(Box::new(connect)));
        self.drain()
    }

    /// Connects and asserts a successful CONNACK (any flags), discarding the output.
    pub(super) fn connected(&mut self, conn: u64, connect: Connect) {
        let out = self.connect(conn, connect);
        let accepted = out.iter().any(|t| {
            matches!(t, Transmit::Packet { conn: c, packet: Packet::ConnAck(ack) }
                if *c == ConnId(conn) && ack.reason_code == ReasonCode::SUCCESS)
        });
        assert!(accepted, "expected a successful CONNACK, got {out:?}");
    }

    /// A connected client `id` on `conn` (3.1.1, clean session).
    pub(super) fn client(&mut self, conn: u64, id: &str) {
        self.connected(conn, connect(V3_1_1, id, true));
    }

    /// A connected 5.0 client `id` on `conn` (clean start, no expiry).
    pub(super) fn client_v5(&mut self, conn: u64, id: &str) {
        self.connected(conn, connect(V5, id, true));
    }

    /// Subscribes and discards the SUBACK (and any retained messages).
    pub(super) fn subscribe(&mut self, conn: u64, filter: &str, qos: QoS) {
        self.send(conn, subscribe(1, &[(filter, qos)]));
        self.drain();
    }

    /// Everything the broker wants to send, in order, with reason strings removed so that
    /// tests compare codes (the strings are checked in `reason_strings`).
    pub(super) fn drain(&mut self) -> Vec<Transmit> {
        self.drain_raw()
            .into_iter()
            .map(|t| match t {
                Transmit::Packet { conn, packet } => Transmit::Packet {
                    conn,
                    packet: without_reason_string(packet),
                },
                close => close,
            })
            .collect()
    }

    /// Everything the broker wants to send, exactly.
    pub(super) fn drain_raw(&mut self) -> Vec<Transmit> {
        let mut out = Vec::new();
        while let Some(t) = self.broker.poll_transmit() {
            out.push(t);
            assert!(out.len() < 100_000, "runaway output");
        }
        out
    }

    /// Just the packets for one connection.
    pub(super) fn drain_packets(&mut self, conn: u64) -> Vec<Packet> {
        self.drain()
            .into_iter()
            .filter_map(|t| match t {
                Transmit::Packet { conn: c, packet } if c == ConnId(conn) => Some(packet),
                _ => None,
            })
            .collect()
    }

    /// Moves the clock forward and runs due timers, like the shell does.
    pub(super) fn advance(&mut self, by: Duration) {
        self.now += by;
        let mut rounds = 0;
        while self.broker.poll_timeout().is_some_and(|t| t <= self.now) {
            self.broker.handle_timeout(self.now);
            rounds += 1;
            assert!(rounds < 1000, "timers do not settle");
        }
    }

    pub(super) fn advance_secs(&mut self, secs: u64) {
        self.advance(Duration::from_secs(secs));
    }

    /// Feeds bytes (hex, spaces ignored) from `conn` through the real decoder, like the
    /// shell: whole packets go to `handle_packet`, a decode error to `handle_decode_error`.
    pub(super) fn feed(&mut self, conn: u64, hex: &str) {
        let mut version = self.versions.get(&conn).copied().unwrap_or(V3_1_1);
        let buf = self.buffers.entry(conn).or_default();
        buf.extend_from_slice(&unhex(hex));
        for _ in 0..1000 {
            match aviary_codec::decode(buf, version, 1024 * 1024) {
                Ok(None) => return,
                Ok(Some(packet)) => {
                    if let Packet::Connect(c) = &packet {
                        version = c.protocol;
                        self.versions.insert(conn, version);
                    }
                    self.broker.handle_packet(ConnId(conn), packet, self.now);
                }
                Err(error) => {
                    buf.clear();
                    self.broker
                        .handle_decode_error(ConnId(conn), &error, self.now);
                    return;
                }
            }
        }
        panic!("too many packets");
    }

    /// Everything the broker sent, exactly, encoded in each connection's version as hex,
    /// with "close" for a close.
    pub(super) fn wire_out(&mut self) -> Vec<(u64, String)> {
        self.drain_raw()
            .into_iter()
            .map(|t| match t {
                Transmit::Packet { conn, packet } => {
                    let version = self.versions.get(&conn.0).copied().unwrap_or(V3_1_1);
                    let mut buf = BytesMut::new();
                    aviary_codec::encode(&packet, version, &mut buf).unwrap();
                    (conn.0, hex(&buf))
                }
                Transmit::Close { conn } => (conn.0, "close".to_owned()),
            })
            .collect()
    }

    pub(super) fn close(&mut self, conn: u64) {
        self.broker.handle_closed(ConnId(conn), self.now);
    }
}

fn without_reason_string(mut packet: Packet) -> Packet {
    match &mut packet {
        Packet::Disconnect(p) => p.properties.reason_string = None,
        Packet::ConnAck(p) => p.properties.reason_string = None,
        Packet::PubAck(p) | Packet::PubRec(p) | Packet::PubRel(p) | Packet::PubComp(p) => {
            p.properties.reason_string = None
        }
        Packet::SubAck(p) => p.properties.reason_string = None,
        Packet::UnsubAck(p) => p.properties.reason_string = None,
        _ => {}
    }
    packet
}

pub(super) fn unhex(hex: &str) -> Vec<u8> {
    let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Shorthand for expected wire output.
pub(super) fn out(list: &[(u64, &str)]) -> Vec<(u64, String)> {
    list.iter().map(|(c, s)| (*c, (*s).to_owned())).collect()
}

pub(super) fn packet(conn: u64, packet: Packet) -> Transmit {
    Transmit::Packet {
        conn: ConnId(conn),
        packet,
    }
}

pub(super) fn close(conn: u64) -> Transmit {
    Transmit::Close { conn: ConnId(conn) }
}

pub(super) fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

pub(super) fn topic(s: &str) -> TopicName {
    TopicName::new(s).unwrap()
}

pub(super) fn connect(protocol: ProtocolVersion, client_id: &str, clean_start: bool) -> Connect {
    Connect {
        protocol,
        clean_start,
        keep_alive: 0,
        client_id: client_id.to_owned(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

/// A 5.0 CONNECT with a session expiry interval.
pub(super) fn connect_v5_expiry(client_id: &str, clean_start: bool, expiry: u32) -> Connect {
    let mut c = connect(V5, client_id, clean_start);
    c.properties.session_expiry_interval = Some(expiry);
    c
}

pub(super) fn will(topic_name: &str, payload: &str, qos: QoS, retain: bool) -> Will {
    Will {
        topic: topic(topic_name),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        qos,
        retain,
        properties: WillProperties::default(),
    }
}

pub(super) fn connack(session_present: bool, reason_code: ReasonCode) -> Packet {
    Packet::ConnAck(Box::new(ConnAck {
        session_present,
        reason_code,
        properties: ConnAckProperties::default(),
    }))
}

/// The CONNACK properties a default-configured broker sends to every 5.0 client.
pub(super) fn v5_connack_properties() -> ConnAckProperties {
    let config = BrokerConfig::default();
    ConnAckProperties {
        receive_maximum: NonZeroU16::new(config.receive_maximum),
        retain_available: Some(true),
        maximum_packet_size: NonZeroU32::new(config.max_packet_size),
        topic_alias_maximum: Some(config.topic_alias_maximum),
        wildcard_subscription_available: Some(true),
        subscription_identifiers_available: Some(true),
        shared_subscription_available: Some(true),
        ..ConnAckProperties::default()
    }
}

pub(super) fn publish(topic_name: &str, qos: QoS, packet_id: u16, payload: &str) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic(topic_name),
        packet_id: PacketId::new(packet_id),
        properties: Default::default(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
    })
}

pub(super) fn retained_publish(
    topic_name: &str,
    qos: QoS,
    packet_id: u16,
    payload: &str,
) -> Packet {
    let Packet::Publish(mut p) = publish(topic_name, qos, packet_id, payload) else {
        unreachable!()
    };
    p.retain = true;
    Packet::Publish(p)
}

/// The PUBLISH a subscriber receives (modifiers below adjust flags).
pub(super) fn delivered(topic_name: &str, qos: QoS, packet_id: u16, payload: &str) -> Packet {
    publish(topic_name, qos, packet_id, payload)
}

pub(super) fn with_dup(p: Packet) -> Packet {
    let Packet::Publish(mut p) = p else {
        panic!("not a publish")
    };
    p.dup = true;
    Packet::Publish(p)
}

pub(super) fn with_retain(p: Packet) -> Packet {
    let Packet::Publish(mut p) = p else {
        panic!("not a publish")
    };
    p.retain = true;
    Packet::Publish(p)
}

pub(super) fn with_props(p: Packet, f: impl FnOnce(&mut PublishProperties)) -> Packet {
    let Packet::Publish(mut p) = p else {
        panic!("not a publish")
    };
    f(&mut p.properties);
    Packet::Publish(p)
}

pub(super) fn ack(packet_id: u16, reason_code: ReasonCode) -> Ack {
    Ack {
        packet_id: pid(packet_id),
        reason_code,
        properties: AckProperties::default(),
    }
}

pub(super) fn puback(packet_id: u16) -> Packet {
    Packet::PubAck(ack(packet_id, ReasonCode::SUCCESS))
}

pub(super) fn pubrec(packet_id: u16) -> Packet {
    Packet::PubRec(ack(packet_id, ReasonCode::SUCCESS))
}

pub(super) fn pubrel(packet_id: u16) -> Packet {
    Packet::PubRel(ack(packet_id, ReasonCode::SUCCESS))
}

pub(super) fn pubcomp(packet_id: u16) -> Packet {
    Packet::PubComp(ack(packet_id, ReasonCode::SUCCESS))
}

pub(super) fn subscribe(packet_id: u16, filters: &[(&str, QoS)]) -> Packet {
    subscribe_with(
        packet_id,
        None,
        filters
            .iter()
            .map(|(f, q)| (*f, SubscriptionOptions::with_qos(*q)))
            .collect(),
    )
}

pub(super) fn subscribe_with(
    packet_id: u16,
    identifier: Option<u32>,
    filters: Vec<(&str, SubscriptionOptions)>,
) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: pid(packet_id),
        properties: SubscribeProperties {
            subscription_identifier: identifier.and_then(NonZeroU32::new),
            user_properties: Vec::new(),
        },
        filters: filters
            .into_iter()
            .map(|(f, o)| (TopicFilter::new(f).unwrap(), o))
            .collect(),
    })
}

pub(super) fn suback(packet_id: u16, codes: &[u8]) -> Packet {
    Packet::SubAck(SubAck {
        packet_id: pid(packet_id),
        properties: AckProperties::default(),
        reason_codes: codes.iter().map(|c| ReasonCode(*c)).collect(),
    })
}

pub(super) fn unsubscribe(packet_id: u16, filters: &[&str]) -> Packet {
    Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(packet_id),
        properties: UnsubscribeProperties::default(),
        filters: filters
            .iter()
            .map(|f| TopicFilter::new(f).unwrap())
            .collect(),
    })
}

pub(super) fn unsuback(packet_id: u16, codes: &[u8]) -> Packet {
    Packet::UnsubAck(UnsubAck {
        packet_id: pid(packet_id),
        properties: AckProperties::default(),
        reason_codes: codes.iter().map(|c| ReasonCode(*c)).collect(),
    })
}

pub(super) fn disconnect(reason_code: ReasonCode) -> Packet {
    Packet::Disconnect(Disconnect::with_reason(reason_code))
}

pub(super) fn disconnect_with_expiry(expiry: u32) -> Packet {
    Packet::Disconnect(Disconnect {
        reason_code: ReasonCode::SUCCESS,
        properties: DisconnectProperties {
            session_expiry_interval: Some(expiry),
            ..DisconnectProperties::default()
        },
    })
}
