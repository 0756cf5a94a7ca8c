//! The management handlers of `/v1/tokens`: register, update, revoke, get, list. Thin: parse,
//! validate ([`crate::store::model`]), then write through the [`Writer`](crate::store::writes)
//! (the only write path) or read the repository, and answer with [`crate::api`] types. No I/O of
//! their own; logs name a token by id and fingerprint, never by its hash or plaintext.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::Shared;
use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, IdPath};
use crate::api::{
    DEFAULT_PAGE, ErrorBody, ListQuery, MAX_PAGE, PatchRequest, RegisterRequest, RevokeQuery,
    TokenList, TokenView,
};
use crate::store::model::{Change, ListFilter, NewToken, TokenPatch};
use crate::store::repo::{Conflict, Registered, Updated};

#[utoipa::path(put, path = "/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "Token id chosen by the caller")),
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered", body = TokenView),
        (status = 200, description = "Already registered with this hash; name, scopes and expiry now match (an event `reregistered` when they changed, none otherwise)", body = TokenView),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 409, description = "Id or hash registered differently, or revoked", body = ErrorBody),
        (status = 422, description = "A scope the catalogue does not allow", body = ErrorBody),
        (status = 503, description = "Database unreachable", body = ErrorBody)),
    security(("admin" = [])))]
pub(super) async fn register(
    State(s): State<Shared>,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> Result<Response, ApiError> {
    let change = Change::from_request(body.reason, body.generation)?;
    let new = NewToken::from_request(id, body)?;
    s.catalogue
        .check(&new.scopes)
        .map_err(ApiError::UnknownScope)?;
    let now = (s.clock)();
    match s.writer.register(new, change, now).await? {
        Registered::Created(r) => {
            tracing::info!(id = r.id.as_str(), fingerprint = %r.hash.fingerprint(), owner_namespace = %r.owner.namespace, owner_name = %r.owner.name, "token registered");
            Ok((StatusCode::CREATED, Json(r.view(now))).into_response())
        }
        Registered::Existing(r) => Ok((StatusCode::OK, Json(r.view(now))).into_response()),
        Registered::Conflict(c) => Err(c.into()),
    }
}

#[utoipa::path(patch, path = "/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path)),
    request_body = PatchRequest,
    responses(
        (status = 200, description = "Updated (an event `updated`, or `expiry_set` when only the expiry changed, none when nothing did); the token is unchanged", body = TokenView),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "Revoked", body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("admin" = [])))]
pub(super) async fn update(
    State(s): State<Shared>,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<PatchRequest>,
) -> Result<Json<TokenView>, ApiError> {
    let change = Change::from_request(body.reason, body.generation)?;
    let patch = TokenPatch::from_request(body)?;
    if let Some(scopes) = &patch.scopes {
        s.catalogue.check(scopes).map_err(ApiError::UnknownScope)?;
    }
    let now = (s.clock)();
    if patch.is_empty() {
        // Nothing to write, but the same answer as a write: 404, 409 when revoked, or the view.
        let r = s.repo.get(&id).await?.ok_or(ApiError::NotFound)?;
        if r.revoked_at_ms.is_some() {
            return Err(Conflict::Revoked.into());
        }
        return Ok(Json(r.view(now)));
    }
    match s.writer.update(id, patch, change, now).await? {
        Updated::Updated(r) => {
            tracing::info!(id = r.id.as_str(), fingerprint = %r.hash.fingerprint(), "token updated");
            Ok(Json(r.view(now)))
        }
        Updated::NotFound => Err(ApiError::NotFound),
        Updated::Revoked => Err(Conflict::Revoked.into()),
    }
}

#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path), RevokeQuery),
    responses(
        (status = 200, description = "Revoked (an event `revoked`), or already revoked (no event); the record stays for audit", body = TokenView),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("admin" = [])))]
pub(super) async fn revoke(
    State(s): State<Shared>,
    IdPath(id): IdPath,
    ApiQuery(q): ApiQuery<RevokeQuery>,
) -> Result<Json<TokenView>, ApiError> {
    let change = Change::from_request(q.reason, q.generation)?;
    let now = (s.clock)();
    let r = s
        .writer
        .revoke(id, change, now)
        .await?
        .ok_or(ApiError::NotFound)?;
    tracing::info!(id = r.id.as_str(), fingerprint = %r.hash.fingerprint(), "token revoked");
    Ok(Json(r.view(now)))
}

#[utoipa::path(get, path = "/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path)),
    responses((status = 200, body = TokenView), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("admin" = [])))]
pub(super) async fn get_token(
    State(s): State<Shared>,
    IdPath(id): IdPath,
) -> Result<Json<TokenView>, ApiError> {
    let r = s.repo.get(&id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(r.view((s.clock)())))
}

/// The storage filter for a list query, asking for one item more than the page so that the
/// handler knows whether there is a next page.
fn filter(q: ListQuery) -> Result<(ListFilter, u32), ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let filter = ListFilter {
        owner_uid: q.owner_uid,
        namespace: q.namespace,
        cluster: q.cluster,
        active: q.active,
        after: q.after,
        limit: limit + 1,
    };
    Ok((filter, limit))
}

#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", params(ListQuery),
    responses((status = 200, body = TokenList), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("admin" = [])))]
pub(super) async fn list_tokens(
    State(s): State<Shared>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<TokenList>, ApiError> {
    let (filter, limit) = filter(q)?;
    let now = (s.clock)();
    let mut records = s.repo.list(&filter, now).await?;
    let next = if records.len() > limit as usize {
        records.truncate(limit as usize);
        records.last().map(|r| r.id.as_str().to_owned())
    } else {
        None
    };
    let items = records.iter().map(|r| r.view(now)).collect();
    Ok(Json(TokenList { items, next }))
}
