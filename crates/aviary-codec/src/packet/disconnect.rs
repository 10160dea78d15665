//! DISCONNECT (spec 3.14): no body in 3.x; in 5.0 a reason code and properties, both of
//! which may be left out (remaining length 0: normal disconnection).

use super::Disconnect;
use crate::properties::{decode_properties, encode_properties, PropertyCodec};
use crate::wire::{Reader, Sink};
use crate::{DecodeError, EncodeError, ProtocolVersion, ReasonCode};

/// Decodes a DISCONNECT body.
pub(super) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Disconnect, DecodeError> {
    let mut d = Disconnect::with_reason(ReasonCode::NORMAL_DISCONNECTION);
    if !version.is_v5() || !r.has_remaining() {
        return Ok(d);
    }
    let code = r.u8()?;
    if !allowed(code) {
        return Err(DecodeError::Protocol(
            "reason code not allowed in DISCONNECT",
        ));
    }
    d.reason_code = ReasonCode(code);
    if r.has_remaining() {
        d.properties = decode_properties(r)?;
    }
    Ok(d)
}

/// The DISCONNECT reason codes (3.14.2.1).
fn allowed(code: u8) -> bool {
    matches!(
        code,
        0x00 | 0x04 | 0x80..=0x83 | 0x87 | 0x89 | 0x8B | 0x8D..=0x90 | 0x93..=0xA2
    )
}

impl Disconnect {
    /// Writes nothing in 3.x; in 5.0 nothing for a normal disconnection without properties,
    /// otherwise the reason code and the property block, even when empty. The spec lets an
    /// empty property block be left out, but widespread clients (rumqttc 0.25) cannot read
    /// a DISCONNECT of only a reason code, and would lose the reason: one byte buys interop.
    pub(super) fn write<S: Sink>(
        &self,
        version: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError> {
        if !version.is_v5() {
            return Ok(());
        }
        let no_properties = self.properties.is_empty();
        if self.reason_code == ReasonCode::NORMAL_DISCONNECTION && no_properties {
            return Ok(());
        }
        s.put_u8(self.reason_code.0);
        encode_properties(&self.properties, s)
    }
}
