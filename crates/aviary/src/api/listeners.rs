//! MQTT listeners at runtime: `/api/v1/listeners[/{name}]` — create (tcp, ws), switch on
//! and off, change the IP allow-list, delete. Switching off disconnects the listener's
//! clients (5.0: DISCONNECT 0x98).

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody, Json, Path};
use super::AppState;
use crate::listener::cidr::Cidr;
use crate::listener::registry::{ListenerError, ListenerSpec, ListenerState};
use crate::listener::ListenerKind;

/// A listener as the API shows it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Listener {
    name: String,
    kind: ListenerKind,
    /// Address and port to bind.
    bind: String,
    enabled: bool,
    /// Allowed peers (CIDR); empty: everyone.
    allow: Vec<String>,
    /// Where it is bound while enabled.
    address: Option<String>,
}

/// `POST /api/v1/listeners` body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateListener {
    /// Unique name: letters, digits, `-` and `_`, 1..=64.
    name: String,
    kind: ListenerKind,
    /// `ip:port` (port 0: any free port).
    bind: String,
    /// Default true.
    enabled: Option<bool>,
    /// CIDR rules such as `10.0.0.0/8`; empty or absent: everyone.
    #[serde(default)]
    allow: Vec<String>,
}

/// `PATCH /api/v1/listeners/{name}` body: what to change.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateListener {
    enabled: Option<bool>,
    /// Replaces the allow-list.
    allow: Option<Vec<String>>,
}

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_listeners, create_listener))
        .routes(routes!(get_listener, update_listener, delete_listener))
}

fn view(state: ListenerState) -> Listener {
    Listener {
        name: state.spec.name,
        kind: state.spec.kind,
        bind: state.spec.bind.to_string(),
        enabled: state.spec.enabled,
        allow: state.spec.allow.iter().map(ToString::to_string).collect(),
        address: state.address.map(|a| a.to_string()),
    }
}

fn cidrs(rules: &[String]) -> Result<Vec<Cidr>, ApiError> {
    rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            rule.parse()
                .map_err(|e| ApiError::invalid(&format!("allow[{i}]"), e))
        })
        .collect()
}

impl From<ListenerError> for ApiError {
    fn from(e: ListenerError) -> Self {
        match e {
            ListenerError::NotFound(_) => Self::not_found(e.to_string()),
            ListenerError::Exists(_) | ListenerError::DefaultUndeletable => {
                Self::conflict(e.to_string())
            }
            ListenerError::Bind { .. } => Self::conflict(e.to_string()),
            ListenerError::Store(e) => Self::internal(e.to_string()),
        }
    }
}

/// Every listener.
#[utoipa::path(get, path = "/api/v1/listeners", tag = "listeners",
    responses((status = 200, body = [Listener]), (status = 401, body = ErrorBody)))]
async fn list_listeners(State(state): State<AppState>) -> Json<Vec<Listener>> {
    Json(state.listeners.list().await.into_iter().map(view).collect())
}

/// Create a listener (bound at once if enabled); it is stored and comes back after a
/// restart.
#[utoipa::path(post, path = "/api/v1/listeners", tag = "listeners", request_body = CreateListener,
    responses((status = 201, body = Listener), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn create_listener(
    State(state): State<AppState>,
    Json(body): Json<CreateListener>,
) -> Result<(StatusCode, Json<Listener>), ApiError> {
    let valid_name = !body.name.is_empty()
        && body.name.len() <= 64
        && body
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid_name {
        return Err(ApiError::invalid(
            "name",
            "use 1 to 64 letters, digits, '-' or '_'",
        ));
    }
    let bind: SocketAddr = body.bind.trim().parse().map_err(|_| {
        ApiError::invalid(
            "bind",
            format!(
                "expected ip:port such as \"0.0.0.0:1884\", got {:?}",
                body.bind
            ),
        )
    })?;
    let spec = ListenerSpec {
        name: body.name,
        kind: body.kind,
        bind,
        enabled: body.enabled.unwrap_or(true),
        allow: cidrs(&body.allow)?,
    };
    let created = state.listeners.create(spec).await?;
    Ok((StatusCode::CREATED, Json(view(created))))
}

/// One listener.
#[utoipa::path(get, path = "/api/v1/listeners/{name}", tag = "listeners",
    params(("name" = String, Path, description = "Listener name")),
    responses((status = 200, body = Listener), (status = 404, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn get_listener(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Listener>, ApiError> {
    Ok(Json(view(state.listeners.get(&name).await?)))
}

/// Switch a listener on or off and/or replace its allow-list, at once.
#[utoipa::path(patch, path = "/api/v1/listeners/{name}", tag = "listeners",
    params(("name" = String, Path, description = "Listener name")),
    request_body = UpdateListener,
    responses((status = 200, body = Listener), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn update_listener(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Json(body): Json<UpdateListener>,
) -> Result<Json<Listener>, ApiError> {
    let allow = body.allow.as_deref().map(cidrs).transpose()?;
    Ok(Json(view(
        state.listeners.update(&name, body.enabled, allow).await?,
    )))
}

/// Delete a listener (not `default`: disable that one instead).
#[utoipa::path(delete, path = "/api/v1/listeners/{name}", tag = "listeners",
    params(("name" = String, Path, description = "Listener name")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn delete_listener(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.listeners.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
