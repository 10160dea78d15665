//! UNSUBACK (spec 3.11): packet id; in 5.0 also properties and one reason code per filter.

use super::{read_packet_id, UnsubAck};
use crate::properties::{decode_properties, encode_properties, AckProperties};
use crate::wire::{Reader, Sink};
use crate::{DecodeError, EncodeError, ProtocolVersion, ReasonCode};

/// Decodes an UNSUBACK body (3.x: the packet id only).
pub(super) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<UnsubAck, DecodeError> {
    let packet_id = read_packet_id(r)?;
    if !version.is_v5() {
        return Ok(UnsubAck {
            packet_id,
            properties: AckProperties::default(),
            reason_codes: Vec::new(),
        });
    }
    let properties = decode_properties(r)?;
    let mut reason_codes = Vec::with_capacity(r.remaining());
    while r.has_remaining() {
        let code = r.u8()?;
        if !matches!(code, 0x00 | 0x11 | 0x80 | 0x83 | 0x87 | 0x8F | 0x91) {
            return Err(DecodeError::Protocol("reason code not allowed in UNSUBACK"));
        }
        reason_codes.push(ReasonCode(code));
    }
    Ok(UnsubAck {
        packet_id,
        properties,
        reason_codes,
    })
}

impl UnsubAck {
    pub(super) fn write<S: Sink>(
        &self,
        version: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError> {
        s.put_u16(self.packet_id.get());
        if version.is_v5() {
            encode_properties(&self.properties, s)?;
            for code in &self.reason_codes {
                s.put_u8(code.0);
            }
        }
        Ok(())
    }
}
