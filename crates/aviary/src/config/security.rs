//! The security sections of the configuration: `[auth]` (anonymous access, authenticator
//! order, built-in users), `[authorization]` (default decision, policies) and
//! `[tls_listener]`. File layer (serde) and validation in one place, so the rest of the
//! configuration is untouched by them. Users and policies given here are loaded at start;
//! the management API changes them at runtime.

use std::net::SocketAddr;
use std::path::PathBuf;

use aviary_core::authz::Effect;

use super::ConfigError;
use crate::auth::policies::PolicyDoc;
use crate::auth::{Anonymous, AuthSettings, AuthenticatorKind, Secret};
use crate::tls::TlsMode;

/// `[auth]` as written.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct AuthFile {
    /// `"auto"` (default), `true` or `false`.
    pub(crate) anonymous: Option<toml::Value>,
    /// Authenticator names in order: `"devices"`, `"users"`.
    pub(crate) order: Option<Vec<String>>,
    /// `[[auth.users]]`.
    pub(crate) users: Vec<UserFile>,
}

/// `[[auth.users]]`: a user with a plain password (hashed at start) or an argon2 hash.
#[derive(Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserFile {
    pub(crate) username: String,
    pub(crate) password: Option<String>,
    pub(crate) password_hash: Option<String>,
}

impl std::fmt::Debug for UserFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserFile")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// `[authorization]` as written.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct AuthorizationFile {
    /// `"auto"` (allow with no policy, deny with any), `"allow"` or `"deny"`.
    pub(crate) default: Option<String>,
    /// `[[authorization.policies]]`.
    pub(crate) policies: Vec<PolicyDoc>,
}

/// `[tls_listener]` as written.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct TlsListenerFile {
    pub(crate) bind: Option<String>,
    pub(crate) cert: Option<PathBuf>,
    pub(crate) key: Option<PathBuf>,
    /// `"one-way"`, `"mutual"` or `"per-device"`.
    pub(crate) mode: Option<String>,
    /// CA certificates (PEM files) registered at start (mutual and per-device modes).
    pub(crate) ca: Vec<PathBuf>,
}

/// The validated security settings.
#[derive(Clone, Debug, Default)]
pub struct SecurityConfig {
    pub auth: AuthSettings,
    /// Users created at start.
    pub users: Vec<(String, Secret)>,
    /// The default decision (`None`: allow with no policy, deny with any).
    pub default_effect: Option<Effect>,
    /// Policies created at start.
    pub policies: Vec<PolicyDoc>,
    /// A TLS listener, if configured.
    pub tls_listener: Option<TlsListenerConfig>,
}

/// A TLS listener's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsListenerConfig {
    pub bind: SocketAddr,
    /// PEM certificate chain of the server.
    pub cert: PathBuf,
    /// PEM private key of the server.
    pub key: PathBuf,
    pub mode: TlsMode,
    /// CA certificates registered at start.
    pub ca: Vec<PathBuf>,
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        var: None,
        message: message.into(),
    }
}

/// Validates the security sections.
pub(crate) fn validate(
    auth: &AuthFile,
    authorization: &AuthorizationFile,
    tls: Option<&TlsListenerFile>,
) -> Result<SecurityConfig, ConfigError> {
    let anonymous = match &auth.anonymous {
        None => Anonymous::Auto,
        Some(toml::Value::Boolean(true)) => Anonymous::Allow,
        Some(toml::Value::Boolean(false)) => Anonymous::Deny,
        Some(toml::Value::String(s)) if s == "auto" => Anonymous::Auto,
        Some(other) => {
            return Err(invalid(
                "auth.anonymous",
                format!("expected \"auto\", true or false, got {other:?}"),
            ))
        }
    };
    let order = match &auth.order {
        None => AuthSettings::default().order,
        Some(names) => names
            .iter()
            .map(|n| match n.as_str() {
                "users" => Ok(AuthenticatorKind::Users),
                "devices" => Ok(AuthenticatorKind::Devices),
                other => Err(invalid(
                    "auth.order",
                    format!("unknown authenticator {other:?}: expected \"users\" or \"devices\""),
                )),
            })
            .collect::<Result<_, _>>()?,
    };
    let users = auth
        .users
        .iter()
        .map(|u| {
            let secret = match (&u.password, &u.password_hash) {
                (Some(p), None) => Secret::Password(p.clone()),
                (None, Some(h)) => Secret::Hash(h.clone()),
                _ => {
                    return Err(invalid(
                        "auth.users",
                        format!(
                            "user {:?} needs exactly one of password, password_hash",
                            u.username
                        ),
                    ))
                }
            };
            Ok((u.username.clone(), secret))
        })
        .collect::<Result<_, _>>()?;
    let default_effect = match authorization.default.as_deref() {
        None | Some("auto") => None,
        Some("allow") => Some(Effect::Allow),
        Some("deny") => Some(Effect::Deny),
        Some(other) => {
            return Err(invalid(
                "authorization.default",
                format!("expected \"auto\", \"allow\" or \"deny\", got {other:?}"),
            ))
        }
    };
    for policy in &authorization.policies {
        policy
            .parse()
            .map_err(|e| invalid("authorization.policies", format!("{}: {e}", policy.id)))?;
    }
    let tls_listener = tls.map(validate_tls).transpose()?;
    Ok(SecurityConfig {
        auth: AuthSettings { anonymous, order },
        users,
        default_effect,
        policies: authorization.policies.clone(),
        tls_listener,
    })
}

fn validate_tls(tls: &TlsListenerFile) -> Result<TlsListenerConfig, ConfigError> {
    let bind = tls
        .bind
        .as_deref()
        .unwrap_or("0.0.0.0:8883")
        .trim()
        .parse()
        .map_err(|_| invalid("tls_listener.bind", "expected an address and port"))?;
    let cert = tls
        .cert
        .clone()
        .ok_or_else(|| invalid("tls_listener.cert", "required: PEM certificate chain"))?;
    let key = tls
        .key
        .clone()
        .ok_or_else(|| invalid("tls_listener.key", "required: PEM private key"))?;
    let mode = match tls.mode.as_deref() {
        None | Some("one-way") => TlsMode::OneWay,
        Some("mutual") => TlsMode::Mutual,
        Some("per-device") => TlsMode::PerDevice,
        Some(other) => {
            return Err(invalid(
                "tls_listener.mode",
                format!("expected \"one-way\", \"mutual\" or \"per-device\", got {other:?}"),
            ))
        }
    };
    Ok(TlsListenerConfig {
        bind,
        cert,
        key,
        mode,
        ca: tls.ca.clone(),
    })
}
