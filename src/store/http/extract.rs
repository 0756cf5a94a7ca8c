//! Request extractors with this API's error answers: JSON bodies ([`ApiJson`]), query strings
//! ([`ApiQuery`]), the introspection body in JSON or form encoding ([`JsonOrForm`]) and token
//! ids in paths ([`IdPath`]). Pure apart from reading the request body.
//!
//! Parser messages are never passed on: a rejected value, or a key, may be a token. Every error
//! text is built here from a fixed phrase, the line and column of a syntax error, and the path
//! of the field that failed, in which a name appears only when it is one of this API's own
//! field names ([`KNOWN_FIELDS`]).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

use super::error::ApiError;
use crate::store::model::TokenId;

/// Every field name of the API's requests (bodies and query strings): the only names an error
/// message repeats.
pub const KNOWN_FIELDS: &[&str] = &[
    "hash",
    "name",
    "scopes",
    "owner",
    "expiresAt",
    "cluster",
    "namespace",
    "uid",
    "token",
    "token_type_hint",
    "ownerUid",
    "active",
    "after",
    "limit",
    "reason",
    "generation",
];

/// Longest "expected ..." phrase a type error may carry (it comes from our types, not the
/// request).
const MAX_EXPECTED: usize = 60;

/// The path of the failed field, up to the first segment that is not one of ours.
fn field_path(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } if KNOWN_FIELDS.contains(&key.as_str()) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            _ => break,
        }
    }
    out
}

/// The name between the first pair of backticks, when it is one of ours.
fn known_name(message: &str) -> Option<&'static str> {
    let name = message.split('`').nth(1)?;
    KNOWN_FIELDS.iter().copied().find(|k| *k == name)
}

/// What serde's type errors say was expected, when it is a short phrase of our types.
fn expected(message: &str) -> Option<&str> {
    let (_, tail) = message.rsplit_once(", expected ")?;
    let plain = tail.len() <= MAX_EXPECTED
        && tail
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '_' | '-' | '`' | ','));
    plain.then_some(tail)
}

/// The values an enum of ours takes, from serde's "unknown variant" message: what follows its
/// last ", expected " (which comes after the submitted value, and from our types).
fn one_of(message: &str) -> Option<&str> {
    let (_, tail) = message.rsplit_once(", expected ")?;
    let plain = tail.len() <= 4 * MAX_EXPECTED
        && tail
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '_' | '`' | ','));
    plain.then_some(tail)
}

/// A fixed description of a data error: never a submitted value or an unknown key.
fn describe(path: &serde_path_to_error::Path, message: &str) -> String {
    let what = if message.starts_with("unknown field") {
        "unknown field".to_owned()
    } else if message.starts_with("unknown variant") {
        match one_of(message) {
            Some(values) => format!("unknown value, expected {values}"),
            None => "unknown value".to_owned(),
        }
    } else if let Some(kind) = ["missing field", "duplicate field"]
        .into_iter()
        .find(|k| message.starts_with(k))
    {
        match known_name(message) {
            Some(name) => format!("{kind} `{name}`"),
            None => kind.to_owned(),
        }
    } else if message.starts_with("invalid type") || message.starts_with("invalid length") {
        match expected(message) {
            Some(e) => format!("invalid type, expected {e}"),
            None => "invalid type".to_owned(),
        }
    } else {
        "invalid value".to_owned()
    };
    match field_path(path).as_str() {
        "" => what,
        at => format!("{at}: {what}"),
    }
}

fn json_error(e: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let inner = e.inner();
    let text = match inner.classify() {
        serde_json::error::Category::Data => {
            let message = inner.to_string();
            let position = format!(" at line {} column {}", inner.line(), inner.column());
            let message = message.strip_suffix(&position).unwrap_or(&message);
            describe(e.path(), message)
        }
        serde_json::error::Category::Eof => "the JSON body ends too early".to_owned(),
        _ => format!(
            "malformed JSON at line {}, column {}",
            inner.line(),
            inner.column()
        ),
    };
    ApiError::BadRequest(format!("invalid request body: {text}"))
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| json_error(&e))?;
    de.end().map_err(|_| {
        ApiError::BadRequest("invalid request body: data after the JSON value".into())
    })?;
    Ok(value)
}

/// Parse `a=b&c=d` (a query string or a form body).
fn parse_urlencoded<T: DeserializeOwned>(input: &[u8], what: &str) -> Result<T, ApiError> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(input));
    serde_path_to_error::deserialize(de).map_err(|e| {
        ApiError::BadRequest(format!(
            "{what}: {}",
            describe(e.path(), &e.inner().to_string())
        ))
    })
}

/// The media type of the body, lower-cased, without parameters.
/// What a request body is, by its media type (compared without allocating: introspection is
/// the hot path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Json,
    Form,
    Other,
}

fn body_kind(headers: &HeaderMap) -> BodyKind {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return BodyKind::Other;
    };
    let m = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .as_bytes();
    let json_suffix = m.len() > 17
        && m[..12].eq_ignore_ascii_case(b"application/")
        && m[m.len() - 5..].eq_ignore_ascii_case(b"+json");
    if m.eq_ignore_ascii_case(b"application/json") || json_suffix {
        BodyKind::Json
    } else if m.eq_ignore_ascii_case(b"application/x-www-form-urlencoded") {
        BodyKind::Form
    } else {
        BodyKind::Other
    }
}

async fn body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge
        } else {
            ApiError::BadRequest("the request body could not be read".into())
        }
    })
}

/// A JSON body (`Content-Type: application/json`).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if body_kind(req.headers()) != BodyKind::Json {
            return Err(ApiError::UnsupportedMediaType(
                "request body must be JSON (Content-Type: application/json)",
            ));
        }
        Ok(ApiJson(parse_json(&body(req, state).await?)?))
    }
}

/// A JSON or form-encoded body (RFC 7662 clients send forms).
pub struct JsonOrForm<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonOrForm<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match body_kind(req.headers()) {
            BodyKind::Form => Ok(JsonOrForm(parse_urlencoded(
                &body(req, state).await?,
                "invalid request body",
            )?)),
            BodyKind::Json => Ok(JsonOrForm(parse_json(&body(req, state).await?)?)),
            BodyKind::Other => Err(ApiError::UnsupportedMediaType(
                "request body must be JSON (Content-Type: application/json) or a form (application/x-www-form-urlencoded)",
            )),
        }
    }
}

/// A query string.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        Ok(ApiQuery(parse_urlencoded(
            query.as_bytes(),
            "invalid query",
        )?))
    }
}

/// The `{id}` of a path, validated.
pub struct IdPath(pub TokenId);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let invalid = |e: crate::store::model::IdError| ApiError::BadRequest(e.to_string());
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| invalid(crate::store::model::IdError))?;
        Ok(IdPath(TokenId::parse(&id).map_err(invalid)?))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Probe {
        name: String,
        limit: Option<u32>,
        scopes: Option<Vec<String>>,
        kind: Option<Kind>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "lowercase")]
    #[allow(dead_code)]
    enum Kind {
        A,
        B,
    }

    fn json_message(body: &str) -> String {
        match parse_json::<Probe>(body.as_bytes()) {
            Err(ApiError::BadRequest(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn messages_name_only_our_fields_and_never_a_value() {
        let m = json_message(r#"{"name": "n", "loop_secret": 1}"#);
        assert!(m.ends_with("unknown field"), "{m}");
        assert!(!m.contains("loop_secret"), "{m}");
        let m = json_message(r#"{"name": 5}"#);
        assert_eq!(
            m,
            "invalid request body: name: invalid type, expected a string"
        );
        let m = json_message(r#"{"name": "n", "scopes": ["a", 7]}"#);
        assert!(m.contains("scopes[1]: invalid type"), "{m}");
        let m = json_message(r#"{"limit": 1}"#);
        assert!(m.ends_with("missing field `name`"), "{m}");
        let m = json_message(r#"{"name": "loop_secret""#);
        assert!(!m.contains("loop_secret"), "{m}");
        let m = json_message(r#"{"name": "x", "kind": "loop_secret`, expected one of `x"}"#);
        assert_eq!(
            m,
            "invalid request body: unknown value, expected `a` or `b`"
        );
        let m = json_message(r#"{"name": "x"} trailing"#);
        assert!(m.contains("data after"), "{m}");
        let q: Result<Probe, _> = parse_urlencoded(b"name=n&limit=loop_secret", "invalid query");
        let Err(ApiError::BadRequest(m)) = q else {
            panic!("accepted")
        };
        assert_eq!(m, "invalid query: limit: invalid value");
    }
}
