//! CONNECT (3.1.4): admission (authentication method, client identifier rules, keep alive
//! limit, connection limit), takeover of a connected client id, session creation or
//! resumption with the Session Present flag, and CONNACK with the 5.0 properties.

use std::num::{NonZeroU16, NonZeroU32};
use std::sync::Arc;
use std::time::Instant;

use aviary_codec::properties::ConnAckProperties;
use aviary_codec::{ConnAck, Connect, Packet, ProtocolVersion, ReasonCode};

use super::alias::OutboundAliases;
use super::connection::{Accepted, Connection};
use super::message::Message;
use super::session::{Attachment, Link, Session, SessionId};
use super::timers::Timer;
use super::{fit, server_disconnect, Broker, ConnId, EndReason, Event};
use crate::authz::{self, Authentication, Effect, Identity, Request};

/// The keep alive decided for a connection.
struct KeepAlive {
    /// Seconds enforced (0: off).
    seconds: u16,
    /// 5.0 Server Keep Alive to announce when it differs from the request.
    announce: Option<u16>,
}

impl Broker {
    /// CONNECT on a connection in the Connecting state.
    pub(super) fn handle_connect(
        &mut self,
        conn: ConnId,
        connect: Connect,
        authentication: Authentication,
        now: Instant,
    ) {
        let Some(Connection::Connecting(pending)) = self.connections.remove(&conn) else {
            return;
        };
        let protocol = connect.protocol;
        let v5 = protocol.is_v5();
        let client_max = connect.properties.maximum_packet_size.map(NonZeroU32::get);

        // Enhanced authentication is not offered (yet).
        if v5 && connect.properties.authentication_method.is_some() {
            return self.refuse(
                conn,
                protocol,
                ReasonCode::BAD_AUTHENTICATION_METHOD,
                "enhanced authentication is not supported",
                client_max,
            );
        }
        let (client_id, assigned) = match self.client_id_for(&connect) {
            Ok(id) => id,
            Err(code) => {
                return self.refuse(
                    conn,
                    protocol,
                    code,
                    "client identifier not accepted",
                    client_max,
                )
            }
        };
        // Authentication (decided by the shell) and the right to connect.
        let principal = match authentication {
            Authentication::Accepted(principal) => principal,
            Authentication::Refused(refusal) => {
                return self.refuse(
                    conn,
                    protocol,
                    refusal.reason_code(),
                    refusal.text(),
                    client_max,
                )
            }
        };
        let identity = Identity {
            client_id: &client_id,
            peer: pending.peer,
            principal: &principal,
        };
        if authz::decide(self.authorizer.as_ref(), &identity, &Request::Connect) == Effect::Deny {
            return self.refuse(
                conn,
                protocol,
                ReasonCode::NOT_AUTHORIZED,
                "not authorized",
                client_max,
            );
        }
        // A will its publisher may not publish is dropped (checked once, here).
        let had_will = connect.will.is_some();
        let will = connect.will.map(Box::new).filter(|will| {
            let request = Request::Publish {
                topic: &will.topic,
                qos: will.qos,
                retain: will.retain,
            };
            authz::decide(self.authorizer.as_ref(), &identity, &request) == Effect::Allow
        });
        if had_will && will.is_none() {
            self.fx.stats.dropped.not_authorized += 1;
        }
        let Some(keep_alive) = self.negotiate_keep_alive(connect.keep_alive, protocol) else {
            // 3.x cannot be told a smaller keep alive: refuse like Mosquitto does.
            return self.refuse(
                conn,
                protocol,
                ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                "keep alive above the server maximum",
                client_max,
            );
        };

        // Takeover [MQTT-3.1.4-3]: the connection holding this client id is closed first
        // (5.0: DISCONNECT 0x8E); it counts as an abnormal end, so its will follows the
        // usual rules (a delayed will is cancelled below if the session is resumed).
        let holder = self
            .client_ids
            .get(&client_id)
            .and_then(|sid| self.sessions.get(sid))
            .and_then(|s| s.link.as_ref())
            .map(|l| (l.conn, l.protocol));
        if holder.is_none() && self.connected >= self.config.max_connections {
            let code = if v5 {
                ReasonCode::QUOTA_EXCEEDED
            } else {
                ReasonCode::SERVER_UNAVAILABLE
            };
            return self.refuse(conn, protocol, code, "connection limit reached", client_max);
        }
        if let Some((old, old_protocol)) = holder {
            if old_protocol.is_v5() {
                self.send_explained(
                    old,
                    server_disconnect(ReasonCode::SESSION_TAKEN_OVER, "session taken over"),
                );
            }
            self.fx.close(old);
            self.end_connection(old, EndReason::TakenOver, now);
        }

        // Session: clean start discards an existing one [MQTT-3.1.2-4]; otherwise an
        // existing one is resumed [MQTT-3.1.2-5] and Session Present says so
        // [MQTT-3.2.2-1, MQTT-3.2.2-2, MQTT-3.2.2-3].
        let requested_expiry = if v5 {
            connect.properties.session_expiry_interval.unwrap_or(0)
        } else if connect.clean_start {
            0
        } else {
            u32::MAX
        };
        let expiry = requested_expiry.min(self.config.max_session_expiry_interval);
        if connect.clean_start {
            if let Some(sid) = self.client_ids.get(&client_id).copied() {
                self.end_session(sid, now);
            }
        }
        let (sid, session_present) = match self.client_ids.get(&client_id) {
            Some(sid) => (*sid, true),
            None => (self.create_session(client_id.clone()), false),
        };

        let window = if v5 {
            let receive_maximum = connect
                .properties
                .receive_maximum
                .map_or(u16::MAX, NonZeroU16::get);
            receive_maximum.min(self.config.max_inflight_v5)
        } else {
            self.config.max_inflight
        };
        let link = Link {
            conn,
            protocol,
            window: window.max(1),
            max_packet_size: client_max,
            aliases: OutboundAliases::new(connect.properties.topic_alias_maximum.unwrap_or(0)),
            retry: !v5 || self.config.retry_v5,
            persistent: expiry > 0,
            units: 0,
        };
        if let Some(session) = self.sessions.get_mut(&sid) {
            session.expiry_interval = expiry;
            // A new connection before the will delay passed: no will [MQTT-3.1.3-9].
            session.pending_will = None;
            session.link = Attachment::Connected(link);
        }
        // Saved if it outlives the connection; a resumed one that no longer does leaves
        // the store.
        self.persist_session(sid);

        let connected = pending.accept(
            Accepted {
                protocol,
                session: sid,
                client_id: client_id.clone(),
                keep_alive_seconds: keep_alive.seconds,
                will,
                connect_expiry_zero: requested_expiry == 0,
                problem_info: v5 && connect.properties.request_problem_information != Some(false),
                max_packet_size: client_max,
                principal,
            },
            now,
        );
        if let (true, Some(will)) = (self.fx.persist, &connected.will) {
            // Kept while the connection is open: a crash of the broker is an abnormal end
            // for the client, and its will is published after the restart.
            self.fx.store(super::StoreOp::WillSet {
                client_id: client_id.clone(),
                delay: will.properties.will_delay_interval.unwrap_or(0),
                message: Arc::new(Message::from_will((**will).clone(), client_id.clone(), now)),
            });
        }
        let keep_alive_period = connected.keep_alive_period();
        self.connections
            .insert(conn, Connection::Connected(connected));
        self.connected += 1;
        self.fx.stats.units += super::metering::CONNECT_UNITS;
        if let Some(period) = keep_alive_period {
            self.fx
                .timers
                .schedule(now + period, Timer::KeepAlive(conn));
        }

        let properties = if v5 {
            ConnAckProperties {
                session_expiry_interval: (expiry != requested_expiry).then_some(expiry),
                receive_maximum: NonZeroU16::new(self.config.receive_maximum)
                    .filter(|r| r.get() != u16::MAX),
                retain_available: Some(true),
                maximum_packet_size: NonZeroU32::new(self.config.max_packet_size),
                assigned_client_identifier: assigned.then(|| client_id.to_string()),
                topic_alias_maximum: (self.config.topic_alias_maximum > 0)
                    .then_some(self.config.topic_alias_maximum),
                wildcard_subscription_available: Some(true),
                subscription_identifiers_available: Some(true),
                shared_subscription_available: Some(true),
                server_keep_alive: keep_alive.announce,
                ..ConnAckProperties::default()
            }
        } else {
            ConnAckProperties::default()
        };
        self.fx.send(
            conn,
            Packet::ConnAck(Box::new(ConnAck {
                session_present,
                reason_code: ReasonCode::SUCCESS,
                properties,
            })),
        );

        let clean_start = connect.clean_start;
        self.fx.event(|| Event::Connected {
            conn,
            client_id,
            protocol,
            clean_start,
            session_present,
        });
        if session_present {
            if let Some(session) = self.sessions.get_mut(&sid) {
                session.resume(&mut self.fx, &self.config, now);
            }
        }
    }

    /// Sends a refusing CONNACK and closes; the connection is already out of the table.
    /// 3.x gets the return code with the same meaning (the codec maps it); 5.0 also gets
    /// `detail` as reason string (always allowed on CONNACK).
    pub(super) fn refuse(
        &mut self,
        conn: ConnId,
        protocol: ProtocolVersion,
        code: ReasonCode,
        detail: &str,
        max_packet_size: Option<u32>,
    ) {
        let (reason_code, properties) = if protocol.is_v5() {
            let properties = ConnAckProperties {
                reason_string: (!detail.is_empty()).then(|| detail.to_owned()),
                ..ConnAckProperties::default()
            };
            (code, properties)
        } else {
            let code = ReasonCode::from_v3_connack(code.to_v3_connack()).unwrap_or(code);
            (code, ConnAckProperties::default())
        };
        self.fx.stats.connects_refused += 1;
        let connack = Packet::ConnAck(Box::new(ConnAck {
            session_present: false, // [MQTT-3.2.2-6]
            reason_code,
            properties,
        }));
        self.fx.send(conn, fit(connack, max_packet_size));
        self.fx.close(conn);
    }

    /// The client identifier to use and whether we assigned it.
    ///
    /// * Longer than `max_client_id_len`: refused (0x02 / 0x85).
    /// * Empty in 3.1: refused (3.1 requires 1–23 characters; longer ones are accepted up
    ///   to our maximum, as the 3.1.1 spec allows [MQTT-3.1.3-5]).
    /// * Empty in 3.1.1 with clean session 0: refused [MQTT-3.1.3-8]; with clean session 1
    ///   assigned [MQTT-3.1.3-6] (not sent back: 3.1.1 has no way to).
    /// * Empty in 5.0: assigned and returned as Assigned Client Identifier [MQTT-3.2.2-16].
    fn client_id_for(&mut self, connect: &Connect) -> Result<(Arc<str>, bool), ReasonCode> {
        let id = connect.client_id.as_str();
        if id.len() > self.config.max_client_id_len {
            return Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
        }
        if !id.is_empty() {
            return Ok((id.into(), false));
        }
        match connect.protocol {
            ProtocolVersion::V3_1 => Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
            ProtocolVersion::V3_1_1 if !connect.clean_start => {
                Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID)
            }
            _ => Ok((self.assign_client_id(), true)),
        }
    }

    /// A client identifier no session uses. Each attempt takes a new counter value, so the
    /// loop ends after at most `sessions + 1` attempts.
    fn assign_client_id(&mut self) -> Arc<str> {
        loop {
            self.next_assigned_id += 1;
            let id: Arc<str> = format!("aviary-{:x}", self.next_assigned_id).into();
            if !self.client_ids.contains_key(&id) {
                return id;
            }
        }
    }

    /// Applies `max_keep_alive` (65,535 means no limit). A 5.0 client asking for more, or
    /// for 0 (no keep alive) while a limit is set, is told the limit in Server Keep Alive
    /// [MQTT-3.2.2-21]. A 3.x client cannot be told, so it is refused (`None`), as Mosquitto
    /// 2 does: silently enforcing a shorter period would kill it over and over.
    fn negotiate_keep_alive(&self, requested: u16, protocol: ProtocolVersion) -> Option<KeepAlive> {
        let max = self.config.max_keep_alive;
        let over = max < u16::MAX && (requested > max || requested == 0);
        if !over {
            return Some(KeepAlive {
                seconds: requested,
                announce: None,
            });
        }
        protocol.is_v5().then_some(KeepAlive {
            seconds: max,
            announce: Some(max),
        })
    }

    fn create_session(&mut self, client_id: Arc<str>) -> SessionId {
        let sid = SessionId(self.next_session_id);
        self.next_session_id += 1;
        self.client_ids.insert(client_id.clone(), sid);
        self.sessions
            .insert(sid, Box::new(Session::new(sid, client_id)));
        sid
    }
}
