//! Who may call what: the two credentials (management and introspection), each kept as its
//! SHA-256 and compared in constant time, and the middlewares that guard each group of routes.
//! A credential is presented as `Authorization: Bearer <secret>` or as the password of HTTP
//! Basic with any user name (RFC 7662 clients use `client_secret_basic`, RFC 6749 §2.3.1,
//! which form-encodes the password first: both the password as sent and its decoded form are
//! compared). Pure apart from the middlewares passing requests on; a presented secret is never
//! logged.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Shared;
use super::error::ApiError;

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

fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// The digests of the presented secret: one for a bearer token; for HTTP Basic the password as
/// sent and, when it differs, its form-decoded form. `None` without a usable header. (No
/// allocation for a bearer token: every introspection comes through here.)
fn presented(headers: &HeaderMap) -> Option<([u8; 32], Option<[u8; 32]>)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, secret) = value.split_once(' ')?;
    let secret = secret.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some((digest(secret.as_bytes()), None));
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(secret)
        .ok()?;
    let pair = String::from_utf8(decoded).ok()?;
    let (_user, password) = pair.split_once(':')?;
    // As one form value: '&' would otherwise split it ('=' after the first is kept as is).
    let as_value = format!("p={}", password.replace('&', "%26"));
    let form_decoded: String = form_urlencoded::parse(as_value.as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let decoded = (form_decoded != password).then(|| digest(form_decoded.as_bytes()));
    Some((digest(password.as_bytes()), decoded))
}

fn authorise(creds: &Credentials, headers: &HeaderMap, needed: Role) -> Result<(), ApiError> {
    let (sent, decoded) = presented(headers).ok_or(ApiError::Unauthorized)?;
    // Both comparisons always run for every form presented, so timing tells nothing about
    // which one matched.
    let (mut is_admin, mut is_introspect) = (false, false);
    for d in std::iter::once(&sent).chain(decoded.as_ref()) {
        is_admin |= creds.admin.matches(d);
        is_introspect |= creds.introspect.matches(d);
    }
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

/// Middleware of the management routes.
pub(super) async fn require_admin(State(s): State<Shared>, req: Request, next: Next) -> Response {
    match authorise(&s.credentials, req.headers(), Role::Admin) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Middleware of the introspection route.
pub(super) async fn require_introspect(
    State(s): State<Shared>,
    req: Request,
    next: Next,
) -> Response {
    match authorise(&s.credentials, req.headers(), Role::Introspect) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

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
        // Basic: any user, the credential as password, also form-encoded (RFC 6749 §2.3.1).
        let creds = Credentials {
            admin: Credential::new("a b+c"),
            introspect: Credential::new("i"),
        };
        let basic = |pair: &str| {
            let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
            h(&format!("Basic {encoded}"))
        };
        for (pair, role, allowed, status) in [
            ("u:i", Role::Introspect, true, None),
            (":a b+c", Role::Admin, true, None),
            ("u:a+b%2Bc", Role::Admin, true, None),
            ("u:a b+c", Role::Introspect, false, Some(403)),
            ("u:i", Role::Admin, false, Some(403)),
            ("no-colon", Role::Introspect, false, Some(401)),
        ] {
            let got = authorise(&creds, &basic(pair), role);
            assert_eq!(got.is_ok(), allowed, "{pair} as {role:?}");
            let code = got.err().map(|e| match e {
                ApiError::Forbidden => 403,
                ApiError::Unauthorized => 401,
                _ => 0,
            });
            assert_eq!(code, status, "{pair} as {role:?}");
        }
        assert!(matches!(
            authorise(&creds, &HeaderMap::new(), Role::Admin),
            Err(ApiError::Unauthorized)
        ));
        assert!(format!("{creds:?}").contains("redacted"));
    }
}
