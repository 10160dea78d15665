//! Handing memory that bursts freed back to the operating system. The binary installs its
//! allocator's collection with [`set_release`]; the broker task calls [`release`] at the
//! ticks [`ReleaseGate`] lets through, and every other runtime thread collects its own
//! heap the next time it goes idle ([`release_on_idle_thread`], the runtime's
//! `on_thread_park` hook).
//!
//! mimalloc returns an emptied page only after a delay (10 ms), and only when the thread
//! that owns it next allocates on a slow path or collects. After a burst (a fleet
//! connecting, each connection's task, buffers and registration freed as it parks) an idle
//! broker allocates little, so what the burst freed stayed resident for as long as the
//! broker stayed quiet: at 19,000 idle connections the RSS per connection varied from 939
//! to 1,004 B between runs of one build, against 912-917 B with the pages returned at once.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Metered units in one tick (a second) below which the broker counts as quiet: too quiet
/// to allocate on the allocator's slow paths, which return freed pages on their own.
const QUIET_UNITS: u64 = 1_000;

/// Busy ticks after which the collection runs anyway, so that what a burst freed while
/// traffic went on goes back within this many seconds even if the allocator kept it.
const BUSY_RELEASE_TICKS: u32 = 10;

/// The allocator's collection, if the binary installed one.
static RELEASE: OnceLock<fn()> = OnceLock::new();

/// Installs `collect` as what [`release`] runs. The first call wins (one allocator per
/// process).
pub fn set_release(collect: fn()) {
    let _ = RELEASE.set(collect);
}

/// Collections asked for so far ([`release`] counts them). An allocator's collection
/// works on the calling thread's heap, and the pages a burst freed belong to the threads
/// that allocated them: on a runtime of two worker threads, what the connection tasks on
/// the thread not running the broker task freed stayed resident (1,284 B per idle
/// connection at 19,000 connections, against 911 B on one thread).
static RELEASES_ASKED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The value of [`RELEASES_ASKED`] this thread last collected for.
    static RELEASES_DONE: Cell<u64> = const { Cell::new(0) };
}

/// Returns freed memory to the operating system, if an allocator's collection is
/// installed; a no-op otherwise (tests, and builds on the system allocator). The other
/// runtime threads follow when they next go idle ([`release_on_idle_thread`]).
pub(crate) fn release() {
    if let Some(collect) = RELEASE.get() {
        let asked = RELEASES_ASKED.fetch_add(1, Ordering::Relaxed) + 1;
        RELEASES_DONE.with(|done| done.set(asked));
        collect();
        wake_other_workers();
    }
}

/// Wakes the other worker threads of a multi-threaded runtime, asleep while the broker is
/// quiet, so that they go idle again and collect ([`release_on_idle_thread`]). tokio
/// wakes a sleeping worker to take work queued on a busy one, so a no-op task per worker
/// does it; a worker that sleeps on regardless collects at its next wake. Without it a
/// quiet broker kept what the other worker freed: 1,057-1,126 B per idle connection at
/// 19,000 connections on two threads, 910 B with it (crates/aviary-bench/README.md).
fn wake_other_workers() {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if runtime.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return;
    }
    for _ in 0..runtime.metrics().num_workers() {
        drop(runtime.spawn(async {}));
    }
}

/// For the runtime's `on_thread_park` hook: collects the calling thread's heap if a
/// [`release`] was asked for since this thread last collected. Otherwise an atomic load,
/// so it costs nothing to the threads that park often under load; a thread collects at
/// most once per [`release`] (a second, or ten while the broker is busy).
pub fn release_on_idle_thread() {
    let asked = RELEASES_ASKED.load(Ordering::Relaxed);
    if !RELEASES_DONE.with(|done| catch_up(done, asked)) {
        return;
    }
    if let Some(collect) = RELEASE.get() {
        collect();
    }
}

/// Whether a thread that collected for `done` must collect for `asked`; records that it
/// has.
fn catch_up(done: &Cell<u64>, asked: u64) -> bool {
    done.replace(asked) != asked
}

/// When the broker's tick hands freed memory back: at every tick after a quiet second,
/// and only every [`BUSY_RELEASE_TICKS`]th tick while the broker is busy. The forced
/// collection took 11-57 µs of the broker task per tick at 10,000 messages a second
/// (messages arriving meanwhile wait) and its purges cost page faults when the memory was
/// used again (3 `madvise` and 6 faults a second); a busy broker's allocator returns
/// emptied pages itself as it allocates.
#[derive(Debug, Default)]
pub(crate) struct ReleaseGate {
    /// The broker's metered units at the previous tick.
    units_at_last_tick: u64,
    /// Busy ticks since the last collection.
    busy_ticks: u32,
}

impl ReleaseGate {
    /// Whether this tick collects, given the broker's total metered units now.
    pub(crate) fn at_tick(&mut self, units_total: u64) -> bool {
        let last = std::mem::replace(&mut self.units_at_last_tick, units_total);
        if units_total.saturating_sub(last) < QUIET_UNITS {
            self.busy_ticks = 0;
            return true;
        }
        self.busy_ticks += 1;
        if self.busy_ticks >= BUSY_RELEASE_TICKS {
            self.busy_ticks = 0;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    thread_local! {
        /// Calls on this thread: other tests run the broker tick (which calls [`release`])
        /// on their own threads at the same time.
        static CALLS: Cell<usize> = const { Cell::new(0) };
    }

    /// The threads that collected (name and id), for the test of the runtime's threads.
    static COLLECTORS: std::sync::Mutex<Vec<(String, std::thread::ThreadId)>> =
        std::sync::Mutex::new(Vec::new());

    fn counting_collect() {
        CALLS.with(|c| c.set(c.get() + 1));
        let thread = std::thread::current();
        let name = thread.name().unwrap_or_default().to_owned();
        COLLECTORS
            .lock()
            .expect("collectors")
            .push((name, thread.id()));
    }

    /// How many collections have run so far.
    fn collections() -> usize {
        COLLECTORS.lock().expect("collectors").len()
    }

    /// The distinct threads named `name` that collected after the first `since`
    /// collections.
    fn threads_collecting_since(since: usize, name: &str) -> usize {
        let collectors = COLLECTORS.lock().expect("collectors");
        let ids: std::collections::HashSet<_> = collectors[since..]
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, id)| *id)
            .collect();
        ids.len()
    }

    fn other_collect() {
        CALLS.with(|c| c.set(c.get() + 100));
    }

    #[test]
    fn release_runs_the_installed_collection_and_the_first_install_wins() {
        set_release(counting_collect);
        set_release(other_collect);
        let before = CALLS.with(Cell::get);
        release();
        release();
        assert_eq!(CALLS.with(Cell::get) - before, 2);
    }

    #[test]
    fn an_idle_thread_collects_once_for_each_release_it_missed() {
        let done = Cell::new(0);
        assert!(!catch_up(&done, 0), "nothing asked yet");
        assert!(catch_up(&done, 1));
        assert!(!catch_up(&done, 1), "already collected for this release");
        // Several releases while the thread was busy: one collection catches up.
        assert!(catch_up(&done, 4));
        assert!(!catch_up(&done, 4));
    }

    #[test]
    fn an_idle_thread_collects_after_a_release_on_another_thread() {
        set_release(counting_collect);
        release();
        // A new thread has collected for nothing yet: at least the release above is due.
        let calls = std::thread::spawn(|| {
            release_on_idle_thread();
            CALLS.with(Cell::get)
        })
        .join()
        .expect("thread");
        assert!(calls >= 1, "the collection ran on the idle thread");
    }

    /// The broker task's collection on one worker of a multi-threaded runtime is followed
    /// by one on the other worker, which was asleep: woken, it goes idle and collects.
    #[test]
    fn a_release_on_one_worker_makes_the_sleeping_worker_collect() {
        set_release(counting_collect);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("memory-test-worker")
            .on_thread_park(release_on_idle_thread)
            .enable_time()
            .build()
            .expect("runtime");
        let worker = "memory-test-worker";
        // Like the broker's tick: a task woken by its timer releases, while nothing else
        // wakes the runtime.
        let tick = runtime.spawn(async {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            release();
        });
        // Meanwhile both workers go to sleep (each collects at its first park, for
        // whatever other tests released before).
        std::thread::sleep(std::time::Duration::from_millis(200));
        let before = collections();
        runtime.block_on(tick).expect("tick");
        // Both workers, not one of them twice.
        let mut threads = 0;
        for _ in 0..200 {
            threads = threads_collecting_since(before, worker);
            if threads == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(threads, 2, "workers that collected after the release");
    }

    #[test]
    fn a_quiet_broker_collects_at_every_tick() {
        let mut gate = ReleaseGate::default();
        let mut units = 0;
        for _ in 0..5 {
            units += QUIET_UNITS - 1;
            assert!(gate.at_tick(units));
        }
    }

    #[test]
    fn a_busy_broker_collects_every_tenth_tick_and_at_once_when_it_quietens() {
        let mut gate = ReleaseGate::default();
        let mut units = 0;
        let mut collected = Vec::new();
        for _ in 0..25 {
            units += 20_000;
            collected.push(gate.at_tick(units));
        }
        let at: Vec<usize> = (0..25).filter(|&i| collected[i]).collect();
        assert_eq!(at, [9, 19]);
        // Two busy ticks since the last collection, then a quiet second: collected.
        assert!(gate.at_tick(units + 10));
        assert!(!gate.at_tick(units + 10 + QUIET_UNITS));
    }
}
