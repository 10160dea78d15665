//! CONNACK (spec 3.2): acknowledge flags, reason code (3.x: return code), properties.

use super::ConnAck;
use crate::properties::{decode_properties, encode_properties};
use crate::wire::{Reader, Sink};
use crate::{DecodeError, EncodeError, ProtocolVersion, ReasonCode};

/// Decodes a CONNACK body.
pub(super) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<ConnAck, DecodeError> {
    let flags = r.u8()?;
    // In 3.1 the first byte is reserved and carries no session present flag.
    let session_present = match version {
        ProtocolVersion::V3_1 => false,
        _ if flags & 0xFE != 0 => {
            return Err(DecodeError::Malformed(
                "CONNACK reserved flags set [MQTT-3.2.2-1]",
            ))
        }
        _ => flags & 0x01 != 0,
    };
    let code = r.u8()?;
    let (reason_code, properties) = if version.is_v5() {
        if !allowed(code) {
            return Err(DecodeError::Protocol("reason code not allowed in CONNACK"));
        }
        (ReasonCode(code), decode_properties(r)?)
    } else {
        let rc = ReasonCode::from_v3_connack(code)
            .ok_or(DecodeError::Protocol("reserved CONNACK return code"))?;
        (rc, Default::default())
    };
    if session_present && reason_code != ReasonCode::SUCCESS {
        return Err(DecodeError::Protocol(
            "session present with an error code [MQTT-3.2.2-6]",
        ));
    }
    Ok(ConnAck {
        session_present,
        reason_code,
        properties,
    })
}

/// The CONNACK reason codes of 5.0 (3.2.2.2).
fn allowed(code: u8) -> bool {
    matches!(
        code,
        0x00 | 0x80..=0x8A | 0x8C | 0x90 | 0x95 | 0x97 | 0x99..=0x9D | 0x9F
    )
}

impl ConnAck {
    pub(super) fn write<S: Sink>(
        &self,
        version: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError> {
        let session_present = self.session_present && version != ProtocolVersion::V3_1;
        s.put_u8(u8::from(session_present));
        if version.is_v5() {
            s.put_u8(self.reason_code.0);
            encode_properties(&self.properties, s)
        } else {
            s.put_u8(self.reason_code.to_v3_connack());
            Ok(())
        }
    }
}
