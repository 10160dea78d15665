//! AUTH (spec 3.15), 5.0 only: reason code and properties, both of which may be left out
//! (remaining length 0: Success).

use super::Auth;
use crate::properties::{decode_properties, encode_properties, AuthProperties, PropertyCodec};
use crate::wire::{Reader, Sink};
use crate::{DecodeError, EncodeError, ReasonCode};

/// Decodes an AUTH body (the fixed-header check already refused AUTH before 5.0).
pub(super) fn decode(r: &mut Reader) -> Result<Auth, DecodeError> {
    let mut auth = Auth {
        reason_code: ReasonCode::SUCCESS,
        properties: AuthProperties::default(),
    };
    if !r.has_remaining() {
        return Ok(auth);
    }
    let code = r.u8()?;
    if !matches!(code, 0x00 | 0x18 | 0x19) {
        return Err(DecodeError::Protocol("reason code not allowed in AUTH"));
    }
    auth.reason_code = ReasonCode(code);
    if r.has_remaining() {
        auth.properties = decode_properties(r)?;
    }
    Ok(auth)
}

impl Auth {
    /// Writes the shortest form the spec allows.
    pub(super) fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        let no_properties = self.properties.is_empty();
        if self.reason_code == ReasonCode::SUCCESS && no_properties {
            return Ok(());
        }
        s.put_u8(self.reason_code.0);
        if no_properties {
            return Ok(());
        }
        encode_properties(&self.properties, s)
    }
}
