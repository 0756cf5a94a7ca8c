//! The HTTP API of `loop-store`: `app(state) -> Router`, its state, and the request metrics
//! middleware. No I/O of its own beyond what the state's repository does; tests drive the router
//! without a socket. Request bodies are never logged, and error messages never echo submitted
//! values.
//!
//! - `error`: [`ApiError`], its one status map, and the router's own answers (404, 405);
//! - `extract`: request extractors whose error texts never carry a submitted value;
//! - `auth`: the two credentials and the middlewares that check them;
//! - `tokens`: the management handlers (`/v1/tokens`), which write only through the
//!   [`Writer`];
//! - `events`: the audit trail (`/v1/tokens/{id}/events`, `/v1/events`);
//! - `introspect`: `POST /v1/introspect`;
//! - `health`: `/healthz`, `/readyz`, `/metrics`;
//! - `openapi`: [`ApiDoc`], the OpenAPI document.
//!
//! The JSON shapes are in [`crate::api`].

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};

use super::cache::Introspector;
use super::metrics::Metrics;
use super::repo::Repository;
use super::scopes::Catalogue;
use super::writes::Writer;
use crate::clock::Clock;

mod auth;
mod error;
mod events;
mod extract;
mod health;
mod introspect;
mod openapi;
mod tokens;

pub use auth::{Credential, Credentials};
pub use error::ApiError;
pub use extract::ApiJson;
pub use openapi::ApiDoc;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Everything a handler needs.
#[derive(Clone)]
pub struct AppState {
    /// Reads. Every write goes through `writer`.
    pub repo: Arc<dyn Repository>,
    pub writer: Writer,
    pub introspector: Arc<Introspector>,
    pub catalogue: Arc<Catalogue>,
    pub credentials: Arc<Credentials>,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
}

/// The state every request gets: one `Arc`, so that the clones axum makes per request (one per
/// middleware and one for the handler) cost one atomic increment each, not one per service.
/// (A profile under load showed cloning and dropping the six-`Arc` [`AppState`] at 14 % of the
/// store's CPU time.)
#[derive(Clone)]
pub struct Shared(Arc<AppState>);

impl std::ops::Deref for Shared {
    type Target = AppState;
    fn deref(&self) -> &AppState {
        &self.0
    }
}

/// Counts and times every request by route, method and status. Every label is bounded: the
/// route is a template of this router (or `unmatched`), the method one of the standard ones
/// (or `other`), whatever a client sends.
async fn track(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    let resp = next.run(req).await;
    s.metrics.request(
        route.as_ref().map(MatchedPath::as_str),
        &method,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}

/// Introspection answers, errors included, must not be cached (RFC 7662 §4 refers to RFC 6749,
/// which sends these two headers with every token answer).
async fn no_store(mut resp: Response) -> Response {
    let headers = resp.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// The whole API. Credentials are checked per route and only for the methods a route takes
/// (`route_layer` on each method router), so a wrong method answers 405 with `Allow` before any
/// credential is looked at; unknown paths answer a JSON 404.
pub fn app(state: AppState) -> Router {
    let state = Shared(Arc::new(state));
    let admin = || middleware::from_fn_with_state(state.clone(), auth::require_admin);
    let introspection = post(introspect::introspect)
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_introspect,
        ))
        .fallback(error::method_not_allowed)
        .layer(middleware::map_response(no_store));
    Router::new()
        .route("/v1/tokens", get(tokens::list_tokens).route_layer(admin()))
        .route(
            "/v1/tokens/{id}",
            put(tokens::register)
                .patch(tokens::update)
                .delete(tokens::revoke)
                .get(tokens::get_token)
                .route_layer(admin()),
        )
        .route(
            "/v1/tokens/{id}/events",
            get(events::token_events).route_layer(admin()),
        )
        .route("/v1/events", get(events::owner_events).route_layer(admin()))
        .route("/v1/introspect", introspection)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/v1/openapi.json", get(openapi::openapi))
        .method_not_allowed_fallback(error::method_not_allowed)
        .fallback(error::no_route)
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
