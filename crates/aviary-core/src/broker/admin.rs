//! Operations from the management side rather than from a client: publish a message,
//! disconnect a client (DISCONNECT 0x98 in 5.0), list connected clients. The management
//! API and system event topics use these.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use aviary_codec::properties::PublishProperties;
use aviary_codec::{ProtocolVersion, QoS, ReasonCode, TopicName};
use bytes::Bytes;

use super::connection::Connection;
use super::message::Message;
use super::{server_disconnect, Broker, ConnId, EndReason};

/// A connected client, as the management API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    /// The shell's id of the connection.
    pub conn: ConnId,
    /// As given by the client, or assigned.
    pub client_id: String,
    /// Fixed by CONNECT.
    pub protocol: ProtocolVersion,
    /// The client's address.
    pub peer: SocketAddr,
    /// Seconds granted (0: off).
    pub keep_alive: u16,
    /// Subscriptions of its session.
    pub subscriptions: usize,
    /// Outgoing QoS 1/2 messages sent and not yet acknowledged.
    pub inflight: usize,
    /// Outgoing QoS 1/2 messages waiting for room in the window.
    pub queued: usize,
    /// Metered units so far: CONNECT and PUBLISHes both ways.
    pub units: u64,
}

impl Broker {
    /// Whether a message published on `topic` now would match any subscription, plain or
    /// shared: the server builds a system event's payload only when someone would get it.
    pub fn has_subscribers(&self, topic: &TopicName) -> bool {
        let mut matched = false;
        self.index.for_each_match(topic, |_| matched = true);
        matched
    }

    /// Publishes a message on behalf of the broker (management API, system events). It is
    /// retained if `retain` is set, exactly like a client's PUBLISH; No Local never
    /// applies. Returns whether any subscription matched.
    pub fn publish(
        &mut self,
        topic: TopicName,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        properties: PublishProperties,
        now: Instant,
    ) -> bool {
        let mut properties = properties;
        properties.topic_alias = None;
        properties.subscription_identifiers.clear();
        let message = Arc::new(Message {
            topic,
            payload,
            qos,
            retain,
            properties: properties.into(),
            received_at: now,
            publisher: None,
            store_id: std::sync::OnceLock::new(),
        });
        self.store_retained(&message, now);
        self.route(&message, now)
    }

    /// Disconnects the client with this identifier (administrative action: 5.0 gets
    /// DISCONNECT 0x98); its will is published as for any connection the server ends.
    /// Returns false if no such client is connected.
    pub fn disconnect_client(&mut self, client_id: &str, now: Instant) -> bool {
        let Some(conn) = self
            .client_ids
            .get(client_id)
            .and_then(|sid| self.sessions.get(sid))
            .and_then(|s| s.link.as_ref())
            .map(|l| l.conn)
        else {
            return false;
        };
        if self.protocol_of(conn).is_some_and(ProtocolVersion::is_v5) {
            self.send_explained(
                conn,
                server_disconnect(
                    ReasonCode::ADMINISTRATIVE_ACTION,
                    "disconnected by an operator",
                ),
            );
        }
        self.fx.close(conn);
        self.end_connection(conn, EndReason::Administrative, now);
        true
    }

    /// The connected clients, in no particular order.
    pub fn clients(&self) -> impl Iterator<Item = ClientInfo> + '_ {
        self.connections.iter().filter_map(|(conn, c)| {
            let Connection::Connected(c) = c else {
                return None;
            };
            let session = self.sessions.get(&c.session)?;
            Some(ClientInfo {
                conn: *conn,
                client_id: c.client_id.to_string(),
                protocol: c.protocol,
                peer: c.peer,
                keep_alive: c.keep_alive_seconds,
                subscriptions: session.subscriptions.len(),
                inflight: session.inflight_len(),
                queued: session.queued_len(),
                units: c.units + session.link.as_ref().map_or(0, |l| l.units),
            })
        })
    }
}
