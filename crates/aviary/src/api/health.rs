//! Liveness and readiness: `/api/v1/health` answers while the process serves HTTP;
//! `/api/v1/ready` also checks that the broker task answers and every enabled listener is
//! bound (the management records are loaded before the API starts).

use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody, Json};
use super::AppState;

/// A probe's answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Status {
    /// `ok`.
    status: &'static str,
}

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
}

/// Liveness.
#[utoipa::path(get, path = "/api/v1/health", tag = "health", responses((status = 200, body = Status)))]
async fn health() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// Readiness: the broker answers and every enabled listener is bound.
#[utoipa::path(get, path = "/api/v1/ready", tag = "health",
    responses((status = 200, body = Status), (status = 503, body = ErrorBody)))]
async fn ready(State(state): State<AppState>) -> Result<(StatusCode, Json<Status>), ApiError> {
    state.broker.call(|_| ()).await?;
    if !state.listeners.all_bound().await {
        return Err(ApiError::unavailable("an enabled listener is not bound"));
    }
    Ok((StatusCode::OK, Json(Status { status: "ready" })))
}
