//! The process's file descriptor table, grown once at start to what the listeners may
//! open. Linux grows the table by doubling as descriptors are opened, and in a process with
//! more than one thread each growth waits for an RCU grace period (`expand_fdtable` calls
//! `synchronize_rcu`): 10–20 ms on a VM, during which the thread that opened the
//! descriptor — on one core, the broker's only runtime thread — serves no one. A fleet of
//! 19,000 devices connecting at once met it at 256, 512, … 16,384 connections, seven
//! stalls in 0.4 s, and one connection in twenty waited 20 ms or more for its CONNACK
//! (Mosquitto, single-threaded, never pays it). Grown before the runtime starts its
//! threads, the table costs no grace period, and it never shrinks.

use std::io;

/// Descriptors kept beyond the listeners' sockets: the store's files, the management
/// API's connections, outgoing HTTP (auth callouts, JWKS).
const HEADROOM: usize = 256;

/// Grows the descriptor table to hold the sockets of `max_connections` MQTT connections
/// (with their slack for refusals, see [`crate::listener::socket_limit`]) and
/// [`HEADROOM`], bounded by the soft `RLIMIT_NOFILE` (descriptors beyond it cannot be
/// opened anyway). Returns the size asked of the kernel, which rounds it up.
pub fn reserve_for_connections(max_connections: usize) -> io::Result<usize> {
    reserve(crate::listener::socket_limit(max_connections).saturating_add(HEADROOM))
}

/// Grows the descriptor table to `slots` (bounded by the soft `RLIMIT_NOFILE`) by
/// duplicating a descriptor to the last slot and closing the copy.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn reserve(slots: usize) -> io::Result<usize> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

    let slots = slots.min(soft_limit()?);
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

/// The soft `RLIMIT_NOFILE`: one more than the highest descriptor this process may open.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn soft_limit() -> io::Result<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a live, writable `rlimit` on this stack frame, the struct
    // getrlimit fills; it reads nothing of ours.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX))
}

/// Other systems: nothing to grow ahead.
#[cfg(not(target_os = "linux"))]
pub fn reserve(_slots: usize) -> io::Result<usize> {
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

    /// The table holds the slots asked for at once.
    #[test]
    fn the_table_grows_to_the_slots_asked_for() {
        let asked = soft_limit().unwrap().min(3_000);
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
        let soft = soft_limit().unwrap();
        if soft <= 65_536 {
            assert_eq!(reserve(soft + 1_000).unwrap(), soft);
            assert!(table_size() >= soft);
        }
        assert_eq!(reserve(0).unwrap(), 0);
        assert!(reserve_for_connections(10).unwrap() >= (10 + HEADROOM).min(soft));
    }
}
