//! The management HTTP API: JSON under `/api/v1/`, authenticated with API keys, on its
//! own listener (default 127.0.0.1:8080), with `/metrics` for Prometheus beside it. One
//! module per resource; every route is declared with `utoipa`, and the OpenAPI document
//! at `/api/v1/openapi.json` is built from the same declarations as the router, so the
//! two cannot disagree.
//!
//! Unauthenticated: `/api/v1/health`, `/api/v1/ready`, `/api/v1/openapi.json`,
//! `/metrics` (probes and scrapers) and the web console's static files under `/console/`
//! (the page asks for a key); everything else needs `Authorization: Bearer <key>`
//! (or `X-API-Key: <key>`).

mod clients;
mod console;
pub(crate) mod error;
mod health;
pub(crate) mod keys;
mod limits;
mod listeners;
mod retained;
mod security;
mod usage;

use std::net::SocketAddr;
use std::sync::Arc;

use aviary_codec::ProtocolVersion;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::broker_task::BrokerHandle;
use crate::limits::PlanLimitsState;
use crate::listener::registry::Registry;
use crate::records::Records;
use error::ApiError;
use keys::ApiKeys;

/// What every handler can reach.
#[derive(Clone)]
pub(crate) struct AppState {
    /// Management requests to the broker task.
    pub(crate) broker: BrokerHandle,
    /// The MQTT listeners.
    pub(crate) listeners: Arc<Registry>,
    /// API keys (hashed).
    pub(crate) keys: Arc<ApiKeys>,
    /// The plan limits in force.
    pub(crate) limits: Arc<PlanLimitsState>,
    /// Stored management records.
    pub(crate) records: Arc<dyn Records>,
    /// Renders `/metrics`.
    pub(crate) metrics: crate::metrics::Metrics,
    /// Users, policies, device identities, certificates.
    pub(crate) security: Arc<crate::security::Security>,
}

/// The document's header; the paths come from the routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Aviary management API",
        description = "Manage a running Aviary MQTT broker."
    ),
    components(schemas(error::ErrorBody))
)]
struct ApiDoc;

/// The router and the OpenAPI document built from the same route declarations.
pub(crate) fn router(state: AppState) -> Router {
    let authenticated = OpenApiRouter::new()
        .merge(keys::routes())
        .merge(clients::routes())
        .merge(retained::routes())
        .merge(listeners::routes())
        .merge(limits::routes())
        .merge(usage::routes())
        .merge(security::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ));
    let (routes, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::routes())
        .merge(authenticated)
        .split_for_parts();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    declare_security(&mut doc);
    let doc = Arc::new(doc);
    routes
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let doc = Arc::clone(&doc);
                async move { axum::Json((*doc).clone()) }
            }),
        )
        .route("/metrics", get(metrics))
        .merge(console::routes())
        .fallback(|| async { ApiError::not_found("no such route; see /api/v1/openapi.json") })
        .with_state(state)
}

/// Declares the bearer API key in the document: required everywhere but the probes.
fn declare_security(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            "api_key",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    doc.security = Some(vec![SecurityRequirement::new(
        "api_key",
        Vec::<String>::new(),
    )]);
    for (path, item) in &mut doc.paths.paths {
        if path.ends_with("/health") || path.ends_with("/ready") {
            if let Some(get) = &mut item.get {
                // An empty requirement: no authentication.
                get.security = Some(vec![SecurityRequirement::default()]);
            }
        }
    }
}

/// Serves the API on `listener` until `stop` is cancelled.
pub(crate) async fn serve(listener: TcpListener, state: AppState, stop: CancellationToken) {
    let app = router(state);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "management API stopped");
    }
}

/// Binds the API listener.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Refuses requests without a valid API key.
async fn authenticate(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let headers = request.headers();
    let key = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
    match key {
        Some(key) if state.keys.check(key.trim()) => Ok(next.run(request).await),
        _ => Err(ApiError::unauthorized()),
    }
}

/// `GET /metrics`: the Prometheus text exposition of the counters at this instant.
async fn metrics(
    State(state): State<AppState>,
) -> Result<([(&'static str, &'static str); 1], String), ApiError> {
    let snapshot = state
        .broker
        .call(|ctx| crate::metrics::Snapshot::take(ctx.broker, ctx.ops))
        .await?;
    Ok((
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics.render(&snapshot),
    ))
}

/// The protocol name shown by the API and in events.
pub(crate) fn protocol_name(protocol: ProtocolVersion) -> &'static str {
    match protocol {
        ProtocolVersion::V3_1 => "3.1",
        ProtocolVersion::V3_1_1 => "3.1.1",
        ProtocolVersion::V5 => "5.0",
    }
}
