//! Management records (API keys, listeners, plan limits, users, policies, device
//! identities, CA and device certificates, authenticator settings): a small key-value seam of our
//! own, by kind and id, with JSON-encoded values. [`MemoryRecords`] keeps them for the
//! life of the process; the embedded store plugs in behind the same trait so they survive
//! a restart.

#[cfg(test)]
use std::collections::BTreeMap;
#[cfg(test)]
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The kinds of management record this module stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum RecordKind {
    /// Management API keys (hashed).
    ApiKey,
    /// Listeners created or changed through the API.
    Listener,
    /// The plan's limits.
    PlanLimits,
    /// Built-in users (argon2id hashes only).
    User,
    /// Authorization policies.
    AuthorizationPolicy,
    /// Device identities (with their keys: HMAC needs them).
    DeviceIdentity,
    /// Registered CA certificates with their status, JITP options and imported CRL.
    CaCertificate,
    /// Device certificates (registered by API or just in time) and their status.
    DeviceCertificate,
    /// Authenticator settings changed through the API (order, anonymous, JWT, HTTP).
    Authenticator,
}

/// Why a record could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecordError {
    /// The backend failed (disk, lock poisoned).
    #[error("record store: {0}")]
    Backend(String),
    /// A stored value does not decode as the type asked for.
    #[error("record {kind:?}/{id} does not decode: {message}")]
    Decode {
        kind: RecordKind,
        id: String,
        message: String,
    },
}

/// Typed records by kind and id. Calls may block on disk: async callers keep them short
/// (one record) or use `spawn_blocking`.
pub(crate) trait Records: Send + Sync {
    /// Stores (or replaces) the encoded record `kind`/`id`.
    fn put_bytes(&self, kind: RecordKind, id: &str, value: Vec<u8>) -> Result<(), RecordError>;
    /// Every record of `kind`, ordered by id.
    fn list_bytes(&self, kind: RecordKind) -> Result<Vec<(String, Vec<u8>)>, RecordError>;
    /// Deletes `kind`/`id`; whether it existed.
    fn delete(&self, kind: RecordKind, id: &str) -> Result<bool, RecordError>;
}

/// Writes a resource's record (`Some`) or deletes it (`None`); `Err` says why it could not.
/// Registries call it before a change applies (or after, for a withdrawal), outside their
/// locks, so a failed write leaves the live state as it was.
pub(crate) type Persist<'a, T> = &'a dyn Fn(Option<&T>) -> Result<(), String>;

/// Typed access on top of [`Records`].
pub(crate) fn put<T: Serialize>(
    records: &dyn Records,
    kind: RecordKind,
    id: &str,
    value: &T,
) -> Result<(), RecordError> {
    let bytes = serde_json::to_vec(value).map_err(|e| RecordError::Backend(e.to_string()))?;
    records.put_bytes(kind, id, bytes)
}

/// Every record of `kind`, decoded.
pub(crate) fn list<T: DeserializeOwned>(
    records: &dyn Records,
    kind: RecordKind,
) -> Result<Vec<(String, T)>, RecordError> {
    records
        .list_bytes(kind)?
        .into_iter()
        .map(|(id, bytes)| match serde_json::from_slice(&bytes) {
            Ok(value) => Ok((id, value)),
            Err(e) => Err(RecordError::Decode {
                kind,
                id,
                message: e.to_string(),
            }),
        })
        .collect()
}

/// Records in memory, for the life of the process. A `std::sync::Mutex` held for one map
/// operation, never across an `.await`. The server keeps its records in the store
/// (`store::RedbManagement`); this one serves tests.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct MemoryRecords {
    /// `(kind, id)` → encoded value.
    map: Mutex<RecordMap>,
}

/// Encoded records by kind and id.
#[cfg(test)]
type RecordMap = BTreeMap<(RecordKind, String), Vec<u8>>;

#[cfg(test)]
impl MemoryRecords {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, RecordMap>, RecordError> {
        self.map
            .lock()
            .map_err(|_| RecordError::Backend("lock poisoned".into()))
    }
}

#[cfg(test)]
impl Records for MemoryRecords {
    fn put_bytes(&self, kind: RecordKind, id: &str, value: Vec<u8>) -> Result<(), RecordError> {
        self.lock()?.insert((kind, id.to_owned()), value);
        Ok(())
    }

    fn list_bytes(&self, kind: RecordKind) -> Result<Vec<(String, Vec<u8>)>, RecordError> {
        Ok(self
            .lock()?
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|((_, id), v)| (id.clone(), v.clone()))
            .collect())
    }

    fn delete(&self, kind: RecordKind, id: &str) -> Result<bool, RecordError> {
        Ok(self.lock()?.remove(&(kind, id.to_owned())).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_records_round_trip_by_kind() {
        let records = MemoryRecords::default();
        put(&records, RecordKind::Listener, "b", &2u32).unwrap();
        put(&records, RecordKind::Listener, "a", &1u32).unwrap();
        put(&records, RecordKind::ApiKey, "a", &9u32).unwrap();
        let listed: Vec<(String, u32)> = list(&records, RecordKind::Listener).unwrap();
        assert_eq!(listed, vec![("a".into(), 1), ("b".into(), 2)]);
        assert!(records.delete(RecordKind::Listener, "a").unwrap());
        assert!(!records.delete(RecordKind::Listener, "a").unwrap());
        assert_eq!(list::<u32>(&records, RecordKind::ApiKey).unwrap().len(), 1);
    }
}
