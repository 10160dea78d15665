//! Events for the management side (system event topics, logs, metering): what happened to
//! clients, drained with [`crate::Broker::poll_event`]. Only produced when
//! [`crate::BrokerConfig::emit_events`] is set, so a shell that does not drain them cannot
//! make them pile up.

use std::sync::Arc;

use aviary_codec::{ProtocolVersion, QoS, ReasonCode, TopicFilter};

use super::ConnId;

/// Why a connected client's connection ended; decides whether its will is published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// DISCONNECT with 0x00 (any DISCONNECT in 3.x): the will is discarded [MQTT-3.14.4-3].
    ClientDisconnect,
    /// 5.0 DISCONNECT with another code, e.g. 0x04 Disconnect with Will Message: the will is
    /// published.
    ClientDisconnectWithWill(ReasonCode),
    /// The transport closed without DISCONNECT.
    TransportClosed,
    /// Silent for 1.5 × keep alive [MQTT-3.1.2-24].
    KeepAliveTimeout,
    /// Closed by us for a malformed packet or protocol violation (the 5.0 reason code sent).
    ProtocolError(ReasonCode),
    /// Another connection took over the client id [MQTT-3.1.4-3].
    TakenOver,
    /// Disconnected by the management side.
    Administrative,
    /// The server is shutting down (no will: the client did nothing wrong).
    Shutdown,
}

impl EndReason {
    /// Whether the connection's will is published (at once or after its delay).
    pub fn publishes_will(self) -> bool {
        !matches!(self, Self::ClientDisconnect | Self::Shutdown)
    }
}

/// Something that happened to a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// CONNECT accepted.
    Connected {
        conn: ConnId,
        client_id: Arc<str>,
        protocol: ProtocolVersion,
        clean_start: bool,
        session_present: bool,
    },
    /// A connected client's connection ended.
    Disconnected {
        conn: ConnId,
        client_id: Arc<str>,
        reason: EndReason,
        /// Metered units of the whole connection: CONNECT, PUBLISHes both ways and this
        /// end (wills are counted in [`crate::BrokerStats::units`] only).
        units: u64,
    },
    /// A subscription was made or replaced (refused filters give no event).
    Subscribed {
        conn: ConnId,
        client_id: Arc<str>,
        filter: TopicFilter,
        qos: QoS,
    },
    /// A subscription was removed by UNSUBSCRIBE.
    Unsubscribed {
        conn: ConnId,
        client_id: Arc<str>,
        filter: TopicFilter,
    },
}
