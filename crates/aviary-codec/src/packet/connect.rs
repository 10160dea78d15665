//! CONNECT (spec 3.1): protocol name and level, connect flags, keep alive, properties, and
//! the payload (client id, will, user name, password).

use super::{Connect, Will};
use crate::properties::{decode_properties, encode_properties, WillProperties};
use crate::wire::{Reader, Sink};
use crate::{DecodeError, EncodeError, ProtocolVersion, QoS, TopicName};

const CLEAN_START: u8 = 0x02;
const WILL_FLAG: u8 = 0x04;
const WILL_RETAIN: u8 = 0x20;
const PASSWORD: u8 = 0x40;
const USERNAME: u8 = 0x80;

/// Decodes a CONNECT body. The protocol version comes from the packet itself.
pub(super) fn decode(r: &mut Reader) -> Result<Connect, DecodeError> {
    let protocol = read_protocol(r)?;
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::Malformed(
            "CONNECT reserved flag is set [MQTT-3.1.2-3]",
        ));
    }
    let will_flag = flags & WILL_FLAG != 0;
    let will_qos = QoS::from_bits((flags >> 3) & 0x03)
        .ok_or(DecodeError::Malformed("will QoS 3 [MQTT-3.1.2-14]"))?;
    let will_retain = flags & WILL_RETAIN != 0;
    if !will_flag && (will_qos != QoS::AtMostOnce || will_retain) {
        return Err(DecodeError::Malformed(
            "will QoS or retain without will flag [MQTT-3.1.2-13, MQTT-3.1.2-15]",
        ));
    }
    let has_username = flags & USERNAME != 0;
    let has_password = flags & PASSWORD != 0;
    if has_password && !has_username && !protocol.is_v5() {
        return Err(DecodeError::Malformed(
            "password without user name [MQTT-3.1.2-22]",
        ));
    }
    let keep_alive = r.u16()?;
    let properties = if protocol.is_v5() {
        decode_properties(r)?
    } else {
        Default::default()
    };

    // Payload. 3.1's 23-character client id limit is the broker's business, not ours.
    let client_id = r.string()?;
    let will = if will_flag {
        let properties = if protocol.is_v5() {
            decode_properties(r)?
        } else {
            WillProperties::default()
        };
        let topic = r.with_str(|s| {
            TopicName::new(s).map_err(|_| DecodeError::TopicNameInvalid("will topic"))
        })?;
        Some(Will {
            topic,
            payload: r.binary()?,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(r.string()?)
    } else {
        None
    };
    let password = if has_password {
        Some(r.binary()?)
    } else {
        None
    };
    Ok(Connect {
        protocol,
        clean_start: flags & CLEAN_START != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

/// The protocol name and level [MQTT-3.1.2-1, MQTT-3.1.2-2].
///
/// A known name with an unknown level is [`DecodeError::UnsupportedProtocolVersion`] (the
/// server answers CONNACK 0x84 / return code 1). An unknown name is a
/// [`DecodeError::Protocol`] error: the bytes parse, but they are not this protocol, and
/// [MQTT-3.1.2-1] lets the server just close the connection.
fn read_protocol(r: &mut Reader) -> Result<ProtocolVersion, DecodeError> {
    let name = r.binary()?;
    let level = r.u8()?;
    match (&name[..], level) {
        (b"MQTT", 4) => Ok(ProtocolVersion::V3_1_1),
        (b"MQTT", 5) => Ok(ProtocolVersion::V5),
        (b"MQIsdp", 3) => Ok(ProtocolVersion::V3_1),
        (b"MQTT" | b"MQIsdp", level) => Err(DecodeError::UnsupportedProtocolVersion { level }),
        _ => Err(DecodeError::Protocol(
            "unknown protocol name [MQTT-3.1.2-1]",
        )),
    }
}

impl Connect {
    /// Writes the body in the dialect of `self.protocol`.
    pub(super) fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        let v5 = self.protocol.is_v5();
        let name: &[u8] = match self.protocol {
            ProtocolVersion::V3_1 => b"MQIsdp",
            _ => b"MQTT",
        };
        s.put_binary(name, "protocol name")?;
        s.put_u8(self.protocol.level());
        let mut flags = 0;
        if self.clean_start {
            flags |= CLEAN_START;
        }
        if let Some(will) = &self.will {
            flags |= WILL_FLAG | ((will.qos as u8) << 3);
            if will.retain {
                flags |= WILL_RETAIN;
            }
        }
        if self.username.is_some() {
            flags |= USERNAME;
        }
        if self.password.is_some() {
            flags |= PASSWORD;
        }
        s.put_u8(flags);
        s.put_u16(self.keep_alive);
        if v5 {
            encode_properties(&self.properties, s)?;
        }
        s.put_str(&self.client_id, "client identifier")?;
        if let Some(will) = &self.will {
            if v5 {
                encode_properties(&will.properties, s)?;
            }
            s.put_str(will.topic.as_str(), "will topic")?;
            s.put_binary(&will.payload, "will payload")?;
        }
        if let Some(username) = &self.username {
            s.put_str(username, "user name")?;
        }
        if let Some(password) = &self.password {
            s.put_binary(password, "password")?;
        }
        Ok(())
    }
}
