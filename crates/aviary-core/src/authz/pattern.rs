//! The patterns policies are written in: resource filters with `${clientid}` and
//! `${username}` placeholders ([`ResourcePattern`]), client id / username wildcards
//! ([`Wildcard`]) and address blocks ([`Cidr`]). Each is parsed once, when a policy is
//! created; matching allocates nothing.
//!
//! Resource wildcards match every topic, `$` topics included (unlike subscription
//! matching [MQTT-4.7.2-1]): a deny on `#` must also deny `$SYS/...`. Allowing is
//! narrower: see [`ResourcePattern::may_allow`].

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::Identity;

/// Why a pattern was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// A resource filter breaks the topic filter rules (`#` not last, `+` inside a level).
    #[error("invalid resource filter {0:?}: `#` must be a whole last level and `+` a whole level")]
    Resource(String),
    /// A placeholder other than `${clientid}` and `${username}`.
    #[error("unknown placeholder in {0:?}: only ${{clientid}} and ${{username}} are known")]
    Placeholder(String),
    /// Not an address or an address/prefix.
    #[error("invalid CIDR block {0:?}")]
    Cidr(String),
}

/// A topic filter in a policy or a grant; a level may hold placeholders.
#[derive(Clone, PartialEq, Eq)]
pub struct ResourcePattern {
    /// As written (shown back by the API).
    source: String,
    /// Parsed levels.
    levels: Vec<Level>,
}

/// One level of a resource pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Level {
    /// Exactly this text.
    Literal(String),
    /// `+`: any one level.
    Plus,
    /// `#`: this level and everything below (also the parent level itself).
    Hash,
    /// Text with placeholders, e.g. `dev-${clientid}`.
    Template(Vec<Piece>),
}

/// A piece of a templated level.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    ClientId,
    Username,
}

impl ResourcePattern {
    pub fn new(source: &str) -> Result<Self, PatternError> {
        let mut levels = Vec::new();
        let mut parts = source.split('/').peekable();
        while let Some(level) = parts.next() {
            let parsed = match level {
                "#" if parts.peek().is_none() => Level::Hash,
                "+" => Level::Plus,
                _ if level.contains(['#', '+']) => {
                    return Err(PatternError::Resource(source.to_owned()))
                }
                _ if level.contains("${") => Level::Template(template(level, source)?),
                _ => Level::Literal(level.to_owned()),
            };
            levels.push(parsed);
        }
        Ok(Self {
            source: source.to_owned(),
            levels,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether a topic name matches the pattern for this identity.
    pub fn matches_topic(&self, topic: &str, identity: &Identity<'_>) -> bool {
        self.covers_filter(topic, identity)
    }

    /// Whether an allow on this pattern may grant `topic_or_filter`. A system topic (first
    /// level starting with `$`: `$SYS/...`, `$events/...`) is granted only by a pattern
    /// that names its first level literally (`$SYS/#`, `$events/+`): a client allowed
    /// `#` for its own data does not thereby see every client's connect events (choice;
    /// a deny on `#` still denies them, see the module doc).
    pub fn may_allow(&self, topic_or_filter: &str) -> bool {
        !is_system_topic(topic_or_filter)
            || matches!(self.levels.first(), Some(Level::Literal(text)) if text.starts_with('$'))
    }

    /// Whether every topic that `filter` (a valid topic filter, not shared) can match is
    /// matched by this pattern: `a/#` covers `a/+/b`, `+` covers `x` but not `#`. A topic
    /// name is the special case without wildcards.
    pub fn covers_filter(&self, filter: &str, identity: &Identity<'_>) -> bool {
        let mut requested = filter.split('/');
        for level in &self.levels {
            let next = requested.next();
            match level {
                Level::Hash => return true,
                Level::Plus => match next {
                    None | Some("#") => return false,
                    Some(_) => {}
                },
                Level::Literal(text) => {
                    if next != Some(text.as_str()) {
                        return false;
                    }
                }
                Level::Template(pieces) => match next {
                    Some(actual) if matches_template(pieces, actual, identity) => {}
                    _ => return false,
                },
            }
        }
        requested.next().is_none()
    }
}

/// Whether a topic or filter is a system topic (its first level starts with `$`).
pub(crate) fn is_system_topic(topic_or_filter: &str) -> bool {
    topic_or_filter.starts_with('$')
}

/// Splits a level into text and placeholders.
fn template(level: &str, source: &str) -> Result<Vec<Piece>, PatternError> {
    let mut pieces = Vec::new();
    let mut rest = level;
    while let Some(start) = rest.find("${") {
        if start > 0 {
            pieces.push(Piece::Text(rest[..start].to_owned()));
        }
        let after = &rest[start..];
        let (piece, len) = if after.starts_with("${clientid}") {
            (Piece::ClientId, "${clientid}".len())
        } else if after.starts_with("${username}") {
            (Piece::Username, "${username}".len())
        } else {
            return Err(PatternError::Placeholder(source.to_owned()));
        };
        pieces.push(piece);
        rest = &after[len..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_owned()));
    }
    Ok(pieces)
}

/// Whether `actual` (one level of a topic or filter) equals the template filled in for
/// this identity. A value holding `/`, `+` or `#`, or a missing username, matches
/// nothing: a placeholder never widens a pattern.
fn matches_template(pieces: &[Piece], actual: &str, identity: &Identity<'_>) -> bool {
    let mut rest = actual;
    for piece in pieces {
        let text = match piece {
            Piece::Text(text) => text.as_str(),
            Piece::ClientId => identity.client_id,
            Piece::Username => match identity.principal.username.as_deref() {
                Some(name) => name,
                None => return false,
            },
        };
        if !matches!(piece, Piece::Text(_)) && (text.is_empty() || text.contains(['/', '+', '#'])) {
            return false;
        }
        match rest.strip_prefix(text) {
            Some(after) => rest = after,
            None => return false,
        }
    }
    rest.is_empty()
}

impl fmt::Debug for ResourcePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl FromStr for ResourcePattern {
    type Err = PatternError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// A client id or username pattern: `*` any run of characters, `?` one character,
/// everything else literal.
#[derive(Clone, PartialEq, Eq)]
pub struct Wildcard(String);

impl Wildcard {
    pub fn new(pattern: &str) -> Self {
        Self(pattern.to_owned())
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `text` matches. Iterative with one backtrack point (the last `*`), so
    /// linear-ish and without recursion on hostile patterns.
    pub fn matches(&self, text: &str) -> bool {
        let pattern: Vec<char> = self.0.chars().collect();
        let text: Vec<char> = text.chars().collect();
        let (mut p, mut t) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
                p += 1;
                t += 1;
            } else if p < pattern.len() && pattern[p] == '*' {
                star = Some((p, t));
                p += 1;
            } else if let Some((sp, st)) = star {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            } else {
                return false;
            }
        }
        pattern[p..].iter().all(|c| *c == '*')
    }
}

impl fmt::Debug for Wildcard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An address block: `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The network address (host bits as written).
    addr: IpAddr,
    /// Prefix length in bits.
    prefix: u8,
}

impl Cidr {
    pub fn new(text: &str) -> Result<Self, PatternError> {
        let err = || PatternError::Cidr(text.to_owned());
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix.parse::<u8>().map_err(|_| err())?)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| err())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(err());
        }
        Ok(Self { addr, prefix })
    }

    /// Whether `ip` is inside the block (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => same_prefix(
                u128::from(u32::from(net)),
                u128::from(u32::from(ip)),
                32,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                same_prefix(u128::from(net), u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

/// Whether the first `prefix` of `bits` bits of `a` and `b` agree.
fn same_prefix(a: u128, b: u128, bits: u32, prefix: u8) -> bool {
    let host_bits = bits - u32::from(prefix);
    if host_bits >= 128 {
        return true;
    }
    (a >> host_bits) == (b >> host_bits)
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}
