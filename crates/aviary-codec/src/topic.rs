//! Topic names (what PUBLISH carries) and topic filters (what SUBSCRIBE carries), as types
//! that can only hold valid values [MQTT-4.7]. Both are cheap to clone (`Arc<str>`).

use std::fmt;
use std::sync::Arc;

/// Why a string is not a valid topic name or filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic is empty")]
    Empty,
    #[error("topic name contains a wildcard")]
    WildcardInName,
    #[error("'#' must be the last level and alone in it")]
    MisplacedMultiLevelWildcard,
    #[error("'+' must be alone in its level")]
    MisplacedSingleLevelWildcard,
    #[error("topic contains U+0000")]
    NulCharacter,
    #[error("topic longer than 65,535 bytes")]
    TooLong,
    #[error("shared subscription must be $share/{{group}}/{{filter}} with a non-empty group without wildcards")]
    BadSharedSubscription,
}

/// A topic name: UTF-8, no wildcards, no U+0000 [MQTT-4.7.3-1, MQTT-3.3.2-2].
///
/// The one exception to "non-empty": a 5.0 PUBLISH that uses a topic alias may carry an
/// empty name ([`TopicName::empty`]); the receiver replaces it from its alias table.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(Arc<str>);

impl TopicName {
    /// Parses a topic name.
    pub fn new(name: &str) -> Result<Self, TopicError> {
        if name.is_empty() {
            return Err(TopicError::Empty);
        }
        if name.len() > usize::from(u16::MAX) {
            return Err(TopicError::TooLong);
        }
        // NUL, '+' and '#' are ASCII, so a byte scan is exact on UTF-8; one pass over the
        // bytes for all three, without an early exit so that it vectorises (this runs for
        // every PUBLISH decoded).
        let special = name
            .bytes()
            .fold(false, |any, b| any | (b == 0) | (b == b'+') | (b == b'#'));
        if special {
            // A NUL anywhere is reported before a wildcard, as the two checks did before.
            return Err(if name.as_bytes().contains(&0) {
                TopicError::NulCharacter
            } else {
                TopicError::WildcardInName
            });
        }
        Ok(Self(name.into()))
    }

    /// The empty name of a 5.0 PUBLISH whose topic is given by a topic alias.
    pub fn empty() -> Self {
        Self("".into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the name starts with `$` (such topics are not matched by filters starting with
    /// a wildcard [MQTT-4.7.2-1]).
    pub fn is_dollar(&self) -> bool {
        self.0.starts_with('$')
    }

    /// The number of topic levels (one more than the `/` separators).
    pub fn level_count(&self) -> usize {
        self.0.bytes().filter(|&b| b == b'/').count() + 1
    }

    /// The topic levels, split on `/`.
    pub fn levels(&self) -> std::str::Split<'_, char> {
        self.0.split('/')
    }
}

/// A topic filter: UTF-8, `+` alone in its level, `#` alone in the last level, no U+0000
/// [MQTT-4.7.1-1, MQTT-4.7.1-2, MQTT-4.7.1-3]. A shared subscription `$share/{group}/{filter}`
/// is a valid filter whose [`TopicFilter::shared`] is `Some`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter(Arc<str>);

/// The parts of a shared subscription filter `$share/{group}/{filter}` [MQTT-4.8.2].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedFilter<'a> {
    /// The share name: non-empty, no `/`, `+` or `#` [MQTT-4.8.2-1, MQTT-4.8.2-2].
    pub group: &'a str,
    /// The filter the members subscribe to.
    pub filter: &'a str,
}

const SHARE_PREFIX: &str = "$share/";

impl TopicFilter {
    /// Parses a topic filter, including the shared-subscription form.
    pub fn new(filter: &str) -> Result<Self, TopicError> {
        if filter.is_empty() {
            return Err(TopicError::Empty);
        }
        check_common(filter)?;
        let plain = match filter.strip_prefix(SHARE_PREFIX) {
            Some(rest) => {
                let (group, inner) = rest
                    .split_once('/')
                    .ok_or(TopicError::BadSharedSubscription)?;
                if group.is_empty() || group.contains(['+', '#']) || inner.is_empty() {
                    return Err(TopicError::BadSharedSubscription);
                }
                inner
            }
            None if filter == "$share" => return Err(TopicError::BadSharedSubscription),
            None => filter,
        };
        check_filter_levels(plain)?;
        Ok(Self(filter.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The group and inner filter when this is a shared subscription.
    pub fn shared(&self) -> Option<SharedFilter<'_>> {
        let rest = self.0.strip_prefix(SHARE_PREFIX)?;
        let (group, filter) = rest.split_once('/')?;
        Some(SharedFilter { group, filter })
    }

    /// The filter that is matched against topic names: the inner filter of a shared
    /// subscription, otherwise the whole filter.
    pub fn match_filter(&self) -> &str {
        self.shared().map_or(&self.0, |s| s.filter)
    }

    /// Whether the filter (its matching part) contains `+` or `#`.
    pub fn has_wildcards(&self) -> bool {
        self.match_filter().contains(['+', '#'])
    }

    /// Whether `topic` matches this filter, with the `$` rule [MQTT-4.7.2-1]: a filter
    /// starting with a wildcard does not match a topic starting with `$`.
    pub fn matches(&self, topic: &TopicName) -> bool {
        topic_matches(self.match_filter(), topic.as_str())
    }
}

/// Whether a valid filter (not shared) matches a valid topic name: a straight reading of
/// [MQTT-4.7], level by level. The subscription index and the retained store use tries; this
/// is the reference they are tested against.
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match level {
            "#" => return true,
            "+" => {
                if topic_levels.next().is_none() {
                    return false;
                }
            }
            exact => {
                if topic_levels.next() != Some(exact) {
                    return false;
                }
            }
        }
    }
    topic_levels.next().is_none()
}

fn check_common(s: &str) -> Result<(), TopicError> {
    if s.len() > usize::from(u16::MAX) {
        return Err(TopicError::TooLong);
    }
    if s.contains('\0') {
        return Err(TopicError::NulCharacter);
    }
    Ok(())
}

fn check_filter_levels(filter: &str) -> Result<(), TopicError> {
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(TopicError::MisplacedMultiLevelWildcard);
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::MisplacedSingleLevelWildcard);
        }
    }
    Ok(())
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_match(filter: &str, topic: &str, expected: bool) {
        let f = TopicFilter::new(filter).unwrap();
        let t = TopicName::new(topic).unwrap();
        assert_eq!(f.matches(&t), expected, "{filter} vs {topic}");
    }

    #[test]
    fn mqtt_4_7_matching() {
        check_match("a/b", "a/b", true);
        check_match("a/+", "a/b", true);
        check_match("a/+", "a/b/c", false);
        check_match("a/#", "a", true);
        check_match("a/#", "a/b/c", true);
        check_match("#", "a/b", true);
        check_match("+/+", "/a", true);
        check_match("+", "/a", false);
        check_match("a/+/c", "a//c", true);
        check_match("$share/g/a/+", "a/b", true);
    }

    #[test]
    fn topic_name_validation_and_levels() {
        assert_eq!(TopicName::new(""), Err(TopicError::Empty));
        assert_eq!(TopicName::new("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(TopicName::new("#"), Err(TopicError::WildcardInName));
        assert_eq!(TopicName::new("a\0b"), Err(TopicError::NulCharacter));
        assert_eq!(TopicName::new("a/#\0"), Err(TopicError::NulCharacter));
        assert_eq!(
            TopicName::new(&"a".repeat(70_000)),
            Err(TopicError::TooLong)
        );
        let many = "/".repeat(8 * 300 + 3);
        for (name, levels) in [
            ("a", 1),
            ("a/b", 2),
            ("/a", 2),
            ("a//c/", 4),
            ("ü/€", 2),
            ("////////", 9),
            ("abcdefg/", 2),
            ("/bcdefgh/jklmnop/r", 4),
            ("\u{7f}/\u{80}\u{ff}.o/\u{2f2f}/xxxxxxxxxxxxxxxxxxx/", 5),
            (many.as_str(), 8 * 300 + 4),
        ] {
            let topic = TopicName::new(name).unwrap();
            assert_eq!(topic.level_count(), levels, "{name}");
            assert_eq!(topic.level_count(), topic.levels().count(), "{name}");
            assert_eq!(
                topic.level_count(),
                name.bytes().filter(|&b| b == b'/').count() + 1,
                "{name}"
            );
        }
    }

    #[test]
    fn mqtt_4_7_2_1_dollar_topics_not_matched_by_leading_wildcards() {
        check_match("#", "$SYS/x", false);
        check_match("+/x", "$SYS/x", false);
        check_match("$SYS/#", "$SYS/x", true);
    }

    #[test]
    fn mqtt_4_7_1_filter_validation() {
        assert!(TopicFilter::new("a/#/b").is_err());
        assert!(TopicFilter::new("a#").is_err());
        assert!(TopicFilter::new("a/b+").is_err());
        assert!(TopicFilter::new("").is_err());
        assert!(TopicFilter::new("$share/g").is_err());
        assert!(TopicFilter::new("$share//a").is_err());
        assert!(TopicFilter::new("$share/g+/a").is_err());
        assert!(TopicFilter::new("$share/g/").is_err());
        assert!(TopicFilter::new("a/\0").is_err());
        assert!(TopicName::new("a/+").is_err());
        assert!(TopicName::new("a/#").is_err());
        assert_eq!(
            TopicFilter::new("$share/g/a/#").unwrap().shared(),
            Some(SharedFilter {
                group: "g",
                filter: "a/#"
            })
        );
    }
}
