//! The store's v1 wire contract: the JSON bodies and the list query of `loop-store`'s HTTP API,
//! shared by the store (which serves them) and the operator's client (which sends and reads
//! them). Pure types, no I/O; the OpenAPI document (`docs/openapi.json`) is generated from them.
//!
//! # Strict requests, tolerant responses
//!
//! The store refuses a request with a field it does not know (`deny_unknown_fields` on every
//! management request type), so that a typo is an error rather than a silently ignored setting.
//! The one exception is [`IntrospectRequest`]: RFC 7662 clients send parameters of their own
//! (`client_id`, ...), and the RFC has the server ignore what it does not know. A client
//! must read answers the other way round: an operator talking to a newer store must not break
//! because the store added a field. So no type that appears in a response denies unknown fields.
//!
//! [`Owner`] appears in both: inside [`RegisterRequest`] and inside [`TokenView`]. It is
//! tolerant itself, and the strictness lives where the store reads a request:
//! [`RegisterRequest::owner`] is read through a private strict mirror (`StrictOwner`, a serde
//! "remote" definition of [`Owner`], so the compiler checks that it lists the same fields).
//! One type on the wire and in storage, one strict path, no second owner type to keep in step.
//!
//! Domain types and validation (`TokenId`, `NewToken`, `TokenPatch`, `TokenRecord`) live in
//! [`crate::store::model`], which converts from and to these types.

use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use crate::token::TokenHash;

/// Default page size of `GET /v1/tokens`.
pub const DEFAULT_PAGE: u32 = 500;
/// Largest page size of `GET /v1/tokens`.
pub const MAX_PAGE: u32 = 1000;
/// Default page size of the audit routes (`GET /v1/tokens/{id}/events`, `GET /v1/events`).
pub const DEFAULT_EVENT_PAGE: u32 = 100;
/// Largest page size of the audit routes.
pub const MAX_EVENT_PAGE: u32 = 1000;

/// Why a registration changed, as its caller says (the operator sends it with every call). An
/// absent reason is recorded as `manual`. Clients must expect values to be added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeReason {
    /// A rotation asked for by hand, or the end of a rotation's grace period.
    Rotation,
    /// A scheduled rotation (`spec.rotation.every`).
    Scheduled,
    /// Renewal before, or reissue after, the token's expiry.
    Expiry,
    /// The token went unused for too long.
    Unused,
    /// A previous token stopped being used after a rotation.
    Idle,
    /// Its owner was deleted.
    Deleted,
    /// Left behind by an interrupted issue.
    Orphan,
    /// The operator restoring what its promises require (a lost Secret or registration).
    Policy,
    /// A change of the spec, or any call that gives no reason.
    #[default]
    Manual,
}

impl ChangeReason {
    /// Every reason, in the order of the documentation.
    pub const ALL: [ChangeReason; 9] = [
        ChangeReason::Rotation,
        ChangeReason::Scheduled,
        ChangeReason::Expiry,
        ChangeReason::Unused,
        ChangeReason::Idle,
        ChangeReason::Deleted,
        ChangeReason::Orphan,
        ChangeReason::Policy,
        ChangeReason::Manual,
    ];

    /// The wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeReason::Rotation => "rotation",
            ChangeReason::Scheduled => "scheduled",
            ChangeReason::Expiry => "expiry",
            ChangeReason::Unused => "unused",
            ChangeReason::Idle => "idle",
            ChangeReason::Deleted => "deleted",
            ChangeReason::Orphan => "orphan",
            ChangeReason::Policy => "policy",
            ChangeReason::Manual => "manual",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// What changed in a registration. Clients must expect values to be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A new registration (`PUT` of an unknown id).
    Registered,
    /// A `PUT` of a known id and hash that changed its name, scopes or expiry.
    Reregistered,
    /// A `PATCH` that changed the name or the scopes (and perhaps the expiry).
    Updated,
    /// A `PATCH` that changed only the expiry.
    ExpirySet,
    /// The first `DELETE`.
    Revoked,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::Registered,
        EventKind::Reregistered,
        EventKind::Updated,
        EventKind::ExpirySet,
        EventKind::Revoked,
    ];

    /// The wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Registered => "registered",
            EventKind::Reregistered => "reregistered",
            EventKind::Updated => "updated",
            EventKind::ExpirySet => "expiry_set",
            EventKind::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// The Kubernetes object a token belongs to. A request with an unknown field here is refused; a
/// client ignores the fields of an answer it does not know.
// Tolerant itself; requests read it through `StrictOwner` (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Owner {
    /// Name of the cluster the operator runs in (its `--cluster-name`).
    pub cluster: String,
    pub namespace: String,
    pub name: String,
    /// `metadata.uid` of the ApiToken.
    pub uid: String,
}

/// The strict reading of [`Owner`], used only where the store deserialises a request.
#[derive(Deserialize)]
#[serde(remote = "Owner", deny_unknown_fields)]
struct StrictOwner {
    cluster: String,
    namespace: String,
    name: String,
    uid: String,
}

/// Body of `PUT /v1/tokens/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegisterRequest {
    /// `sha256:<64 lowercase hex>` of the token. The store never sees the token itself.
    #[schema(value_type = String, pattern = "^sha256:[0-9a-f]{64}$")]
    pub hash: TokenHash,
    /// Display name (1-100 characters).
    pub name: String,
    /// Scopes, each `<resource>:read` or `<resource>:write`.
    pub scopes: Vec<String>,
    #[serde(deserialize_with = "StrictOwner::deserialize")]
    pub owner: Owner,
    /// Optional expiry; the token is inactive from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
    /// Why, for the audit trail (absent: `manual`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<ChangeReason>,
    /// `metadata.generation` of the ApiToken that asked, for the audit trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub generation: Option<i64>,
}

/// Body of `PATCH /v1/tokens/{id}`: any subset of the fields. `expiresAt: null` removes the
/// expiry; `owner` hands the registration to another owner (an ApiToken that adopts a token
/// orphaned by an earlier one of the same name). The token itself never changes. `reason` and
/// `generation` are recorded in the audit trail only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PatchRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    // Absent (`None`): unchanged; `null` (`Some(None)`): no expiry; a time: that expiry.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Option<Timestamp>>,
    #[serde(
        default,
        deserialize_with = "strict_owner",
        skip_serializing_if = "Option::is_none"
    )]
    pub owner: Option<Owner>,
    /// Why, for the audit trail (absent: `manual`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<ChangeReason>,
    /// `metadata.generation` of the ApiToken that asked, for the audit trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub generation: Option<i64>,
}

/// An optional [`Owner`], read strictly (see the module doc).
fn strict_owner<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Owner>, D::Error> {
    #[derive(Deserialize)]
    struct Strict(#[serde(with = "StrictOwner")] Owner);
    Option::<Strict>::deserialize(d).map(|o| o.map(|s| s.0))
}

/// Query of `DELETE /v1/tokens/{id}`: the audit trail's reason and generation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct RevokeQuery {
    /// Why (absent: `manual`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<ChangeReason>,
    /// `metadata.generation` of the ApiToken that asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(minimum = 0)]
    pub generation: Option<i64>,
}

/// Tell "absent" (outer `None`, by `default`) from "null" (`Some(None)`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
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

/// Body of `GET /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenList {
    pub items: Vec<TokenView>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub next: Option<String>,
}

/// Query of `GET /v1/tokens`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only tokens of this owner (`metadata.uid` of the ApiToken).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_uid: Option<String>,
    /// Only tokens of this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Only tokens of this cluster (the owner's `cluster`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Only active (`true`) or inactive (`false`) tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// Continue after this id (the `next` of the previous page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Page size, 1-1000 (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// A registration's name, scopes and expiry before or after a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventState {
    pub name: String,
    pub scopes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
}

/// One change of a registration in the audit trail. Never a token or a hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenEventView {
    /// Increases with every event the store records; the paging cursor.
    pub id: i64,
    pub token_id: String,
    pub owner: Owner,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    pub kind: EventKind,
    pub reason: ChangeReason,
    /// `metadata.generation` of the ApiToken that asked, when the caller sent it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub generation: Option<i64>,
    /// The registration before the change (absent for `registered`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub before: Option<EventState>,
    /// The registration after the change (absent for `revoked`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub after: Option<EventState>,
}

/// Body of `GET /v1/tokens/{id}/events` and `GET /v1/events`: oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EventList {
    pub items: Vec<TokenEventView>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub next: Option<i64>,
}

/// Query of `GET /v1/tokens/{id}/events`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Continue after this event id (the `next` of the previous page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<i64>,
    /// Page size, 1-1000 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Query of `GET /v1/events`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct OwnerEventQuery {
    /// The owner's `metadata.uid` (required).
    pub owner_uid: String,
    /// Continue after this event id (the `next` of the previous page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<i64>,
    /// Page size, 1-1000 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Body of `POST /v1/introspect` (RFC 7662 §2.1: a form, or the same as JSON). Other
/// parameters are ignored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IntrospectRequest {
    /// The presented token.
    pub token: String,
    /// Accepted for RFC 7662 compatibility and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type_hint: Option<String>,
}

/// Never prints the presented token.
impl std::fmt::Debug for IntrospectRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntrospectRequest")
            .field("token", &"<redacted>")
            .field("token_type_hint", &self.token_type_hint)
            .finish()
    }
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
    /// The answer for any token that is unknown, expired or revoked.
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn owner_json() -> Value {
        json!({"cluster": "c", "namespace": "n", "name": "t", "uid": "u"})
    }

    fn register_json() -> Value {
        json!({"hash": TokenHash::of("x"), "name": "n", "scopes": ["a:read"], "owner": owner_json()})
    }

    fn with(mut v: Value, pointer: &str, key: &str) -> Value {
        if let Some(Value::Object(m)) = v.pointer_mut(pointer) {
            m.insert(key.to_owned(), json!(1));
        }
        v
    }

    #[test]
    fn requests_are_strict_even_inside_the_owner() {
        assert!(serde_json::from_value::<RegisterRequest>(register_json()).is_ok());
        for extra in [
            with(register_json(), "", "x"),
            with(register_json(), "/owner", "x"),
        ] {
            let e = serde_json::from_value::<RegisterRequest>(extra).unwrap_err();
            assert!(e.to_string().contains("unknown field `x`"), "{e}");
        }
        assert!(serde_json::from_value::<PatchRequest>(json!({"x": 1})).is_err());
        let handover = json!({"owner": owner_json()});
        let p: PatchRequest = serde_json::from_value(handover.clone()).unwrap();
        assert_eq!(p.owner.map(|o| o.uid), Some("u".to_owned()));
        let e = serde_json::from_value::<PatchRequest>(with(handover, "/owner", "x")).unwrap_err();
        assert!(e.to_string().contains("unknown field `x`"), "{e}");
        // RFC 7662: the introspection endpoint ignores parameters it does not know.
        assert!(
            serde_json::from_value::<IntrospectRequest>(json!({"token": "t", "client_id": 1}))
                .is_ok()
        );
    }

    #[test]
    fn responses_are_tolerant() {
        let owner: Owner = serde_json::from_value(with(owner_json(), "", "kind")).unwrap();
        assert_eq!(owner.uid, "u");
        let answer = json!({"active": false, "extra": true});
        assert!(serde_json::from_value::<IntrospectResponse>(answer).is_ok());
        let error = json!({"error": "e", "message": "m", "details": []});
        assert!(serde_json::from_value::<ErrorBody>(error).is_ok());
    }

    #[test]
    fn patch_tells_null_from_absent_both_ways() {
        let cases = [
            (json!({}), None),
            (json!({"expiresAt": null}), Some(None)),
            (
                json!({"expiresAt": "2030-01-01T00:00:00Z"}),
                Some(Some(Timestamp::from_second(1_893_456_000).unwrap())),
            ),
        ];
        for (wire, expires_at) in cases {
            let p: PatchRequest = serde_json::from_value(wire.clone()).unwrap();
            assert_eq!(p.expires_at, expires_at, "{wire}");
            assert_eq!(serde_json::to_value(&p).unwrap(), wire);
        }
    }

    #[test]
    fn register_omits_an_absent_expiry() {
        let r: RegisterRequest = serde_json::from_value(register_json()).unwrap();
        assert_eq!(serde_json::to_value(&r).unwrap(), register_json());
    }

    #[test]
    fn reason_and_kind_names_are_their_wire_names() {
        for r in ChangeReason::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), json!(r.as_str()));
            assert_eq!(ChangeReason::parse(r.as_str()), Some(r));
        }
        for k in EventKind::ALL {
            assert_eq!(serde_json::to_value(k).unwrap(), json!(k.as_str()));
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        let unknown = with(register_json(), "", "reason");
        assert!(serde_json::from_value::<RegisterRequest>(unknown).is_err());
        let mut whim = register_json();
        whim["reason"] = json!("whim");
        assert!(serde_json::from_value::<RegisterRequest>(whim).is_err());
    }

    #[test]
    fn introspection_requests_do_not_print_the_token() {
        let r = IntrospectRequest {
            token: "loop_secret".into(),
            token_type_hint: None,
        };
        assert!(!format!("{r:?}").contains("loop_secret"));
    }
}
