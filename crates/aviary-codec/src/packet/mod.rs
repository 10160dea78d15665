//! The fifteen MQTT control packets, one module each, and the [`Packet`] enum that
//! delegates to them. [`decode`] / [`encode`] are the crate's entry points.

mod ack;
mod auth;
mod connack;
mod connect;
mod disconnect;
mod ping;
mod publish;
mod suback;
mod subscribe;
mod unsuback;
mod unsubscribe;

#[cfg(test)]
mod roundtrip;
#[cfg(test)]
mod tests;

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub use self::ack::AckKind;
pub use self::publish::{PublishRef, TopicCache};
use crate::properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PublishPropertiesBox, SubscribeProperties, UnsubscribeProperties, WillProperties,
};
use crate::wire::{vbi_len, Counter, Reader, Sink, VBI_MAX};
use crate::{
    DecodeError, EncodeError, PacketId, ProtocolVersion, QoS, ReasonCode, TopicFilter, TopicName,
};

/// One MQTT control packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(Box<ConnAck>),
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
    Auth(Box<Auth>),
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
    pub properties: PublishPropertiesBox,
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

/// The most [`decode`] reserves ahead for a packet that has not fully arrived: a header
/// alone must not make us allocate up to the maximum packet size.
const RESERVE_LIMIT: usize = 64 * 1024;

/// Decodes at most one packet from the front of `buf`, removing its bytes on success.
///
/// * `version` is the connection's protocol version (ignored for CONNECT, which carries its
///   own; the caller adopts `Connect::protocol` for the packets that follow).
/// * `max_packet_size` is the largest whole packet accepted; a larger one is refused with
///   [`DecodeError::PacketTooLarge`] as soon as the fixed header has been read.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole packet (and then reserves room
/// for the rest of it, up to 64 KiB, once its size is known). After an error the connection
/// must be closed: `buf` is left in an unspecified state.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: u32,
) -> Result<Option<Packet>, DecodeError> {
    decode_with(buf, version, max_packet_size, &mut TopicCache::default())
}

/// [`decode`] for a connection that keeps a [`TopicCache`] across its packets: a PUBLISH
/// whose topic is the cached one's shares it (the same packet, accepted or refused
/// exactly as by [`decode`]); any other topic decoded becomes the cached one.
pub fn decode_with(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: u32,
    cache: &mut TopicCache,
) -> Result<Option<Packet>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let kind = first >> 4;
    let flags = first & 0x0F;
    check_fixed_header(kind, flags, version)?;

    // Remaining length: a variable byte integer of at most four bytes (spec 2.1.4).
    let mut remaining = 0usize;
    let mut header_len = 1;
    loop {
        let Some(&byte) = buf.get(header_len) else {
            return Ok(None);
        };
        remaining |= usize::from(byte & 0x7F) << (7 * (header_len - 1));
        header_len += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if header_len == 5 {
            return Err(DecodeError::Malformed(
                "remaining length longer than 4 bytes",
            ));
        }
    }

    // Refuse an oversized packet before buffering its body.
    let size = header_len + remaining;
    if size as u64 > u64::from(max_packet_size) {
        return Err(DecodeError::PacketTooLarge {
            size: size as u64,
            max: max_packet_size,
        });
    }
    if buf.len() < size {
        // Room for the rest, but not more than a peer can make us allocate with a header.
        buf.reserve((size - buf.len()).min(RESERVE_LIMIT));
        return Ok(None);
    }

    // The fixed header is skipped in the frozen bytes (a pointer bump), not sliced off
    // (a second reference to count up and down).
    let mut frame = buf.split_to(size).freeze();
    frame.advance(header_len);
    let mut r = Reader::new(frame);
    let packet = match kind {
        1 => Packet::Connect(Box::new(connect::decode(&mut r)?)),
        2 => Packet::ConnAck(Box::new(connack::decode(&mut r, version)?)),
        3 => Packet::Publish(publish::decode(&mut r, flags, version, cache)?),
        4 => Packet::PubAck(ack::decode(&mut r, version, PacketType::PubAck)?),
        5 => Packet::PubRec(ack::decode(&mut r, version, PacketType::PubRec)?),
        6 => Packet::PubRel(ack::decode(&mut r, version, PacketType::PubRel)?),
        7 => Packet::PubComp(ack::decode(&mut r, version, PacketType::PubComp)?),
        8 => Packet::Subscribe(subscribe::decode(&mut r, version)?),
        9 => Packet::SubAck(suback::decode(&mut r, version)?),
        10 => Packet::Unsubscribe(unsubscribe::decode(&mut r, version)?),
        11 => Packet::UnsubAck(unsuback::decode(&mut r, version)?),
        12 => Packet::PingReq,
        13 => Packet::PingResp,
        14 => Packet::Disconnect(disconnect::decode(&mut r, version)?),
        // check_fixed_header let through 15 only for 5.0.
        _ => Packet::Auth(Box::new(auth::decode(&mut r)?)),
    };
    r.finish()?;
    Ok(Some(packet))
}

/// The checks that need only the first byte: packet type and flags [MQTT-2.2.2-1,
/// MQTT-2.2.2-2]. PUBLISH flags are checked by its decoder.
fn check_fixed_header(kind: u8, flags: u8, version: ProtocolVersion) -> Result<(), DecodeError> {
    let expected = match kind {
        0 => return Err(DecodeError::Malformed("packet type 0 is reserved")),
        3 => return Ok(()),
        6 | 8 | 10 => 0b0010,
        15 if !version.is_v5() => {
            return Err(DecodeError::Malformed("AUTH packet before MQTT 5.0"))
        }
        _ => 0,
    };
    if flags != expected {
        return Err(DecodeError::Malformed(
            "reserved fixed header flags [MQTT-2.2.2-2]",
        ));
    }
    Ok(())
}

/// Appends `packet` encoded for `version` to `buf`. CONNECT is encoded in the dialect of its
/// own `protocol` field (as [`decode`] reads it). On error nothing is appended.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    // First pass counts (and finds every error), second pass writes into one reservation.
    let mut counter = Counter::default();
    write_body(packet, version, &mut counter)?;
    let remaining = counter.0;
    if remaining > VBI_MAX as usize {
        return Err(EncodeError::TooLarge(remaining));
    }
    buf.reserve(1 + vbi_len(remaining) + remaining);
    let start = buf.len();
    BufMut::put_u8(buf, first_byte(packet));
    let written = buf
        .put_vbi(remaining)
        .and_then(|()| write_body(packet, version, buf));
    if written.is_err() {
        buf.truncate(start);
    }
    written
}

/// Appends a PUBLISH given by its parts: the same bytes as [`encode`] of the
/// corresponding `Packet::Publish`, without building one.
pub fn encode_publish(
    publish: &PublishRef<'_>,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    if !version.is_v5() || publish.properties.is_none() {
        return publish.write_plain(version, buf);
    }
    let mut counter = Counter::default();
    publish.write(version, &mut counter)?;
    let remaining = counter.0;
    if remaining > VBI_MAX as usize {
        return Err(EncodeError::TooLarge(remaining));
    }
    buf.reserve(1 + vbi_len(remaining) + remaining);
    let start = buf.len();
    BufMut::put_u8(buf, ((PacketType::Publish as u8) << 4) | publish.flags());
    let written = buf
        .put_vbi(remaining)
        .and_then(|()| publish.write(version, buf));
    if written.is_err() {
        buf.truncate(start);
    }
    written
}

/// Appends a PUBACK, PUBREC, PUBREL or PUBCOMP without properties: the same bytes as
/// [`encode`] of the corresponding packet with empty properties, without building one.
pub fn encode_ack(
    kind: AckKind,
    packet_id: PacketId,
    reason_code: ReasonCode,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    // What `Ack::write` writes without properties, in one copy: the packet id, and in 5.0
    // the reason code unless it is Success (tested against `encode`).
    let flags = if kind == AckKind::PubRel { 0b0010 } else { 0 };
    let [high, low] = packet_id.get().to_be_bytes();
    let with_code = version.is_v5() && reason_code != ReasonCode::SUCCESS;
    let bytes = [
        ((kind.packet_type() as u8) << 4) | flags,
        2 + u8::from(with_code),
        high,
        low,
        reason_code.0,
    ];
    buf.extend_from_slice(&bytes[..4 + usize::from(with_code)]);
    Ok(())
}

/// The number of bytes [`encode`] would append for `packet` in `version` (meaningless when
/// `encode` would fail).
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let mut counter = Counter::default();
    // On error the count is partial; the contract above says so.
    let _ = write_body(packet, version, &mut counter);
    1 + vbi_len(counter.0) + counter.0
}

/// The first byte of the fixed header: type and flags.
fn first_byte(packet: &Packet) -> u8 {
    let flags = match packet {
        Packet::Publish(p) => p.as_ref().flags(),
        Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => 0b0010,
        _ => 0,
    };
    ((packet.packet_type() as u8) << 4) | flags
}

/// Writes everything after the fixed header.
fn write_body<S: Sink>(
    packet: &Packet,
    version: ProtocolVersion,
    s: &mut S,
) -> Result<(), EncodeError> {
    match packet {
        Packet::Connect(c) => c.write(s),
        Packet::ConnAck(c) => c.write(version, s),
        Packet::Publish(p) => p.as_ref().write(version, s),
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            a.write(version, s)
        }
        Packet::Subscribe(p) => p.write(version, s),
        Packet::SubAck(p) => p.write(version, s),
        Packet::Unsubscribe(p) => p.write(version, s),
        Packet::UnsubAck(p) => p.write(version, s),
        Packet::PingReq | Packet::PingResp => Ok(()),
        Packet::Disconnect(d) => d.write(version, s),
        Packet::Auth(a) if version.is_v5() => a.write(s),
        Packet::Auth(_) => Err(EncodeError::NotInVersion),
    }
}

/// A packet identifier; zero is a protocol error [MQTT-2.2.1-3].
fn read_packet_id(r: &mut Reader) -> Result<PacketId, DecodeError> {
    PacketId::new(r.u16()?).ok_or(DecodeError::Protocol("packet identifier 0 [MQTT-2.2.1-3]"))
}
