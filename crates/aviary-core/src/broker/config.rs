//! The broker's limits and protocol settings: the validated `[mqtt]` section of the config
//! file, as the core sees it. Every field has a default (see [`BrokerConfig::default`]).

use std::time::Duration;

/// What to do when a session's queue of waiting QoS 1/2 messages is full. Every use of
/// the policy is counted in [`crate::BrokerStats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueOverflow {
    /// Refuse the new message for this session (counted as dropped).
    DropNew,
    /// Drop the oldest queued message to make room (counted as dropped).
    DropOldest,
}

/// The broker's limits and protocol settings (the validated `[mqtt]` config section).
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// In-flight window of outgoing QoS 1/2 messages for 3.x clients.
    pub max_inflight: u16,
    /// Upper bound on the in-flight window of a 5.0 client: its Receive Maximum is honoured
    /// up to this value (a client that sends none allows 65,535, which would let one slow
    /// subscriber pin that many messages in memory).
    pub max_inflight_v5: u16,
    /// Messages waiting behind the in-flight window, per session.
    pub max_queued_messages: usize,
    /// Bytes (topic + payload) of the messages waiting behind the in-flight window, per
    /// session: with `max_queued_messages`, what bounds the store on disk.
    pub max_queued_bytes: usize,
    /// What happens at `max_queued_messages`.
    pub queue_overflow: QueueOverflow,
    /// Resend unacknowledged QoS 1/2 messages with DUP after this; `None` (or zero) turns
    /// it off.
    /// Applies to 3.x connections only: 5.0 forbids resending except on session
    /// resumption [MQTT-4.4.0-1].
    pub retry_interval: Option<Duration>,
    /// Also resend to 5.0 clients after `retry_interval`. Off by default because 5.0 says
    /// a sender MUST NOT resend except on session resumption [MQTT-4.4.0-1]; for operators
    /// who want the 3.x behaviour everywhere.
    pub retry_v5: bool,
    /// Largest keep alive granted (5.0: Server Keep Alive when the client asks for more).
    /// 65,535 means "no limit".
    pub max_keep_alive: u16,
    /// Filters beyond this per session are refused in SUBACK (0x80 / 0x97).
    pub max_subscriptions_per_session: usize,
    /// Connections beyond this get CONNACK 0x03 (3.x) / 0x97 (5.0).
    pub max_connections: usize,
    /// Retained messages stored at most; a PUBLISH that would store one more is refused
    /// (5.0: 0x97 Quota exceeded). A plan limit, set at runtime.
    pub max_retained: usize,
    /// Largest packet accepted from clients (also announced in 5.0 CONNACK).
    pub max_packet_size: u32,
    /// Longest client identifier accepted.
    pub max_client_id_len: usize,
    /// Most `/`-separated levels in a topic name or filter.
    pub max_topic_levels: usize,
    /// Topic aliases a 5.0 client may use towards us (CONNACK Topic Alias Maximum).
    pub topic_alias_maximum: u16,
    /// QoS 1/2 PUBLISHes a 5.0 client may have unacknowledged towards us (CONNACK Receive
    /// Maximum); exceeding it is DISCONNECT 0x93.
    pub receive_maximum: u16,
    /// Cap on a client's Session Expiry Interval, seconds (u32::MAX: never expires). Also the
    /// expiry of 3.x sessions with clean session = 0.
    pub max_session_expiry_interval: u32,
    /// A transport connection that has not sent CONNECT after this is closed, so idle
    /// sockets cannot hold connection slots. Zero turns it off.
    pub connect_timeout: Duration,
    /// Produce [`crate::Event`]s for [`crate::Broker::poll_event`] (the shell must then
    /// drain them).
    pub emit_events: bool,
    /// Record changes to durable state for [`crate::Broker::drain_store_ops`] (the shell
    /// must then drain them after every pass).
    pub persistence: bool,
}

impl BrokerConfig {
    /// The retry interval in effect: `None` also for a zero duration (0 turns it off).
    pub(crate) fn retry_interval(&self) -> Option<Duration> {
        self.retry_interval.filter(|d| !d.is_zero())
    }

    /// The connect timeout in effect: `None` for a zero duration (off).
    pub(crate) fn connect_timeout(&self) -> Option<Duration> {
        Some(self.connect_timeout).filter(|d| !d.is_zero())
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            max_inflight: 16,
            max_inflight_v5: 1024,
            max_queued_messages: 1000,
            max_queued_bytes: 64 * 1024 * 1024,
            queue_overflow: QueueOverflow::DropNew,
            retry_interval: Some(Duration::from_secs(120)),
            retry_v5: false,
            max_keep_alive: 65_535,
            max_subscriptions_per_session: 30,
            max_connections: 100_000,
            max_retained: usize::MAX,
            max_packet_size: 1024 * 1024,
            max_client_id_len: 256,
            max_topic_levels: 128,
            topic_alias_maximum: 64,
            receive_maximum: 1024,
            max_session_expiry_interval: u32::MAX,
            connect_timeout: Duration::from_secs(10),
            emit_events: false,
            persistence: false,
        }
    }
}
