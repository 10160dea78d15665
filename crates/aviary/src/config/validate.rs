//! Validation: the file layer (after environment overrides) becomes a [`Config`] with typed
//! values, defaults filled in, and every problem reported with its key and, when the value
//! came from the environment, its variable.

use std::net::SocketAddr;
use std::time::Duration;

use aviary_core::{BrokerConfig, QueueOverflow};

use super::file::{FileConfig, RawDuration};
use super::{
    ApiConfig, Config, ConfigError, LimitsConfig, ListenerConfig, LogConfig, LogFormat, StoreConfig,
};
use crate::store::Durability;

/// Checks every key of `file` and builds the validated configuration.
pub(crate) fn validate(file: &FileConfig) -> Result<Config, ConfigError> {
    let defaults = Config::default();
    let check = Checker { file };

    let data_dir = match &file.data_dir {
        Some(dir) if dir.as_os_str().is_empty() => {
            return Err(check.invalid("data_dir", "must not be empty".into()))
        }
        Some(dir) => dir.clone(),
        None => defaults.data_dir,
    };

    let level = match &file.log.level {
        Some(level) => {
            // The same parser the binary uses, so a bad directive fails here, with its key.
            tracing_subscriber::EnvFilter::builder()
                .parse(level)
                .map_err(|e| check.invalid("log.level", format!("{e} in {level:?}")))?;
            level.clone()
        }
        None => defaults.log.level,
    };
    let format = match file.log.format.as_deref() {
        None => defaults.log.format,
        Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(check.invalid(
                "log.format",
                format!("expected \"text\" or \"json\", got {other:?}"),
            ))
        }
    };

    let bind = match &file.listener.bind {
        Some(text) => text.trim().parse::<SocketAddr>().map_err(|_| {
            check.invalid(
                "listener.bind",
                format!("expected an address and port such as \"0.0.0.0:1883\", got {text:?}"),
            )
        })?,
        None => defaults.listener.bind,
    };
    let park_after = match &file.listener.park_after {
        Some(raw) => {
            parse_duration(raw).map_err(|message| check.invalid("listener.park_after", message))?
        }
        None => defaults.listener.park_after,
    };
    let liveness_interval = match &file.store.liveness_interval {
        Some(raw) => {
            let interval = parse_duration(raw)
                .map_err(|message| check.invalid("store.liveness_interval", message))?;
            if !(1..=3600).contains(&interval.as_secs()) {
                return Err(check.invalid(
                    "store.liveness_interval",
                    format!(
                        "must be between 1 second and 1 hour, got {} seconds",
                        interval.as_secs()
                    ),
                ));
            }
            interval
        }
        None => defaults.store.liveness_interval,
    };

    let api = ApiConfig {
        enabled: file.api.enabled.unwrap_or(defaults.api.enabled),
        bind: match &file.api.bind {
            Some(text) => text.trim().parse::<SocketAddr>().map_err(|_| {
                check.invalid(
                    "api.bind",
                    format!(
                        "expected an address and port such as \"127.0.0.1:8080\", got {text:?}"
                    ),
                )
            })?,
            None => defaults.api.bind,
        },
        api_key: match &file.api.api_key {
            Some(key) if key.trim().len() < 16 => {
                return Err(
                    check.invalid("api.api_key", "must be at least 16 characters long".into())
                )
            }
            Some(key) => Some(key.trim().to_owned()),
            None => None,
        },
    };

    let l = &file.limits;
    let rate = |key: &str, value: Option<i64>| {
        value
            .map(|v| check.int::<u32>(key, Some(v), 0, 1, i64::from(u32::MAX)))
            .transpose()
    };
    let limits = LimitsConfig {
        max_messages_per_second: rate("limits.max_messages_per_second", l.max_messages_per_second)?,
        subscribe_rate: rate("limits.subscribe_rate", l.subscribe_rate)?,
        unsubscribe_rate: rate("limits.unsubscribe_rate", l.unsubscribe_rate)?,
        connect_rate: rate("limits.connect_rate", l.connect_rate)?,
        will_connect_rate: rate("limits.will_connect_rate", l.will_connect_rate)?,
        max_retained: l
            .max_retained
            .map(|v| check.int::<u32>("limits.max_retained", Some(v), 0, 0, i64::from(u32::MAX)))
            .transpose()?,
    };

    Ok(Config {
        data_dir,
        log: LogConfig { level, format },
        listener: ListenerConfig { bind, park_after },
        mqtt: check.mqtt(defaults.mqtt)?,
        store: StoreConfig {
            durability: match file.store.durability.as_deref() {
                None => defaults.store.durability,
                Some("immediate") => Durability::Immediate,
                Some("relaxed") => Durability::Relaxed,
                Some(other) => {
                    return Err(check.invalid(
                        "store.durability",
                        format!("expected \"immediate\" or \"relaxed\", got {other:?}"),
                    ))
                }
            },
            liveness_interval,
        },
        api,
        limits,
        security: super::security::validate(
            &file.auth,
            &file.authorization,
            file.tls_listener.as_ref(),
        )?,
    })
}

/// Reads keys of one file with their defaults and builds errors that name them.
struct Checker<'a> {
    /// The file (with environment overrides) being validated.
    file: &'a FileConfig,
}

impl Checker<'_> {
    /// The `[mqtt]` section over the core's defaults. Fields are assigned one by one on top
    /// of `BrokerConfig::default()` so that a field the core adds later keeps its default
    /// until it is mirrored here (and in the file layer, env pass and example file).
    fn mqtt(&self, mut c: BrokerConfig) -> Result<BrokerConfig, ConfigError> {
        let m = &self.file.mqtt;
        let u16_max = u16::MAX as i64;
        let u32_max = u32::MAX as i64;
        c.max_inflight = self.int(
            "mqtt.max_inflight",
            m.max_inflight,
            c.max_inflight,
            1,
            u16_max,
        )?;
        c.max_inflight_v5 = self.int(
            "mqtt.max_inflight_v5",
            m.max_inflight_v5,
            c.max_inflight_v5,
            1,
            u16_max,
        )?;
        c.max_queued_messages = self.int(
            "mqtt.max_queued_messages",
            m.max_queued_messages,
            c.max_queued_messages,
            0,
            u32_max,
        )?;
        c.max_queued_bytes = self.int(
            "mqtt.max_queued_bytes",
            m.max_queued_bytes,
            c.max_queued_bytes,
            0,
            i64::MAX,
        )?;
        c.queue_overflow = match m.queue_overflow.as_deref() {
            None => c.queue_overflow,
            Some("drop_new") => QueueOverflow::DropNew,
            Some("drop_oldest") => QueueOverflow::DropOldest,
            Some(other) => {
                return Err(self.invalid(
                    "mqtt.queue_overflow",
                    format!("expected \"drop_new\" or \"drop_oldest\", got {other:?}"),
                ))
            }
        };
        c.retry_interval = match &m.retry_interval {
            None => c.retry_interval,
            Some(raw) => {
                let interval = parse_duration(raw)
                    .map_err(|message| self.invalid("mqtt.retry_interval", message))?;
                // 0 turns the retry timer off.
                Some(interval).filter(|d| !d.is_zero())
            }
        };
        c.max_keep_alive = self.int(
            "mqtt.max_keep_alive",
            m.max_keep_alive,
            c.max_keep_alive,
            1,
            u16_max,
        )?;
        c.max_subscriptions_per_session = self.int(
            "mqtt.max_subscriptions_per_session",
            m.max_subscriptions_per_session,
            c.max_subscriptions_per_session,
            1,
            u32_max,
        )?;
        c.max_connections = self.int(
            "mqtt.max_connections",
            m.max_connections,
            c.max_connections,
            1,
            u32_max,
        )?;
        // The largest packet MQTT can express: 268,435,455 bytes of remaining length plus a
        // 5-byte fixed header; below 64 bytes not even an ordinary CONNECT fits.
        c.max_packet_size = self.int(
            "mqtt.max_packet_size",
            m.max_packet_size,
            c.max_packet_size,
            64,
            268_435_460,
        )?;
        // A server must accept client ids of 1 to 23 characters [MQTT-3.1.3-5]; a smaller
        // limit is allowed (tests use one) but breaks that guarantee, as the example says.
        c.max_client_id_len = self.int(
            "mqtt.max_client_id_len",
            m.max_client_id_len,
            c.max_client_id_len,
            1,
            u16_max,
        )?;
        c.max_topic_levels = self.int(
            "mqtt.max_topic_levels",
            m.max_topic_levels,
            c.max_topic_levels,
            1,
            u16_max,
        )?;
        c.topic_alias_maximum = self.int(
            "mqtt.topic_alias_maximum",
            m.topic_alias_maximum,
            c.topic_alias_maximum,
            0,
            u16_max,
        )?;
        // A Receive Maximum of 0 is not allowed on the wire [MQTT-3.2.2.3.3].
        c.receive_maximum = self.int(
            "mqtt.receive_maximum",
            m.receive_maximum,
            c.receive_maximum,
            1,
            u16_max,
        )?;
        c.max_session_expiry_interval = self.int(
            "mqtt.max_session_expiry_interval",
            m.max_session_expiry_interval,
            c.max_session_expiry_interval,
            0,
            u32_max,
        )?;
        if let Some(raw) = &m.connect_timeout {
            // 0 turns the timeout off (the core treats a zero duration so).
            c.connect_timeout = parse_duration(raw)
                .map_err(|message| self.invalid("mqtt.connect_timeout", message))?;
        }
        c.retry_v5 = m.retry_v5.unwrap_or(c.retry_v5);
        Ok(c)
    }

    /// An integer key within `min..=max`, or `default` when unset.
    fn int<T: TryFrom<i64>>(
        &self,
        key: &str,
        value: Option<i64>,
        default: T,
        min: i64,
        max: i64,
    ) -> Result<T, ConfigError> {
        let Some(value) = value else {
            return Ok(default);
        };
        if !(min..=max).contains(&value) {
            let message = format!("must be between {min} and {max}, got {value}");
            return Err(self.invalid(key, message));
        }
        T::try_from(value).map_err(|_| self.invalid(key, format!("{value} does not fit")))
    }

    /// An error for `key`, naming the environment variable when the value came from one.
    fn invalid(&self, key: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            key: key.to_owned(),
            var: self.file.env_origins.get(key).cloned(),
            message,
        }
    }
}

/// `120`, `"120"`, `"120s"`, `"2m"`, `"1h"`, `"1d"`: whole seconds, minutes, hours or days.
fn parse_duration(raw: &RawDuration) -> Result<Duration, String> {
    let seconds = match raw {
        RawDuration::Seconds(s) => *s,
        RawDuration::Text(text) => {
            let t = text.trim();
            let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
            let (number, unit) = t.split_at(split);
            let unit_seconds = match unit.trim() {
                "" | "s" => 1,
                "m" => 60,
                "h" => 3600,
                "d" => 86_400,
                _ => return Err(duration_error(text)),
            };
            let number: i64 = number.parse().map_err(|_| duration_error(text))?;
            number
                .checked_mul(unit_seconds)
                .ok_or_else(|| duration_error(text))?
        }
    };
    // Up to a year; beyond that the value is surely a mistake (and overflows no clock).
    let max = 365 * 86_400;
    if !(0..=max).contains(&seconds) {
        return Err(format!(
            "must be between 0 and {max} seconds, got {seconds}"
        ));
    }
    Ok(Duration::from_secs(seconds.unsigned_abs()))
}

/// The error for a duration string that does not parse.
fn duration_error(text: &str) -> String {
    format!("expected seconds or a duration such as \"120s\", \"2m\" or \"1h\", got {text:?}")
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::super::env::apply_env;
    use super::*;

    /// Validates `toml` text with `env` applied; returns the error text or the config.
    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, String> {
        let mut file =
            FileConfig::parse(toml, Path::new("aviary.toml")).map_err(|e| e.to_string())?;
        apply_env(&mut file, env.iter().copied()).map_err(|e| e.to_string())?;
        validate(&file).map_err(|e| e.to_string())
    }

    fn check_err(toml: &str, expected: &str) {
        assert_eq!(load(toml, &[]).unwrap_err(), expected, "for {toml:?}");
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        let config = load("", &[]).unwrap();
        assert_eq!(format!("{config:?}"), format!("{:?}", Config::default()));
    }

    #[test]
    fn values_are_typed() {
        let config = load(
            "data_dir = \"/d\"\n[log]\nlevel = \"aviary=debug,warn\"\nformat = \"json\"\n\
             [listener]\nbind = \"[::1]:1884\"\n\
             [mqtt]\nmax_inflight = 3\nqueue_overflow = \"drop_oldest\"\nretry_interval = \"2m\"\n\
             max_session_expiry_interval = 4294967295\ntopic_alias_maximum = 0",
            &[],
        )
        .unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/d"));
        assert_eq!(config.log.level, "aviary=debug,warn");
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(config.listener.bind, "[::1]:1884".parse().unwrap());
        assert_eq!(config.mqtt.max_inflight, 3);
        assert_eq!(config.mqtt.queue_overflow, QueueOverflow::DropOldest);
        assert_eq!(config.mqtt.retry_interval, Some(Duration::from_secs(120)));
        assert_eq!(config.mqtt.max_session_expiry_interval, u32::MAX);
        assert_eq!(config.mqtt.topic_alias_maximum, 0);
    }

    #[test]
    fn retry_interval_forms() {
        let check = |value: &str, expected: Option<u64>| {
            let config = load(&format!("[mqtt]\nretry_interval = {value}"), &[]).unwrap();
            assert_eq!(
                config.mqtt.retry_interval,
                expected.map(Duration::from_secs),
                "{value}"
            );
        };
        check("120", Some(120));
        check("\"120\"", Some(120));
        check("\"45s\"", Some(45));
        check("\"2m\"", Some(120));
        check("\"1h\"", Some(3600));
        check("\"1d\"", Some(86_400));
        check("0", None);
        check("\"0s\"", None);
    }

    #[test]
    fn bad_retry_interval() {
        let expected = "mqtt.retry_interval: expected seconds or a duration such as \"120s\", \
                        \"2m\" or \"1h\", got \"soon\"";
        check_err("[mqtt]\nretry_interval = \"soon\"", expected);
        check_err(
            "[mqtt]\nretry_interval = -1",
            "mqtt.retry_interval: must be between 0 and 31536000 seconds, got -1",
        );
        check_err(
            "[mqtt]\nretry_interval = \"2y\"",
            &expected.replace("soon", "2y"),
        );
    }

    #[test]
    fn every_integer_range_is_checked() {
        let cases: &[(&str, i64, &str)] = &[
            ("max_inflight", 0, "1 and 65535"),
            ("max_inflight", 65_536, "1 and 65535"),
            ("max_queued_messages", -1, "0 and 4294967295"),
            ("max_inflight_v5", 0, "1 and 65535"),
            ("max_keep_alive", 0, "1 and 65535"),
            ("max_subscriptions_per_session", 0, "1 and 4294967295"),
            ("max_connections", 0, "1 and 4294967295"),
            ("max_packet_size", 63, "64 and 268435460"),
            ("max_packet_size", 268_435_461, "64 and 268435460"),
            ("max_client_id_len", 0, "1 and 65535"),
            ("max_topic_levels", 0, "1 and 65535"),
            ("topic_alias_maximum", -1, "0 and 65535"),
            ("receive_maximum", 0, "1 and 65535"),
            (
                "max_session_expiry_interval",
                4_294_967_296,
                "0 and 4294967295",
            ),
        ];
        for (key, value, range) in cases {
            check_err(
                &format!("[mqtt]\n{key} = {value}"),
                &format!("mqtt.{key}: must be between {range}, got {value}"),
            );
        }
    }

    #[test]
    fn liveness_interval_is_a_duration_from_a_second_to_an_hour() {
        let config = load("[store]\nliveness_interval = \"30s\"", &[]).unwrap();
        assert_eq!(config.store.liveness_interval, Duration::from_secs(30));
        let env = [("AVIARY_STORE_LIVENESS_INTERVAL", "1h")];
        let config = load("", &env).unwrap();
        assert_eq!(config.store.liveness_interval, Duration::from_secs(3600));
        for (value, got) in [("0", "0"), ("\"61m\"", "3660")] {
            check_err(
                &format!("[store]\nliveness_interval = {value}"),
                &format!(
                    "store.liveness_interval: must be between 1 second and 1 hour, got {got} seconds"
                ),
            );
        }
        check_err(
            "[store]\nliveness_interval = \"often\"",
            "store.liveness_interval: expected seconds or a duration such as \"120s\", \
             \"2m\" or \"1h\", got \"often\"",
        );
    }

    #[test]
    fn connect_timeout_and_retry_v5() {
        let config = load("[mqtt]\nconnect_timeout = \"30s\"\nretry_v5 = true", &[]).unwrap();
        assert_eq!(config.mqtt.connect_timeout, Duration::from_secs(30));
        assert!(config.mqtt.retry_v5);
        let env = [
            ("AVIARY_MQTT_CONNECT_TIMEOUT", "0"),
            ("AVIARY_MQTT_RETRY_V5", "1"),
        ];
        let config = load("", &env).unwrap();
        assert_eq!(config.mqtt.connect_timeout, Duration::ZERO, "0 is off");
        assert!(config.mqtt.retry_v5);
        let err = load("", &[("AVIARY_MQTT_RETRY_V5", "yes")]).unwrap_err();
        assert_eq!(
            err,
            "AVIARY_MQTT_RETRY_V5: expected true or false, got \"yes\""
        );
    }

    #[test]
    fn bad_enumerations() {
        check_err(
            "[mqtt]\nqueue_overflow = \"drop_all\"",
            "mqtt.queue_overflow: expected \"drop_new\" or \"drop_oldest\", got \"drop_all\"",
        );
        check_err(
            "[log]\nformat = \"xml\"",
            "log.format: expected \"text\" or \"json\", got \"xml\"",
        );
    }

    #[test]
    fn bad_bind_address() {
        check_err(
            "[listener]\nbind = \"localhost\"",
            "listener.bind: expected an address and port such as \"0.0.0.0:1883\", got \"localhost\"",
        );
    }

    #[test]
    fn bad_log_level() {
        let err = load("[log]\nlevel = \"aviary=loud\"", &[]).unwrap_err();
        assert!(err.starts_with("log.level: "), "{err}");
    }

    #[test]
    fn limits_and_api_keys_are_checked() {
        check_err(
            "[limits]\nconnect_rate = 0",
            "limits.connect_rate: must be between 1 and 4294967295, got 0",
        );
        check_err(
            "[api]\nbind = \"api\"",
            "api.bind: expected an address and port such as \"127.0.0.1:8080\", got \"api\"",
        );
        check_err(
            "[api]\napi_key = \"short\"",
            "api.api_key: must be at least 16 characters long",
        );
        let config = load("[limits]\nconnect_rate = 5\nmax_retained = 0", &[]).unwrap();
        assert_eq!(config.limits.connect_rate, Some(5));
        assert_eq!(config.limits.max_retained, Some(0));
        assert_eq!(config.limits.subscribe_rate, None);
    }

    #[test]
    fn empty_data_dir() {
        check_err("data_dir = \"\"", "data_dir: must not be empty");
    }

    #[test]
    fn invalid_value_from_the_environment_names_the_variable() {
        let err = load("", &[("AVIARY_MQTT_MAX_INFLIGHT", "0")]).unwrap_err();
        assert_eq!(
            err,
            "mqtt.max_inflight (from AVIARY_MQTT_MAX_INFLIGHT): must be between 1 and 65535, got 0"
        );
        let err = load("", &[("AVIARY_LISTENER_BIND", "nowhere")]).unwrap_err();
        assert!(
            err.starts_with("listener.bind (from AVIARY_LISTENER_BIND): "),
            "{err}"
        );
    }

    #[test]
    fn environment_overrides_reach_the_validated_config() {
        let config = load(
            "[mqtt]\nmax_inflight = 4",
            &[
                ("AVIARY_MQTT_MAX_INFLIGHT", "32"),
                ("AVIARY_MQTT_RETRY_INTERVAL", "0"),
                ("AVIARY_LOG_FORMAT", "json"),
            ],
        )
        .unwrap();
        assert_eq!(config.mqtt.max_inflight, 32);
        assert_eq!(config.mqtt.retry_interval, None);
        assert_eq!(config.log.format, LogFormat::Json);
    }
}
