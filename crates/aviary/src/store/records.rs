//! The management side's [`Records`] seam on the store: every management record (API
//! keys, listeners, plan limits, security) survives restarts in the same redb file as the
//! sessions.

use crate::records::{RecordError, RecordKind as Kind, Records};

use super::{ManagementStore, RecordKind, RedbManagement};

/// The store's kind for a management record kind (their on-disk names never change).
fn kind(kind: Kind) -> RecordKind {
    match kind {
        Kind::ApiKey => RecordKind::ApiKey,
        Kind::Listener => RecordKind::Listener,
        Kind::PlanLimits => RecordKind::PlanLimits,
        Kind::User => RecordKind::User,
        Kind::AuthorizationPolicy => RecordKind::Policy,
        Kind::DeviceIdentity => RecordKind::DeviceIdentity,
        Kind::CaCertificate => RecordKind::CaCertificate,
        Kind::DeviceCertificate => RecordKind::DeviceCertificate,
        Kind::Authenticator => RecordKind::Authenticator,
    }
}

fn backend(e: super::StoreError) -> RecordError {
    RecordError::Backend(e.to_string())
}

impl Records for RedbManagement {
    fn put_bytes(&self, k: Kind, id: &str, value: Vec<u8>) -> Result<(), RecordError> {
        ManagementStore::put_bytes(self, kind(k), id, &value).map_err(backend)
    }

    fn list_bytes(&self, k: Kind) -> Result<Vec<(String, Vec<u8>)>, RecordError> {
        ManagementStore::list_bytes(self, kind(k)).map_err(backend)
    }

    fn delete(&self, k: Kind, id: &str) -> Result<bool, RecordError> {
        ManagementStore::delete(self, kind(k), id).map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn management_records_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = super::super::open_in(dir.path()).unwrap();
            let records: &dyn Records = &store.management();
            crate::records::put(records, Kind::PlanLimits, "plan", &vec![1u32, 2]).unwrap();
            crate::records::put(records, Kind::ApiKey, "k1", &"hash").unwrap();
            assert!(records.delete(Kind::ApiKey, "k1").unwrap());
        }
        let store = super::super::open_in(dir.path()).unwrap();
        let records: &dyn Records = &store.management();
        let limits: Vec<(String, Vec<u32>)> =
            crate::records::list(records, Kind::PlanLimits).unwrap();
        assert_eq!(limits, vec![("plan".to_owned(), vec![1, 2])]);
        assert!(records.list_bytes(Kind::ApiKey).unwrap().is_empty());
    }
}
