//! Decoding and encoding of the property structs: one [`PropertyCodec`] impl per struct
//! listing the identifiers it accepts; anything else is a protocol error.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::Bytes;

use super::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PublishProperties, SubscribeProperties, UnsubscribeProperties, UserProperty, WillProperties,
};
use crate::wire::{Counter, Reader, Sink};
use crate::{DecodeError, EncodeError, QoS, TopicName};

/// The decode/encode behaviour shared by the property structs.
pub(crate) trait PropertyCodec: Default {
    /// Decodes the value of property `id` into `self`; refuses ids not allowed here and
    /// duplicates of single-valued properties.
    fn decode_one(&mut self, id: u8, r: &mut Reader) -> Result<(), DecodeError>;

    /// Rules that involve more than one property.
    fn check(&self) -> Result<(), DecodeError> {
        Ok(())
    }

    /// Writes every present property (identifier and value) to `s`, in a fixed order.
    fn visit<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError>;

    /// Whether nothing would be encoded.
    fn is_empty(&self) -> bool {
        let mut c = Counter::default();
        // A Counter only fails for lengths it cannot express, which are not empty.
        self.visit(&mut c).is_ok() && c.0 == 0
    }
}

/// Reads a property block: its variable byte integer length, then the properties.
pub(crate) fn decode_properties<P: PropertyCodec>(r: &mut Reader) -> Result<P, DecodeError> {
    let len = r.vbi()?;
    if len == 0 {
        // The common case on the hot path: no properties at all.
        return Ok(P::default());
    }
    let mut block = r.take(len as usize)?;
    let mut props = P::default();
    while block.has_remaining() {
        // The identifier is a variable byte integer, but every defined one fits in a byte.
        let id = block.vbi()?;
        let id =
            u8::try_from(id).map_err(|_| DecodeError::Protocol("unknown property identifier"))?;
        props.decode_one(id, &mut block)?;
    }
    props.check()?;
    Ok(props)
}

/// Writes a property block: its length, then the properties.
pub(crate) fn encode_properties<P: PropertyCodec, S: Sink>(
    props: &P,
    s: &mut S,
) -> Result<(), EncodeError> {
    let mut c = Counter::default();
    props.visit(&mut c)?;
    s.put_vbi(c.0)?;
    props.visit(s)
}

const DUPLICATE: DecodeError = DecodeError::Protocol("property included more than once");

fn set<T>(slot: &mut Option<T>, v: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DUPLICATE);
    }
    *slot = Some(v);
    Ok(())
}

fn read_bool(r: &mut Reader) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::Protocol("boolean property is not 0 or 1")),
    }
}

fn read_nz_u16(r: &mut Reader, what: &'static str) -> Result<NonZeroU16, DecodeError> {
    NonZeroU16::new(r.u16()?).ok_or(DecodeError::Protocol(what))
}

fn read_nz_u32(r: &mut Reader, what: &'static str) -> Result<NonZeroU32, DecodeError> {
    NonZeroU32::new(r.u32()?).ok_or(DecodeError::Protocol(what))
}

/// Subscription Identifier: 1..=268,435,455 (a variable byte integer cannot exceed it).
fn read_subscription_id(r: &mut Reader) -> Result<NonZeroU32, DecodeError> {
    NonZeroU32::new(r.vbi()?).ok_or(DecodeError::Protocol("subscription identifier 0"))
}

/// Response Topic: a topic name without wildcards [MQTT-3.3.2-14].
fn read_response_topic(r: &mut Reader) -> Result<TopicName, DecodeError> {
    r.with_str(|s| {
        TopicName::new(s).map_err(|_| DecodeError::Protocol("response topic is not a topic name"))
    })
}

fn put_byte<S: Sink>(s: &mut S, id: u8, v: Option<u8>) {
    if let Some(v) = v {
        s.put_u8(id);
        s.put_u8(v);
    }
}

fn put_two<S: Sink>(s: &mut S, id: u8, v: Option<u16>) {
    if let Some(v) = v {
        s.put_u8(id);
        s.put_u16(v);
    }
}

fn put_four<S: Sink>(s: &mut S, id: u8, v: Option<u32>) {
    if let Some(v) = v {
        s.put_u8(id);
        s.put_u32(v);
    }
}

fn put_string<S: Sink>(s: &mut S, id: u8, v: Option<&str>) -> Result<(), EncodeError> {
    if let Some(v) = v {
        s.put_u8(id);
        s.put_str(v, "string property")?;
    }
    Ok(())
}

fn put_bin<S: Sink>(s: &mut S, id: u8, v: Option<&Bytes>) -> Result<(), EncodeError> {
    if let Some(v) = v {
        s.put_u8(id);
        s.put_binary(v, "binary property")?;
    }
    Ok(())
}

fn put_users<S: Sink>(s: &mut S, users: &[UserProperty]) -> Result<(), EncodeError> {
    for (k, v) in users {
        s.put_u8(USER_PROPERTY);
        s.put_str(k, "user property name")?;
        s.put_str(v, "user property value")?;
    }
    Ok(())
}

const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
const CONTENT_TYPE: u8 = 0x03;
const RESPONSE_TOPIC: u8 = 0x08;
const CORRELATION_DATA: u8 = 0x09;
const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
const SERVER_KEEP_ALIVE: u8 = 0x13;
const AUTHENTICATION_METHOD: u8 = 0x15;
const AUTHENTICATION_DATA: u8 = 0x16;
const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
const WILL_DELAY_INTERVAL: u8 = 0x18;
const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
const RESPONSE_INFORMATION: u8 = 0x1A;
const SERVER_REFERENCE: u8 = 0x1C;
const REASON_STRING: u8 = 0x1F;
const RECEIVE_MAXIMUM: u8 = 0x21;
const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
const TOPIC_ALIAS: u8 = 0x23;
const MAXIMUM_QOS: u8 = 0x24;
const RETAIN_AVAILABLE: u8 = 0x25;
const USER_PROPERTY: u8 = 0x26;
const MAXIMUM_PACKET_SIZE: u8 = 0x27;
const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

/// A property identifier not valid for the packet type is a Malformed Packet (2.2.2.2).
fn not_allowed(packet: &'static str) -> DecodeError {
    DecodeError::Malformed(packet)
}

fn bool_byte(v: Option<bool>) -> Option<u8> {
    v.map(u8::from)
}

impl PropertyCodec for ConnectProperties {
    fn decode_one(&mut self, id: u8, r: &mut Reader) -> Result<(), DecodeError> {
        match id {
            SESSION_EXPIRY_INTERVAL => set(&mut self.session_expiry_interval, r.u32()?),
            RECEIVE_MAXIMUM => set(
                &mut self.receive_maximum,
                read_nz_u16(r, "receive maximum 0")?,
            ),
            MAXIMUM_PACKET_SIZE => set(
                &mut self.maximum_packet_size,
                read_nz_u32(r, "maximum packet size 0")?,
            ),
            TOPIC_ALIAS_MAXIMUM => set(&mut self.topic_alias_maximum, r.u16()?),
            REQUEST_RESPONSE_INFORMATION => {
                set(&mut self.request_response_information, read_bool(r)?)
            }
            REQUEST_PROBLEM_INFORMATION => {
                set(&mut self.request_problem_information, read_bool(r)?)
            }
            USER_PROPERTY => {
                self.user_properties.push(r.string_pair()?);
                Ok(())
            }
            AUTHENTICATION_METHOD => set(&mut self.authentication_method, r.string()?),
            AUTHENTICATION_DATA => set(&mut self.authentication_data, r.binary()?),
            _ => Err(not_allowed("property not allowed in CONNECT")),
        }
    }

    fn check(&self) -> Result<(), DecodeError> {
        if self.authentication_data.is_some() && self.authentication_method.is_none() {
            return Err(DecodeError::Protocol(
                "authentication data without authentication method",
            ));
        }
        Ok(())
    }

    fn visit<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        put_four(s, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        put_two(
            s,
            RECEIVE_MAXIMUM,
            self.receive_maximum.map(NonZeroU16::get),
        );
        put_four(
            s,
            MAXIMUM_PACKET_SIZE,
            self.maximum_packet_size.map(NonZeroU32::get),
        );
        put_two(s, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        put_byte(
            s,
            REQUEST_RESPONSE_INFORMATION,
            bool_byte(self.request_response_information),
        );
        put_byte(
            s,
            REQUEST_PROBLEM_INFORMATION,
            bool_byte(self.request_problem_information),
        );
        put_users(s, &self.user_properties)?;
        put_string(
            s,
            AUTHENTICATION_METHOD,
            self.authentication_method.as_deref(),
        )?;
        put_bin(s, AUTHENTICATION_DATA, self.authentication_data.as_ref())
    }
}

impl PropertyCodec for WillProperties {
    fn decode_one(&mut self, id: u8, r: &mut Reader) -> Result<(), DecodeError> {
        match id {
            WILL_DELAY_INTERVAL => set(&mut self.will_delay_interval, r.u32()?),
            PAYLOAD_FORMAT_INDICATOR => set(&mut self.payload_format_indicator, read_bool(r)?),
            MESSAGE_EXPIRY_INTERVAL => set(&mut self.message_expiry_interval, r.u32()?),
            CONTENT_TYPE => set(&mut self.content_type, r.string()?),
            RESPONSE_TOPIC => set(&mut self.response_topic, read_response_topic(r)?),
            CORRELATION_DATA => set(&mut self.correlation_data, r.binary()?),
            USER_PROPERTY => {
                self.user_properties.push(r.string_pair()?);
                Ok(())
            }
            _ => Err(not_allowed("property not allowed in will properties")),
        }
    }

    fn visit<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        put_four(s, WILL_DELAY_INTERVAL, self.will_delay_interval);
        put_byte(
            s,
            PAYLOAD_FORMAT_INDICATOR,
            bool_byte(self.payload_format_indicator),
        );
        put_four(s, MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        put_string(s, CONTENT_TYPE, self.content_type.as_deref())?;
        put_string(
            s,
            RESPONSE_TOPIC,
            self.response_topic.as_ref().map(TopicName::as_str),
        )?;
        put_bin(s, CORRELATION_DATA, self.correlation_data.as_ref())?;
        put_users(s, &self.user_properties)
    }
}

impl PropertyCodec for ConnAckProperties {
    fn decode_one(&mut self, id: u8, r: &mut Reader) -> Result<(), DecodeError> {
        match id {
            SESSION_EXPIRY_INTERVAL => set(&mut self.session_expiry_interval, r.u32()?),
            RECEIVE_MAXIMUM => set(
                &mut self.receive_maximum,
                read_nz_u16(r, "receive maximum 0")?,
            ),
            MAXIMUM_QOS => {
                // Only 0 or 1 may be sent; 2 is expressed by leaving the property out.
                let qos = match r.u8()? {
                    0 => QoS::AtMostOnce,
                    1 => QoS::AtLeastOnce,
                    _ => return Err(DecodeError::Protocol("maximum QoS is not 0 or 1")),
                };
                set(&mut self.maximum_qos, qos)
            }
            RETAIN_AVAILABLE => set(&mut self.retain_available, read_bool(r)?),
            MAXIMUM_PACKET_SIZE => set(
                &mut self.maximum_packet_size,
                read_nz_u32(r, "maximum packet size 0")?,
            ),
            ASSIGNED_CLIENT_IDENTIFIER => set(&mut self.assigned_client_identifier, r.string()?),
            TOPIC_ALIAS_MAXIMUM => set(&mut self.topic_alias_maximum, r.u16()?),
            REASON_STRING => set(&mut self.reason_string, r.string()?),
            USER_PROPERTY => {
                self.user_properties.push(r.string_pair()?);
                Ok(())
            }
            WILDCARD_SUBSCRIPTION_AVAILABLE => {
                set(&mut self.wildcard_subscription_available, read_bool(r)?)
            }
            SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                set(&mut self.subscription_identifiers_available, read_bool(r)?)
            }
            SHARED_SUBSCRIPTION_AVAILABLE => {
                set(&mut self.shared_subscription_available, read_bool(r)?)
            }
            SERVER_KEEP_ALIVE => set(&mut self.server_keep_alive, r.u16()?),
            RESPONSE_INFORMATION => set(&mut self.response_information, r.string()?),
            SERVER_REFERENCE => set(&mut self.server_reference, r.string()?),
            AUTHENTICATION_METHOD => set(&mut self.authentication_method, r.string()?),
            AUTHENTICATION_DATA => set(&mut self.authentication_data, r.binary()?),
            _ => Err(not_allowed("property not allowed in CONNACK")),
        }
    }

    fn visit<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        put_four(s, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        put_two(
            s,
            RECEIVE_MAXIMUM,
            self.receive_maximum.map(NonZeroU16::get),
        );
        put_byte(s, MAXIMUM_QOS, self.maximum_qos.map(|q| q as u8));
        put_byte(s, RETAIN_AVAILABLE, bool_byte(self.retain_available));
        put_four(
            s,
            MAXIMUM_PACKET_SIZE,
            self.maximum_packet_size.map(NonZeroU32::get),
        );
        put_string(
            s,
            ASSIGNED_CLIENT_IDENTIFIER,
            self.assigned_client_identifier.as_deref(),
        )?;
        put_two(s, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        put_string(s, REASON_STRING, self.reason_string.as_deref())?;
        put_users(s, &self.user_properties)?;
        put_byte(
            s,
            WILDCARD_SUBSCRIPTION_AVAILABLE,
            bool_byte(self.wildcard_subscription_available),
        );
        put_byte(
            s,
            SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            bool_byte(self.subscription_identifiers_available),
        );
        put_byte(
            s,
            SHARED_SUBSCRIPTION_AVAILABLE,
            bool_byte(self.shared_subscription_available),
        );
        put_two(s, SERVER_KEEP_ALIVE, self.server_keep_alive);
        put_string(
            s,
            RESPONSE_INFORMATION,
            self.response_information.as_deref(),
        )?;
        put_string(s, SERVER_REFERENCE, self.server_reference.as_deref())?;
        put_string(
            s,
            AUTHENTICATION_METHOD,
            self.authentication_method.as_deref(),
        )?;
        put_bin(s, AUTHENTICATION_DATA, self.authentication_data.as_ref())
    }
}

impl PropertyCodec for PublishProperties {
    fn decode_one(&mut self, id: u8, r: &mut Reader) -> Result<(), DecodeError> {
        match id {
            PAYLOAD_FORMAT_INDICATOR => set(&mut self.payload_format_indicator, read_bool(r)?),
            MESSAGE_EXPIRY_INTERVAL => set(&mut self.message_expiry_interval, r.u32()?),
            TOPIC_ALIAS => {
                // [MQTT-3.3.2-8]: 0 is never a valid alias; answered like any invalid alias.
                let alias = NonZeroU16::new(r.u16()?).ok_or(DecodeError::TopicAliasInvalid(
                    "topic alias 0 [MQTT-3.3.2-8]",
                ))?;
                set(&mut self.topic_alias, alias)
            }
            RESPONSE_TOPIC => set(&mut self.response_topic, read_response_topic(r)?),
            CORRELATION_DATA => set(&mut self.correlation_data, r.binary()?),
            USER_PROPERTY => {
                self.user_properties.push(r.string_pair()?);
                Ok(())
            }
            SUBSCRIPTION_IDENTIFIER => {
                self.subscription_identifiers.push(read_subscription_id(r)?);
                Ok(())
            }
            CONTENT_TYPE => set(&mut self.content_type, r.string()?),
            _ => Err(not_allowed("property not allowed in PUBLISH")),
        }
    }

    fn visit<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        put_byte(
            s,
            PAYLOAD_FORMAT_INDICATOR,
            bool_byte(self.payload_format_indicator),
        );
        put_four(s, MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        put_two(s, TOPIC_ALIAS, self.topic_alias.map(NonZeroU16::get));
        put_string(
            s,
            RESPONSE_TOPIC,
            self.response_topic.as_ref().map(TopicName::as_str),
        )?;
        put_bin(s, CORRELATION_DATA, self.correlation_data.as_ref())?;
        put_users(s, &self.user_properties)?;
        for id in &self.subscription_identifiers {
            s.put_u8(SUBSCRIPTION_IDENTIFIER);
            s.put_vbi(id.get() as usize)?;
        }
        put_string(s, CONTENT_TYPE, self.content_type.as_deref())
    }
}

impl PropertyCodec for AckProperties {
    fn decode_one(&mut self, id: u8, r: &mut Reader) -> Result<(), DecodeError> {
        match id {
            REASON_STRING => set(&mut self.reason_string, r.string()?),
            USER_PROPERTY => {
                self.user_properties.push(r.string_pair()?);
                Ok(())
            }
            _ => Err(not_allowed("property not allowed in an acknowledgement")),
        }
    }

    fn visit<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        put_string(s, REASON_STRING, self.reason_string.as_deref())?;
        put_users(s, &self.user_properties)
    }
}

impl PropertyCodec for SubscribeProperties {
    fn decode_one(&mut self, id: u8, r: &mut Reader) -> Result<(), DecodeError> {
        match id {
            SUBSCRIPTION_IDENTIFIER => {
                set(&mut self.subscription_identifier, read_subscription_id(r)?)
            }
            USER_PROPERTY => {
                self.user_properties.push(r.string_pair()?);
                Ok(())
            }
            _ => Err(not_allowed("property not allowed in SUBSCRIBE")),
        }
    }

    fn visit<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        if let Some(id) = self.subscription_identifier {
            s.put_u8(SUBSCRIPTION_IDENTIFIER);
            s.put_vbi(id.get() as usize)?;
        }
        put_users(s, &self.user_properties)
    }
}

impl PropertyCodec for UnsubscribeProperties {
    fn decode_one(&mut self, id: u8, r: &mut Reader) -> Result<(), DecodeError> {
        match id {
            USER_PROPERTY => {
                self.user_properties.push(r.string_pair()?);
                Ok(())
            }
            _ => Err(not_allowed("property not allowed in UNSUBSCRIBE")),
        }
    }

    fn visit<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        put_users(s, &self.user_properties)
    }
}

impl PropertyCodec for DisconnectProperties {
    fn decode_one(&mut self, id: u8, r: &mut Reader) -> Result<(), DecodeError> {
        match id {
            SESSION_EXPIRY_INTERVAL => set(&mut self.session_expiry_interval, r.u32()?),
            REASON_STRING => set(&mut self.reason_string, r.string()?),
            USER_PROPERTY => {
                self.user_properties.push(r.string_pair()?);
                Ok(())
            }
            SERVER_REFERENCE => set(&mut self.server_reference, r.string()?),
            _ => Err(not_allowed("property not allowed in DISCONNECT")),
        }
    }

    fn visit<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        put_four(s, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        put_string(s, REASON_STRING, self.reason_string.as_deref())?;
        put_users(s, &self.user_properties)?;
        put_string(s, SERVER_REFERENCE, self.server_reference.as_deref())
    }
}

impl PropertyCodec for AuthProperties {
    fn decode_one(&mut self, id: u8, r: &mut Reader) -> Result<(), DecodeError> {
        match id {
            AUTHENTICATION_METHOD => set(&mut self.authentication_method, r.string()?),
            AUTHENTICATION_DATA => set(&mut self.authentication_data, r.binary()?),
            REASON_STRING => set(&mut self.reason_string, r.string()?),
            USER_PROPERTY => {
                self.user_properties.push(r.string_pair()?);
                Ok(())
            }
            _ => Err(not_allowed("property not allowed in AUTH")),
        }
    }

    fn visit<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        put_string(
            s,
            AUTHENTICATION_METHOD,
            self.authentication_method.as_deref(),
        )?;
        put_bin(s, AUTHENTICATION_DATA, self.authentication_data.as_ref())?;
        put_string(s, REASON_STRING, self.reason_string.as_deref())?;
        put_users(s, &self.user_properties)
    }
}
