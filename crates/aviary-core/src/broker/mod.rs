//! The [`Broker`]: every connection's protocol state machine and every session, driven by
//! `handle_*` calls and drained with `poll_*` calls (see the crate docs for the order).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use aviary_codec::{DecodeError, Packet};

/// Identifies one transport connection; chosen by the I/O shell, never reused while open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// What to do when a session's queue of waiting QoS 1/2 messages is full. Every use of
/// the policy is counted.
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
    /// Messages waiting behind the in-flight window, per session.
    pub max_queued_messages: usize,
    /// What happens at `max_queued_messages`.
    pub queue_overflow: QueueOverflow,
    /// Resend unacknowledged QoS 1/2 messages with DUP after this; `None` turns it off.
    pub retry_interval: Option<Duration>,
    /// Largest keep alive granted (5.0: Server Keep Alive when the client asks for more).
    pub max_keep_alive: u16,
    /// Filters beyond this per session are refused in SUBACK (0x80 / 0x97).
    pub max_subscriptions_per_session: usize,
    /// Connections beyond this get CONNACK 0x03 (3.x) / 0x97 (5.0).
    pub max_connections: usize,
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
    /// Cap on a client's Session Expiry Interval, seconds (u32::MAX: never expires).
    pub max_session_expiry_interval: u32,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            max_inflight: 16,
            max_queued_messages: 1000,
            queue_overflow: QueueOverflow::DropNew,
            retry_interval: Some(Duration::from_secs(120)),
            max_keep_alive: 65_535,
            max_subscriptions_per_session: 30,
            max_connections: 100_000,
            max_packet_size: 1024 * 1024,
            max_client_id_len: 256,
            max_topic_levels: 128,
            topic_alias_maximum: 64,
            receive_maximum: 1024,
            max_session_expiry_interval: u32::MAX,
        }
    }
}

/// Output of the broker for the I/O shell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transmit {
    /// Encode `packet` in the connection's protocol version and write it.
    Packet { conn: ConnId, packet: Packet },
    /// Flush what was queued for the connection, then close it. The broker has already
    /// forgotten the connection.
    Close { conn: ConnId },
}

/// All sessions and connections of one broker node.
#[derive(Debug)]
pub struct Broker {
    _todo: (),
}

impl Broker {
    pub fn new(config: BrokerConfig) -> Self {
        let _ = config;
        todo!("core helper")
    }

    /// A transport connection was accepted; it must send CONNECT first.
    pub fn handle_open(&mut self, conn: ConnId, peer: SocketAddr, now: Instant) {
        let _ = (conn, peer, now);
        todo!("core helper")
    }

    /// A packet arrived on `conn`.
    pub fn handle_packet(&mut self, conn: ConnId, packet: Packet, now: Instant) {
        let _ = (conn, packet, now);
        todo!("core helper")
    }

    /// Bytes on `conn` could not be decoded; the connection will be closed.
    pub fn handle_decode_error(&mut self, conn: ConnId, error: &DecodeError, now: Instant) {
        let _ = (conn, error, now);
        todo!("core helper")
    }

    /// The transport of `conn` is gone (peer closed, I/O error).
    pub fn handle_closed(&mut self, conn: ConnId, now: Instant) {
        let _ = (conn, now);
        todo!("core helper")
    }

    /// Runs every timer due at `now`: keep alive, retries, will delay, expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = now;
        todo!("core helper")
    }

    /// Server shutdown: 5.0 clients get DISCONNECT 0x8B, every connection is closed.
    pub fn handle_shutdown(&mut self, now: Instant) {
        let _ = now;
        todo!("core helper")
    }

    /// The next instant at which [`Broker::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!("core helper")
    }

    /// The next packet to write or connection to close.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        todo!("core helper")
    }
}
