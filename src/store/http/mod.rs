//! The HTTP API of `loop-store`: `app(state) -> Router`, its state, and the request metrics
//! middleware. No I/O of its own beyond what the state's repository does; tests drive the router
//! without a socket. Request bodies are never logged, and error messages never echo submitted
//! values.
//!
//! - `error`: [`ApiError`], its one status map, rejections and redaction;
//! - `auth`: the two credentials and the middlewares that check them;
//! - `tokens`: the management handlers (`/v1/tokens`), which write only through the
//!   [`Writer`];
//! - `introspect`: `POST /v1/introspect`;
//! - `health`: `/healthz`, `/readyz`, `/metrics`;
//! - `openapi`: [`ApiDoc`], the OpenAPI document.
//!
//! The JSON shapes are in [`crate::api`].

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
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
mod health;
mod introspect;
mod openapi;
mod tokens;

pub use auth::{Credential, Credentials};
pub use error::{ApiError, ApiJson};
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

/// Counts and times every request by route, method and status.
async fn track(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let resp = next.run(req).await;
    s.metrics.request(
        &route,
        &method,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}

/// The whole API.
pub fn app(state: AppState) -> Router {
    let state = Shared(Arc::new(state));
    let management = Router::new()
        .route("/v1/tokens", get(tokens::list_tokens))
        .route(
            "/v1/tokens/{id}",
            put(tokens::register)
                .patch(tokens::update)
                .delete(tokens::revoke)
                .get(tokens::get_token),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin,
        ));
    let introspection = Router::new()
        .route("/v1/introspect", post(introspect::introspect))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_introspect,
        ));
    Router::new()
        .merge(management)
        .merge(introspection)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/v1/openapi.json", get(openapi::openapi))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
