//! SUBACK (spec 3.9): packet id, properties, one reason code per filter.

use super::{read_packet_id, SubAck};
use crate::properties::{decode_properties, encode_properties};
use crate::wire::{Reader, Sink};
use crate::{DecodeError, EncodeError, ProtocolVersion, ReasonCode};

/// Decodes a SUBACK body.
pub(super) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<SubAck, DecodeError> {
    let packet_id = read_packet_id(r)?;
    let properties = if version.is_v5() {
        decode_properties(r)?
    } else {
        Default::default()
    };
    let mut reason_codes = Vec::with_capacity(r.remaining());
    while r.has_remaining() {
        let code = r.u8()?;
        if !allowed(code, version) {
            return Err(DecodeError::Protocol("reason code not allowed in SUBACK"));
        }
        reason_codes.push(ReasonCode(code));
    }
    Ok(SubAck {
        packet_id,
        properties,
        reason_codes,
    })
}

/// 3.x return codes are 0, 1, 2 and 0x80; 5.0 adds the reasons of 3.9.3.
fn allowed(code: u8, version: ProtocolVersion) -> bool {
    match version {
        ProtocolVersion::V5 => matches!(
            code,
            0x00 | 0x01 | 0x02 | 0x80 | 0x83 | 0x87 | 0x8F | 0x91 | 0x97 | 0x9E | 0xA1 | 0xA2
        ),
        _ => matches!(code, 0x00 | 0x01 | 0x02 | 0x80),
    }
}

impl SubAck {
    pub(super) fn write<S: Sink>(
        &self,
        version: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError> {
        s.put_u16(self.packet_id.get());
        if version.is_v5() {
            encode_properties(&self.properties, s)?;
        }
        for code in &self.reason_codes {
            s.put_u8(code.0);
        }
        Ok(())
    }
}
