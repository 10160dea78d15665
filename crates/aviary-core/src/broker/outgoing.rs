//! Building the PUBLISH (and PUBREL) packets a session sends on its link: per-connection
//! topic aliases, the remaining message expiry, subscription identifiers, DUP, and the
//! client's Maximum Packet Size [MQTT-3.1.2-25].

use std::time::Instant;

use aviary_codec::properties::{AckProperties, PublishPropertiesBox};
use aviary_codec::{Ack, Packet, PacketId, Publish, ReasonCode, TopicName};

use super::alias::OutboundTopic;
use super::message::Delivery;
use super::metering::message_units;
use super::session::{Awaiting, Inflight, Link};
use super::{Effects, Transmit};

/// Resends one in-flight entry; false if it may no longer be sent (too large for the new
/// connection: treated as delivered [MQTT-3.1.2-25]).
pub(crate) fn resend(link: &mut Link, entry: &Inflight, fx: &mut Effects, now: Instant) -> bool {
    match entry.state {
        Awaiting::PubComp => {
            fx.send(link.conn, pubrel(entry.packet_id));
            true
        }
        _ => send_publish(link, &entry.delivery, Some(entry.packet_id), true, fx, now),
    }
}

pub(crate) fn pubrel(packet_id: PacketId) -> Packet {
    Packet::PubRel(Ack {
        packet_id,
        reason_code: ReasonCode::SUCCESS,
        properties: AckProperties::default(),
    })
}

/// Builds and queues the PUBLISH of one delivery on a link. Returns false (and counts) if
/// it exceeds the client's Maximum Packet Size [MQTT-3.1.2-25].
pub(crate) fn send_publish(
    link: &mut Link,
    delivery: &Delivery,
    packet_id: Option<PacketId>,
    dup: bool,
    fx: &mut Effects,
    now: Instant,
) -> bool {
    let message = &delivery.message;
    let mut bind = None;
    // The message's properties as they are (a box, empty for most messages); each field
    // is written only when it changes, since the first write allocates the box.
    let (topic, properties) = if link.protocol.is_v5() {
        let mut properties = message.properties.clone();
        let expiry = message.remaining_expiry(now);
        if properties.message_expiry_interval != expiry {
            properties.message_expiry_interval = expiry;
        }
        if properties.subscription_identifiers != delivery.subscription_ids {
            properties
                .subscription_identifiers
                .clone_from(&delivery.subscription_ids);
        }
        let topic = match link.aliases.lookup(&message.topic) {
            OutboundTopic::Full => message.topic.clone(),
            OutboundTopic::Bind(alias) => {
                properties.topic_alias = Some(alias);
                bind = Some(alias);
                message.topic.clone()
            }
            OutboundTopic::Alias(alias) => {
                properties.topic_alias = Some(alias);
                TopicName::empty()
            }
        };
        (topic, properties)
    } else {
        (message.topic.clone(), PublishPropertiesBox::default())
    };
    let packet = Packet::Publish(Publish {
        dup,
        qos: delivery.qos,
        retain: delivery.retain,
        topic,
        packet_id,
        properties,
        payload: message.payload.clone(),
    });
    if let Some(max) = link.max_packet_size {
        if aviary_codec::encoded_len(&packet, link.protocol) > max as usize {
            fx.stats.dropped.too_large += 1;
            return false;
        }
    }
    if let Some(alias) = bind {
        link.aliases.bind(message.topic.clone(), alias);
    }
    fx.stats.messages_out += 1;
    let units = message_units(delivery.qos, delivery.retain, link.persistent);
    link.units += units;
    fx.stats.units += units;
    fx.transmits.push_back(Transmit::Packet {
        conn: link.conn,
        packet,
    });
    true
}
