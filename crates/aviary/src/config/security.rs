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
use crate::auth::{
    Anonymous, AuthSettings, AuthenticatorKind, HttpMethod, HttpSettings, JwtKeys, JwtSettings,
    Secret, TokenField,
};
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
    /// `[auth.jwt]`.
    pub(crate) jwt: Option<JwtFile>,
    /// `[auth.http]`.
    pub(crate) http: Option<HttpFile>,
}

/// `[auth.jwt]` as written (also the `jwt` object of the API's authenticator settings).
#[derive(Clone, Default, PartialEq, serde::Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct JwtFile {
    /// `"password"` (default) or `"username"`.
    pub(crate) from: Option<String>,
    /// HMAC secret as text.
    pub(crate) secret: Option<String>,
    /// HMAC secret in standard base64.
    pub(crate) secret_base64: Option<String>,
    /// PEM file with an RSA or EC public key.
    #[schema(value_type = Option<String>)]
    pub(crate) public_key: Option<PathBuf>,
    /// JWKS URL.
    pub(crate) jwks_url: Option<String>,
    /// Seconds between JWKS fetches (default 300).
    pub(crate) jwks_refresh: Option<u64>,
    /// Accepted algorithms, e.g. `["HS256", "RS256", "ES256"]`.
    pub(crate) algorithms: Option<Vec<String>>,
    pub(crate) client_id_claim: Option<String>,
    pub(crate) username_claim: Option<String>,
    /// Seconds of clock skew allowed (default 30).
    pub(crate) leeway: Option<u64>,
}

impl std::fmt::Debug for JwtFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtFile")
            .field("jwks_url", &self.jwks_url)
            .finish_non_exhaustive()
    }
}

/// `[auth.http]` as written (also the `http` object of the API's authenticator settings).
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct HttpFile {
    pub(crate) url: Option<String>,
    /// `"get"` or `"post"` (default).
    pub(crate) method: Option<String>,
    pub(crate) headers: std::collections::BTreeMap<String, String>,
    pub(crate) body: Option<String>,
    pub(crate) connect_timeout_ms: Option<u64>,
    pub(crate) timeout_ms: Option<u64>,
    pub(crate) max_concurrency: Option<usize>,
    /// Seconds an answer is reused (0: never).
    pub(crate) cache_ttl: Option<u64>,
}

/// The authenticator settings a management API change gives: `[auth]` without the users
/// (those are their own resource). Validated by [`validate_auth_settings`] with the same
/// rules as the file.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct AuthSettingsDoc {
    /// `"auto"`, `"allow"` or `"deny"`.
    pub(crate) anonymous: Option<String>,
    /// Authenticator names in order: `"devices"`, `"users"`, `"jwt"`, `"http"`.
    pub(crate) order: Option<Vec<String>>,
    /// The keys of `[auth.jwt]`.
    pub(crate) jwt: Option<JwtFile>,
    /// The keys of `[auth.http]`.
    pub(crate) http: Option<HttpFile>,
}

/// Validates authenticator settings from the API; the error's key names
/// the field as in the document (`jwt.algorithms`).
pub(crate) fn validate_auth_settings(doc: &AuthSettingsDoc) -> Result<AuthSettings, ConfigError> {
    let anonymous = match doc.anonymous.as_deref() {
        None | Some("auto") => None,
        Some("allow") => Some(toml::Value::Boolean(true)),
        Some("deny") => Some(toml::Value::Boolean(false)),
        Some(other) => {
            return Err(invalid(
                "anonymous",
                format!("expected \"auto\", \"allow\" or \"deny\", got {other:?}"),
            ))
        }
    };
    let file = AuthFile {
        anonymous,
        order: doc.order.clone(),
        users: Vec::new(),
        jwt: doc.jwt.clone(),
        http: doc.http.clone(),
    };
    let strip = |e: ConfigError| match e {
        ConfigError::Invalid { key, var, message } => ConfigError::Invalid {
            key: key.strip_prefix("auth.").unwrap_or(&key).to_owned(),
            var,
            message,
        },
        other => other,
    };
    validate(&file, &AuthorizationFile::default(), None)
        .map(|security| security.auth)
        .map_err(strip)
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
                "jwt" => Ok(AuthenticatorKind::Jwt),
                "http" => Ok(AuthenticatorKind::Http),
                other => Err(invalid(
                    "auth.order",
                    format!(
                        "unknown authenticator {other:?}: expected \"users\", \"devices\", \"jwt\" or \"http\""
                    ),
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
        auth: AuthSettings {
            anonymous,
            order,
            jwt: auth.jwt.as_ref().map(validate_jwt).transpose()?,
            http: auth.http.as_ref().map(validate_http).transpose()?,
        },
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

fn validate_jwt(jwt: &JwtFile) -> Result<JwtSettings, ConfigError> {
    use base64::Engine as _;
    let from = match jwt.from.as_deref() {
        None | Some("password") => TokenField::Password,
        Some("username") => TokenField::Username,
        Some(other) => {
            return Err(invalid(
                "auth.jwt.from",
                format!("expected \"password\" or \"username\", got {other:?}"),
            ))
        }
    };
    let keys = match (
        &jwt.secret,
        &jwt.secret_base64,
        &jwt.public_key,
        &jwt.jwks_url,
    ) {
        (Some(s), None, None, None) => JwtKeys::Secret(s.as_bytes().to_vec()),
        (None, Some(s), None, None) => JwtKeys::Secret(
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|_| invalid("auth.jwt.secret_base64", "not standard base64"))?,
        ),
        (None, None, Some(path), None) => {
            JwtKeys::PublicKeyPem(std::fs::read(path).map_err(|e| {
                invalid(
                    "auth.jwt.public_key",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?)
        }
        (None, None, None, Some(url)) => JwtKeys::Jwks {
            url: url.clone(),
            refresh: std::time::Duration::from_secs(jwt.jwks_refresh.unwrap_or(300).max(1)),
        },
        _ => {
            return Err(invalid(
                "auth.jwt",
                "give exactly one of secret, secret_base64, public_key, jwks_url",
            ))
        }
    };
    let default_algorithms = match keys {
        JwtKeys::Secret(_) => vec!["HS256".to_owned()],
        _ => vec!["RS256".to_owned(), "ES256".to_owned()],
    };
    let algorithms = jwt
        .algorithms
        .clone()
        .unwrap_or(default_algorithms)
        .iter()
        .map(|a| {
            let alg = a.parse::<jsonwebtoken::Algorithm>().ok().filter(|alg| {
                use jsonwebtoken::Algorithm::*;
                matches!(
                    alg,
                    HS256 | HS384 | HS512 | RS256 | RS384 | RS512 | ES256 | ES384
                )
            });
            alg.ok_or_else(|| {
                invalid(
                    "auth.jwt.algorithms",
                    format!("unsupported {a:?}: HS256/384/512, RS256/384/512, ES256/384"),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(JwtSettings {
        from,
        keys,
        algorithms,
        client_id_claim: jwt.client_id_claim.clone(),
        username_claim: jwt
            .username_claim
            .clone()
            .unwrap_or_else(|| "sub".to_owned()),
        leeway: jwt.leeway.unwrap_or(30),
    })
}

fn validate_http(http: &HttpFile) -> Result<HttpSettings, ConfigError> {
    let defaults = HttpSettings::default();
    let url = http
        .url
        .clone()
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
        .ok_or_else(|| invalid("auth.http.url", "required: an http:// or https:// URL"))?;
    let method = match http.method.as_deref() {
        None | Some("post") | Some("POST") => HttpMethod::Post,
        Some("get") | Some("GET") => HttpMethod::Get,
        Some(other) => {
            return Err(invalid(
                "auth.http.method",
                format!("expected \"get\" or \"post\", got {other:?}"),
            ))
        }
    };
    let ms = std::time::Duration::from_millis;
    Ok(HttpSettings {
        url,
        method,
        headers: http.headers.clone().into_iter().collect(),
        body: http.body.clone().or(defaults.body),
        connect_timeout: http.connect_timeout_ms.map_or(defaults.connect_timeout, ms),
        timeout: http.timeout_ms.map_or(defaults.timeout, ms),
        max_concurrency: http
            .max_concurrency
            .unwrap_or(defaults.max_concurrency)
            .max(1),
        cache_ttl: http
            .cache_ttl
            .map_or(defaults.cache_ttl, std::time::Duration::from_secs),
    })
}

#[cfg(test)]
mod tests {
    use crate::auth::{Anonymous, AuthenticatorKind, HttpMethod, JwtKeys};
    use crate::config::Config;
    use crate::tls::TlsMode;

    fn load(toml: &str) -> Result<Config, String> {
        Config::from_toml(toml, "test.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_allow_anonymous_automatically() {
        let config = load("").unwrap();
        assert_eq!(config.security.auth.anonymous, Anonymous::Auto);
        assert!(config.security.users.is_empty());
        assert!(config.security.tls_listener.is_none());
    }

    #[test]
    fn every_security_section_is_read() {
        let config = load(
            r#"
            [auth]
            anonymous = false
            order = ["jwt", "users", "http"]
            [[auth.users]]
            username = "alice"
            password = "pw"
            [auth.jwt]
            jwks_url = "http://127.0.0.1:1/jwks"
            jwks_refresh = 60
            algorithms = ["ES256", "RS384"]
            client_id_claim = "cid"
            [auth.http]
            url = "http://127.0.0.1:1/auth"
            method = "get"
            headers = { "x-client" = "${clientid}" }
            timeout_ms = 700
            [authorization]
            default = "deny"
            [[authorization.policies]]
            id = "p1"
            effect = "allow"
            actions = ["publish"]
            resources = ["t/${clientid}"]
            source_cidrs = ["10.0.0.0/8"]
            [tls_listener]
            bind = "127.0.0.1:8883"
            cert = "s.pem"
            key = "s.key"
            mode = "per-device"
            "#,
        )
        .unwrap();
        let s = config.security;
        assert_eq!(s.auth.anonymous, Anonymous::Deny);
        assert_eq!(
            s.auth.order,
            [
                AuthenticatorKind::Jwt,
                AuthenticatorKind::Users,
                AuthenticatorKind::Http
            ]
        );
        assert_eq!(s.users.len(), 1);
        let jwt = s.auth.jwt.unwrap();
        assert!(matches!(jwt.keys, JwtKeys::Jwks { ref url, .. } if url.ends_with("/jwks")));
        assert_eq!(jwt.algorithms.len(), 2);
        assert_eq!(jwt.client_id_claim.as_deref(), Some("cid"));
        let http = s.auth.http.unwrap();
        assert_eq!(http.method, HttpMethod::Get);
        assert_eq!(http.timeout.as_millis(), 700);
        assert_eq!(s.policies.len(), 1);
        assert_eq!(s.tls_listener.unwrap().mode, TlsMode::PerDevice);
    }

    #[test]
    fn bad_security_values_name_their_key() {
        let check = |toml: &str, key: &str| {
            let err = load(toml).unwrap_err();
            assert!(err.starts_with(key), "{err}");
        };
        check("[auth]\nanonymous = \"sometimes\"", "auth.anonymous");
        check("[auth]\norder = [\"ldap\"]", "auth.order");
        check("[[auth.users]]\nusername = \"a\"", "auth.users");
        check(
            "[authorization]\ndefault = \"maybe\"",
            "authorization.default",
        );
        check(
            "[[authorization.policies]]\nid = \"x\"\neffect = \"allow\"\nactions = [\"publish\"]\nresources = [\"a/#/b\"]",
            "authorization.policies",
        );
        check("[tls_listener]\nkey = \"k\"", "tls_listener.cert");
        check(
            "[tls_listener]\ncert = \"c\"\nkey = \"k\"\nmode = \"two-way\"",
            "tls_listener.mode",
        );
        check(
            "[auth.jwt]\nsecret = \"s\"\nalgorithms = [\"none\"]",
            "auth.jwt.algorithms",
        );
        check("[auth.jwt]\nfrom = \"password\"", "auth.jwt");
        check("[auth.http]\nurl = \"ftp://x\"", "auth.http.url");
    }
}
