//! The store's domain: validated types, the rule for "active", and the conversions from and to
//! the wire types of [`crate::api`].
//!
//! Pure code. Timestamps are kept as Unix milliseconds in storage (portable across SQLite and
//! PostgreSQL) and shown as RFC 3339 in the API. [`Owner`] is the wire type itself (plain data,
//! the same in requests, storage and answers), re-exported here for the storage layer.

use jiff::Timestamp;

use super::scopes::{SCOPE_RULE, Scope, ScopeSet};
pub use crate::api::Owner;
use crate::api::{
    ChangeReason, EventKind, EventState, PatchRequest, RegisterRequest, TokenEventView, TokenView,
};
use crate::token::TokenHash;

/// Longest token name (Loop's own editor allows 100 characters).
pub const MAX_NAME_LEN: usize = 100;
/// Longest token id.
pub const MAX_ID_LEN: usize = 128;

/// A token id chosen by the caller: 1-128 characters of `[A-Za-z0-9._-]`, starting with a
/// letter or digit. Ids are not secret; they name a registration in URLs and in status, so an
/// id that is itself a well-formed Loop token (a caller's mistake that would store a plaintext
/// token) is refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid token id: use 1-{MAX_ID_LEN} characters of letters, digits, '.', '_' or '-', starting with a letter or digit, and never a token"
)]
pub struct IdError;

impl TokenId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let mut bytes = s.bytes();
        let first_ok = matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric());
        if first_ok
            && s.len() <= MAX_ID_LEN
            && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            && crate::token::verify(s).is_err()
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
    /// A new owner (the registration is handed over).
    pub owner: Option<Owner>,
}

impl TokenPatch {
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.scopes.is_none()
            && self.expires_at_ms.is_none()
            && self.owner.is_none()
    }
}

/// Why a request body is refused before it reaches storage. Messages name a field, never its
/// value (a value may be a token sent in the wrong place).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("{0}")]
    Field(String),
    /// The scope at this index of `scopes` is malformed.
    #[error("scopes[{0}] is not {SCOPE_RULE}")]
    Scope(usize),
}

/// Unicode format characters (general category Cf, Unicode 16): bidi controls, zero-width
/// spaces and joiners, the byte-order mark, invisible operators, tags. They change how a name is
/// displayed without being seen, so a name could pass for another.
const FORMAT_CHARS: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),
    ('\u{0600}', '\u{0605}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{06DD}', '\u{06DD}'),
    ('\u{070F}', '\u{070F}'),
    ('\u{0890}', '\u{0891}'),
    ('\u{08E2}', '\u{08E2}'),
    ('\u{180E}', '\u{180E}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFF9}', '\u{FFFB}'),
    ('\u{110BD}', '\u{110BD}'),
    ('\u{110CD}', '\u{110CD}'),
    ('\u{13430}', '\u{1343F}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0001}', '\u{E0001}'),
    ('\u{E0020}', '\u{E007F}'),
];

/// Control (Cc), format (Cf), line and paragraph separator (Zl, Zp) characters.
fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}')
        || FORMAT_CHARS.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
}

fn validate_name(name: &str) -> Result<(), Invalid> {
    let n = name.chars().count();
    if n == 0 || n > MAX_NAME_LEN || name.chars().any(is_invisible) || name.trim() != name {
        return Err(Invalid::Field(format!(
            "name must be 1-{MAX_NAME_LEN} characters without leading or trailing spaces, and \
             without control or invisible formatting characters (bidi controls, zero-width \
             spaces or joiners)"
        )));
    }
    Ok(())
}

fn validate_owner(owner: &Owner) -> Result<(), Invalid> {
    for (field, v) in [
        ("cluster", &owner.cluster),
        ("namespace", &owner.namespace),
        ("name", &owner.name),
        ("uid", &owner.uid),
    ] {
        if v.is_empty() || v.len() > 253 || v.chars().any(char::is_control) {
            return Err(Invalid::Field(format!(
                "owner.{field} must be 1-253 printable characters"
            )));
        }
    }
    Ok(())
}

fn validate_scopes(scopes: &[String]) -> Result<ScopeSet, Invalid> {
    if scopes.is_empty() {
        return Err(Invalid::Field("scopes must list at least one scope".into()));
    }
    if let Some(i) = scopes.iter().position(|s| s.parse::<Scope>().is_err()) {
        return Err(Invalid::Scope(i));
    }
    ScopeSet::parse(scopes.iter().map(String::as_str)).map_err(|_| Invalid::Scope(0))
}

impl NewToken {
    /// Validate the body of `PUT /v1/tokens/{id}` (the catalogue check comes later).
    pub fn from_request(id: TokenId, req: RegisterRequest) -> Result<Self, Invalid> {
        validate_name(&req.name)?;
        let scopes = validate_scopes(&req.scopes)?;
        validate_owner(&req.owner)?;
        Ok(NewToken {
            id,
            hash: req.hash,
            name: req.name,
            scopes,
            owner: req.owner,
            expires_at_ms: req.expires_at.map(|t| t.as_millisecond()),
        })
    }
}

impl TokenPatch {
    /// Validate the body of `PATCH /v1/tokens/{id}`.
    pub fn from_request(req: PatchRequest) -> Result<Self, Invalid> {
        if let Some(n) = &req.name {
            validate_name(n)?;
        }
        let scopes = req.scopes.as_deref().map(validate_scopes).transpose()?;
        if let Some(o) = &req.owner {
            validate_owner(o)?;
        }
        Ok(TokenPatch {
            name: req.name,
            scopes,
            expires_at_ms: req.expires_at.map(|e| e.map(|t| t.as_millisecond())),
            owner: req.owner,
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

    /// The registration as the API shows it at `now_ms`: never its hash.
    pub fn view(&self, now_ms: i64) -> TokenView {
        TokenView {
            id: self.id.as_str().to_owned(),
            name: self.name.clone(),
            scopes: self.scopes.to_strings(),
            owner: self.owner.clone(),
            fingerprint: self.hash.fingerprint(),
            active: self.activity(now_ms) == Activity::Active,
            created_at: ts(self.created_at_ms),
            updated_at: ts(self.updated_at_ms),
            expires_at: self.expires_at_ms.map(ts),
            revoked_at: self.revoked_at_ms.map(ts),
            last_used_at: self.last_used_at_ms.map(ts),
            use_count: self.use_count,
        }
    }
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
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

/// Why a change is asked for and by which generation of its ApiToken: written into the audit
/// trail with the change, never used to decide anything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Change {
    pub reason: ChangeReason,
    pub generation: Option<i64>,
}

impl Change {
    /// Validate the `reason` and `generation` of a request (absent reason: `manual`).
    pub fn from_request(
        reason: Option<ChangeReason>,
        generation: Option<i64>,
    ) -> Result<Self, Invalid> {
        if generation.is_some_and(|g| g < 0) {
            return Err(Invalid::Field(
                "generation must be a whole number, 0 or more".into(),
            ));
        }
        Ok(Change {
            reason: reason.unwrap_or_default(),
            generation,
        })
    }
}

/// A registration's name, scopes, expiry and owner, before or after a change (an event shows
/// the first three; the owner is the event's own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub name: String,
    pub scopes: ScopeSet,
    pub expires_at_ms: Option<i64>,
    pub owner: Owner,
}

impl TokenRecord {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            name: self.name.clone(),
            scopes: self.scopes.clone(),
            expires_at_ms: self.expires_at_ms,
            owner: self.owner.clone(),
        }
    }
}

impl Snapshot {
    fn view(&self) -> EventState {
        EventState {
            name: self.name.clone(),
            scopes: self.scopes.to_strings(),
            expires_at: self.expires_at_ms.map(ts),
        }
    }
}

/// What a PATCH makes of a registration, and the kind of event it records: `None` when it
/// changes nothing (no write, no event). A PATCH that changes the name or the scopes is
/// `updated` (with the expiry's before and after too, if it changed as well); one that changes
/// only the expiry is `expiry_set`; a handover to another owner is `updated`.
pub fn patched(before: &TokenRecord, patch: &TokenPatch) -> Option<(Snapshot, EventKind)> {
    let now = before.snapshot();
    let after = Snapshot {
        name: patch.name.clone().unwrap_or_else(|| now.name.clone()),
        scopes: patch.scopes.clone().unwrap_or_else(|| now.scopes.clone()),
        expires_at_ms: patch.expires_at_ms.unwrap_or(now.expires_at_ms),
        owner: patch.owner.clone().unwrap_or_else(|| now.owner.clone()),
    };
    if after == now {
        None
    } else if after.name == now.name && after.scopes == now.scopes && after.owner == now.owner {
        Some((after, EventKind::ExpirySet))
    } else {
        Some((after, EventKind::Updated))
    }
}

/// One change of a registration, as written into the audit trail (the store numbers it).
/// It holds no hash: nothing in an event can tell what the token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub token_id: TokenId,
    pub owner: Owner,
    pub at_ms: i64,
    pub kind: EventKind,
    pub change: Change,
    pub before: Option<Snapshot>,
    pub after: Option<Snapshot>,
}

impl NewEvent {
    /// The event of a change from `before` to `after` (the registration as stored on either
    /// side; one of them at least).
    pub fn between(
        kind: EventKind,
        before: Option<&TokenRecord>,
        after: &TokenRecord,
        change: Change,
        at_ms: i64,
    ) -> Self {
        let after_state = (kind != EventKind::Revoked).then(|| after.snapshot());
        NewEvent {
            token_id: after.id.clone(),
            owner: after.owner.clone(),
            at_ms,
            kind,
            change,
            before: before.map(TokenRecord::snapshot),
            after: after_state,
        }
    }
}

/// A recorded event, numbered by the store in the order of commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEvent {
    pub id: i64,
    pub event: NewEvent,
}

impl TokenEvent {
    pub fn view(&self) -> TokenEventView {
        let e = &self.event;
        TokenEventView {
            id: self.id,
            token_id: e.token_id.as_str().to_owned(),
            owner: e.owner.clone(),
            at: ts(e.at_ms),
            kind: e.kind,
            reason: e.change.reason,
            generation: e.change.generation,
            before: e.before.as_ref().map(Snapshot::view),
            after: e.after.as_ref().map(Snapshot::view),
        }
    }
}

/// Whose events a query asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventScope {
    Token(TokenId),
    Owner(String),
}

/// A page of the audit trail: the events of `scope` with an id above `after`, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFilter {
    pub scope: EventScope,
    pub after: i64,
    pub limit: u32,
}

/// Filters of `GET /v1/tokens`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub owner_uid: Option<String>,
    pub namespace: Option<String>,
    pub cluster: Option<String>,
    pub active: Option<bool>,
    pub after: Option<String>,
    pub limit: u32,
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
        // A token is never an id (it would be stored and shown in plaintext); a near-miss
        // with a wrong checksum is an ordinary id.
        let token = crate::token::Token::mint().expect("a token");
        let e = TokenId::parse(token.expose()).expect_err("a token as an id");
        assert!(!e.to_string().contains(token.expose()));
        let mut tampered = token.expose().to_owned();
        tampered.pop();
        tampered.push(if token.expose().ends_with('a') {
            'b'
        } else {
            'a'
        });
        assert!(TokenId::parse(&tampered).is_ok());
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
        assert_eq!(
            TokenPatch::from_request(p).unwrap().expires_at_ms,
            Some(None)
        );
        let p: PatchRequest = serde_json::from_str(r#"{"name": "x"}"#).unwrap();
        let v = TokenPatch::from_request(p).unwrap();
        assert_eq!(v.expires_at_ms, None);
        assert!(!v.is_empty());
        let p: PatchRequest =
            serde_json::from_str(r#"{"expiresAt": "2030-01-01T00:00:00Z"}"#).unwrap();
        assert_eq!(
            TokenPatch::from_request(p).unwrap().expires_at_ms,
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
            NewToken::from_request(id.clone(), ok)
                .unwrap()
                .scopes
                .joined(),
            "orders:read"
        );
        let no_scopes: RegisterRequest = serde_json::from_str(&body("x", "[]")).unwrap();
        assert!(NewToken::from_request(id.clone(), no_scopes).is_err());
        let bad_scope: RegisterRequest = serde_json::from_str(&body("x", r#"["orders"]"#)).unwrap();
        assert!(matches!(
            NewToken::from_request(id.clone(), bad_scope),
            Err(Invalid::Scope(_))
        ));
        let long: RegisterRequest =
            serde_json::from_str(&body(&"n".repeat(101), r#"["a:read"]"#)).unwrap();
        assert!(NewToken::from_request(id.clone(), long).is_err());
        assert!(
            serde_json::from_str::<RegisterRequest>(
                &body("x", "[]").replace("}}", "},\"extra\":1}")
            )
            .is_err()
        );
    }

    fn record(name: &str, scopes: &[&str], expires_at_ms: Option<i64>) -> TokenRecord {
        TokenRecord {
            id: TokenId::parse("t").unwrap(),
            hash: TokenHash::of("x"),
            name: name.into(),
            scopes: ScopeSet::parse(scopes.iter().copied()).unwrap(),
            owner: Owner {
                cluster: "c".into(),
                namespace: "n".into(),
                name: "t".into(),
                uid: "u".into(),
            },
            created_at_ms: 0,
            updated_at_ms: 0,
            expires_at_ms,
            revoked_at_ms: None,
            last_used_at_ms: None,
            use_count: 0,
        }
    }

    #[test]
    fn a_patch_is_updated_expiry_set_or_nothing() {
        let before = record("n", &["a:read"], Some(5));
        let patch =
            |name: Option<&str>, scopes: Option<&[&str]>, exp: Option<Option<i64>>| TokenPatch {
                name: name.map(str::to_owned),
                scopes: scopes.map(|s| ScopeSet::parse(s.iter().copied()).unwrap()),
                expires_at_ms: exp,
                owner: None,
            };
        let kind = |p: TokenPatch| patched(&before, &p).map(|(_, k)| k);
        assert_eq!(kind(patch(None, None, None)), None);
        assert_eq!(
            kind(patch(Some("n"), Some(&["a:read"]), Some(Some(5)))),
            None
        );
        assert_eq!(kind(patch(Some("m"), None, None)), Some(EventKind::Updated));
        assert_eq!(
            kind(patch(None, Some(&["a:write"]), None)),
            Some(EventKind::Updated)
        );
        assert_eq!(
            kind(patch(None, None, Some(None))),
            Some(EventKind::ExpirySet)
        );
        let (after, k) = patched(&before, &patch(Some("m"), None, Some(Some(9)))).unwrap();
        assert_eq!(
            (k, after.name.as_str(), after.expires_at_ms),
            (EventKind::Updated, "m", Some(9))
        );
        // A handover to another owner is a change, recorded as `updated`.
        let mut handover = patch(None, None, None);
        handover.owner = Some(Owner {
            uid: "another".into(),
            ..before.owner.clone()
        });
        let (after, k) = patched(&before, &handover).unwrap();
        assert_eq!(
            (k, after.owner.uid.as_str()),
            (EventKind::Updated, "another")
        );
    }

    #[test]
    fn a_change_defaults_to_manual_and_refuses_a_negative_generation() {
        assert_eq!(Change::from_request(None, None), Ok(Change::default()));
        assert_eq!(Change::default().reason, ChangeReason::Manual);
        assert!(Change::from_request(Some(ChangeReason::Expiry), Some(-1)).is_err());
        assert_eq!(
            Change::from_request(Some(ChangeReason::Expiry), Some(0)),
            Ok(Change {
                reason: ChangeReason::Expiry,
                generation: Some(0)
            })
        );
    }

    #[test]
    fn events_of_a_revocation_have_no_after_and_of_a_registration_no_before() {
        let r = record("n", &["a:read"], None);
        let reg = NewEvent::between(EventKind::Registered, None, &r, Change::default(), 1);
        assert_eq!((reg.before.is_none(), reg.after.is_some()), (true, true));
        let rev = NewEvent::between(EventKind::Revoked, Some(&r), &r, Change::default(), 2);
        assert_eq!((rev.before.is_some(), rev.after.is_none()), (true, true));
        let view = serde_json::to_string(&TokenEvent { id: 1, event: rev }.view()).unwrap();
        assert!(!view.contains(&r.hash.as_str()[7..]), "{view}");
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
        let json = serde_json::to_string(&r.view(1)).unwrap();
        assert!(!json.contains(&h.as_str()[7..]), "{json}");
        assert!(json.contains(&h.fingerprint()));
    }
}
