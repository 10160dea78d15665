//! Decode and encode errors. "Need more bytes" is not an error: [`crate::decode`] returns
//! `Ok(None)` for it. Each error maps to the MQTT 5.0 reason code a server sends in its
//! DISCONNECT, so the disconnect falls out of the error value.

use crate::ReasonCode;

/// Why bytes from a peer could not be decoded into a packet.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes break the packet grammar (spec: "Malformed Packet"), e.g. a bad remaining
    /// length, reserved flag bits, invalid UTF-8, a string running past the packet end.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// The bytes parse but break a rule of the protocol (spec: "Protocol Error"), e.g. a
    /// duplicated property or a property not allowed in this packet.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The packet announced in the fixed header is larger than the receiver's maximum.
    /// Detected before the body is buffered.
    #[error("packet of {size} bytes exceeds the maximum packet size of {max}")]
    PacketTooLarge { size: u64, max: u32 },
    /// CONNECT with a protocol name/level pair this broker does not speak [MQTT-3.1.2-2].
    #[error("unsupported protocol level {level}")]
    UnsupportedProtocolVersion { level: u8 },
    /// A topic name that is not allowed (wildcards in PUBLISH, empty without alias).
    #[error("invalid topic name: {0}")]
    TopicNameInvalid(&'static str),
    /// A topic alias that can never be valid (0) [MQTT-3.3.2-8]. Aliases above the
    /// receiver's maximum are checked by the receiver's state machine.
    #[error("invalid topic alias: {0}")]
    TopicAliasInvalid(&'static str),
    /// A topic filter that is not allowed (misplaced `#` or `+`, bad shared-subscription form).
    #[error("invalid topic filter: {0}")]
    TopicFilterInvalid(&'static str),
}

impl DecodeError {
    /// The reason code a 5.0 server (or client) sends in the DISCONNECT that follows.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            Self::Malformed(_) => ReasonCode::MALFORMED_PACKET,
            Self::Protocol(_) => ReasonCode::PROTOCOL_ERROR,
            Self::PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            Self::UnsupportedProtocolVersion { .. } => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            Self::TopicNameInvalid(_) => ReasonCode::TOPIC_NAME_INVALID,
            Self::TopicFilterInvalid(_) => ReasonCode::TOPIC_FILTER_INVALID,
            Self::TopicAliasInvalid(_) => ReasonCode::TOPIC_ALIAS_INVALID,
        }
    }
}

/// Why a packet could not be encoded for a protocol version.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The packet's remaining length exceeds 268,435,455 bytes.
    #[error("packet too large to encode ({0} bytes)")]
    TooLarge(usize),
    /// A field is longer than its 16-bit length prefix allows.
    #[error("{0} longer than 65,535 bytes")]
    FieldTooLong(&'static str),
    /// The packet does not exist in this protocol version (AUTH before 5.0).
    #[error("packet not defined in this protocol version")]
    NotInVersion,
}
