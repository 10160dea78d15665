//! Authorization: who a connection is ([`Principal`], [`Identity`]), what it asks to do
//! ([`Request`]) and the [`Authorizer`] the broker consults, synchronously, for every
//! CONNECT, every SUBSCRIBE filter and every PUBLISH.
//!
//! Authentication (checking passwords, tokens, certificates) is the shell's job and may do
//! I/O; its outcome reaches the broker as an [`Authentication`] with the CONNECT (see
//! [`crate::Broker::handle_connect_authenticated`]). Authorization is pure: an authorizer
//! looks at the identity and the request and answers at once, so the core stays sans-IO.
//! The broker asks again on every operation, so a changed authorizer (or a policy set
//! swapped behind one) applies to connections already open.
//!
//! * `policy` — priority-ordered allow/deny [`Policy`]s and the [`PolicySet`] that
//!   evaluates them;
//! * `pattern` — resource filters with `${clientid}`/`${username}` placeholders, client id
//!   wildcards, CIDR blocks.

mod pattern;
mod policy;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use aviary_codec::properties::UserProperty;
use aviary_codec::{QoS, TopicFilter, TopicName};

pub use pattern::{Cidr, PatternError, ResourcePattern, Wildcard};
pub use policy::{Action, Conditions, Effect, Policy, PolicySet};

/// Who a connection is, as its authenticator established it. Shared (`Arc`) by the
/// connection for its whole life.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Principal {
    /// The user name the connection authenticated as (from CONNECT or from the
    /// authenticator, e.g. a JWT subject), for `${username}` and username conditions.
    pub username: Option<Arc<str>>,
    /// The common name of the client certificate, if TLS with a client certificate.
    pub certificate_cn: Option<Arc<str>>,
    /// Which authenticator accepted the connection ("anonymous", "users", "jwt", …), for
    /// the management API and logs.
    pub authenticator: Arc<str>,
    /// Publish/subscribe permissions granted by the authenticator (JWT claims, the HTTP
    /// service's answer). When present they decide publish and subscribe alone.
    pub grants: Option<Grants>,
    /// User properties added to every message this connection publishes (device
    /// identity properties).
    pub properties: Vec<UserProperty>,
}

/// Permissions an authenticator granted: topic filters (placeholders allowed) the
/// connection may publish to and subscribe to; everything else is denied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    /// Topics matching one of these may be published to.
    pub publish: Vec<ResourcePattern>,
    /// Filters covered by one of these may be subscribed to.
    pub subscribe: Vec<ResourcePattern>,
}

/// The outcome of authentication, given to the broker with a CONNECT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authentication {
    /// Credentials accepted (or anonymous access allowed).
    Accepted(Arc<Principal>),
    /// Credentials refused; the CONNACK says why.
    Refused(AuthRefusal),
}

/// Why authentication refused a CONNECT; each maps to its CONNACK code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthRefusal {
    /// Wrong, missing, expired or malformed credentials: 5.0 0x86, 3.x 0x04.
    BadCredentials,
    /// Valid credentials without the right to connect: 5.0 0x87, 3.x 0x05.
    NotAuthorized,
    /// The authenticator could not decide (HTTP service unreachable): 5.0 0x88, 3.x 0x03.
    /// Never an acceptance.
    ServerUnavailable,
}

/// A connection as an authorizer sees it.
#[derive(Clone, Copy, Debug)]
pub struct Identity<'a> {
    /// The client identifier (assigned ones included).
    pub client_id: &'a str,
    /// The client's address.
    pub peer: SocketAddr,
    /// What authentication established.
    pub principal: &'a Principal,
}

/// What a connection asks to do.
#[derive(Clone, Copy, Debug)]
pub enum Request<'a> {
    /// Open the connection (after authentication accepted it).
    Connect,
    /// Publish a message (also checked for a will when it is published).
    Publish {
        topic: &'a TopicName,
        qos: QoS,
        retain: bool,
    },
    /// Subscribe to a filter (shared subscriptions: their topic filter part).
    Subscribe { filter: &'a TopicFilter, qos: QoS },
}

impl Request<'_> {
    /// The action this request needs.
    pub fn action(&self) -> Action {
        match self {
            Self::Connect => Action::Connect,
            Self::Publish { .. } => Action::Publish,
            Self::Subscribe { .. } => Action::Subscribe,
        }
    }
}

/// Decides requests. Called by the broker task for every operation: implementations must
/// be quick and must not block (no I/O).
pub trait Authorizer: Send + Sync + fmt::Debug {
    /// Whether `identity` may do `request`.
    fn authorize(&self, identity: &Identity<'_>, request: &Request<'_>) -> Effect;
}

/// Allows everything: the broker's authorizer until one is set (no policies configured).
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn authorize(&self, _: &Identity<'_>, _: &Request<'_>) -> Effect {
        Effect::Allow
    }
}

/// The decision for a request: the authenticator's grants when it gave any (for publish
/// and subscribe), else the authorizer's.
pub(crate) fn decide(
    authorizer: &dyn Authorizer,
    identity: &Identity<'_>,
    request: &Request<'_>,
) -> Effect {
    if let Some(grants) = &identity.principal.grants {
        let allowed = match request {
            Request::Connect => return authorizer.authorize(identity, request),
            // Grants are allows: system topics need a grant naming them.
            Request::Publish { topic, .. } => grants
                .publish
                .iter()
                .any(|p| p.may_allow(topic.as_str()) && p.matches_topic(topic.as_str(), identity)),
            Request::Subscribe { filter, .. } => grants.subscribe.iter().any(|p| {
                p.may_allow(filter.match_filter())
                    && p.covers_filter(filter.match_filter(), identity)
            }),
        };
        return if allowed { Effect::Allow } else { Effect::Deny };
    }
    authorizer.authorize(identity, request)
}
