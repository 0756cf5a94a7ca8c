//! The OpenAPI document of the store's API, generated from the handlers' annotations and the
//! [`crate::api`] types; served at `/v1/openapi.json` and committed as `docs/openapi.json`
//! (a test fails when the committed copy is stale). Pure.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;

use super::error::ApiError;
use super::{events, introspect, tokens};
use crate::api::{
    ChangeReason, ErrorBody, EventKind, EventList, EventState, IntrospectRequest,
    IntrospectResponse, Owner, PatchRequest, RegisterRequest, TokenEventView, TokenList, TokenView,
};

/// Adds the two credentials to the document (the introspection one also as HTTP Basic).
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
        components.add_security_scheme(
            "introspect_basic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "The introspection credential as the password, any user name (RFC 7662 clients' client_secret_basic).",
                    ))
                    .build(),
            ),
        );
    }
}

/// The OpenAPI document (served at `/v1/openapi.json`, committed as `docs/openapi.json`).
#[derive(OpenApi)]
#[openapi(
    info(title = "loop-store", description = "The Loop token store: token registrations and RFC 7662 introspection."),
    paths(tokens::register, tokens::update, tokens::revoke, tokens::get_token, tokens::list_tokens, events::token_events, events::owner_events, introspect::introspect),
    components(schemas(RegisterRequest, PatchRequest, TokenView, TokenList, Owner, ChangeReason, EventKind, EventState, TokenEventView, EventList, IntrospectRequest, IntrospectResponse, ErrorBody)),
    modifiers(&Security)
)]
pub struct ApiDoc;

/// `GET /v1/openapi.json`.
pub(super) async fn openapi() -> Response {
    match ApiDoc::openapi().to_pretty_json() {
        Ok(doc) => ([(header::CONTENT_TYPE, "application/json")], doc).into_response(),
        Err(_) => ApiError::Internal.into_response(),
    }
}
