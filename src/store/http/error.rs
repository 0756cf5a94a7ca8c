//! [`ApiError`]: every error the API answers with, its one status map, and the conversions from
//! storage errors and request rejections. Pure; internals go to the logs (`tracing`), never to
//! the client, and parser messages are redacted because a rejected value may be a token.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, Request};
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
    #[error("{0}")]
    Conflict(&'static str),
    #[error("request body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
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
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
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
            ApiError::NotFound => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::TooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
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
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"loop-store\""),
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

/// Replace every double-quoted run in a parser message with `"…"`: serde quotes the values it
/// failed on, and a value may be a token.
fn redact_values(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut in_quotes = false;
    for c in msg.chars() {
        if c == '"' {
            if in_quotes {
                out.push_str("…\"");
            } else {
                out.push('"');
            }
            in_quotes = !in_quotes;
        } else if !in_quotes {
            out.push(c);
        }
    }
    out
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
            _ => ApiError::BadRequest(redact_values(&r.body_text())),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::BadRequest(redact_values(&r.body_text()))
    }
}

/// `axum::Json` with this API's error answers.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(v) = Json::<T>::from_request(req, state).await?;
        Ok(ApiJson(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_quoted_values() {
        let m = r#"token: invalid type: string "loop_abc", expected u32 at line 1"#;
        let r = redact_values(m);
        assert!(!r.contains("loop_abc"));
        assert!(r.contains("invalid type: string \"…\""));
        assert_eq!(redact_values("unknown field `x`"), "unknown field `x`");
    }
}
