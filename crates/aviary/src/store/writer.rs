//! [`StoreWriter`]: the single writer of the store. The broker task submits each pass's
//! [`StoreOp`]s as one numbered batch; a dedicated thread (redb is blocking) takes every
//! batch waiting in the channel, applies them in one transaction (group commit: one fsync
//! for many connections' messages) and publishes the highest batch number committed on a
//! watch channel, where the broker task waits for it before releasing the acknowledgements
//! of those batches.
//!
//! A dedicated thread rather than `spawn_blocking`: it runs for the process's life, and
//! holding one thread keeps commits strictly ordered without a lock.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::error;

use super::liveness::Liveness;
use super::{Durability, Fsync, SessionStore, StoreError, StoreOp};

/// Batches that may wait for the writer before the broker task waits too (backpressure
/// from the disk to the connections).
const CHANNEL_BATCHES: usize = 1024;

/// Most operations in one transaction, so one commit's memory stays bounded.
const MAX_OPS_PER_COMMIT: usize = 100_000;

/// In relaxed mode, the longest time a commit stays unsynced while the writer is busy.
const RELAXED_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// In relaxed mode, a pause without batches this long counts as idle: the writer syncs.
/// (Acknowledgements wait for commits in both modes, so the channel is briefly empty
/// between most batches; syncing at each of those would make every commit durable.)
const RELAXED_IDLE: Duration = Duration::from_millis(50);

/// One pass's operations.
#[derive(Debug)]
struct Batch {
    /// Its number (1, 2, 3, … in submission order).
    seq: u64,
    ops: Vec<StoreOp>,
}

/// What the writer has done so far, published after every commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Every batch with a number up to this one is committed (durably, in
    /// [`Durability::Immediate`] mode).
    pub committed: u64,
    /// Transactions committed.
    pub commits: u64,
    /// Of which synced to disk.
    pub syncs: u64,
    /// Operations applied.
    pub ops: u64,
    /// Operations not written because the same commit undid or overwrote them: message
    /// copies finished before the commit that would have stored them, records written
    /// again (`super::coalesce`).
    pub elided: u64,
    /// Empty commits made while idle, to record that the broker was alive.
    pub heartbeats: u64,
    /// The writer stopped on an error (logged): nothing more will be committed.
    pub failed: bool,
}

/// The writer thread is gone (it failed, or the store was closed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the store writer has stopped")]
pub struct WriterGone;

/// The broker task's handle on the writer thread.
#[derive(Debug)]
pub struct StoreWriter {
    /// Batches to the thread.
    batches: mpsc::Sender<Batch>,
    /// The number of the last batch submitted.
    last_seq: u64,
    /// Commits as the thread reports them.
    progress: watch::Receiver<Progress>,
    /// The thread's final result, once the channel is closed and it has synced.
    done: oneshot::Receiver<Result<Progress, StoreError>>,
    /// The mode, for the shell: whether acknowledgements wait for commits.
    durability: Durability,
}

impl StoreWriter {
    /// Starts the writer thread over `store`.
    ///
    /// While idle, it commits every `liveness_interval` anyway when a stored record
    /// depends on the last sign of life (see [`Liveness`]): every commit records the time,
    /// and after a crash that is when the connections open then ended.
    pub fn spawn(
        store: Box<dyn SessionStore>,
        durability: Durability,
        liveness_interval: Duration,
    ) -> std::io::Result<Self> {
        let (batches, rx) = mpsc::channel(CHANNEL_BATCHES);
        let (progress_tx, progress) = watch::channel(Progress::default());
        let (done_tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("aviary-store".into())
            .spawn(move || {
                let result = run(store, durability, liveness_interval, rx, &progress_tx);
                if let Err(e) = &result {
                    error!("{e}");
                    progress_tx.send_modify(|p| p.failed = true);
                }
                let _ = done_tx.send(result);
            })?;
        Ok(Self {
            batches,
            last_seq: 0,
            progress,
            done,
            durability,
        })
    }

    /// Queues `ops` as the next batch and returns its number; waits while the channel is
    /// full (the disk is behind).
    pub async fn submit(&mut self, ops: Vec<StoreOp>) -> Result<u64, WriterGone> {
        let seq = self.last_seq + 1;
        self.batches
            .send(Batch { seq, ops })
            .await
            .map_err(|_| WriterGone)?;
        self.last_seq = seq;
        Ok(seq)
    }

    /// The number of the last batch submitted (0: none yet).
    pub fn last_submitted(&self) -> u64 {
        self.last_seq
    }

    /// The writer's progress as last reported.
    pub fn progress(&self) -> Progress {
        *self.progress.borrow()
    }

    /// A receiver that wakes on every commit.
    pub fn watch(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// The configured mode.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Stops taking batches, lets the thread commit (and sync) what it has, and returns
    /// its final progress.
    pub async fn close(self) -> Result<Progress, StoreError> {
        drop(self.batches);
        match self.done.await {
            Ok(result) => result,
            // The thread ended without reporting: it panicked (logged by the panic hook).
            Err(_) => Ok(Progress {
                failed: true,
                ..*self.progress.borrow()
            }),
        }
    }
}

/// The writer thread's loop: wait for a batch, take every other waiting batch, commit once.
fn run(
    mut store: Box<dyn SessionStore>,
    durability: Durability,
    liveness_interval: Duration,
    mut rx: mpsc::Receiver<Batch>,
    progress: &watch::Sender<Progress>,
) -> Result<Progress, StoreError> {
    let mut state = Progress::default();
    // Relaxed mode: a deferred commit is waiting for a sync since this instant.
    let mut unsynced_since: Option<Instant> = None;
    let mut ops: Vec<StoreOp> = Vec::new();
    let mut liveness = Liveness::default();
    // Only to wait for a batch with a timeout (the heartbeat); nothing is spawned on it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| StoreError::Write {
            path: Default::default(),
            detail: format!("cannot start the writer's timer: {e}"),
        })?;
    loop {
        let wait = if unsynced_since.is_some() {
            Some(RELAXED_IDLE)
        } else if liveness.needed() {
            Some(liveness_interval)
        } else {
            // Nothing to sync and no sign of life to record: no wake-up until work comes.
            None
        };
        let next = runtime.block_on(async {
            match wait {
                Some(wait) => tokio::time::timeout(wait, rx.recv()).await,
                None => Ok(rx.recv().await),
            }
        });
        let first = match next {
            Ok(Some(batch)) => batch,
            Ok(None) => break,
            Err(_) if unsynced_since.is_some() => {
                // Idle: sync what the deferred commits wrote.
                store.commit(&[], Fsync::Now)?;
                unsynced_since = None;
                state.commits += 1;
                state.syncs += 1;
                progress.send_replace(state);
                continue;
            }
            Err(_) => {
                // Idle for a while: record that the broker is alive.
                store.commit(&[], Fsync::Now)?;
                state.heartbeats += 1;
                progress.send_replace(state);
                continue;
            }
        };
        ops.clear();
        ops.extend(first.ops);
        let mut last = first.seq;
        while ops.len() < MAX_OPS_PER_COMMIT {
            let Ok(batch) = rx.try_recv() else { break };
            ops.extend(batch.ops);
            last = batch.seq;
        }
        let fsync = match durability {
            Durability::Immediate => Fsync::Now,
            Durability::Relaxed
                if unsynced_since.is_some_and(|t| t.elapsed() >= RELAXED_SYNC_INTERVAL) =>
            {
                Fsync::Now
            }
            Durability::Relaxed => Fsync::Deferred,
        };
        state.elided += super::coalesce::coalesce(&mut ops) as u64;
        // A batch without operations (a pass that only waits for earlier ones, or whose
        // operations undid each other) needs no transaction: everything before it is
        // committed once the previous ones are.
        if !ops.is_empty() {
            store.commit(&ops, fsync)?;
            liveness.apply(&ops);
            state.commits += 1;
            state.ops += ops.len() as u64;
            match fsync {
                Fsync::Now => {
                    state.syncs += 1;
                    unsynced_since = None;
                }
                Fsync::Deferred => {
                    unsynced_since.get_or_insert_with(Instant::now);
                }
            }
        }
        state.committed = last;
        progress.send_replace(state);
    }
    if unsynced_since.is_some() {
        store.commit(&[], Fsync::Now)?;
        state.commits += 1;
        state.syncs += 1;
        progress.send_replace(state);
    }
    Ok(state)
}
