//! The audit trail's handlers: `GET /v1/tokens/{id}/events` and `GET /v1/events?ownerUid=`.
//! Thin: bound the page, read the repository, answer with [`crate::api`] types. Oldest event
//! first; the cursor is the id of the last event of a page. No I/O of their own.

use axum::Json;
use axum::extract::State;

use super::Shared;
use super::error::ApiError;
use super::extract::{ApiQuery, IdPath};
use crate::api::{
    DEFAULT_EVENT_PAGE, ErrorBody, EventList, EventQuery, MAX_EVENT_PAGE, OwnerEventQuery,
};
use crate::store::model::{EventFilter, EventScope, TokenEvent};

/// The storage filter for one page, asking for one event more than the page so that the
/// handler knows whether there is a next one.
fn filter(
    scope: EventScope,
    after: Option<i64>,
    limit: Option<u32>,
) -> Result<(EventFilter, u32), ApiError> {
    let limit = limit.unwrap_or(DEFAULT_EVENT_PAGE);
    if !(1..=MAX_EVENT_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_EVENT_PAGE}"
        )));
    }
    let filter = EventFilter {
        scope,
        after: after.unwrap_or(0),
        limit: limit + 1,
    };
    Ok((filter, limit))
}

/// One page, and the cursor of the next when there is one.
fn page(mut events: Vec<TokenEvent>, limit: u32) -> EventList {
    let next = if events.len() > limit as usize {
        events.truncate(limit as usize);
        events.last().map(|e| e.id)
    } else {
        None
    };
    EventList {
        items: events.iter().map(TokenEvent::view).collect(),
        next,
    }
}

#[utoipa::path(get, path = "/v1/tokens/{id}/events", tag = "audit",
    params(("id" = String, Path, description = "Token id"), EventQuery),
    responses(
        (status = 200, description = "The token's events, oldest first", body = EventList),
        (status = 400, body = ErrorBody),
        (status = 404, description = "No token with this id", body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("admin" = [])))]
pub(super) async fn token_events(
    State(s): State<Shared>,
    IdPath(id): IdPath,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> Result<Json<EventList>, ApiError> {
    let (filter, limit) = filter(EventScope::Token(id.clone()), q.after, q.limit)?;
    let events = s.repo.events(&filter).await?;
    // Only an empty page needs to tell "no such token" from "no (more) events": a registration
    // made before the audit trail existed has none.
    if events.is_empty() && s.repo.get(&id).await?.is_none() {
        return Err(ApiError::NotFound);
    }
    Ok(Json(page(events, limit)))
}

#[utoipa::path(get, path = "/v1/events", tag = "audit", params(OwnerEventQuery),
    responses(
        (status = 200, description = "The events of every token of one owner, oldest first", body = EventList),
        (status = 400, description = "Malformed query, `ownerUid` missing, or `limit` out of range", body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("admin" = [])))]
pub(super) async fn owner_events(
    State(s): State<Shared>,
    ApiQuery(q): ApiQuery<OwnerEventQuery>,
) -> Result<Json<EventList>, ApiError> {
    let (filter, limit) = filter(EventScope::Owner(q.owner_uid), q.after, q.limit)?;
    let events = s.repo.events(&filter).await?;
    Ok(Json(page(events, limit)))
}
