//! [`Outgoing`]: a packet as it waits in a connection's outbox, in fewer bytes than a
//! [`Packet`] (96 bytes, sized by its largest inline variant).
//!
//! Outboxes hold every delivery not yet written: in a fan-out burst that is up to a window
//! of PUBLISHes for each of a thousand subscribers, so the size of one queued item sets the
//! broker's peak memory. A queued PUBLISH keeps the shared parts of the message (topic and
//! payload: reference counted, never copied per subscriber) and its own packet id, flags
//! and topic alias inline; any other property (user properties, expiry, subscription
//! identifiers, ...) moves to one boxed [`PublishProperties`], only when present. The
//! acknowledgements of the QoS flows are a few bytes inline; every other packet (CONNACK,
//! SUBACK, DISCONNECT, ...: once per connection or per request) is boxed whole.
//!
//! The writer encodes an item with the codec, a PUBLISH from its parts
//! (`aviary_codec::encode_publish`), so what goes on the wire is byte for byte what the
//! packet the broker produced encodes to.

use std::num::NonZeroU16;

use aviary_codec::properties::{PublishProperties, PublishPropertiesBox};
use aviary_codec::{
    Ack, AckKind, EncodeError, Packet, PacketId, ProtocolVersion, Publish, PublishRef, QoS,
    ReasonCode, TopicName,
};
use bytes::{Bytes, BytesMut};

/// Encoded bytes collected before they are written, so a batch of large packets is written
/// in pieces instead of being encoded into one huge buffer.
pub(crate) const WRITE_CHUNK: usize = 64 * 1024;

/// Bytes of a packet beyond its payload and topic, for sizing the write buffer: fixed
/// header, packet id, topic length, a few properties.
pub(crate) const TYPICAL_OVERHEAD: usize = 16;

/// The properties of a PUBLISH that has none (what most deliveries have).
static NO_PROPERTIES: PublishProperties = PublishProperties::NONE;

/// One packet waiting in an outbox. `Packet::from` gives back the packet it was made from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outgoing {
    /// A PUBLISH.
    Publish(QueuedPublish),
    /// PUBACK, PUBREC, PUBREL or PUBCOMP without properties.
    Ack {
        kind: AckKind,
        packet_id: PacketId,
        reason_code: ReasonCode,
    },
    /// PINGRESP.
    PingResp,
    /// Anything else, boxed: rare enough that its size matters more than its allocation.
    Other(Box<Packet>),
    /// Bytes already encoded and counted: the rest of a batch that the broker task began
    /// to write itself and the socket did not take whole (`crate::outbox`), written first
    /// and as they are by the connection's writer.
    Encoded(Bytes),
}

/// A queued PUBLISH: the shared topic and payload, and what is per delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct QueuedPublish {
    /// Shared with every other copy of the message (empty when a topic alias stands in).
    topic: TopicName,
    /// Shared with every other copy of the message.
    payload: Bytes,
    /// The properties besides the topic alias, when there are any (5.0 only).
    properties: Option<Box<PublishProperties>>,
    /// Present exactly when the QoS is above 0.
    packet_id: Option<PacketId>,
    /// The 5.0 topic alias, kept inline: with aliases on, every PUBLISH carries one.
    topic_alias: Option<NonZeroU16>,
    /// DUP, QoS and RETAIN.
    dup: bool,
    qos: QoS,
    retain: bool,
}

impl QueuedPublish {
    /// The QoS of this delivery.
    pub(crate) fn qos(&self) -> QoS {
        self.qos
    }

    /// Whether it binds a topic alias (carries both the topic and an alias), which the
    /// client needs to resolve later PUBLISHes that carry only the alias [MQTT-3.3.2-12].
    pub(crate) fn sets_topic_alias(&self) -> bool {
        self.topic_alias.is_some() && !self.topic.is_empty()
    }
}

impl Outgoing {
    /// Appends the packet's encoding in `version`: the bytes `aviary_codec::encode` gives
    /// for `Packet::from(self)`, a PUBLISH encoded from its parts without rebuilding it.
    pub(crate) fn encode(
        &mut self,
        version: ProtocolVersion,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        match self {
            Self::Publish(p) => {
                let with_alias;
                let properties = match (&mut p.properties, p.topic_alias) {
                    (Some(properties), alias) => {
                        properties.topic_alias = alias;
                        &**properties
                    }
                    (None, None) => &NO_PROPERTIES,
                    (None, alias) => {
                        with_alias = PublishProperties {
                            topic_alias: alias,
                            ..PublishProperties::default()
                        };
                        &with_alias
                    }
                };
                let publish = PublishRef {
                    dup: p.dup,
                    qos: p.qos,
                    retain: p.retain,
                    topic: p.topic.as_str(),
                    packet_id: p.packet_id,
                    properties,
                    payload: &p.payload,
                };
                aviary_codec::encode_publish(&publish, version, out)
            }
            Self::Other(packet) => aviary_codec::encode(packet, version, out),
            Self::Ack {
                kind,
                packet_id,
                reason_code,
            } => aviary_codec::encode_ack(*kind, *packet_id, *reason_code, version, out),
            Self::PingResp => aviary_codec::encode(&Packet::PingResp, version, out),
            Self::Encoded(bytes) => {
                out.extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    /// Encodes the item onto `out` (as [`Outgoing::encode`]), adding its size to `sent` by
    /// its class ([`Outgoing::Encoded`] bytes were counted when first encoded).
    pub(crate) fn encode_counted(
        mut self,
        version: ProtocolVersion,
        out: &mut BytesMut,
        sent: &mut [u64; 4],
    ) {
        let before = out.len();
        let encoded = self.encode(version, out);
        if !matches!(self, Self::Encoded(_)) {
            sent[self.wire_class()] += (out.len() - before) as u64;
        }
        if let Err(error) = encoded {
            // The broker produced a packet this version cannot carry: a bug there, but not
            // a reason to drop the connection.
            tracing::warn!(%error, packet = ?self, "cannot encode packet; skipped");
        }
    }

    /// The QoS of a PUBLISH (0, 1, 2), 3 for any other packet: the wire byte counters'
    /// class.
    pub(crate) fn wire_class(&self) -> usize {
        match self {
            Self::Publish(p) => p.qos as usize,
            Self::Other(packet) => crate::metrics::WireBytes::class(packet),
            Self::Ack { .. } | Self::PingResp | Self::Encoded(_) => 3,
        }
    }

    /// Bytes of payload and topic name (zero for packets other than PUBLISH), for sizing
    /// the write buffer.
    pub(crate) fn message_len(&self) -> usize {
        match self {
            Self::Publish(p) => p.payload.len() + p.topic.as_str().len(),
            Self::Encoded(bytes) => bytes.len(),
            _ => 0,
        }
    }
}

impl From<Packet> for Outgoing {
    #[inline]
    fn from(packet: Packet) -> Self {
        match packet {
            Packet::Publish(publish) => Self::Publish(QueuedPublish::from(publish)),
            Packet::PubAck(ack) if has_no_properties(&ack) => Self::ack(AckKind::PubAck, &ack),
            Packet::PubRec(ack) if has_no_properties(&ack) => Self::ack(AckKind::PubRec, &ack),
            Packet::PubRel(ack) if has_no_properties(&ack) => Self::ack(AckKind::PubRel, &ack),
            Packet::PubComp(ack) if has_no_properties(&ack) => Self::ack(AckKind::PubComp, &ack),
            Packet::PingResp => Self::PingResp,
            other => Self::Other(Box::new(other)),
        }
    }
}

impl Outgoing {
    /// An [`Outgoing::Ack`] of `ack`, whose properties are empty.
    fn ack(kind: AckKind, ack: &Ack) -> Self {
        Self::Ack {
            kind,
            packet_id: ack.packet_id,
            reason_code: ack.reason_code,
        }
    }
}

/// Whether an acknowledgement's properties are empty (and can be left out of its item).
fn has_no_properties(ack: &Ack) -> bool {
    ack.properties.reason_string.is_none() && ack.properties.user_properties.is_empty()
}

impl From<Publish> for QueuedPublish {
    #[inline]
    fn from(publish: Publish) -> Self {
        let Publish {
            dup,
            qos,
            retain,
            topic,
            packet_id,
            properties,
            payload,
        } = publish;
        // Most PUBLISHes have no property: nothing to move, check or allocate then; one
        // that has keeps its box.
        let (properties, topic_alias) = match properties.into_boxed() {
            None => (None, None),
            Some(mut properties) => {
                let topic_alias = properties.topic_alias.take();
                ((!is_empty(&properties)).then_some(properties), topic_alias)
            }
        };
        Self {
            topic,
            payload,
            properties,
            packet_id,
            topic_alias,
            dup,
            qos,
            retain,
        }
    }
}

/// Whether `properties` (without the topic alias) carry nothing: checked field by field,
/// since this runs for every delivery.
fn is_empty(properties: &PublishProperties) -> bool {
    let PublishProperties {
        payload_format_indicator,
        message_expiry_interval,
        topic_alias: _,
        response_topic,
        correlation_data,
        user_properties,
        subscription_identifiers,
        content_type,
    } = properties;
    payload_format_indicator.is_none()
        && message_expiry_interval.is_none()
        && response_topic.is_none()
        && correlation_data.is_none()
        && user_properties.is_empty()
        && subscription_identifiers.is_empty()
        && content_type.is_none()
}

impl From<QueuedPublish> for Publish {
    fn from(queued: QueuedPublish) -> Self {
        let properties = match (queued.properties, queued.topic_alias) {
            (properties, None) => PublishPropertiesBox::from_boxed(properties),
            (Some(mut properties), alias) => {
                properties.topic_alias = alias;
                PublishPropertiesBox::from_boxed(Some(properties))
            }
            (None, alias) => PublishProperties {
                topic_alias: alias,
                ..PublishProperties::default()
            }
            .into(),
        };
        Self {
            dup: queued.dup,
            qos: queued.qos,
            retain: queued.retain,
            topic: queued.topic,
            packet_id: queued.packet_id,
            properties,
            payload: queued.payload,
        }
    }
}

/// The packet an item was made from (tests compare what was queued with packets).
#[cfg(test)]
impl From<Outgoing> for Packet {
    fn from(item: Outgoing) -> Self {
        match item {
            Outgoing::Publish(publish) => Self::Publish(publish.into()),
            Outgoing::Ack {
                kind,
                packet_id,
                reason_code,
            } => {
                let ack = Ack {
                    packet_id,
                    reason_code,
                    properties: aviary_codec::properties::AckProperties::default(),
                };
                match kind {
                    AckKind::PubAck => Self::PubAck(ack),
                    AckKind::PubRec => Self::PubRec(ack),
                    AckKind::PubRel => Self::PubRel(ack),
                    AckKind::PubComp => Self::PubComp(ack),
                }
            }
            Outgoing::PingResp => Self::PingResp,
            Outgoing::Other(packet) => *packet,
            Outgoing::Encoded(_) => panic!("encoded bytes are not a packet"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use aviary_codec::properties::AckProperties;
    use aviary_codec::ConnAck;

    use super::*;
    use crate::metrics::WireBytes;

    fn publish(qos: QoS, topic: &str) -> Publish {
        Publish {
            dup: qos != QoS::AtMostOnce,
            qos,
            retain: true,
            topic: if topic.is_empty() {
                TopicName::empty()
            } else {
                TopicName::new(topic).unwrap()
            },
            packet_id: (qos != QoS::AtMostOnce).then(|| PacketId::new(0x1234).unwrap()),
            properties: Default::default(),
            payload: Bytes::from_static(b"payload"),
        }
    }

    fn ack(reason: u8, reason_string: Option<&str>) -> Ack {
        Ack {
            packet_id: PacketId::new(7).unwrap(),
            reason_code: ReasonCode(reason),
            properties: AckProperties {
                reason_string: reason_string.map(str::to_owned),
                user_properties: Vec::new(),
            },
        }
    }

    /// Packets of every shape the broker sends, 5.0 properties included.
    fn packets() -> Vec<Packet> {
        let mut out = Vec::new();
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            out.push(Packet::Publish(publish(qos, "a/b")));
            let mut aliased = publish(qos, "");
            aliased.properties.topic_alias = NonZeroU16::new(3);
            out.push(Packet::Publish(aliased));
            let mut binding = publish(qos, "a/b");
            binding.properties.topic_alias = NonZeroU16::new(4);
            binding.properties.subscription_identifiers = vec![NonZeroU32::new(9).unwrap()];
            out.push(Packet::Publish(binding));
            let mut full = publish(qos, "a/b/c");
            full.properties = PublishProperties {
                payload_format_indicator: Some(true),
                message_expiry_interval: Some(60),
                topic_alias: None,
                response_topic: Some(TopicName::new("reply").unwrap()),
                correlation_data: Some(Bytes::from_static(b"corr")),
                user_properties: vec![("k".to_owned(), "v".to_owned())],
                subscription_identifiers: vec![
                    NonZeroU32::new(1).unwrap(),
                    NonZeroU32::new(268_435_455).unwrap(),
                ],
                content_type: Some("text/plain".into()),
            }
            .into();
            out.push(Packet::Publish(full));
        }
        out.push(Packet::PubAck(ack(0, None)));
        out.push(Packet::PubAck(ack(0x10, None)));
        out.push(Packet::PubRec(ack(0x80, Some("no"))));
        out.push(Packet::PubRel(ack(0, None)));
        out.push(Packet::PubComp(ack(0x92, None)));
        out.push(Packet::PingResp);
        out.push(Packet::ConnAck(Box::new(ConnAck {
            session_present: false,
            reason_code: ReasonCode::SUCCESS,
            properties: Default::default(),
        })));
        out
    }

    #[test]
    fn every_item_gives_back_its_packet() {
        for packet in packets() {
            let item = Outgoing::from(packet.clone());
            assert_eq!(Packet::from(item), packet);
        }
    }

    #[test]
    fn items_encode_exactly_as_their_packets() {
        for version in [
            ProtocolVersion::V3_1,
            ProtocolVersion::V3_1_1,
            ProtocolVersion::V5,
        ] {
            for packet in packets() {
                let mut expected = BytesMut::new();
                let expected_result = aviary_codec::encode(&packet, version, &mut expected);
                let mut item = Outgoing::from(packet.clone());
                let mut got = BytesMut::new();
                let got_result = item.encode(version, &mut got);
                assert_eq!(got_result, expected_result, "{packet:?} in {version:?}");
                assert_eq!(got, expected, "{packet:?} in {version:?}");
                assert_eq!(item.wire_class(), WireBytes::class(&packet));
                // Encoding again (a resend of the same item) gives the same bytes.
                let mut again = BytesMut::new();
                let _ = item.encode(version, &mut again);
                assert_eq!(again, expected, "{packet:?} in {version:?}, again");
            }
        }
    }

    #[test]
    fn common_packets_stay_inline() {
        let plain = Outgoing::from(Packet::Publish(publish(QoS::AtLeastOnce, "a")));
        assert!(matches!(&plain, Outgoing::Publish(p) if p.properties.is_none()));
        let mut aliased = publish(QoS::AtMostOnce, "");
        aliased.properties.topic_alias = NonZeroU16::new(3);
        let aliased = Outgoing::from(Packet::Publish(aliased));
        assert!(matches!(&aliased, Outgoing::Publish(p) if p.properties.is_none()));
        assert!(matches!(
            Outgoing::from(Packet::PubAck(ack(0, None))),
            Outgoing::Ack { .. }
        ));
        assert!(matches!(
            Outgoing::from(Packet::PubRec(ack(0x80, Some("no")))),
            Outgoing::Other(_)
        ));
        // What the outbox's memory is measured in: less than a `Packet`.
        assert!(
            std::mem::size_of::<Outgoing>() <= 72,
            "{}",
            std::mem::size_of::<Outgoing>()
        );
        assert!(std::mem::size_of::<Outgoing>() < std::mem::size_of::<Packet>());
    }
}
