//! The file layer of the configuration: exactly what an `aviary.toml` may say, as serde
//! structs in which every key is optional. Nothing here checks ranges or applies defaults;
//! that is [`super::validate`]'s job, so that every problem is reported with its key.
//!
//! Integers are read as `i64` (TOML's integer type) and enumerations as strings on purpose:
//! a value of the wrong range or spelling then reaches validation, which names the key and
//! the allowed values, instead of failing inside serde with a message about Rust types.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserialize, Deserializer, Visitor};

use super::ConfigError;

/// The whole file. Sections missing from the file are empty sections.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct FileConfig {
    /// Where the broker keeps its durable state.
    pub(crate) data_dir: Option<PathBuf>,
    /// `[log]`: how the broker logs.
    pub(crate) log: LogSection,
    /// `[listener]`: the MQTT-over-TCP listener.
    pub(crate) listener: ListenerSection,
    /// `[mqtt]`: the broker's protocol limits, one key per `aviary_core::BrokerConfig` field.
    pub(crate) mqtt: MqttSection,
    /// `[store]`: how durable state is written.
    pub(crate) store: StoreSection,
    /// `[api]`: the management HTTP API.
    pub(crate) api: ApiSection,
    /// `[limits]`: the plan's rates and retained count until changed through the API.
    pub(crate) limits: LimitsSection,
    /// `[auth]`: authentication (see `super::security`).
    pub(crate) auth: super::security::AuthFile,
    /// `[authorization]`: policies (see `super::security`).
    pub(crate) authorization: super::security::AuthorizationFile,
    /// `[tls_listener]`: an MQTT-over-TLS listener (see `super::security`).
    pub(crate) tls_listener: Option<super::security::TlsListenerFile>,
    /// Which keys were set from environment variables (key → variable), so that validation
    /// errors can name the variable instead of a file the value never came from.
    #[serde(skip)]
    pub(crate) env_origins: BTreeMap<String, String>,
}

/// `[log]`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct LogSection {
    /// A `tracing` filter directive such as `info` or `aviary=debug,warn`.
    pub(crate) level: Option<String>,
    /// `text` or `json`.
    pub(crate) format: Option<String>,
}

/// `[listener]`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ListenerSection {
    /// `host:port` to bind the MQTT TCP listener to.
    pub(crate) bind: Option<String>,
    /// Idle time after which a plain TCP connection is parked (`0` never parks).
    pub(crate) park_after: Option<RawDuration>,
}

/// `[store]`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct StoreSection {
    /// `immediate` or `relaxed`.
    pub(crate) durability: Option<String>,
    /// How often an idle store records that the broker is alive, when a record needs it.
    pub(crate) liveness_interval: Option<RawDuration>,
}

/// `[api]`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ApiSection {
    /// Whether the management API listens at all.
    pub(crate) enabled: Option<bool>,
    /// `host:port` of the management API (and `/metrics`).
    pub(crate) bind: Option<String>,
    /// A bootstrap API key; without it one is generated and printed at first start.
    pub(crate) api_key: Option<String>,
}

/// `[limits]`: every key optional; absent keys keep their derived defaults.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct LimitsSection {
    pub(crate) max_messages_per_second: Option<i64>,
    pub(crate) subscribe_rate: Option<i64>,
    pub(crate) unsubscribe_rate: Option<i64>,
    pub(crate) connect_rate: Option<i64>,
    pub(crate) will_connect_rate: Option<i64>,
    pub(crate) max_retained: Option<i64>,
}

/// `[mqtt]`: mirrors `aviary_core::BrokerConfig` field by field.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct MqttSection {
    pub(crate) max_inflight: Option<i64>,
    pub(crate) max_inflight_v5: Option<i64>,
    pub(crate) max_queued_messages: Option<i64>,
    pub(crate) max_queued_bytes: Option<i64>,
    /// `drop_new` or `drop_oldest`.
    pub(crate) queue_overflow: Option<String>,
    pub(crate) retry_interval: Option<RawDuration>,
    pub(crate) max_keep_alive: Option<i64>,
    pub(crate) max_subscriptions_per_session: Option<i64>,
    pub(crate) max_connections: Option<i64>,
    pub(crate) max_packet_size: Option<i64>,
    pub(crate) max_client_id_len: Option<i64>,
    pub(crate) max_topic_levels: Option<i64>,
    pub(crate) topic_alias_maximum: Option<i64>,
    pub(crate) receive_maximum: Option<i64>,
    pub(crate) max_session_expiry_interval: Option<i64>,
    pub(crate) connect_timeout: Option<RawDuration>,
    pub(crate) retry_v5: Option<bool>,
}

/// A duration as written by a person: whole seconds (`120`) or a string with a unit
/// (`"120s"`, `"2m"`, `"1h"`). Parsed into a `Duration` by validation.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(untagged)]
pub(crate) enum RawDuration {
    /// A bare integer: seconds.
    Seconds(i64),
    /// A number with a unit suffix, or a bare number in a string.
    Text(String),
}

impl FileConfig {
    /// Parses the text of a configuration file. `path` only names the file in errors.
    pub(crate) fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let syntax = |e: toml::de::Error| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string(),
        };
        // First find keys we do not know, to name them with their section; serde's own
        // `deny_unknown_fields` error stays as the backstop but cannot say the section.
        let table: toml::Table = toml::from_str(text).map_err(syntax)?;
        if let Some(key) = unknown_key(&table) {
            return Err(ConfigError::UnknownKey {
                key,
                path: path.to_owned(),
            });
        }
        toml::from_str(text).map_err(syntax)
    }
}

/// The first key of `table` (as `section.key`) that the file layer does not define.
fn unknown_key(table: &toml::Table) -> Option<String> {
    let top = field_names::<FileConfig>();
    for (name, value) in table {
        if !top.contains(&name.as_str()) {
            return Some(name.clone());
        }
        let known = match name.as_str() {
            "log" => field_names::<LogSection>(),
            "listener" => field_names::<ListenerSection>(),
            "mqtt" => field_names::<MqttSection>(),
            "store" => field_names::<StoreSection>(),
            "api" => field_names::<ApiSection>(),
            "limits" => field_names::<LimitsSection>(),
            _ => continue,
        };
        // A section that is not a table is a type error, which serde reports.
        if let toml::Value::Table(section) = value {
            if let Some(key) = section.keys().find(|k| !known.contains(&k.as_str())) {
                return Some(format!("{name}.{key}"));
            }
        }
    }
    None
}

/// The field names serde knows for struct `T`, asked from its derived `Deserialize` impl
/// (which hands them to `deserialize_struct`), so the list can never drift from the struct.
pub(crate) fn field_names<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    /// A deserializer that answers nothing and only records the field list it is shown.
    struct FieldNames<'a>(&'a mut &'static [&'static str]);

    /// Error type of [`FieldNames`]: deserialization always stops after the field list.
    #[derive(Debug)]
    struct Stop;

    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("field names recorded")
        }
    }
    impl std::error::Error for Stop {}
    impl de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Self
        }
    }

    impl<'de> Deserializer<'de> for FieldNames<'_> {
        type Error = Stop;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Stop> {
            *self.0 = fields;
            Err(Stop)
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    // The result is always `Err(Stop)`: only the recorded list matters.
    let _ = T::deserialize(FieldNames(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileConfig, ConfigError> {
        FileConfig::parse(text, Path::new("aviary.toml"))
    }

    #[test]
    fn empty_file_sets_nothing() {
        assert_eq!(parse("").unwrap(), FileConfig::default());
    }

    #[test]
    fn every_section_parses() {
        let file = parse(
            r#"
            data_dir = "/var/lib/aviary"
            [log]
            level = "debug"
            format = "json"
            [listener]
            bind = "127.0.0.1:1884"
            [mqtt]
            max_inflight = 8
            queue_overflow = "drop_oldest"
            retry_interval = "2m"
            "#,
        )
        .unwrap();
        assert_eq!(file.data_dir, Some(PathBuf::from("/var/lib/aviary")));
        assert_eq!(file.log.level.as_deref(), Some("debug"));
        assert_eq!(file.log.format.as_deref(), Some("json"));
        assert_eq!(file.listener.bind.as_deref(), Some("127.0.0.1:1884"));
        assert_eq!(file.mqtt.max_inflight, Some(8));
        assert_eq!(file.mqtt.queue_overflow.as_deref(), Some("drop_oldest"));
        assert_eq!(
            file.mqtt.retry_interval,
            Some(RawDuration::Text("2m".into()))
        );
    }

    #[test]
    fn retry_interval_accepts_an_integer() {
        let file = parse("[mqtt]\nretry_interval = 30").unwrap();
        assert_eq!(file.mqtt.retry_interval, Some(RawDuration::Seconds(30)));
    }

    #[test]
    fn unknown_key_in_a_section_is_named_with_its_section() {
        let err = parse("[mqtt]\nfoo = 1").unwrap_err();
        assert_eq!(err.to_string(), "unknown key `mqtt.foo` in aviary.toml");
    }

    #[test]
    fn unknown_top_level_key_and_section_are_named() {
        let err = parse("colour = \"blue\"").unwrap_err();
        assert_eq!(err.to_string(), "unknown key `colour` in aviary.toml");
        let err = parse("[tls]\nport = 1").unwrap_err();
        assert_eq!(err.to_string(), "unknown key `tls` in aviary.toml");
    }

    #[test]
    fn wrong_type_is_a_syntax_error_naming_the_file() {
        let err = parse("[mqtt]\nmax_inflight = \"many\"").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("aviary.toml: "), "{text}");
        assert!(text.contains("max_inflight"), "{text}");
    }

    #[test]
    fn broken_toml_is_a_syntax_error() {
        let err = parse("[mqtt\n").unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
    }

    #[test]
    fn field_names_lists_the_struct_fields() {
        assert_eq!(field_names::<LogSection>(), ["level", "format"]);
        assert_eq!(
            field_names::<FileConfig>(),
            [
                "data_dir",
                "log",
                "listener",
                "mqtt",
                "store",
                "api",
                "limits",
                "auth",
                "authorization",
                "tls_listener"
            ]
        );
        assert_eq!(field_names::<MqttSection>().len(), 17);
    }
}
