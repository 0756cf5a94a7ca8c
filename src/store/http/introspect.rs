//! `POST /v1/introspect` (RFC 7662): the hot path Loop's API calls on every request. A thin
//! handler over the [`Introspector`](crate::store::cache::Introspector); no I/O of its own, and
//! the presented token is never logged.

use axum::Json;
use axum::extract::State;

use super::Shared;
use super::error::{ApiError, ApiJson};
use crate::api::{ErrorBody, IntrospectRequest, IntrospectResponse};

#[utoipa::path(post, path = "/v1/introspect", tag = "introspection",
    request_body = IntrospectRequest,
    responses(
        (status = 200, description = "RFC 7662 answer: only known, unexpired, unrevoked tokens are active", body = IntrospectResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 503, description = "The answer cannot be known right now (fail closed)", body = ErrorBody)),
    security(("introspect" = [])))]
pub(super) async fn introspect(
    State(s): State<Shared>,
    ApiJson(body): ApiJson<IntrospectRequest>,
) -> Result<Json<IntrospectResponse>, ApiError> {
    let now = (s.clock)();
    Ok(Json(s.introspector.introspect(&body.token, now).await?))
}
