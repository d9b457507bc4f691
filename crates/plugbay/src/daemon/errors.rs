//! plugbay's error [`Code`]s as the HTTP API speaks them: an HTTP status with a JSON body
//! `{code, message, plugin?}`. (The gRPC status of an error, the same number as its code,
//! is `plugbay_core`'s `From<Error> for tonic::Status`.)

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use plugbay_core::{Code, Error};
use serde::Serialize;

/// An API error: what the JSON body and the gRPC status carry.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ApiError {
    /// The code's name (`not_found`).
    #[schema(value_type = String)]
    pub code: &'static str,
    /// The whole message with its context.
    pub message: String,
    /// The plugin the error is about, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// The HTTP status (not serialised).
    #[serde(skip)]
    #[schema(ignore)]
    pub status: StatusCode,
}

impl ApiError {
    /// An error with a code and an HTTP status chosen for it by [`http_status`].
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError { code: code.as_str(), message: message.into(), plugin: None, status: http_status(code) }
    }

    /// The same error answered with another HTTP status (413, 401, 415).
    pub fn with_status(mut self, status: StatusCode) -> ApiError {
        self.status = status;
        self
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        ApiError {
            code: error.code().as_str(),
            message: error.to_string(),
            plugin: error.plugin().map(str::to_owned),
            status: http_status(error.code()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self)).into_response()
    }
}

/// The HTTP status of each code. A caller's mistake is a 4xx; only the host or a plugin
/// failing (`internal`, `unavailable`, `deadline_exceeded`) is a 5xx.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::CONFLICT,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_mistakes_are_4xx() {
        for code in [Code::InvalidArgument, Code::NotFound, Code::PermissionDenied, Code::FailedPrecondition]
        {
            assert!(http_status(code).is_client_error(), "{code}");
        }
    }
}
