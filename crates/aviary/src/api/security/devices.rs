//! `/api/v1/device-identities`: device ids, keys (returned to the operator, never logged), properties.

// The resource modules share the parent's imports.
use super::*;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_devices, create_device))
        .routes(routes!(get_device, update_device, delete_device))
}

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
        DeviceError::Random | DeviceError::Store(_) => ApiError::internal(e.to_string()),
    }
}

/// Stores (`Some`) or deletes (`None`) device `device_id`'s record.
fn persist(
    records: &Arc<dyn Records>,
    device_id: &str,
    device: Option<&DeviceIdentity>,
) -> Result<(), String> {
    let done = match device {
        Some(device) => records::put(&**records, RecordKind::DeviceIdentity, device_id, device),
        None => records
            .delete(RecordKind::DeviceIdentity, device_id)
            .map(drop),
    };
    done.map_err(|e| format!("the change could not be stored: {e}"))
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
    let (devices, records) = (
        state.security.auth.devices.clone(),
        Arc::clone(&state.records),
    );
    let device = tokio::task::spawn_blocking(move || {
        let id = body.device_id;
        devices.create_stored(&id, spec, &|d| persist(&records, &id, d))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(device_error)?;
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
    let (devices, records) = (
        state.security.auth.devices.clone(),
        Arc::clone(&state.records),
    );
    let device = tokio::task::spawn_blocking(move || {
        devices.update_stored(&device_id, spec, &|d| persist(&records, &device_id, d))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(device_error)?;
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
    let (devices, records) = (
        state.security.auth.devices.clone(),
        Arc::clone(&state.records),
    );
    tokio::task::spawn_blocking(move || {
        devices.delete_stored(&device_id, &|d| persist(&records, &device_id, d))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(device_error)?;
    Ok(StatusCode::NO_CONTENT)
}
