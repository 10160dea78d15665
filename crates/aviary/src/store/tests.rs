//! Tests of the store: round trips through the file, load-time expiry, space reuse,
//! refusal of damaged / newer / foreign / unreadable stores, the writer's group commit.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::*;

/// A QoS 1 message on `topic` received at `at` (ms), with an optional expiry.
fn message(topic: &str, at: WallMillis, expiry: Option<u32>) -> Arc<MessageRecord> {
    Arc::new(MessageRecord {
        topic: topic.into(),
        payload: topic.as_bytes().to_vec(),
        qos: 1,
        retain: false,
        received_at: at,
        expiry_interval: expiry,
        publisher: Some("pub".into()),
        payload_format_indicator: Some(true),
        content_type: Some("text/plain".into()),
        response_topic: Some("reply".into()),
        correlation_data: Some(vec![1, 2, 3]),
        user_properties: vec![("k".into(), "v".into())],
    })
}

fn session(expires_at: Option<WallMillis>) -> SessionRecord {
    SessionRecord {
        expiry_interval: 3600,
        expires_at,
        subscriptions: vec![SubscriptionRecord {
            filter: "a/#".into(),
            qos: 2,
            no_local: true,
            retain_as_published: true,
            retain_handling: 1,
            identifier: Some(7),
        }],
        will: Some(WillRecord {
            at: 5_000,
            message: (*message("will", 1_000, None)).clone(),
        }),
    }
}

fn put_session(client_id: &str, expires_at: Option<WallMillis>) -> StoreOp {
    StoreOp::PutSession {
        client_id: client_id.into(),
        session: session(expires_at),
    }
}

fn deliver(client_id: &str, delivery_id: u64, message_id: u64, m: &Arc<MessageRecord>) -> StoreOp {
    StoreOp::Deliver {
        client_id: client_id.into(),
        delivery_id,
        delivery: DeliveryRecord {
            message_id,
            qos: 1,
            retain: false,
            subscription_ids: vec![7],
            shared: None,
        },
        state: DeliveryState::Queued,
        message: m.clone(),
    }
}

fn set_state(client_id: &str, delivery_id: u64, state: DeliveryState) -> StoreOp {
    StoreOp::SetDeliveryState {
        client_id: client_id.into(),
        delivery_id,
        state,
    }
}

fn done(client_id: &str, delivery_id: u64) -> StoreOp {
    StoreOp::DeleteDelivery {
        client_id: client_id.into(),
        delivery_id,
    }
}

/// Commits `ops`, closes the store and loads it again from the file at `now`.
fn commit_and_reload(dir: &std::path::Path, ops: &[StoreOp], now: WallMillis) -> Snapshot {
    {
        let mut store = open_in(dir).unwrap();
        store.load(0).unwrap();
        store.commit(ops, Fsync::Now).unwrap();
    }
    let mut store = open_in(dir).unwrap();
    store.load(now).unwrap()
}

#[test]
fn empty_store_loads_empty() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_in(&dir.path().join("nested/data")).unwrap();
    let snapshot = store.load(0).unwrap();
    assert_eq!(snapshot.sessions, vec![]);
    assert_eq!(snapshot.retained, vec![]);
    assert_eq!(snapshot.next_id, 1);
    assert!(dir.path().join("nested/data/aviary.redb").exists());
}

#[test]
fn sessions_deliveries_states_and_qos2_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = message("a/1", 1_000, None);
    let m2 = message("a/2", 1_000, None);
    let ops = [
        put_session("c1", None),
        deliver("c1", 10, 1, &m1),
        deliver("c1", 11, 2, &m2),
        set_state("c1", 10, DeliveryState::Released { packet_id: 4 }),
        StoreOp::Qos2Received {
            client_id: "c1".into(),
            packet_id: 9,
        },
        StoreOp::Qos2Received {
            client_id: "c1".into(),
            packet_id: 3,
        },
        StoreOp::Qos2Released {
            client_id: "c1".into(),
            packet_id: 3,
        },
        put_session("c2", None),
        // The same message for a second session: stored once.
        deliver("c2", 12, 1, &m1),
    ];
    let snapshot = commit_and_reload(dir.path(), &ops, 2_000);
    assert_eq!(snapshot.next_id, 13);
    assert_eq!(snapshot.sessions.len(), 2);
    let c1 = &snapshot.sessions[0];
    assert_eq!(c1.client_id, "c1");
    // Connected when the store was last written (no expiry time): ended at the last sign
    // of life (the load's `now` here, as the commit's wall clock is later), and written
    // back so.
    assert_eq!(c1.session, session(Some(2_000 + 3_600_000)));
    assert_eq!(c1.incoming_qos2, vec![9]);
    let ids: Vec<u64> = c1.deliveries.iter().map(|d| d.delivery_id).collect();
    assert_eq!(ids, [10, 11]);
    assert_eq!(
        c1.deliveries[0].state,
        DeliveryState::Released { packet_id: 4 }
    );
    assert_eq!(c1.deliveries[1].state, DeliveryState::Queued);
    assert_eq!(c1.deliveries[1].message, m2);
    assert_eq!(c1.deliveries[0].delivery.subscription_ids, [7]);
    let c2 = &snapshot.sessions[1];
    assert_eq!(c2.deliveries[0].message, m1);
}

#[test]
fn acknowledged_deliveries_and_deleted_sessions_are_gone_with_their_messages() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = message("a/1", 1_000, None);
    let m2 = message("a/2", 1_000, None);
    let mut store = open_in(dir.path()).unwrap();
    store.load(0).unwrap();
    store
        .commit(
            &[
                put_session("c1", None),
                put_session("c2", None),
                deliver("c1", 1, 100, &m1),
                deliver("c2", 2, 100, &m1),
                deliver("c2", 3, 101, &m2),
                StoreOp::Qos2Received {
                    client_id: "c2".into(),
                    packet_id: 1,
                },
            ],
            Fsync::Now,
        )
        .unwrap();
    assert_eq!(store.stored_messages(), 2);
    store
        .commit(
            &[
                done("c1", 1),
                StoreOp::DeleteSession {
                    client_id: "c2".into(),
                },
            ],
            Fsync::Now,
        )
        .unwrap();
    assert_eq!(
        store.stored_messages(),
        0,
        "last reference deletes the body"
    );
    drop(store);
    let mut store = open_in(dir.path()).unwrap();
    let snapshot = store.load(0).unwrap();
    assert_eq!(snapshot.sessions.len(), 1);
    assert!(snapshot.sessions[0].deliveries.is_empty());
    assert_eq!(store.stored_messages(), 0);
}

#[test]
fn deleting_an_unknown_delivery_or_session_is_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_in(dir.path()).unwrap();
    store.load(0).unwrap();
    store
        .commit(
            &[
                done("nobody", 5),
                StoreOp::DeleteSession {
                    client_id: "nobody".into(),
                },
                StoreOp::DeleteRetained { topic: "x".into() },
            ],
            Fsync::Now,
        )
        .unwrap();
}

#[test]
fn retained_messages_are_replaced_deleted_and_expire_while_down() {
    let dir = tempfile::tempdir().unwrap();
    let ops = [
        StoreOp::PutRetained {
            message: message("r/1", 1_000, None),
        },
        StoreOp::PutRetained {
            message: message("r/2", 1_000, Some(10)),
        },
        StoreOp::PutRetained {
            message: message("r/3", 1_000, None),
        },
        StoreOp::PutRetained {
            message: message("r/1", 2_000, None),
        },
        StoreOp::DeleteRetained {
            topic: "r/3".into(),
        },
    ];
    // 20 s later: r/2's 10 s expiry passed while the broker was down.
    let snapshot = commit_and_reload(dir.path(), &ops, 21_000);
    assert_eq!(snapshot.retained, vec![message("r/1", 2_000, None)]);
    assert_eq!(snapshot.expired.retained, 1);
    // And it is gone from the file, not just skipped.
    let mut store = open_in(dir.path()).unwrap();
    assert_eq!(store.load(0).unwrap().retained.len(), 1);
}

#[test]
fn session_expiry_counts_while_down_and_expired_sessions_leave_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let m = message("a/1", 1_000, None);
    let ops = [
        put_session("gone", Some(10_000)),
        deliver("gone", 1, 1, &m),
        put_session("kept", Some(50_000)),
        put_session("connected", None),
    ];
    let snapshot = commit_and_reload(dir.path(), &ops, 20_000);
    let ids: Vec<&str> = snapshot
        .sessions
        .iter()
        .map(|s| s.client_id.as_str())
        .collect();
    assert_eq!(ids, ["connected", "kept"]);
    assert_eq!(snapshot.expired.sessions, 1);
    let mut store = open_in(dir.path()).unwrap();
    let again = store.load(0).unwrap();
    assert_eq!(
        again.sessions.len(),
        2,
        "deleted from disk by the first load"
    );
    assert_eq!(store.stored_messages(), 0, "its message went with it");
}

#[test]
fn queued_messages_expire_while_down_but_in_flight_ones_are_resent() {
    let dir = tempfile::tempdir().unwrap();
    let short = message("a/short", 1_000, Some(5));
    let long = message("a/long", 1_000, Some(500));
    let ops = [
        put_session("c", None),
        deliver("c", 1, 1, &short),
        set_state("c", 1, DeliveryState::Sent { packet_id: 1 }),
        deliver("c", 2, 1, &short),
        deliver("c", 3, 2, &long),
    ];
    let snapshot = commit_and_reload(dir.path(), &ops, 10_000);
    let kept: Vec<(u64, DeliveryState)> = snapshot.sessions[0]
        .deliveries
        .iter()
        .map(|d| (d.delivery_id, d.state))
        .collect();
    assert_eq!(
        kept,
        [
            (1, DeliveryState::Sent { packet_id: 1 }),
            (3, DeliveryState::Queued)
        ]
    );
    assert_eq!(snapshot.expired.deliveries, 1);
}

#[test]
fn acknowledged_messages_free_space_for_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(dir.path());
    let mut store = open_in(dir.path()).unwrap();
    store.load(0).unwrap();
    store.commit(&[put_session("c", None)], Fsync::Now).unwrap();
    let payload = "x".repeat(2_000);
    let mut id = 0;
    // Round after round of 200 queued 2 kB messages, all acknowledged.
    let mut round = |store: &mut RedbStore| {
        let ops: Vec<StoreOp> = (0..200)
            .map(|_| {
                id += 1;
                deliver("c", id, id, &message(&format!("{payload}/{id}"), 0, None))
            })
            .collect();
        store.commit(&ops, Fsync::Now).unwrap();
        let acks: Vec<StoreOp> = (id - 199..=id).map(|i| done("c", i)).collect();
        store.commit(&acks, Fsync::Now).unwrap();
    };
    for _ in 0..5 {
        round(&mut store);
    }
    let warm = std::fs::metadata(&path).unwrap().len();
    for _ in 0..30 {
        round(&mut store);
    }
    let after = std::fs::metadata(&path).unwrap().len();
    // 30 more rounds wrote 12 MB of messages; freed pages were reused.
    assert!(after <= warm * 2, "grew from {warm} to {after} bytes");
    assert_eq!(store.stored_messages(), 0);
}

#[test]
fn newer_schema_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(dir.path());
    drop(open_in(dir.path()).unwrap());
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<&str, u32>::new("meta"))
            .unwrap()
            .insert("schema", 3)
            .unwrap();
        txn.commit().unwrap();
    }
    let err = open_in(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Newer { found: 3, .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "{} was written by a newer Aviary (schema 3, this build reads 2): upgrade Aviary \
             or point data_dir elsewhere",
            path.display()
        )
    );
}

#[test]
fn a_foreign_redb_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(dir.path());
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<u64, u64>::new("other"))
            .unwrap()
            .insert(1, 2)
            .unwrap();
        txn.commit().unwrap();
    }
    let err = open_in(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Foreign { .. }), "{err:?}");
    assert!(err.to_string().contains("not an Aviary store"), "{err}");
}

#[test]
fn damaged_file_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(dir.path());
    {
        let mut store = open_in(dir.path()).unwrap();
        store.load(0).unwrap();
        let ops: Vec<StoreOp> = (1..=50)
            .map(|i| StoreOp::PutRetained {
                message: message(&format!("r/{i}"), 0, None),
            })
            .collect();
        store.commit(&ops, Fsync::Now).unwrap();
    }
    // Flip bytes in every page after the header: checksums no longer match.
    let mut bytes = std::fs::read(&path).unwrap();
    for i in (4096..bytes.len()).step_by(512) {
        bytes[i] ^= 0x5a;
    }
    std::fs::write(&path, &bytes).unwrap();
    let err = open_in(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Damaged { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("is damaged"), "{text}");
    assert!(text.contains("restore it from a backup"), "{text}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "file untouched");
}

#[test]
fn garbage_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(dir.path());
    std::fs::write(&path, vec![0x42; 10_000]).unwrap();
    let err = open_in(dir.path()).unwrap_err();
    assert!(
        matches!(err, StoreError::Damaged { .. } | StoreError::Foreign { .. }),
        "{err:?}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), vec![0x42; 10_000]);
}

#[test]
fn unreadable_path_says_to_check_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    // data_dir is a file: the directory cannot be created.
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let err = open_in(&not_a_dir).unwrap_err();
    assert!(matches!(err, StoreError::Unreadable { .. }), "{err:?}");
    assert!(err.to_string().contains("check that data_dir"), "{err}");
}

#[test]
fn a_second_open_of_the_same_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open_in(dir.path()).unwrap();
    let err = open_in(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct User {
    name: String,
    hash: String,
}

#[test]
fn management_records_by_kind_and_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path()).unwrap();
    let m = store.management();
    let user = |n: &str| User {
        name: n.into(),
        hash: format!("argon2id${n}"),
    };
    m.put(RecordKind::User, "bob", &user("bob")).unwrap();
    m.put(RecordKind::User, "alice", &user("alice")).unwrap();
    m.put(RecordKind::Policy, "p1", &7u32).unwrap();
    m.put(RecordKind::PlanLimits, "plan", &(1u32, 2u32))
        .unwrap();
    assert_eq!(m.get(RecordKind::User, "bob").unwrap(), Some(user("bob")));
    assert_eq!(m.get::<User>(RecordKind::User, "carol").unwrap(), None);
    let users: Vec<(String, User)> = m.list(RecordKind::User).unwrap();
    assert_eq!(
        users,
        vec![("alice".into(), user("alice")), ("bob".into(), user("bob"))]
    );
    assert_eq!(
        m.list::<u32>(RecordKind::Policy).unwrap(),
        vec![("p1".into(), 7)]
    );
    assert!(m.delete(RecordKind::User, "bob").unwrap());
    assert!(!m.delete(RecordKind::User, "bob").unwrap());
    // A record read as the wrong type is an error naming it, not a silent default.
    let err = m.get::<User>(RecordKind::Policy, "p1").unwrap_err();
    assert!(err.to_string().contains("policy \"p1\""), "{err}");
    drop(m);
    drop(store);
    let store = open_in(dir.path()).unwrap();
    let users: Vec<(String, User)> = store.management().list(RecordKind::User).unwrap();
    assert_eq!(users, vec![("alice".into(), user("alice"))]);
}

/// A store that records what the writer asks of it.
#[derive(Default)]
struct Recorder {
    commits: Arc<std::sync::Mutex<Vec<(usize, Fsync)>>>,
}

impl SessionStore for Recorder {
    fn load(&mut self, _now: WallMillis) -> Result<Snapshot, StoreError> {
        Ok(Snapshot::default())
    }
    fn commit(&mut self, ops: &[StoreOp], fsync: Fsync) -> Result<(), StoreError> {
        // Slow enough that batches pile up behind a commit.
        std::thread::sleep(std::time::Duration::from_millis(20));
        self.commits.lock().unwrap().push((ops.len(), fsync));
        Ok(())
    }
}

/// Waits (30 s at most) until the writer reports progress that satisfies `done`.
async fn progress_until(
    watch: &mut tokio::sync::watch::Receiver<Progress>,
    done: impl FnMut(&Progress) -> bool,
) -> Progress {
    *tokio::time::timeout(std::time::Duration::from_secs(30), watch.wait_for(done))
        .await
        .expect("the writer reported nothing satisfying within 30 s")
        .expect("the writer is gone")
}

/// A writer over `store` with the default liveness interval.
fn spawn_writer(store: impl SessionStore + 'static, durability: Durability) -> StoreWriter {
    StoreWriter::spawn(Box::new(store), durability, DEFAULT_LIVENESS_INTERVAL).unwrap()
}

/// A writer in `immediate` mode over a redb store in `dir`, loaded as at startup.
fn writer_over_redb(dir: &std::path::Path) -> StoreWriter {
    let mut store = open_in(dir).unwrap();
    store.load(0).unwrap();
    spawn_writer(store, Durability::Immediate)
}

fn retained_op(i: u64) -> Vec<StoreOp> {
    vec![StoreOp::DeleteRetained {
        topic: format!("t/{i}"),
    }]
}

#[tokio::test]
async fn writer_groups_waiting_batches_into_one_commit_and_reports_each_seq() {
    let recorder = Recorder::default();
    let commits = recorder.commits.clone();
    let mut writer = spawn_writer(recorder, Durability::Immediate);
    let mut watch = writer.watch();
    for i in 1..=50 {
        assert_eq!(writer.submit(retained_op(i)).await.unwrap(), i);
    }
    // Every batch is reported committed, in order, in fewer commits than batches.
    progress_until(&mut watch, |p| p.committed == 50).await;
    let progress = writer.close().await.unwrap();
    assert_eq!(progress.ops, 50);
    assert_eq!(progress.committed, 50);
    assert!(!progress.failed);
    let commits = commits.lock().unwrap().clone();
    assert!(commits.len() < 50, "group commit: {commits:?}");
    assert!(commits.iter().all(|(_, f)| *f == Fsync::Now));
    assert_eq!(commits.iter().map(|(n, _)| n).sum::<usize>(), 50);
}

#[tokio::test]
async fn relaxed_writer_defers_syncs_and_syncs_when_idle_and_on_close() {
    let recorder = Recorder::default();
    let commits = recorder.commits.clone();
    let mut writer = spawn_writer(recorder, Durability::Relaxed);
    let mut watch = writer.watch();
    writer.submit(retained_op(1)).await.unwrap();
    progress_until(&mut watch, |p| p.syncs >= 1).await;
    writer.submit(retained_op(2)).await.unwrap();
    let progress = writer.close().await.unwrap();
    assert_eq!(progress.committed, 2);
    let commits = commits.lock().unwrap().clone();
    // Each batch written without a sync, then an empty syncing commit.
    assert_eq!(commits[0], (1, Fsync::Deferred));
    assert_eq!(commits[1], (0, Fsync::Now));
    assert_eq!(commits.last(), Some(&(0, Fsync::Now)));
    assert_eq!(
        progress.syncs as usize,
        commits.iter().filter(|c| c.1 == Fsync::Now).count()
    );
}

#[tokio::test]
async fn an_idle_writer_records_a_sign_of_life_only_while_a_stored_record_needs_one() {
    let recorder = Recorder::default();
    let commits = recorder.commits.clone();
    let mut writer = spawn_writer(recorder, Durability::Immediate);
    let mut watch = writer.watch();
    let idle = std::time::Duration::from_millis(2_500);
    // Clean sessions without wills store nothing that a crash would date: no heartbeat.
    writer.submit(retained_op(1)).await.unwrap();
    tokio::time::sleep(idle).await;
    assert_eq!(writer.progress().heartbeats, 0);
    assert_eq!(commits.lock().unwrap().len(), 1);

    // A connected session that expires once disconnected: heartbeats while idle.
    let connected = SessionRecord {
        expiry_interval: 60,
        expires_at: None,
        ..session(None)
    };
    writer
        .submit(vec![StoreOp::PutSession {
            client_id: "car".into(),
            session: connected.clone(),
        }])
        .await
        .unwrap();
    progress_until(&mut watch, |p| p.heartbeats >= 2).await;
    assert!(commits.lock().unwrap().contains(&(0, Fsync::Now)));

    // Disconnected (its expiry time is stored now): the heartbeats stop.
    writer
        .submit(vec![StoreOp::PutSession {
            client_id: "car".into(),
            session: SessionRecord {
                expires_at: Some(1_000),
                ..connected
            },
        }])
        .await
        .unwrap();
    progress_until(&mut watch, |p| p.committed == 3).await;
    let before = writer.progress().heartbeats;
    tokio::time::sleep(idle).await;
    assert_eq!(writer.progress().heartbeats, before);

    // The will of an open connection needs them too.
    writer.submit(vec![live_will("car", 0, 0)]).await.unwrap();
    progress_until(&mut watch, |p| p.heartbeats > before).await;
    writer.close().await.unwrap();
}

#[tokio::test]
async fn a_longer_liveness_interval_spaces_the_idle_writers_signs_of_life() {
    let recorder = Recorder::default();
    let interval = std::time::Duration::from_secs(3);
    let mut writer =
        StoreWriter::spawn(Box::new(recorder), Durability::Immediate, interval).unwrap();
    let mut watch = writer.watch();
    writer
        .submit(vec![StoreOp::PutSession {
            client_id: "car".into(),
            session: SessionRecord {
                expiry_interval: 60,
                expires_at: None,
                ..session(None)
            },
        }])
        .await
        .unwrap();
    progress_until(&mut watch, |p| p.committed == 1).await;
    // Half the interval: the default (1 s) would have recorded one already.
    tokio::time::sleep(interval / 2).await;
    assert_eq!(writer.progress().heartbeats, 0);
    progress_until(&mut watch, |p| p.heartbeats >= 1).await;
    writer.close().await.unwrap();
}

/// A store whose commits fail.
struct Failing;

impl SessionStore for Failing {
    fn load(&mut self, _now: WallMillis) -> Result<Snapshot, StoreError> {
        Ok(Snapshot::default())
    }
    fn commit(&mut self, _ops: &[StoreOp], _fsync: Fsync) -> Result<(), StoreError> {
        Err(StoreError::Write {
            path: "x".into(),
            detail: "disk full".into(),
        })
    }
}

#[tokio::test]
async fn a_failed_commit_is_reported_and_nothing_is_marked_committed() {
    let mut writer = spawn_writer(Failing, Durability::Immediate);
    let mut watch = writer.watch();
    writer.submit(retained_op(1)).await.unwrap();
    let progress = progress_until(&mut watch, |p| p.failed).await;
    assert_eq!(progress.committed, 0);
    assert!(writer.submit(retained_op(2)).await.is_err() || writer.progress().failed);
    let err = writer.close().await.unwrap_err();
    assert!(err.to_string().contains("disk full"), "{err}");
}

#[tokio::test]
async fn writer_over_redb_commits_what_a_reload_sees() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = writer_over_redb(dir.path());
    writer.submit(vec![put_session("c", None)]).await.unwrap();
    let m = message("a/b", 0, None);
    for i in 1..=20 {
        writer.submit(vec![deliver("c", i, i, &m)]).await.unwrap();
    }
    writer.submit(vec![done("c", 1)]).await.unwrap();
    let progress = writer.close().await.unwrap();
    assert_eq!(progress.committed, 22);
    let snapshot = open_in(dir.path()).unwrap().load(0).unwrap();
    assert_eq!(snapshot.sessions[0].deliveries.len(), 19);
}

/// A copy acknowledged before the commit that would store it is not written, and the
/// message's other copy, in the same commit, still gets the body it shares.
#[tokio::test]
async fn a_copy_finished_within_its_commit_is_not_written_and_its_twin_keeps_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = writer_over_redb(dir.path());
    let m = message("a/b", 0, None);
    // One batch, so one commit: "a" gets and acknowledges message 7, "b" gets it too.
    writer
        .submit(vec![
            put_session("a", None),
            put_session("b", None),
            deliver("a", 1, 7, &m),
            set_state("a", 1, DeliveryState::Sent { packet_id: 1 }),
            deliver("b", 2, 7, &m),
            done("a", 1),
        ])
        .await
        .unwrap();
    let progress = writer.close().await.unwrap();
    assert_eq!(
        (progress.committed, progress.elided, progress.ops),
        (1, 3, 3)
    );
    let snapshot = open_in(dir.path()).unwrap().load(0).unwrap();
    let deliveries = |client: &str| {
        let session = snapshot.sessions.iter().find(|s| s.client_id == client);
        session.expect("session loaded").deliveries.clone()
    };
    assert!(deliveries("a").is_empty());
    let b = deliveries("b");
    assert_eq!(b.len(), 1);
    assert_eq!((b[0].delivery_id, b[0].delivery.message_id), (2, 7));
    assert_eq!(*b[0].message, *m, "the shared body was written by b's copy");
}

/// The copies a batch creates and a later batch finishes, both waiting behind a slow
/// commit, are not written: the next commit has nothing left to do, so it is skipped.
#[tokio::test]
async fn copies_finished_while_waiting_for_the_writer_are_not_written() {
    let recorder = Recorder::default();
    let commits = recorder.commits.clone();
    let mut writer = spawn_writer(recorder, Durability::Immediate);
    let mut watch = writer.watch();
    let m = message("a/b", 0, None);
    // The writer takes this one at once and spends 20 ms on it (should it not have taken
    // it yet, all three batches make one commit: the same outcome).
    writer.submit(retained_op(1)).await.unwrap();
    let created: Vec<StoreOp> = (1..=5).map(|i| deliver("s", i, i, &m)).collect();
    let finished: Vec<StoreOp> = (1..=5).map(|i| done("s", i)).collect();
    writer.submit(created).await.unwrap();
    let last = writer.submit(finished).await.unwrap();
    let progress = progress_until(&mut watch, |p| p.committed == last).await;
    assert_eq!((progress.elided, progress.ops), (10, 1), "{progress:?}");
    assert_eq!(*commits.lock().unwrap(), vec![(1, Fsync::Now)]);
    writer.close().await.unwrap();
}

/// Records written twice in one commit (through the writer, which coalesces) load as the
/// last write left them.
#[tokio::test]
async fn records_written_twice_in_one_commit_load_as_the_last_write_left_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = writer_over_redb(dir.path());
    // Disconnected by then (a session connected at load would be dated from the last sign
    // of life).
    let later_session = session(Some(10_000_000));
    writer
        .submit(vec![
            StoreOp::PutRetained {
                message: message("r/1", 1_000, None),
            },
            put_session("c", None),
            StoreOp::PutRetained {
                message: message("r/1", 2_000, None),
            },
            StoreOp::PutSession {
                client_id: "c".into(),
                session: later_session.clone(),
            },
        ])
        .await
        .unwrap();
    let progress = writer.close().await.unwrap();
    assert_eq!((progress.elided, progress.ops), (2, 2));
    let snapshot = open_in(dir.path()).unwrap().load(0).unwrap();
    assert_eq!(snapshot.retained, vec![message("r/1", 2_000, None)]);
    assert_eq!(snapshot.sessions.len(), 1);
    assert_eq!(snapshot.sessions[0].session, later_session);
}

/// Operations that undo each other entirely need no transaction (and no fsync): the
/// batch is reported committed all the same.
#[tokio::test]
async fn a_batch_that_undoes_itself_is_committed_without_a_transaction() {
    let recorder = Recorder::default();
    let commits = recorder.commits.clone();
    let mut writer = spawn_writer(recorder, Durability::Immediate);
    let m = message("a/b", 0, None);
    let seq = writer
        .submit(vec![
            deliver("a", 1, 7, &m),
            set_state("a", 1, DeliveryState::Sent { packet_id: 1 }),
            done("a", 1),
        ])
        .await
        .unwrap();
    let mut watch = writer.watch();
    let progress = progress_until(&mut watch, |p| p.committed == seq).await;
    assert_eq!((progress.commits, progress.ops, progress.elided), (0, 0, 3));
    assert!(commits.lock().unwrap().is_empty());
    writer.close().await.unwrap();
}

/// A version 1 store as that version wrote it: its tables (no `wills`, no `liveness`)
/// and schema 1, holding one session with one queued message.
fn write_version_1_store(path: &std::path::Path) {
    use redb::TableDefinition as T;
    let db = redb::Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(T::<&str, u32>::new("meta"))
        .unwrap()
        .insert("schema", 1)
        .unwrap();
    let record = SessionRecord {
        will: None,
        ..session(Some(9_000_000))
    };
    txn.open_table(T::<&str, &[u8]>::new("sessions"))
        .unwrap()
        .insert("c", postcard::to_stdvec(&record).unwrap().as_slice())
        .unwrap();
    let body = postcard::to_stdvec(&*message("a/1", 1_000, None)).unwrap();
    txn.open_table(T::<u64, &[u8]>::new("messages"))
        .unwrap()
        .insert(1, body.as_slice())
        .unwrap();
    let delivery = DeliveryRecord {
        message_id: 1,
        qos: 1,
        retain: false,
        subscription_ids: vec![],
        shared: None,
    };
    txn.open_table(T::<(&str, u64), &[u8]>::new("deliveries"))
        .unwrap()
        .insert(("c", 2), postcard::to_stdvec(&delivery).unwrap().as_slice())
        .unwrap();
    txn.open_table(T::<(&str, u64), u32>::new("delivery_state"))
        .unwrap();
    txn.open_table(T::<(&str, u16), ()>::new("incoming_qos2"))
        .unwrap();
    txn.open_table(T::<&str, &[u8]>::new("retained")).unwrap();
    txn.open_table(T::<(&str, &str), &[u8]>::new("management"))
        .unwrap();
    txn.commit().unwrap();
}

#[test]
fn a_version_1_store_is_migrated_at_open_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(dir.path());
    write_version_1_store(&path);
    let mut store = open_in(dir.path()).unwrap();
    let snapshot = store.load(5_000).unwrap();
    assert_eq!(snapshot.sessions.len(), 1);
    assert_eq!(snapshot.sessions[0].client_id, "c");
    assert_eq!(snapshot.sessions[0].session.expires_at, Some(9_000_000));
    assert_eq!(snapshot.sessions[0].deliveries.len(), 1);
    assert_eq!(snapshot.sessions[0].deliveries[0].message.topic, "a/1");
    // The new tables work.
    store
        .commit(
            &[StoreOp::PutWill {
                client_id: "c".into(),
                will: LiveWillRecord {
                    delay: 0,
                    ended_at: None,
                    message: (*message("w", 1_000, None)).clone(),
                },
            }],
            Fsync::Now,
        )
        .unwrap();
    drop(store);
    let db = redb::Database::open(&path).unwrap();
    let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
    let meta = txn
        .open_table(redb::TableDefinition::<&str, u32>::new("meta"))
        .unwrap();
    assert_eq!(
        redb::ReadableTable::get(&meta, "schema")
            .unwrap()
            .unwrap()
            .value(),
        SCHEMA_VERSION
    );
}

#[test]
fn a_schema_version_no_build_wrote_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(dir.path());
    write_version_1_store(&path);
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<&str, u32>::new("meta"))
            .unwrap()
            .insert("schema", 0)
            .unwrap();
        txn.commit().unwrap();
    }
    let err = open_in(dir.path()).unwrap_err();
    assert!(
        err.to_string().contains("schema version 0 does not exist"),
        "{err}"
    );
}

fn live_will(client_id: &str, delay: u32, at: WallMillis) -> StoreOp {
    StoreOp::PutWill {
        client_id: client_id.into(),
        will: LiveWillRecord {
            delay,
            ended_at: None,
            message: (*message(&format!("will/{client_id}"), at, None)).clone(),
        },
    }
}

#[test]
fn sessions_connected_at_a_crash_end_at_the_last_sign_of_life_and_their_wills_follow() {
    let dir = tempfile::tempdir().unwrap();
    let connected = |interval: u32| SessionRecord {
        expiry_interval: interval,
        expires_at: None,
        will: None,
        ..session(None)
    };
    let before = wall_millis(std::time::SystemTime::now());
    let ops = [
        StoreOp::PutSession {
            client_id: "short".into(),
            session: connected(2),
        },
        live_will("short", 0, before),
        StoreOp::PutSession {
            client_id: "long".into(),
            session: connected(3600),
        },
        live_will("long", 60, before),
        // A clean session: no session record, only the will of its connection.
        live_will("clean", 0, before),
        // A connection that ended normally: its will is gone.
        live_will("polite", 0, before),
        StoreOp::DeleteWill {
            client_id: "polite".into(),
        },
    ];
    {
        let mut store = open_in(dir.path()).unwrap();
        store.load(0).unwrap();
        store.commit(&ops, Fsync::Now).unwrap();
    }
    let after = wall_millis(std::time::SystemTime::now());
    // Started again 10 s later: "short" (2 s) ended while the broker was down.
    let now = after + 10_000;
    let mut store = open_in(dir.path()).unwrap();
    let snapshot = store.load(now).unwrap();
    assert_eq!(snapshot.expired.sessions, 1);
    assert_eq!(snapshot.sessions.len(), 1);
    let long = &snapshot.sessions[0].session;
    let alive_at = long.expires_at.unwrap() - 3_600_000;
    assert!((before..=after).contains(&alive_at), "{alive_at}");
    let will = long.will.as_ref().unwrap();
    assert_eq!(
        will.at,
        alive_at + 60_000,
        "the delay counts from the crash"
    );
    assert_eq!(will.message.received_at, alive_at);
    // The wills to publish at once: the clean session's and the expired session's.
    let wills: Vec<(&str, &str, WallMillis)> = snapshot
        .wills
        .iter()
        .map(|(c, m)| (c.as_str(), m.topic.as_str(), m.received_at))
        .collect();
    assert_eq!(
        wills,
        [
            ("clean", "will/clean", alive_at),
            ("short", "will/short", alive_at)
        ]
    );
    drop(store);

    // Down again before anything was published: the same wills, and "long" keeps the
    // times it was given (written back, not moved by the later start).
    let mut store = open_in(dir.path()).unwrap();
    let again = store.load(now + 5_000).unwrap();
    assert_eq!(again.sessions[0].session, *long);
    assert_eq!(again.wills, snapshot.wills);
    // Published: gone for good.
    let published: Vec<StoreOp> = ["clean", "short"]
        .iter()
        .map(|c| StoreOp::DeleteWill {
            client_id: (*c).into(),
        })
        .collect();
    store.commit(&published, Fsync::Now).unwrap();
    drop(store);
    let mut store = open_in(dir.path()).unwrap();
    assert!(store.load(now + 6_000).unwrap().wills.is_empty());
}

#[test]
fn a_mostly_empty_file_is_compacted_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = store_path(dir.path());
    let payload = "y".repeat(4_000);
    {
        let mut store = open_in(dir.path()).unwrap();
        store.load(0).unwrap();
        store.commit(&[put_session("c", None)], Fsync::Now).unwrap();
        // A 24 MB backlog for an offline session, then drained.
        for round in 0..6u64 {
            let ops: Vec<StoreOp> = (0..1_000u64)
                .map(|i| {
                    let id = round * 1_000 + i + 1;
                    deliver("c", id, id, &message(&format!("{payload}/{id}"), 0, None))
                })
                .collect();
            store.commit(&ops, Fsync::Now).unwrap();
        }
        let acks: Vec<StoreOp> = (1..=6_000).map(|i| done("c", i)).collect();
        store.commit(&acks, Fsync::Now).unwrap();
        // Not compacted while small; this one is large and nearly empty.
        assert_eq!(store.stored_messages(), 0);
    }
    let big = std::fs::metadata(&path).unwrap().len();
    assert!(big >= 16 << 20, "{big} bytes");
    let mut store = open_in(dir.path()).unwrap();
    let snapshot = store.load(0).unwrap();
    assert!(store.compact_if_sparse().unwrap());
    let small = std::fs::metadata(&path).unwrap().len();
    assert!(small < big / 4, "{big} -> {small} bytes");
    assert!(!store.compact_if_sparse().unwrap(), "once is enough");
    drop(store);
    let mut store = open_in(dir.path()).unwrap();
    assert_eq!(store.load(0).unwrap().sessions, snapshot.sessions);
}
