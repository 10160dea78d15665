//! SUBSCRIBE (spec 3.8): packet id, properties, and one or more (filter, options) pairs.

use super::{read_packet_id, RetainHandling, Subscribe, SubscriptionOptions};
use crate::properties::{decode_properties, encode_properties};
use crate::wire::{Reader, Sink};
use crate::{DecodeError, EncodeError, ProtocolVersion, QoS, TopicFilter};

/// Decodes a SUBSCRIBE body.
pub(super) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Subscribe, DecodeError> {
    let packet_id = read_packet_id(r)?;
    let properties = if version.is_v5() {
        decode_properties(r)?
    } else {
        Default::default()
    };
    let mut filters = Vec::new();
    while r.has_remaining() {
        let filter = read_filter(r)?;
        let options = read_options(r.u8()?, version)?;
        filters.push((filter, options));
    }
    if filters.is_empty() {
        return Err(DecodeError::Protocol(
            "SUBSCRIBE without a topic filter [MQTT-3.8.3-2, 3.1.1: MQTT-3.8.3-3]",
        ));
    }
    Ok(Subscribe {
        packet_id,
        properties,
        filters,
    })
}

/// A topic filter of SUBSCRIBE or UNSUBSCRIBE [MQTT-4.7.1].
pub(super) fn read_filter(r: &mut Reader) -> Result<TopicFilter, DecodeError> {
    r.with_str(|s| {
        TopicFilter::new(s).map_err(|_| DecodeError::TopicFilterInvalid("invalid topic filter"))
    })
}

/// The subscription options byte (3.8.3.1).
fn read_options(byte: u8, version: ProtocolVersion) -> Result<SubscriptionOptions, DecodeError> {
    let Some(qos) = QoS::from_bits(byte & 0x03) else {
        // 3.1.1 calls it malformed [MQTT-3-8.3-4]; 5.0 3.8.3.1 a Protocol Error.
        return Err(if version.is_v5() {
            DecodeError::Protocol("subscription maximum QoS 3 (3.8.3.1)")
        } else {
            DecodeError::Malformed("subscription QoS 3 [MQTT-3-8.3-4]")
        });
    };
    if !version.is_v5() {
        if byte & 0xFC != 0 {
            return Err(DecodeError::Malformed(
                "reserved subscription option bits set (3.1.1: [MQTT-3-8.3-4])",
            ));
        }
        return Ok(SubscriptionOptions::with_qos(qos));
    }
    if byte & 0xC0 != 0 {
        return Err(DecodeError::Malformed(
            "reserved subscription option bits set [MQTT-3.8.3-5]",
        ));
    }
    let retain_handling = match (byte >> 4) & 0x03 {
        0 => RetainHandling::SendOnSubscribe,
        1 => RetainHandling::SendOnNewSubscribe,
        2 => RetainHandling::DoNotSend,
        // 3.8.3.1: "It is a Protocol Error to send a Retain Handling value of 3".
        _ => return Err(DecodeError::Protocol("retain handling 3 (3.8.3.1)")),
    };
    Ok(SubscriptionOptions {
        qos,
        no_local: byte & 0x04 != 0,
        retain_as_published: byte & 0x08 != 0,
        retain_handling,
    })
}

impl SubscriptionOptions {
    /// The options byte; in 3.x only the QoS bits.
    fn byte(self, version: ProtocolVersion) -> u8 {
        let mut b = self.qos as u8;
        if version.is_v5() {
            b |= u8::from(self.no_local) << 2;
            b |= u8::from(self.retain_as_published) << 3;
            b |= (self.retain_handling as u8) << 4;
        }
        b
    }
}

impl Subscribe {
    pub(super) fn write<S: Sink>(
        &self,
        version: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError> {
        s.put_u16(self.packet_id.get());
        if version.is_v5() {
            encode_properties(&self.properties, s)?;
        }
        for (filter, options) in &self.filters {
            s.put_str(filter.as_str(), "topic filter")?;
            s.put_u8(options.byte(version));
        }
        Ok(())
    }
}
