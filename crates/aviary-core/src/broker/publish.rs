//! PUBLISH from a client (3.3.4 receiver side): topic alias resolution, limits, the QoS 0,
//! 1 and 2 acknowledgement flows with exactly-once for QoS 2, retained messages; and the
//! acknowledgements a client sends for our PUBLISHes.
//!
//! Incoming QoS 2 (the spec's "Method B": deliver on PUBLISH, remember the packet id):
//!
//! ```text
//!   PUBLISH(id) ──▶ route once, remember id ──▶ PUBREC(id)
//!   PUBLISH(id, DUP) while remembered ──▶ PUBREC(id), not routed again
//!   PUBREL(id) ──▶ forget id ──▶ PUBCOMP(id)
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use aviary_codec::properties::AckProperties;
use aviary_codec::{Ack, Packet, PacketId, Publish, QoS, ReasonCode};

use super::alias::AliasError;
use super::authorize::authorize;
use super::connection::PacketFrom;
use super::message::Message;
use super::metering::message_units;
use super::timers::Timer;
use super::{fit, Broker, ConnId};

/// The shortest time between two sweeps of the retained store.
const RETAINED_SWEEP_GAP: Duration = Duration::from_secs(60);
/// How long after a retained message's expiry its sweep runs.
const RETAINED_SWEEP_SLACK: Duration = Duration::from_secs(1);

impl Broker {
    pub(super) fn handle_publish(&mut self, conn: ConnId, publish: Publish, now: Instant) {
        // The connection is looked up once: everything the packet needs from it is read
        // (or changed) below, next to the other fields of the broker it needs.
        let c = match self.connections.packet_from(conn, now) {
            PacketFrom::Connected(c) => c,
            PacketFrom::Connecting => return self.close_silently(conn),
            PacketFrom::Gone => return,
        };
        self.fx.stats.messages_in += 1;
        let v5 = c.protocol.is_v5();
        let problem_info = c.problem_info;
        let max_packet_size = c.max_packet_size;
        // Subscription identifiers go server → client only [MQTT-3.3.4-6].
        if v5 && !publish.properties.subscription_identifiers.is_empty() {
            return self.fail(
                conn,
                ReasonCode::PROTOCOL_ERROR,
                "subscription identifier in a client PUBLISH",
                now,
            );
        }
        // The topic an alias stands for; `None`: the PUBLISH's own topic.
        let resolved = match publish.properties.topic_alias {
            Some(alias) if v5 => {
                match c.aliases.resolve(
                    publish.topic.clone(),
                    alias,
                    self.config.topic_alias_maximum,
                ) {
                    Ok(topic) => Some(topic),
                    // [MQTT-3.3.2-9]
                    Err(AliasError::OutOfRange) => {
                        return self.fail(
                            conn,
                            ReasonCode::TOPIC_ALIAS_INVALID,
                            "topic alias above the maximum",
                            now,
                        )
                    }
                    Err(AliasError::Unknown) => {
                        return self.fail(
                            conn,
                            ReasonCode::PROTOCOL_ERROR,
                            "unknown topic alias",
                            now,
                        )
                    }
                }
            }
            _ if publish.topic.is_empty() => {
                return self.fail(
                    conn,
                    ReasonCode::PROTOCOL_ERROR,
                    "empty topic without topic alias",
                    now,
                )
            }
            _ => None,
        };
        // Our limit on topic depth: refused like an invalid topic name (DISCONNECT 0x90).
        let topic = resolved.as_ref().unwrap_or(&publish.topic);
        if exceeds_levels(topic, self.config.max_topic_levels) {
            return self.fail(
                conn,
                ReasonCode::TOPIC_NAME_INVALID,
                "topic has more levels than the server allows",
                now,
            );
        }
        let sid = c.session;
        let qos = publish.qos;
        // Only the units of a QoS 1 message depend on the session (see `message_units`).
        let persistent = qos == QoS::AtLeastOnce
            && !publish.retain
            && self
                .sessions
                .get(&sid)
                .is_some_and(|s| s.expiry_interval > 0);
        let units = message_units(qos, publish.retain, persistent);
        c.units += units;
        self.fx.stats.units += units;
        let packet_id = publish.packet_id;
        if qos != QoS::AtMostOnce && packet_id.is_none() {
            return self.fail(
                conn,
                ReasonCode::MALFORMED_PACKET,
                "QoS 1/2 PUBLISH without packet identifier",
                now,
            );
        }
        // Device identity properties ride on every message the device publishes.
        let message = Message::from_publish(
            publish,
            resolved,
            c.client_id.clone(),
            &c.principal.properties,
            now,
        );
        // Topics the broker itself publishes on ($SYS, $events) are not for clients
        // (spec 4.7.2 lets the server keep `$` topics for itself): acknowledged (5.0: 0x87
        // Not authorized), not delivered.
        // Then authorization, against the current authorizer: a denied message is
        // acknowledged the same way (5.0: 0x87; 3.x has no negative ack), not delivered.
        let request = crate::authz::Request::Publish {
            topic: &message.topic,
            qos,
            retain: message.retain,
        };
        let mut refusal_text = None;
        let refusal = if is_reserved(&message.topic) {
            self.fx.stats.dropped.reserved_topic += 1;
            refusal_text = Some("topic reserved for the broker");
            Some(ReasonCode::NOT_AUTHORIZED)
        } else if authorize(self.authorizer.as_ref(), c, &request) == crate::authz::Effect::Deny {
            self.fx.stats.dropped.not_authorized += 1;
            refusal_text = Some("not authorized");
            Some(ReasonCode::NOT_AUTHORIZED)
        } else if message.retain
            && !message.payload.is_empty()
            && self.retained_full(&message.topic)
        {
            // The plan's retained count is reached: refused (5.0: 0x97 Quota exceeded).
            self.fx.stats.dropped.retained_quota += 1;
            Some(ReasonCode::QUOTA_EXCEEDED)
        } else {
            None
        };
        let reserved = refusal.is_some();
        let refused = refusal.unwrap_or(ReasonCode::NOT_AUTHORIZED);
        let explained = |packet_id, code: ReasonCode| {
            let mut ack = explained_ack(packet_id, code, problem_info);
            if problem_info && code.is_error() && refusal_text.is_some() {
                ack.properties.reason_string = refusal_text.map(str::to_owned);
            }
            ack
        };

        match (qos, packet_id) {
            (QoS::AtLeastOnce, Some(packet_id)) => {
                // The ack goes ahead of the deliveries (see `Effects::send_at`).
                let mark = self.fx.mark();
                let code = if reserved {
                    self.refusal_code(v5, refused)
                } else {
                    let matched = self.accept_message(message, now);
                    self.success_code(v5, matched)
                };
                let packet = if code.is_error() {
                    fitted_ack(Packet::PubAck, explained(packet_id, code), max_packet_size)
                } else {
                    // Nothing to explain (the usual case).
                    Packet::PubAck(ack(packet_id, code))
                };
                self.fx.send_at(mark, conn, packet);
            }
            (QoS::ExactlyOnce, Some(packet_id)) => {
                let Some(session) = self.sessions.get_mut(&sid) else {
                    return;
                };
                if session.incoming_qos2.contains(&packet_id) {
                    // Already accepted, PUBREL not yet seen: not delivered again (spec 4.3.3).
                    self.fx
                        .send(conn, Packet::PubRec(ack(packet_id, ReasonCode::SUCCESS)));
                    return;
                }
                if reserved && v5 {
                    // An error PUBREC ends the exchange: nothing to remember.
                    let code = self.refusal_code(v5, refused);
                    let ack = explained(packet_id, code);
                    self.fx
                        .send(conn, fitted_ack(Packet::PubRec, ack, max_packet_size));
                    return;
                }
                // Our Receive Maximum bounds the QoS 2 messages awaiting PUBREL (3.3.4).
                // 3.x is bounded by the 65,535 packet ids.
                if v5
                    && session.incoming_qos2.len()
                        >= usize::from(self.config.receive_maximum.max(1))
                {
                    return self.fail(
                        conn,
                        ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                        "receive maximum exceeded",
                        now,
                    );
                }
                session.incoming_qos2.insert(packet_id);
                if session.persisted {
                    let client_id = session.client_id.clone();
                    self.fx.store(super::StoreOp::Qos2Received {
                        client_id,
                        packet_id,
                    });
                }
                let mark = self.fx.mark();
                let matched = !reserved && self.accept_message(message, now);
                let code = self.success_code(v5, matched);
                self.fx
                    .send_at(mark, conn, Packet::PubRec(ack(packet_id, code)));
            }
            _ => {
                if !reserved {
                    self.accept_message(message, now);
                }
            }
        }
    }

    /// The ack code for a refused PUBLISH: `why` (0x87, 0x97) in 5.0; 3.x has no negative
    /// ack.
    fn refusal_code(&self, v5: bool, why: ReasonCode) -> ReasonCode {
        if v5 {
            why
        } else {
            ReasonCode::SUCCESS
        }
    }

    /// 5.0 acks say 0x10 when no subscription matched; otherwise success.
    fn success_code(&self, v5: bool, matched: bool) -> ReasonCode {
        if v5 && !matched {
            ReasonCode::NO_MATCHING_SUBSCRIBERS
        } else {
            ReasonCode::SUCCESS
        }
    }

    /// Stores (if retained) and routes an accepted message; true if any subscription
    /// matched.
    fn accept_message(&mut self, message: Arc<Message>, now: Instant) -> bool {
        self.store_retained(&message, now);
        self.route(&message, now)
    }

    /// RETAIN=1: an empty payload deletes the topic's retained message [MQTT-3.3.1-6,
    /// MQTT-3.3.1-7], anything else replaces it [MQTT-3.3.1-5].
    pub(super) fn store_retained(&mut self, message: &Arc<Message>, now: Instant) {
        if !message.retain {
            return;
        }
        if message.payload.is_empty() {
            if self.retained.remove(&message.topic).is_some() {
                self.fx
                    .store(super::StoreOp::RetainedCleared(message.topic.clone()));
            }
            return;
        }
        if self.retained_full(&message.topic) {
            self.fx.stats.dropped.retained_quota += 1;
            return;
        }
        self.retained.insert(message.topic.clone(), message.clone());
        self.fx.store(super::StoreOp::RetainedSet(message.clone()));
        self.schedule_retained_sweep(message, now);
    }

    /// Schedules the sweep that removes a retained message once it expires.
    pub(super) fn schedule_retained_sweep(&mut self, message: &Message, now: Instant) {
        if let Some(at) = message.expires_at() {
            // Just after the expiry: a message is expired once its interval has passed.
            let at = at.max(now) + RETAINED_SWEEP_SLACK;
            if self.retained_sweep_at.is_none_or(|sweep| at < sweep) {
                self.retained_sweep_at = Some(at);
                self.fx.timers.schedule(at, Timer::RetainedSweep);
            }
        }
    }

    /// Whether storing a retained message on `topic` would exceed `max_retained` (replacing
    /// one never does).
    fn retained_full(&self, topic: &aviary_codec::TopicName) -> bool {
        self.retained.len() >= self.config.max_retained && self.retained.get(topic).is_none()
    }

    /// Drops expired retained messages, then schedules the next sweep at the earliest
    /// remaining expiry but at most once a minute (each sweep visits every message).
    pub(super) fn sweep_retained(&mut self, at: Instant, now: Instant) {
        if self.retained_sweep_at != Some(at) {
            return; // stale entry
        }
        self.retained_sweep_at = None;
        let mut next: Option<Instant> = None;
        let fx = &mut self.fx;
        self.retained.retain(|topic, message| {
            let Some(expires) = message.expires_at() else {
                return true;
            };
            if now > expires {
                fx.store(super::StoreOp::RetainedCleared(topic.clone()));
                return false;
            }
            next = Some(next.map_or(expires, |n| n.min(expires)));
            true
        });
        if let Some(next) = next {
            let at = (next + RETAINED_SWEEP_SLACK).max(now + RETAINED_SWEEP_GAP);
            self.retained_sweep_at = Some(at);
            self.fx.timers.schedule(at, Timer::RetainedSweep);
        }
    }

    /// PUBREL for an incoming QoS 2 message.
    pub(super) fn handle_pubrel(&mut self, conn: ConnId, pubrel: Ack, now: Instant) {
        let c = match self.connections.packet_from(conn, now) {
            PacketFrom::Connected(c) => c,
            PacketFrom::Connecting => return self.close_silently(conn),
            PacketFrom::Gone => return,
        };
        let v5 = c.protocol.is_v5();
        let problem_info = c.problem_info;
        let max_packet_size = c.max_packet_size;
        let fx = &mut self.fx;
        let known = self.sessions.get_mut(&c.session).is_some_and(|s| {
            let known = s.incoming_qos2.remove(&pubrel.packet_id);
            if known && s.persisted {
                fx.store(super::StoreOp::Qos2Released {
                    client_id: s.client_id.clone(),
                    packet_id: pubrel.packet_id,
                });
            }
            known
        });
        let code = if known || !v5 {
            ReasonCode::SUCCESS
        } else {
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        };
        let ack = explained_ack(pubrel.packet_id, code, problem_info);
        self.fx
            .send(conn, fitted_ack(Packet::PubComp, ack, max_packet_size));
    }

    pub(super) fn handle_client_puback(&mut self, conn: ConnId, puback: Ack, now: Instant) {
        let c = match self.connections.packet_from(conn, now) {
            PacketFrom::Connected(c) => c,
            PacketFrom::Connecting => return self.close_silently(conn),
            PacketFrom::Gone => return,
        };
        if let Some(session) = self.sessions.get_mut(&c.session) {
            session.handle_puback(puback.packet_id, &mut self.fx, &self.config, now);
        }
    }

    pub(super) fn handle_client_pubrec(&mut self, conn: ConnId, pubrec: Ack, now: Instant) {
        let c = match self.connections.packet_from(conn, now) {
            PacketFrom::Connected(c) => c,
            PacketFrom::Connecting => return self.close_silently(conn),
            PacketFrom::Gone => return,
        };
        let v5 = c.protocol.is_v5();
        let problem_info = c.problem_info;
        let max_packet_size = c.max_packet_size;
        let Some(session) = self.sessions.get_mut(&c.session) else {
            return;
        };
        let known = session.handle_pubrec(
            pubrec.packet_id,
            pubrec.reason_code,
            &mut self.fx,
            &self.config,
            now,
        );
        if !known && v5 {
            let ack = explained_ack(
                pubrec.packet_id,
                ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
                problem_info,
            );
            self.fx
                .send(conn, fitted_ack(Packet::PubRel, ack, max_packet_size));
        }
    }

    pub(super) fn handle_client_pubcomp(&mut self, conn: ConnId, pubcomp: Ack, now: Instant) {
        let c = match self.connections.packet_from(conn, now) {
            PacketFrom::Connected(c) => c,
            PacketFrom::Connecting => return self.close_silently(conn),
            PacketFrom::Gone => return,
        };
        if let Some(session) = self.sessions.get_mut(&c.session) {
            session.handle_pubcomp(pubcomp.packet_id, &mut self.fx, &self.config, now);
        }
    }
}

/// Whether a topic has more levels than `max`. A name of `n` bytes has at most `n + 1`
/// levels (one more than its `/`s), so only names of at least `max` bytes are counted:
/// with the default limit of 128 levels, most names never are.
fn exceeds_levels(topic: &aviary_codec::TopicName, max: usize) -> bool {
    topic.as_str().len() >= max && topic.level_count() > max
}

/// The packet of an ack (`packet` wraps it), fitted to the client's Maximum Packet Size;
/// only an ack with a reason string can need fitting (see [`fit`]).
fn fitted_ack(packet: fn(Ack) -> Packet, ack: Ack, max_packet_size: Option<u32>) -> Packet {
    if ack.properties.reason_string.is_none() {
        packet(ack)
    } else {
        fit(packet(ack), max_packet_size)
    }
}

/// Whether a topic is reserved for what the broker publishes itself: `$SYS/...` and
/// `$events/...`.
fn is_reserved(topic: &aviary_codec::TopicName) -> bool {
    topic.is_dollar() && matches!(topic.levels().next(), Some("$SYS" | "$events"))
}

/// An acknowledgement without properties.
pub(super) fn ack(packet_id: PacketId, reason_code: ReasonCode) -> Ack {
    Ack {
        packet_id,
        reason_code,
        properties: AckProperties::default(),
    }
}

/// An acknowledgement that explains an error code with a reason string, unless the client
/// asked for no problem information [MQTT-3.1.2-29].
pub(super) fn explained_ack(
    packet_id: PacketId,
    reason_code: ReasonCode,
    problem_info: bool,
) -> Ack {
    let mut ack = ack(packet_id, reason_code);
    // Only error codes have a text (see `error_text`).
    if problem_info && reason_code.is_error() {
        ack.properties.reason_string = error_text(reason_code).map(str::to_owned);
    }
    ack
}

/// The reason string for an error code in an ack (PUBACK, PUBREC, PUBREL, PUBCOMP,
/// SUBACK).
pub(super) fn error_text(code: ReasonCode) -> Option<&'static str> {
    Some(match code {
        ReasonCode::NOT_AUTHORIZED => "not authorized",
        ReasonCode::PACKET_IDENTIFIER_NOT_FOUND => "packet identifier not found",
        ReasonCode::QUOTA_EXCEEDED => "subscription limit of the session reached",
        ReasonCode::TOPIC_FILTER_INVALID => "topic filter has more levels than the server allows",
        _ => return None,
    })
}
