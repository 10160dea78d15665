//! MQTT listeners at runtime: `/api/v1/listeners[/{name}]` — create (tcp, ws, tls, wss),
//! switch on and off, change the IP allow-list, replace a TLS listener's server
//! certificate, delete. Switching off disconnects the listener's clients (5.0: DISCONNECT
//! 0x98).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody, Json, Path};
use super::AppState;
use crate::listener::cidr::Cidr;
use crate::listener::registry::{
    ListenerChange, ListenerError, ListenerSpec, ListenerState, TlsSettings,
};
use crate::listener::ListenerKind;
use crate::tls::TlsMode;

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
    /// Connected clients it accepted.
    clients: usize,
    /// Server certificate chain (PEM file; tls and wss).
    cert: Option<String>,
    /// Server private key (PEM file; tls and wss).
    key: Option<String>,
    /// Client certificates (tls and wss).
    x509_mode: Option<TlsMode>,
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
    /// Path of the server certificate chain (PEM) on the broker's host; required for kinds
    /// tls and wss, refused for the others.
    #[schema(value_type = Option<String>)]
    cert: Option<PathBuf>,
    /// Path of the server private key (PEM); required for kinds tls and wss.
    #[schema(value_type = Option<String>)]
    key: Option<PathBuf>,
    /// `one-way` (the default), `mutual` (a client certificate chaining to a registered,
    /// active CA) or `per-device` (also a registered, active device certificate, which
    /// binds the client id); kinds tls and wss.
    x509_mode: Option<TlsMode>,
}

/// `PATCH /api/v1/listeners/{name}` body: what to change.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateListener {
    enabled: Option<bool>,
    /// Replaces the allow-list.
    allow: Option<Vec<String>>,
    /// Replaces the server certificate chain (PEM file; tls and wss): new handshakes use
    /// it, open connections stay.
    #[schema(value_type = Option<String>)]
    cert: Option<PathBuf>,
    /// Replaces the server private key (PEM file; tls and wss).
    #[schema(value_type = Option<String>)]
    key: Option<PathBuf>,
}

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_listeners, create_listener))
        .routes(routes!(get_listener, update_listener, delete_listener))
}

/// Connected clients per listener name.
async fn client_counts(state: &AppState) -> Result<HashMap<String, usize>, ApiError> {
    Ok(state
        .broker
        .call(|ctx| {
            let mut counts: HashMap<String, usize> = HashMap::new();
            for client in ctx.broker.clients() {
                if let Some(entry) = ctx.ops.conns.get(client.conn) {
                    *counts.entry(entry.listener().to_string()).or_default() += 1;
                }
            }
            counts
        })
        .await?)
}

fn view(state: ListenerState, counts: &HashMap<String, usize>) -> Listener {
    let clients = counts.get(&state.spec.name).copied().unwrap_or(0);
    let tls = state.spec.tls.as_ref();
    Listener {
        clients,
        cert: tls.map(|t| t.cert.display().to_string()),
        key: tls.map(|t| t.key.display().to_string()),
        x509_mode: tls.map(|t| t.x509_mode),
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
            ListenerError::Exists(_) | ListenerError::Configured(_) => {
                Self::conflict(e.to_string())
            }
            ListenerError::Tls { field, message } => Self::invalid(field, message),
            ListenerError::Bind { .. } => Self::conflict(e.to_string()),
            ListenerError::Store(e) => Self::internal(e.to_string()),
        }
    }
}

/// Every listener.
#[utoipa::path(get, path = "/api/v1/listeners", tag = "listeners",
    responses((status = 200, body = [Listener]), (status = 401, body = ErrorBody)))]
async fn list_listeners(State(state): State<AppState>) -> Result<Json<Vec<Listener>>, ApiError> {
    let counts = client_counts(&state).await?;
    let list = state.listeners.list().await;
    Ok(Json(list.into_iter().map(|l| view(l, &counts)).collect()))
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
    let tls = match (body.kind.is_tls(), body.cert, body.key) {
        (true, Some(cert), Some(key)) => Some(TlsSettings {
            cert,
            key,
            x509_mode: body.x509_mode.unwrap_or(TlsMode::OneWay),
        }),
        (true, None, _) => {
            return Err(ApiError::invalid(
                "cert",
                "required for kinds tls and wss: the path of a PEM certificate chain",
            ))
        }
        (true, _, None) => {
            return Err(ApiError::invalid(
                "key",
                "required for kinds tls and wss: the path of a PEM private key",
            ))
        }
        (false, cert, key) => {
            let given = [
                ("cert", cert.is_some()),
                ("key", key.is_some()),
                ("x509_mode", body.x509_mode.is_some()),
            ];
            if let Some((field, _)) = given.iter().find(|(_, set)| *set) {
                return Err(ApiError::invalid(
                    field,
                    "only listeners of kind tls or wss take TLS settings",
                ));
            }
            None
        }
    };
    let spec = ListenerSpec {
        name: body.name,
        kind: body.kind,
        bind,
        enabled: body.enabled.unwrap_or(true),
        allow: cidrs(&body.allow)?,
        tls,
    };
    let created = state.listeners.create(spec).await?;
    Ok((StatusCode::CREATED, Json(view(created, &HashMap::new()))))
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
    let listener = state.listeners.get(&name).await?;
    Ok(Json(view(listener, &client_counts(&state).await?)))
}

/// Switch a listener on or off, replace its allow-list and/or (tls, wss) its server
/// certificate, at once.
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
    let change = ListenerChange {
        enabled: body.enabled,
        allow,
        cert: body.cert,
        key: body.key,
    };
    let updated = state.listeners.update(&name, change).await?;
    Ok(Json(view(updated, &client_counts(&state).await?)))
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
