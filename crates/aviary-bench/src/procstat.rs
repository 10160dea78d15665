//! Reads a process's CPU time and memory from Linux's /proc: the broker's (by PID) and the
//! generator's own, before and after a run.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// One reading of a process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProcSample {
    /// User + system CPU time consumed so far, in clock ticks (`utime + stime`).
    pub cpu_ticks: u64,
    /// Resident set size now, KiB (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size since the process started, KiB (`VmHWM`).
    pub hwm_kib: u64,
}

/// Errors reading /proc.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unexpected format of {0}")]
    Format(PathBuf),
}

/// Which process to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pid {
    /// The generator itself.
    Own,
    Other(u32),
}

impl Pid {
    fn dir(self) -> PathBuf {
        match self {
            Self::Own => PathBuf::from("/proc/self"),
            Self::Other(pid) => PathBuf::from(format!("/proc/{pid}")),
        }
    }
}

/// Reads CPU time and memory of `pid`.
pub fn sample(pid: Pid) -> Result<ProcSample, ProcError> {
    let dir = pid.dir();
    let stat_path = dir.join("stat");
    let stat = read(&stat_path)?;
    let status = read(&dir.join("status"))?;
    let cpu_ticks = parse_stat_cpu(&stat).ok_or(ProcError::Format(stat_path))?;
    Ok(ProcSample {
        cpu_ticks,
        rss_kib: status_kib(&status, "VmRSS:").unwrap_or(0),
        hwm_kib: status_kib(&status, "VmHWM:").unwrap_or(0),
    })
}

fn read(path: &PathBuf) -> Result<String, ProcError> {
    std::fs::read_to_string(path).map_err(|source| ProcError::Read {
        path: path.clone(),
        source,
    })
}

/// `utime + stime` from the text of /proc/PID/stat. The command name (field 2) is in
/// parentheses and may contain spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat_cpu(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: field 3 (state) is index 0, so utime (14) and stime (15) are 11, 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The KiB value of a `Key:   123 kB` line of /proc/PID/status.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// The length of a clock tick (`getconf CLK_TCK`; 100 Hz, Linux's fixed USER_HZ, if that
/// cannot be run).
pub fn clock_tick() -> Duration {
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse::<u64>().ok())
        .filter(|&hz| hz > 0)
        .unwrap_or(100);
    Duration::from_nanos(1_000_000_000 / hz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_with_awkward_name() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 4 0 100 2000000 500 18446744073709551615";
        assert_eq!(parse_stat_cpu(stat), Some(325));
    }

    #[test]
    fn status_lines() {
        let status = "Name:\tmosquitto\nVmHWM:\t   12345 kB\nVmRSS:\t    9876 kB\n";
        assert_eq!(status_kib(status, "VmHWM:"), Some(12345));
        assert_eq!(status_kib(status, "VmRSS:"), Some(9876));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let s = sample(Pid::Own).unwrap();
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib);
    }
}
