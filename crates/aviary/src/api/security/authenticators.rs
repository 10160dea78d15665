//! `/api/v1/authenticators`: the authentication chain (order, anonymous access, JWT and
//! HTTP service settings), read and replaced at runtime. A replacement is validated with
//! the configuration file's rules (errors name the field), applies to the next CONNECT
//! and is stored: it overrides the file's `[auth]` settings from then on, across
//! restarts.

// The resource modules share the parent's imports.
use super::*;
use crate::config::security::{validate_auth_settings, AuthSettingsDoc};
use crate::config::ConfigError;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(authenticators, replace_authenticators))
}

/// The record id of the stored settings (one record).
pub(crate) const SETTINGS_ID: &str = "settings";

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

/// Replace the order, anonymous access and JWT / HTTP service settings (a missing `jwt` or
/// `http` switches that authenticator off). Applies to the next CONNECT; stored.
#[utoipa::path(put, path = "/api/v1/authenticators", tag = "security",
    request_body = AuthSettingsDoc,
    responses((status = 200, body = Authenticators), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn replace_authenticators(
    State(state): State<AppState>,
    Json(doc): Json<AuthSettingsDoc>,
) -> Result<Json<Authenticators>, ApiError> {
    // Reading a `jwt.public_key` file may block briefly: off the async threads.
    let checked = doc.clone();
    let settings = tokio::task::spawn_blocking(move || validate_auth_settings(&checked))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| match e {
            ConfigError::Invalid { key, message, .. } => ApiError::invalid(&key, message),
            other => ApiError::bad_request(other.to_string()),
        })?;
    state
        .security
        .auth
        .replace(settings)
        .map_err(|e| ApiError::invalid("jwt", format!("{e:#}")))?;
    records::put(
        &*state.records,
        RecordKind::Authenticator,
        SETTINGS_ID,
        &doc,
    )?;
    Ok(Json(view(&state.security.auth)))
}
