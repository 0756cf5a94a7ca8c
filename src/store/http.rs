//! The HTTP API of `loop-store`: `app(state) -> Router`, thin handlers, one error type.
//!
//! No I/O of its own beyond what the state's repository does; tests drive the router without a
//! socket. Request bodies are never logged, and error messages never echo submitted values.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::OpenApi;

use super::cache::Introspector;
use super::metrics::Metrics;
use super::model::{Invalid, ListFilter, NewToken, TokenId, TokenPatch};
use super::repo::{Conflict, Registered, RepoError, Repository, Updated};
use super::scopes::{Catalogue, ScopeRejection};
use super::writes::{WriteError, Writer};
use crate::api::{
    DEFAULT_PAGE, ErrorBody, IntrospectRequest, IntrospectResponse, ListQuery, MAX_PAGE, Owner,
    PatchRequest, RegisterRequest, TokenList, TokenView,
};
use crate::clock::Clock;
use crate::serve::openmetrics;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A credential, kept as its SHA-256 so comparison is constant-time and length-independent.
#[derive(Clone)]
pub struct Credential([u8; 32]);

impl Credential {
    pub fn new(secret: &str) -> Self {
        Credential(Sha256::digest(secret.as_bytes()).into())
    }

    pub(crate) fn digest(&self) -> &[u8; 32] {
        &self.0
    }

    fn matches(&self, presented: &[u8; 32]) -> bool {
        self.0.ct_eq(presented).into()
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}

/// Who may call what.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The operator's: manages tokens.
    pub admin: Credential,
    /// Loop API's: introspects only.
    pub introspect: Credential,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Admin,
    Introspect,
}

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

fn parse_id(id: &str) -> Result<TokenId, ApiError> {
    TokenId::parse(id).map_err(|e| ApiError::BadRequest(e.to_string()))
}

fn bearer(headers: &HeaderMap) -> Option<[u8; 32]> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, secret) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    Some(Sha256::digest(secret.trim().as_bytes()).into())
}

fn authorise(creds: &Credentials, headers: &HeaderMap, needed: Role) -> Result<(), ApiError> {
    let presented = bearer(headers).ok_or(ApiError::Unauthorized)?;
    // Both comparisons always run, so timing tells nothing about which one matched.
    let is_admin = creds.admin.matches(&presented);
    let is_introspect = creds.introspect.matches(&presented);
    let role = match (is_admin, is_introspect) {
        (true, _) => Role::Admin,
        (false, true) => Role::Introspect,
        (false, false) => return Err(ApiError::Unauthorized),
    };
    if role == needed {
        Ok(())
    } else {
        Err(ApiError::Forbidden)
    }
}

async fn require_admin(State(s): State<Shared>, req: Request, next: Next) -> Response {
    match authorise(&s.credentials, req.headers(), Role::Admin) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn require_introspect(State(s): State<Shared>, req: Request, next: Next) -> Response {
    match authorise(&s.credentials, req.headers(), Role::Introspect) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

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

/// The whole API.
pub fn app(state: AppState) -> Router {
    let state = Shared(Arc::new(state));
    let management = Router::new()
        .route("/v1/tokens", get(list_tokens))
        .route(
            "/v1/tokens/{id}",
            put(register).patch(update).delete(revoke).get(get_token),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    let introspection = Router::new()
        .route("/v1/introspect", post(introspect))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_introspect,
        ));
    Router::new()
        .merge(management)
        .merge(introspection)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

#[utoipa::path(put, path = "/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "Token id chosen by the caller")),
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered", body = TokenView),
        (status = 200, description = "Already registered with this hash; name, scopes and expiry now match", body = TokenView),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 409, description = "Id or hash registered differently, or revoked", body = ErrorBody),
        (status = 422, description = "A scope the catalogue does not allow", body = ErrorBody),
        (status = 503, description = "Database unreachable", body = ErrorBody)),
    security(("admin" = [])))]
async fn register(
    State(s): State<Shared>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let new = NewToken::from_request(id, body)?;
    s.catalogue
        .check(&new.scopes)
        .map_err(ApiError::UnknownScope)?;
    let now = (s.clock)();
    match s.writer.register(new, now).await? {
        Registered::Created(r) => {
            tracing::info!(id = r.id.as_str(), fingerprint = %r.hash.fingerprint(), owner_namespace = %r.owner.namespace, owner_name = %r.owner.name, "token registered");
            Ok((StatusCode::CREATED, Json(r.view(now))).into_response())
        }
        Registered::Existing(r) => Ok((StatusCode::OK, Json(r.view(now))).into_response()),
        Registered::Conflict(c) => Err(conflict(c)),
    }
}

fn conflict(c: Conflict) -> ApiError {
    ApiError::Conflict(c.message())
}

#[utoipa::path(patch, path = "/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path)),
    request_body = PatchRequest,
    responses(
        (status = 200, description = "Updated; the token is unchanged", body = TokenView),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "Revoked", body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("admin" = [])))]
async fn update(
    State(s): State<Shared>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PatchRequest>,
) -> Result<Json<TokenView>, ApiError> {
    let id = parse_id(&id)?;
    let patch = TokenPatch::from_request(body)?;
    if let Some(scopes) = &patch.scopes {
        s.catalogue.check(scopes).map_err(ApiError::UnknownScope)?;
    }
    let now = (s.clock)();
    if patch.is_empty() {
        let r = s.repo.get(&id).await?.ok_or(ApiError::NotFound)?;
        return Ok(Json(r.view(now)));
    }
    match s.writer.update(id, patch, now).await? {
        Updated::Updated(r) => {
            tracing::info!(id = r.id.as_str(), fingerprint = %r.hash.fingerprint(), "token updated");
            Ok(Json(r.view(now)))
        }
        Updated::NotFound => Err(ApiError::NotFound),
        Updated::Revoked => Err(conflict(Conflict::Revoked)),
    }
}

#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "Revoked (or already revoked); the record stays for audit", body = TokenView),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("admin" = [])))]
async fn revoke(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<TokenView>, ApiError> {
    let id = parse_id(&id)?;
    let now = (s.clock)();
    let r = s.writer.revoke(id, now).await?.ok_or(ApiError::NotFound)?;
    tracing::info!(id = r.id.as_str(), fingerprint = %r.hash.fingerprint(), "token revoked");
    Ok(Json(r.view(now)))
}

#[utoipa::path(get, path = "/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path)),
    responses((status = 200, body = TokenView), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("admin" = [])))]
async fn get_token(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<TokenView>, ApiError> {
    let id = parse_id(&id)?;
    let r = s.repo.get(&id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(r.view((s.clock)())))
}

#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", params(ListQuery),
    responses((status = 200, body = TokenList), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("admin" = [])))]
async fn list_tokens(
    State(s): State<Shared>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<TokenList>, ApiError> {
    let Query(q) = q?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let filter = ListFilter {
        owner_uid: q.owner_uid,
        namespace: q.namespace,
        active: q.active,
        after: q.after,
        limit: limit + 1,
    };
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

#[utoipa::path(post, path = "/v1/introspect", tag = "introspection",
    request_body = IntrospectRequest,
    responses(
        (status = 200, description = "RFC 7662 answer: only known, unexpired, unrevoked tokens are active", body = IntrospectResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 503, description = "The answer cannot be known right now (fail closed)", body = ErrorBody)),
    security(("introspect" = [])))]
async fn introspect(
    State(s): State<Shared>,
    ApiJson(body): ApiJson<IntrospectRequest>,
) -> Result<Json<IntrospectResponse>, ApiError> {
    let now = (s.clock)();
    Ok(Json(s.introspector.introspect(&body.token, now).await?))
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<Shared>) -> Response {
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

async fn metrics(State(s): State<Shared>) -> Response {
    s.metrics
        .set_cache_trusted(s.introspector.cache().is_trusted());
    match s.metrics.encode() {
        Ok(text) => openmetrics(text),
        Err(_) => ApiError::Internal.into_response(),
    }
}

async fn openapi() -> Response {
    match ApiDoc::openapi().to_pretty_json() {
        Ok(doc) => ([(header::CONTENT_TYPE, "application/json")], doc).into_response(),
        Err(_) => ApiError::Internal.into_response(),
    }
}

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |desc: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(desc))
                    .build(),
            )
        };
        components.add_security_scheme(
            "admin",
            bearer("The management credential (--admin-token-file)."),
        );
        components.add_security_scheme(
            "introspect",
            bearer("The introspection credential (--introspect-token-file)."),
        );
    }
}

/// The OpenAPI document (served at `/v1/openapi.json`, committed as `docs/openapi.json`).
#[derive(OpenApi)]
#[openapi(
    info(title = "loop-store", description = "The Loop token store: token registrations and RFC 7662 introspection."),
    paths(register, update, revoke, get_token, list_tokens, introspect),
    components(schemas(RegisterRequest, PatchRequest, TokenView, TokenList, Owner, IntrospectRequest, IntrospectResponse, ErrorBody)),
    modifiers(&Security)
)]
pub struct ApiDoc;

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

    #[test]
    fn credentials_are_checked_by_role() {
        let creds = Credentials {
            admin: Credential::new("a"),
            introspect: Credential::new("i"),
        };
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            m
        };
        assert!(authorise(&creds, &h("Bearer a"), Role::Admin).is_ok());
        assert!(matches!(
            authorise(&creds, &h("Bearer i"), Role::Admin),
            Err(ApiError::Forbidden)
        ));
        assert!(matches!(
            authorise(&creds, &h("Bearer a"), Role::Introspect),
            Err(ApiError::Forbidden)
        ));
        assert!(matches!(
            authorise(&creds, &h("Bearer x"), Role::Admin),
            Err(ApiError::Unauthorized)
        ));
        assert!(matches!(
            authorise(&creds, &h("Basic a"), Role::Admin),
            Err(ApiError::Unauthorized)
        ));
        assert!(matches!(
            authorise(&creds, &HeaderMap::new(), Role::Admin),
            Err(ApiError::Unauthorized)
        ));
        assert!(format!("{creds:?}").contains("redacted"));
    }
}
