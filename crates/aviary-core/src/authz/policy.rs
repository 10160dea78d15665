//! Priority-ordered allow/deny policies. A [`PolicySet`] holds them sorted; for a request
//! the first policy (lowest priority number) whose action, resources and conditions all
//! match decides. When none matches, the set's default decides (deny whenever the set
//! has any policy, unless configured otherwise).
//!
//! System topics (`$SYS/...`, `$events/...`) are evaluated the same way, with two
//! narrowings once the set has any policy: an allow covers them only through a resource
//! that names `$...` as its first level ([`ResourcePattern::may_allow`]; an allow with
//! no resources, i.e. all topics, does not either), and when no policy matches they are
//! denied even under a configured default of allow. With no policy at all everything is
//! allowed, as for every other topic (the broker's open start).

use std::sync::Arc;

use aviary_codec::QoS;

use super::pattern::{is_system_topic, Cidr, ResourcePattern, Wildcard};
use super::{Authorizer, Identity, Request};

/// What a policy (or the default) decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Effect {
    Allow,
    Deny,
}

/// The operations a policy can be about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Connect,
    Publish,
    Subscribe,
}

/// Extra conditions; every one given must hold (an empty list means "any").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conditions {
    /// The client id matches one of these wildcards.
    pub client_ids: Vec<Wildcard>,
    /// The username matches one of these wildcards (a connection without one never does).
    pub usernames: Vec<Wildcard>,
    /// The peer address is inside one of these blocks.
    pub source_cidrs: Vec<Cidr>,
    /// The QoS of the PUBLISH or SUBSCRIBE is one of these (ignored for connect).
    pub qos: Vec<QoS>,
    /// The RETAIN flag of the PUBLISH is this (ignored for connect and subscribe).
    pub retain: Option<bool>,
}

/// One allow or deny rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Unique name, chosen by the operator (API path segment).
    pub id: String,
    /// Lower numbers are evaluated first; equal priorities keep their id order.
    pub priority: i32,
    /// Allow or deny when the policy matches.
    pub effect: Effect,
    /// The actions the policy is about (at least one).
    pub actions: Vec<Action>,
    /// Topic filters the policy covers for publish and subscribe; empty means all topics.
    /// Not consulted for connect.
    pub resources: Vec<ResourcePattern>,
    /// Further conditions on the connection and the message.
    pub conditions: Conditions,
}

impl Policy {
    /// Whether this policy applies to `request` by `identity`.
    pub fn matches(&self, identity: &Identity<'_>, request: &Request<'_>) -> bool {
        if !self.actions.contains(&request.action()) {
            return false;
        }
        let c = &self.conditions;
        if !c.client_ids.is_empty() && !c.client_ids.iter().any(|w| w.matches(identity.client_id)) {
            return false;
        }
        if !c.usernames.is_empty() {
            let Some(name) = identity.principal.username.as_deref() else {
                return false;
            };
            if !c.usernames.iter().any(|w| w.matches(name)) {
                return false;
            }
        }
        if !c.source_cidrs.is_empty()
            && !c
                .source_cidrs
                .iter()
                .any(|b| b.contains(identity.peer.ip()))
        {
            return false;
        }
        match request {
            Request::Connect => true,
            Request::Publish { topic, qos, retain } => {
                (c.qos.is_empty() || c.qos.contains(qos))
                    && c.retain.is_none_or(|r| r == *retain)
                    && self.covers(topic.as_str(), |r| {
                        r.matches_topic(topic.as_str(), identity)
                    })
            }
            Request::Subscribe { filter, qos } => {
                (c.qos.is_empty() || c.qos.contains(qos))
                    && self.covers(filter.match_filter(), |r| {
                        r.covers_filter(filter.match_filter(), identity)
                    })
            }
        }
    }

    /// Whether the resources cover `topic` (a topic or a filter) by `matches`, with the
    /// narrower rule for allowing system topics.
    fn covers(&self, topic: &str, matches: impl Fn(&ResourcePattern) -> bool) -> bool {
        match self.effect {
            Effect::Deny => self.resources.is_empty() || self.resources.iter().any(matches),
            Effect::Allow if self.resources.is_empty() => !is_system_topic(topic),
            Effect::Allow => self
                .resources
                .iter()
                .any(|r| r.may_allow(topic) && matches(r)),
        }
    }
}

/// An immutable, sorted set of policies with its default. Cheap to share (`Arc`); a
/// change builds a new set and swaps it in.
#[derive(Clone, Debug)]
pub struct PolicySet {
    /// Sorted by (priority, id).
    policies: Arc<[Policy]>,
    /// The decision when no policy matches.
    default: Effect,
}

impl PolicySet {
    /// A set with `policies` (sorted here) and an explicit default; `None` means the usual
    /// default: allow when there are no policies, deny as soon as there is one.
    pub fn new(mut policies: Vec<Policy>, default: Option<Effect>) -> Self {
        policies.sort_by(|a, b| a.priority.cmp(&b.priority).then_with(|| a.id.cmp(&b.id)));
        let default = default.unwrap_or(if policies.is_empty() {
            Effect::Allow
        } else {
            Effect::Deny
        });
        Self {
            policies: policies.into(),
            default,
        }
    }

    /// The policies in evaluation order.
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// The decision when no policy matches.
    pub fn default_effect(&self) -> Effect {
        self.default
    }

    /// The first matching policy decides; else the default (deny for system topics once
    /// there is any policy).
    pub fn evaluate(&self, identity: &Identity<'_>, request: &Request<'_>) -> Effect {
        if let Some(policy) = self.policies.iter().find(|p| p.matches(identity, request)) {
            return policy.effect;
        }
        let system = match request {
            Request::Connect => false,
            Request::Publish { topic, .. } => is_system_topic(topic.as_str()),
            Request::Subscribe { filter, .. } => is_system_topic(filter.match_filter()),
        };
        if system && !self.policies.is_empty() {
            Effect::Deny
        } else {
            self.default
        }
    }
}

impl Default for PolicySet {
    fn default() -> Self {
        Self::new(Vec::new(), None)
    }
}

impl Authorizer for PolicySet {
    fn authorize(&self, identity: &Identity<'_>, request: &Request<'_>) -> Effect {
        self.evaluate(identity, request)
    }
}
