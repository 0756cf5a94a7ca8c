//! The decision core: what to do for one ApiToken, given what was observed. Pure: no I/O, no
//! clock (the caller passes `now`), no randomness (the shell mints).
//!
//! The durable record of which token is current is the operator's Secret: its data holds the
//! token, its annotations name the store id of that token, the token it replaced, when it was
//! issued and which `loop.dev/rotate` value it answered. The shell writes all of that in one
//! server-side apply, so it is never half-written. From that record and the store's
//! registrations for this resource (by owner uid), [`plan`] decides:
//!
//! - **issue** a token when there is no usable current one (first issue, Secret deleted or
//!   edited by hand, token revoked behind our back) or a rotation is pending. The shell mints,
//!   registers the hash, then writes the Secret (register first, so the Secret never holds an
//!   unregistered token);
//! - **update** the current registration in place when `displayName` or `scopes` differ;
//! - **expire** the token the current one replaced, at `issuedAt + gracePeriod` (the store then
//!   stops answering for it on its own, even while the operator is down), and **revoke** it once
//!   that time has passed (or at once with a grace period of zero);
//! - **revoke** every other active registration of this resource: orphans of a crash between
//!   registering and writing the Secret.
//!
//! A Secret of the same name that the operator does not own is never touched (promise 7); the
//! plan then only reports the conflict.

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::crd::ApiToken;

/// Why a spec cannot be acted on (the schema prevents these; this is defence in depth).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecProblem {
    #[error("spec.rotation.gracePeriod {0:?} is not a duration such as 1h, 30m or 0s")]
    GracePeriod(String),
    #[error("spec.scopes is empty")]
    NoScopes,
}

/// What the spec asks for, with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub secret_name: String,
    pub secret_key: String,
    pub display_name: String,
    /// Sorted, without duplicates.
    pub scopes: Vec<String>,
    pub grace: SignedDuration,
    /// The current `loop.dev/rotate` value, if any.
    pub rotation_request: Option<String>,
}

/// Parse a Go-style duration (`1h30m`, `90s`, `0s`, `0`).
pub fn parse_grace(s: &str) -> Result<SignedDuration, SpecProblem> {
    if s == "0" {
        return Ok(SignedDuration::ZERO);
    }
    match s.parse::<SignedDuration>() {
        Ok(d) if !d.is_negative() => Ok(d),
        _ => Err(SpecProblem::GracePeriod(s.to_owned())),
    }
}

/// Apply defaults to a spec.
pub fn desired(
    token: &ApiToken,
    name: &str,
    rotation_request: Option<&str>,
) -> Result<Desired, SpecProblem> {
    let spec = &token.spec;
    let scopes: BTreeSet<&str> = spec.scopes.iter().map(String::as_str).collect();
    if scopes.is_empty() {
        return Err(SpecProblem::NoScopes);
    }
    Ok(Desired {
        secret_name: spec.secret.name.clone().unwrap_or_else(|| name.to_owned()),
        secret_key: spec.secret.key.clone(),
        display_name: spec.display_name.clone().unwrap_or_else(|| name.to_owned()),
        scopes: scopes.into_iter().map(str::to_owned).collect(),
        grace: parse_grace(&spec.rotation.grace_period)?,
        rotation_request: rotation_request.map(str::to_owned),
    })
}

/// The target Secret as observed (the shell computes the fingerprint; the plan never sees a
/// token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretObs {
    /// Controlled by this ApiToken (owner reference with its uid).
    pub owned: bool,
    /// Annotation: store id of the token in the Secret.
    pub token_id: Option<String>,
    /// Annotation: the token the current one replaced.
    pub previous_token_id: Option<String>,
    /// Annotation: when the current token was written.
    pub issued_at: Option<Timestamp>,
    /// Annotation: the `loop.dev/rotate` value the current token answered.
    pub rotation_request: Option<String>,
    /// Fingerprint of a well-formed token under the desired key; `None` when the key is missing
    /// or does not hold a well-formed token.
    pub fingerprint: Option<String>,
    /// Labels, key and annotations are as the operator writes them.
    pub shape_ok: bool,
}

/// A store registration of this resource (from `GET /v1/tokens?ownerUid=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegObs {
    pub id: String,
    pub fingerprint: String,
    pub name: String,
    /// Sorted.
    pub scopes: Vec<String>,
    pub expires_at: Option<Timestamp>,
    pub revoked: bool,
    pub last_used_at: Option<Timestamp>,
    pub use_count: i64,
}

impl RegObs {
    fn active(&self, now: Timestamp) -> bool {
        !self.revoked && self.expires_at.is_none_or(|e| e > now)
    }
}

/// Why a token is issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueReason {
    /// No token yet.
    First,
    /// The `loop.dev/rotate` annotation changed.
    Rotation,
    /// The Secret was deleted, or edited so that it no longer holds the registered token.
    SecretLost,
    /// The current token was revoked or expired in the store by someone else.
    RevokedElsewhere,
}

/// Why a registration is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    /// Its grace period is over (or was zero).
    GraceOver,
    /// Not in the Secret and not in a grace period: left by an interrupted issue.
    Orphan,
    /// The ApiToken is being deleted.
    Deleted,
}

/// One step, in the order the shell must run them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Mint, register, write the Secret recording `previous` and the rotation value.
    Issue {
        previous: Option<String>,
        reason: IssueReason,
    },
    /// The store lost the Secret's token: register it again (same token, same id).
    Reregister {
        id: String,
    },
    /// Write the Secret again with the token it holds (labels, key or annotations were edited).
    RewriteSecret,
    /// Bring the current registration's name and scopes in line with the spec, and clear an
    /// expiry it must not have.
    Update {
        id: String,
        name: String,
        scopes: Vec<String>,
        clear_expiry: bool,
    },
    /// Start a previous token's grace period: it stops working at `at`.
    Expire {
        id: String,
        at: Timestamp,
    },
    Revoke {
        id: String,
        reason: RevokeReason,
    },
}

/// Why the resource cannot make progress without a human.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// A Secret of that name exists and is not ours.
    SecretConflict {
        secret: String,
    },
    Spec(SpecProblem),
}

/// The outcome of planning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub blocked: Option<Blocked>,
    /// The current token, when there is one and no issue is pending.
    pub current: Option<RegObs>,
    /// Tokens in their grace period: (id, fingerprint, expires at).
    pub in_grace: Vec<(String, String, Timestamp)>,
    /// The rotation value the current token answered.
    pub handled_rotation: Option<String>,
    /// When the current token was issued.
    pub issued_at: Option<Timestamp>,
    /// Come back then even if nothing changes (the next grace period ending).
    pub wake_at: Option<Timestamp>,
}

/// Everything the plan needs.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    pub desired: &'a Desired,
    pub secret: Option<&'a SecretObs>,
    pub registrations: &'a [RegObs],
    /// `status.tokenId` as last written (a hint for which token a lost Secret held).
    pub status_token_id: Option<&'a str>,
    pub now: Timestamp,
}

/// Decide what to do.
pub fn plan(o: &Observed<'_>) -> Plan {
    let mut p = Plan {
        actions: Vec::new(),
        blocked: None,
        current: None,
        in_grace: Vec::new(),
        handled_rotation: None,
        issued_at: None,
        wake_at: None,
    };
    if let Some(s) = o.secret
        && !s.owned
    {
        // Never clobber. Registrations are left alone: apps may still use them.
        p.blocked = Some(Blocked::SecretConflict {
            secret: o.desired.secret_name.clone(),
        });
        return p;
    }
    let issuing_previous = match plan_current(o, &mut p) {
        Some(Issuing(previous)) => previous,
        // The Secret's token must be registered again first; the rest waits for that.
        None => return p,
    };
    plan_others(o, &mut p, issuing_previous.as_deref());
    p
}

impl Observed<'_> {
    fn find(&self, id: &str) -> Option<&RegObs> {
        self.registrations.iter().find(|r| r.id == id)
    }
}

/// An issue is planned (with the id of the token that keeps its grace period), or not (`None`
/// inside).
struct Issuing(Option<String>);

/// The current token: in our Secret, registered with the same fingerprint, still active.
/// Keep it (repairing the Secret and the registration as needed), rotate it, or issue a new one.
/// `None` when the Secret's token must be registered again.
fn plan_current(o: &Observed<'_>, p: &mut Plan) -> Option<Issuing> {
    let d = o.desired;
    let secret = o.secret;
    let named = secret.and_then(|s| s.token_id.as_deref().zip(s.fingerprint.as_deref()));
    let current = named.and_then(|(id, fp)| {
        o.find(id)
            .filter(|r| r.fingerprint == fp && r.active(o.now))
    });
    match (current, named) {
        (Some(cur), _) => {
            let s = secret.map(|s| (s.rotation_request.clone(), s.issued_at, s.shape_ok));
            let (handled, issued_at, shape_ok) = s.unwrap_or((None, None, false));
            let rotation_pending = d.rotation_request.is_some() && d.rotation_request != handled;
            if rotation_pending {
                p.actions.push(Action::Issue {
                    previous: Some(cur.id.clone()),
                    reason: IssueReason::Rotation,
                });
                return Some(Issuing(Some(cur.id.clone())));
            }
            p.current = Some(cur.clone());
            p.handled_rotation = handled;
            p.issued_at = issued_at;
            if !shape_ok {
                p.actions.push(Action::RewriteSecret);
            }
            if cur.name != d.display_name || cur.scopes != d.scopes || cur.expires_at.is_some() {
                p.actions.push(Action::Update {
                    id: cur.id.clone(),
                    name: d.display_name.clone(),
                    scopes: d.scopes.clone(),
                    clear_expiry: cur.expires_at.is_some(),
                });
            }
            Some(Issuing(None))
        }
        (None, Some((id, _))) if o.find(id).is_none() => {
            // Our Secret holds a well-formed token the store does not know (its data was lost):
            // register it again rather than break every app that uses it.
            p.actions.push(Action::Reregister { id: id.to_owned() });
            None
        }
        (None, _) => {
            let previous = surviving_previous(o);
            p.actions.push(Action::Issue {
                previous: previous.clone(),
                reason: issue_reason(o),
            });
            Some(Issuing(previous))
        }
    }
}

/// Why a token must be issued when there is no usable current one.
fn issue_reason(o: &Observed<'_>) -> IssueReason {
    match (o.secret, o.status_token_id) {
        (None, None) => IssueReason::First,
        (Some(s), _)
            if s.token_id
                .as_deref()
                .and_then(|id| o.find(id))
                .is_some_and(|r| !r.active(o.now)) =>
        {
            IssueReason::RevokedElsewhere
        }
        (Some(s), None) if s.token_id.is_none() => IssueReason::First,
        _ => IssueReason::SecretLost,
    }
}

/// The token a lost or unusable Secret held (by its annotation, else by status), which keeps
/// its grace period through the new issue: apps may still have it.
fn surviving_previous(o: &Observed<'_>) -> Option<String> {
    o.secret
        .and_then(|s| s.token_id.as_deref())
        .or(o.status_token_id)
        .and_then(|id| o.find(id))
        .filter(|r| r.active(o.now) && r.expires_at.is_none())
        .map(|r| r.id.clone())
}

/// Every other registration: in grace, grace over, the replaced one, or an orphan.
fn plan_others(o: &Observed<'_>, p: &mut Plan, issuing_previous: Option<&str>) {
    let current_id = p.current.as_ref().map(|c| c.id.clone());
    let current_id = current_id.as_deref();
    let replaced = o.secret.and_then(|s| s.previous_token_id.as_deref());
    for r in o
        .registrations
        .iter()
        .filter(|r| !r.revoked && Some(r.id.as_str()) != current_id)
    {
        match r.expires_at {
            Some(at) if at <= o.now => p.actions.push(Action::Revoke {
                id: r.id.clone(),
                reason: RevokeReason::GraceOver,
            }),
            Some(at) => {
                p.in_grace.push((r.id.clone(), r.fingerprint.clone(), at));
                p.wake_at = Some(p.wake_at.map_or(at, |w| w.min(at)));
            }
            None if issuing_previous == Some(r.id.as_str()) => {
                p.actions
                    .push(grace_action(r, o.now, o.desired.grace, o.now));
            }
            None if current_id.is_some() && replaced == Some(r.id.as_str()) => {
                // Replaced by the current token, but its grace period was never started (a
                // crash right after the Secret was written): start it from the issue time.
                let since = o.secret.and_then(|s| s.issued_at).unwrap_or(o.now);
                p.actions
                    .push(grace_action(r, since, o.desired.grace, o.now));
            }
            None => p.actions.push(Action::Revoke {
                id: r.id.clone(),
                reason: RevokeReason::Orphan,
            }),
        }
    }
    p.in_grace.sort_by_key(|g| g.2);
}

/// Start the grace period of `r` from `since`, or revoke it when that period is zero or over.
fn grace_action(r: &RegObs, since: Timestamp, grace: SignedDuration, now: Timestamp) -> Action {
    match since.checked_add(grace) {
        Ok(at) if at > now => Action::Expire {
            id: r.id.clone(),
            at,
        },
        _ => Action::Revoke {
            id: r.id.clone(),
            reason: RevokeReason::GraceOver,
        },
    }
}

/// Deletion: revoke everything this resource ever registered that is not yet revoked
/// (including tokens in their grace period).
pub fn plan_cleanup(registrations: &[RegObs]) -> Vec<Action> {
    registrations
        .iter()
        .filter(|r| !r.revoked)
        .map(|r| Action::Revoke {
            id: r.id.clone(),
            reason: RevokeReason::Deleted,
        })
        .collect()
}

/// How long until `at`, at least zero.
pub fn until(now: Timestamp, at: Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn desired() -> Desired {
        Desired {
            secret_name: "app-token".into(),
            secret_key: "token".into(),
            display_name: "App".into(),
            scopes: vec!["orders:read".into(), "subscriptions:read".into()],
            grace: SignedDuration::from_hours(1),
            rotation_request: None,
        }
    }

    /// A registration that matches `desired()`.
    fn reg(id: &str) -> RegObs {
        RegObs {
            id: id.into(),
            fingerprint: format!("fp-{id}"),
            name: "App".into(),
            scopes: vec!["orders:read".into(), "subscriptions:read".into()],
            expires_at: None,
            revoked: false,
            last_used_at: None,
            use_count: 0,
        }
    }

    /// Our Secret holding token `id`.
    fn secret(id: &str) -> SecretObs {
        SecretObs {
            owned: true,
            token_id: Some(id.into()),
            previous_token_id: None,
            issued_at: Some(ts(NOW - 100)),
            rotation_request: None,
            fingerprint: Some(format!("fp-{id}")),
            shape_ok: true,
        }
    }

    fn run(d: &Desired, s: Option<&SecretObs>, regs: &[RegObs], status: Option<&str>) -> Plan {
        plan(&Observed {
            desired: d,
            secret: s,
            registrations: regs,
            status_token_id: status,
            now: ts(NOW),
        })
    }

    #[test]
    fn first_issue() {
        let p = run(&desired(), None, &[], None);
        assert_eq!(
            p.actions,
            vec![Action::Issue {
                previous: None,
                reason: IssueReason::First
            }]
        );
        assert_eq!(p.current, None);
    }

    #[test]
    fn converged_does_nothing() {
        let d = desired();
        let p = run(&d, Some(&secret("a")), &[reg("a")], Some("a"));
        assert_eq!(p.actions, vec![]);
        assert_eq!(p.current.map(|c| c.id), Some("a".into()));
        assert_eq!(p.wake_at, None);
        assert_eq!(p.issued_at, Some(ts(NOW - 100)));
    }

    #[test]
    fn edits_update_in_place_without_a_new_token() {
        let mut d = desired();
        d.display_name = "Renamed".into();
        d.scopes = vec!["orders:write".into()];
        let p = run(&d, Some(&secret("a")), &[reg("a")], Some("a"));
        assert_eq!(
            p.actions,
            vec![Action::Update {
                id: "a".into(),
                name: "Renamed".into(),
                scopes: vec!["orders:write".into()],
                clear_expiry: false
            }]
        );
    }

    #[test]
    fn rotation_issues_once_per_value_and_gives_the_old_token_its_grace() {
        let mut d = desired();
        d.rotation_request = Some("2026-11-29T12:00:00Z".into());
        let p = run(&d, Some(&secret("a")), &[reg("a")], Some("a"));
        assert_eq!(
            p.actions,
            vec![
                Action::Issue {
                    previous: Some("a".into()),
                    reason: IssueReason::Rotation
                },
                Action::Expire {
                    id: "a".into(),
                    at: ts(NOW + 3600)
                },
            ]
        );
        // After the issue the Secret records the value it answered: nothing more to do.
        let mut s = secret("b");
        s.rotation_request = d.rotation_request.clone();
        s.previous_token_id = Some("a".into());
        s.issued_at = Some(ts(NOW));
        let mut old = reg("a");
        old.expires_at = Some(ts(NOW + 3600));
        let p = run(&d, Some(&s), &[old, reg("b")], Some("a"));
        assert_eq!(p.actions, vec![]);
        assert_eq!(p.handled_rotation.as_deref(), Some("2026-11-29T12:00:00Z"));
        assert_eq!(
            p.in_grace,
            vec![("a".into(), "fp-a".into(), ts(NOW + 3600))]
        );
        assert_eq!(p.wake_at, Some(ts(NOW + 3600)));
    }

    #[test]
    fn an_annotation_present_at_creation_does_not_rotate_twice() {
        let mut d = desired();
        d.rotation_request = Some("v1".into());
        let p = run(&d, None, &[], None);
        assert_eq!(
            p.actions,
            vec![Action::Issue {
                previous: None,
                reason: IssueReason::First
            }]
        );
        let mut s = secret("a");
        s.rotation_request = Some("v1".into());
        assert_eq!(run(&d, Some(&s), &[reg("a")], None).actions, vec![]);
    }

    #[test]
    fn zero_grace_revokes_the_old_token_at_once() {
        let mut d = desired();
        d.grace = SignedDuration::ZERO;
        d.rotation_request = Some("leaked".into());
        let p = run(&d, Some(&secret("a")), &[reg("a")], Some("a"));
        assert_eq!(
            p.actions,
            vec![
                Action::Issue {
                    previous: Some("a".into()),
                    reason: IssueReason::Rotation
                },
                Action::Revoke {
                    id: "a".into(),
                    reason: RevokeReason::GraceOver
                },
            ]
        );
    }

    #[test]
    fn grace_over_revokes() {
        let mut old = reg("a");
        old.expires_at = Some(ts(NOW - 1));
        let p = run(&desired(), Some(&secret("b")), &[old, reg("b")], Some("b"));
        assert_eq!(
            p.actions,
            vec![Action::Revoke {
                id: "a".into(),
                reason: RevokeReason::GraceOver
            }]
        );
    }

    #[test]
    fn crash_after_register_before_secret_leaves_an_orphan_that_is_revoked() {
        // "b" was registered, then the operator died before writing the Secret (still "a").
        let p = run(
            &desired(),
            Some(&secret("a")),
            &[reg("a"), reg("b")],
            Some("a"),
        );
        assert_eq!(
            p.actions,
            vec![Action::Revoke {
                id: "b".into(),
                reason: RevokeReason::Orphan
            }]
        );
    }

    #[test]
    fn crash_after_secret_before_expiry_starts_the_grace_from_the_issue_time() {
        // Rotated to "b" (Secret written) but the old token's expiry was never set.
        let mut s = secret("b");
        s.previous_token_id = Some("a".into());
        s.issued_at = Some(ts(NOW - 600));
        let p = run(&desired(), Some(&s), &[reg("a"), reg("b")], Some("a"));
        assert_eq!(
            p.actions,
            vec![Action::Expire {
                id: "a".into(),
                at: ts(NOW - 600 + 3600)
            }]
        );
        // ... and if the grace period has already passed since then, revoke.
        s.issued_at = Some(ts(NOW - 7200));
        let p = run(&desired(), Some(&s), &[reg("a"), reg("b")], Some("a"));
        assert_eq!(
            p.actions,
            vec![Action::Revoke {
                id: "a".into(),
                reason: RevokeReason::GraceOver
            }]
        );
    }

    #[test]
    fn a_deleted_secret_is_replaced_and_the_lost_token_keeps_its_grace() {
        let p = run(&desired(), None, &[reg("a")], Some("a"));
        assert_eq!(
            p.actions,
            vec![
                Action::Issue {
                    previous: Some("a".into()),
                    reason: IssueReason::SecretLost
                },
                Action::Expire {
                    id: "a".into(),
                    at: ts(NOW + 3600)
                },
            ]
        );
    }

    #[test]
    fn a_hand_edited_token_is_replaced() {
        let mut s = secret("a");
        s.fingerprint = Some("fp-something-else".into());
        let p = run(&desired(), Some(&s), &[reg("a")], Some("a"));
        assert_eq!(
            p.actions[0],
            Action::Issue {
                previous: Some("a".into()),
                reason: IssueReason::SecretLost
            }
        );
        s.fingerprint = None; // key deleted, or not a token at all
        let p = run(&desired(), Some(&s), &[reg("a")], Some("a"));
        assert_eq!(
            p.actions[0],
            Action::Issue {
                previous: Some("a".into()),
                reason: IssueReason::SecretLost
            }
        );
    }

    #[test]
    fn edited_labels_are_repaired_without_a_new_token() {
        let mut s = secret("a");
        s.shape_ok = false;
        let p = run(&desired(), Some(&s), &[reg("a")], Some("a"));
        assert_eq!(p.actions, vec![Action::RewriteSecret]);
    }

    #[test]
    fn a_token_revoked_elsewhere_is_replaced() {
        let mut r = reg("a");
        r.revoked = true;
        let p = run(&desired(), Some(&secret("a")), &[r], Some("a"));
        assert_eq!(
            p.actions,
            vec![Action::Issue {
                previous: None,
                reason: IssueReason::RevokedElsewhere
            }]
        );
    }

    #[test]
    fn a_token_the_store_lost_is_registered_again() {
        let p = run(&desired(), Some(&secret("a")), &[], Some("a"));
        assert_eq!(p.actions, vec![Action::Reregister { id: "a".into() }]);
    }

    #[test]
    fn a_foreign_secret_is_never_touched() {
        let mut s = secret("a");
        s.owned = false;
        let p = run(&desired(), Some(&s), &[reg("a")], Some("a"));
        assert_eq!(p.actions, vec![]);
        assert_eq!(
            p.blocked,
            Some(Blocked::SecretConflict {
                secret: "app-token".into()
            })
        );
    }

    #[test]
    fn a_stray_expiry_on_the_current_token_is_cleared() {
        let mut r = reg("a");
        r.expires_at = Some(ts(NOW + 10));
        let p = run(&desired(), Some(&secret("a")), &[r], Some("a"));
        assert_eq!(
            p.actions,
            vec![Action::Update {
                id: "a".into(),
                name: "App".into(),
                scopes: desired().scopes,
                clear_expiry: true
            }]
        );
    }

    #[test]
    fn deletion_revokes_everything_not_yet_revoked() {
        let mut in_grace = reg("a");
        in_grace.expires_at = Some(ts(NOW + 10));
        let mut gone = reg("c");
        gone.revoked = true;
        assert_eq!(
            plan_cleanup(&[in_grace, reg("b"), gone]),
            vec![
                Action::Revoke {
                    id: "a".into(),
                    reason: RevokeReason::Deleted
                },
                Action::Revoke {
                    id: "b".into(),
                    reason: RevokeReason::Deleted
                },
            ]
        );
    }

    #[test]
    fn grace_periods_parse_like_go_durations() {
        assert_eq!(parse_grace("1h30m").unwrap(), SignedDuration::from_mins(90));
        assert_eq!(parse_grace("0").unwrap(), SignedDuration::ZERO);
        assert_eq!(parse_grace("0s").unwrap(), SignedDuration::ZERO);
        assert!(parse_grace("soon").is_err());
        assert!(parse_grace("-1h").is_err());
    }
}
