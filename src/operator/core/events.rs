//! The wording of every Event the operator publishes, from what was done. Pure, no I/O: the
//! shell publishes what these functions return.
//!
//! Events mark changes to an existing token, and the moments a human must act. A first issue
//! has none (the status says `Ready`, reason `Issued`, with the fingerprint): one API write less
//! per token when thousands are applied at once. Tokens are named by fingerprint or store id,
//! never by value.

use jiff::{SignedDuration, Timestamp};
use kube::runtime::events::EventType;

use crate::operator::core::schedule::Aging;
use crate::operator::core::vocabulary::Idle;
use crate::operator::core::vocabulary::{IssueReason, RevokeReason};
use crate::operator::resource::names::event;

/// One Event: its type, reason (also its action) and note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub type_: EventType,
    pub reason: &'static str,
    pub note: String,
}

fn normal(reason: &'static str, note: String) -> Note {
    Note {
        type_: EventType::Normal,
        reason,
        note,
    }
}

fn warning(reason: &'static str, note: String) -> Note {
    Note {
        type_: EventType::Warning,
        reason,
        note,
    }
}

/// A token was issued and written to its Secret. `None` for a first issue. `grace` is the
/// previous token's grace period, when one was replaced.
pub fn issued(
    reason: IssueReason,
    fingerprint: &str,
    grace: Option<SignedDuration>,
    aging: &Aging,
    secret: &str,
) -> Option<Note> {
    let (r, why) = match reason {
        IssueReason::First => return None,
        IssueReason::Rotation => (
            event::ROTATED,
            "issued by rotation (loop.dev/rotate changed)".to_owned(),
        ),
        IssueReason::Scheduled => (
            event::ROTATED,
            match aging.every {
                Some(every) => format!("issued on schedule (spec.rotation.every {every:#})"),
                None => "issued on schedule".to_owned(),
            },
        ),
        IssueReason::Renewal => (
            event::ROTATED,
            match aging.expiry {
                Some(e) => format!(
                    "issued before the previous token expires (spec.expiry.after {:#}, renewed at 2/3 of it)",
                    e.after
                ),
                None => "issued before the previous token expires".to_owned(),
            },
        ),
        IssueReason::SecretLost => (
            event::REISSUED,
            "issued because the Secret was deleted or edited".to_owned(),
        ),
        IssueReason::RevokedElsewhere => (
            event::REISSUED,
            "issued because the previous token was revoked outside the operator".to_owned(),
        ),
        IssueReason::Expired => (
            event::REISSUED,
            "issued because the previous token had expired (its renewal was due while the operator was not running)".to_owned(),
        ),
    };
    let previous = match grace {
        None => String::new(),
        Some(g) if g.is_zero() => "; no grace period: the previous token is revoked now".to_owned(),
        Some(g) => format!("; the previous token stays active for its grace period, {g:#}"),
    };
    Some(normal(
        r,
        format!("token {fingerprint} {why}{previous}; written to Secret {secret}"),
    ))
}

/// The current token expired and stays so (`spec.expiry.renew: false`).
pub fn expired(fingerprint: &str, at: Timestamp) -> Note {
    warning(
        event::EXPIRED,
        format!(
            "token {fingerprint} expired at {at} and is not renewed (spec.expiry.renew is false); set a new loop.dev/rotate value to issue a new token"
        ),
    )
}

/// A rotation is due and could not happen.
pub fn rotation_overdue(due: &str, expires: Option<&str>, error: &str) -> Note {
    let expiry = expires.map_or_else(String::new, |e| format!("; the token expires at {e}"));
    warning(
        event::ROTATION_OVERDUE,
        format!("the rotation due at {due} could not happen: {error}{expiry}; retrying"),
    )
}

/// The store had lost the Secret's token, and it was registered again.
pub fn reregistered(fingerprint: &str) -> Note {
    warning(
        event::REREGISTERED,
        format!("token {fingerprint} was unknown to the Loop token store and was registered again"),
    )
}

/// The Secret was edited by hand and written back.
pub fn secret_repaired(secret: &str) -> Note {
    normal(
        event::SECRET_REPAIRED,
        format!("Secret {secret} was edited; restored"),
    )
}

/// Name and scopes were changed in place.
pub fn updated(name: &str, scopes: &[String]) -> Note {
    normal(
        event::UPDATED,
        format!(
            "name {name:?} and scopes {} applied in place; the token is unchanged",
            scopes.join(" ")
        ),
    )
}

/// One token was revoked while the ApiToken lives on.
pub fn revoked(id: &str, reason: RevokeReason) -> Note {
    let why = match reason {
        RevokeReason::GraceOver => "its grace period or its expiry is over",
        RevokeReason::Orphan => {
            "it was registered but never reached the Secret (an interrupted issue)"
        }
        RevokeReason::Deleted => "the ApiToken is being deleted",
        RevokeReason::Unused { .. } => "unused for longer than spec.unused.after",
        RevokeReason::Idle { .. } => {
            "unused for spec.rotation.retireWhenIdle while the new token is in use"
        }
        RevokeReason::RolledOut => {
            "every rollout target runs the new token (spec.rollout.retire: AfterRollout)"
        }
    };
    normal(event::REVOKED, format!("token {id} revoked: {why}"))
}

/// The tokens revoked because the ApiToken is being deleted, in one Event. `None` when there
/// were none.
pub fn revoked_on_deletion(fingerprints: &[String]) -> Option<Note> {
    let which = match fingerprints {
        [] => return None,
        [one] => format!("token {one}"),
        many => format!("tokens {}", many.join(", ")),
    };
    Some(normal(
        event::REVOKED,
        format!("{which} revoked: the ApiToken is being deleted"),
    ))
}

/// A Secret of the desired name belongs to someone else.
pub fn secret_conflict(secret: &str) -> Note {
    warning(
        event::SECRET_CONFLICT,
        format!(
            "Secret {secret} exists and is not managed by this ApiToken; it was left untouched"
        ),
    )
}

/// The store refused a request (its code and message).
pub fn store_rejected(code: &str, message: &str) -> Note {
    warning(event::STORE_REJECTED, format!("{code}: {message}"))
}

/// The ApiToken became a violation of its namespace's ApiTokenPolicies.
pub fn policy_violation(message: &str) -> Note {
    warning(
        event::POLICY_VIOLATION,
        format!("{message}; nothing new is issued until the ApiToken complies"),
    )
}

/// The tokens revoked because an ApiTokenPolicy with `enforcement: Revoke` no longer allows
/// the ApiToken, in one Event. `None` when there were none.
pub fn revoked_by_policy(fingerprints: &[String]) -> Option<Note> {
    let which = match fingerprints {
        [] => return None,
        [one] => format!("token {one}"),
        many => format!("tokens {}", many.join(", ")),
    };
    Some(warning(
        event::REVOKED,
        format!(
            "{which} revoked: the ApiToken is outside its ApiTokenPolicies (enforcement Revoke)"
        ),
    ))
}

/// Deleted with `loop.dev/abandon-revocation`: the finalizer went without the store.
pub fn revocation_abandoned(what: &str, reason: &str, fingerprints: &[String]) -> Note {
    let which = match fingerprints {
        [] => "no token the operator knows of stays".to_owned(),
        [one] => format!("token {one} stays"),
        many => format!("tokens {} stay", many.join(", ")),
    };
    warning(
        event::REVOCATION_ABANDONED,
        format!(
            "{what} was deleted without revoking its tokens (loop.dev/abandon-revocation: {reason:?}); {which} active in the Loop token store until revoked there"
        ),
    )
}

/// Deleted with `deletionPolicy: Orphan`: the token and its Secret stay.
pub fn orphaned(fingerprint: &str, secret: &str, name: &str) -> Note {
    normal(
        event::ORPHANED,
        format!(
            "token {fingerprint} stays active and Secret {secret} stays (without owner reference) for a later ApiToken named {name} to adopt"
        ),
    )
}

/// A later ApiToken took over what an earlier one of the same name left behind.
pub fn adopted(fingerprint: &str, secret: &str) -> Note {
    normal(
        event::ADOPTED,
        format!(
            "adopted token {fingerprint} and Secret {secret}, left by an earlier ApiToken of this name; no new token was issued"
        ),
    )
}

/// An orphaned Secret of this name that cannot be adopted.
pub fn not_adoptable(secret: &str, why: &str) -> Note {
    warning(
        event::SECRET_CONFLICT,
        format!(
            "Secret {secret} was left by an earlier ApiToken of this name, but {why}; delete the Secret to issue a new token"
        ),
    )
}

/// The current token went unused for longer than `spec.unused.after` (`action: Warn`).
pub fn unused(idle: &Idle) -> Note {
    warning(
        event::UNUSED,
        format!(
            "token {} has not been used since {} (spec.unused.after {:#}); if nothing needs it, delete the ApiToken, or set spec.unused.action: Revoke",
            idle.fingerprint, idle.since, idle.after
        ),
    )
}

/// The current token was revoked as unused (`action: Revoke`).
pub fn revoked_unused(fingerprint: &str, since: Timestamp, after: Option<SignedDuration>) -> Note {
    let rule = after.map_or_else(String::new, |a| format!(" (spec.unused.after {a:#})"));
    warning(
        event::REVOKED_UNUSED,
        format!(
            "token {fingerprint} revoked: not used since {since}{rule}; it was removed from its Secret and calls with it are refused. Set a new loop.dev/rotate value to issue a new token"
        ),
    )
}

/// A previous token's grace period ended early (`spec.rotation.retireWhenIdle`).
pub fn retired(fingerprint: &str, since: Timestamp, window: Option<SignedDuration>) -> Note {
    let rule = window.map_or_else(String::new, |w| {
        format!(" (spec.rotation.retireWhenIdle {w:#})")
    });
    normal(
        event::RETIRED,
        format!(
            "previous token {fingerprint} revoked before the end of its grace period: not used since {since}{rule} and the new token is in use"
        ),
    )
}

/// A previous token is still used half-way through its grace period: an app missed the
/// rotation.
pub fn previous_still_in_use(
    fingerprint: &str,
    last_used: Option<Timestamp>,
    until: Timestamp,
    secret: &str,
) -> Note {
    let when = last_used.map_or_else(String::new, |u| format!(" (last used {u})"));
    warning(
        event::PREVIOUS_TOKEN_STILL_IN_USE,
        format!(
            "previous token {fingerprint} is still in use half-way through its grace period{when}; it stops working at {until}. An app missed the rotation: make it read the new token from Secret {secret} (restart it)"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::core::schedule::Expiry;

    #[test]
    fn a_first_issue_has_no_event_and_a_rotation_says_why_and_how_long_the_old_token_lives() {
        let none = Aging::default();
        let hour = Some(SignedDuration::from_hours(1));
        assert_eq!(issued(IssueReason::First, "abc", None, &none, "s"), None);
        let n = issued(
            IssueReason::Rotation,
            "abcdef012345",
            hour,
            &none,
            "app-token",
        )
        .expect("a rotation has an event");
        assert_eq!((n.type_, n.reason), (EventType::Normal, "Rotated"));
        assert_eq!(
            n.note,
            "token abcdef012345 issued by rotation (loop.dev/rotate changed); the previous token stays active for its grace period, 1h; written to Secret app-token"
        );
        let leaked = issued(
            IssueReason::Rotation,
            "f",
            Some(SignedDuration::ZERO),
            &none,
            "s",
        )
        .expect("an event");
        assert!(leaked.note.contains("revoked now"), "{}", leaked.note);
        let lost = issued(IssueReason::SecretLost, "f", hour, &none, "s").expect("an event");
        assert_eq!(lost.reason, "Reissued");
    }

    #[test]
    fn scheduled_and_renewal_rotations_name_their_setting() {
        let aging = Aging {
            every: Some(SignedDuration::from_hours(720)),
            expiry: Some(Expiry {
                after: SignedDuration::from_hours(2160),
                renew: true,
            }),
        };
        let hour = Some(SignedDuration::from_hours(1));
        let n = issued(IssueReason::Scheduled, "f", hour, &aging, "s").expect("an event");
        assert_eq!(n.reason, "Rotated");
        assert!(
            n.note
                .contains("issued on schedule (spec.rotation.every 720h)"),
            "{}",
            n.note
        );
        let n = issued(IssueReason::Renewal, "f", hour, &aging, "s").expect("an event");
        assert!(
            n.note.contains("spec.expiry.after 2160h, renewed at 2/3"),
            "{}",
            n.note
        );
        let n = issued(IssueReason::Expired, "f", None, &aging, "s").expect("an event");
        assert_eq!(n.reason, "Reissued");
        assert!(!n.note.contains("grace"), "{}", n.note);
    }

    #[test]
    fn deletion_revokes_are_one_event() {
        assert_eq!(revoked_on_deletion(&[]), None);
        let one = revoked_on_deletion(&["a1".into()]).expect("an event");
        assert_eq!(one.note, "token a1 revoked: the ApiToken is being deleted");
        let two = revoked_on_deletion(&["a1".into(), "b2".into()]).expect("an event");
        assert_eq!(
            two.note,
            "tokens a1, b2 revoked: the ApiToken is being deleted"
        );
    }

    #[test]
    fn warnings_are_warnings() {
        for n in [
            reregistered("f"),
            secret_conflict("s"),
            store_rejected("unknown_scope", "m"),
            expired("f", Timestamp::UNIX_EPOCH),
            rotation_overdue("t", Some("e"), "m"),
        ] {
            assert_eq!(n.type_, EventType::Warning, "{n:?}");
        }
        assert_eq!(
            revoked("id-1", RevokeReason::GraceOver).note,
            "token id-1 revoked: its grace period or its expiry is over"
        );
    }
}
