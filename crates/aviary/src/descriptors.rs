//! The process's open-files limit and file descriptor table, prepared once at start for
//! what the listeners may open: the soft `RLIMIT_NOFILE` raised towards it (up to the hard
//! limit), the table grown to it. Linux grows the table by doubling as descriptors are
//! opened, and in a process with more than one thread each growth waits for an RCU grace
//! period (`expand_fdtable` calls `synchronize_rcu`): 10–20 ms on a VM, during which the
//! thread that opened the descriptor — on one core, the broker's only runtime thread —
//! serves no one. A fleet of 19,000 devices connecting at once met it at 256, 512, …
//! 16,384 connections, seven stalls in 0.4 s, and one connection in twenty waited 20 ms or
//! more for its CONNACK (Mosquitto, single-threaded, never pays it). Grown before the
//! runtime starts its threads, the table costs no grace period, and it never shrinks.

use std::io;

/// Descriptors kept beyond the listeners' sockets: the store's files, the management
/// API's connections, outgoing HTTP (auth callouts, JWKS).
const HEADROOM: usize = 256;

/// What [`prepare_for_connections`] found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prepared {
    /// Descriptors `mqtt.max_connections` may need: the listeners' sockets (with their
    /// slack for refusals, see [`crate::listener::socket_limit`]) and [`HEADROOM`].
    pub needed: usize,
    /// The soft `RLIMIT_NOFILE` the process started with.
    pub soft_before: usize,
    /// The soft limit now: raised to `needed` where the hard limit allows.
    pub soft: usize,
    /// The hard limit, which only a privileged process may raise.
    pub hard: usize,
}

/// Makes room for the descriptors of `max_connections` MQTT connections: raises the soft
/// `RLIMIT_NOFILE` towards what they need (up to the hard limit: a soft limit of 1,024,
/// the usual default, would refuse the 1,000th device), then grows the descriptor table
/// to it ([`reserve`]).
pub fn prepare_for_connections(max_connections: usize) -> io::Result<Prepared> {
    let needed = crate::listener::socket_limit(max_connections).saturating_add(HEADROOM);
    let (soft_before, hard) = limits()?;
    let mut soft = soft_before;
    if soft < needed.min(hard) {
        set_soft_limit(needed.min(hard), hard)?;
        soft = needed.min(hard);
    }
    reserve(needed)?;
    Ok(Prepared {
        needed,
        soft_before,
        soft,
        hard,
    })
}

/// Grows the descriptor table to `slots` (bounded by the soft `RLIMIT_NOFILE`) by
/// duplicating a descriptor to the last slot and closing the copy.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn reserve(slots: usize) -> io::Result<usize> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

    let slots = slots.min(limits()?.0);
    let Some(last) = slots.checked_sub(1) else {
        return Ok(0);
    };
    let last = libc::c_int::try_from(last).unwrap_or(libc::c_int::MAX);
    let file = std::fs::File::open("/dev/null")?;
    // SAFETY: `file` owns its open descriptor for the whole call; F_DUPFD_CLOEXEC takes an
    // integer argument and reads or writes no memory of ours.
    let copy = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_DUPFD_CLOEXEC, last) };
    if copy < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `copy` is the descriptor fcntl just opened for this call: open, and owned by
    // nothing else, so the `OwnedFd` is its only owner and closes it once, here.
    drop(unsafe { OwnedFd::from_raw_fd(copy) });
    Ok(slots)
}

/// The soft and hard `RLIMIT_NOFILE`: one more than the highest descriptor this process
/// may open, and how far it may raise that.
#[cfg(unix)]
#[allow(unsafe_code)]
fn limits() -> io::Result<(usize, usize)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a live, writable `rlimit` on this stack frame, the struct
    // getrlimit fills; it reads nothing of ours.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let size = |l: libc::rlim_t| usize::try_from(l).unwrap_or(usize::MAX);
    Ok((size(limit.rlim_cur), size(limit.rlim_max)))
}

/// Sets the soft `RLIMIT_NOFILE` to `soft` (at most `hard`), keeping the hard limit.
#[cfg(unix)]
#[allow(unsafe_code)]
fn set_soft_limit(soft: usize, hard: usize) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: libc::rlim_t::try_from(soft.min(hard)).unwrap_or(libc::RLIM_INFINITY),
        rlim_max: libc::rlim_t::try_from(hard).unwrap_or(libc::RLIM_INFINITY),
    };
    // SAFETY: `limit` is a live, initialised `rlimit` on this stack frame that setrlimit
    // only reads.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(unix))]
fn limits() -> io::Result<(usize, usize)> {
    Ok((usize::MAX, usize::MAX))
}

#[cfg(not(unix))]
fn set_soft_limit(_soft: usize, _hard: usize) -> io::Result<()> {
    Ok(())
}

/// Other systems: nothing to grow ahead.
#[cfg(not(target_os = "linux"))]
fn reserve(_slots: usize) -> io::Result<usize> {
    Ok(0)
}

/// The size of this process's descriptor table (`FDSize` in `/proc/self/status`).
#[cfg(all(test, target_os = "linux"))]
fn table_size() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("FDSize:"))
        .and_then(|size| size.trim().parse().ok())
        .unwrap()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Held by every test that reads or changes the process's limits: one of them lowers
    /// the soft limit for a moment.
    static LIMITS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn limits_held() -> std::sync::MutexGuard<'static, ()> {
        LIMITS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The table holds the slots asked for at once.
    #[test]
    fn the_table_grows_to_the_slots_asked_for() {
        let _held = limits_held();
        let asked = limits().unwrap().0.min(3_000);
        assert!(asked > 64, "a soft limit of {asked} descriptors");
        let reserved = reserve(asked).unwrap();
        assert_eq!(reserved, asked);
        assert!(table_size() >= asked, "{} < {asked}", table_size());
    }

    /// Beyond the soft limit nothing can be opened: the reservation stops there rather
    /// than failing (asked only when the limit is small: a table for a million
    /// descriptors is 8 MiB).
    #[test]
    fn the_soft_limit_bounds_it() {
        let _held = limits_held();
        let (soft, _) = limits().unwrap();
        if soft <= 65_536 {
            assert_eq!(reserve(soft + 1_000).unwrap(), soft);
            assert!(table_size() >= soft);
        }
        assert_eq!(reserve(0).unwrap(), 0);
    }

    /// The soft limit is raised to what the connections need where the hard limit
    /// allows, never lowered, and the hard limit is left alone.
    #[test]
    fn the_soft_limit_is_raised_for_the_connections() {
        let _held = limits_held();
        let (soft, hard) = limits().unwrap();
        // Below the hard limit by a little, so that there is a raise to see (a limit of a
        // thousand fewer descriptors harms no other test; a large one is left alone: a
        // table for a million descriptors is 8 MiB).
        if soft == hard && (4_096..=65_536).contains(&soft) {
            set_soft_limit(soft - 1_000, hard).unwrap();
        }
        let (start, _) = limits().unwrap();
        // As many connections as the limit holds now: they need more (slack, headroom).
        let max_connections = if start <= 65_536 { start } else { 8_000 };
        let prepared = prepare_for_connections(max_connections).unwrap();
        assert_eq!((prepared.soft_before, prepared.hard), (start, hard));
        assert!(prepared.needed > max_connections + HEADROOM);
        assert_eq!(prepared.soft, start.max(prepared.needed.min(hard)));
        assert_eq!(limits().unwrap(), (prepared.soft, hard));
        if start <= 65_536 && start < hard {
            assert!(prepared.soft > start, "raised from {start}");
        }
        // Asking for fewer than the limit allows changes nothing.
        let again = prepare_for_connections(1).unwrap();
        assert_eq!(
            (again.soft_before, again.soft),
            (prepared.soft, prepared.soft)
        );
    }
}
