//! Metered usage: `/api/v1/usage` (now and per minute for the last 24 hours, in total and
//! per listener and user; clients in total and now) and `/api/v1/usage/{scope}/{name}`
//! (one listener, user or client with its minutes).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody, Json, Path};
use super::AppState;
use crate::usage::{MinuteUnits, Series};

/// The usage of one thing.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct UsageSeries {
    /// Units since the broker started.
    total: u64,
    /// Units in the last complete second.
    per_second: u64,
    /// Minutes with units in the last 24 hours, oldest first (absent in summaries).
    #[serde(skip_serializing_if = "Option::is_none")]
    per_minute: Option<Vec<MinuteUnits>>,
}

/// All usage.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct UsageReport {
    /// The broker as a whole (will messages included).
    total: UsageSeries,
    listeners: BTreeMap<String, UsageSeries>,
    users: BTreeMap<String, UsageSeries>,
    /// Per client: totals and the current rate only (ask `/usage/client/{id}` for minutes).
    clients: BTreeMap<String, UsageSeries>,
}

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(usage))
        .routes(routes!(usage_of))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn series(s: &Series, now: u64, minutes: bool) -> UsageSeries {
    UsageSeries {
        total: s.total,
        per_second: s.per_second(now),
        per_minute: minutes.then(|| s.minutes().collect()),
    }
}

/// Usage in weighted units, in total and per listener, user and client.
#[utoipa::path(get, path = "/api/v1/usage", tag = "usage",
    responses((status = 200, body = UsageReport), (status = 401, body = ErrorBody)))]
async fn usage(State(state): State<AppState>) -> Result<Json<UsageReport>, ApiError> {
    let now = unix_now();
    let report = state
        .broker
        .call(move |ctx| {
            let u = &ctx.ops.usage;
            let map = |m: &std::collections::HashMap<String, Series>, minutes| {
                m.iter()
                    .map(|(k, s)| (k.clone(), series(s, now, minutes)))
                    .collect()
            };
            UsageReport {
                total: series(&u.total, now, true),
                listeners: map(&u.listeners, true),
                users: map(&u.users, true),
                clients: map(&u.clients, false),
            }
        })
        .await?;
    Ok(Json(report))
}

/// The usage of one listener, user or client, with its minutes.
#[utoipa::path(get, path = "/api/v1/usage/{scope}/{name}", tag = "usage",
    params(("scope" = String, Path, description = "listener, user or client"),
        ("name" = String, Path, description = "Its name (percent-encoded)")),
    responses((status = 200, body = UsageSeries), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn usage_of(
    State(state): State<AppState>,
    Path((scope, name)): Path<(String, String)>,
) -> Result<Json<UsageSeries>, ApiError> {
    if !["listener", "user", "client"].contains(&scope.as_str()) {
        return Err(ApiError::invalid(
            "scope",
            "expected listener, user or client",
        ));
    }
    let now = unix_now();
    let key = name.clone();
    let found = state
        .broker
        .call(move |ctx| {
            let u = &ctx.ops.usage;
            let map = match scope.as_str() {
                "listener" => &u.listeners,
                "user" => &u.users,
                _ => &u.clients,
            };
            map.get(&key).map(|s| series(s, now, true))
        })
        .await?;
    found
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no usage recorded for {name:?}")))
}
