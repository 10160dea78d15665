//! Metered usage: `/api/v1/usage` (now and per minute for the last 24 hours, in total and
//! per listener and user; clients in total and now, filtered and paged) and
//! `/api/v1/usage/{scope}/{name}` (one listener, user or client with its minutes).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::clients::glob;
use super::error::{ApiError, ErrorBody, Json, Path, Query};
use super::AppState;
use crate::usage::{Evicted, MinuteUnits, Series};

/// Largest page of clients.
const MAX_PAGE: usize = 1000;

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
    /// Per client (one page of those matching, by client id): totals and the current rate
    /// only (ask `/usage/client/{id}` for minutes).
    clients: BTreeMap<String, UsageSeries>,
    /// Clients matching the filter, in all pages.
    clients_total: usize,
    /// Matching clients skipped before this page.
    clients_offset: usize,
    /// Client series folded away to bound memory (the least recently active when more
    /// client ids than the bound were seen, never one active within the last minute; a
    /// newcomer while all are is counted here untracked): their units count in the
    /// listener, user and broker totals, not per client.
    clients_evicted: Evicted,
}

/// Filter and paging of the per-client part of the report.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct UsageQuery {
    /// Client id pattern: `*` any characters, `?` one character.
    client_id: Option<String>,
    /// Matching clients skipped, in client id order (default 0).
    offset: Option<usize>,
    /// Clients in the page (default 100, at most 1000).
    limit: Option<usize>,
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

/// Usage in weighted units, in total and per listener, user and client (clients filtered
/// and paged, sorted by client id).
#[utoipa::path(get, path = "/api/v1/usage", tag = "usage", params(UsageQuery),
    responses((status = 200, body = UsageReport), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn usage(
    State(state): State<AppState>,
    Query(q): Query<UsageQuery>,
) -> Result<Json<UsageReport>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::invalid(
            "limit",
            format!("must be 1..={MAX_PAGE}"),
        ));
    }
    let offset = q.offset.unwrap_or(0);
    let now = unix_now();
    let report = state
        .broker
        .call(move |ctx| {
            let u = &ctx.ops.usage;
            let map = |m: &crate::sharded::Sharded<Series>, minutes| {
                m.iter()
                    .map(|(k, s)| (k.to_string(), series(s, now, minutes)))
                    .collect()
            };
            let mut ids: Vec<&str> = u
                .clients
                .keys()
                .map(|id| &**id)
                .filter(|id| q.client_id.as_deref().is_none_or(|p| glob(p, id)))
                .collect();
            ids.sort_unstable();
            let clients = ids
                .iter()
                .skip(offset)
                .take(limit)
                .filter_map(|id| Some(((*id).to_owned(), series(u.clients.get(id)?, now, false))))
                .collect();
            UsageReport {
                total: series(&u.total, now, true),
                listeners: map(&u.listeners, true),
                users: map(&u.users, true),
                clients,
                clients_total: ids.len(),
                clients_offset: offset,
                clients_evicted: u.evicted,
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
            map.get(key.as_str()).map(|s| series(s, now, true))
        })
        .await?;
    found
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no usage recorded for {name:?}")))
}
