//! The unauthenticated operational endpoints: `/healthz` (the process answers), `/readyz` (the
//! database answers within 2 s) and `/metrics` (OpenMetrics). I/O: `/readyz` pings the database.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::Shared;
use super::error::ApiError;
use crate::serve::openmetrics;

pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

pub(super) async fn readyz(State(s): State<Shared>) -> Response {
    match tokio::time::timeout(Duration::from_secs(2), s.repo.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ok\n").into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n").into_response()
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "database did not answer within 2s\n",
        )
            .into_response(),
    }
}

pub(super) async fn metrics(State(s): State<Shared>) -> Response {
    let cache = s.introspector.cache();
    s.metrics.set_cache_trusted(cache.is_trusted());
    if cache.trust().bound() != std::time::Duration::MAX {
        s.metrics
            .set_heartbeat_age(cache.trust().proof_age(std::time::Instant::now()));
    }
    match s.metrics.encode() {
        Ok(text) => openmetrics(text),
        Err(_) => ApiError::Internal.into_response(),
    }
}
