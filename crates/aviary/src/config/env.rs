//! The environment override pass: every key of the file layer can be set with a variable
//! named `AVIARY_` + section + key in upper case (`AVIARY_MQTT_MAX_INFLIGHT`,
//! `AVIARY_LOG_LEVEL`, `AVIARY_DATA_DIR`). Variables win over the file.
//!
//! The environment is passed in as pairs rather than read here, so tests are deterministic
//! and never touch the process environment.

use super::file::{FileConfig, RawDuration};
use super::ConfigError;

/// Prefix of every variable this pass reads.
const PREFIX: &str = "AVIARY_";

/// Applies every `AVIARY_*` variable of `env` that names a key to `file`. Other
/// `AVIARY_*` variables are left alone here (test scripts and tools use the prefix too);
/// [`unknown_variables`] lists them so the binary can warn about likely typos.
pub(crate) fn apply_env<I, K, V>(file: &mut FileConfig, env: I) -> Result<(), ConfigError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    for (name, value) in env {
        let name = name.as_ref();
        if !name.starts_with(PREFIX) {
            continue;
        }
        if let Some(key) = apply_var(file, name, value.as_ref())? {
            file.env_origins.insert(key.to_owned(), name.to_owned());
        }
    }
    Ok(())
}

/// The `AVIARY_*` names among `names` that are not configuration keys (nor `AVIARY_CONFIG`,
/// which names the file itself).
pub fn unknown_variables<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    names
        .into_iter()
        // AVIARY_CONFIG names the file; AVIARY_URL and AVIARY_API_KEY are the CLI's.
        .filter(|name| {
            name.starts_with(PREFIX)
                && !["AVIARY_CONFIG", "AVIARY_URL", "AVIARY_API_KEY"].contains(name)
        })
        .filter(|name| {
            // "1" is a valid value for every key, so only an unknown name yields `None`.
            matches!(apply_var(&mut FileConfig::default(), name, "1"), Ok(None))
        })
        .collect()
}

/// Sets the key that variable `var` stands for; returns that key as `section.key`, or
/// `None` when `var` names no key.
fn apply_var(
    file: &mut FileConfig,
    var: &str,
    value: &str,
) -> Result<Option<&'static str>, ConfigError> {
    let int = || parse_int(var, value);
    let text = || Some(value.to_owned());
    let mqtt = &mut file.mqtt;
    let key = match var {
        "AVIARY_DATA_DIR" => {
            file.data_dir = Some(value.into());
            "data_dir"
        }
        "AVIARY_LOG_LEVEL" => {
            file.log.level = text();
            "log.level"
        }
        "AVIARY_LOG_FORMAT" => {
            file.log.format = text();
            "log.format"
        }
        "AVIARY_LISTENER_BIND" => {
            file.listener.bind = text();
            "listener.bind"
        }
        "AVIARY_LISTENER_PARK_AFTER" => {
            file.listener.park_after = Some(RawDuration::Text(value.to_owned()));
            "listener.park_after"
        }
        "AVIARY_API_ENABLED" => {
            file.api.enabled = Some(parse_bool(var, value)?);
            "api.enabled"
        }
        "AVIARY_API_BIND" => {
            file.api.bind = text();
            "api.bind"
        }
        "AVIARY_API_API_KEY" => {
            file.api.api_key = text();
            "api.api_key"
        }
        "AVIARY_LIMITS_MAX_MESSAGES_PER_SECOND" => {
            file.limits.max_messages_per_second = int()?;
            "limits.max_messages_per_second"
        }
        "AVIARY_LIMITS_SUBSCRIBE_RATE" => {
            file.limits.subscribe_rate = int()?;
            "limits.subscribe_rate"
        }
        "AVIARY_LIMITS_UNSUBSCRIBE_RATE" => {
            file.limits.unsubscribe_rate = int()?;
            "limits.unsubscribe_rate"
        }
        "AVIARY_LIMITS_CONNECT_RATE" => {
            file.limits.connect_rate = int()?;
            "limits.connect_rate"
        }
        "AVIARY_LIMITS_WILL_CONNECT_RATE" => {
            file.limits.will_connect_rate = int()?;
            "limits.will_connect_rate"
        }
        "AVIARY_LIMITS_MAX_RETAINED" => {
            file.limits.max_retained = int()?;
            "limits.max_retained"
        }
        "AVIARY_MQTT_MAX_INFLIGHT" => {
            mqtt.max_inflight = int()?;
            "mqtt.max_inflight"
        }
        "AVIARY_MQTT_MAX_INFLIGHT_V5" => {
            mqtt.max_inflight_v5 = int()?;
            "mqtt.max_inflight_v5"
        }
        "AVIARY_MQTT_MAX_QUEUED_MESSAGES" => {
            mqtt.max_queued_messages = int()?;
            "mqtt.max_queued_messages"
        }
        "AVIARY_MQTT_MAX_QUEUED_BYTES" => {
            mqtt.max_queued_bytes = int()?;
            "mqtt.max_queued_bytes"
        }
        "AVIARY_STORE_DURABILITY" => {
            file.store.durability = text();
            "store.durability"
        }
        "AVIARY_STORE_LIVENESS_INTERVAL" => {
            file.store.liveness_interval = Some(RawDuration::Text(value.to_owned()));
            "store.liveness_interval"
        }
        "AVIARY_MQTT_QUEUE_OVERFLOW" => {
            mqtt.queue_overflow = text();
            "mqtt.queue_overflow"
        }
        "AVIARY_MQTT_RETRY_INTERVAL" => {
            // Validation parses both forms; a bare number here means seconds as in the file.
            mqtt.retry_interval = Some(RawDuration::Text(value.to_owned()));
            "mqtt.retry_interval"
        }
        "AVIARY_MQTT_MAX_KEEP_ALIVE" => {
            mqtt.max_keep_alive = int()?;
            "mqtt.max_keep_alive"
        }
        "AVIARY_MQTT_MAX_SUBSCRIPTIONS_PER_SESSION" => {
            mqtt.max_subscriptions_per_session = int()?;
            "mqtt.max_subscriptions_per_session"
        }
        "AVIARY_MQTT_MAX_CONNECTIONS" => {
            mqtt.max_connections = int()?;
            "mqtt.max_connections"
        }
        "AVIARY_MQTT_MAX_PACKET_SIZE" => {
            mqtt.max_packet_size = int()?;
            "mqtt.max_packet_size"
        }
        "AVIARY_MQTT_MAX_CLIENT_ID_LEN" => {
            mqtt.max_client_id_len = int()?;
            "mqtt.max_client_id_len"
        }
        "AVIARY_MQTT_MAX_TOPIC_LEVELS" => {
            mqtt.max_topic_levels = int()?;
            "mqtt.max_topic_levels"
        }
        "AVIARY_MQTT_TOPIC_ALIAS_MAXIMUM" => {
            mqtt.topic_alias_maximum = int()?;
            "mqtt.topic_alias_maximum"
        }
        "AVIARY_MQTT_RECEIVE_MAXIMUM" => {
            mqtt.receive_maximum = int()?;
            "mqtt.receive_maximum"
        }
        "AVIARY_MQTT_MAX_SESSION_EXPIRY_INTERVAL" => {
            mqtt.max_session_expiry_interval = int()?;
            "mqtt.max_session_expiry_interval"
        }
        "AVIARY_MQTT_CONNECT_TIMEOUT" => {
            mqtt.connect_timeout = Some(RawDuration::Text(value.to_owned()));
            "mqtt.connect_timeout"
        }
        "AVIARY_MQTT_RETRY_V5" => {
            mqtt.retry_v5 = Some(parse_bool(var, value)?);
            "mqtt.retry_v5"
        }
        _ => return Ok(None),
    };
    Ok(Some(key))
}

/// A boolean variable (`true`/`false`/`1`/`0`); the error names the variable.
fn parse_bool(var: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(ConfigError::Env {
            var: var.to_owned(),
            message: format!("expected true or false, got {value:?}"),
        }),
    }
}

/// An integer variable; the error names the variable.
fn parse_int(var: &str, value: &str) -> Result<Option<i64>, ConfigError> {
    value
        .trim()
        .parse()
        .map(Some)
        .map_err(|_| ConfigError::Env {
            var: var.to_owned(),
            message: format!("expected an integer, got {value:?}"),
        })
}

#[cfg(test)]
mod tests {
    use super::super::file::{
        field_names, ApiSection, LimitsSection, ListenerSection, LogSection, MqttSection,
        StoreSection,
    };
    use super::*;

    fn apply(vars: &[(&str, &str)]) -> Result<FileConfig, ConfigError> {
        let mut file = FileConfig::default();
        apply_env(&mut file, vars.iter().copied())?;
        Ok(file)
    }

    #[test]
    fn variables_override_the_file() {
        let mut file =
            FileConfig::parse("[mqtt]\nmax_inflight = 4", std::path::Path::new("a.toml")).unwrap();
        apply_env(&mut file, [("AVIARY_MQTT_MAX_INFLIGHT", "32")]).unwrap();
        assert_eq!(file.mqtt.max_inflight, Some(32));
        assert_eq!(
            file.env_origins
                .get("mqtt.max_inflight")
                .map(String::as_str),
            Some("AVIARY_MQTT_MAX_INFLIGHT")
        );
    }

    #[test]
    fn every_section_can_be_overridden() {
        let file = apply(&[
            ("AVIARY_DATA_DIR", "/srv/aviary"),
            ("AVIARY_LOG_LEVEL", "debug"),
            ("AVIARY_LOG_FORMAT", "json"),
            ("AVIARY_LISTENER_BIND", "127.0.0.1:1999"),
            ("AVIARY_MQTT_QUEUE_OVERFLOW", "drop_oldest"),
            ("AVIARY_MQTT_RETRY_INTERVAL", "5m"),
            ("AVIARY_MQTT_RECEIVE_MAXIMUM", " 10 "),
        ])
        .unwrap();
        assert_eq!(file.data_dir, Some("/srv/aviary".into()));
        assert_eq!(file.log.level.as_deref(), Some("debug"));
        assert_eq!(file.log.format.as_deref(), Some("json"));
        assert_eq!(file.listener.bind.as_deref(), Some("127.0.0.1:1999"));
        assert_eq!(file.mqtt.queue_overflow.as_deref(), Some("drop_oldest"));
        assert_eq!(
            file.mqtt.retry_interval,
            Some(RawDuration::Text("5m".into()))
        );
        assert_eq!(file.mqtt.receive_maximum, Some(10));
    }

    #[test]
    fn other_variables_are_ignored() {
        let file = apply(&[("PATH", "/bin"), ("AVIARY_CONFIG", "x.toml")]).unwrap();
        assert_eq!(file, FileConfig::default());
    }

    #[test]
    fn unknown_aviary_variables_are_left_alone_and_listed() {
        let file = apply(&[("AVIARY_MQTT_MAX_INFLIGTH", "3"), ("AVIARY_BIN", "x")]).unwrap();
        assert_eq!(file, FileConfig::default());
        let names = [
            "AVIARY_MQTT_MAX_INFLIGTH",
            "AVIARY_MQTT_MAX_INFLIGHT",
            "AVIARY_CONFIG",
            "PATH",
            "AVIARY_BIN",
        ];
        assert_eq!(
            unknown_variables(names),
            ["AVIARY_MQTT_MAX_INFLIGTH", "AVIARY_BIN"]
        );
    }

    #[test]
    fn bad_integer_names_the_variable() {
        let err = apply(&[("AVIARY_MQTT_MAX_CONNECTIONS", "lots")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "AVIARY_MQTT_MAX_CONNECTIONS: expected an integer, got \"lots\""
        );
    }

    /// Every key of the file layer has its variable, so a new key cannot be forgotten here.
    #[test]
    fn every_key_has_a_variable() {
        let sections = [
            ("log", field_names::<LogSection>()),
            ("listener", field_names::<ListenerSection>()),
            ("mqtt", field_names::<MqttSection>()),
            ("store", field_names::<StoreSection>()),
            ("api", field_names::<ApiSection>()),
            ("limits", field_names::<LimitsSection>()),
        ];
        let mut keys = vec![("data_dir".to_owned(), "AVIARY_DATA_DIR".to_owned())];
        for (section, fields) in sections {
            for field in fields {
                let var = format!("AVIARY_{section}_{field}").to_uppercase();
                keys.push((format!("{section}.{field}"), var));
            }
        }
        for (key, var) in keys {
            let mut file = FileConfig::default();
            let applied = apply_var(&mut file, &var, "1").unwrap();
            assert_eq!(applied, Some(key.as_str()), "{var}");
        }
    }
}
