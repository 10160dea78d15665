//! Handing memory that bursts freed back to the operating system. The binary installs its
//! allocator's collection with [`set_release`]; the broker task calls [`release`] once per
//! tick.
//!
//! mimalloc returns an emptied page only after a delay (10 ms), and only when the thread
//! that owns it next allocates on a slow path or collects. After a burst (a fleet
//! connecting, each connection's task, buffers and registration freed as it parks) an idle
//! broker allocates little, so what the burst freed stayed resident for as long as the
//! broker stayed quiet: at 19,000 idle connections the RSS per connection varied from 939
//! to 1,004 B between runs of one build, against 912-917 B with the pages returned at once.

use std::sync::OnceLock;

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
}
