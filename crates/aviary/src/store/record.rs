//! The records the store keeps, as plain serde structs encoded with postcard. They are the
//! on-disk format: changing a field's type or order is a schema change (bump
//! [`super::SCHEMA_VERSION`] and migrate). Times are absolute wall-clock milliseconds since
//! the Unix epoch, so expiry keeps counting while the broker is down.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Wall-clock time as milliseconds since the Unix epoch.
pub type WallMillis = u64;

/// One application message: a publish, a will or a retained message. (`Default`: an
/// empty QoS 0 message, for tests to fill in.)
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// The resolved topic name.
    pub topic: String,
    /// The payload bytes.
    pub payload: Vec<u8>,
    /// The QoS it was published with (0, 1 or 2).
    pub qos: u8,
    /// The RETAIN flag it was published with.
    pub retain: bool,
    /// When the broker received it; the Message Expiry Interval counts from here.
    pub received_at: WallMillis,
    /// 5.0 Message Expiry Interval as received, seconds.
    pub expiry_interval: Option<u32>,
    /// The publishing client, for No Local; `None` for the broker's own messages.
    pub publisher: Option<String>,
    /// 5.0 Payload Format Indicator (true: UTF-8).
    pub payload_format_indicator: Option<bool>,
    /// 5.0 Content Type.
    pub content_type: Option<String>,
    /// 5.0 Response Topic.
    pub response_topic: Option<String>,
    /// 5.0 Correlation Data.
    pub correlation_data: Option<Vec<u8>>,
    /// 5.0 User Properties, in order.
    pub user_properties: Vec<(String, String)>,
}

impl MessageRecord {
    /// When the message expires, if it has an expiry interval.
    pub fn expires_at(&self) -> Option<WallMillis> {
        self.expiry_interval
            .map(|secs| self.received_at.saturating_add(u64::from(secs) * 1000))
    }

    /// Whether the message expired before `now` (strictly, as the core decides).
    pub fn is_expired(&self, now: WallMillis) -> bool {
        self.expires_at().is_some_and(|at| now > at)
    }
}

/// One subscription of a persistent session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    /// The filter as subscribed (`$share/g/f` for shared ones).
    pub filter: String,
    /// Maximum QoS (0..=2).
    pub qos: u8,
    /// No Local [MQTT-3.8.3-3].
    pub no_local: bool,
    /// Retain As Published.
    pub retain_as_published: bool,
    /// Retain Handling (0..=2); only matters when the subscription is made, kept for
    /// completeness of the session's view.
    pub retain_handling: u8,
    /// 5.0 Subscription Identifier.
    pub identifier: Option<u32>,
}

/// A will waiting for its delay after its connection ended [MQTT-3.1.3-9].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WillRecord {
    /// When to publish it.
    pub at: WallMillis,
    /// The will as a message.
    pub message: MessageRecord,
}

/// The will of a connection that is open, kept so that a crash counts as the abnormal end
/// it is: at the next start the will is published (after its delay, bounded by the
/// session's expiry, both counted from the store's last sign of life).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveWillRecord {
    /// 5.0 Will Delay Interval, seconds (0: at once).
    pub delay: u32,
    /// When the connection ended: `None` while it is open; set by the first start after
    /// a crash (to the last sign of life), so a later start does not move it.
    pub ended_at: Option<WallMillis>,
    /// The will as a message (its receive time is set when it is published).
    pub message: MessageRecord,
}

/// A persistent session (clean session 0 / session expiry > 0), without its messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Seconds the session outlives its connection (u32::MAX: never expires).
    pub expiry_interval: u32,
    /// When the session expires, once its connection ended; `None` while connected (after
    /// a crash the expiry then counts from the store's last sign of life) or when it never
    /// expires.
    pub expires_at: Option<WallMillis>,
    /// Subscriptions, in no particular order.
    pub subscriptions: Vec<SubscriptionRecord>,
    /// A delayed will, when the session outlives its connection.
    pub will: Option<WillRecord>,
}

/// One session's copy of a message (queued or in flight).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// The message, stored once in the messages table and shared by its deliveries.
    pub message_id: u64,
    /// Granted QoS (1 or 2).
    pub qos: u8,
    /// The RETAIN flag to send.
    pub retain: bool,
    /// Subscription identifiers to send with it.
    pub subscription_ids: Vec<u32>,
    /// The shared subscription it was chosen for, if any.
    pub shared: Option<String>,
}

/// Where a delivery stands in the outgoing QoS 1/2 flow (spec 4.3.2 / 4.3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryState {
    /// Waiting behind the in-flight window; never sent.
    Queued,
    /// PUBLISH sent with this packet id; resent with DUP=1 after a restart.
    Sent { packet_id: u16 },
    /// QoS 2: PUBREC received and PUBREL sent; after a restart PUBREL is resent, never
    /// the PUBLISH.
    Released { packet_id: u16 },
}

impl DeliveryState {
    /// The compact on-disk form: 0 for queued; packet id | 1 << 16 for sent; packet id |
    /// 2 << 16 for released.
    pub(crate) fn encode(self) -> u32 {
        match self {
            Self::Queued => 0,
            Self::Sent { packet_id } => u32::from(packet_id) | 1 << 16,
            Self::Released { packet_id } => u32::from(packet_id) | 2 << 16,
        }
    }

    /// The inverse of [`Self::encode`]; `None` for a value no build writes.
    pub(crate) fn decode(raw: u32) -> Option<Self> {
        let packet_id = u16::try_from(raw & 0xffff).ok()?;
        match (raw >> 16, packet_id) {
            (0, 0) => Some(Self::Queued),
            (1, id) if id != 0 => Some(Self::Sent { packet_id: id }),
            (2, id) if id != 0 => Some(Self::Released { packet_id: id }),
            _ => None,
        }
    }
}

/// One change to durable broker state. The broker task emits them in the order the core
/// made the changes; the writer applies a whole batch in one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreOp {
    /// A persistent session was created or changed (subscriptions, expiry, will).
    PutSession {
        client_id: String,
        session: SessionRecord,
    },
    /// A session ended (expired, clean start, or no longer persistent): it goes with its
    /// deliveries and incoming QoS 2 state.
    DeleteSession { client_id: String },
    /// A message copy for a session (queued, or already sent if `state` says so). The
    /// message body is written once, by the first delivery that refers to it.
    Deliver {
        client_id: String,
        /// Unique and increasing per broker: the session's order on load.
        delivery_id: u64,
        delivery: DeliveryRecord,
        state: DeliveryState,
        message: Arc<MessageRecord>,
    },
    /// A delivery moved on in the QoS flow (PUBLISH sent, PUBREL sent).
    SetDeliveryState {
        client_id: String,
        delivery_id: u64,
        state: DeliveryState,
    },
    /// A delivery is done (PUBACK, PUBCOMP, dropped, moved to another member).
    DeleteDelivery { client_id: String, delivery_id: u64 },
    /// An incoming QoS 2 PUBLISH was accepted; its packet id awaits PUBREL.
    Qos2Received { client_id: String, packet_id: u16 },
    /// PUBREL came for an incoming QoS 2 packet id.
    Qos2Released { client_id: String, packet_id: u16 },
    /// A retained message was set (or replaced) on its topic.
    PutRetained { message: Arc<MessageRecord> },
    /// The retained message of a topic was cleared.
    DeleteRetained { topic: String },
    /// A connection with a will was accepted for `client_id`: its will is kept until the
    /// connection ends.
    PutWill {
        client_id: String,
        will: LiveWillRecord,
    },
    /// The connection holding `client_id`'s will ended (or its will was published after a
    /// restart).
    DeleteWill { client_id: String },
}

/// A session as loaded at startup, with everything that hangs off it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSession {
    /// The client identifier owning it.
    pub client_id: String,
    /// Subscriptions, expiry, will.
    pub session: SessionRecord,
    /// Its message copies in delivery order (in flight and queued).
    pub deliveries: Vec<StoredDelivery>,
    /// Incoming QoS 2 packet ids awaiting PUBREL.
    pub incoming_qos2: Vec<u16>,
}

/// One delivery as loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredDelivery {
    /// Its id (order within the session).
    pub delivery_id: u64,
    /// QoS, flags, identifiers.
    pub delivery: DeliveryRecord,
    /// Queued, sent or released.
    pub state: DeliveryState,
    /// The message, shared by every delivery of it.
    pub message: Arc<MessageRecord>,
}

/// Everything the store holds for the broker, as loaded at startup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Persistent sessions that had not expired, by client id order.
    pub sessions: Vec<StoredSession>,
    /// Retained messages that had not expired.
    pub retained: Vec<Arc<MessageRecord>>,
    /// Wills to publish at once: of connections open at the crash whose session did not
    /// outlive them, and of sessions that expired while the broker was down. Each stays
    /// on disk until the broker reports it published ([`StoreOp::DeleteWill`]).
    pub wills: Vec<(String, Arc<MessageRecord>)>,
    /// Larger than every delivery id and message id on disk: where the broker's counters
    /// continue.
    pub next_id: u64,
    /// What the load removed because it had expired while the broker was down.
    pub expired: ExpiredCounts,
}

/// What a load removed from disk because it expired while the broker was down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExpiredCounts {
    /// Sessions whose expiry passed.
    pub sessions: usize,
    /// Queued message copies whose Message Expiry Interval passed.
    pub deliveries: usize,
    /// Retained messages whose Message Expiry Interval passed.
    pub retained: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_state_round_trips() {
        for state in [
            DeliveryState::Queued,
            DeliveryState::Sent { packet_id: 1 },
            DeliveryState::Sent { packet_id: 65535 },
            DeliveryState::Released { packet_id: 7 },
        ] {
            assert_eq!(DeliveryState::decode(state.encode()), Some(state));
        }
        assert_eq!(DeliveryState::decode(1 << 16), None, "packet id 0");
        assert_eq!(DeliveryState::decode(3 << 16 | 5), None);
        assert_eq!(DeliveryState::decode(5), None, "queued with an id");
    }

    #[test]
    fn message_expiry_is_strict() {
        let message = MessageRecord {
            topic: "t".into(),
            payload: vec![],
            qos: 1,
            retain: false,
            received_at: 10_000,
            expiry_interval: Some(2),
            publisher: None,
            payload_format_indicator: None,
            content_type: None,
            response_topic: None,
            correlation_data: None,
            user_properties: vec![],
        };
        assert_eq!(message.expires_at(), Some(12_000));
        assert!(!message.is_expired(12_000));
        assert!(message.is_expired(12_001));
    }
}
