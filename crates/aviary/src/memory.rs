//! Handing memory that bursts freed back to the operating system. The binary installs its
//! allocator's collection with [`set_release`]; the broker task calls [`release`] at the
//! ticks [`ReleaseGate`] lets through.
//!
//! mimalloc returns an emptied page only after a delay (10 ms), and only when the thread
//! that owns it next allocates on a slow path or collects. After a burst (a fleet
//! connecting, each connection's task, buffers and registration freed as it parks) an idle
//! broker allocates little, so what the burst freed stayed resident for as long as the
//! broker stayed quiet: at 19,000 idle connections the RSS per connection varied from 939
//! to 1,004 B between runs of one build, against 912-917 B with the pages returned at once.

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

/// Returns freed memory to the operating system, if an allocator's collection is
/// installed; a no-op otherwise (tests, and builds on the system allocator).
pub(crate) fn release() {
    if let Some(collect) = RELEASE.get() {
        collect();
    }
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

    fn counting_collect() {
        CALLS.with(|c| c.set(c.get() + 1));
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
