//! Connected clients: `/api/v1/clients` (list with filters and paging), `/{client_id}`
//! (detail; DELETE kicks the client out, 5.0 gets DISCONNECT 0x98), and
//! `/{client_id}/subscriptions` (add or remove a subscription on the live session).

use aviary_codec::{QoS, SubscriptionOptions, TopicFilter};
use aviary_core::{ClientInfo, ManageError};
use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody, Json, Path, Query};
use super::{protocol_name, AppState};
use crate::broker_task::ManageCtx;

/// Most clients in one page.
const MAX_PAGE: usize = 1000;

/// A connected client.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Client {
    client_id: String,
    username: Option<String>,
    /// The listener it connected through.
    listener: Option<String>,
    /// `3.1`, `3.1.1` or `5.0`.
    protocol: &'static str,
    /// Its address, `ip:port`.
    address: String,
    /// Keep alive granted, seconds (0: off).
    keep_alive: u16,
    subscriptions: usize,
    /// Outgoing QoS 1/2 messages sent and not yet acknowledged.
    inflight: usize,
    /// Outgoing QoS 1/2 messages waiting for the in-flight window.
    queued: usize,
    /// Metered units of this connection so far.
    units: u64,
}

/// One subscription.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct SubscriptionView {
    filter: String,
    qos: u8,
    no_local: bool,
    retain_as_published: bool,
}

/// A client with its subscriptions.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ClientDetail {
    #[serde(flatten)]
    client: Client,
    subscription_list: Vec<SubscriptionView>,
}

/// A page of clients.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ClientPage {
    /// Clients matching the filters, in all pages.
    total: usize,
    offset: usize,
    clients: Vec<Client>,
}

/// Filters and paging of the client list.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClientQuery {
    /// Client id pattern: `*` any characters, `?` one character.
    client_id: Option<String>,
    username: Option<String>,
    listener: Option<String>,
    /// `3.1`, `3.1.1` or `5.0`.
    protocol: Option<String>,
    /// Clients skipped (default 0).
    offset: Option<usize>,
    /// Page size (default 100, at most 1000).
    limit: Option<usize>,
}

/// `POST /api/v1/clients/{client_id}/subscriptions` body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddSubscription {
    /// Topic filter (`$share/group/filter` for a shared subscription).
    filter: String,
    /// Maximum QoS, 0..=2 (default 0).
    #[serde(default)]
    qos: u8,
}

/// Which subscription to remove.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilterQuery {
    /// The topic filter as subscribed.
    filter: String,
}

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_clients))
        .routes(routes!(client_detail, kick_client))
        .routes(routes!(add_subscription, remove_subscription))
}

/// Whether `text` matches `pattern` (`*` any run, `?` one character).
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Classic two-pointer match with backtracking to the last `*`: O(len²) worst case.
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The API view of a client, with the shell's metadata.
fn view(ctx: &ManageCtx<'_>, info: ClientInfo) -> Client {
    let entry = ctx.ops.conns.get(info.conn);
    Client {
        client_id: info.client_id,
        username: entry.and_then(|e| e.username()).map(str::to_owned),
        listener: entry.map(|e| e.listener().to_string()),
        protocol: protocol_name(info.protocol),
        address: info.peer.to_string(),
        keep_alive: info.keep_alive,
        subscriptions: info.subscriptions,
        inflight: info.inflight,
        queued: info.queued,
        units: info.units,
    }
}

/// List connected clients, filtered and paged, sorted by client id.
#[utoipa::path(get, path = "/api/v1/clients", tag = "clients", params(ClientQuery),
    responses((status = 200, body = ClientPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn list_clients(
    State(state): State<AppState>,
    Query(q): Query<ClientQuery>,
) -> Result<Json<ClientPage>, ApiError> {
    if let Some(p) = &q.protocol {
        if !["3.1", "3.1.1", "5.0"].contains(&p.as_str()) {
            return Err(ApiError::invalid("protocol", "expected 3.1, 3.1.1 or 5.0"));
        }
    }
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::invalid(
            "limit",
            format!("must be 1..={MAX_PAGE}"),
        ));
    }
    let offset = q.offset.unwrap_or(0);
    let page = state
        .broker
        .call(move |ctx| {
            let infos: Vec<ClientInfo> = ctx.broker.clients().collect();
            let mut clients: Vec<Client> = infos
                .into_iter()
                .map(|info| view(ctx, info))
                .filter(|c| {
                    q.client_id.as_deref().is_none_or(|p| glob(p, &c.client_id))
                        && q.username
                            .as_ref()
                            .is_none_or(|u| c.username.as_ref() == Some(u))
                        && q.listener
                            .as_ref()
                            .is_none_or(|l| c.listener.as_ref() == Some(l))
                        && q.protocol.as_deref().is_none_or(|p| c.protocol == p)
                })
                .collect();
            clients.sort_by(|a, b| a.client_id.cmp(&b.client_id));
            let total = clients.len();
            let clients = clients.into_iter().skip(offset).take(limit).collect();
            ClientPage {
                total,
                offset,
                clients,
            }
        })
        .await?;
    Ok(Json(page))
}

/// A connected client with its subscriptions.
#[utoipa::path(get, path = "/api/v1/clients/{client_id}", tag = "clients",
    params(("client_id" = String, Path, description = "Client id (percent-encoded)")),
    responses((status = 200, body = ClientDetail), (status = 404, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn client_detail(
    State(state): State<AppState>,
    Path(client_id): Path<String>,
) -> Result<Json<ClientDetail>, ApiError> {
    let id = client_id.clone();
    let detail = state
        .broker
        .call(move |ctx| {
            let info = ctx.broker.clients().find(|c| c.client_id == id)?;
            let subs = ctx.broker.session_subscriptions(&id).unwrap_or_default();
            Some(ClientDetail {
                client: view(ctx, info),
                subscription_list: subs
                    .into_iter()
                    .map(|s| SubscriptionView {
                        filter: s.filter.as_str().to_owned(),
                        qos: s.options.qos as u8,
                        no_local: s.options.no_local,
                        retain_as_published: s.options.retain_as_published,
                    })
                    .collect(),
            })
        })
        .await?;
    detail
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no connected client {client_id:?}")))
}

/// Kick a client out (5.0: DISCONNECT 0x98 Administrative action); its will is published.
#[utoipa::path(delete, path = "/api/v1/clients/{client_id}", tag = "clients",
    params(("client_id" = String, Path, description = "Client id (percent-encoded)")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn kick_client(
    State(state): State<AppState>,
    Path(client_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = client_id.clone();
    let kicked = state
        .broker
        .call(move |ctx| ctx.broker.disconnect_client(&id, ctx.now))
        .await?;
    if kicked {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "no connected client {client_id:?}"
        )))
    }
}

/// Add (or replace) a subscription on a session (connected or not).
#[utoipa::path(post, path = "/api/v1/clients/{client_id}/subscriptions", tag = "clients",
    params(("client_id" = String, Path, description = "Client id (percent-encoded)")),
    request_body = AddSubscription,
    responses((status = 201), (status = 200, description = "replaced"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn add_subscription(
    State(state): State<AppState>,
    Path(client_id): Path<String>,
    Json(body): Json<AddSubscription>,
) -> Result<StatusCode, ApiError> {
    let filter = TopicFilter::new(&body.filter).map_err(|e| ApiError::invalid("filter", e))?;
    let qos =
        QoS::from_bits(body.qos).ok_or_else(|| ApiError::invalid("qos", "must be 0, 1 or 2"))?;
    let options = SubscriptionOptions::with_qos(qos);
    let result = state
        .broker
        .call(move |ctx| ctx.broker.add_subscription(&client_id, filter, options))
        .await?;
    match result {
        Ok(true) => Ok(StatusCode::OK),
        Ok(false) => Ok(StatusCode::CREATED),
        Err(e @ ManageError::NoSession(_)) => Err(ApiError::not_found(e.to_string())),
        Err(e @ ManageError::TooManySubscriptions(_)) => Err(ApiError::conflict(e.to_string())),
        Err(e @ ManageError::TooDeep(_)) => Err(ApiError::invalid("filter", e)),
    }
}

/// Remove a subscription from a session.
#[utoipa::path(delete, path = "/api/v1/clients/{client_id}/subscriptions", tag = "clients",
    params(("client_id" = String, Path, description = "Client id (percent-encoded)"), FilterQuery),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn remove_subscription(
    State(state): State<AppState>,
    Path(client_id): Path<String>,
    Query(q): Query<FilterQuery>,
) -> Result<StatusCode, ApiError> {
    let filter = TopicFilter::new(&q.filter).map_err(|e| ApiError::invalid("filter", e))?;
    let id = client_id.clone();
    let removed = state
        .broker
        .call(move |ctx| ctx.broker.remove_subscription(&id, &filter, ctx.now))
        .await?;
    match removed {
        Some(true) => Ok(StatusCode::NO_CONTENT),
        Some(false) => Err(ApiError::not_found(format!(
            "client {client_id:?} has no subscription {:?}",
            q.filter
        ))),
        None => Err(ApiError::not_found(format!(
            "no session for client id {client_id:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn glob_patterns() {
        let check = |p: &str, t: &str, expected: bool| assert_eq!(glob(p, t), expected, "{p} {t}");
        check("*", "", true);
        check("car-*", "car-17", true);
        check("car-*", "truck-1", false);
        check("c?r", "car", true);
        check("c?r", "cr", false);
        check("*-1*", "car-17", true);
        check("exact", "exact", true);
        check("exact", "exactly", false);
    }
}
