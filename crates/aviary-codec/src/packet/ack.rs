//! PUBACK, PUBREC, PUBREL and PUBCOMP (spec 3.4–3.7): packet id, and in 5.0 a reason code
//! and properties, both of which may be left out (remaining length 2: Success).

use super::{read_packet_id, Ack, PacketType};
use crate::properties::{decode_properties, encode_properties, AckProperties, PropertyCodec};
use crate::wire::{Reader, Sink};
use crate::{DecodeError, EncodeError, ProtocolVersion, ReasonCode};

/// Decodes the body of the acknowledgement `kind`.
pub(super) fn decode(
    r: &mut Reader,
    version: ProtocolVersion,
    kind: PacketType,
) -> Result<Ack, DecodeError> {
    let packet_id = read_packet_id(r)?;
    let mut ack = Ack {
        packet_id,
        reason_code: ReasonCode::SUCCESS,
        properties: AckProperties::default(),
    };
    if !version.is_v5() || !r.has_remaining() {
        return Ok(ack);
    }
    let code = r.u8()?;
    if !allowed(kind, code) {
        return Err(DecodeError::Protocol(
            "reason code not allowed in this acknowledgement",
        ));
    }
    ack.reason_code = ReasonCode(code);
    if r.has_remaining() {
        ack.properties = decode_properties(r)?;
    }
    Ok(ack)
}

/// The reason codes of each acknowledgement (3.4.2.1, 3.5.2.1, 3.6.2.1, 3.7.2.1).
fn allowed(kind: PacketType, code: u8) -> bool {
    match kind {
        PacketType::PubAck | PacketType::PubRec => matches!(
            code,
            0x00 | 0x10 | 0x80 | 0x83 | 0x87 | 0x90 | 0x91 | 0x97 | 0x99
        ),
        _ => matches!(code, 0x00 | 0x92),
    }
}

/// Which acknowledgement of the QoS flows an [`crate::encode_ack`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckKind {
    PubAck,
    PubRec,
    PubRel,
    PubComp,
}

impl AckKind {
    /// The packet type.
    pub fn packet_type(self) -> PacketType {
        match self {
            Self::PubAck => PacketType::PubAck,
            Self::PubRec => PacketType::PubRec,
            Self::PubRel => PacketType::PubRel,
            Self::PubComp => PacketType::PubComp,
        }
    }
}

impl Ack {
    /// Writes the shortest form the spec allows ([`crate::encode_ack`] writes the same
    /// without properties).
    pub(super) fn write<S: Sink>(
        &self,
        version: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError> {
        s.put_u16(self.packet_id.get());
        if !version.is_v5() {
            return Ok(());
        }
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
