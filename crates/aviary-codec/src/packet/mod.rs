//! The fifteen MQTT control packets, one module each, and the [`Packet`] enum that
//! delegates to them. [`decode`] / [`encode`] are the crate's entry points.

use bytes::{Bytes, BytesMut};

use crate::properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PublishProperties, SubscribeProperties, UnsubscribeProperties, WillProperties,
};
use crate::{
    DecodeError, EncodeError, PacketId, ProtocolVersion, QoS, ReasonCode, TopicFilter, TopicName,
};

/// One MQTT control packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(Ack),
    PubRec(Ack),
    PubRel(Ack),
    PubComp(Ack),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    /// 5.0 only.
    Auth(Auth),
}

/// The control packet type, the high nibble of the first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketType {
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    PingReq = 12,
    PingResp = 13,
    Disconnect = 14,
    Auth = 15,
}

impl Packet {
    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Self::Connect(_) => PacketType::Connect,
            Self::ConnAck(_) => PacketType::ConnAck,
            Self::Publish(_) => PacketType::Publish,
            Self::PubAck(_) => PacketType::PubAck,
            Self::PubRec(_) => PacketType::PubRec,
            Self::PubRel(_) => PacketType::PubRel,
            Self::PubComp(_) => PacketType::PubComp,
            Self::Subscribe(_) => PacketType::Subscribe,
            Self::SubAck(_) => PacketType::SubAck,
            Self::Unsubscribe(_) => PacketType::Unsubscribe,
            Self::UnsubAck(_) => PacketType::UnsubAck,
            Self::PingReq => PacketType::PingReq,
            Self::PingResp => PacketType::PingResp,
            Self::Disconnect(_) => PacketType::Disconnect,
            Self::Auth(_) => PacketType::Auth,
        }
    }
}

/// CONNECT (3.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect {
    /// From the protocol name and level.
    pub protocol: ProtocolVersion,
    /// Clean Session (3.x) / Clean Start (5.0).
    pub clean_start: bool,
    /// Seconds; 0 switches keep alive off.
    pub keep_alive: u16,
    /// May be empty (the server assigns one, or refuses per the 3.1.1 rules).
    pub client_id: String,
    pub will: Option<Will>,
    pub username: Option<String>,
    /// Binary data; in 3.1.1 only with a username [MQTT-3.1.2-22].
    pub password: Option<Bytes>,
    pub properties: ConnectProperties,
}

/// The will message of a CONNECT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Will {
    pub topic: TopicName,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub properties: WillProperties,
}

/// CONNACK (3.2). In 3.x `reason_code` is mapped to a return code with
/// [`ReasonCode::to_v3_connack`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnAck {
    pub session_present: bool,
    pub reason_code: ReasonCode,
    pub properties: ConnAckProperties,
}

/// PUBLISH (3.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// Empty only in 5.0 with a topic alias property.
    pub topic: TopicName,
    /// Present exactly when `qos` > 0.
    pub packet_id: Option<PacketId>,
    pub properties: PublishProperties,
    pub payload: Bytes,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP (3.4–3.7) share this shape. In 3.x only the packet id
/// is on the wire; on decode `reason_code` is then SUCCESS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    pub packet_id: PacketId,
    pub reason_code: ReasonCode,
    pub properties: AckProperties,
}

/// SUBSCRIBE (3.8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribe {
    pub packet_id: PacketId,
    pub properties: SubscribeProperties,
    /// At least one [MQTT-3.8.3-2].
    pub filters: Vec<(TopicFilter, SubscriptionOptions)>,
}

/// The subscription options byte (3.8.3.1). In 3.x only `qos` is on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    /// Don't send the subscriber its own publications (illegal on shared subscriptions
    /// [MQTT-3.8.3-4], checked by the state machine).
    pub no_local: bool,
    /// Keep the RETAIN flag as published when forwarding.
    pub retain_as_published: bool,
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// Options with a maximum QoS and 5.0's defaults for the rest.
    pub fn with_qos(qos: QoS) -> Self {
        Self {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::SendOnSubscribe,
        }
    }
}

/// When retained messages are sent for a new subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetainHandling {
    /// 0: at subscribe time.
    SendOnSubscribe = 0,
    /// 1: at subscribe time only if the subscription did not exist.
    SendOnNewSubscribe = 1,
    /// 2: never.
    DoNotSend = 2,
}

/// SUBACK (3.9). In 3.x each code is 0x00/0x01/0x02 or 0x80.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubAck {
    pub packet_id: PacketId,
    pub properties: AckProperties,
    pub reason_codes: Vec<ReasonCode>,
}

/// UNSUBSCRIBE (3.10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsubscribe {
    pub packet_id: PacketId,
    pub properties: UnsubscribeProperties,
    /// At least one [MQTT-3.10.3-2].
    pub filters: Vec<TopicFilter>,
}

/// UNSUBACK (3.11). In 3.x there is no payload: `reason_codes` is empty on decode and
/// ignored on encode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsubAck {
    pub packet_id: PacketId,
    pub properties: AckProperties,
    pub reason_codes: Vec<ReasonCode>,
}

/// DISCONNECT (3.14). In 3.x it has no variable header: SUCCESS on decode, ignored on encode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disconnect {
    pub reason_code: ReasonCode,
    pub properties: DisconnectProperties,
}

impl Disconnect {
    /// A DISCONNECT with a reason code and no properties.
    pub fn with_reason(reason_code: ReasonCode) -> Self {
        Self {
            reason_code,
            properties: DisconnectProperties::default(),
        }
    }
}

/// AUTH (3.15), 5.0 only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Auth {
    pub reason_code: ReasonCode,
    pub properties: AuthProperties,
}

/// Decodes at most one packet from the front of `buf`, removing its bytes on success.
///
/// * `version` is the connection's protocol version (ignored for CONNECT, which carries its
///   own; the caller adopts `Connect::protocol` for the packets that follow).
/// * `max_packet_size` is the largest whole packet accepted; a larger one is refused with
///   [`DecodeError::PacketTooLarge`] as soon as the fixed header has been read.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole packet.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: u32,
) -> Result<Option<Packet>, DecodeError> {
    let _ = (buf, version, max_packet_size);
    todo!("codec helper")
}

/// Appends `packet` encoded for `version` to `buf`.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let _ = (packet, version, buf);
    todo!("codec helper")
}

/// The number of bytes [`encode`] would append for `packet` in `version`.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let _ = (packet, version);
    todo!("codec helper")
}
