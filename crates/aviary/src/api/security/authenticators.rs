//! `/api/v1/authenticators`: the authentication chain (order, anonymous access, JWT and
//! HTTP service settings), read and changed at runtime. A change names only what changes
//! (`"jwt": null` switches JWT off), is validated with the configuration file's rules
//! (errors name the field), applies to the next CONNECT and is stored: the whole
//! resulting chain overrides the file's `[auth]` settings from then on, across restarts.

// The resource modules share the parent's imports.
use super::*;
use crate::auth::SettingsChangeError;
use crate::config::security::{validate_auth_settings, AuthSettingsDoc, HttpFile, JwtFile};
use crate::config::ConfigError;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(authenticators, change_authenticators))
}

/// The record id of the stored settings (one record).
pub(crate) const SETTINGS_ID: &str = "settings";

/// `PATCH /api/v1/authenticators`: what is absent stays as it is.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthenticatorsChange {
    /// "auto", "allow" or "deny".
    #[serde(default)]
    anonymous: Option<String>,
    /// Authenticator names in order: "devices", "users", "jwt", "http".
    #[serde(default)]
    order: Option<Vec<String>>,
    /// The keys of `[auth.jwt]`; `null` switches JWT off.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<JwtFile>, nullable)]
    jwt: Option<Option<JwtFile>>,
    /// The keys of `[auth.http]`; `null` switches the HTTP service off.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<HttpFile>, nullable)]
    http: Option<Option<HttpFile>>,
}

/// A field that is present (`Some`), possibly `null` (`Some(None)`); absent fields get
/// the `default`, `None`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(deserializer).map(Some)
}

/// The authentication chain now.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Authenticators {
    /// Authenticators in the order they are tried (a TLS client certificate comes first).
    order: Vec<String>,
    /// "auto", "allow" or "deny".
    anonymous: String,
    /// Whether clients no authenticator claims may connect right now.
    anonymous_allowed: bool,
    users: usize,
    device_identities: usize,
    jwt_configured: bool,
    http_configured: bool,
    /// The JWT settings (the keys of `[auth.jwt]`; a shared secret shows as "<redacted>").
    jwt: Option<JwtView>,
    /// The HTTP service settings (the keys of `[auth.http]`; header values and any password
    /// in the URL show as "<redacted>").
    http: Option<HttpView>,
}

/// What a secret shows as.
const REDACTED: &str = "<redacted>";

/// JWT settings as shown (secrets redacted).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct JwtView {
    /// "password" or "username".
    from: String,
    /// "<redacted>" when a shared secret is set.
    secret: Option<String>,
    /// The RSA or EC public key, PEM.
    public_key_pem: Option<String>,
    jwks_url: Option<String>,
    /// Seconds between JWKS fetches.
    jwks_refresh: Option<u64>,
    algorithms: Vec<String>,
    client_id_claim: Option<String>,
    username_claim: String,
    /// Seconds of clock skew allowed.
    leeway: u64,
}

/// HTTP service settings as shown (secrets redacted).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct HttpView {
    url: String,
    /// "get" or "post".
    method: String,
    /// Header names; every value shows as "<redacted>" (they often carry credentials).
    headers: std::collections::BTreeMap<String, String>,
    body: Option<String>,
    connect_timeout_ms: u64,
    timeout_ms: u64,
    max_concurrency: usize,
    /// Seconds an answer is reused.
    cache_ttl: u64,
}

fn jwt_view(jwt: &crate::auth::JwtSettings) -> JwtView {
    use crate::auth::{JwtKeys, TokenField};
    let (secret, public_key_pem, jwks_url, jwks_refresh) = match &jwt.keys {
        JwtKeys::Secret(_) => (Some(REDACTED.to_owned()), None, None, None),
        JwtKeys::PublicKeyPem(pem) => (
            None,
            Some(String::from_utf8_lossy(pem).into_owned()),
            None,
            None,
        ),
        JwtKeys::Jwks { url, refresh } => (None, None, Some(url.clone()), Some(refresh.as_secs())),
    };
    JwtView {
        from: match jwt.from {
            TokenField::Password => "password".into(),
            TokenField::Username => "username".into(),
        },
        secret,
        public_key_pem,
        jwks_url,
        jwks_refresh,
        algorithms: jwt.algorithms.iter().map(|a| format!("{a:?}")).collect(),
        client_id_claim: jwt.client_id_claim.clone(),
        username_claim: jwt.username_claim.clone(),
        leeway: jwt.leeway,
    }
}

/// `url` with the password of its user info (`scheme://user:password@host`) redacted.
fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((info, host)) => {
            let user = info.split_once(':').map_or(info, |(user, _)| user);
            format!("{scheme}://{user}:{REDACTED}@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

fn http_view(http: &crate::auth::HttpSettings) -> HttpView {
    HttpView {
        url: redacted_url(&http.url),
        method: match http.method {
            crate::auth::HttpMethod::Get => "get".into(),
            crate::auth::HttpMethod::Post => "post".into(),
        },
        headers: http
            .headers
            .iter()
            .map(|(name, _)| (name.clone(), REDACTED.to_owned()))
            .collect(),
        body: http.body.clone(),
        connect_timeout_ms: u64::try_from(http.connect_timeout.as_millis()).unwrap_or(u64::MAX),
        timeout_ms: u64::try_from(http.timeout.as_millis()).unwrap_or(u64::MAX),
        max_concurrency: http.max_concurrency,
        cache_ttl: http.cache_ttl.as_secs(),
    }
}

fn view(auth: &crate::auth::AuthService) -> Authenticators {
    let settings = auth.settings();
    Authenticators {
        order: settings
            .order
            .iter()
            .map(|k| format!("{k:?}").to_lowercase())
            .collect(),
        anonymous: format!("{:?}", settings.anonymous).to_lowercase(),
        anonymous_allowed: auth.anonymous_allowed(),
        users: auth.users.list().len(),
        device_identities: auth.devices.list().len(),
        jwt_configured: settings.jwt.is_some(),
        http_configured: settings.http.is_some(),
        jwt: settings.jwt.as_ref().map(jwt_view),
        http: settings.http.as_ref().map(http_view),
    }
}

/// The authentication chain.
#[utoipa::path(get, path = "/api/v1/authenticators", tag = "security",
    responses((status = 200, body = Authenticators), (status = 401, body = ErrorBody)))]
async fn authenticators(State(state): State<AppState>) -> Json<Authenticators> {
    Json(view(&state.security.auth))
}

/// Change the order, anonymous access, JWT or HTTP service settings (absent: unchanged;
/// `"jwt": null` / `"http": null`: switched off). Applies to the next CONNECT; stored.
#[utoipa::path(patch, path = "/api/v1/authenticators", tag = "security",
    request_body = AuthenticatorsChange,
    responses((status = 200, body = Authenticators), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn change_authenticators(
    State(state): State<AppState>,
    Json(change): Json<AuthenticatorsChange>,
) -> Result<Json<Authenticators>, ApiError> {
    // What is given, validated by the file's rules (reading a `jwt.public_key` file may
    // block briefly: off the async threads).
    let given = AuthSettingsDoc {
        anonymous: change.anonymous.clone(),
        order: change.order.clone(),
        jwt: change.jwt.clone().flatten(),
        http: change.http.clone().flatten(),
    };
    let checked = tokio::task::spawn_blocking(move || validate_auth_settings(&given))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| match e {
            ConfigError::Invalid { key, message, .. } => ApiError::invalid(&key, message),
            other => ApiError::bad_request(other.to_string()),
        })?;
    let mut settings = state.security.auth.settings();
    if change.anonymous.is_some() {
        settings.anonymous = checked.anonymous;
    }
    if change.order.is_some() {
        settings.order = checked.order;
    }
    if change.jwt.is_some() {
        settings.jwt = checked.jwt;
    }
    if change.http.is_some() {
        settings.http = checked.http;
    }
    let (auth, records) = (Arc::clone(&state.security.auth), Arc::clone(&state.records));
    // Built, stored, then installed: a failed write leaves the chain as it was.
    tokio::task::spawn_blocking(move || {
        auth.replace_stored(settings, &|s| {
            let Some(s) = s else {
                return Ok(());
            };
            records::put(&*records, RecordKind::Authenticator, SETTINGS_ID, s)
                .map_err(|e| format!("the change could not be stored: {e}"))
        })
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| match e {
        SettingsChangeError::Invalid(e) => ApiError::invalid("jwt", format!("{e:#}")),
        SettingsChangeError::Store(e) => ApiError::internal(e),
    })?;
    Ok(Json(view(&state.security.auth)))
}
