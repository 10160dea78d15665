//! MQTT 5.0 properties (spec 2.2.2), one struct per packet kind holding exactly the
//! properties that packet may carry. In 3.x all of them are empty/`None` and never encoded.
//! The decoder rejects duplicates of single-valued properties, properties not allowed in the
//! packet, and out-of-range values (Protocol Error).

use std::num::{NonZeroU16, NonZeroU32};

use bytes::Bytes;

use crate::{QoS, TopicName};

mod codec;

pub(crate) use codec::{decode_properties, encode_properties, PropertyCodec};

/// A User Property (0x26): a UTF-8 string pair; may repeat and keeps its order.
pub type UserProperty = (String, String);

/// CONNECT properties (3.1.2.11).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectProperties {
    /// 0x11; absent means 0 (session ends with the connection).
    pub session_expiry_interval: Option<u32>,
    /// 0x21; absent means 65,535. Zero is a protocol error.
    pub receive_maximum: Option<NonZeroU16>,
    /// 0x27; the largest packet the client accepts. Zero is a protocol error.
    pub maximum_packet_size: Option<NonZeroU32>,
    /// 0x22; how many topic aliases the client accepts from the server. Absent means 0.
    pub topic_alias_maximum: Option<u16>,
    /// 0x19; 0 or 1.
    pub request_response_information: Option<bool>,
    /// 0x17; 0 or 1. When 0 the server sends no reason string/user properties except in
    /// PUBLISH, CONNACK and DISCONNECT.
    pub request_problem_information: Option<bool>,
    pub user_properties: Vec<UserProperty>,
    /// 0x15; enhanced authentication (we answer CONNACK 0x8C).
    pub authentication_method: Option<String>,
    /// 0x16; only with an authentication method.
    pub authentication_data: Option<Bytes>,
}

/// Will properties in the CONNECT payload (3.1.3.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WillProperties {
    /// 0x18; seconds to wait before publishing the will.
    pub will_delay_interval: Option<u32>,
    /// 0x01; true means the payload is UTF-8.
    pub payload_format_indicator: Option<bool>,
    /// 0x02
    pub message_expiry_interval: Option<u32>,
    /// 0x03
    pub content_type: Option<String>,
    /// 0x08
    pub response_topic: Option<TopicName>,
    /// 0x09
    pub correlation_data: Option<Bytes>,
    pub user_properties: Vec<UserProperty>,
}

/// CONNACK properties (3.2.2.3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnAckProperties {
    /// 0x11
    pub session_expiry_interval: Option<u32>,
    /// 0x21
    pub receive_maximum: Option<NonZeroU16>,
    /// 0x24; only 0 or 1 may be sent (absent means 2).
    pub maximum_qos: Option<QoS>,
    /// 0x25
    pub retain_available: Option<bool>,
    /// 0x27
    pub maximum_packet_size: Option<NonZeroU32>,
    /// 0x12
    pub assigned_client_identifier: Option<String>,
    /// 0x22
    pub topic_alias_maximum: Option<u16>,
    /// 0x1F
    pub reason_string: Option<String>,
    pub user_properties: Vec<UserProperty>,
    /// 0x28
    pub wildcard_subscription_available: Option<bool>,
    /// 0x29
    pub subscription_identifiers_available: Option<bool>,
    /// 0x2A
    pub shared_subscription_available: Option<bool>,
    /// 0x13
    pub server_keep_alive: Option<u16>,
    /// 0x1A
    pub response_information: Option<String>,
    /// 0x1C
    pub server_reference: Option<String>,
    /// 0x15
    pub authentication_method: Option<String>,
    /// 0x16
    pub authentication_data: Option<Bytes>,
}

/// PUBLISH properties (3.3.2.3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishProperties {
    /// 0x01
    pub payload_format_indicator: Option<bool>,
    /// 0x02; seconds the message lives; the server sends the remaining time.
    pub message_expiry_interval: Option<u32>,
    /// 0x23; zero is a protocol error (checked by the decoder); the upper bound is the
    /// receiver's Topic Alias Maximum (checked by the receiver's state machine).
    pub topic_alias: Option<NonZeroU16>,
    /// 0x08
    pub response_topic: Option<TopicName>,
    /// 0x09
    pub correlation_data: Option<Bytes>,
    pub user_properties: Vec<UserProperty>,
    /// 0x0B; may repeat, server → client only, each 1..=268,435,455.
    pub subscription_identifiers: Vec<NonZeroU32>,
    /// 0x03
    pub content_type: Option<String>,
}

impl PublishProperties {
    /// No PUBLISH property (what most PUBLISHes carry).
    pub const NONE: Self = Self {
        payload_format_indicator: None,
        message_expiry_interval: None,
        topic_alias: None,
        response_topic: None,
        correlation_data: None,
        user_properties: Vec::new(),
        subscription_identifiers: Vec::new(),
        content_type: None,
    };
}

/// No PUBLISH property: what an empty [`PublishPropertiesBox`] dereferences to.
static NO_PUBLISH_PROPERTIES: PublishProperties = PublishProperties::NONE;

/// The [`PublishProperties`] of a [`crate::Publish`], on the heap only when some property is
/// present: most PUBLISHes carry none, and inline they would make every `Packet` moved
/// between decoder, broker and writer three times larger. Reads go through `Deref`; the
/// first write through `DerefMut` allocates.
#[derive(Clone, Default)]
pub struct PublishPropertiesBox(Option<Box<PublishProperties>>);

impl PublishPropertiesBox {
    /// The properties by value (no allocation when there are none).
    pub fn into_inner(self) -> PublishProperties {
        self.0.map(|b| *b).unwrap_or_default()
    }
}

impl PublishPropertiesBox {
    /// The properties on the heap, `None` when there are none (nothing to move or
    /// allocate: the queued form of a delivery keeps this box as it is).
    pub fn into_boxed(self) -> Option<Box<PublishProperties>> {
        self.0
    }

    /// A box holding `properties`, which the caller already has on the heap (`None`: no
    /// property). A boxed value without any property is kept as it is; it compares equal
    /// to the empty box.
    pub fn from_boxed(properties: Option<Box<PublishProperties>>) -> Self {
        Self(properties)
    }
}

impl From<PublishProperties> for PublishPropertiesBox {
    fn from(properties: PublishProperties) -> Self {
        if properties.is_none() {
            if properties.user_properties.capacity() == 0
                && properties.subscription_identifiers.capacity() == 0
            {
                // Owns nothing at all (every option is `None`, neither vector has an
                // allocation): forgetting it is its drop, without visiting each field.
                std::mem::forget(properties);
            }
            Self(None)
        } else {
            Self(Some(Box::new(properties)))
        }
    }
}

impl PublishProperties {
    /// Whether no property is present: field by field (every PUBLISH decoded or sent asks),
    /// which is cheaper than comparing with [`PublishProperties::NONE`].
    pub fn is_none(&self) -> bool {
        let Self {
            payload_format_indicator,
            message_expiry_interval,
            topic_alias,
            response_topic,
            correlation_data,
            user_properties,
            subscription_identifiers,
            content_type,
        } = self;
        payload_format_indicator.is_none()
            && message_expiry_interval.is_none()
            && topic_alias.is_none()
            && response_topic.is_none()
            && correlation_data.is_none()
            && user_properties.is_empty()
            && subscription_identifiers.is_empty()
            && content_type.is_none()
    }
}

impl std::ops::Deref for PublishPropertiesBox {
    type Target = PublishProperties;
    fn deref(&self) -> &PublishProperties {
        self.0.as_deref().unwrap_or(&NO_PUBLISH_PROPERTIES)
    }
}

impl std::ops::DerefMut for PublishPropertiesBox {
    fn deref_mut(&mut self) -> &mut PublishProperties {
        self.0.get_or_insert_with(Box::default)
    }
}

impl PartialEq for PublishPropertiesBox {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for PublishPropertiesBox {}

impl std::fmt::Debug for PublishPropertiesBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

/// Properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK: a reason string and
/// user properties.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AckProperties {
    /// 0x1F
    pub reason_string: Option<String>,
    pub user_properties: Vec<UserProperty>,
}

/// SUBSCRIBE properties (3.8.2.1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscribeProperties {
    /// 0x0B; 1..=268,435,455 (zero is a protocol error).
    pub subscription_identifier: Option<NonZeroU32>,
    pub user_properties: Vec<UserProperty>,
}

/// UNSUBSCRIBE properties (3.10.2.1): user properties only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnsubscribeProperties {
    pub user_properties: Vec<UserProperty>,
}

/// DISCONNECT properties (3.14.2.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DisconnectProperties {
    /// 0x11; a client may not change 0 to non-zero (checked by the state machine).
    pub session_expiry_interval: Option<u32>,
    /// 0x1F
    pub reason_string: Option<String>,
    pub user_properties: Vec<UserProperty>,
    /// 0x1C
    pub server_reference: Option<String>,
}

/// AUTH properties (3.15.2.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthProperties {
    /// 0x15
    pub authentication_method: Option<String>,
    /// 0x16
    pub authentication_data: Option<Bytes>,
    /// 0x1F
    pub reason_string: Option<String>,
    pub user_properties: Vec<UserProperty>,
}
