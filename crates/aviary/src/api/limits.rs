//! The plan limits: `GET`/`PUT /api/v1/limits`. A change applies at once and is stored.

use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody, Json};
use super::AppState;
use crate::limits::PlanLimits;
use crate::records::{self, RecordKind};

/// The record id of the plan limits.
pub(crate) const LIMITS_ID: &str = "plan";

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_limits, put_limits))
}

/// The plan limits in force.
#[utoipa::path(get, path = "/api/v1/limits", tag = "limits",
    responses((status = 200, body = PlanLimits), (status = 401, body = ErrorBody)))]
async fn get_limits(State(state): State<AppState>) -> Json<PlanLimits> {
    Json(state.limits.get())
}

/// Replace the plan limits (every field); they apply at once.
#[utoipa::path(put, path = "/api/v1/limits", tag = "limits", request_body = PlanLimits,
    responses((status = 200, body = PlanLimits), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn put_limits(
    State(state): State<AppState>,
    Json(limits): Json<PlanLimits>,
) -> Result<Json<PlanLimits>, ApiError> {
    limits
        .check()
        .map_err(|(field, why)| ApiError::invalid(field, why))?;
    records::put(&*state.records, RecordKind::PlanLimits, LIMITS_ID, &limits)?;
    state.limits.set(limits);
    let runtime = limits.runtime();
    state
        .broker
        .call(move |ctx| ctx.broker.set_limits(runtime))
        .await?;
    Ok(Json(limits))
}
