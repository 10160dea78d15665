//! `/api/v1/ca-certificates` (registration code, proof of possession, CRLs) and
//! `/api/v1/device-certificates` (statuses, the status of any serial). A device certificate
//! is named by its id, `ca_id:serial` (serials are unique per CA only); a bare serial works
//! while a single CA has it. Changes run on a blocking thread: the registry writes the
//! management records (see `tls::registry`).

// The resource modules share the parent's imports.
use super::*;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(registration_code))
        .routes(routes!(list_cas, register_ca))
        .routes(routes!(get_ca, update_ca, delete_ca))
        .routes(routes!(get_crl, import_crl, delete_crl))
        .routes(routes!(list_certs, register_cert))
        .routes(routes!(get_cert, update_cert, delete_cert))
        .routes(routes!(cert_status))
}

/// Runs a registry change on a blocking thread (it may write the records).
async fn blocking<T: Send + 'static>(
    state: &AppState,
    change: impl FnOnce(&CertificateRegistry) -> Result<T, RegistryError> + Send + 'static,
) -> Result<T, ApiError> {
    let registry = Arc::clone(&state.security.certificates);
    tokio::task::spawn_blocking(move || change(&registry))
        .await
        .map_err(|e| ApiError::internal(format!("certificate registry task failed: {e}")))?
        .map_err(registry_error)
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
    let options = CaOptions {
        activate: body.activate,
        auto_register: body.auto_register,
        auto_activate: body.auto_activate,
    };
    let info = blocking(&state, move |r| {
        r.register_ca(
            body.certificate_pem.as_bytes(),
            body.verification_certificate_pem.as_bytes(),
            options,
        )
    })
    .await?;
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
    let info = blocking(&state, move |r| r.set_ca_status(&id, status)).await?;
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
    blocking(&state, move |r| r.delete_ca(&id)).await?;
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
    let revoked = blocking(&state, move |r| r.import_crl(&id, body.crl_pem.as_bytes())).await?;
    Ok(Json(CrlImported { revoked }))
}

/// A CA's imported CRL.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct CrlView {
    ca_id: String,
    /// The CRL, PEM.
    crl_pem: String,
    /// The serials it revokes (lower-case hex), sorted.
    revoked: Vec<String>,
}

/// Read a CA's imported CRL.
#[utoipa::path(get, path = "/api/v1/ca-certificates/{id}/crl", tag = "security",
    params(("id" = String, Path)),
    responses((status = 200, body = CrlView), (status = 404, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn get_crl(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<CrlView>, ApiError> {
    let crl = state
        .security
        .certificates
        .crl(&id)
        .map_err(registry_error)?;
    Ok(Json(CrlView {
        ca_id: id,
        crl_pem: crl.pem,
        revoked: crl.revoked,
    }))
}

/// Remove a CA's imported CRL: the serials it listed are no longer refused for that CA
/// (registered certificates keep their own status).
#[utoipa::path(delete, path = "/api/v1/ca-certificates/{id}/crl", tag = "security",
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn delete_crl(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(&state, move |r| r.delete_crl(&id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A registered device certificate.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct CertView {
    /// `ca_id:serial`: names the certificate in the paths below.
    id: String,
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
        id: info.id,
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

/// `PATCH /api/v1/device-certificates/{id}`.
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
    /// ACTIVE, INACTIVE, REVOKED, PENDING_ACTIVATION; UNKNOWN when no CA knows the
    /// serial; AMBIGUOUS when several CAs know it with different statuses (see `matches`).
    status: String,
    /// One entry per CA that knows the serial (only the CA asked for, with `ca_id`).
    matches: Vec<SerialStatusView>,
}

/// The status of a serial under one CA.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct SerialStatusView {
    ca_id: String,
    /// The registered certificate's id; absent when only the CA's CRL lists the serial.
    id: Option<String>,
    status: String,
}

/// `GET /api/v1/device-certificates/{id}/status`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatusQuery {
    /// Only this CA's answer.
    ca_id: Option<String>,
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
    let info = blocking(&state, move |r| {
        r.register_cert(body.certificate_pem.as_bytes(), body.client_id, status)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(cert_view(info))))
}

/// Read a device certificate.
#[utoipa::path(get, path = "/api/v1/device-certificates/{id}", tag = "security",
    params(("id" = String, Path, description = "ca_id:serial, or a serial only one CA has")),
    responses((status = 200, body = CertView), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn get_cert(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<CertView>, ApiError> {
    state
        .security
        .certificates
        .cert(&id)
        .map(|c| Json(cert_view(c)))
        .map_err(registry_error)
}

/// Change a certificate's status (activate, deactivate, revoke) or client id.
#[utoipa::path(patch, path = "/api/v1/device-certificates/{id}", tag = "security",
    params(("id" = String, Path, description = "ca_id:serial, or a serial only one CA has")),
    request_body = CertChange,
    responses((status = 200, body = CertView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn update_cert(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<CertChange>,
) -> Result<Json<CertView>, ApiError> {
    let status = body.status.as_deref().map(parse_status).transpose()?;
    let info = blocking(&state, move |r| {
        let mut info = r.cert(&id)?;
        if let Some(client_id) = body.client_id {
            info = r.set_cert_client_id(&info.id, client_id)?;
        }
        if let Some(status) = status {
            info = r.set_cert_status(&info.id, status)?;
        }
        Ok(info)
    })
    .await?;
    Ok(Json(cert_view(info)))
}

/// Delete a device certificate (its live connections are closed).
#[utoipa::path(delete, path = "/api/v1/device-certificates/{id}", tag = "security",
    params(("id" = String, Path, description = "ca_id:serial, or a serial only one CA has")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn delete_cert(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(&state, move |r| r.delete_cert(&id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The status of any serial under each CA that knows it (or the CA given): registered
/// status, REVOKED if the CA's CRL lists it; UNKNOWN when none does.
#[utoipa::path(get, path = "/api/v1/device-certificates/{id}/status", tag = "security",
    params(("id" = String, Path, description = "a serial (hex), or ca_id:serial"), StatusQuery),
    responses((status = 200, body = CertStatusView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn cert_status(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<StatusQuery>,
) -> Result<Json<CertStatusView>, ApiError> {
    let id = id.to_lowercase();
    let (ca_id, serial) = match id.split_once(':') {
        Some((ca, serial)) => {
            if q.ca_id
                .as_ref()
                .is_some_and(|given| given.to_lowercase() != ca)
            {
                return Err(ApiError::invalid(
                    "ca_id",
                    "names another CA than the certificate id",
                ));
            }
            (Some(ca.to_owned()), serial.to_owned())
        }
        None => (q.ca_id.map(|c| c.to_lowercase()), id.clone()),
    };
    let matches = state
        .security
        .certificates
        .status_of(&serial, ca_id.as_deref());
    let status = match matches.split_first() {
        None => "UNKNOWN",
        Some((first, rest)) if rest.iter().all(|m| m.status == first.status) => {
            status_name(first.status)
        }
        Some(_) => "AMBIGUOUS",
    };
    Ok(Json(CertStatusView {
        serial,
        status: status.to_owned(),
        matches: matches
            .into_iter()
            .map(|m| SerialStatusView {
                ca_id: m.ca_id,
                id: m.id,
                status: status_name(m.status).to_owned(),
            })
            .collect(),
    }))
}
