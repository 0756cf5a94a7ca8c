//! [`ApiError`]: every error the API answers with, its one status map, the conversions from
//! storage errors, and the router's own answers (no such path, method not allowed). Pure;
//! internals go to the logs (`tracing`), never to the client. Request rejections are built in
//! `extract`, whose messages never carry a submitted value.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::MAX_BODY_BYTES;
use crate::api::ErrorBody;
use crate::store::model::Invalid;
use crate::store::repo::{Conflict, RepoError};
use crate::store::scopes::ScopeRejection;
use crate::store::writes::WriteError;

/// Every error the API answers with. The status map is in one place, and internals stay in
/// the logs.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or unknown credential")]
    Unauthorized,
    #[error("this credential may not call this endpoint")]
    Forbidden,
    #[error("no token with this id")]
    NotFound,
    #[error("no such path; the API is described at /v1/openapi.json")]
    NoRoute,
    #[error("this path does not take this method; the Allow header lists those it takes")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(&'static str),
    #[error("request body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("{0}")]
    UnsupportedMediaType(&'static str),
    #[error("{0}")]
    UnknownScope(ScopeRejection),
    #[error("the token database is unreachable; nothing was changed, retry later")]
    Unavailable,
    #[error("internal error; see the store's logs")]
    Internal,
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::UnknownScope(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::NotFound | ApiError::NoRoute => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::TooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::UnknownScope(_) => "unknown_scope",
            ApiError::Unavailable => "store_unavailable",
            ApiError::Internal => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody {
            error: self.code().to_owned(),
            message: self.to_string(),
        };
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            let headers = resp.headers_mut();
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"loop-store\""),
            );
            headers.append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"loop-store\""),
            );
        }
        resp
    }
}

impl From<RepoError> for ApiError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::Unavailable(source) => {
                tracing::warn!(error = %source, "token database unreachable");
                ApiError::Unavailable
            }
            RepoError::TimedOut(after) => {
                tracing::warn!(?after, "token database did not answer in time");
                ApiError::Unavailable
            }
            other => {
                tracing::error!(error = %other, source = ?std::error::Error::source(&other).map(ToString::to_string), "token database error");
                ApiError::Internal
            }
        }
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Repo(e) => e.into(),
            WriteError::Closed => ApiError::Unavailable,
            WriteError::Task(source) => {
                tracing::error!(error = %source, "a write task failed; the introspection cache was emptied");
                ApiError::Internal
            }
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

impl From<Conflict> for ApiError {
    fn from(c: Conflict) -> Self {
        ApiError::Conflict(c.message())
    }
}

/// The router's answer for a path it does not know.
pub(super) async fn no_route() -> ApiError {
    ApiError::NoRoute
}

/// The router's answer for a known path and a method it does not take (the router adds
/// `Allow`).
pub(super) async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
