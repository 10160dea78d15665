//! UNSUBSCRIBE (spec 3.10): packet id, properties, one or more topic filters.

use super::subscribe::read_filter;
use super::{read_packet_id, Unsubscribe};
use crate::properties::{decode_properties, encode_properties};
use crate::wire::{Reader, Sink};
use crate::{DecodeError, EncodeError, ProtocolVersion};

/// Decodes an UNSUBSCRIBE body.
pub(super) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Unsubscribe, DecodeError> {
    let packet_id = read_packet_id(r)?;
    let properties = if version.is_v5() {
        decode_properties(r)?
    } else {
        Default::default()
    };
    let mut filters = Vec::new();
    while r.has_remaining() {
        filters.push(read_filter(r)?);
    }
    if filters.is_empty() {
        return Err(DecodeError::Protocol(
            "UNSUBSCRIBE without a topic filter [MQTT-3.10.3-2]",
        ));
    }
    Ok(Unsubscribe {
        packet_id,
        properties,
        filters,
    })
}

impl Unsubscribe {
    pub(super) fn write<S: Sink>(
        &self,
        version: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError> {
        s.put_u16(self.packet_id.get());
        if version.is_v5() {
            encode_properties(&self.properties, s)?;
        }
        for filter in &self.filters {
            s.put_str(filter.as_str(), "topic filter")?;
        }
        Ok(())
    }
}
