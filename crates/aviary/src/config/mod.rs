//! The broker's configuration, in two layers: what an `aviary.toml` file says (`file`,
//! plain serde with every key optional), then the `AVIARY_*` environment overrides
//! (`env`), then validation (`validate`) into the typed [`Config`] the server runs on.
//!
//! Every key has a default; `aviary.example.toml` at the repository root documents each one
//! and a test checks that it spells exactly the defaults.

mod env;
mod file;
pub(crate) mod security;
mod validate;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use aviary_core::BrokerConfig;

pub use self::env::unknown_variables;
use self::file::FileConfig;
pub use self::security::{SecurityConfig, TlsListenerConfig};

/// The validated configuration of one broker process.
#[derive(Clone, Debug)]
pub struct Config {
    /// Directory for durable state (sessions, retained messages, management state).
    pub data_dir: PathBuf,
    /// How the process logs.
    pub log: LogConfig,
    /// The MQTT-over-TCP listener.
    pub listener: ListenerConfig,
    /// Protocol limits and settings handed to the broker core.
    pub mqtt: BrokerConfig,
    /// How durable state is written.
    pub store: StoreConfig,
    /// Authentication, authorization and TLS (`[auth]`, `[authorization]`, `[tls_listener]`).
    pub security: SecurityConfig,
    /// The management HTTP API.
    pub api: ApiConfig,
    /// The plan's rates and retained count until changed through the API (`None`: the
    /// derived default).
    pub limits: LimitsConfig,
}

/// `[limits]`: initial plan limits (the API's `/api/v1/limits` changes and stores them;
/// a stored plan wins over this section). Connections, subscriptions per session and the
/// message size come from `[mqtt]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Metered units per second (messages received and delivered, connects, wills);
    /// default: no limit.
    pub max_messages_per_second: Option<u32>,
    /// SUBSCRIBEs per second; default max(100, mqtt.max_connections / 100).
    pub subscribe_rate: Option<u32>,
    /// UNSUBSCRIBEs per second; default as `subscribe_rate`.
    pub unsubscribe_rate: Option<u32>,
    /// CONNECTs per second; default as `subscribe_rate`.
    pub connect_rate: Option<u32>,
    /// CONNECTs carrying a will per second; default 100.
    pub will_connect_rate: Option<u32>,
    /// Retained messages stored at most; default 1,000,000.
    pub max_retained: Option<u32>,
}

/// `[store]`: the embedded store in `data_dir`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// When acknowledgements may leave: after the fsync of their group commit
    /// (`immediate`, the default), or after the commit without waiting for its fsync
    /// (`relaxed`).
    pub durability: crate::store::Durability,
    /// While idle, how often the store records that the broker is alive, when some
    /// connected client has a session that expires once disconnected or a will: after a
    /// crash, those connections are taken to have ended at the last such record, so their
    /// sessions expire and their wills are published up to this long early. 1 s to 1 h.
    pub liveness_interval: Duration,
}

/// `[api]`: the management HTTP API (JSON under `/api/v1/`, and `/metrics`).
#[derive(Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Off: no API listener at all (the broker is then managed by its config file only).
    pub enabled: bool,
    /// Address to bind; port 0 picks a free port (see `RunningServer::api_addr`). Loopback
    /// by default: the API can change everything.
    pub bind: SocketAddr,
    /// A bootstrap key accepted in addition to the stored ones; `None` makes the first
    /// start without stored keys generate one and print it once.
    pub api_key: Option<String>,
}

impl std::fmt::Debug for ApiConfig {
    /// Never prints the key itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("enabled", &self.enabled)
            .field("bind", &self.bind)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// `[log]`: logging, through `tracing`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// A `tracing` filter directive (`info`, `aviary=debug,warn`); `RUST_LOG` overrides it.
    pub level: String,
    /// Human-readable lines or one JSON object per line (for log collectors).
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable text, the default.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[listener]`: the MQTT TCP listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Address to bind; port 0 picks a free port (see `RunningServer::mqtt_addr`).
    pub bind: SocketAddr,
    /// The longest a plain TCP connection stays idle before it is parked: its task and its
    /// tokio I/O registration are given up until it has work again (`crate::parking`),
    /// about 900 bytes less per idle connection. Just after connecting, a connection parks
    /// after 1 s of silence (2 s if it was busy); once it has talked for a whole period
    /// after its CONNACK, or parked and resumed, after this long (default 10 s). Parking and resuming cost a few
    /// microseconds of CPU (a task spawn and two epoll registrations). Zero never parks.
    /// Applies to every plain TCP listener, including those created through the API.
    pub park_after: Duration,
}

impl Default for Config {
    /// The embedded defaults: MQTT on 0.0.0.0:1883, the API on 127.0.0.1:8080, data under `./data`, `info` text logs.
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            log: LogConfig {
                level: "info".to_owned(),
                format: LogFormat::Text,
            },
            listener: ListenerConfig {
                bind: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 1883)),
                park_after: Duration::from_secs(10),
            },
            mqtt: BrokerConfig::default(),
            store: StoreConfig {
                durability: crate::store::Durability::Immediate,
                liveness_interval: crate::store::DEFAULT_LIVENESS_INTERVAL,
            },
            api: ApiConfig {
                enabled: true,
                bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
                api_key: None,
            },
            limits: LimitsConfig::default(),
            security: SecurityConfig::default(),
        }
    }
}

impl Config {
    /// Loads the configuration: the file at `path` if given (else only defaults), then the
    /// `AVIARY_*` variables of `env` (the binary passes the process environment).
    pub fn load<I, K, V>(path: Option<&Path>, env: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut file = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                FileConfig::parse(&text, path)?
            }
            None => FileConfig::default(),
        };
        env::apply_env(&mut file, env)?;
        validate::validate(&file)
    }

    /// Parses configuration text as if read from a file called `name` (no environment).
    pub fn from_toml(text: &str, name: &str) -> Result<Self, ConfigError> {
        validate::validate(&FileConfig::parse(text, Path::new(name))?)
    }
}

/// Why a configuration could not be loaded. Every variant names the file, key or variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a value has the wrong type.
    #[error("{}: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    /// The file has a key no version of the configuration defines.
    #[error("unknown key `{key}` in {}", path.display())]
    UnknownKey { key: String, path: PathBuf },
    /// An environment variable whose text cannot be a value of its key.
    #[error("{var}: {message}")]
    Env { var: String, message: String },
    /// A key whose value is out of range or not one of the allowed values.
    #[error("{key}{}: {message}", var.as_ref().map(|v| format!(" (from {v})")).unwrap_or_default())]
    Invalid {
        key: String,
        /// The environment variable the value came from, if any.
        var: Option<String>,
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::file::{
        field_names, ApiSection, LimitsSection, ListenerSection, LogSection, MqttSection,
        StoreSection,
    };
    use super::*;

    /// The example file in the repository root, which documents every key.
    const EXAMPLE: &str = include_str!("../../../../aviary.example.toml");

    #[test]
    fn example_file_spells_exactly_the_defaults() {
        let config = Config::from_toml(EXAMPLE, "aviary.example.toml").unwrap();
        assert_eq!(format!("{config:?}"), format!("{:?}", Config::default()));
    }

    #[test]
    fn example_file_sets_every_key() {
        let table: toml::Table = toml::from_str(EXAMPLE).unwrap();
        let sections = [
            ("log", field_names::<LogSection>()),
            ("listener", field_names::<ListenerSection>()),
            ("mqtt", field_names::<MqttSection>()),
            ("store", field_names::<StoreSection>()),
            ("api", field_names::<ApiSection>()),
            ("limits", field_names::<LimitsSection>()),
        ];
        assert!(table.contains_key("data_dir"));
        for (section, keys) in sections {
            let section_table = table[section].as_table().unwrap();
            for key in keys {
                // The bootstrap key has no default, and the limits' defaults are derived:
                // the example can only show them commented.
                if (section, *key) == ("api", "api_key") || section == "limits" {
                    continue;
                }
                assert!(section_table.contains_key(*key), "{section}.{key} missing");
            }
        }
    }

    #[test]
    fn load_without_a_file_uses_defaults_and_environment() {
        let env = [("AVIARY_LISTENER_BIND", "127.0.0.1:0"), ("HOME", "/root")];
        let config = Config::load(None, env).unwrap();
        assert_eq!(config.listener.bind, "127.0.0.1:0".parse().unwrap());
        assert_eq!(config.data_dir, PathBuf::from("./data"));
    }

    #[test]
    fn load_reads_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aviary.toml");
        std::fs::write(&path, "[mqtt]\nmax_subscriptions_per_session = 3\n").unwrap();
        let config = Config::load(Some(&path), std::iter::empty::<(String, String)>()).unwrap();
        assert_eq!(config.mqtt.max_subscriptions_per_session, 3);
    }

    #[test]
    fn missing_file_is_named() {
        let err = Config::load(
            Some(Path::new("/nonexistent/aviary.toml")),
            std::iter::empty::<(String, String)>(),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read /nonexistent/aviary.toml: "),
            "{err}"
        );
    }
}
