//! Structured logs on request: the binary with `log.format = "json"` (here through
//! `AVIARY_LOG_FORMAT`) writes one JSON object per line with a timestamp, a level and the
//! message in `fields`.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

#[test]
fn json_log_format_writes_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_aviary"))
        .env("AVIARY_LOG_FORMAT", "json")
        .env("AVIARY_LOG_LEVEL", "info")
        .env_remove("RUST_LOG")
        .env("AVIARY_LISTENER_BIND", "127.0.0.1:0")
        .env("AVIARY_API_BIND", "127.0.0.1:0")
        .env("AVIARY_API_API_KEY", "logs-test-key-0123456789")
        .env("AVIARY_DATA_DIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines, rx) = mpsc::channel();
    // Ends when the child's stdout closes (after the kill below).
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let mut api_line = None;
    while api_line.is_none() && Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let entry: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        let message = entry["fields"]["message"].as_str().unwrap_or_default();
        if message.contains("management API on http://127.0.0.1:") {
            api_line = Some(entry.clone());
        }
        seen.push(entry);
    }
    let _ = child.kill();
    let _ = child.wait();
    let entry = api_line.unwrap_or_else(|| panic!("no API start line in {seen:?}"));
    assert_eq!(entry["level"], "INFO", "{entry}");
    assert!(entry["timestamp"].as_str().is_some(), "{entry}");
    assert!(
        entry["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("aviary")),
        "{entry}"
    );
}
