//! The command line: `run` (one scenario against one broker) and `compare` (Aviary and
//! Mosquitto side by side). The scenario arguments are shared, and `compare` hands them on
//! to a `run` child process per round ([`ScenarioArgs::to_args`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use aviary_codec::{ProtocolVersion, QoS};

use crate::scenario::{RunOptions, Scenario};

/// Load generator for MQTT brokers on loopback.
#[derive(Debug, clap::Parser)]
#[command(name = "aviary-bench", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Runs one scenario against a broker that is already running.
    Run(RunArgs),
    /// Starts Aviary and Mosquitto, runs the scenario against both in alternating rounds,
    /// and prints both results (medians of the rounds; latency also over all rounds'
    /// samples pooled) and the ratios Aviary / Mosquitto.
    Compare(CompareArgs),
    /// Runs `compare` for every combination of `--scenarios` and `--qos-list` and prints
    /// one Markdown table of the results (the README's table; p99 both as the median of
    /// the rounds' p99s and pooled over all rounds' samples).
    Matrix(MatrixArgs),
    /// Internal: one process of a multi-process idle run (`run --scenario idle
    /// --processes N` starts these).
    #[command(hide = true)]
    IdleWorker(IdleWorkerArgs),
}

#[derive(Debug, clap::Args)]
pub struct IdleWorkerArgs {
    #[arg(long)]
    pub broker: SocketAddr,
    #[arg(long)]
    pub connections: usize,
    /// Index of this worker's first client (client ids and source addresses follow it).
    #[arg(long)]
    pub first_index: usize,
    #[arg(long, default_value_t = 1)]
    pub source_ips: u8,
    #[arg(long, default_value_t = 100)]
    pub connect_concurrency: usize,
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(4..=5))]
    pub mqtt: u8,
    #[arg(long)]
    pub run_id: String,
    /// Give up holding after this many seconds even if stdin stays open.
    #[arg(long, default_value_t = 3600.0)]
    pub hold_limit: f64,
}

impl IdleWorkerArgs {
    /// The run options of the worker's share.
    pub fn options(&self) -> RunOptions {
        let scenario = ScenarioArgs {
            scenario: Scenario::Idle,
            qos: 0,
            payload: 16,
            mqtt: self.mqtt,
            duration: 0.0,
            messages: None,
            rate: None,
            publishers: None,
            subscribers: None,
            connections: Some(self.connections),
            max_inflight: 16,
            e2e_window: 0,
            source_ips: self.source_ips,
            drain_timeout: 0.0,
            processes: 1,
            connect_concurrency: self.connect_concurrency,
            threads: 1,
            hard_timeout: None,
        };
        let mut options = scenario.options(self.broker, None, "");
        options.run_id = self.run_id.clone();
        options
    }
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The broker's address (loopback only).
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub broker: SocketAddr,
    /// The broker's process id: its CPU time and memory are read from /proc.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// A name for the broker in the report.
    #[arg(long, default_value = "")]
    pub label: String,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Conn-rate over TLS: the CA (PEM) of the broker's certificate for `localhost`;
    /// `--broker` is then its TLS listener.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    #[command(flatten)]
    pub scenario: ScenarioArgs,
}

#[derive(Debug, clap::Args)]
pub struct MatrixArgs {
    /// Scenarios, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "one-to-one,fan-in,fan-in-shared,fan-out"
    )]
    pub scenarios: Vec<Scenario>,
    /// QoS levels, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    pub qos_list: Vec<u8>,
    /// Also write every comparison (with all rounds) as JSON lines to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// The comparison settings; its `--scenario` and `--qos` are replaced by the lists.
    #[command(flatten)]
    pub compare: CompareArgs,
}

#[derive(Clone, Debug, clap::Args)]
pub struct CompareArgs {
    /// Aviary's executable.
    #[arg(long, default_value = "target/release/aviary")]
    pub aviary: PathBuf,
    /// Mosquitto's executable.
    #[arg(long, default_value = "/usr/sbin/mosquitto")]
    pub mosquitto: PathBuf,
    /// Rounds per broker; the order alternates (A M, M A, ...).
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Pin each broker to this CPU (`taskset -c`).
    #[arg(long)]
    pub pin_broker_cpu: Option<usize>,
    /// Pin the generator to this CPU.
    #[arg(long)]
    pub pin_generator_cpu: Option<usize>,
    /// Messages queued per client behind the in-flight window, in both brokers.
    #[arg(long, default_value_t = 1000)]
    pub max_queued: usize,
    /// The brokers' outgoing in-flight window.
    #[arg(long, default_value_t = 16)]
    pub broker_inflight: u16,
    /// Aviary's `store.durability` (the `persistent` scenario is the one it changes).
    #[arg(long, value_enum, default_value = "immediate")]
    pub aviary_durability: crate::brokers::AviaryDurability,
    /// Print every round's report and the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Conn-rate only: both brokers also get a TLS listener (a test certificate made for
    /// the run) and the clients connect over TLS.
    #[arg(long)]
    pub tls: bool,
    #[command(flatten)]
    pub scenario: ScenarioArgs,
}

/// What to run: shared by `run` and `compare`.
#[derive(Clone, Debug, clap::Args)]
pub struct ScenarioArgs {
    #[arg(long, value_enum, default_value = "one-to-one")]
    pub scenario: Scenario,
    /// 0, 1 or 2.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Payload bytes (at least 16: publisher, sequence and timestamp).
    #[arg(long, default_value_t = 16)]
    pub payload: usize,
    /// MQTT protocol: 4 (3.1.1) or 5 (5.0).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(4..=5))]
    pub mqtt: u8,
    /// Seconds the publishers send (idle: seconds the connections are held).
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Per publisher, stop after this many messages (persistent: messages sent offline).
    #[arg(long)]
    pub messages: Option<u64>,
    /// Total offered rate, messages/s over all publishers (default: as fast as possible;
    /// IoT: 10000).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Publishers (fan-in default 1000; IoT devices default 10000; persistent: live
    /// publishers, default 1).
    #[arg(long)]
    pub publishers: Option<usize>,
    /// Subscribers (fan-out default 1000; shared group members and IoT back ends default 4).
    #[arg(long)]
    pub subscribers: Option<usize>,
    /// Idle: connections to hold (default 1000). Conn-rate: parallel workers (default 16).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Each publisher's own in-flight window at QoS 1/2 (may exceed the broker's).
    #[arg(long, default_value_t = 16)]
    pub max_inflight: u16,
    /// Deliveries outstanding (sent, not yet received) per subscriber connection before
    /// the publishers pause; keeps a maximum-rate run below the broker's queue limits.
    /// 0: no end-to-end limit (publishers only wait for their own acknowledgements).
    /// Not used with `--rate` (a fixed offered load is an open loop).
    /// (Mosquitto 2.0.11 was seen dropping QoS 1 messages with 500 outstanding for a
    /// subscriber whose queue limit was 1000; 100 keeps both brokers below their limits.)
    #[arg(long, default_value_t = 100)]
    pub e2e_window: u64,
    /// Spread client sockets over 127.0.0.1..=127.0.0.N, for many connections.
    #[arg(long, default_value_t = 1)]
    pub source_ips: u8,
    /// Seconds to wait, after sending stops, for acknowledgements and deliveries.
    #[arg(long, default_value_t = 10.0)]
    pub drain_timeout: f64,
    /// Idle: generator processes sharing the connections (each is limited by its own
    /// open-file limit, e.g. 20,000).
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// Connections being opened at the same time.
    #[arg(long, default_value_t = 100)]
    pub connect_concurrency: usize,
    /// Generator threads (1: a single-threaded runtime, the least overhead).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Kill the run after this many seconds whatever happens (default: duration +
    /// drain timeout + 60).
    #[arg(long)]
    pub hard_timeout: Option<f64>,
}

impl ScenarioArgs {
    /// The same arguments as command-line words, for a child `run`.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--scenario".to_owned(),
            self.scenario.name().to_owned(),
            format!("--qos={}", self.qos),
            format!("--payload={}", self.payload),
            format!("--mqtt={}", self.mqtt),
            format!("--duration={}", self.duration),
            format!("--max-inflight={}", self.max_inflight),
            format!("--e2e-window={}", self.e2e_window),
            format!("--source-ips={}", self.source_ips),
            format!("--drain-timeout={}", self.drain_timeout),
            format!("--connect-concurrency={}", self.connect_concurrency),
            format!("--processes={}", self.processes),
            format!("--threads={}", self.threads),
        ];
        let optional = [
            ("messages", self.messages.map(|v| v.to_string())),
            ("rate", self.rate.map(|v| v.to_string())),
            ("publishers", self.publishers.map(|v| v.to_string())),
            ("subscribers", self.subscribers.map(|v| v.to_string())),
            ("connections", self.connections.map(|v| v.to_string())),
            ("hard-timeout", self.hard_timeout.map(|v| v.to_string())),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                args.push(format!("--{name}={value}"));
            }
        }
        args
    }

    /// The hard limit on a whole run.
    pub fn hard_timeout(&self) -> Duration {
        let default = self.duration + self.drain_timeout + 60.0;
        secs(self.hard_timeout.unwrap_or(default))
    }

    /// Run options for a broker at `broker`.
    pub fn options(&self, broker: SocketAddr, broker_pid: Option<u32>, label: &str) -> RunOptions {
        let qos = QoS::from_bits(self.qos).unwrap_or(QoS::AtLeastOnce);
        let rate = match (self.rate, self.scenario) {
            (None, Scenario::Iot) => Some(10_000.0),
            (rate, _) => rate,
        };
        let connections = self.connections.unwrap_or(match self.scenario {
            Scenario::ConnRate => 16,
            _ => 1000,
        });
        RunOptions {
            broker,
            broker_label: label.to_owned(),
            scenario: self.scenario,
            qos,
            version: if self.mqtt == 5 {
                ProtocolVersion::V5
            } else {
                ProtocolVersion::V3_1_1
            },
            payload: self.payload.max(crate::payload::HEADER_LEN),
            duration: secs(self.duration),
            messages: self.messages,
            rate,
            publishers: self.publishers,
            subscribers: self.subscribers,
            connections,
            max_inflight: self.max_inflight.max(1),
            e2e_window: self.e2e_window,
            source_ips: self.source_ips.clamp(1, 254),
            broker_pid,
            drain_timeout: secs(self.drain_timeout),
            connect_concurrency: self.connect_concurrency.max(1),
            processes: self.processes.max(1),
            run_id: run_id(),
            tls_ca: None,
        }
    }
}

/// Seconds from the command line; negative or NaN count as zero.
fn secs(value: f64) -> Duration {
    Duration::try_from_secs_f64(value).unwrap_or(Duration::ZERO)
}

/// A prefix unique to this run (process id and start time), so that client ids and topics
/// of consecutive runs against one broker never meet.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("b{}x{nanos:x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    /// What `compare` hands to its children parses back to the same scenario.
    #[test]
    fn scenario_args_round_trip() {
        let cli = Cli::try_parse_from([
            "aviary-bench",
            "run",
            "--scenario",
            "fan-out",
            "--qos",
            "2",
            "--payload",
            "1024",
            "--subscribers",
            "7",
            "--rate",
            "500",
            "--duration",
            "1.5",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        let mut words = vec!["aviary-bench".to_owned(), "run".to_owned()];
        words.extend(run.scenario.to_args());
        let again = Cli::try_parse_from(words).unwrap();
        let Command::Run(again) = again.command else {
            panic!("not run")
        };
        assert_eq!(again.scenario.to_args(), run.scenario.to_args());
        assert_eq!(again.scenario.subscribers, Some(7));
        assert_eq!(again.scenario.qos, 2);
    }
}
