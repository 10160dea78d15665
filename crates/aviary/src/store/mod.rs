//! Durable state: persistent sessions with their queued and in-flight QoS 1/2 messages,
//! the incoming QoS 2 packet ids awaiting PUBREL, retained messages, and the management
//! side's records.
//!
//! Code map:
//! * `record` — the serde records (the on-disk format) and [`StoreOp`], one change;
//! * `redb_store` — [`RedbStore`], the embedded redb implementation of both traits;
//! * `writer` — [`StoreWriter`], the one thread that applies [`StoreOp`]s with group commit
//!   and reports each commit's sequence number, so the shell can release the
//!   acknowledgements that waited for it;
//! * `coalesce` — drops what a commit's operations undo or overwrite themselves (message
//!   copies an online subscriber acknowledged before the commit, records written twice);
//! * `liveness` — whether anything stored depends on the last sign of life, which the
//!   writer then records while idle;
//! * `error` — [`StoreError`], worded for operators.
//!
//! The traits ([`SessionStore`], [`ManagementStore`]) are the seam a cluster backend
//! replaces: the broker task only sees the writer, and the writer only sees a
//! `SessionStore`. Sessions and retained messages share one trait because one batch of
//! operations (a publish that sets a retained message and queues it for sessions) commits
//! in one transaction.

mod adapter;
mod coalesce;
mod error;
mod gate;
mod liveness;
mod record;
mod records;
mod redb_store;
mod writer;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use adapter::{convert_ops, restore_from, Clock};
pub use error::StoreError;
pub use gate::CommitGate;
pub use record::{
    DeliveryRecord, DeliveryState, ExpiredCounts, LiveWillRecord, MessageRecord, SessionRecord,
    Snapshot, StoreOp, StoredDelivery, StoredSession, SubscriptionRecord, WallMillis, WillRecord,
};
pub use redb_store::{RedbManagement, RedbStore, FILE_NAME};
pub use writer::{Progress, StoreWriter, WriterGone};

/// The schema this build writes and reads. A store with a larger number is refused; one
/// with a smaller number is migrated at open (see `redb_store::MIGRATIONS`).
pub const SCHEMA_VERSION: u32 = 2;

/// `store.liveness_interval` by default: an idle store that holds a record a crash would
/// have to date records a sign of life this often (see `liveness.rs`).
pub const DEFAULT_LIVENESS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// `store.durability`: when acknowledgements may leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// PUBACK / PUBREC (and every other packet of the same pass) wait until the commit
    /// holding the message is on disk (fsync). One fsync per group commit.
    #[default]
    Immediate,
    /// Acknowledgements still wait for their commit, but commits do not wait for the disk,
    /// which is synced when the writer is idle (50 ms without work) and at least once a
    /// second. A crash may lose about the last second of acknowledged messages. (Waiting
    /// for the commit paces publishers by the store and keeps them from running ahead of
    /// their subscribers.)
    Relaxed,
}

/// Whether a commit waits for the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// Durable when `commit` returns.
    Now,
    /// Written, made durable by the next [`Fsync::Now`] commit.
    Deferred,
}

/// Durable broker state: sessions, their messages and the retained messages.
pub trait SessionStore: Send + 'static {
    /// Loads everything at startup, removing from disk what expired while the broker was
    /// down (`now` is the wall clock).
    fn load(&mut self, now: WallMillis) -> Result<Snapshot, StoreError>;

    /// Applies `ops` in order, in one transaction.
    fn commit(&mut self, ops: &[StoreOp], fsync: Fsync) -> Result<(), StoreError>;
}

/// The kinds of management records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// Management API keys.
    ApiKey,
    /// Built-in users (username, argon2id hash).
    User,
    /// Authorization policies.
    Policy,
    /// External authenticators (JWT, JWKS, HTTP).
    Authenticator,
    /// Registered CA certificates.
    CaCertificate,
    /// Device certificates and their status.
    DeviceCertificate,
    /// Per-device identities and keys.
    DeviceIdentity,
    /// Listeners (enabled, allow-lists).
    Listener,
    /// The plan's limits.
    PlanLimits,
}

impl RecordKind {
    /// The stable name used as the key prefix on disk (never change one).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiKey => "api_key",
            Self::User => "user",
            Self::Policy => "policy",
            Self::Authenticator => "authenticator",
            Self::CaCertificate => "ca_certificate",
            Self::DeviceCertificate => "device_certificate",
            Self::DeviceIdentity => "device_identity",
            Self::Listener => "listener",
            Self::PlanLimits => "plan_limits",
        }
    }
}

/// Typed records of the management side (users, policies, certificates, listeners, plan
/// limits), by kind and id. Each call is its own durable transaction; calls block on disk
/// I/O, so async callers use `spawn_blocking`.
pub trait ManagementStore: Send + Sync {
    /// Stores (or replaces) the encoded record `kind`/`id`.
    fn put_bytes(&self, kind: RecordKind, id: &str, value: &[u8]) -> Result<(), StoreError>;
    /// The encoded record `kind`/`id`, if any.
    fn get_bytes(&self, kind: RecordKind, id: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every record of `kind`, ordered by id.
    fn list_bytes(&self, kind: RecordKind) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Deletes `kind`/`id`; true if it existed.
    fn delete(&self, kind: RecordKind, id: &str) -> Result<bool, StoreError>;
    /// The error for a record that does not decode as the type asked for.
    fn decode_error(&self, kind: RecordKind, id: &str, error: String) -> StoreError;

    /// Stores a typed record (postcard-encoded).
    fn put<T: Serialize>(&self, kind: RecordKind, id: &str, value: &T) -> Result<(), StoreError>
    where
        Self: Sized,
    {
        let bytes = postcard::to_stdvec(value)
            .map_err(|e| self.decode_error(kind, id, format!("cannot encode: {e}")))?;
        self.put_bytes(kind, id, &bytes)
    }

    /// A typed record, if any.
    fn get<T: DeserializeOwned>(&self, kind: RecordKind, id: &str) -> Result<Option<T>, StoreError>
    where
        Self: Sized,
    {
        self.get_bytes(kind, id)?
            .map(|bytes| {
                postcard::from_bytes(&bytes).map_err(|e| self.decode_error(kind, id, e.to_string()))
            })
            .transpose()
    }

    /// Every typed record of `kind`, ordered by id.
    fn list<T: DeserializeOwned>(&self, kind: RecordKind) -> Result<Vec<(String, T)>, StoreError>
    where
        Self: Sized,
    {
        self.list_bytes(kind)?
            .into_iter()
            .map(|(id, bytes)| {
                let value = postcard::from_bytes(&bytes)
                    .map_err(|e| self.decode_error(kind, &id, e.to_string()))?;
                Ok((id, value))
            })
            .collect()
    }
}

/// The store file inside `data_dir`.
pub fn store_path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

/// Creates `data_dir` if needed and opens the store in it.
pub fn open_in(data_dir: &Path) -> Result<RedbStore, StoreError> {
    let path = store_path(data_dir);
    std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Unreadable {
        path: path.clone(),
        source,
    })?;
    RedbStore::open(&path)
}

/// Milliseconds since the Unix epoch of a wall-clock time (0 before the epoch).
pub fn wall_millis(time: std::time::SystemTime) -> WallMillis {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The store as opened at start: the broker rebuilt from it, its writer, and the
/// management records in the same file.
pub(crate) struct Opened {
    /// The broker, with persistence on and the stored state restored.
    pub(crate) broker: aviary_core::Broker,
    /// The writer thread, for the broker task.
    pub(crate) writer: StoreWriter,
    /// The management side's records.
    pub(crate) management: RedbManagement,
}

/// Opens the store in `data_dir` (created if missing), loads it, and builds the broker
/// from what it holds, before any connection is accepted.
pub(crate) async fn open_broker(
    data_dir: &Path,
    mut broker_config: aviary_core::BrokerConfig,
    settings: &crate::config::StoreConfig,
) -> Result<Opened, StoreError> {
    let data_dir = data_dir.to_owned();
    let path = store_path(&data_dir);
    let loaded = tokio::task::spawn_blocking(move || {
        let mut store = open_in(&data_dir)?;
        let snapshot = store.load(wall_millis(std::time::SystemTime::now()))?;
        // After the load, which removed what expired while the broker was down.
        store.compact_if_sparse()?;
        Ok::<_, StoreError>((store, snapshot))
    })
    .await
    .map_err(|e| StoreError::Damaged {
        path: path.clone(),
        detail: format!("loading stopped: {e}"),
    })?;
    let (store, snapshot) = loaded?;
    let management = store.management();
    let expired = snapshot.expired;
    let sessions = snapshot.sessions.len();
    let retained = snapshot.retained.len();
    let clock = Clock::new(tokio::time::Instant::now().into_std());
    let restore = restore_from(snapshot, &clock, &path)?;
    broker_config.persistence = true;
    let mut broker = aviary_core::Broker::new(broker_config);
    broker.restore(restore, clock.instant);
    tracing::info!(
        path = %path.display(),
        sessions,
        retained,
        expired_sessions = expired.sessions,
        expired_messages = expired.deliveries,
        expired_retained = expired.retained,
        "store loaded"
    );
    let writer = StoreWriter::spawn(
        Box::new(store),
        settings.durability,
        settings.liveness_interval,
    )
    .map_err(|source| StoreError::Unreadable {
        path: path.clone(),
        source,
    })?;
    Ok(Opened {
        broker,
        writer,
        management,
    })
}
