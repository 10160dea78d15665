//! MQTT 5.0 topic aliases (3.3.2.3.4), both directions, per connection: the client's aliases
//! towards us ([`InboundAliases`], bounded by our Topic Alias Maximum) and the aliases we
//! assign on PUBLISHes we send ([`OutboundAliases`], bounded by the client's maximum).

use std::collections::HashMap;
use std::num::NonZeroU16;

use aviary_codec::TopicName;

/// Why an inbound alias could not be applied; both end the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AliasError {
    /// Alias above our Topic Alias Maximum: DISCONNECT 0x94 [MQTT-3.3.2-9].
    OutOfRange,
    /// Empty topic with an alias that was never set: protocol error 0x82.
    Unknown,
}

/// The client's topic aliases towards us.
#[derive(Debug, Default)]
pub(crate) struct InboundAliases {
    /// Index `alias - 1`; grows on demand up to the maximum. Created with the first
    /// alias: every connection holds this and most clients send none (an empty `Vec` is
    /// 24 bytes, the box 8).
    #[allow(
        clippy::box_collection,
        reason = "boxing keeps every connection 16 bytes smaller; few clients use aliases"
    )]
    topics: Option<Box<Vec<Option<TopicName>>>>,
}

impl InboundAliases {
    /// Resolves the topic of an incoming PUBLISH: a non-empty topic with an alias (re)binds
    /// the alias; an empty topic takes the alias's topic.
    pub(crate) fn resolve(
        &mut self,
        topic: TopicName,
        alias: NonZeroU16,
        maximum: u16,
    ) -> Result<TopicName, AliasError> {
        if alias.get() > maximum {
            return Err(AliasError::OutOfRange);
        }
        let slot = usize::from(alias.get() - 1);
        if topic.is_empty() {
            return self
                .topics
                .as_ref()
                .and_then(|topics| topics.get(slot))
                .cloned()
                .flatten()
                .ok_or(AliasError::Unknown);
        }
        let topics = self.topics.get_or_insert_default();
        if topics.len() <= slot {
            topics.resize(slot + 1, None);
        }
        topics[slot] = Some(topic.clone());
        Ok(topic)
    }
}

/// How an outgoing PUBLISH names its topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OutboundTopic {
    /// Send the full topic without an alias (aliases not allowed, or all in use).
    Full,
    /// Send the full topic and bind this new alias (commit with [`OutboundAliases::bind`]).
    Bind(NonZeroU16),
    /// Send an empty topic with this alias.
    Alias(NonZeroU16),
}

/// The aliases we assigned on this connection. Policy: give each new topic the next free
/// alias until the client's maximum is used up, then send full topics for new ones.
/// Nothing is allocated for a client that allows no aliases (every 3.x client, most 5.0
/// ones): every connected session holds this, and it is one pointer.
#[derive(Debug, Default)]
pub(crate) struct OutboundAliases(Option<Box<Bound>>);

/// The aliases of a client that allows some.
#[derive(Debug)]
struct Bound {
    /// The client's Topic Alias Maximum (not 0).
    maximum: u16,
    /// Topic → alias announced on this connection.
    topics: HashMap<TopicName, NonZeroU16>,
}

impl OutboundAliases {
    pub(crate) fn new(maximum: u16) -> Self {
        Self((maximum > 0).then(|| {
            Box::new(Bound {
                maximum,
                topics: HashMap::new(),
            })
        }))
    }

    /// How to name `topic` in the next PUBLISH.
    pub(crate) fn lookup(&self, topic: &TopicName) -> OutboundTopic {
        let Some(bound) = self.0.as_deref() else {
            return OutboundTopic::Full;
        };
        if let Some(alias) = bound.topics.get(topic) {
            return OutboundTopic::Alias(*alias);
        }
        // topics.len() < maximum ≤ u16::MAX, so the conversion and the + 1 cannot overflow.
        match u16::try_from(bound.topics.len() + 1)
            .ok()
            .filter(|n| *n <= bound.maximum)
            .and_then(NonZeroU16::new)
        {
            Some(alias) => OutboundTopic::Bind(alias),
            None => OutboundTopic::Full,
        }
    }

    /// Records a binding announced in a PUBLISH that was really sent (only bindings
    /// [`OutboundAliases::lookup`] offered, so the client allows aliases).
    pub(crate) fn bind(&mut self, topic: TopicName, alias: NonZeroU16) {
        if let Some(bound) = &mut self.0 {
            bound.topics.insert(topic, alias);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TopicName {
        TopicName::new(s).unwrap()
    }

    fn a(n: u16) -> NonZeroU16 {
        NonZeroU16::new(n).unwrap()
    }

    #[test]
    fn inbound_binds_then_resolves_empty_topic() {
        let mut aliases = InboundAliases::default();
        assert_eq!(aliases.resolve(t("a/b"), a(3), 5), Ok(t("a/b")));
        assert_eq!(aliases.resolve(TopicName::empty(), a(3), 5), Ok(t("a/b")));
        assert_eq!(aliases.resolve(t("c"), a(3), 5), Ok(t("c")));
        assert_eq!(aliases.resolve(TopicName::empty(), a(3), 5), Ok(t("c")));
    }

    #[test]
    fn mqtt_3_3_2_9_inbound_alias_above_maximum_is_refused() {
        let mut aliases = InboundAliases::default();
        assert_eq!(
            aliases.resolve(t("a"), a(6), 5),
            Err(AliasError::OutOfRange)
        );
        assert_eq!(
            aliases.resolve(TopicName::empty(), a(2), 5),
            Err(AliasError::Unknown)
        );
    }

    #[test]
    fn outbound_assigns_until_full() {
        let mut aliases = OutboundAliases::new(2);
        assert_eq!(aliases.lookup(&t("x")), OutboundTopic::Bind(a(1)));
        aliases.bind(t("x"), a(1));
        assert_eq!(aliases.lookup(&t("x")), OutboundTopic::Alias(a(1)));
        assert_eq!(aliases.lookup(&t("y")), OutboundTopic::Bind(a(2)));
        aliases.bind(t("y"), a(2));
        assert_eq!(aliases.lookup(&t("z")), OutboundTopic::Full);
        assert_eq!(OutboundAliases::new(0).lookup(&t("x")), OutboundTopic::Full);
    }
}
