//! The reconcile shell's own decisions, as small pure functions: when a plan made from the
//! watch cache may be acted on, when a problem deserves an Event, how a status is written, what
//! follows a failure, and when to come back. No I/O; the reconcile shell calls them.
//!
//! [`crate::operator::core::plan`] decides what to do with the token; these decide how the shell observes and
//! reports, which is where requests to the API server are saved or spent.

use std::time::Duration;

use jiff::Timestamp;

use crate::operator::core::error::Error;
use crate::operator::core::error::StoreError;
use crate::operator::core::plan;
use crate::operator::core::status::{self, Readiness, readiness};
use crate::operator::core::vocabulary::{Desired, Grace, Plan, RegObs};
use crate::operator::resource::crd::ApiTokenStatus;
use crate::operator::resource::names::{condition, reason};

/// Whether a plan made from the watch cache may be acted on. The cache can lag the API server,
/// so only two plans are trusted: "nothing to do" (a converged token costs no API request), and
/// a first issue (no Secret cached, nothing registered), because the Secret's create fails if
/// one exists after all, and the registration it leaves is then revoked as an orphan. Anything
/// else is planned again from a live read.
pub fn trust_cached_plan(p: &Plan, secret_cached: bool, registrations: &[RegObs]) -> bool {
    let first_issue = !secret_cached && registrations.is_empty();
    p.blocked.is_none() && (p.actions.is_empty() || first_issue)
}

/// Whether a problem that needs a human gets an Event: on the way into `Stalled`, not again on
/// every reconcile while it lasts (the condition says it meanwhile).
pub fn announce_stall(previous: Option<&ApiTokenStatus>) -> bool {
    previous.is_none_or(|s| readiness(s) != Readiness::Stalled)
}

/// The overdue rotation to announce: a rotation is due (as the status says) and the status does
/// not say yet that it is overdue. Once per episode, like a stall.
pub fn announce_overdue(
    previous: Option<&ApiTokenStatus>,
    now: Timestamp,
) -> Option<status::Overdue<'_>> {
    let s = previous?;
    let said = s.has_reason(condition::READY, reason::ROTATION_OVERDUE);
    if said { None } else { status::overdue(s, now) }
}

/// Whether the current token's being unused deserves an Event: the last status did not say
/// `Unused=True` yet. Once per episode, like a stall.
pub fn announce_unused(previous: Option<&ApiTokenStatus>) -> bool {
    !previous.is_some_and(|s| s.is_true(condition::UNUSED))
}

/// The previous tokens the plan finds still in use half-way through their grace periods that
/// the last status did not mark yet: one Event each.
pub fn announce_still_in_use<'p>(previous: Option<&ApiTokenStatus>, p: &'p Plan) -> Vec<&'p Grace> {
    p.in_grace
        .iter()
        .filter(|g| {
            g.in_use_half_way
                && !previous.is_some_and(|s| {
                    s.previous_tokens
                        .iter()
                        .any(|o| o.token_id == g.id && o.still_in_use)
                })
        })
        .collect()
}

/// Whether a status says its token was revoked as unused (a hint when the Secret is lost).
pub fn says_revoked_unused(s: &ApiTokenStatus) -> bool {
    s.has_reason(condition::READY, reason::REVOKED_UNUSED)
}

/// How a newly computed status is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusWrite {
    /// It equals the status the reconcile started from.
    Unchanged,
    /// This reconcile changed the token, so the status must change: write it as computed.
    Write,
    /// It differs from the cached status, but the watch cache can lag the operator's own last
    /// status write (a reconcile woken by its own Secret write): compute again from the live
    /// object and write only if that differs, so nothing is written twice and no
    /// `lastTransitionTime` is reset.
    CompareLive,
}

pub fn status_write(
    cached: Option<&ApiTokenStatus>,
    new: &ApiTokenStatus,
    acted: bool,
) -> StatusWrite {
    if cached == Some(new) {
        StatusWrite::Unchanged
    } else if acted {
        StatusWrite::Write
    } else {
        StatusWrite::CompareLive
    }
}

/// What follows a failed reconcile (after its status was written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// A human must act (the store refused the request or the credential): look again at the
    /// next periodic reconcile, not in a tight loop.
    WaitForHuman,
    /// Hand the error to the controller's error policy, which retries soon.
    Retry,
}

pub fn after_failure(e: &Error) -> AfterFailure {
    match e {
        Error::Store(StoreError::Rejected { .. } | StoreError::Unauthorized { .. }) => {
            AfterFailure::WaitForHuman
        }
        _ => AfterFailure::Retry,
    }
}

/// Whether this ApiToken may own a Secret under another name: only after `spec.secret.name`
/// changed (the status still names the former Secret). Only then are its Secrets listed.
pub fn secret_may_have_moved(status: Option<&ApiTokenStatus>, d: &Desired) -> bool {
    status
        .and_then(|s| s.secret_name.as_deref())
        .is_some_and(|n| n != d.secret_name)
}

/// When to reconcile a converged ApiToken again: at the plan's next deadline (a grace period
/// ending), and at least every `usage_interval` to refresh usage figures.
pub fn next_reconcile(
    now: Timestamp,
    wake_at: Option<Timestamp>,
    usage_interval: Duration,
) -> Duration {
    let next = wake_at.map_or(usage_interval, |at| {
        plan::until(now, at).min(usage_interval)
    });
    next.max(Duration::from_millis(100))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::core::vocabulary::{Action, Blocked, IssueReason};
    use crate::operator::resource::crd::Condition;

    fn plan_with(actions: Vec<Action>, blocked: Option<Blocked>) -> Plan {
        Plan {
            actions,
            blocked,
            current: None,
            in_grace: vec![],
            unused: None,
            handled_rotation: None,
            issued_at: None,
            expires_at: None,
            next_rotation: None,
            wake_at: None,
        }
    }

    fn reg() -> RegObs {
        RegObs {
            id: "u.1".into(),
            fingerprint: "f".into(),
            name: "n".into(),
            scopes: vec!["orders:read".into()],
            expires_at: None,
            revoked: false,
            last_used_at: None,
            use_count: 0,
            created_at: Timestamp::UNIX_EPOCH,
        }
    }

    fn status(cond: &str) -> ApiTokenStatus {
        ApiTokenStatus {
            conditions: vec![Condition {
                type_: cond.into(),
                status: "True".into(),
                reason: "R".into(),
                message: "m".into(),
                last_transition_time: "2026-11-29T12:00:00Z".into(),
                observed_generation: Some(1),
            }],
            ..ApiTokenStatus::default()
        }
    }

    #[test]
    fn a_cached_plan_is_trusted_only_when_converged_or_a_first_issue() {
        let issue = || {
            vec![Action::Issue {
                previous: None,
                reason: IssueReason::First,
                retired: vec![],
                answers: None,
            }]
        };
        assert!(trust_cached_plan(&plan_with(vec![], None), true, &[reg()]));
        assert!(trust_cached_plan(&plan_with(issue(), None), false, &[]));
        // A Secret in the cache or a registration in the store: read live first.
        assert!(!trust_cached_plan(&plan_with(issue(), None), true, &[]));
        assert!(!trust_cached_plan(
            &plan_with(issue(), None),
            false,
            &[reg()]
        ));
        assert!(!trust_cached_plan(
            &plan_with(
                vec![Action::RewriteSecret {
                    issued_at: Timestamp::UNIX_EPOCH
                }],
                None
            ),
            true,
            &[reg()]
        ));
        // A conflict seen in the cache may be gone: read live before saying so.
        let conflict = Blocked::SecretConflict { secret: "s".into() };
        assert!(!trust_cached_plan(
            &plan_with(vec![], Some(conflict)),
            true,
            &[]
        ));
    }

    #[test]
    fn a_stall_is_announced_once() {
        assert!(announce_stall(None));
        assert!(announce_stall(Some(&status("Ready"))));
        assert!(!announce_stall(Some(&status("Stalled"))));
    }

    #[test]
    fn an_overdue_rotation_is_announced_once() {
        let now = Timestamp::from_second(1_800_000_000).expect("a time");
        let mut s = status("Ready");
        assert!(
            announce_overdue(Some(&s), now).is_none(),
            "nothing scheduled"
        );
        s.next_rotation_at = Some("2027-01-15T08:00:01Z".into());
        assert!(announce_overdue(Some(&s), now).is_none(), "not due yet");
        s.next_rotation_at = Some("2027-01-15T07:59:00Z".into());
        let o = announce_overdue(Some(&s), now).expect("due");
        assert_eq!(o.due, "2027-01-15T07:59:00Z");
        s.conditions[0].reason = reason::ROTATION_OVERDUE.into();
        assert!(
            announce_overdue(Some(&s), now).is_none(),
            "the status already says so"
        );
    }

    #[test]
    fn status_writes_compare_live_unless_the_token_changed() {
        let a = status("Ready");
        let b = status("Stalled");
        assert_eq!(status_write(Some(&a), &a, true), StatusWrite::Unchanged);
        assert_eq!(status_write(Some(&a), &b, true), StatusWrite::Write);
        assert_eq!(status_write(Some(&a), &b, false), StatusWrite::CompareLive);
        assert_eq!(status_write(None, &b, false), StatusWrite::CompareLive);
    }

    #[test]
    fn refusals_wait_for_a_human_and_outages_retry() {
        let rejected = Error::Store(StoreError::Rejected {
            status: 422,
            code: "unknown_scope".into(),
            message: "m".into(),
        });
        let refused = Error::Store(StoreError::Unauthorized { status: 401 });
        let down = Error::Store(StoreError::Unavailable("x".into()));
        assert_eq!(after_failure(&rejected), AfterFailure::WaitForHuman);
        assert_eq!(after_failure(&refused), AfterFailure::WaitForHuman);
        assert_eq!(after_failure(&down), AfterFailure::Retry);
        assert_eq!(after_failure(&Error::Unnamed), AfterFailure::Retry);
    }

    #[test]
    fn secrets_are_listed_only_after_a_rename() {
        let t = crate::operator::resource::crd::fixtures::api_token(
            serde_json::json!({"scopes": ["orders:read"], "secret": {"name": "new"}}),
        );
        let d = crate::operator::core::spec::desired(&t, "a", None).expect("a valid spec");
        let named = |n: &str| ApiTokenStatus {
            secret_name: Some(n.into()),
            ..ApiTokenStatus::default()
        };
        assert!(!secret_may_have_moved(None, &d));
        assert!(!secret_may_have_moved(Some(&named("new")), &d));
        assert!(secret_may_have_moved(Some(&named("old")), &d));
    }

    #[test]
    fn the_next_reconcile_is_the_earlier_of_a_deadline_and_the_usage_interval() {
        let now = Timestamp::from_second(1_800_000_000).expect("a time");
        let five_min = Duration::from_secs(300);
        assert_eq!(next_reconcile(now, None, five_min), five_min);
        let soon = now + jiff::SignedDuration::from_secs(30);
        assert_eq!(
            next_reconcile(now, Some(soon), five_min),
            Duration::from_secs(30)
        );
        let past = now - jiff::SignedDuration::from_secs(30);
        assert_eq!(
            next_reconcile(now, Some(past), five_min),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn usage_findings_are_announced_once() {
        use crate::operator::core::vocabulary::Grace;
        use crate::operator::resource::crd::PreviousToken;
        let mut p = plan_with(vec![], None);
        let g = Grace {
            id: "u.0".into(),
            fingerprint: "f0".into(),
            until: Timestamp::from_second(1_800_003_600).unwrap(),
            last_used_at: None,
            in_use_half_way: true,
        };
        p.in_grace = vec![g.clone()];
        assert_eq!(announce_still_in_use(None, &p), vec![&g]);
        let said = ApiTokenStatus {
            previous_tokens: vec![PreviousToken {
                token_id: "u.0".into(),
                fingerprint: "f0".into(),
                expires_at: "x".into(),
                last_used_at: None,
                still_in_use: true,
            }],
            ..ApiTokenStatus::default()
        };
        assert!(announce_still_in_use(Some(&said), &p).is_empty());
        assert!(announce_unused(None));
        let unused = ApiTokenStatus {
            conditions: vec![Condition {
                type_: condition::UNUSED.into(),
                status: "True".into(),
                reason: reason::IDLE.into(),
                message: String::new(),
                last_transition_time: String::new(),
                observed_generation: None,
            }],
            ..ApiTokenStatus::default()
        };
        assert!(!announce_unused(Some(&unused)));
    }
}
