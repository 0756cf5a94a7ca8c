//! The store's data: validated domain types, and the JSON shapes of the HTTP API.
//!
//! Pure code. Timestamps are kept as Unix milliseconds in storage (portable across SQLite and
//! PostgreSQL) and shown as RFC 3339 in the API.

use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::scopes::{ScopeSet, ScopeSyntaxError};
use crate::token::TokenHash;

/// Longest token name (Loop's own editor allows 100 characters).
pub const MAX_NAME_LEN: usize = 100;
/// Longest token id.
pub const MAX_ID_LEN: usize = 128;

/// A token id chosen by the caller: 1-128 characters of `[A-Za-z0-9._-]`, starting with a
/// letter or digit. Ids are not secret; they name a registration in URLs and in status.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid token id: use 1-{MAX_ID_LEN} characters of letters, digits, '.', '_' or '-', starting with a letter or digit"
)]
pub struct IdError;

impl TokenId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let mut bytes = s.bytes();
        let first_ok = matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric());
        if first_ok
            && s.len() <= MAX_ID_LEN
            && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            Ok(TokenId(s.to_owned()))
        } else {
            Err(IdError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The Kubernetes object a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    /// Name of the cluster the operator runs in (its `--cluster-name`).
    pub cluster: String,
    pub namespace: String,
    pub name: String,
    /// `metadata.uid` of the ApiToken.
    pub uid: String,
}

impl Owner {
    fn validate(&self) -> Result<(), String> {
        for (field, v) in [
            ("cluster", &self.cluster),
            ("namespace", &self.namespace),
            ("name", &self.name),
            ("uid", &self.uid),
        ] {
            if v.is_empty() || v.len() > 253 || v.chars().any(char::is_control) {
                return Err(format!("owner.{field} must be 1-253 printable characters"));
            }
        }
        Ok(())
    }
}

/// Body of `PUT /v1/tokens/{id}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegisterRequest {
    /// `sha256:<64 lowercase hex>` of the token. The store never sees the token itself.
    #[schema(value_type = String, pattern = "^sha256:[0-9a-f]{64}$")]
    pub hash: TokenHash,
    /// Display name (1-100 characters).
    pub name: String,
    /// Scopes, each `<resource>:read` or `<resource>:write`.
    pub scopes: Vec<String>,
    pub owner: Owner,
    /// Optional expiry; the token is inactive from then on.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
}

/// Body of `PATCH /v1/tokens/{id}`: any subset of the fields. `expiresAt: null` removes the
/// expiry. The token itself never changes.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PatchRequest {
    pub name: Option<String>,
    pub scopes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Option<Timestamp>>,
}

/// Tell "absent" (outer `None`) from "null" (`Some(None)`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A validated registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    pub id: TokenId,
    pub hash: TokenHash,
    pub name: String,
    pub scopes: ScopeSet,
    pub owner: Owner,
    pub expires_at_ms: Option<i64>,
}

/// A validated update.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenPatch {
    pub name: Option<String>,
    pub scopes: Option<ScopeSet>,
    pub expires_at_ms: Option<Option<i64>>,
}

impl TokenPatch {
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.scopes.is_none() && self.expires_at_ms.is_none()
    }
}

/// Why a request body is refused before it reaches storage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("{0}")]
    Field(String),
    #[error(transparent)]
    Scope(#[from] ScopeSyntaxError),
}

fn validate_name(name: &str) -> Result<(), Invalid> {
    let n = name.chars().count();
    if n == 0 || n > MAX_NAME_LEN || name.chars().any(char::is_control) || name.trim() != name {
        return Err(Invalid::Field(format!(
            "name must be 1-{MAX_NAME_LEN} printable characters without leading or trailing spaces"
        )));
    }
    Ok(())
}

fn validate_scopes(scopes: &[String]) -> Result<ScopeSet, Invalid> {
    if scopes.is_empty() {
        return Err(Invalid::Field("scopes must list at least one scope".into()));
    }
    Ok(ScopeSet::parse(scopes.iter().map(String::as_str))?)
}

impl RegisterRequest {
    pub fn validate(self, id: TokenId) -> Result<NewToken, Invalid> {
        validate_name(&self.name)?;
        let scopes = validate_scopes(&self.scopes)?;
        self.owner.validate().map_err(Invalid::Field)?;
        Ok(NewToken {
            id,
            hash: self.hash,
            name: self.name,
            scopes,
            owner: self.owner,
            expires_at_ms: self.expires_at.map(|t| t.as_millisecond()),
        })
    }
}

impl PatchRequest {
    pub fn validate(self) -> Result<TokenPatch, Invalid> {
        if let Some(n) = &self.name {
            validate_name(n)?;
        }
        let scopes = self.scopes.as_deref().map(validate_scopes).transpose()?;
        Ok(TokenPatch {
            name: self.name,
            scopes,
            expires_at_ms: self.expires_at.map(|e| e.map(|t| t.as_millisecond())),
        })
    }
}

/// A stored registration, as the storage layer returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: TokenId,
    pub hash: TokenHash,
    pub name: String,
    pub scopes: ScopeSet,
    pub owner: Owner,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    pub last_used_at_ms: Option<i64>,
    pub use_count: i64,
}

/// Is a token usable at `now_ms`, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    Active,
    Revoked,
    Expired,
}

impl TokenRecord {
    pub fn activity(&self, now_ms: i64) -> Activity {
        activity(self.revoked_at_ms, self.expires_at_ms, now_ms)
    }
}

/// The one rule for "active": not revoked, and not at or past its expiry.
pub fn activity(revoked_at_ms: Option<i64>, expires_at_ms: Option<i64>, now_ms: i64) -> Activity {
    if revoked_at_ms.is_some() {
        Activity::Revoked
    } else if expires_at_ms.is_some_and(|e| e <= now_ms) {
        Activity::Expired
    } else {
        Activity::Active
    }
}

/// A registration as the API shows it: metadata and usage, never a hash or a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub owner: Owner,
    /// Short, non-secret identifier of the token (first 12 hex digits of its SHA-256).
    pub fingerprint: String,
    /// Not revoked and not expired.
    pub active: bool,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<Timestamp>,
    /// Active introspections answered for this token (flushed every few seconds).
    pub use_count: i64,
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

impl TokenView {
    pub fn from_record(r: &TokenRecord, now_ms: i64) -> Self {
        TokenView {
            id: r.id.as_str().to_owned(),
            name: r.name.clone(),
            scopes: r.scopes.to_strings(),
            owner: r.owner.clone(),
            fingerprint: r.hash.fingerprint(),
            active: r.activity(now_ms) == Activity::Active,
            created_at: ts(r.created_at_ms),
            updated_at: ts(r.updated_at_ms),
            expires_at: r.expires_at_ms.map(ts),
            revoked_at: r.revoked_at_ms.map(ts),
            last_used_at: r.last_used_at_ms.map(ts),
            use_count: r.use_count,
        }
    }
}

/// Body of `GET /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenList {
    pub items: Vec<TokenView>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub next: Option<String>,
}

/// Filters of `GET /v1/tokens`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub owner_uid: Option<String>,
    pub namespace: Option<String>,
    pub active: Option<bool>,
    pub after: Option<String>,
    pub limit: u32,
}

/// Body of `POST /v1/introspect` (RFC 7662 §2.1, as JSON).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IntrospectRequest {
    /// The presented token.
    pub token: String,
    /// Accepted for RFC 7662 compatibility and ignored.
    #[serde(default)]
    pub token_type_hint: Option<String>,
}

/// Answer of `POST /v1/introspect` (RFC 7662 §2.2). Inactive tokens get only `active: false`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IntrospectResponse {
    pub active: bool,
    /// Space-separated scopes.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub token_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub exp: Option<i64>,
    /// Registration time, seconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub iat: Option<i64>,
}

impl IntrospectResponse {
    pub fn inactive() -> Self {
        IntrospectResponse {
            active: false,
            scope: None,
            token_id: None,
            name: None,
            exp: None,
            iat: None,
        }
    }
}

/// Every error response: a stable machine-readable code and a human message.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for good in ["a", "0", "abc-DEF_1.2", &"x".repeat(128)] {
            assert!(TokenId::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", ".a", "a/b", "a b", "é", &"x".repeat(129)] {
            assert!(TokenId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn activity_rule() {
        assert_eq!(activity(None, None, 5), Activity::Active);
        assert_eq!(activity(None, Some(6), 5), Activity::Active);
        assert_eq!(activity(None, Some(5), 5), Activity::Expired);
        assert_eq!(activity(Some(1), Some(6), 5), Activity::Revoked);
    }

    #[test]
    fn patch_tells_null_from_absent() {
        let p: PatchRequest = serde_json::from_str(r#"{"expiresAt": null}"#).unwrap();
        assert_eq!(p.validate().unwrap().expires_at_ms, Some(None));
        let p: PatchRequest = serde_json::from_str(r#"{"name": "x"}"#).unwrap();
        let v = p.validate().unwrap();
        assert_eq!(v.expires_at_ms, None);
        assert!(!v.is_empty());
        let p: PatchRequest =
            serde_json::from_str(r#"{"expiresAt": "2030-01-01T00:00:00Z"}"#).unwrap();
        assert_eq!(
            p.validate().unwrap().expires_at_ms,
            Some(Some(1_893_456_000_000))
        );
    }

    #[test]
    fn register_validation() {
        let body = |name: &str, scopes: &str| {
            format!(
                r#"{{"hash":"{}","name":"{name}","scopes":{scopes},"owner":{{"cluster":"c","namespace":"n","name":"t","uid":"u"}}}}"#,
                TokenHash::of("x")
            )
        };
        let id = TokenId::parse("t1").unwrap();
        let ok: RegisterRequest =
            serde_json::from_str(&body("Klaviyo", r#"["orders:read","orders:read"]"#)).unwrap();
        assert_eq!(
            ok.validate(id.clone()).unwrap().scopes.joined(),
            "orders:read"
        );
        let no_scopes: RegisterRequest = serde_json::from_str(&body("x", "[]")).unwrap();
        assert!(no_scopes.validate(id.clone()).is_err());
        let bad_scope: RegisterRequest = serde_json::from_str(&body("x", r#"["orders"]"#)).unwrap();
        assert!(matches!(
            bad_scope.validate(id.clone()),
            Err(Invalid::Scope(_))
        ));
        let long: RegisterRequest =
            serde_json::from_str(&body(&"n".repeat(101), r#"["a:read"]"#)).unwrap();
        assert!(long.validate(id.clone()).is_err());
        assert!(
            serde_json::from_str::<RegisterRequest>(
                &body("x", "[]").replace("}}", "},\"extra\":1}")
            )
            .is_err()
        );
    }

    #[test]
    fn views_never_carry_the_hash() {
        let h = TokenHash::of("x");
        let r = TokenRecord {
            id: TokenId::parse("t").unwrap(),
            hash: h.clone(),
            name: "n".into(),
            scopes: ScopeSet::parse(["a:read"]).unwrap(),
            owner: Owner {
                cluster: "c".into(),
                namespace: "n".into(),
                name: "t".into(),
                uid: "u".into(),
            },
            created_at_ms: 0,
            updated_at_ms: 0,
            expires_at_ms: None,
            revoked_at_ms: None,
            last_used_at_ms: None,
            use_count: 0,
        };
        let json = serde_json::to_string(&TokenView::from_record(&r, 1)).unwrap();
        assert!(!json.contains(&h.as_str()[7..]), "{json}");
        assert!(json.contains(&h.fingerprint()));
    }
}
