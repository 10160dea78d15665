//! Counters the broker keeps about itself, read through [`crate::Broker::stats`] (metrics,
//! the management API, metering later).

/// A snapshot of the broker's counters. Gauges are current values; counters only grow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// Gauge: connections that completed CONNECT.
    pub connections: usize,
    /// Gauge: sessions, connected or not.
    pub sessions: usize,
    /// Gauge: subscriptions (plain and shared memberships).
    pub subscriptions: usize,
    /// Gauge: retained messages.
    pub retained: usize,
    /// Counter: PUBLISH packets received from clients (duplicates of QoS 2 included).
    pub messages_in: u64,
    /// Counter: PUBLISH packets sent to clients (resends included).
    pub messages_out: u64,
    /// Counter: metered usage units (messages in and out, wills, connects, disconnects;
    /// multipliers in DESIGN.md).
    pub units: u64,
    /// Counter: will messages published.
    pub wills_published: u64,
    /// Counter: connections refused at CONNACK.
    pub connects_refused: u64,
    /// Counter: why messages were not delivered to a session.
    pub dropped: DropStats,
}

/// Messages dropped for one session, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropStats {
    /// The session queue was full ([`crate::QueueOverflow`] applied).
    pub queue_full: u64,
    /// QoS 0 message for a disconnected session (not queued, like Mosquitto's default).
    pub qos0_offline: u64,
    /// The Message Expiry Interval passed before sending started [MQTT-3.3.2-5].
    pub expired: u64,
    /// Larger than the client's Maximum Packet Size [MQTT-3.1.2-25].
    pub too_large: u64,
    /// A shared-subscription message whose member left with no other member to take it.
    pub shared_no_member: u64,
    /// A client PUBLISH to a topic reserved for the broker (`$SYS/...`, `$events/...`).
    pub reserved_topic: u64,
    /// A retained message refused because `max_retained` messages are stored.
    pub retained_quota: u64,
    /// A client PUBLISH (or will) the authorizer denied.
    pub not_authorized: u64,
}
