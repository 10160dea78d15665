//! Security resources: `/api/v1/users`, `/api/v1/authorization-policies`,
//! `/api/v1/authenticators`, `/api/v1/device-identities`, `/api/v1/ca-certificates` (with
//! `registration-code` and CRL import) and `/api/v1/device-certificates` (with the status
//! query for any serial). Every change applies at once, to open connections too.
//!
//! Secrets: passwords are hashed on arrival and never returned; device keys are returned to
//! the operator (devices need them to sign tokens) but never logged.

pub(crate) mod authenticators;
mod certificates;
mod devices;
mod policies;
mod users;

use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody, Json, Path, Query};
use super::AppState;
use crate::auth::devices::{DeviceError, DeviceIdentity, DeviceSpec};
use crate::auth::policies::{PolicyDoc, PolicyError};
use crate::auth::users::{User, UserError};
use crate::auth::Secret;
use crate::records::{self, Persist, RecordKind, Records};
use std::sync::Arc;

use crate::tls::{CaOptions, CaStatus, CertFilter, CertStatus, CertificateRegistry, RegistryError};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(users::routes())
        .merge(policies::routes())
        .merge(devices::routes())
        .merge(certificates::routes())
        .merge(authenticators::routes())
}

/// The API error for a certificate registry failure.
fn registry_error(e: RegistryError) -> ApiError {
    match e {
        RegistryError::NoCa(_) | RegistryError::NoCert(_) | RegistryError::NoCrl(_) => {
            ApiError::not_found(e.to_string())
        }
        RegistryError::CaExists(_)
        | RegistryError::CertExists(_)
        | RegistryError::AmbiguousSerial(_)
        | RegistryError::TooManyCas
        | RegistryError::CaActive => ApiError::conflict(e.to_string()),
        RegistryError::Random | RegistryError::Store(_) => ApiError::internal(e.to_string()),
        RegistryError::BadCrl => ApiError::invalid("crl_pem", e),
        RegistryError::WrongCode | RegistryError::NotSignedByCa => {
            ApiError::invalid("verification_certificate_pem", e)
        }
        _ => ApiError::invalid("certificate_pem", e),
    }
}
