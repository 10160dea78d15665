//! PUBLISH (spec 3.3): flags in the fixed header, topic name, packet id (QoS > 0),
//! properties, and a payload that is a zero-copy slice of the read buffer.

use bytes::{BufMut, BytesMut};

use super::{read_packet_id, PacketType, Publish};
use crate::properties::{
    decode_properties, encode_properties, PublishProperties, PublishPropertiesBox,
};
use crate::wire::{vbi_len, Reader, Sink, VBI_MAX};
use crate::{DecodeError, EncodeError, PacketId, ProtocolVersion, QoS, TopicName};

/// The topic name of the last PUBLISH decoded on a connection, for [`crate::decode_with`]:
/// a PUBLISH on the same topic (what a publisher sends again and again) then shares its
/// name instead of validating and allocating it again.
#[derive(Clone, Debug, Default)]
pub struct TopicCache(Option<TopicName>);

impl TopicCache {
    /// The cached name when it is `bytes`, exactly.
    fn get(&self, bytes: &[u8]) -> Option<TopicName> {
        self.0
            .as_ref()
            .filter(|topic| topic.as_str().as_bytes() == bytes)
            .cloned()
    }
}

/// Decodes a PUBLISH body; `flags` is the low nibble of the fixed header.
pub(super) fn decode(
    r: &mut Reader,
    flags: u8,
    version: ProtocolVersion,
    cache: &mut TopicCache,
) -> Result<Publish, DecodeError> {
    let qos = QoS::from_bits((flags >> 1) & 0x03)
        .ok_or(DecodeError::Malformed("PUBLISH QoS 3 [MQTT-3.3.1-4]"))?;
    let dup = flags & 0x08 != 0;
    if dup && qos == QoS::AtMostOnce {
        return Err(DecodeError::Malformed(
            "DUP set on a QoS 0 PUBLISH [MQTT-3.3.1-2]",
        ));
    }
    // None for the empty name, which only a 5.0 topic alias may stand in for.
    let topic = match r.peek_str_bytes().and_then(|bytes| cache.get(bytes)) {
        // Valid: the same bytes were validated when the cached name was decoded.
        Some(topic) => {
            r.skip_str();
            Some(topic)
        }
        None => {
            let topic = r.with_str(|s| {
                if s.is_empty() {
                    return Ok(None);
                }
                TopicName::new(s).map(Some).map_err(|_| {
                    DecodeError::TopicNameInvalid("wildcard in PUBLISH topic [MQTT-3.3.2-2]")
                })
            })?;
            if let Some(topic) = &topic {
                cache.0 = Some(topic.clone());
            }
            topic
        }
    };
    let packet_id = if qos == QoS::AtMostOnce {
        None
    } else {
        Some(read_packet_id(r)?)
    };
    // In 3.x there is no property: the empty box, with nothing to build or compare.
    let properties = if version.is_v5() {
        PublishPropertiesBox::from(decode_properties::<PublishProperties>(r)?)
    } else {
        PublishPropertiesBox::default()
    };
    let topic = match topic {
        Some(topic) => topic,
        None if properties.topic_alias.is_some() => TopicName::empty(),
        None => {
            // 5.0 3.3.2.1: "It is a Protocol Error if the Topic Name is zero length and there
            // is no Topic Alias"; 3.1.1 [MQTT-4.7.3-1] closes the connection either way.
            return Err(DecodeError::Protocol(
                "empty PUBLISH topic without topic alias [MQTT-4.7.3-1]",
            ));
        }
    };
    Ok(Publish {
        dup,
        qos,
        retain: flags & 0x01 != 0,
        topic,
        packet_id,
        properties,
        payload: r.rest(),
    })
}

impl Publish {
    /// The packet as a [`PublishRef`] (the one implementation of the body's encoding).
    pub(super) fn as_ref(&self) -> PublishRef<'_> {
        PublishRef {
            dup: self.dup,
            qos: self.qos,
            retain: self.retain,
            topic: self.topic.as_str(),
            packet_id: self.packet_id,
            properties: &self.properties,
            payload: &self.payload,
        }
    }
}

/// A PUBLISH by reference to its parts, for a sender that keeps them elsewhere than in a
/// [`Publish`] (a queued delivery sharing its message's topic and payload).
/// [`encode_publish`] appends exactly the bytes [`crate::encode`] appends for the same
/// `Packet::Publish`.
#[derive(Clone, Copy, Debug)]
pub struct PublishRef<'a> {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// Empty only in 5.0 with a topic alias property.
    pub topic: &'a str,
    /// Present exactly when `qos` > 0.
    pub packet_id: Option<PacketId>,
    pub properties: &'a PublishProperties,
    pub payload: &'a [u8],
}

impl PublishRef<'_> {
    /// The low nibble of the fixed header: DUP, QoS, RETAIN.
    pub(super) fn flags(&self) -> u8 {
        (u8::from(self.dup) << 3) | ((self.qos as u8) << 1) | u8::from(self.retain)
    }

    /// [`crate::encode_publish`] of a PUBLISH without properties (all of them in 3.x):
    /// the same bytes as [`PublishRef::write`] after its fixed header, with the lengths
    /// added up directly and the header written in one copy.
    pub(super) fn write_plain(
        &self,
        version: ProtocolVersion,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let topic_len =
            u16::try_from(self.topic.len()).map_err(|_| EncodeError::FieldTooLong("topic name"))?;
        let id_len = if self.qos == QoS::AtMostOnce { 0 } else { 2 };
        // An empty property block is its length, one zero byte.
        let properties_len = usize::from(version.is_v5());
        let remaining = 2 + self.topic.len() + id_len + properties_len + self.payload.len();
        if remaining > VBI_MAX as usize {
            return Err(EncodeError::TooLarge(remaining));
        }
        buf.reserve(1 + vbi_len(remaining) + remaining);
        BufMut::put_u8(buf, ((PacketType::Publish as u8) << 4) | self.flags());
        buf.put_vbi(remaining)?;
        BufMut::put_u16(buf, topic_len);
        buf.extend_from_slice(self.topic.as_bytes());
        if id_len > 0 {
            // A QoS > 0 PUBLISH without an id is a caller bug (see `write`).
            BufMut::put_u16(buf, self.packet_id.map_or(0, |id| id.get()));
        }
        if properties_len > 0 {
            // The empty property block: its length, zero.
            BufMut::put_u8(buf, 0);
        }
        buf.extend_from_slice(self.payload);
        Ok(())
    }

    pub(super) fn write<S: Sink>(
        &self,
        version: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError> {
        s.put_str(self.topic, "topic name")?;
        if self.qos != QoS::AtMostOnce {
            // A QoS > 0 PUBLISH without an id is a caller bug; 0 goes out and the peer
            // refuses it rather than the codec inventing an id.
            s.put_u16(self.packet_id.map_or(0, |id| id.get()));
        }
        if version.is_v5() {
            encode_properties(self.properties, s)?;
        }
        s.put_slice(self.payload);
        Ok(())
    }
}
