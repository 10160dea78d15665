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
    }
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
    let user = tokio::task::spawn_blocking(move || users.create(&username, secret, enabled))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(user_error)?;
    records::put(&*state.records, RecordKind::User, &user.username, &user)?;
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
    let user = tokio::task::spawn_blocking(move || users.update(&username, secret, enabled))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(user_error)?;
    records::put(&*state.records, RecordKind::User, &user.username, &user)?;
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
    state
        .security
        .auth
        .users
        .delete(&username)
        .map_err(user_error)?;
    state.records.delete(RecordKind::User, &username)?;
    Ok(StatusCode::NO_CONTENT)
}
