//! Security resources: `/api/v1/users`, `/api/v1/authorization-policies`,
//! `/api/v1/authenticators`, `/api/v1/device-identities`, `/api/v1/ca-certificates` (with
//! `registration-code` and CRL import) and `/api/v1/device-certificates` (with the status
//! query for any serial). Every change applies at once, to open connections too.
//!
//! Secrets: passwords are hashed on arrival and never returned; device keys are returned to
//! the operator (devices need them to sign tokens) but never logged.

use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody, Json, Path, Query};
use super::AppState;
use crate::auth::devices::{DeviceError, DeviceIdentity, DeviceSpec};
use crate::auth::policies::{PolicyDoc, PolicyError};
use crate::auth::users::UserError;
use crate::auth::Secret;
use crate::records::{self, RecordKind};
use crate::tls::{CaOptions, CaStatus, CertFilter, CertStatus, RegistryError};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user, delete_user))
        .routes(routes!(list_policies, create_policy))
        .routes(routes!(get_policy, replace_policy, delete_policy))
        .routes(routes!(authenticators))
        .routes(routes!(list_devices, create_device))
        .routes(routes!(get_device, update_device, delete_device))
        .routes(routes!(registration_code))
        .routes(routes!(list_cas, register_ca))
        .routes(routes!(get_ca, update_ca, delete_ca))
        .routes(routes!(import_crl))
        .routes(routes!(list_certs, register_cert))
        .routes(routes!(get_cert, update_cert, delete_cert))
        .routes(routes!(cert_status))
}

// ---- users ---------------------------------------------------------------------------

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

// ---- authorization policies ------------------------------------------------------------

fn policy_error(e: PolicyError) -> ApiError {
    match e {
        PolicyError::NotFound(_) => ApiError::not_found(e.to_string()),
        PolicyError::Exists(_) | PolicyError::TooMany => ApiError::conflict(e.to_string()),
        PolicyError::BadId => ApiError::invalid("id", e),
        PolicyError::NoAction | PolicyError::BadAction(_) => ApiError::invalid("actions", e),
        PolicyError::BadEffect(_) => ApiError::invalid("effect", e),
        PolicyError::BadQos => ApiError::invalid("qos", e),
        PolicyError::Pattern(p) => ApiError::invalid("resources", p),
    }
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
    state
        .security
        .policies
        .create(doc.clone())
        .map_err(policy_error)?;
    records::put(
        &*state.records,
        RecordKind::AuthorizationPolicy,
        &doc.id,
        &doc,
    )?;
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
    state
        .security
        .policies
        .replace(doc.clone())
        .map_err(policy_error)?;
    records::put(
        &*state.records,
        RecordKind::AuthorizationPolicy,
        &doc.id,
        &doc,
    )?;
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
    state.security.policies.delete(&id).map_err(policy_error)?;
    state.records.delete(RecordKind::AuthorizationPolicy, &id)?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- authenticators --------------------------------------------------------------------

/// The authentication chain as configured (read-only: it comes from the config file).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Authenticators {
    /// Authenticators in the order they are tried (a TLS client certificate comes first).
    order: Vec<String>,
    /// Whether clients no authenticator claims may connect right now.
    anonymous_allowed: bool,
    users: usize,
    device_identities: usize,
    jwt_configured: bool,
    http_configured: bool,
}

/// The authentication chain.
#[utoipa::path(get, path = "/api/v1/authenticators", tag = "security",
    responses((status = 200, body = Authenticators), (status = 401, body = ErrorBody)))]
async fn authenticators(State(state): State<AppState>) -> Json<Authenticators> {
    let auth = &state.security.auth;
    Json(Authenticators {
        order: auth
            .order()
            .iter()
            .map(|k| format!("{k:?}").to_lowercase())
            .collect(),
        anonymous_allowed: auth.anonymous_allowed(),
        users: auth.users.list().len(),
        device_identities: auth.devices.list().len(),
        jwt_configured: auth.jwt.is_some(),
        http_configured: auth.http.is_some(),
    })
}

// ---- device identities -----------------------------------------------------------------

/// A device identity, with its keys (standard base64).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct DeviceView {
    device_id: String,
    enabled: bool,
    primary_key: String,
    secondary_key: String,
    /// `[[name, value], ...]`, added as user properties to its messages.
    properties: Vec<(String, String)>,
}

impl From<DeviceIdentity> for DeviceView {
    fn from(d: DeviceIdentity) -> Self {
        Self {
            device_id: d.device_id,
            enabled: d.enabled,
            primary_key: d.primary_key,
            secondary_key: d.secondary_key,
            properties: d.properties,
        }
    }
}

/// `POST /api/v1/device-identities` (keys generated when missing).
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewDevice {
    device_id: String,
    enabled: Option<bool>,
    primary_key: Option<String>,
    secondary_key: Option<String>,
    properties: Option<Vec<(String, String)>>,
}

/// `PATCH /api/v1/device-identities/{device_id}`; a key given as "" is regenerated.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeviceChange {
    enabled: Option<bool>,
    primary_key: Option<String>,
    secondary_key: Option<String>,
    properties: Option<Vec<(String, String)>>,
}

fn device_error(e: DeviceError) -> ApiError {
    match e {
        DeviceError::NotFound(_) => ApiError::not_found(e.to_string()),
        DeviceError::Exists(_) => ApiError::conflict(e.to_string()),
        DeviceError::BadId => ApiError::invalid("device_id", e),
        DeviceError::BadKey => ApiError::invalid("primary_key", e),
        DeviceError::TooManyProperties => ApiError::invalid("properties", e),
        DeviceError::Random => ApiError::internal(e.to_string()),
    }
}

/// List device identities.
#[utoipa::path(get, path = "/api/v1/device-identities", tag = "security",
    responses((status = 200, body = [DeviceView]), (status = 401, body = ErrorBody)))]
async fn list_devices(State(state): State<AppState>) -> Json<Vec<DeviceView>> {
    Json(
        state
            .security
            .auth
            .devices
            .list()
            .into_iter()
            .map(Into::into)
            .collect(),
    )
}

/// Create a device identity.
#[utoipa::path(post, path = "/api/v1/device-identities", tag = "security",
    request_body = NewDevice,
    responses((status = 201, body = DeviceView), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn create_device(
    State(state): State<AppState>,
    Json(body): Json<NewDevice>,
) -> Result<(StatusCode, Json<DeviceView>), ApiError> {
    let spec = DeviceSpec {
        enabled: body.enabled,
        primary_key: body.primary_key,
        secondary_key: body.secondary_key,
        properties: body.properties,
    };
    let device = state
        .security
        .auth
        .devices
        .create(&body.device_id, spec)
        .map_err(device_error)?;
    records::put(
        &*state.records,
        RecordKind::DeviceIdentity,
        &device.device_id,
        &device,
    )?;
    Ok((StatusCode::CREATED, Json(device.into())))
}

/// Read a device identity.
#[utoipa::path(get, path = "/api/v1/device-identities/{device_id}", tag = "security",
    params(("device_id" = String, Path)),
    responses((status = 200, body = DeviceView), (status = 404, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn get_device(
    State(state): State<AppState>,
    Path(device_id): Path<String>,
) -> Result<Json<DeviceView>, ApiError> {
    state
        .security
        .auth
        .devices
        .get(&device_id)
        .map(|d| Json(d.into()))
        .ok_or_else(|| ApiError::not_found(format!("no device {device_id:?}")))
}

/// Change a device identity (enable/disable, rotate keys, properties).
#[utoipa::path(patch, path = "/api/v1/device-identities/{device_id}", tag = "security",
    params(("device_id" = String, Path)), request_body = DeviceChange,
    responses((status = 200, body = DeviceView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn update_device(
    State(state): State<AppState>,
    Path(device_id): Path<String>,
    Json(body): Json<DeviceChange>,
) -> Result<Json<DeviceView>, ApiError> {
    let spec = DeviceSpec {
        enabled: body.enabled,
        primary_key: body.primary_key,
        secondary_key: body.secondary_key,
        properties: body.properties,
    };
    let device = state
        .security
        .auth
        .devices
        .update(&device_id, spec)
        .map_err(device_error)?;
    records::put(
        &*state.records,
        RecordKind::DeviceIdentity,
        &device.device_id,
        &device,
    )?;
    Ok(Json(device.into()))
}

/// Delete a device identity.
#[utoipa::path(delete, path = "/api/v1/device-identities/{device_id}", tag = "security",
    params(("device_id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn delete_device(
    State(state): State<AppState>,
    Path(device_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .security
        .auth
        .devices
        .delete(&device_id)
        .map_err(device_error)?;
    state
        .records
        .delete(RecordKind::DeviceIdentity, &device_id)?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- CA certificates -------------------------------------------------------------------

fn registry_error(e: RegistryError) -> ApiError {
    match e {
        RegistryError::NoCa(_) | RegistryError::NoCert(_) => ApiError::not_found(e.to_string()),
        RegistryError::CaExists(_)
        | RegistryError::CertExists(_)
        | RegistryError::TooManyCas
        | RegistryError::CaActive => ApiError::conflict(e.to_string()),
        RegistryError::Random => ApiError::internal(e.to_string()),
        RegistryError::BadCrl => ApiError::invalid("crl_pem", e),
        RegistryError::WrongCode | RegistryError::NotSignedByCa => {
            ApiError::invalid("verification_certificate_pem", e)
        }
        _ => ApiError::invalid("certificate_pem", e),
    }
}

/// The current registration code.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct RegistrationCode {
    /// Put this as the common name of a verification certificate signed by the CA.
    registration_code: String,
}

/// The registration code for the next CA registration (proof of possession).
#[utoipa::path(get, path = "/api/v1/ca-certificates/registration-code", tag = "security",
    responses((status = 200, body = RegistrationCode), (status = 401, body = ErrorBody)))]
async fn registration_code(
    State(state): State<AppState>,
) -> Result<Json<RegistrationCode>, ApiError> {
    let code = state
        .security
        .certificates
        .registration_code()
        .map_err(registry_error)?;
    Ok(Json(RegistrationCode {
        registration_code: code,
    }))
}

/// A registered CA.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct CaView {
    id: String,
    subject: String,
    /// ACTIVE or INACTIVE.
    status: String,
    auto_register: bool,
    auto_activate: bool,
    crl_revoked: usize,
}

fn ca_view(info: crate::tls::CaInfo) -> CaView {
    CaView {
        id: info.id,
        subject: info.subject,
        status: match info.status {
            CaStatus::Active => "ACTIVE".into(),
            CaStatus::Inactive => "INACTIVE".into(),
        },
        auto_register: info.auto_register,
        auto_activate: info.auto_activate,
        crl_revoked: info.crl_revoked,
    }
}

/// `POST /api/v1/ca-certificates`.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewCa {
    certificate_pem: String,
    /// Signed by the CA, with the registration code as common name.
    verification_certificate_pem: String,
    /// Start active (default true).
    activate: Option<bool>,
    /// Register unknown device certificates it issued on first connect (JITP).
    auto_register: Option<bool>,
    /// JITP certificates start ACTIVE instead of PENDING_ACTIVATION.
    auto_activate: Option<bool>,
}

/// `PATCH /api/v1/ca-certificates/{id}`.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CaChange {
    /// ACTIVE or INACTIVE; INACTIVE closes its devices' connections at once.
    status: String,
}

/// `POST /api/v1/ca-certificates/{id}/crl`.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CrlImport {
    crl_pem: String,
}

/// The result of a CRL import.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct CrlImported {
    revoked: usize,
}

/// List the registered CAs (at most 32).
#[utoipa::path(get, path = "/api/v1/ca-certificates", tag = "security",
    responses((status = 200, body = [CaView]), (status = 401, body = ErrorBody)))]
async fn list_cas(State(state): State<AppState>) -> Json<Vec<CaView>> {
    Json(
        state
            .security
            .certificates
            .list_cas()
            .into_iter()
            .map(ca_view)
            .collect(),
    )
}

/// Register a CA with proof of possession.
#[utoipa::path(post, path = "/api/v1/ca-certificates", tag = "security", request_body = NewCa,
    responses((status = 201, body = CaView), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn register_ca(
    State(state): State<AppState>,
    Json(body): Json<NewCa>,
) -> Result<(StatusCode, Json<CaView>), ApiError> {
    let info = state
        .security
        .certificates
        .register_ca(
            body.certificate_pem.as_bytes(),
            body.verification_certificate_pem.as_bytes(),
            CaOptions {
                activate: body.activate,
                auto_register: body.auto_register,
                auto_activate: body.auto_activate,
            },
        )
        .map_err(registry_error)?;
    Ok((StatusCode::CREATED, Json(ca_view(info))))
}

/// Read a CA.
#[utoipa::path(get, path = "/api/v1/ca-certificates/{id}", tag = "security",
    params(("id" = String, Path)),
    responses((status = 200, body = CaView), (status = 404, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn get_ca(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<CaView>, ApiError> {
    state
        .security
        .certificates
        .ca(&id)
        .map(|c| Json(ca_view(c)))
        .ok_or_else(|| ApiError::not_found(format!("no CA {id}")))
}

/// Activate or deactivate a CA.
#[utoipa::path(patch, path = "/api/v1/ca-certificates/{id}", tag = "security",
    params(("id" = String, Path)), request_body = CaChange,
    responses((status = 200, body = CaView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn update_ca(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<CaChange>,
) -> Result<Json<CaView>, ApiError> {
    let status = match body.status.as_str() {
        "ACTIVE" => CaStatus::Active,
        "INACTIVE" => CaStatus::Inactive,
        other => {
            return Err(ApiError::invalid(
                "status",
                format!("expected ACTIVE or INACTIVE, got {other:?}"),
            ))
        }
    };
    let info = state
        .security
        .certificates
        .set_ca_status(&id, status)
        .map_err(registry_error)?;
    Ok(Json(ca_view(info)))
}

/// Delete an inactive CA.
#[utoipa::path(delete, path = "/api/v1/ca-certificates/{id}", tag = "security",
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn delete_ca(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .security
        .certificates
        .delete_ca(&id)
        .map_err(registry_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Import a CRL signed by the CA: its serials are revoked at once.
#[utoipa::path(post, path = "/api/v1/ca-certificates/{id}/crl", tag = "security",
    params(("id" = String, Path)), request_body = CrlImport,
    responses((status = 200, body = CrlImported), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn import_crl(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<CrlImport>,
) -> Result<Json<CrlImported>, ApiError> {
    let revoked = state
        .security
        .certificates
        .import_crl(&id, body.crl_pem.as_bytes())
        .map_err(registry_error)?;
    Ok(Json(CrlImported { revoked }))
}

// ---- device certificates ---------------------------------------------------------------

/// A registered device certificate.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct CertView {
    serial: String,
    client_id: String,
    ca_id: String,
    /// ACTIVE, INACTIVE, REVOKED or PENDING_ACTIVATION.
    status: String,
    subject: String,
}

fn status_name(status: CertStatus) -> &'static str {
    match status {
        CertStatus::Active => "ACTIVE",
        CertStatus::Inactive => "INACTIVE",
        CertStatus::Revoked => "REVOKED",
        CertStatus::PendingActivation => "PENDING_ACTIVATION",
    }
}

fn parse_status(text: &str) -> Result<CertStatus, ApiError> {
    Ok(match text {
        "ACTIVE" => CertStatus::Active,
        "INACTIVE" => CertStatus::Inactive,
        "REVOKED" => CertStatus::Revoked,
        "PENDING_ACTIVATION" => CertStatus::PendingActivation,
        other => {
            return Err(ApiError::invalid(
                "status",
                format!("expected ACTIVE, INACTIVE, REVOKED or PENDING_ACTIVATION, got {other:?}"),
            ))
        }
    })
}

fn cert_view(info: crate::tls::DeviceCertInfo) -> CertView {
    CertView {
        serial: info.serial,
        client_id: info.client_id,
        ca_id: info.ca_id,
        status: status_name(info.status).to_owned(),
        subject: info.subject,
    }
}

/// Filters for listing device certificates.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct CertQuery {
    client_id: Option<String>,
    ca_id: Option<String>,
    serial: Option<String>,
    status: Option<String>,
}

/// `POST /api/v1/device-certificates`.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewCert {
    certificate_pem: String,
    /// The client id it may connect as (default: its common name).
    client_id: Option<String>,
    /// Default ACTIVE.
    status: Option<String>,
}

/// `PATCH /api/v1/device-certificates/{serial}`.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CertChange {
    /// Anything but ACTIVE closes its live connections at once.
    status: Option<String>,
    client_id: Option<String>,
}

/// The status of any serial (the OCSP question).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct CertStatusView {
    serial: String,
    /// ACTIVE, INACTIVE, REVOKED, PENDING_ACTIVATION, or UNKNOWN.
    status: String,
}

/// List device certificates, filtered.
#[utoipa::path(get, path = "/api/v1/device-certificates", tag = "security", params(CertQuery),
    responses((status = 200, body = [CertView]), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn list_certs(
    State(state): State<AppState>,
    Query(q): Query<CertQuery>,
) -> Result<Json<Vec<CertView>>, ApiError> {
    let filter = CertFilter {
        client_id: q.client_id,
        ca_id: q.ca_id,
        serial: q.serial.map(|s| s.to_lowercase()),
        status: q.status.as_deref().map(parse_status).transpose()?,
    };
    Ok(Json(
        state
            .security
            .certificates
            .list_certs(&filter)
            .into_iter()
            .map(cert_view)
            .collect(),
    ))
}

/// Register a device certificate issued by a registered CA.
#[utoipa::path(post, path = "/api/v1/device-certificates", tag = "security", request_body = NewCert,
    responses((status = 201, body = CertView), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn register_cert(
    State(state): State<AppState>,
    Json(body): Json<NewCert>,
) -> Result<(StatusCode, Json<CertView>), ApiError> {
    let status = body
        .status
        .as_deref()
        .map(parse_status)
        .transpose()?
        .unwrap_or(CertStatus::Active);
    let info = state
        .security
        .certificates
        .register_cert(body.certificate_pem.as_bytes(), body.client_id, status)
        .map_err(registry_error)?;
    Ok((StatusCode::CREATED, Json(cert_view(info))))
}

/// Read a device certificate.
#[utoipa::path(get, path = "/api/v1/device-certificates/{serial}", tag = "security",
    params(("serial" = String, Path, description = "hex")),
    responses((status = 200, body = CertView), (status = 404, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn get_cert(
    State(state): State<AppState>,
    Path(serial): Path<String>,
) -> Result<Json<CertView>, ApiError> {
    state
        .security
        .certificates
        .cert(&serial.to_lowercase())
        .map(|c| Json(cert_view(c)))
        .ok_or_else(|| ApiError::not_found(format!("no certificate with serial {serial}")))
}

/// Change a certificate's status (activate, deactivate, revoke) or client id.
#[utoipa::path(patch, path = "/api/v1/device-certificates/{serial}", tag = "security",
    params(("serial" = String, Path, description = "hex")), request_body = CertChange,
    responses((status = 200, body = CertView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn update_cert(
    State(state): State<AppState>,
    Path(serial): Path<String>,
    Json(body): Json<CertChange>,
) -> Result<Json<CertView>, ApiError> {
    let serial = serial.to_lowercase();
    let registry = &state.security.certificates;
    let mut info = registry
        .cert(&serial)
        .ok_or_else(|| ApiError::not_found(format!("no certificate with serial {serial}")))?;
    if let Some(client_id) = body.client_id {
        info = registry
            .set_cert_client_id(&serial, client_id)
            .map_err(registry_error)?;
    }
    if let Some(status) = body.status {
        info = registry
            .set_cert_status(&serial, parse_status(&status)?)
            .map_err(registry_error)?;
    }
    Ok(Json(cert_view(info)))
}

/// Delete a device certificate (its live connections are closed).
#[utoipa::path(delete, path = "/api/v1/device-certificates/{serial}", tag = "security",
    params(("serial" = String, Path, description = "hex")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn delete_cert(
    State(state): State<AppState>,
    Path(serial): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .security
        .certificates
        .delete_cert(&serial.to_lowercase())
        .map_err(registry_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The status of any serial: registered status, REVOKED if a CRL lists it, else UNKNOWN.
#[utoipa::path(get, path = "/api/v1/device-certificates/{serial}/status", tag = "security",
    params(("serial" = String, Path, description = "hex")),
    responses((status = 200, body = CertStatusView), (status = 401, body = ErrorBody)))]
async fn cert_status(
    State(state): State<AppState>,
    Path(serial): Path<String>,
) -> Json<CertStatusView> {
    let serial = serial.to_lowercase();
    let status = state
        .security
        .certificates
        .status_of(&serial)
        .map_or("UNKNOWN", status_name);
    Json(CertStatusView {
        serial,
        status: status.to_owned(),
    })
}
