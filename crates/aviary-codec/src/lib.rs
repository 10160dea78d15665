//! Aviary's wire format: every MQTT 3.1 (MQIsdp, level 3), 3.1.1 (level 4) and 5.0 (level 5)
//! packet, property and reason code, decoded and encoded without I/O.
//!
//! * [`decode`] takes bytes from a connection's read buffer and returns at most one [`Packet`]
//!   (`Ok(None)` means "need more bytes"). It enforces the maximum packet size from the fixed
//!   header, before the body is buffered, and validates everything the spec calls malformed
//!   or a protocol error. Payloads are `Bytes` slices of the read buffer: no copy.
//! * [`encode`] appends one packet to a write buffer in the dialect of a protocol version;
//!   [`encoded_len`] says how long it will be (for the peer's Maximum Packet Size).
//!
//! This crate has no tokio dependency and never reads a clock.

mod error;
pub mod packet;
pub mod properties;
mod reason;
mod topic;
mod types;
mod wire;

pub use error::{DecodeError, EncodeError};
pub use packet::{
    decode, decode_with, encode, encode_ack, encode_publish, encoded_len, Ack, AckKind, Auth,
    ConnAck, Connect, Disconnect, Packet, PacketType, Publish, PublishRef, RetainHandling, SubAck,
    Subscribe, SubscriptionOptions, TopicCache, UnsubAck, Unsubscribe, Will,
};
pub use reason::ReasonCode;
pub use topic::{topic_matches, SharedFilter, TopicError, TopicFilter, TopicName};
pub use types::{PacketId, ProtocolVersion, QoS};
