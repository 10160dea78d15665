//! `/api/v1/authorization-policies`.

// The resource modules share the parent's imports.
use super::*;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_policies, create_policy))
        .routes(routes!(get_policy, replace_policy, delete_policy))
}

fn policy_error(e: PolicyError) -> ApiError {
    match e {
        PolicyError::NotFound(_) => ApiError::not_found(e.to_string()),
        PolicyError::Exists(_) | PolicyError::TooMany => ApiError::conflict(e.to_string()),
        PolicyError::BadId => ApiError::invalid("id", e),
        PolicyError::NoAction | PolicyError::BadAction(_) => ApiError::invalid("actions", e),
        PolicyError::BadEffect(_) => ApiError::invalid("effect", e),
        PolicyError::BadQos => ApiError::invalid("qos", e),
        PolicyError::Pattern(p) => ApiError::invalid("resources", p),
        PolicyError::Store(_) => ApiError::internal(e.to_string()),
    }
}

/// Stores (`Some`) or deletes (`None`) policy `id`'s record.
fn persist(records: &Arc<dyn Records>, id: &str, doc: Option<&PolicyDoc>) -> Result<(), String> {
    let done = match doc {
        Some(doc) => records::put(&**records, RecordKind::AuthorizationPolicy, id, doc),
        None => records
            .delete(RecordKind::AuthorizationPolicy, id)
            .map(drop),
    };
    done.map_err(|e| format!("the change could not be stored: {e}"))
}

/// Runs a policy change with its record write on a blocking thread.
async fn stored(
    state: &AppState,
    id: String,
    change: impl FnOnce(
            &crate::auth::policies::PolicyStore,
            Persist<'_, PolicyDoc>,
        ) -> Result<(), PolicyError>
        + Send
        + 'static,
) -> Result<(), ApiError> {
    let (policies, records) = (state.security.policies.clone(), Arc::clone(&state.records));
    tokio::task::spawn_blocking(move || change(&policies, &|d| persist(&records, &id, d)))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(policy_error)
}

/// List the policies in evaluation order.
#[utoipa::path(get, path = "/api/v1/authorization-policies", tag = "security",
    responses((status = 200, body = [PolicyDoc]), (status = 401, body = ErrorBody)))]
async fn list_policies(State(state): State<AppState>) -> Json<Vec<PolicyDoc>> {
    Json(state.security.policies.list())
}

/// Create a policy; it applies to open connections at once.
#[utoipa::path(post, path = "/api/v1/authorization-policies", tag = "security",
    request_body = PolicyDoc,
    responses((status = 201, body = PolicyDoc), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn create_policy(
    State(state): State<AppState>,
    Json(doc): Json<PolicyDoc>,
) -> Result<(StatusCode, Json<PolicyDoc>), ApiError> {
    let given = doc.clone();
    stored(&state, doc.id.clone(), move |p, persist| {
        p.create_stored(given, persist)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(doc)))
}

/// Read a policy.
#[utoipa::path(get, path = "/api/v1/authorization-policies/{id}", tag = "security",
    params(("id" = String, Path)),
    responses((status = 200, body = PolicyDoc), (status = 404, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn get_policy(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<PolicyDoc>, ApiError> {
    state
        .security
        .policies
        .get(&id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no policy {id:?}")))
}

/// Replace a policy (the body's id must be the path's).
#[utoipa::path(put, path = "/api/v1/authorization-policies/{id}", tag = "security",
    params(("id" = String, Path)), request_body = PolicyDoc,
    responses((status = 200, body = PolicyDoc), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn replace_policy(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(doc): Json<PolicyDoc>,
) -> Result<Json<PolicyDoc>, ApiError> {
    if doc.id != id {
        return Err(ApiError::invalid("id", "must equal the id in the path"));
    }
    let given = doc.clone();
    stored(&state, id, move |p, persist| {
        p.replace_stored(given, persist)
    })
    .await?;
    Ok(Json(doc))
}

/// Delete a policy.
#[utoipa::path(delete, path = "/api/v1/authorization-policies/{id}", tag = "security",
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn delete_policy(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let target = id.clone();
    stored(&state, id, move |p, persist| {
        p.delete_stored(&target, persist)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
