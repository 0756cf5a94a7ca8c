//! `POST /v1/introspect` (RFC 7662): the hot path Loop's API calls on every request. A thin
//! handler over the [`Introspector`](crate::store::cache::Introspector); no I/O of its own, and
//! the presented token is never logged. The body is JSON or, as RFC 7662 §2.1 has it, a form;
//! parameters other than `token` and `token_type_hint` (such as `client_id`) are ignored.
//!
//! The body is the answer's JSON as encoded once per cache entry ([`Answer::body`]): the same
//! bytes `Json<IntrospectResponse>` would write, without serialising on every request.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::Shared;
use super::error::ApiError;
use super::extract::JsonOrForm;
use crate::api::{ErrorBody, IntrospectRequest, IntrospectResponse};
use crate::store::cache::Answer;

#[utoipa::path(post, path = "/v1/introspect", tag = "introspection",
    request_body(content(
        (IntrospectRequest = "application/json"),
        (IntrospectRequest = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "RFC 7662 answer: only known, unexpired, unrevoked tokens are active", body = IntrospectResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, description = "The management credential", body = ErrorBody),
        (status = 415, description = "Neither JSON nor a form", body = ErrorBody),
        (status = 503, description = "The answer cannot be known right now (fail closed)", body = ErrorBody)),
    security(("introspect" = []), ("introspect_basic" = [])))]
pub(super) async fn introspect(
    State(s): State<Shared>,
    JsonOrForm(body): JsonOrForm<IntrospectRequest>,
) -> Result<Response, ApiError> {
    let now = (s.clock)();
    Ok(json_answer(&s.introspector.answer(&body.token, now).await?))
}

fn json_answer(answer: &Answer) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        answer.body(),
    )
        .into_response()
}
