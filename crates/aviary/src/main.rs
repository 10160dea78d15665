//! The `aviary` binary: without a subcommand it loads the configuration, sets up logging
//! and runs the broker until SIGINT or SIGTERM, then shuts it down gracefully; with one
//! (`aviary client list`, `aviary listener disable public`, …) it manages a running broker
//! through its management API (see `aviary::cli`).

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use aviary::config::{unknown_variables, LogConfig, LogFormat};
use aviary::Config;
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// The process's allocator. glibc's malloc keeps what a burst of connections freed (their
/// tasks, read buffers and registrations, interleaved with the long-lived session state)
/// as fragments it rarely gives back, so the memory a broker holds after a fleet
/// reconnects depended on how the burst went: 1.4-2.0 KB per idle connection at 19,000
/// connections. mimalloc keeps each size in its own pages and returns emptied pages:
/// 1.24-1.36 KB for that build in every run (crates/aviary-bench/README.md). Its v2 is
/// used, without transparent huge pages (`no_thp`): with them a 2 MiB page backs each
/// touched region of its arenas, which raised the idle broker's RSS from 14 to 27 MiB.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's collection of the calling thread's heap, which the broker task runs at each
/// tick after a quiet second and every tenth tick of busy ones (`aviary::memory`): the
/// free parts of its segments go back to the operating system
/// at once, even while the broker is too quiet to allocate. Forced, because an unforced
/// collection leaves the free parts of segments alone: at 19,000 idle connections the RSS
/// per connection was 974-993 B without a collection, 938-992 B with an unforced one and
/// 924-938 B with the forced one. It took 15-70 µs a tick with 10,000 connections
/// publishing (200 µs right after their burst of connects).
#[cfg(feature = "mimalloc")]
#[allow(unsafe_code)]
fn collect_freed_memory() {
    // SAFETY: `mi_collect` has no preconditions and may be called from any thread at any
    // time. It works on the calling thread's own heap, on segments other threads abandoned
    // and on the process-wide arenas, under mimalloc's own synchronization, and it only
    // frees pages and purges memory that no block in use occupies; no pointer of ours is
    // read or invalidated.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// mimalloc's `mi_option_purge_delay` (`mi_option_e` in v2's mimalloc.h, right after
/// `mi_option_eager_commit_delay`), which libmimalloc-sys does not name.
#[cfg(feature = "mimalloc")]
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t =
    libmimalloc_sys::mi_option_eager_commit_delay + 1;

/// Milliseconds an emptied page stays with the allocator before it goes back to the
/// operating system (mimalloc's default: 10). When a fleet starts publishing, each
/// device's connection task is freed as the broker task takes its connection over; with
/// 10 ms the freed pages went back (`madvise`) and were faulted in again while messages
/// waited — ~6 ms a second of the broker's thread in the first second of 10,000 devices
/// publishing, and the p99 of their first messages 209 µs against Mosquitto's 138
/// (153 with 1 s; crates/aviary-bench/README.md). What stays freed longer than this still
/// goes back, and the broker's own collection (`collect_freed_memory`) returns it at once
/// after a quiet second. `MIMALLOC_PURGE_DELAY` in the environment overrides it.
#[cfg(feature = "mimalloc")]
const PURGE_DELAY_MS: std::ffi::c_long = 1_000;

/// Sets [`PURGE_DELAY_MS`] unless the environment sets mimalloc's purge delay.
#[cfg(feature = "mimalloc")]
#[allow(unsafe_code)]
fn keep_freed_pages_a_while() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: `mi_option_set` stores an option's value under mimalloc's own
    // synchronization and may be called at any time; the purge delay is only read when
    // mimalloc decides whether to purge a free page, and any non-negative value is valid.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
}

/// Exit code for a configuration that cannot be loaded.
const EXIT_BAD_CONFIG: u8 = 2;

/// The Aviary MQTT broker (MQTT 3.1, 3.1.1 and 5.0).
#[derive(Debug, Parser)]
#[command(
    name = "aviary",
    version,
    about = "The Aviary MQTT broker (MQTT 3.1, 3.1.1 and 5.0)."
)]
struct Cli {
    /// TOML configuration file (see aviary.example.toml); without it, the embedded defaults
    /// and AVIARY_* environment variables are used.
    #[arg(long, short, value_name = "FILE", env = "AVIARY_CONFIG")]
    config: Option<PathBuf>,
    /// Where the management API is, for the subcommands.
    #[command(flatten)]
    api: aviary::cli::ApiArgs,
    /// Manage a running broker instead of running one.
    #[command(subcommand)]
    command: Option<aviary::cli::Command>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(command) = cli.command {
        return aviary::cli::run(&cli.api, command);
    }
    // Variables that are not valid Unicode cannot be configuration values; skip them.
    let env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
        .collect();
    let pairs = env.iter().map(|(name, value)| (name, value));
    let config = match Config::load(cli.config.as_deref(), pairs) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("aviary: configuration error: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    if let Err(e) = init_logging(&config.log) {
        eprintln!("aviary: configuration error: {e:#}");
        return ExitCode::from(EXIT_BAD_CONFIG);
    }
    for name in unknown_variables(env.iter().map(|(name, _)| name.as_str())) {
        tracing::warn!("ignoring environment variable {name}: not a configuration key");
    }
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("aviary: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the broker until a shutdown signal: on a multi-threaded runtime, or on the current
/// thread when the broker has one core (or `TOKIO_WORKER_THREADS=1`). With one core the
/// multi-threaded scheduler only adds work (ARCHITECTURE.md, "Entry points").
fn serve(config: Config) -> anyhow::Result<()> {
    // Before the runtime starts its threads (`aviary::descriptors`).
    match aviary::descriptors::prepare_for_connections(config.mqtt.max_connections) {
        Ok(prepared) => {
            if prepared.soft > prepared.soft_before {
                tracing::info!(
                    "open files limit raised from {} to {} for mqtt.max_connections",
                    prepared.soft_before,
                    prepared.soft
                );
            }
            if prepared.soft < prepared.needed {
                tracing::warn!(
                    "open files limit {} (hard limit {}) is below the {} descriptors \
                     mqtt.max_connections = {} needs: connections beyond it are refused \
                     (raise it with `ulimit -n` or systemd's LimitNOFILE)",
                    prepared.soft,
                    prepared.hard,
                    prepared.needed,
                    config.mqtt.max_connections
                );
            }
        }
        Err(e) => tracing::warn!("cannot prepare the file descriptors: {e}"),
    }
    #[cfg(feature = "mimalloc")]
    {
        aviary::memory::set_release(collect_freed_memory);
        keep_freed_pages_a_while();
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = std::env::var("TOKIO_WORKER_THREADS").ok();
    let mut builder = match worker_threads(workers.as_deref(), cores)? {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            // Set here, so tokio does not read the variable again.
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    };
    // Each runtime thread returns what it freed when it next waits for work after the
    // broker task's collection (`aviary::memory`).
    let runtime = builder
        .enable_all()
        .on_thread_park(aviary::memory::release_on_idle_thread)
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(aviary::run(config, shutdown_signal()))
}

/// How many worker threads tokio's multi-threaded runtime would start: `TOKIO_WORKER_THREADS`
/// (`variable`) when set, else the `cores` this process may run on. A value tokio would
/// refuse (with a panic) is an error that names the variable.
fn worker_threads(variable: Option<&str>, cores: usize) -> anyhow::Result<usize> {
    match variable {
        None => Ok(cores),
        Some(value) => match value.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => anyhow::bail!(
                "TOKIO_WORKER_THREADS: expected a number of threads above 0, got {value:?}"
            ),
        },
    }
}

/// Logs to stdout in the configured format; `RUST_LOG`, when set, replaces `log.level`.
fn init_logging(log: &LogConfig) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) => EnvFilter::builder()
            .parse(&directives)
            .with_context(|| format!("RUST_LOG: invalid filter {directives:?}"))?,
        Err(_) => EnvFilter::builder()
            .parse(&log.level)
            .with_context(|| format!("log.level: invalid filter {:?}", log.level))?,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let installed = match log.format {
        LogFormat::Text => builder
            .with_ansi(std::io::stdout().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}

#[cfg(test)]
mod tests {
    use super::worker_threads;

    /// The option set is mimalloc's purge delay: the option at that index has the purge
    /// delay's documented default (10 ms) until it is set, and takes the value set.
    #[cfg(feature = "mimalloc")]
    #[test]
    #[allow(unsafe_code)]
    fn the_purge_delay_is_the_option_set() {
        // SAFETY: reading and setting an option has no preconditions (see
        // `keep_freed_pages_a_while`).
        unsafe {
            assert_eq!(
                libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY),
                10
            );
            super::keep_freed_pages_a_while();
            assert_eq!(
                libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY),
                super::PURGE_DELAY_MS
            );
        }
    }

    #[test]
    fn worker_threads_come_from_the_variable_or_the_cores() {
        assert_eq!(worker_threads(None, 2).unwrap(), 2);
        assert_eq!(worker_threads(Some("1"), 2).unwrap(), 1);
        assert_eq!(worker_threads(Some(" 4 "), 1).unwrap(), 4);
        for bad in ["0", "", "two", "-1"] {
            let error = worker_threads(Some(bad), 2).unwrap_err().to_string();
            assert!(error.contains("TOKIO_WORKER_THREADS"), "{error}");
        }
    }
}
