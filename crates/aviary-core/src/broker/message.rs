//! Application messages inside the broker: a [`Message`] is decoded once and shared (`Arc`)
//! by every session that receives it and by the retained store; a [`Delivery`] is one
//! session's copy of it (granted QoS, RETAIN flag to send, subscription identifiers).

use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use aviary_codec::properties::{
    PublishProperties, PublishPropertiesBox, UserProperty, WillProperties,
};
use aviary_codec::{Publish, QoS, TopicFilter, TopicName, Will};
use bytes::Bytes;

/// One application message as published (or as a will), shared by all its receivers.
/// Public so that the shell can persist and restore it.
#[derive(Debug)]
pub struct Message {
    /// The resolved topic (never an alias).
    pub topic: TopicName,
    /// Shared with the read buffer it was decoded from: never copied per subscriber.
    pub payload: Bytes,
    /// The QoS it was published with (the upper bound for every delivery).
    pub qos: QoS,
    /// The RETAIN flag it was published with (forwarded only with retain as published).
    pub retain: bool,
    /// Passed through unchanged [MQTT-3.3.2-*], except that `topic_alias` and
    /// `subscription_identifiers` are always empty here (they are per connection /
    /// per subscription) and `message_expiry_interval` is the value as received. Boxed
    /// only when some property is present (most messages carry none): the message is
    /// smaller to move and to drop, and its PUBLISHes take the properties as they are.
    pub properties: PublishPropertiesBox,
    /// When the broker received it: the message expiry counts from here [MQTT-3.3.2-6].
    pub received_at: Instant,
    /// The publishing client, for No Local [MQTT-3.8.3-3]; `None` for messages from the
    /// broker itself.
    pub publisher: Option<Arc<str>>,
    /// Its id in the store, given when a persistent session first takes a copy.
    pub(crate) store_id: OnceLock<u64>,
}

impl Message {
    /// A message loaded from a store, with the id it has there if it was stored as a
    /// session's message (retained messages and wills have none: they get one when a
    /// session first stores a copy). `received_at` may be in the past (the expiry counts
    /// from it).
    #[allow(clippy::too_many_arguments)]
    pub fn restored(
        store_id: Option<u64>,
        topic: TopicName,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        properties: PublishProperties,
        received_at: Instant,
        publisher: Option<Arc<str>>,
    ) -> Self {
        Self {
            topic,
            payload,
            qos,
            retain,
            properties: properties.into(),
            received_at,
            publisher,
            store_id: store_id.map_or_else(OnceLock::new, OnceLock::from),
        }
    }

    /// Its id in the store, if it has one.
    pub fn store_id(&self) -> Option<u64> {
        self.store_id.get().copied()
    }

    /// The message of a client PUBLISH, ready to share; `resolved` is the topic its alias
    /// stands for, if it used one (else its own topic is the message's), `device` the
    /// identity properties that ride on every message of its publisher. Built in its
    /// `Arc` at once, not moved there.
    pub(crate) fn from_publish(
        publish: Publish,
        resolved: Option<TopicName>,
        publisher: Arc<str>,
        device: &[UserProperty],
        now: Instant,
    ) -> Arc<Self> {
        let mut properties = publish.properties;
        // Written only when set: a write to the box allocates it.
        if properties.topic_alias.is_some() {
            properties.topic_alias = None;
        }
        if !properties.subscription_identifiers.is_empty() {
            properties.subscription_identifiers.clear();
        }
        if !device.is_empty() {
            properties.user_properties.extend_from_slice(device);
        }
        Arc::new(Self {
            topic: resolved.unwrap_or(publish.topic),
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties,
            received_at: now,
            publisher: Some(publisher),
            store_id: OnceLock::new(),
        })
    }

    /// The message a will turns into; the will properties become publish properties.
    pub(crate) fn from_will(will: Will, publisher: Arc<str>, now: Instant) -> Self {
        let WillProperties {
            will_delay_interval: _,
            payload_format_indicator,
            message_expiry_interval,
            content_type,
            response_topic,
            correlation_data,
            user_properties,
        } = will.properties;
        Self {
            topic: will.topic,
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
            properties: PublishProperties {
                payload_format_indicator,
                message_expiry_interval,
                topic_alias: None,
                response_topic,
                correlation_data,
                user_properties,
                subscription_identifiers: Vec::new(),
                content_type,
            }
            .into(),
            received_at: now,
            publisher: Some(publisher),
            store_id: OnceLock::new(),
        }
    }

    /// The Message Expiry Interval to send at `now`: the received value minus the whole
    /// seconds the message has waited [MQTT-3.3.2-6]; `None` when it has none.
    pub(crate) fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        let interval = self.properties.message_expiry_interval?;
        let waited = now.saturating_duration_since(self.received_at).as_secs();
        Some(u32::try_from(u64::from(interval).saturating_sub(waited)).unwrap_or(0))
    }

    /// When the message expires, if it has a Message Expiry Interval.
    pub(crate) fn expires_at(&self) -> Option<Instant> {
        let interval = self.properties.message_expiry_interval?;
        Some(self.received_at + std::time::Duration::from_secs(u64::from(interval)))
    }

    /// Whether the message expired and must no longer be sent [MQTT-3.3.2-5]: its interval
    /// has passed, strictly, so a message with interval 0 still reaches the subscribers
    /// that are connected when it arrives, and is never queued or kept as retained.
    pub(crate) fn is_expired(&self, now: Instant) -> bool {
        self.expires_at().is_some_and(|at| now > at)
    }
}

impl Delivery {
    /// What the copy counts against `max_queued_bytes`: topic and payload.
    pub(crate) fn size(&self) -> usize {
        self.message.topic.as_str().len() + self.message.payload.len()
    }
}

/// One session's copy of a message.
#[derive(Clone, Debug)]
pub(crate) struct Delivery {
    /// The message itself, shared.
    pub(crate) message: Arc<Message>,
    /// min(message QoS, subscription QoS) [MQTT-3.8.4-8]; for overlapping subscriptions
    /// the maximum of those [MQTT-3.3.4-2].
    pub(crate) qos: QoS,
    /// The RETAIN flag to send: 1 for retained messages sent on subscribe
    /// [MQTT-3.3.1-9], the published flag with retain as published, else 0
    /// [MQTT-3.3.1-12, MQTT-3.3.1-13].
    pub(crate) retain: bool,
    /// Identifiers of all matching subscriptions that carry one [MQTT-3.3.4-3].
    pub(crate) subscription_ids: Vec<NonZeroU32>,
    /// The shared subscription (`$share/g/f`) this copy was chosen for, so it can go to
    /// another member if this one leaves before acknowledging it.
    pub(crate) shared: Option<TopicFilter>,
    /// Its id in the store while the session persists it.
    pub(crate) store_id: Option<u64>,
}
