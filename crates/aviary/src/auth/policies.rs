//! The live authorization policies: an immutable [`PolicySet`] behind an `ArcSwap`, read
//! without locking by the broker task on every operation and replaced whole on every
//! change (writers are serialised by a mutex). Because the broker evaluates per operation,
//! a change applies to open connections at once.

use std::sync::{Arc, Mutex};

use crate::records::Persist;
use arc_swap::ArcSwap;
use aviary_codec::QoS;
use aviary_core::authz::{
    Action, Authorizer, Cidr, Conditions, Effect, Identity, PatternError, Policy, PolicySet,
    Request, ResourcePattern, Wildcard,
};

/// Most policies (each operation may walk all of them).
pub const MAX_POLICIES: usize = 1000;

/// Why a policy change was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("policy id must be 1 to 128 characters of letters, digits, '-', '_' or '.'")]
    BadId,
    #[error("policy {0:?} already exists")]
    Exists(String),
    #[error("no policy {0:?}")]
    NotFound(String),
    #[error("a policy needs at least one action")]
    NoAction,
    #[error("unknown action {0:?}: expected connect, publish or subscribe")]
    BadAction(String),
    #[error("unknown effect {0:?}: expected allow or deny")]
    BadEffect(String),
    #[error("qos must be 0, 1 or 2")]
    BadQos,
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// The change could not be stored (it was not made).
    #[error("{0}")]
    Store(String),
    #[error("at most {MAX_POLICIES} policies")]
    TooMany,
}

/// A policy as the API and the config file spell it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyDoc {
    pub id: String,
    #[serde(default)]
    pub priority: i32,
    /// "allow" or "deny".
    pub effect: String,
    /// "connect", "publish", "subscribe".
    pub actions: Vec<String>,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub client_ids: Vec<String>,
    #[serde(default)]
    pub usernames: Vec<String>,
    #[serde(default)]
    pub source_cidrs: Vec<String>,
    #[serde(default)]
    pub qos: Vec<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain: Option<bool>,
}

impl PolicyDoc {
    /// Parses into the core's policy (every pattern checked).
    pub fn parse(&self) -> Result<Policy, PolicyError> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 128
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !id_ok {
            return Err(PolicyError::BadId);
        }
        let effect = match self.effect.as_str() {
            "allow" => Effect::Allow,
            "deny" => Effect::Deny,
            other => return Err(PolicyError::BadEffect(other.to_owned())),
        };
        if self.actions.is_empty() {
            return Err(PolicyError::NoAction);
        }
        let actions = self
            .actions
            .iter()
            .map(|a| match a.as_str() {
                "connect" => Ok(Action::Connect),
                "publish" => Ok(Action::Publish),
                "subscribe" => Ok(Action::Subscribe),
                other => Err(PolicyError::BadAction(other.to_owned())),
            })
            .collect::<Result<_, _>>()?;
        let qos = self
            .qos
            .iter()
            .map(|q| QoS::from_bits(*q).ok_or(PolicyError::BadQos))
            .collect::<Result<_, _>>()?;
        Ok(Policy {
            id: self.id.clone(),
            priority: self.priority,
            effect,
            actions,
            resources: self
                .resources
                .iter()
                .map(|r| ResourcePattern::new(r))
                .collect::<Result<_, _>>()?,
            conditions: Conditions {
                client_ids: self.client_ids.iter().map(|w| Wildcard::new(w)).collect(),
                usernames: self.usernames.iter().map(|w| Wildcard::new(w)).collect(),
                source_cidrs: self
                    .source_cidrs
                    .iter()
                    .map(|c| Cidr::new(c))
                    .collect::<Result<_, _>>()?,
                qos,
                retain: self.retain,
            },
        })
    }
}

/// The policies in force, with their documents (as given, for the API).
#[derive(Debug)]
pub struct PolicyStore {
    /// What the broker evaluates.
    live: ArcSwap<PolicySet>,
    /// Documents by id (the source of `live`); the mutex serialises changes.
    docs: Mutex<Vec<PolicyDoc>>,
    /// The configured default (`None`: allow with no policies, deny with any).
    default: Option<Effect>,
}

impl PolicyStore {
    pub fn new(default: Option<Effect>) -> Self {
        Self {
            live: ArcSwap::from_pointee(PolicySet::new(Vec::new(), default)),
            docs: Mutex::default(),
            default,
        }
    }

    pub fn list(&self) -> Vec<PolicyDoc> {
        let mut docs = self.lock().clone();
        docs.sort_by(|a, b| a.priority.cmp(&b.priority).then_with(|| a.id.cmp(&b.id)));
        docs
    }

    pub fn get(&self, id: &str) -> Option<PolicyDoc> {
        self.lock().iter().find(|d| d.id == id).cloned()
    }

    pub fn create(&self, doc: PolicyDoc) -> Result<(), PolicyError> {
        self.create_stored(doc, &|_| Ok(()))
    }

    /// [`Self::create`], stored by `persist` before it applies. The documents' lock is held
    /// across the write: only management changes take it (checks read the published set).
    pub(crate) fn create_stored(
        &self,
        doc: PolicyDoc,
        persist: Persist<'_, PolicyDoc>,
    ) -> Result<(), PolicyError> {
        doc.parse()?;
        let mut docs = self.lock();
        if docs.iter().any(|d| d.id == doc.id) {
            return Err(PolicyError::Exists(doc.id));
        }
        if docs.len() >= MAX_POLICIES {
            return Err(PolicyError::TooMany);
        }
        persist(Some(&doc)).map_err(PolicyError::Store)?;
        docs.push(doc);
        self.publish(&docs)
    }

    pub fn replace(&self, doc: PolicyDoc) -> Result<(), PolicyError> {
        self.replace_stored(doc, &|_| Ok(()))
    }

    /// [`Self::replace`], stored by `persist` before it applies.
    pub(crate) fn replace_stored(
        &self,
        doc: PolicyDoc,
        persist: Persist<'_, PolicyDoc>,
    ) -> Result<(), PolicyError> {
        doc.parse()?;
        let mut docs = self.lock();
        let Some(at) = docs.iter().position(|d| d.id == doc.id) else {
            return Err(PolicyError::NotFound(doc.id));
        };
        persist(Some(&doc)).map_err(PolicyError::Store)?;
        docs[at] = doc;
        self.publish(&docs)
    }

    pub fn delete(&self, id: &str) -> Result<(), PolicyError> {
        self.delete_stored(id, &|_| Ok(()))
    }

    /// [`Self::delete`], the record deleted by `persist(None)` first.
    pub(crate) fn delete_stored(
        &self,
        id: &str,
        persist: Persist<'_, PolicyDoc>,
    ) -> Result<(), PolicyError> {
        let mut docs = self.lock();
        if !docs.iter().any(|d| d.id == id) {
            return Err(PolicyError::NotFound(id.to_owned()));
        }
        persist(None).map_err(PolicyError::Store)?;
        docs.retain(|d| d.id != id);
        self.publish(&docs)
    }

    /// Builds the new set and swaps it in (every doc parsed before, so this cannot fail
    /// halfway).
    fn publish(&self, docs: &[PolicyDoc]) -> Result<(), PolicyError> {
        let policies = docs
            .iter()
            .map(PolicyDoc::parse)
            .collect::<Result<_, _>>()?;
        self.live
            .store(Arc::new(PolicySet::new(policies, self.default)));
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PolicyDoc>> {
        // Changes are whole-vector replacements under the lock: still consistent if poisoned.
        self.docs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Authorizer for PolicyStore {
    fn authorize(&self, identity: &Identity<'_>, request: &Request<'_>) -> Effect {
        self.live.load().evaluate(identity, request)
    }
}
