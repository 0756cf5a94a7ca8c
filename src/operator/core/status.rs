//! Status and conditions (kstatus conventions), computed purely from a plan and an outcome.
//!
//! `Ready` is always present. `Reconciling` and `Stalled` appear only while true (abnormal-true
//! polarity, as kstatus expects). A condition keeps its `lastTransitionTime` while its status
//! does not change, so an unchanged situation produces an identical status and no write.

use jiff::Timestamp;

use crate::operator::core::error::StoreError;
use crate::operator::core::policy::Verdict;
use crate::operator::core::vocabulary::{Blocked, Desired, Plan};
use crate::operator::resource::crd::{ApiTokenStatus, Condition, PreviousToken};
use crate::operator::resource::names::condition::{READY, RECONCILING, STALLED, UNUSED};
use crate::operator::resource::names::reason;

/// How a reconcile ended.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// Nothing left to do.
    Converged,
    /// A human must act.
    Blocked(&'a Blocked),
    /// The store refused or failed.
    Store(&'a StoreError),
    /// The Kubernetes API failed (message only).
    Kubernetes(&'a str),
    /// Work remains (more passes needed).
    Pending,
    /// Deletion waits for revocations.
    Deleting(&'a StoreError),
    /// Outside the ApiTokenPolicies of its namespace.
    Policy(&'a Verdict),
}

fn ts(t: Timestamp) -> String {
    t.to_string()
}

/// A condition (type, status, reason, message).
type Cond = (&'static str, &'static str, &'static str, String);

/// `Ready=False` and `Stalled=True`, both with this reason and message: a human must act.
fn stalled(reason: &'static str, msg: String) -> Vec<Cond> {
    vec![
        (READY, "False", reason, msg.clone()),
        (STALLED, "True", reason, msg),
    ]
}

/// `Ready=False` and `Reconciling=True`: the operator is on it.
fn reconciling(reason: &'static str, msg: String) -> Vec<Cond> {
    vec![
        (READY, "False", reason, msg.clone()),
        (RECONCILING, "True", reason, msg),
    ]
}

/// The conditions of an outcome. `overdue`: the rotation due then has not happened yet (a
/// failure then says so first).
fn conditions_for(
    outcome: &Outcome<'_>,
    d: Option<&Desired>,
    plan: Option<&Plan>,
    overdue: Option<&Overdue<'_>>,
) -> Vec<Cond> {
    if let (Some(o), Some(failure)) = (overdue, passing_failure(outcome)) {
        return reconciling(reason::ROTATION_OVERDUE, o.message(&failure));
    }
    match outcome {
        Outcome::Converged => vec![(READY, "True", reason::ISSUED, converged_message(d, plan))],
        Outcome::Pending => reconciling(
            reason::PROGRESSING,
            "issuing or updating the token".to_owned(),
        ),
        Outcome::Blocked(Blocked::SecretConflict { secret }) => stalled(
            reason::SECRET_CONFLICT,
            format!(
                "Secret {secret} already exists and is not managed by this ApiToken; the operator will not overwrite it. \
                 Delete or rename that Secret, or set spec.secret.name to an unused name."
            ),
        ),
        Outcome::Blocked(Blocked::Expired { fingerprint, at }) => stalled(
            reason::EXPIRED,
            format!(
                "token {fingerprint} expired at {at} and is not renewed (spec.expiry.renew is false); apps using it are refused. \
                 Set a new loop.dev/rotate value to issue a new token."
            ),
        ),
        Outcome::Blocked(Blocked::RevokedUnused { fingerprint, since }) => stalled(
            reason::REVOKED_UNUSED,
            format!(
                "token {fingerprint} was revoked because it was not used since {since} (spec.unused.action Revoke); it was removed from its Secret and calls with it are refused. \
                 Set a new loop.dev/rotate value to issue a new token."
            ),
        ),
        Outcome::Blocked(Blocked::Spec(problem)) => {
            stalled(reason::INVALID_SPEC, format!("{problem}; fix the spec"))
        }
        Outcome::Store(StoreError::Rejected { code, message, .. }) if code == "unknown_scope" => {
            stalled(
                reason::UNKNOWN_SCOPE,
                format!("the Loop token store refused the scopes: {message}. Fix spec.scopes."),
            )
        }
        Outcome::Store(e @ StoreError::Rejected { .. }) => {
            stalled(reason::STORE_REJECTED, e.to_string())
        }
        Outcome::Store(e @ StoreError::Unauthorized { .. }) => {
            stalled(reason::STORE_CREDENTIAL_REJECTED, e.to_string())
        }
        Outcome::Store(e @ StoreError::Unavailable(_)) => {
            reconciling(reason::STORE_UNAVAILABLE, format!("{e}; retrying"))
        }
        Outcome::Kubernetes(e) => reconciling(
            reason::KUBERNETES_ERROR,
            format!("Kubernetes API error: {e}; retrying"),
        ),
        Outcome::Deleting(e) => reconciling(
            reason::REVOCATION_PENDING,
            format!(
                "deletion waits until every token of this ApiToken is revoked in the Loop token store: {e}; retrying. \
                 If the store is gone for good, annotate the ApiToken with loop.dev/abandon-revocation=<reason> to let it go without revoking"
            ),
        ),
        Outcome::Policy(v) => stalled(
            reason::POLICY_VIOLATION,
            format!(
                "{}; nothing new is issued until the ApiToken complies, and {}",
                v.message(),
                if v.revoke {
                    "its tokens are revoked (enforcement Revoke)"
                } else {
                    "its current token keeps working (enforcement Report)"
                }
            ),
        ),
    }
}

/// `Ready`'s message when issued: the token, where it is, its scopes, and any previous token
/// still in its grace period.
fn converged_message(d: Option<&Desired>, plan: Option<&Plan>) -> String {
    let secret = d.map_or("its Secret", |d| d.secret_name.as_str());
    let mut msg = match plan.and_then(|p| p.current.as_ref()) {
        Some(c) => format!(
            "token {} is in Secret {secret} and active in the Loop token store with scopes {}",
            c.fingerprint,
            c.scopes.join(" ")
        ),
        None => format!("token is in Secret {secret}"),
    };
    if let Some((d, p)) = d.zip(plan)
        && d.rotation_request.is_some()
        && d.rotation_request != p.handled_rotation
    {
        msg.push_str(&format!(
            "; loop.dev/rotate {:?} is not later than {:?}, the value the current token answered, so it does not rotate (a value that is not a timestamp always does)",
            d.rotation_request.as_deref().unwrap_or_default(),
            p.handled_rotation.as_deref().unwrap_or_default()
        ));
    }
    if let Some(p) = plan.filter(|p| !p.in_grace.is_empty()) {
        let list: Vec<String> = p
            .in_grace
            .iter()
            .map(|g| format!("{} until {}", g.fingerprint, g.until))
            .collect();
        msg.push_str(&format!(
            "; previous token still active: {}",
            list.join(", ")
        ));
    }
    msg
}

/// What failed, when it is a failure that retrying may cure (the store or the API server is
/// unavailable): then a rotation that is due is overdue, not refused.
pub fn passing_failure(outcome: &Outcome<'_>) -> Option<String> {
    match outcome {
        Outcome::Store(e @ StoreError::Unavailable(_)) => Some(e.to_string()),
        Outcome::Kubernetes(e) => Some(format!("Kubernetes API error: {e}")),
        _ => None,
    }
}

/// A rotation that was due and has not happened, as the last status recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overdue<'s> {
    pub due: &'s str,
    pub expires: Option<&'s str>,
}

impl Overdue<'_> {
    fn message(&self, failure: &str) -> String {
        let expiry = self.expires.map_or_else(String::new, |e| {
            format!("; the current token expires at {e}")
        });
        format!(
            "the rotation due at {} has not happened: {failure}{expiry}; retrying",
            self.due
        )
    }
}

/// The rotation `s` says was due by `now`, if any.
pub fn overdue(s: &ApiTokenStatus, now: Timestamp) -> Option<Overdue<'_>> {
    let due = s.next_rotation_at.as_deref()?;
    let at: Timestamp = due.parse().ok()?;
    (at <= now).then_some(Overdue {
        due,
        expires: s.expires_at.as_deref(),
    })
}

/// The status to write. Token fields come from the plan when it knows the current token, and
/// are otherwise kept from `old` (a failed pass does not erase what is known).
pub fn compute(
    old: &ApiTokenStatus,
    outcome: &Outcome<'_>,
    d: Option<&Desired>,
    plan: Option<&Plan>,
    generation: Option<i64>,
    now: Timestamp,
) -> ApiTokenStatus {
    let mut conds = conditions_for(outcome, d, plan, overdue(old, now).as_ref());
    conds.extend(unused_condition(old, outcome, plan));
    let conditions = conds
        .into_iter()
        .map(|(type_, status, reason, message)| {
            let since = old
                .condition(type_)
                .filter(|c| c.status == status)
                .map_or_else(|| ts(now), |c| c.last_transition_time.clone());
            Condition {
                type_: type_.to_owned(),
                status: status.to_owned(),
                reason: reason.to_owned(),
                message,
                last_transition_time: since,
                observed_generation: generation,
            }
        })
        .collect();
    let mut s = ApiTokenStatus {
        observed_generation: generation,
        conditions,
        ..old.clone()
    };
    if let Outcome::Blocked(Blocked::Expired { .. }) = outcome {
        // Nothing is due: the token stays expired until a new rotate value.
        s.next_rotation_at = None;
    }
    if let Some(p) = plan
        && let Some(c) = &p.current
    {
        s.token_id = Some(c.id.clone());
        s.fingerprint = Some(c.fingerprint.clone());
        s.issued_at = p.issued_at.map(ts);
        s.expires_at = p.expires_at.map(ts);
        s.next_rotation_at = p.next_rotation.map(|(at, _)| ts(at));
        s.last_rotation_request.clone_from(&p.handled_rotation);
        s.previous_tokens = previous_tokens(old, p);
        s.last_used_at = c.last_used_at.map(ts);
        s.use_count = Some(c.use_count);
        s.secret_name = d.map(|d| d.secret_name.clone());
    }
    s
}

/// `Unused=True` while the plan finds the current token unused (`spec.unused.action: Warn`).
/// A failed pass, which planned nothing, keeps what the last status said; a blocked one drops
/// it.
fn unused_condition(
    old: &ApiTokenStatus,
    outcome: &Outcome<'_>,
    plan: Option<&Plan>,
) -> Option<Cond> {
    match (outcome, plan) {
        (Outcome::Converged, Some(p)) => p.unused.as_ref().map(|idle| {
            (
                UNUSED,
                "True",
                reason::IDLE,
                format!(
                    "token {} has not been used since {}, longer than spec.unused.after ({:#}); \
                     if nothing needs it, delete the ApiToken or set spec.unused.action: Revoke",
                    idle.fingerprint, idle.since, idle.after
                ),
            )
        }),
        (Outcome::Blocked(_), _) | (Outcome::Converged, None) => None,
        _ => old
            .true_condition(UNUSED)
            .map(|c| (UNUSED, "True", reason::IDLE, c.message.clone())),
    }
}

/// `status.previousTokens` from the plan; `stillInUse`, once said, stays for that token.
fn previous_tokens(old: &ApiTokenStatus, p: &Plan) -> Vec<PreviousToken> {
    p.in_grace
        .iter()
        .map(|g| PreviousToken {
            token_id: g.id.clone(),
            fingerprint: g.fingerprint.clone(),
            expires_at: ts(g.until),
            last_used_at: g.last_used_at.map(ts),
            still_in_use: g.in_use_half_way
                || old
                    .previous_tokens
                    .iter()
                    .any(|o| o.token_id == g.id && o.still_in_use),
        })
        .collect()
}

/// Where an ApiToken stands, as its conditions say (kstatus: `Stalled` wins over the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Readiness {
    Ready,
    Reconciling,
    Stalled,
}

impl Readiness {
    pub const ALL: [Readiness; 3] = [Readiness::Ready, Readiness::Reconciling, Readiness::Stalled];

    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::Ready => "ready",
            Readiness::Reconciling => "reconciling",
            Readiness::Stalled => "stalled",
        }
    }
}

/// Every field of `status`, as the CRD names them (a test checks the list against the schema).
const STATUS_FIELDS: &[&str] = &[
    "observedGeneration",
    "conditions",
    "tokenId",
    "fingerprint",
    "issuedAt",
    "expiresAt",
    "nextRotationAt",
    "secretName",
    "lastRotationRequest",
    "previousTokens",
    "lastUsedAt",
    "useCount",
    "rollout",
];

/// The JSON merge patch (RFC 7386) of the status subresource that makes it exactly `new`: each
/// field `new` has, and `null` for each it leaves out, so a field the operator set before and
/// leaves out now is removed whatever the watch cache showed. The status has no nested object
/// a merge would combine (its lists are replaced whole).
///
/// A merge patch, not server-side apply: it gives the same status, and the API server does
/// not compute a structured merge of the whole object for it; bulk creation ran 23 % faster
/// with it (docs/benchmarks.md, "Bulk as a fraction of the floor").
pub fn replacement_patch(new: &ApiTokenStatus) -> Result<serde_json::Value, serde_json::Error> {
    let mut fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_value(serde_json::to_value(new)?)?;
    for name in STATUS_FIELDS {
        fields.entry(*name).or_insert(serde_json::Value::Null);
    }
    Ok(serde_json::json!({ "status": fields }))
}

/// The readiness a status states.
pub fn readiness(s: &ApiTokenStatus) -> Readiness {
    let has = |t: &str| s.is_true(t);
    if has(STALLED) {
        Readiness::Stalled
    } else if has(READY) {
        Readiness::Ready
    } else {
        Readiness::Reconciling
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::core::vocabulary::RegObs;

    #[test]
    fn the_status_patch_names_every_field_of_the_schema() {
        use kube::CustomResourceExt;
        let crd = crate::operator::resource::crd::ApiToken::crd();
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| s.properties.as_ref())
            .and_then(|p| p.get("status"))
            .and_then(|s| s.properties.as_ref())
            .expect("the CRD has status properties");
        // A merge patch would merge an object field with what is there, not replace it.
        for (name, field) in schema {
            let object = field.type_.as_deref() == Some("object");
            assert!(
                !object,
                "status.{name} is an object: replacement_patch would merge it"
            );
        }
        let mut in_schema: Vec<&str> = schema.keys().map(String::as_str).collect();
        let mut listed = STATUS_FIELDS.to_vec();
        in_schema.sort_unstable();
        listed.sort_unstable();
        assert_eq!(listed, in_schema);
    }

    #[test]
    fn the_status_patch_removes_what_the_new_status_leaves_out() {
        let new = ApiTokenStatus {
            observed_generation: Some(3),
            fingerprint: Some("1f352a8bc0f5".into()),
            ..ApiTokenStatus::default()
        };
        let patch = replacement_patch(&new).expect("a status serialises");
        let status = &patch["status"];
        assert_eq!(status["observedGeneration"], 3);
        assert_eq!(status["fingerprint"], "1f352a8bc0f5");
        for gone in [
            "tokenId",
            "conditions",
            "previousTokens",
            "rollout",
            "useCount",
        ] {
            assert!(status[gone].is_null(), "{gone} in {patch}");
            assert!(
                status.as_object().is_some_and(|m| m.contains_key(gone)),
                "{gone} must be sent as null to be removed: {patch}"
            );
        }
        assert_eq!(patch.as_object().map(|m| m.len()), Some(1), "{patch}");
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn plan_with_current() -> Plan {
        Plan {
            actions: vec![],
            blocked: None,
            current: Some(RegObs {
                id: "id-1".into(),
                fingerprint: "abcdef012345".into(),
                name: "n".into(),
                scopes: vec!["orders:read".into()],
                expires_at: None,
                revoked: false,
                last_used_at: None,
                use_count: 4,
                created_at: now(),
            }),
            in_grace: vec![],
            unused: None,
            handled_rotation: Some("r1".into()),
            issued_at: Some(now()),
            expires_at: None,
            next_rotation: None,
            wake_at: None,
        }
    }

    #[test]
    fn converged_is_ready_with_token_fields() {
        let s = compute(
            &ApiTokenStatus::default(),
            &Outcome::Converged,
            None,
            Some(&plan_with_current()),
            Some(3),
            now(),
        );
        assert_eq!(readiness(&s), Readiness::Ready);
        assert_eq!(s.conditions.len(), 1);
        assert_eq!(
            (s.token_id.as_deref(), s.fingerprint.as_deref()),
            (Some("id-1"), Some("abcdef012345"))
        );
        assert_eq!(
            (
                s.observed_generation,
                s.use_count,
                s.last_rotation_request.as_deref()
            ),
            (Some(3), Some(4), Some("r1"))
        );
    }

    #[test]
    fn an_unchanged_situation_gives_an_identical_status() {
        let p = plan_with_current();
        let first = compute(
            &ApiTokenStatus::default(),
            &Outcome::Converged,
            None,
            Some(&p),
            Some(1),
            now(),
        );
        let later = Timestamp::from_second(1_800_000_999).unwrap();
        let second = compute(&first, &Outcome::Converged, None, Some(&p), Some(1), later);
        assert_eq!(
            first, second,
            "lastTransitionTime is kept, so nothing is written"
        );
    }

    #[test]
    fn stalled_and_reconciling_say_why() {
        let unknown = StoreError::Rejected {
            status: 422,
            code: "unknown_scope".into(),
            message: "unknown scope \"widgets:read\"".into(),
        };
        let s = compute(
            &ApiTokenStatus::default(),
            &Outcome::Store(&unknown),
            None,
            None,
            Some(1),
            now(),
        );
        assert_eq!(readiness(&s), Readiness::Stalled);
        let stalled = s.conditions.iter().find(|c| c.type_ == STALLED).unwrap();
        assert_eq!(stalled.reason, reason::UNKNOWN_SCOPE);
        assert!(
            stalled.message.contains("widgets:read") && stalled.message.contains("Fix spec.scopes")
        );

        let down = StoreError::Unavailable("connection failed".into());
        let s2 = compute(&s, &Outcome::Store(&down), None, None, Some(1), now());
        assert_eq!(readiness(&s2), Readiness::Reconciling);
        assert!(
            s2.conditions.iter().all(|c| c.type_ != STALLED),
            "Stalled disappears once not true"
        );

        let conflict = Blocked::SecretConflict {
            secret: "taken".into(),
        };
        let s3 = compute(
            &ApiTokenStatus::default(),
            &Outcome::Blocked(&conflict),
            None,
            None,
            Some(1),
            now(),
        );
        let c = s3.conditions.iter().find(|c| c.type_ == STALLED).unwrap();
        assert!(
            c.message.contains("Secret taken already exists"),
            "{}",
            c.message
        );
    }

    #[test]
    fn an_outage_when_a_rotation_is_due_says_the_rotation_is_overdue() {
        let mut p = plan_with_current();
        let due = Timestamp::from_second(1_800_000_100).unwrap();
        p.next_rotation = Some((due, crate::operator::core::schedule::Due::Scheduled));
        p.expires_at = Some(Timestamp::from_second(1_800_009_000).unwrap());
        let ok = compute(
            &ApiTokenStatus::default(),
            &Outcome::Converged,
            None,
            Some(&p),
            Some(1),
            now(),
        );
        assert_eq!(ok.next_rotation_at.as_deref(), Some("2027-01-15T08:01:40Z"));
        let down = StoreError::Unavailable("connection failed".into());
        // Before it is due: an ordinary outage.
        let s = compute(&ok, &Outcome::Store(&down), None, None, Some(1), now());
        let ready = s.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(ready.reason, reason::STORE_UNAVAILABLE);
        // Once due: overdue, with when it was due, what fails and when the token expires.
        let later = Timestamp::from_second(1_800_000_200).unwrap();
        let s = compute(&ok, &Outcome::Store(&down), None, None, Some(1), later);
        let ready = s.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(ready.reason, reason::ROTATION_OVERDUE);
        assert_eq!(
            ready.message,
            "the rotation due at 2027-01-15T08:01:40Z has not happened: the Loop token store is unavailable: connection failed; the current token expires at 2027-01-15T10:30:00Z; retrying"
        );
        assert_eq!(readiness(&s), Readiness::Reconciling);
        // A refusal is not an outage: it stalls as before.
        let refused = StoreError::Unauthorized { status: 401 };
        let s = compute(&ok, &Outcome::Store(&refused), None, None, Some(1), later);
        assert_eq!(readiness(&s), Readiness::Stalled);
    }

    #[test]
    fn a_policy_violation_is_stalled_keeps_the_token_and_says_what_happens_to_it() {
        use crate::operator::core::policy::Violation;
        let ok = compute(
            &ApiTokenStatus::default(),
            &Outcome::Converged,
            None,
            Some(&plan_with_current()),
            Some(1),
            now(),
        );
        let mut v = Verdict {
            violations: vec![Violation::Scopes {
                scopes: vec!["payments:read".into()],
                ns: "team-a".into(),
                by: vec!["team-a".into()],
            }],
            revoke: false,
        };
        let s = compute(&ok, &Outcome::Policy(&v), None, None, Some(1), now());
        assert_eq!(readiness(&s), Readiness::Stalled);
        assert_eq!(
            s.fingerprint.as_deref(),
            Some("abcdef012345"),
            "the token stays known"
        );
        let c = s.conditions.iter().find(|c| c.type_ == STALLED).unwrap();
        assert_eq!(c.reason, reason::POLICY_VIOLATION);
        assert_eq!(
            c.message,
            "scope payments:read not allowed in namespace team-a by ApiTokenPolicy team-a; \
             nothing new is issued until the ApiToken complies, and its current token keeps working (enforcement Report)"
        );
        v.revoke = true;
        let s = compute(&ok, &Outcome::Policy(&v), None, None, Some(1), now());
        let c = s.conditions.iter().find(|c| c.type_ == STALLED).unwrap();
        assert!(
            c.message
                .ends_with("its tokens are revoked (enforcement Revoke)"),
            "{}",
            c.message
        );
    }

    #[test]
    fn a_failed_pass_keeps_the_known_token() {
        let ok = compute(
            &ApiTokenStatus::default(),
            &Outcome::Converged,
            None,
            Some(&plan_with_current()),
            Some(1),
            now(),
        );
        let down = StoreError::Unavailable("x".into());
        let s = compute(&ok, &Outcome::Store(&down), None, None, Some(2), now());
        assert_eq!(s.token_id.as_deref(), Some("id-1"));
        assert_eq!(s.observed_generation, Some(2));
    }

    #[test]
    fn unused_is_a_condition_of_its_own_that_keeps_through_a_failed_pass() {
        use crate::operator::core::vocabulary::Idle;
        let mut p = plan_with_current();
        p.unused = Some(Idle {
            fingerprint: "abcdef012345".into(),
            since: now(),
            after: jiff::SignedDuration::from_hours(720),
        });
        let s = compute(
            &ApiTokenStatus::default(),
            &Outcome::Converged,
            None,
            Some(&p),
            Some(1),
            now(),
        );
        assert_eq!(
            readiness(&s),
            Readiness::Ready,
            "an unused token is still ready"
        );
        let c = s.conditions.iter().find(|c| c.type_ == UNUSED).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", reason::IDLE)
        );
        assert_eq!(
            c.message,
            "token abcdef012345 has not been used since 2027-01-15T08:00:00Z, longer than spec.unused.after (720h); \
             if nothing needs it, delete the ApiToken or set spec.unused.action: Revoke"
        );
        // The same a day later: nothing to write.
        let later = Timestamp::from_second(1_800_086_400).unwrap();
        assert_eq!(
            compute(&s, &Outcome::Converged, None, Some(&p), Some(1), later),
            s
        );
        let down = StoreError::Unavailable("x".into());
        let s2 = compute(&s, &Outcome::Store(&down), None, None, Some(1), later);
        assert!(s2.conditions.iter().any(|c| c.type_ == UNUSED));
        // Used again: gone.
        let s3 = compute(
            &s,
            &Outcome::Converged,
            None,
            Some(&plan_with_current()),
            Some(1),
            later,
        );
        assert!(s3.conditions.iter().all(|c| c.type_ != UNUSED));
    }

    #[test]
    fn revoked_unused_is_stalled_and_says_how_to_get_a_new_token() {
        let b = Blocked::RevokedUnused {
            fingerprint: "abcdef012345".into(),
            since: now(),
        };
        let s = compute(
            &ApiTokenStatus::default(),
            &Outcome::Blocked(&b),
            None,
            None,
            Some(1),
            now(),
        );
        assert_eq!(readiness(&s), Readiness::Stalled);
        let ready = s.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(ready.reason, reason::REVOKED_UNUSED);
        assert!(
            ready.message.contains("abcdef012345")
                && ready
                    .message
                    .contains("not used since 2027-01-15T08:00:00Z")
                && ready
                    .message
                    .ends_with("Set a new loop.dev/rotate value to issue a new token."),
            "{}",
            ready.message
        );
    }

    #[test]
    fn previous_tokens_show_their_use_and_still_in_use_stays_said() {
        use crate::operator::core::vocabulary::Grace;
        let mut p = plan_with_current();
        let g = Grace {
            id: "id-0".into(),
            fingerprint: "000000000000".into(),
            until: Timestamp::from_second(1_800_003_600).unwrap(),
            last_used_at: Some(now()),
            in_use_half_way: true,
        };
        p.in_grace = vec![g.clone()];
        let s = compute(
            &ApiTokenStatus::default(),
            &Outcome::Converged,
            None,
            Some(&p),
            Some(1),
            now(),
        );
        assert_eq!(
            s.previous_tokens,
            vec![PreviousToken {
                token_id: "id-0".into(),
                fingerprint: "000000000000".into(),
                expires_at: "2027-01-15T09:00:00Z".into(),
                last_used_at: Some("2027-01-15T08:00:00Z".into()),
                still_in_use: true,
            }]
        );
        p.in_grace = vec![Grace {
            in_use_half_way: false,
            ..g
        }];
        let s2 = compute(&s, &Outcome::Converged, None, Some(&p), Some(1), now());
        assert!(s2.previous_tokens[0].still_in_use);
    }
}
