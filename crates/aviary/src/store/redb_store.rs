//! The embedded store: one redb file (`<data_dir>/aviary.redb`), checksummed and
//! transactional. Values are postcard-encoded [`super::record`]s.
//!
//! Tables:
//! * `meta` — `"schema"` → the schema version ([`SCHEMA_VERSION`]);
//! * `sessions` — client id → [`SessionRecord`];
//! * `messages` — message id → [`MessageRecord`], written once and shared by every
//!   delivery of the message (reference counts live in memory, rebuilt at load);
//! * `deliveries` — (client id, delivery id) → [`DeliveryRecord`]; a range per session;
//! * `delivery_state` — (client id, delivery id) → [`DeliveryState::encode`], absent while
//!   queued, so a PUBLISH sent or a PUBREL sent writes four bytes, not the record;
//! * `incoming_qos2` — (client id, packet id) → ();
//! * `retained` — topic → [`MessageRecord`];
//! * `wills` — client id → [`LiveWillRecord`]: the will of each open connection that has
//!   one, so a crash publishes it at the next start (schema 2);
//! * `liveness` — `"alive_at"` → the wall-clock time of the last commit or heartbeat
//!   (written at least once a second while the broker runs): at the next start, sessions
//!   that were connected count their expiry, and open connections' wills their delay,
//!   from it (schema 2);
//! * `management` — (kind, id) → bytes of the management side's own records.
//!
//! A store written by an older schema is migrated at open, in the opening transaction,
//! by the steps of [`MIGRATIONS`] (version N to N + 1 each).
//!
//! Space is reused: deleting a delivery (once acknowledged) frees its pages and redb
//! allocates from freed pages first, so a steady flow does not grow the file. A file left
//! mostly empty (a backlog drained, sessions expired) is compacted at start
//! ([`RedbStore::compact_if_sparse`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::record::{
    DeliveryRecord, DeliveryState, ExpiredCounts, LiveWillRecord, MessageRecord, SessionRecord,
    Snapshot, StoreOp, StoredDelivery, StoredSession, WallMillis, WillRecord,
};
use super::{Fsync, ManagementStore, RecordKind, SessionStore, StoreError, SCHEMA_VERSION};

const META: TableDefinition<&str, u32> = TableDefinition::new("meta");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
const DELIVERIES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("deliveries");
const DELIVERY_STATE: TableDefinition<(&str, u64), u32> = TableDefinition::new("delivery_state");
const INCOMING_QOS2: TableDefinition<(&str, u16), ()> = TableDefinition::new("incoming_qos2");
const RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");
const MANAGEMENT: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("management");
const WILLS: TableDefinition<&str, &[u8]> = TableDefinition::new("wills");
const LIVENESS: TableDefinition<&str, u64> = TableDefinition::new("liveness");

/// The key of the last sign of life in `liveness`.
const ALIVE_KEY: &str = "alive_at";

/// One schema step: migrates an open store from version N to N + 1 inside the opening
/// transaction (which then records the new version, so a failed step changes nothing).
type Migration = fn(&redb::WriteTransaction) -> Result<(), Fail>;

/// `MIGRATIONS[i]` takes a store from version `i + 1` to `i + 2`. A schema bump appends
/// its step here; a released step is never changed.
const MIGRATIONS: [Migration; SCHEMA_VERSION as usize - 1] = [v1_to_v2];

/// Version 2 keeps the wills of open connections and the broker's last sign of life.
/// A version 1 store has neither: its connected sessions count from the start, as
/// version 1 did.
fn v1_to_v2(txn: &redb::WriteTransaction) -> Result<(), Fail> {
    txn.open_table(WILLS)?;
    txn.open_table(LIVENESS)?;
    Ok(())
}

/// A file at least this large…
const COMPACT_MIN_BYTES: u64 = 16 * 1024 * 1024;
/// …and with at most this share in use (1/n) is compacted at start.
const COMPACT_SPARSE_RATIO: u64 = 4;

/// The key of the schema version in `meta`.
const SCHEMA_KEY: &str = "schema";

/// Memory redb may use to cache pages (its default is 1 GiB).
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// The file name inside `data_dir`.
pub const FILE_NAME: &str = "aviary.redb";

/// A failure inside one store operation, before it is worded for the operator.
#[derive(Debug)]
enum Fail {
    /// From redb (I/O, checksum, transaction).
    Redb(redb::Error),
    /// A record that does not decode: `what` names the table and key.
    Decode { what: String, error: String },
    /// The schema version is newer than this build's.
    Newer(u32),
    /// The schema version is one no build wrote.
    BadVersion(u32),
    /// The file has tables but no schema record.
    Foreign,
}

impl Fail {
    /// Words the failure for the operator.
    fn into_store_error(self, path: &Path) -> StoreError {
        let path = path.to_owned();
        match self {
            Self::Redb(e) => StoreError::from_redb(&path, e),
            Self::Decode { what, error } => StoreError::Damaged {
                path,
                detail: format!("{what} does not decode: {error}"),
            },
            Self::Newer(found) => StoreError::Newer {
                path,
                found,
                supported: SCHEMA_VERSION,
            },
            Self::Foreign => StoreError::Foreign { path },
            Self::BadVersion(found) => StoreError::Damaged {
                path,
                detail: format!("schema version {found} does not exist"),
            },
        }
    }
}

impl<E: Into<redb::Error>> From<E> for Fail {
    fn from(error: E) -> Self {
        Self::Redb(error.into())
    }
}

/// The redb-backed store. The writer thread owns it; management calls share the database
/// through [`RedbStore::management`] (redb serialises write transactions).
pub struct RedbStore {
    /// The open database.
    db: Arc<Database>,
    /// The file, for error messages.
    path: PathBuf,
    /// Deliveries referring to each stored message: a message is deleted with its last
    /// delivery. Owned here because the writer is the only one who changes deliveries.
    refs: HashMap<u64, u32>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .field("messages", &self.refs.len())
            .finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens (or creates) the store file at `path`, verifying every page's checksum and
    /// the schema version. Never discards or rewrites existing data.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = open_database(path)?;
        let store = Self {
            db: Arc::new(db),
            path: path.to_owned(),
            refs: HashMap::new(),
        };
        store.check_schema().map_err(|f| store.error(f))?;
        Ok(store)
    }

    /// The management side's view of the same file.
    pub fn management(&self) -> RedbManagement {
        RedbManagement {
            db: self.db.clone(),
            path: self.path.clone(),
        }
    }

    /// Reads (or, for a file with no tables yet, writes) the schema version and makes sure
    /// every table exists.
    fn check_schema(&self) -> Result<(), Fail> {
        let txn = self.db.begin_write()?;
        let existing: Vec<String> = txn.list_tables()?.map(|t| t.name().to_owned()).collect();
        {
            let mut meta = txn.open_table(META)?;
            let found = meta.get(SCHEMA_KEY)?.map(|v| v.value());
            match found {
                Some(found) if found > SCHEMA_VERSION => return Err(Fail::Newer(found)),
                Some(SCHEMA_VERSION) => {}
                Some(found) => {
                    let steps = usize::try_from(found)
                        .ok()
                        .and_then(|n| MIGRATIONS.get(n.checked_sub(1)?..))
                        .ok_or(Fail::BadVersion(found))?;
                    for step in steps {
                        step(&txn)?;
                    }
                    meta.insert(SCHEMA_KEY, SCHEMA_VERSION)?;
                    tracing::info!(
                        path = %self.path.display(),
                        from = found,
                        to = SCHEMA_VERSION,
                        "store schema migrated"
                    );
                }
                None if existing.iter().all(|name| name == META.name()) => {
                    meta.insert(SCHEMA_KEY, SCHEMA_VERSION)?;
                }
                None => return Err(Fail::Foreign),
            }
            txn.open_table(SESSIONS)?;
            txn.open_table(MESSAGES)?;
            txn.open_table(DELIVERIES)?;
            txn.open_table(DELIVERY_STATE)?;
            txn.open_table(INCOMING_QOS2)?;
            txn.open_table(RETAINED)?;
            txn.open_table(MANAGEMENT)?;
            txn.open_table(WILLS)?;
            txn.open_table(LIVENESS)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Compacts the file when it is large and mostly free space (a drained backlog, many
    /// sessions gone): redb reuses freed pages but only compaction gives them back to the
    /// file system. Call before [`Self::management`] shares the database; returns whether
    /// it compacted.
    pub fn compact_if_sparse(&mut self) -> Result<bool, StoreError> {
        let len = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        if len < COMPACT_MIN_BYTES {
            return Ok(false);
        }
        let used = (|| -> Result<u64, Fail> {
            let txn = self.db.begin_write()?;
            let stats = txn.stats()?;
            let used = stats.allocated_pages() * stats.page_size() as u64;
            txn.abort()?;
            Ok(used)
        })()
        .map_err(|f| self.error(f))?;
        if used.saturating_mul(COMPACT_SPARSE_RATIO) > len {
            return Ok(false);
        }
        let path = self.path.clone();
        let Some(db) = Arc::get_mut(&mut self.db) else {
            return Ok(false);
        };
        db.compact().map_err(|e| StoreError::Write {
            path: path.clone(),
            detail: format!("compaction failed: {e}"),
        })?;
        let after = std::fs::metadata(&path).map_or(0, |m| m.len());
        tracing::info!(path = %path.display(), before = len, after, "store compacted");
        Ok(true)
    }

    /// Words a failure for the operator.
    fn error(&self, fail: Fail) -> StoreError {
        fail.into_store_error(&self.path)
    }

    fn load_inner(&mut self, now: WallMillis) -> Result<Snapshot, Fail> {
        let txn = self.db.begin_write()?;
        let mut expired = ExpiredCounts::default();
        let mut max_id = 0u64;

        // Retained messages: keep the live ones, delete the expired.
        let mut retained = Vec::new();
        {
            let mut table = txn.open_table(RETAINED)?;
            let mut doomed = Vec::new();
            for entry in table.iter()? {
                let (key, value) = entry?;
                let message: MessageRecord = decode(value.value(), || {
                    format!("retained message {:?}", key.value())
                })?;
                if message.is_expired(now) {
                    doomed.push(key.value().to_owned());
                } else {
                    retained.push(Arc::new(message));
                }
            }
            expired.retained = doomed.len();
            for topic in doomed {
                table.remove(topic.as_str())?;
            }
        }

        // The broker's last sign of life: what was connected then ended then.
        let alive_at = {
            let mut table = txn.open_table(LIVENESS)?;
            let alive_at = table.get(ALIVE_KEY)?.map_or(now, |v| v.value()).min(now);
            table.insert(ALIVE_KEY, now)?;
            alive_at
        };
        let mut live_wills: HashMap<String, LiveWillRecord> = HashMap::new();
        for entry in txn.open_table(WILLS)?.iter()? {
            let (key, value) = entry?;
            let client_id = key.value().to_owned();
            let mut will: LiveWillRecord =
                decode(value.value(), || format!("will of {client_id:?}"))?;
            // The connection ended at the last sign of life, unless an earlier start
            // decided already.
            let ended_at = *will.ended_at.get_or_insert(alive_at);
            will.message.received_at = ended_at;
            live_wills.insert(client_id, will);
        }

        // Sessions: those connected at the crash ended then; drop the expired ones with
        // everything hanging off them, keeping their wills to publish.
        let mut sessions: Vec<StoredSession> = Vec::new();
        let mut expired_ids = Vec::new();
        let mut changed: Vec<(String, SessionRecord)> = Vec::new();
        {
            let table = txn.open_table(SESSIONS)?;
            for entry in table.iter()? {
                let (key, value) = entry?;
                let client_id = key.value().to_owned();
                let mut session: SessionRecord =
                    decode(value.value(), || format!("session {client_id:?}"))?;
                let was_connected = session.expires_at.is_none();
                if was_connected && session.expiry_interval != u32::MAX {
                    let interval = u64::from(session.expiry_interval) * 1000;
                    session.expires_at = Some(alive_at.saturating_add(interval));
                }
                if let Some(live) = live_wills.remove(&client_id) {
                    // The connection's abnormal end: its will after the delay, or when the
                    // session ends if that is sooner [MQTT-3.1.3-9].
                    let ended_at = live.message.received_at;
                    let due = ended_at.saturating_add(u64::from(live.delay) * 1000);
                    let at = session.expires_at.map_or(due, |end| due.min(end));
                    session.will = Some(WillRecord {
                        at,
                        message: live.message,
                    });
                }
                if session.expires_at.is_some_and(|at| now > at) {
                    if let Some(will) = session.will.take() {
                        let mut message = will.message;
                        let ended_at = will.at.min(now);
                        message.received_at = ended_at;
                        let will = LiveWillRecord {
                            delay: 0,
                            ended_at: Some(ended_at),
                            message,
                        };
                        live_wills.insert(client_id.clone(), will);
                    }
                    expired_ids.push(client_id);
                } else {
                    if was_connected {
                        changed.push((client_id.clone(), session.clone()));
                    }
                    sessions.push(StoredSession {
                        client_id,
                        session,
                        deliveries: Vec::new(),
                        incoming_qos2: Vec::new(),
                    });
                }
            }
        }
        expired.sessions = expired_ids.len();
        for client_id in &expired_ids {
            delete_session(&txn, &mut HashMap::new(), client_id)?;
        }
        {
            // Written back, so a second crash does not move these times again.
            let mut table = txn.open_table(SESSIONS)?;
            for (client_id, session) in &changed {
                table.insert(client_id.as_str(), encode(session).as_slice())?;
            }
        }
        // What is left are wills to publish at once; they stay on disk until published.
        let mut wills = Vec::with_capacity(live_wills.len());
        {
            let mut table = txn.open_table(WILLS)?;
            let stored: Vec<String> = table
                .iter()?
                .map(|e| e.map(|(k, _)| k.value().to_owned()))
                .collect::<Result<_, _>>()?;
            for client_id in stored {
                if !live_wills.contains_key(&client_id) {
                    table.remove(client_id.as_str())?;
                }
            }
            let mut ids: Vec<String> = live_wills.keys().cloned().collect();
            ids.sort_unstable();
            for client_id in ids {
                let Some(live) = live_wills.remove(&client_id) else {
                    continue;
                };
                table.insert(client_id.as_str(), encode(&live).as_slice())?;
                wills.push((client_id, Arc::new(live.message)));
            }
        }
        // Sorted by client id (the table's order), so lookups can binary search.
        let position = |sessions: &[StoredSession], id: &str| {
            sessions
                .binary_search_by(|s| s.client_id.as_str().cmp(id))
                .ok()
        };

        // Messages, then the deliveries that refer to them.
        let mut messages: HashMap<u64, Arc<MessageRecord>> = HashMap::new();
        {
            let table = txn.open_table(MESSAGES)?;
            for entry in table.iter()? {
                let (key, value) = entry?;
                let id = key.value();
                max_id = max_id.max(id);
                let message: MessageRecord = decode(value.value(), || format!("message {id}"))?;
                messages.insert(id, Arc::new(message));
            }
        }
        let states: HashMap<(String, u64), u32> = {
            let table = txn.open_table(DELIVERY_STATE)?;
            let mut states = HashMap::new();
            for entry in table.iter()? {
                let (key, value) = entry?;
                let (client_id, id) = key.value();
                states.insert((client_id.to_owned(), id), value.value());
            }
            states
        };
        let mut doomed: Vec<(String, u64)> = Vec::new();
        {
            let table = txn.open_table(DELIVERIES)?;
            for entry in table.iter()? {
                let (key, value) = entry?;
                let (client_id, delivery_id) = key.value();
                max_id = max_id.max(delivery_id);
                let what = || format!("delivery {delivery_id} of {client_id:?}");
                let delivery: DeliveryRecord = decode(value.value(), what)?;
                let raw = states
                    .get(&(client_id.to_owned(), delivery_id))
                    .copied()
                    .unwrap_or(0);
                let state = DeliveryState::decode(raw).ok_or_else(|| Fail::Decode {
                    what: format!("state of {}", what()),
                    error: format!("unknown value {raw:#x}"),
                })?;
                let message = messages.get(&delivery.message_id).cloned();
                let slot = position(&sessions, client_id);
                match (slot, message) {
                    // A queued copy of a message that expired while we were down is not
                    // sent [MQTT-3.3.2-5]; one in flight is resent as the core would.
                    (Some(slot), Some(message))
                        if !(state == DeliveryState::Queued && message.is_expired(now)) =>
                    {
                        *self.refs.entry(delivery.message_id).or_insert(0) += 1;
                        sessions[slot].deliveries.push(StoredDelivery {
                            delivery_id,
                            delivery,
                            state,
                            message,
                        });
                    }
                    (Some(_), Some(_)) => {
                        expired.deliveries += 1;
                        doomed.push((client_id.to_owned(), delivery_id));
                    }
                    // Orphans (a session deleted in a batch that did not reach its
                    // deliveries cannot happen; this only guards against it).
                    _ => doomed.push((client_id.to_owned(), delivery_id)),
                }
            }
        }
        {
            let mut deliveries = txn.open_table(DELIVERIES)?;
            let mut states = txn.open_table(DELIVERY_STATE)?;
            for (client_id, id) in &doomed {
                deliveries.remove((client_id.as_str(), *id))?;
                states.remove((client_id.as_str(), *id))?;
            }
        }
        {
            // Messages no delivery refers to any more.
            let mut table = txn.open_table(MESSAGES)?;
            for id in messages.keys() {
                if !self.refs.contains_key(id) {
                    table.remove(*id)?;
                }
            }
        }
        {
            let table = txn.open_table(INCOMING_QOS2)?;
            for entry in table.iter()? {
                let (key, _) = entry?;
                let (client_id, packet_id) = key.value();
                if let Some(slot) = position(&sessions, client_id) {
                    sessions[slot].incoming_qos2.push(packet_id);
                }
            }
        }
        for session in &mut sessions {
            session.deliveries.sort_by_key(|d| d.delivery_id);
        }
        txn.commit()?;
        Ok(Snapshot {
            sessions,
            retained,
            wills,
            next_id: max_id + 1,
            expired,
        })
    }

    fn commit_inner(&mut self, ops: &[StoreOp], fsync: Fsync) -> Result<(), Fail> {
        let mut txn = self.db.begin_write()?;
        if fsync == Fsync::Deferred {
            txn.set_durability(redb::Durability::None)?;
        }
        {
            let mut sessions = txn.open_table(SESSIONS)?;
            let mut messages = txn.open_table(MESSAGES)?;
            let mut deliveries = txn.open_table(DELIVERIES)?;
            let mut states = txn.open_table(DELIVERY_STATE)?;
            let mut qos2 = txn.open_table(INCOMING_QOS2)?;
            let mut retained = txn.open_table(RETAINED)?;
            let mut wills = txn.open_table(WILLS)?;
            txn.open_table(LIVENESS)?
                .insert(ALIVE_KEY, super::wall_millis(std::time::SystemTime::now()))?;
            for op in ops {
                match op {
                    StoreOp::PutSession { client_id, session } => {
                        sessions.insert(client_id.as_str(), encode(session).as_slice())?;
                    }
                    StoreOp::DeleteSession { client_id } => {
                        sessions.remove(client_id.as_str())?;
                        let range = (client_id.as_str(), 0)..=(client_id.as_str(), u64::MAX);
                        let mut gone = Vec::new();
                        for entry in deliveries.extract_from_if(range.clone(), |_, _| true)? {
                            let (_, value) = entry?;
                            gone.push(message_id_of(value.value()));
                        }
                        for id in gone.into_iter().flatten() {
                            release(&mut self.refs, &mut messages, id)?;
                        }
                        states.retain_in(range, |_, _| false)?;
                        let range = (client_id.as_str(), 0)..=(client_id.as_str(), u16::MAX);
                        qos2.retain_in(range, |_, _| false)?;
                    }
                    StoreOp::Deliver {
                        client_id,
                        delivery_id,
                        delivery,
                        state,
                        message,
                    } => {
                        let refs = self.refs.entry(delivery.message_id).or_insert(0);
                        if *refs == 0 {
                            messages.insert(delivery.message_id, encode(&**message).as_slice())?;
                        }
                        *refs += 1;
                        let key = (client_id.as_str(), *delivery_id);
                        deliveries.insert(key, encode(delivery).as_slice())?;
                        if *state != DeliveryState::Queued {
                            states.insert(key, state.encode())?;
                        }
                    }
                    StoreOp::SetDeliveryState {
                        client_id,
                        delivery_id,
                        state,
                    } => {
                        let key = (client_id.as_str(), *delivery_id);
                        if *state == DeliveryState::Queued {
                            states.remove(key)?;
                        } else {
                            states.insert(key, state.encode())?;
                        }
                    }
                    StoreOp::DeleteDelivery {
                        client_id,
                        delivery_id,
                    } => {
                        let key = (client_id.as_str(), *delivery_id);
                        let id = deliveries
                            .remove(key)?
                            .and_then(|v| message_id_of(v.value()));
                        states.remove(key)?;
                        if let Some(id) = id {
                            release(&mut self.refs, &mut messages, id)?;
                        }
                    }
                    StoreOp::Qos2Received {
                        client_id,
                        packet_id,
                    } => {
                        qos2.insert((client_id.as_str(), *packet_id), ())?;
                    }
                    StoreOp::Qos2Released {
                        client_id,
                        packet_id,
                    } => {
                        qos2.remove((client_id.as_str(), *packet_id))?;
                    }
                    StoreOp::PutRetained { message } => {
                        retained.insert(message.topic.as_str(), encode(&**message).as_slice())?;
                    }
                    StoreOp::DeleteRetained { topic } => {
                        retained.remove(topic.as_str())?;
                    }
                    StoreOp::PutWill { client_id, will } => {
                        wills.insert(client_id.as_str(), encode(will).as_slice())?;
                    }
                    StoreOp::DeleteWill { client_id } => {
                        wills.remove(client_id.as_str())?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Number of message bodies stored (for tests of space reuse).
    #[cfg(test)]
    pub(crate) fn stored_messages(&self) -> usize {
        self.refs.len()
    }
}

impl SessionStore for RedbStore {
    fn load(&mut self, now: WallMillis) -> Result<Snapshot, StoreError> {
        self.refs.clear();
        self.load_inner(now).map_err(|f| self.error(f))
    }

    fn commit(&mut self, ops: &[StoreOp], fsync: Fsync) -> Result<(), StoreError> {
        self.commit_inner(ops, fsync)
            .map_err(|fail| match self.error(fail) {
                StoreError::Damaged { path, detail } | StoreError::Write { path, detail } => {
                    StoreError::Write { path, detail }
                }
                other => other,
            })
    }
}

/// Opens the database file, turning every failure (a panic inside redb on a mangled file
/// included) into a [`StoreError`].
fn open_database(path: &Path) -> Result<Database, StoreError> {
    let opened = std::panic::catch_unwind(|| {
        redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            // Verify every page's checksum on open: a damaged file is refused with an error
            // rather than trusted.
            .set_check_integrity_on_open(true)
            .create(path)
    });
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(StoreError::from_redb(path, e.into())),
        Err(_) => Err(StoreError::Damaged {
            path: path.to_owned(),
            detail: "the file's structure is invalid".into(),
        }),
    }
}

/// Drops one reference to a message; the last one deletes it.
fn release(
    refs: &mut HashMap<u64, u32>,
    messages: &mut redb::Table<'_, u64, &[u8]>,
    id: u64,
) -> Result<(), Fail> {
    let Some(count) = refs.get_mut(&id) else {
        return Ok(());
    };
    *count -= 1;
    if *count == 0 {
        refs.remove(&id);
        messages.remove(id)?;
    }
    Ok(())
}

/// Deletes a session and everything hanging off it inside a load.
fn delete_session(
    txn: &redb::WriteTransaction,
    refs: &mut HashMap<u64, u32>,
    client_id: &str,
) -> Result<(), Fail> {
    txn.open_table(SESSIONS)?.remove(client_id)?;
    let range = (client_id, 0)..=(client_id, u64::MAX);
    let mut messages = txn.open_table(MESSAGES)?;
    let mut deliveries = txn.open_table(DELIVERIES)?;
    let mut gone = Vec::new();
    for entry in deliveries.extract_from_if(range.clone(), |_, _| true)? {
        let (_, value) = entry?;
        gone.push(message_id_of(value.value()));
    }
    for id in gone.into_iter().flatten() {
        release(refs, &mut messages, id)?;
    }
    txn.open_table(DELIVERY_STATE)?
        .retain_in(range, |_, _| false)?;
    txn.open_table(INCOMING_QOS2)?
        .retain_in((client_id, 0)..=(client_id, u16::MAX), |_, _| false)?;
    Ok(())
}

/// The message id at the start of an encoded [`DeliveryRecord`].
fn message_id_of(bytes: &[u8]) -> Option<u64> {
    postcard::from_bytes::<DeliveryRecord>(bytes)
        .ok()
        .map(|d| d.message_id)
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising our own records into a Vec cannot fail: every type is supported by
    // postcard and the buffer grows as needed.
    postcard::to_stdvec(value).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(bytes: &[u8], what: impl FnOnce() -> String) -> Result<T, Fail> {
    postcard::from_bytes(bytes).map_err(|e| Fail::Decode {
        what: what(),
        error: e.to_string(),
    })
}

/// The management side's records in the same file.
#[derive(Clone)]
pub struct RedbManagement {
    /// Shared with the writer; redb serialises write transactions.
    db: Arc<Database>,
    /// The file, for error messages.
    path: PathBuf,
}

impl std::fmt::Debug for RedbManagement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbManagement")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RedbManagement {
    fn error(&self, fail: Fail) -> StoreError {
        fail.into_store_error(&self.path)
    }

    fn write(
        &self,
        f: impl FnOnce(&mut redb::Table<'_, (&str, &str), &[u8]>) -> Result<bool, Fail>,
    ) -> Result<bool, StoreError> {
        let run = || -> Result<bool, Fail> {
            let txn = self.db.begin_write()?;
            let result = f(&mut txn.open_table(MANAGEMENT)?)?;
            txn.commit()?;
            Ok(result)
        };
        run().map_err(|f| self.error(f))
    }
}

impl ManagementStore for RedbManagement {
    fn put_bytes(&self, kind: RecordKind, id: &str, value: &[u8]) -> Result<(), StoreError> {
        self.write(|table| Ok(table.insert((kind.as_str(), id), value)?.is_some()))
            .map(|_| ())
    }

    fn get_bytes(&self, kind: RecordKind, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let run = || -> Result<Option<Vec<u8>>, Fail> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(MANAGEMENT)?;
            Ok(table.get((kind.as_str(), id))?.map(|v| v.value().to_vec()))
        };
        run().map_err(|f| self.error(f))
    }

    fn list_bytes(&self, kind: RecordKind) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let run = || -> Result<Vec<(String, Vec<u8>)>, Fail> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(MANAGEMENT)?;
            let kind = kind.as_str();
            let mut out = Vec::new();
            // Every id sorts at or after "" and before the next kind's records.
            for entry in table.range((kind, "")..)? {
                let (key, value) = entry?;
                let (k, id) = key.value();
                if k != kind {
                    break;
                }
                out.push((id.to_owned(), value.value().to_vec()));
            }
            Ok(out)
        };
        run().map_err(|f| self.error(f))
    }

    fn delete(&self, kind: RecordKind, id: &str) -> Result<bool, StoreError> {
        self.write(|table| Ok(table.remove((kind.as_str(), id))?.is_some()))
    }

    fn decode_error(&self, kind: RecordKind, id: &str, error: String) -> StoreError {
        self.error(Fail::Decode {
            what: format!("{} {id:?}", kind.as_str()),
            error,
        })
    }
}
