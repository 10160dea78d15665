//! `/api/v1/users`: built-in users (passwords hashed on arrival, never returned).

// The resource modules share the parent's imports.
use super::*;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user, delete_user))
}

/// A built-in user (the password hash is never shown).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct UserView {
    username: String,
    enabled: bool,
}

/// `POST /api/v1/users`.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewUser {
    username: String,
    /// Hashed with argon2id at once; never stored or logged in plain text.
    password: Option<String>,
    /// A ready argon2 PHC hash instead of `password`.
    password_hash: Option<String>,
    #[serde(default = "yes")]
    enabled: bool,
}

/// `PATCH /api/v1/users/{username}`.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserChange {
    password: Option<String>,
    enabled: Option<bool>,
}

fn yes() -> bool {
    true
}

fn user_error(e: UserError) -> ApiError {
    match e {
        UserError::NotFound(_) => ApiError::not_found(e.to_string()),
        UserError::Exists(_) => ApiError::conflict(e.to_string()),
        UserError::BadUsername => ApiError::invalid("username", e),
        UserError::BadPassword => ApiError::invalid("password", e),
        UserError::BadHash => ApiError::invalid("password_hash", e),
        UserError::Store(_) => ApiError::internal(e.to_string()),
    }
}

/// Stores (`Some`) or deletes (`None`) user `username`'s record.
fn persist(records: &Arc<dyn Records>, username: &str, user: Option<&User>) -> Result<(), String> {
    let done = match user {
        Some(user) => records::put(&**records, RecordKind::User, username, user),
        None => records.delete(RecordKind::User, username).map(drop),
    };
    done.map_err(|e| format!("the change could not be stored: {e}"))
}

/// List the built-in users.
#[utoipa::path(get, path = "/api/v1/users", tag = "security",
    responses((status = 200, body = [UserView]), (status = 401, body = ErrorBody)))]
async fn list_users(State(state): State<AppState>) -> Json<Vec<UserView>> {
    Json(
        state
            .security
            .auth
            .users
            .list()
            .into_iter()
            .map(|u| UserView {
                username: u.username,
                enabled: u.enabled,
            })
            .collect(),
    )
}

/// Create a user (anonymous access in "auto" mode ends with the first user).
#[utoipa::path(post, path = "/api/v1/users", tag = "security", request_body = NewUser,
    responses((status = 201, body = UserView), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn create_user(
    State(state): State<AppState>,
    Json(body): Json<NewUser>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let secret = match (body.password, body.password_hash) {
        (Some(p), None) => Secret::Password(p),
        (None, Some(h)) => Secret::Hash(h),
        _ => {
            return Err(ApiError::invalid(
                "password",
                "give exactly one of password, password_hash",
            ))
        }
    };
    let users = state.security.auth.users.clone();
    let username = body.username;
    let enabled = body.enabled;
    // argon2 takes tens of milliseconds: off the async threads.
    let records = Arc::clone(&state.records);
    // argon2 and the store write block: off the async threads.
    let user = tokio::task::spawn_blocking(move || {
        users.create_stored(&username, secret, enabled, &|u| {
            persist(&records, &username, u)
        })
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(user_error)?;
    Ok((
        StatusCode::CREATED,
        Json(UserView {
            username: user.username,
            enabled: user.enabled,
        }),
    ))
}

/// Read a user.
#[utoipa::path(get, path = "/api/v1/users/{username}", tag = "security",
    params(("username" = String, Path)),
    responses((status = 200, body = UserView), (status = 404, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn get_user(
    State(state): State<AppState>,
    Path(username): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    let user = state
        .security
        .auth
        .users
        .get(&username)
        .ok_or_else(|| ApiError::not_found(format!("no user {username:?}")))?;
    Ok(Json(UserView {
        username: user.username,
        enabled: user.enabled,
    }))
}

/// Change a user's password or enabled flag (applies to the next CONNECT).
#[utoipa::path(patch, path = "/api/v1/users/{username}", tag = "security",
    params(("username" = String, Path)), request_body = UserChange,
    responses((status = 200, body = UserView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn update_user(
    State(state): State<AppState>,
    Path(username): Path<String>,
    Json(body): Json<UserChange>,
) -> Result<Json<UserView>, ApiError> {
    let users = state.security.auth.users.clone();
    let secret = body.password.map(Secret::Password);
    let enabled = body.enabled;
    let records = Arc::clone(&state.records);
    let user = tokio::task::spawn_blocking(move || {
        users.update_stored(&username, secret, enabled, &|u| {
            persist(&records, &username, u)
        })
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(user_error)?;
    Ok(Json(UserView {
        username: user.username,
        enabled: user.enabled,
    }))
}

/// Delete a user.
#[utoipa::path(delete, path = "/api/v1/users/{username}", tag = "security",
    params(("username" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn delete_user(
    State(state): State<AppState>,
    Path(username): Path<String>,
) -> Result<StatusCode, ApiError> {
    let (users, records) = (
        state.security.auth.users.clone(),
        Arc::clone(&state.records),
    );
    tokio::task::spawn_blocking(move || {
        users.delete_stored(&username, &|u| persist(&records, &username, u))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(user_error)?;
    Ok(StatusCode::NO_CONTENT)
}
