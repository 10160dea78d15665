//! Messages: `/api/v1/retained` (list, read, delete retained messages), `/api/v1/publish`
//! (publish a message as the broker), `/api/v1/shared-subscriptions` (groups, members,
//! backlog) and `/api/v1/stats` (the broker's counters).
//!
//! Payloads are shown as text when they are UTF-8 and always as hex; a publish takes
//! either.

use aviary_codec::properties::PublishProperties;
use aviary_codec::{QoS, TopicName};
use aviary_core::{RetainedInfo, SharedGroupInfo};
use axum::extract::State;
use axum::http::StatusCode;
use bytes::Bytes;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody, Json, Path, Query};
use super::AppState;

/// Most retained messages listed at once.
const MAX_LIST: usize = 1000;

/// A retained message.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Retained {
    topic: String,
    qos: u8,
    /// The payload as text, if it is UTF-8.
    payload: Option<String>,
    /// The payload in hex.
    payload_hex: String,
}

/// Which retained messages to list.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetainedQuery {
    /// Topic filter (default `#`: all but `$` topics).
    filter: Option<String>,
    /// At most this many (default 100, at most 1000).
    limit: Option<usize>,
}

/// `POST /api/v1/publish` body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishRequest {
    /// Topic name (no wildcards).
    topic: String,
    /// Payload as text.
    payload: Option<String>,
    /// Payload in hex (instead of `payload`).
    payload_hex: Option<String>,
    /// 0..=2 (default 0).
    #[serde(default)]
    qos: u8,
    /// Keep it as the topic's retained message (default false).
    #[serde(default)]
    retain: bool,
}

/// The result of a publish.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Published {
    /// Whether any subscription matched.
    matched: bool,
}

/// A shared subscription group.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct SharedGroup {
    group: String,
    filter: String,
    /// Client ids of the members.
    members: Vec<String>,
    /// QoS 1/2 messages of the group queued or in flight at its members.
    backlog: usize,
}

/// The broker's counters.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Stats {
    connections: usize,
    sessions: usize,
    subscriptions: usize,
    retained: usize,
    messages_in: u64,
    messages_out: u64,
    units: u64,
    wills_published: u64,
    connects_refused: u64,
}

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_retained))
        .routes(routes!(read_retained, delete_retained))
        .routes(routes!(publish))
        .routes(routes!(shared_groups))
        .routes(routes!(stats))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

fn retained_view(info: RetainedInfo) -> Retained {
    Retained {
        topic: info.topic.as_str().to_owned(),
        qos: info.qos as u8,
        payload: std::str::from_utf8(&info.payload).ok().map(str::to_owned),
        payload_hex: hex(&info.payload),
    }
}

fn topic_name(topic: &str) -> Result<TopicName, ApiError> {
    TopicName::new(topic).map_err(|e| ApiError::invalid("topic", e))
}

/// List retained messages matching a filter, sorted by topic.
#[utoipa::path(get, path = "/api/v1/retained", tag = "messages", params(RetainedQuery),
    responses((status = 200, body = [Retained]), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn list_retained(
    State(state): State<AppState>,
    Query(q): Query<RetainedQuery>,
) -> Result<Json<Vec<Retained>>, ApiError> {
    let filter = q.filter.unwrap_or_else(|| "#".to_owned());
    aviary_codec::TopicFilter::new(&filter).map_err(|e| ApiError::invalid("filter", e))?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIST {
        return Err(ApiError::invalid(
            "limit",
            format!("must be 1..={MAX_LIST}"),
        ));
    }
    let found = state
        .broker
        .call(move |ctx| ctx.broker.retained_messages(&filter, limit))
        .await?;
    Ok(Json(found.into_iter().map(retained_view).collect()))
}

/// Read the retained message of a topic.
#[utoipa::path(get, path = "/api/v1/retained/{topic}", tag = "messages",
    params(("topic" = String, Path, description = "Topic name (percent-encoded)")),
    responses((status = 200, body = Retained), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn read_retained(
    State(state): State<AppState>,
    Path(topic): Path<String>,
) -> Result<Json<Retained>, ApiError> {
    let name = topic_name(&topic)?;
    let found = state
        .broker
        .call(move |ctx| ctx.broker.retained_message(&name))
        .await?;
    found
        .map(|m| Json(retained_view(m)))
        .ok_or_else(|| ApiError::not_found(format!("no retained message on {topic:?}")))
}

/// Delete the retained message of a topic.
#[utoipa::path(delete, path = "/api/v1/retained/{topic}", tag = "messages",
    params(("topic" = String, Path, description = "Topic name (percent-encoded)")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn delete_retained(
    State(state): State<AppState>,
    Path(topic): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name = topic_name(&topic)?;
    let deleted = state
        .broker
        .call(move |ctx| ctx.broker.delete_retained(&name))
        .await?;
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "no retained message on {topic:?}"
        )))
    }
}

/// Publish a message as the broker (it is retained if `retain` is set, like a client's).
#[utoipa::path(post, path = "/api/v1/publish", tag = "messages", request_body = PublishRequest,
    responses((status = 200, body = Published), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn publish(
    State(state): State<AppState>,
    Json(body): Json<PublishRequest>,
) -> Result<Json<Published>, ApiError> {
    let topic = topic_name(&body.topic)?;
    if topic.as_str().starts_with('$') {
        return Err(ApiError::invalid(
            "topic",
            "topics starting with $ are the broker's own",
        ));
    }
    let payload = match (body.payload, body.payload_hex) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "payload_hex",
                "give either payload or payload_hex",
            ))
        }
        (Some(text), None) => Bytes::from(text),
        (None, Some(h)) => {
            Bytes::from(unhex(&h).ok_or_else(|| ApiError::invalid("payload_hex", "not hex"))?)
        }
        (None, None) => Bytes::new(),
    };
    let qos =
        QoS::from_bits(body.qos).ok_or_else(|| ApiError::invalid("qos", "must be 0, 1 or 2"))?;
    let size_limit = state.limits.get().max_message_size;
    if payload.len() > size_limit as usize {
        return Err(ApiError::invalid(
            "payload",
            format!("larger than the message size limit ({size_limit} bytes)"),
        ));
    }
    let retain = body.retain;
    let matched = state
        .broker
        .call(move |ctx| {
            ctx.broker.publish(
                topic,
                payload,
                qos,
                retain,
                PublishProperties::default(),
                ctx.now,
            )
        })
        .await?;
    Ok(Json(Published { matched }))
}

/// Shared subscription groups with their members and backlog.
#[utoipa::path(get, path = "/api/v1/shared-subscriptions", tag = "messages",
    responses((status = 200, body = [SharedGroup]), (status = 401, body = ErrorBody)))]
async fn shared_groups(State(state): State<AppState>) -> Result<Json<Vec<SharedGroup>>, ApiError> {
    let groups = state.broker.call(|ctx| ctx.broker.shared_groups()).await?;
    Ok(Json(
        groups
            .into_iter()
            .map(|g: SharedGroupInfo| SharedGroup {
                group: g.group,
                filter: g.filter,
                members: g.members,
                backlog: g.backlog,
            })
            .collect(),
    ))
}

/// The broker's counters and gauges.
#[utoipa::path(get, path = "/api/v1/stats", tag = "messages",
    responses((status = 200, body = Stats), (status = 401, body = ErrorBody)))]
async fn stats(State(state): State<AppState>) -> Result<Json<Stats>, ApiError> {
    let s = state.broker.call(|ctx| ctx.broker.stats()).await?;
    Ok(Json(Stats {
        connections: s.connections,
        sessions: s.sessions,
        subscriptions: s.subscriptions,
        retained: s.retained,
        messages_in: s.messages_in,
        messages_out: s.messages_out,
        units: s.units,
        wills_published: s.wills_published,
        connects_refused: s.connects_refused,
    }))
}
