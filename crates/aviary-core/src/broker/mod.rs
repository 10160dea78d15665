//! The [`Broker`]: every connection's protocol state machine and every session, driven by
//! `handle_*` calls and drained with `poll_*` calls (see the crate docs for the order).
//!
//! Code map of this folder:
//! * `config` — [`BrokerConfig`], the limits and settings;
//! * `connection` — per-connection state (Connecting → Connected → removed);
//! * `connect` — CONNECT: client id rules, limits, takeover, session present, CONNACK;
//! * `session` — session state and the outgoing QoS 1/2 window, queue and resends;
//! * `outgoing` — building the PUBLISH packets a session sends (aliases, expiry, size);
//! * `publish` — PUBLISH in (QoS 0/1/2, aliases, retained) and the acks from the client;
//! * `route` — fan-out of a message to sessions: overlapping and shared subscriptions;
//! * `subscribe` — SUBSCRIBE / UNSUBSCRIBE and retained messages on subscribe;
//! * `lifecycle` — the end of a connection or session, wills, timers firing;
//! * `admin` — operations of the management side (publish, kick out, list clients);
//! * `manage` — more of them: session subscriptions, retained, shared groups, limits;
//! * `events` — opt-in [`Event`]s for the management side;
//! * `metering` — usage units per message, connect and disconnect;
//! * `alias`, `timers`, `message`, `stats`, `idmap`, `lazy` — small pieces used by the above.
//!
//! The broker is owned by one task of the I/O shell: no locks inside. Its output queue of
//! [`Transmit`]s is unbounded by construction but bounded in practice: every entry is
//! caused by an input, and per-session state is bounded by the in-flight window and the
//! session queue.
//!
//! Choices where the spec leaves room (each with its reason):
//! * QoS 0 messages for a disconnected session are dropped and counted, not queued (as
//!   Mosquitto's default): the queue bound is for messages the sender paid to have kept.
//! * Resending after `retry_interval` applies to 3.x only; 5.0 forbids resending except on
//!   session resumption [MQTT-4.4.0-1] (`retry_v5` overrides that for operators who want
//!   it). Both resend everything on resumption.
//! * `max_keep_alive`: a 5.0 client asking for more, or for 0, gets Server Keep Alive; a
//!   3.x client cannot be told, so it is refused with CONNACK 0x02 (as Mosquitto 2 does).
//! * A PUBLISH deeper than `max_topic_levels` is a refused topic name: DISCONNECT 0x90
//!   (5.0) or close (3.x). A filter deeper than that is refused in its SUBACK.
//! * Takeover ends the old connection abnormally (its will follows the usual rules), then
//!   the new CONNECT resumes or discards the session; a session with expiry 0 ends with
//!   its connection, so it is never resumed by the taker.
//! * Shared groups prefer connected members (round robin), else a member whose session
//!   waits offline. A leaving member's queued and in-flight QoS 1 messages go to another
//!   connected member; if none, they stay with its session, or are dropped (counted) if
//!   the session ends. QoS 2 in flight stays with its member [MQTT-4.8.2-4, MQTT-4.8.2-5].
//! * 5.0 reason strings go on every DISCONNECT and refusing CONNACK from the server and on
//!   error acks (not with Request Problem Information = 0), never past the client's
//!   Maximum Packet Size. No user properties are added.

mod admin;
mod alias;
mod authorize;
mod config;
mod connect;
mod connection;
mod events;
mod idmap;
mod lazy;
mod lifecycle;
mod manage;
mod message;
mod metering;
mod outgoing;
mod persist;
mod publish;
mod route;
mod session;
mod stats;
mod subscribe;
mod timers;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use aviary_codec::{
    DecodeError, Disconnect, Packet, ProtocolVersion, ReasonCode, SubscriptionOptions,
};

use crate::authz::{AllowAll, Authorizer};
use crate::retained::RetainedStore;
use crate::topic_index::SubscriptionIndex;

pub use admin::ClientInfo;
pub use config::{BrokerConfig, QueueOverflow};
pub use events::{EndReason, Event};
pub use manage::{
    ClientCounters, ManageError, RetainedInfo, RuntimeLimits, SharedGroupInfo, SubscriptionInfo,
};
pub use message::Message;
pub use persist::{
    DeliveryState, PersistedDelivery, PersistedSession, PersistedSubscription, Restore,
    RestoredDelivery, RestoredSession, StoreOp,
};
pub use stats::{BrokerStats, DropStats};

use connection::{Connecting, Connection, Connections};
pub use idmap::IdMap;
use session::{Session, SessionId, Subscription};
use timers::Timers;

/// Identifies one transport connection; chosen by the I/O shell, never reused while open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Output of the broker for the I/O shell.
// Transmits are short-lived and mostly packets; boxing them would allocate per packet.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transmit {
    /// Encode `packet` in the connection's protocol version and write it.
    Packet { conn: ConnId, packet: Packet },
    /// Flush what was queued for the connection, then close it. The broker has already
    /// forgotten the connection.
    Close { conn: ConnId },
}

/// Everything a handler produces besides state changes: packets to send, timers to set,
/// counters. One struct so that session code can borrow it next to a session.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// Packets to write and connections to close, in order (drained by `poll_transmit`).
    pub(crate) transmits: VecDeque<Transmit>,
    /// Deadlines (drained by `handle_timeout`).
    pub(crate) timers: Timers,
    /// Counters (read by `Broker::stats`).
    pub(crate) stats: BrokerStats,
    /// Events for the management side, only when `emit_events` is set.
    pub(crate) events: VecDeque<Event>,
    /// Copy of `BrokerConfig::emit_events`.
    pub(crate) emit_events: bool,
    /// Copy of `BrokerConfig::persistence`: record [`StoreOp`]s.
    pub(crate) persist: bool,
    /// Store operations since the last `drain_store_ops`, in order.
    pub(crate) store_ops: Vec<StoreOp>,
    /// The next store id for a message or a message copy (continues after a restore).
    pub(crate) next_store_id: u64,
}

impl Effects {
    pub(crate) fn send(&mut self, conn: ConnId, packet: Packet) {
        self.transmits.push_back(Transmit::Packet { conn, packet });
    }

    pub(crate) fn close(&mut self, conn: ConnId) {
        self.transmits.push_back(Transmit::Close { conn });
    }

    /// Where the next transmit will go: a mark for [`Effects::send_at`].
    pub(crate) fn mark(&self) -> usize {
        self.transmits.len()
    }

    /// Queues `packet` at `mark` (from [`Effects::mark`]), ahead of what was queued since:
    /// how a publisher's PUBACK/PUBREC goes before the deliveries its message caused. The
    /// server wakes connections in the order their packets come out of `poll_transmit`,
    /// and tokio runs the last task woken first: the subscribers' writes then go out
    /// before the publisher's acknowledgement, as Mosquitto does, instead of a syscall
    /// later. For the publisher's own connection the ack may now precede its copy of the
    /// message (self-subscription) or a close its message caused; MQTT orders neither.
    pub(crate) fn send_at(&mut self, mark: usize, conn: ConnId, packet: Packet) {
        let transmit = Transmit::Packet { conn, packet };
        // Nothing queued since the mark (say, every subscriber's window is full): the
        // plain append, cheaper than `insert` at the end.
        if mark >= self.transmits.len() {
            self.transmits.push_back(transmit);
        } else {
            self.transmits.insert(mark, transmit);
        }
    }

    /// Records an event if events are on; `make` only runs then.
    pub(crate) fn event(&mut self, make: impl FnOnce() -> Event) {
        if self.emit_events {
            self.events.push_back(make());
        }
    }
}

/// A DISCONNECT from the server with a reason string (always allowed on DISCONNECT, even
/// when the client asked for no problem information [MQTT-3.1.2-29]).
pub(crate) fn server_disconnect(reason: ReasonCode, text: &str) -> Packet {
    let mut disconnect = Disconnect::with_reason(reason);
    disconnect.properties.reason_string = Some(text.to_owned());
    Packet::Disconnect(disconnect)
}

/// Leaves out the reason string of a packet that would otherwise exceed the client's
/// Maximum Packet Size [MQTT-3.2.2-19, MQTT-3.14.2-3, MQTT-3.4.2-2, MQTT-3.9.2-1]. Only 5.0
/// packets carry reason strings.
pub(crate) fn fit(mut packet: Packet, max_packet_size: Option<u32>) -> Packet {
    let Some(max) = max_packet_size else {
        return packet;
    };
    if aviary_codec::encoded_len(&packet, ProtocolVersion::V5) <= max as usize {
        return packet;
    }
    match &mut packet {
        Packet::Disconnect(p) => p.properties.reason_string = None,
        Packet::ConnAck(p) => p.properties.reason_string = None,
        Packet::PubAck(p) | Packet::PubRec(p) | Packet::PubRel(p) | Packet::PubComp(p) => {
            p.properties.reason_string = None
        }
        Packet::SubAck(p) => p.properties.reason_string = None,
        _ => {}
    }
    packet
}

/// One plain subscription matching a message, before overlapping ones are merged.
#[derive(Clone, Copy, Debug)]
struct PlainMatch {
    /// The subscribing session.
    session: SessionId,
    /// Its options (QoS, No Local, retain as published).
    options: SubscriptionOptions,
    /// Its subscription identifier, if any.
    identifier: Option<std::num::NonZeroU32>,
}

/// All sessions and connections of one broker node.
#[derive(Debug)]
pub struct Broker {
    config: BrokerConfig,
    /// Open transports, by the shell's id.
    connections: Connections,
    /// Every session, connected or not.
    sessions: IdMap<SessionId, Box<Session>>,
    /// Client identifier → its session (at most one session per client id).
    client_ids: HashMap<Arc<str>, SessionId>,
    /// Topic filter → subscribing sessions (mirrors every session's `subscriptions`).
    index: SubscriptionIndex<SessionId, Subscription>,
    /// Retained messages, shared with the deliveries made from them.
    retained: RetainedStore<Arc<Message>>,
    /// The pending sweep of expired retained messages (lazy timers: others are stale).
    retained_sweep_at: Option<Instant>,
    fx: Effects,
    /// Connections in the Connected state (the `max_connections` limit counts these).
    connected: usize,
    /// Counter behind session ids (never reused).
    next_session_id: u64,
    /// Counter behind assigned client identifiers.
    next_assigned_id: u64,
    /// Reused by routing so that a publish allocates no match list.
    scratch_plain: Vec<PlainMatch>,
    /// Shared groups `(group, filter)` matching a message, reused by routing.
    scratch_shared: Vec<(String, String)>,
    /// Retained messages matching a new subscription, reused.
    scratch_retained: Vec<Arc<Message>>,
    /// Consulted on every CONNECT, SUBSCRIBE filter and PUBLISH (see `authorize`).
    authorizer: Arc<dyn Authorizer>,
}

impl Broker {
    pub fn new(config: BrokerConfig) -> Self {
        let fx = Effects {
            emit_events: config.emit_events,
            persist: config.persistence,
            next_store_id: 1,
            ..Effects::default()
        };
        Self {
            config,
            connections: Connections::default(),
            sessions: IdMap::default(),
            client_ids: HashMap::new(),
            index: SubscriptionIndex::new(),
            retained: RetainedStore::new(),
            retained_sweep_at: None,
            fx,
            connected: 0,
            next_session_id: 1,
            next_assigned_id: 0,
            scratch_plain: Vec::new(),
            scratch_shared: Vec::new(),
            scratch_retained: Vec::new(),
            authorizer: Arc::new(AllowAll),
        }
    }

    /// A transport connection was accepted; it must send CONNECT first.
    pub fn handle_open(&mut self, conn: ConnId, peer: SocketAddr, now: Instant) {
        self.connections.insert(
            conn,
            Connection::Connecting(Connecting {
                peer,
                opened_at: now,
            }),
        );
        if let Some(timeout) = self.config.connect_timeout() {
            self.fx
                .timers
                .schedule(now + timeout, timers::Timer::ConnectTimeout(conn));
        }
    }

    /// A packet arrived on `conn`.
    pub fn handle_packet(&mut self, conn: ConnId, packet: Packet, now: Instant) {
        // The packets of the message flows look their connection up once, in their
        // handler (which also marks it seen and closes one still waiting for CONNECT).
        match packet {
            Packet::Publish(publish) => self.handle_publish(conn, publish, now),
            Packet::PubAck(ack) => self.handle_client_puback(conn, ack, now),
            Packet::PubRec(ack) => self.handle_client_pubrec(conn, ack, now),
            Packet::PubRel(ack) => self.handle_pubrel(conn, ack, now),
            Packet::PubComp(ack) => self.handle_client_pubcomp(conn, ack, now),
            other => self.handle_other_packet(conn, other, now),
        }
    }

    /// A packet other than those of the message flows.
    fn handle_other_packet(&mut self, conn: ConnId, packet: Packet, now: Instant) {
        let connected = match self.connections.get_mut(&conn) {
            None => return, // already closed by us
            Some(Connection::Connecting(_)) => false,
            Some(Connection::Connected(c)) => {
                c.last_seen = now;
                true
            }
        };
        if !connected {
            match packet {
                Packet::Connect(connect) => {
                    let auth = authorize::unauthenticated(&connect);
                    self.handle_connect(conn, *connect, auth, now)
                }
                // The first packet must be CONNECT [MQTT-3.1.0-1].
                _ => self.close_silently(conn),
            }
            return;
        }
        match packet {
            Packet::Publish(_)
            | Packet::PubAck(_)
            | Packet::PubRec(_)
            | Packet::PubRel(_)
            | Packet::PubComp(_) => {} // handled by `handle_packet`
            Packet::Subscribe(subscribe) => self.handle_subscribe(conn, subscribe, now),
            Packet::Unsubscribe(unsubscribe) => self.handle_unsubscribe(conn, unsubscribe, now),
            Packet::PingReq => self.fx.send(conn, Packet::PingResp),
            Packet::Disconnect(disconnect) => self.handle_disconnect(conn, disconnect, now),
            // A second CONNECT [MQTT-3.1.0-2], packets only a server sends, and AUTH
            // without an authentication method in CONNECT (spec 4.12).
            Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp
            | Packet::Auth(_) => self.fail(
                conn,
                ReasonCode::PROTOCOL_ERROR,
                "packet not allowed from a client here",
                now,
            ),
        }
    }

    /// Bytes on `conn` could not be decoded; the connection will be closed.
    pub fn handle_decode_error(&mut self, conn: ConnId, error: &DecodeError, now: Instant) {
        match self.connections.get(&conn) {
            None => {}
            Some(Connection::Connecting(_)) => {
                if let DecodeError::UnsupportedProtocolVersion { .. } = error {
                    // [MQTT-3.1.2-2]: CONNACK 0x01 (3.x) / 0x84 (5.0), then close. The shell
                    // encodes it in its default dialect; 0x84 maps to return code 1.
                    self.connections.remove(&conn);
                    self.refuse(
                        conn,
                        ProtocolVersion::V3_1_1,
                        ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
                        "",
                        None,
                    );
                } else {
                    self.close_silently(conn);
                }
            }
            Some(Connection::Connected(_)) => {
                self.fail(conn, error.reason_code(), &error.to_string(), now)
            }
        }
    }

    /// The transport of `conn` is gone (peer closed, I/O error).
    pub fn handle_closed(&mut self, conn: ConnId, now: Instant) {
        self.end_connection(conn, EndReason::TransportClosed, now);
    }

    /// Runs every timer due at `now`: keep alive, retries, will delay, expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Every timer handler either finishes its work or re-schedules strictly after
        // `now`, so this loop ends.
        while let Some((at, timer)) = self.fx.timers.pop_due(now) {
            self.handle_timer(at, timer, now);
        }
    }

    /// Server shutdown: 5.0 clients get DISCONNECT 0x8B, every connection is closed. Wills
    /// are not published (the spec's triggers are all client-side failures).
    pub fn handle_shutdown(&mut self, now: Instant) {
        let mut conns: Vec<ConnId> = self.connections.keys().copied().collect();
        conns.sort_unstable();
        for conn in conns {
            if self.protocol_of(conn).is_some_and(ProtocolVersion::is_v5) {
                self.send_explained(
                    conn,
                    server_disconnect(ReasonCode::SERVER_SHUTTING_DOWN, "server shutting down"),
                );
            }
            self.fx.close(conn);
            self.end_connection(conn, EndReason::Shutdown, now);
        }
    }

    /// The next instant at which [`Broker::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.fx.timers.next()
    }

    /// The next event (only with [`BrokerConfig::emit_events`]); drain after each batch of
    /// `handle_*` calls, like transmits.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.fx.events.pop_front()
    }

    /// The next packet to write or connection to close.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.fx.transmits.pop_front()
    }

    /// The broker's counters and gauges.
    pub fn stats(&self) -> BrokerStats {
        let mut stats = self.fx.stats.clone();
        stats.connections = self.connected;
        stats.sessions = self.sessions.len();
        stats.subscriptions = self.index.len();
        stats.retained = self.retained.len();
        stats
    }

    /// The protocol version of a connection whose CONNECT was accepted.
    pub fn connection_protocol(&self, conn: ConnId) -> Option<ProtocolVersion> {
        self.protocol_of(conn)
    }

    /// The client identifier of a connected connection (assigned ones included).
    pub fn connection_client_id(&self, conn: ConnId) -> Option<&str> {
        self.connections
            .get(&conn)
            .and_then(Connection::connected)
            .map(|c| &*c.client_id)
    }

    /// The peer address of an open connection.
    pub fn connection_peer(&self, conn: ConnId) -> Option<SocketAddr> {
        match self.connections.get(&conn)? {
            Connection::Connecting(c) => Some(c.peer),
            Connection::Connected(c) => Some(c.peer),
        }
    }

    fn protocol_of(&self, conn: ConnId) -> Option<ProtocolVersion> {
        self.connections.get(&conn).and_then(Connection::protocol)
    }

    /// Closes a connection for a protocol violation: 5.0 gets DISCONNECT with `reason`
    /// and `detail` as reason string first [MQTT-4.13.1-1]; the will is published.
    fn fail(&mut self, conn: ConnId, reason: ReasonCode, detail: &str, now: Instant) {
        match self.connections.get(&conn) {
            None => {}
            Some(Connection::Connecting(_)) => self.close_silently(conn),
            Some(Connection::Connected(c)) => {
                if c.protocol.is_v5() {
                    self.send_explained(conn, server_disconnect(reason, detail));
                }
                self.fx.close(conn);
                self.end_connection(conn, EndReason::ProtocolError(reason), now);
            }
        }
    }

    /// Sends a packet that may carry a reason string, fitted to the client's Maximum Packet
    /// Size.
    fn send_explained(&mut self, conn: ConnId, packet: Packet) {
        let mark = self.fx.mark();
        self.send_explained_at(mark, conn, packet);
    }

    /// [`Broker::send_explained`] at a mark (see [`Effects::send_at`]).
    fn send_explained_at(&mut self, mark: usize, conn: ConnId, packet: Packet) {
        let max = self
            .connections
            .get(&conn)
            .and_then(Connection::connected)
            .and_then(|c| c.max_packet_size);
        self.fx.send_at(mark, conn, fit(packet, max));
    }

    /// Closes a connection that has not completed CONNECT.
    fn close_silently(&mut self, conn: ConnId) {
        if self.connections.remove(&conn).is_some() {
            self.fx.close(conn);
        }
    }
}
