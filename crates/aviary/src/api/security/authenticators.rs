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
