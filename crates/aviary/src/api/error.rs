//! The API's error type: every failure is a JSON body `{"code": "...", "message": "..."}`
//! with the HTTP status that fits; invalid input names the field. [`Json`] replaces axum's
//! extractor so that body errors (unknown fields, wrong types, missing fields) come out
//! in that shape too.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The body of every error response.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    /// Stable machine-readable code, e.g. `not_found`, `invalid_field`.
    pub(crate) code: String,
    /// What went wrong and, where it helps, what to do.
    pub(crate) message: String,
}

/// An error response.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// 400: a value is invalid; `message` names the field.
    pub(crate) fn invalid(field: &str, why: impl std::fmt::Display) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_field",
            message: format!("{field}: {why}"),
        }
    }

    /// 400: the request as a whole cannot be read.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: message.into(),
        }
    }

    /// 401: no valid API key.
    pub(crate) fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: "a valid API key is required: send `Authorization: Bearer <key>`".into(),
        }
    }

    /// 404.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
        }
    }

    /// 409: the request conflicts with the current state.
    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::CONFLICT,
            code: "conflict",
            message: message.into(),
        }
    }

    /// 503: the broker is shutting down.
    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message: message.into(),
        }
    }

    /// 500: a server-side failure (the store).
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code.to_owned(),
            message: self.message,
        };
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<crate::broker_task::BrokerGone> for ApiError {
    fn from(e: crate::broker_task::BrokerGone) -> Self {
        Self::unavailable(e.to_string())
    }
}

impl From<crate::records::RecordError> for ApiError {
    fn from(e: crate::records::RecordError) -> Self {
        Self::internal(e.to_string())
    }
}

/// A JSON body whose errors are [`ApiError`]s naming the field (from serde's message, with
/// the path of the field as serde_path_to_error reports it).
pub(crate) struct Json<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                code: "invalid_field",
                message: body_error(&e.body_text()),
            }),
            Err(e) => Err(ApiError::bad_request(e.body_text())),
        }
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Strips axum's generic prefix from a deserialisation error, leaving `field: problem`.
fn body_error(text: &str) -> String {
    text.strip_prefix("Failed to deserialize the JSON body into the target type: ")
        .unwrap_or(text)
        .to_owned()
}

/// Query parameters whose errors are [`ApiError`]s naming the parameter.
pub(crate) struct Query<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                code: "invalid_field",
                message: e
                    .body_text()
                    .trim_start_matches("Failed to deserialize query string: ")
                    .to_owned(),
            }),
            Err(e) => Err(ApiError::bad_request(e.body_text())),
        }
    }
}

/// One path parameter (percent-decoded).
pub(crate) struct Path<T>(pub(crate) T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(e @ PathRejection::FailedToDeserializePathParams(_)) => {
                Err(ApiError::bad_request(e.body_text()))
            }
            Err(e) => Err(ApiError::bad_request(e.body_text())),
        }
    }
}
