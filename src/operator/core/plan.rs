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
//! - **update** the current registration in place when `displayName`, `scopes` or its expiry
//!   (issue time + `spec.expiry.after`, or none) differ;
//! - **expire** the token the current one replaced, at `issuedAt + gracePeriod` (the store then
//!   stops answering for it on its own, even while the operator is down), and **revoke** it once
//!   that time has passed (or at once with a grace period of zero);
//! - **revoke** every other active registration of this resource: orphans of a crash between
//!   registering and writing the Secret.
//!
//! A token also ages ([`schedule`]): it is replaced when it is due (`spec.rotation.every`, or
//! before its expiry with `spec.expiry.renew`) through the same issue, and with `renew: false`
//! an expired token is left expired (the plan is blocked, `Expired`) until a new rotate value.
//! Registrations with an expiry are told apart from orphans by the Secret record's list of
//! retired tokens, each with the end of its grace period (a Secret written before the list
//! existed follows the rules from before it: a registration with an expiry is in grace).
//!
//! A Secret of the same name that the operator does not own is never touched (promise 7); the
//! plan then only reports the conflict.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::operator::core::schedule::{self, Due};
use crate::operator::core::usage::{self, Early, InGrace};
use crate::operator::core::vocabulary::{
    Action, Blocked, Desired, Grace, IssueReason, Plan, RegObs, Retired, RevokeReason, SecretObs,
};
use crate::operator::resource::crd::UnusedAction;

/// Everything the plan needs.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    pub desired: &'a Desired,
    pub secret: Option<&'a SecretObs>,
    pub registrations: &'a [RegObs],
    /// `status.tokenId` as last written (a hint for which token a lost Secret held).
    pub status_token_id: Option<&'a str>,
    /// `status.lastRotationRequest` (a hint for the value a lost Secret answered).
    pub status_handled: Option<&'a str>,
    /// The ids of `status.previousTokens` (a hint for which tokens are in grace when the Secret
    /// is lost).
    pub status_in_grace: &'a [String],
    /// Whether the status says its token was revoked as unused (a hint for when the Secret is
    /// lost).
    pub status_revoked_unused: bool,
    /// The token fingerprint every rollout target has completely rolled out, if any.
    pub rolled_out: Option<&'a str>,
    pub now: Timestamp,
}

/// Decide what to do.
pub fn plan(o: &Observed<'_>) -> Plan {
    let mut p = Plan {
        actions: Vec::new(),
        blocked: None,
        current: None,
        in_grace: Vec::new(),
        unused: None,
        handled_rotation: None,
        issued_at: None,
        expires_at: None,
        next_rotation: None,
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
    record_retired(&mut p);
    p
}

/// An issue records which tokens keep their grace period: those already in it, and those whose
/// grace period starts now.
fn record_retired(p: &mut Plan) {
    let retired = |id: &String, until: &Timestamp| Retired {
        id: id.clone(),
        until: Some(*until),
    };
    let mut kept: Vec<Retired> = p
        .in_grace
        .iter()
        .map(|g| retired(&g.id, &g.until))
        .collect();
    kept.extend(p.actions.iter().filter_map(|a| match a {
        Action::Expire { id, at } => Some(retired(id, at)),
        _ => None,
    }));
    for a in &mut p.actions {
        if let Action::Issue { retired, .. } = a {
            retired.clone_from(&kept);
        }
    }
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
/// `None` when nothing else may be planned: the Secret's token must be registered again first,
/// or it expired and stays so.
fn plan_current(o: &Observed<'_>, p: &mut Plan) -> Option<Issuing> {
    let d = o.desired;
    let named = o
        .secret
        .and_then(|s| s.token_id.as_deref().zip(s.fingerprint.as_deref()));
    let held = named.and_then(|(id, fp)| o.find(id).filter(|r| r.fingerprint == fp && !r.revoked));
    let handled = o
        .secret
        .and_then(|s| s.rotation_request.as_deref())
        .or(o.status_handled);
    let requested = schedule::rotation_requested(d.rotation_request.as_deref(), handled);
    let answers = if requested {
        d.rotation_request.clone()
    } else {
        handled.map(str::to_owned)
    };
    if let Some(r) = revoked_as_unused(o) {
        return after_unused(p, r, requested, answers);
    }
    match (held, named) {
        (Some(cur), _) if cur.active(o.now) => keep_or_rotate(o, p, cur, requested, answers),
        (Some(cur), _) => {
            let Some(reason) = expired_reason(o, cur, requested) else {
                p.blocked = Some(expired(cur, o.now));
                return None;
            };
            p.actions.push(issue(None, reason, answers));
            Some(Issuing(None))
        }
        (None, Some((id, _))) if o.find(id).is_none() => {
            // Our Secret holds a well-formed token the store does not know (its data was lost):
            // register it again rather than break every app that uses it.
            p.actions.push(Action::Reregister { id: id.to_owned() });
            None
        }
        (None, _) => {
            if let Some(lapsed) = lapsed_under_no_renew(o).filter(|_| !requested) {
                // Losing the Secret must not renew a token that was left to expire.
                p.blocked = Some(expired(lapsed, o.now));
                return None;
            }
            let previous = surviving_previous(o);
            p.actions
                .push(issue(previous.clone(), issue_reason(o), answers));
            Some(Issuing(previous))
        }
    }
}

/// The token the record (or, without a record of a token, the status) says was revoked as
/// unused.
fn revoked_as_unused<'o>(o: &Observed<'o>) -> Option<&'o RegObs> {
    let recorded = o.secret.and_then(|s| {
        s.revoked_unused
            .as_deref()
            .filter(|id| s.token_id.as_deref() == Some(*id))
    });
    let hinted = o.status_revoked_unused
        && o.secret
            .and_then(|s| s.token_id.as_deref())
            .is_none_or(|id| Some(id) == o.status_token_id);
    let id = recorded.or(o.status_token_id.filter(|_| hinted))?;
    o.registrations.iter().find(|r| r.id == id)
}

/// A token revoked as unused: finish the revocation (a crash may have come between the Secret
/// and the store), then stay so until a new rotate value issues a new token.
fn after_unused(
    p: &mut Plan,
    r: &RegObs,
    requested: bool,
    answers: Option<String>,
) -> Option<Issuing> {
    let since = usage::idle_since(r, r.created_at);
    if !r.revoked {
        p.actions.push(Action::Revoke {
            id: r.id.clone(),
            reason: RevokeReason::Unused { since },
        });
        return None;
    }
    if requested {
        p.actions.push(issue(None, IssueReason::Rotation, answers));
        return Some(Issuing(None));
    }
    p.blocked = Some(Blocked::RevokedUnused {
        fingerprint: r.fingerprint.clone(),
        since,
    });
    None
}

fn issue(previous: Option<String>, reason: IssueReason, answers: Option<String>) -> Action {
    Action::Issue {
        previous,
        reason,
        retired: Vec::new(),
        answers,
    }
}

fn expired(r: &RegObs, now: Timestamp) -> Blocked {
    Blocked::Expired {
        fingerprint: r.fingerprint.clone(),
        at: r.expires_at.unwrap_or(now),
    }
}

/// Why the Secret's expired token is replaced, or `None` when it stays expired: `renew` is off,
/// no new rotate value asks, and no scheduled rotation fell due before it expired.
fn expired_reason(o: &Observed<'_>, cur: &RegObs, requested: bool) -> Option<IssueReason> {
    let d = o.desired;
    let issued = issue_time(o.secret.and_then(|s| s.issued_at), cur);
    let scheduled_in_time = d
        .aging
        .due(issued)
        .is_some_and(|(at, why)| why == Due::Scheduled && cur.expires_at.is_none_or(|e| at < e));
    if requested {
        Some(IssueReason::Rotation)
    } else if scheduled_in_time {
        Some(IssueReason::Scheduled)
    } else if d.aging.lets_expire() {
        None
    } else if d.aging.expiry.is_some() {
        Some(IssueReason::Expired)
    } else {
        Some(IssueReason::RevokedElsewhere)
    }
}

/// With `renew` off: the token a lost or unusable Secret held (by its annotation, else by
/// status), when it expired.
fn lapsed_under_no_renew<'o>(o: &Observed<'o>) -> Option<&'o RegObs> {
    if !o.desired.aging.lets_expire() {
        return None;
    }
    o.secret
        .and_then(|s| s.token_id.as_deref())
        .or(o.status_token_id)
        .and_then(|id| o.registrations.iter().find(|r| r.id == id))
        .filter(|r| !r.revoked && r.expires_at.is_some_and(|e| e <= o.now))
}

/// When a token was issued: the Secret's record, but never after the store registered it (an
/// edited annotation must not extend its life).
fn issue_time(recorded: Option<Timestamp>, r: &RegObs) -> Timestamp {
    recorded.map_or(r.created_at, |t| t.min(r.created_at))
}

/// How far the Secret's issue time may be after the store's registration time (the operator's
/// and the store's clocks differ a little) before it is taken as edited and written again.
const CLOCK_MARGIN: SignedDuration = SignedDuration::from_secs(5);

/// The current token is active: replace it when a rotation is asked for or due, else keep it
/// and bring its registration and Secret in line.
fn keep_or_rotate(
    o: &Observed<'_>,
    p: &mut Plan,
    cur: &RegObs,
    requested: bool,
    answers: Option<String>,
) -> Option<Issuing> {
    let d = o.desired;
    let (recorded, shape_ok) = o
        .secret
        .map_or((None, false), |s| (s.issued_at, s.shape_ok));
    let issued = issue_time(recorded, cur);
    let due = d.aging.due(issued);
    let replace = if requested {
        Some(IssueReason::Rotation)
    } else {
        due.filter(|(at, _)| *at <= o.now)
            .map(|(_, why)| match why {
                Due::Scheduled => IssueReason::Scheduled,
                Due::Renewal => IssueReason::Renewal,
            })
    };
    if let Some(reason) = replace {
        p.actions.push(issue(Some(cur.id.clone()), reason, answers));
        return Some(Issuing(Some(cur.id.clone())));
    }
    if !judge_use(o, p, cur, issued) {
        return None;
    }
    let expiry = d.aging.expiry_of(issued);
    p.current = Some(cur.clone());
    p.handled_rotation = answers;
    p.issued_at = Some(issued);
    p.expires_at = expiry;
    p.next_rotation = due;
    if let Some((at, _)) = due {
        p.wake(at);
    }
    if let Some(at) = expiry.filter(|_| d.aging.lets_expire()) {
        p.wake(at);
    }
    let edited_issue = recorded.is_none_or(|t| t > cur.created_at + CLOCK_MARGIN);
    if !shape_ok || edited_issue {
        p.actions.push(Action::RewriteSecret { issued_at: issued });
    }
    let expiry_wrong = cur.expires_at != expiry;
    if cur.name != d.display_name || cur.scopes != d.scopes || expiry_wrong {
        p.actions.push(Action::Update {
            id: cur.id.clone(),
            name: d.display_name.clone(),
            scopes: d.scopes.clone(),
            expiry: expiry_wrong.then_some(expiry),
        });
    }
    Some(Issuing(None))
}

/// `spec.unused` on the current token: `Warn` reports it in the plan; `Revoke` plans the
/// revocation (record first, then the store) and returns `false`: nothing else this pass.
fn judge_use(o: &Observed<'_>, p: &mut Plan, cur: &RegObs, issued: Timestamp) -> bool {
    let Some(rule) = &o.desired.unused else {
        return true;
    };
    let recorded = o.secret.and_then(|s| s.usage_from);
    let from = usage::counting_from(recorded, issued, cur, o.registrations);
    // Any token's use counts: a previous one still in its grace period, used by an app not
    // restarted yet, means the ApiToken is in use.
    match usage::unused(rule, &cur.fingerprint, o.registrations, from, o.now) {
        Err(at) => {
            if let Some(at) = at {
                p.wake(at);
            }
            true
        }
        Ok(idle) if rule.action == UnusedAction::Revoke => {
            p.actions.push(Action::MarkUnused { id: cur.id.clone() });
            p.actions.push(Action::Revoke {
                id: cur.id.clone(),
                reason: RevokeReason::Unused { since: idle.since },
            });
            false
        }
        Ok(idle) => {
            p.unused = Some(idle);
            true
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
        .filter(|r| r.active(o.now))
        .map(|r| r.id.clone())
}

/// Every other registration: in grace, grace over, retired, or an orphan.
fn plan_others(o: &Observed<'_>, p: &mut Plan, issuing_previous: Option<&str>) {
    let current_id = p.current.as_ref().map(|c| c.id.clone());
    for r in o
        .registrations
        .iter()
        .filter(|r| !r.revoked && Some(r.id.as_str()) != current_id.as_deref())
    {
        let action = match r.expires_at {
            Some(at) if at <= o.now => Some(Action::Revoke {
                id: r.id.clone(),
                reason: RevokeReason::GraceOver,
            }),
            _ if issuing_previous == Some(r.id.as_str()) => {
                grace_action(r, o.now, o.desired.grace, o.now)
            }
            _ => match o.secret.and_then(|s| s.retired.as_deref()) {
                Some(list) => by_record(o, r, list),
                None => without_record(o, r, current_id.is_some()),
            },
        };
        match (action, r.expires_at) {
            (Some(a), _) => p.actions.push(a),
            (None, Some(_)) if retires_early(o, p) => p.actions.push(Action::Revoke {
                id: r.id.clone(),
                reason: RevokeReason::RolledOut,
            }),
            (None, Some(at)) => keep_in_grace(o, p, r, at),
            (None, None) => {}
        }
    }
    p.in_grace.sort_by_key(|g| g.until);
}

/// A previous token in its grace period until `until`: retire it early when it is idle and the
/// new token is in use (`spec.rotation.retireWhenIdle`), else keep it, noting whether it is
/// still in use half-way through.
fn keep_in_grace(o: &Observed<'_>, p: &mut Plan, r: &RegObs, until: Timestamp) {
    p.wake(until);
    let idle_rule = o.desired.retire_when_idle;
    let mut in_use_half_way = false;
    if let (Some(cur), Some(issued)) = (p.current.clone(), p.issued_at) {
        // Its grace period started when the token after it was issued: the current one, or
        // (several tokens in grace) an earlier one.
        let rotated_at = until
            .checked_sub(o.desired.grace)
            .map_or(issued, |t| t.min(issued));
        let g = InGrace {
            token: r,
            until,
            rotated_at,
        };
        if let Early::Retire { since } = usage::retire_early(g, &cur, idle_rule, o.now) {
            p.actions.push(Action::Revoke {
                id: r.id.clone(),
                reason: RevokeReason::Idle { since },
            });
            return;
        }
        match usage::still_in_use(g, idle_rule, o.now) {
            Ok(in_use) => in_use_half_way = in_use,
            Err(at) => p.wake(at),
        }
    }
    p.in_grace.push(Grace {
        id: r.id.clone(),
        fingerprint: r.fingerprint.clone(),
        until,
        last_used_at: r.last_used_at,
        in_use_half_way,
    });
}

/// With `spec.rollout.retire: AfterRollout`, a token in its grace period is revoked once every
/// rollout target has rolled out the current token (not while a new one is being issued).
fn retires_early(o: &Observed<'_>, p: &Plan) -> bool {
    o.desired.consumers.retire_after_rollout()
        && p.current
            .as_ref()
            .is_some_and(|c| o.rolled_out == Some(c.fingerprint.as_str()))
}

/// By the Secret record's list: a retired token keeps its grace period until the time the
/// list gives (an expiry the store does not have yet is set: a crash came between the Secret
/// and the expiry); a registration not in the list is an orphan.
fn by_record(o: &Observed<'_>, r: &RegObs, list: &[Retired]) -> Option<Action> {
    match list.iter().find(|x| x.id == r.id).map(|x| x.until) {
        Some(Some(until)) if until <= o.now => Some(Action::Revoke {
            id: r.id.clone(),
            reason: RevokeReason::GraceOver,
        }),
        Some(Some(until)) => r
            .expires_at
            .is_none_or(|e| e > until)
            .then(|| Action::Expire {
                id: r.id.clone(),
                at: until,
            }),
        Some(None) if r.expires_at.is_some() => None,
        Some(None) => {
            let since = o.secret.and_then(|s| s.issued_at).unwrap_or(o.now);
            grace_action(r, since, o.desired.grace, o.now)
        }
        None => Some(Action::Revoke {
            id: r.id.clone(),
            reason: RevokeReason::Orphan,
        }),
    }
}

/// Without the list (no Secret, or one written before the list existed), the rules from before
/// it: the token the current one replaced starts its grace period from the issue time if it has
/// none; a registration with an expiry is in grace (without a Secret and with `spec.expiry`,
/// where every registration has an expiry, only those the status lists); the rest are orphans.
fn without_record(o: &Observed<'_>, r: &RegObs, has_current: bool) -> Option<Action> {
    let replaced = o.secret.and_then(|s| s.previous_token_id.as_deref());
    let hinted = o.status_in_grace.contains(&r.id);
    match r.expires_at {
        None if has_current && replaced == Some(r.id.as_str()) => {
            let since = o.secret.and_then(|s| s.issued_at).unwrap_or(o.now);
            grace_action(r, since, o.desired.grace, o.now)
        }
        Some(_) if o.secret.is_some() || o.desired.aging.expiry.is_none() || hinted => None,
        _ => Some(Action::Revoke {
            id: r.id.clone(),
            reason: RevokeReason::Orphan,
        }),
    }
}

/// Give `r` a grace period from `since`: expire it at `since + grace`, unless it expires sooner
/// already (`None`: nothing to do), or revoke it when that time is now or past.
fn grace_action(
    r: &RegObs,
    since: Timestamp,
    grace: SignedDuration,
    now: Timestamp,
) -> Option<Action> {
    match since.checked_add(grace) {
        Ok(at) if at > now => match r.expires_at {
            Some(sooner) if sooner <= at => None,
            _ => Some(Action::Expire {
                id: r.id.clone(),
                at,
            }),
        },
        _ => Some(Action::Revoke {
            id: r.id.clone(),
            reason: RevokeReason::GraceOver,
        }),
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
    use crate::operator::core::schedule::{Aging, Expiry};
    use crate::operator::core::spec::parse_duration;
    use crate::operator::core::vocabulary::{Consumers, Unused};

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
            aging: Aging::default(),
            consumers: Consumers::default(),
            unused: None,
            retire_when_idle: None,
        }
    }

    /// A previous token in grace until `until`, as the plan reports it.
    fn grace(id: &str, until: Timestamp) -> Grace {
        Grace {
            id: id.into(),
            fingerprint: format!("fp-{id}"),
            until,
            last_used_at: None,
            in_use_half_way: false,
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
            created_at: ts(NOW),
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
            retired: Some(vec![]),
            revoked_unused: None,
            usage_from: None,
        }
    }

    fn run(d: &Desired, s: Option<&SecretObs>, regs: &[RegObs], status: Option<&str>) -> Plan {
        plan(&Observed {
            desired: d,
            secret: s,
            registrations: regs,
            status_token_id: status,
            status_handled: None,
            status_in_grace: &[],
            status_revoked_unused: false,
            rolled_out: None,
            now: ts(NOW),
        })
    }

    /// What `run` observes, without status hints, to adjust with struct update syntax.
    fn observed<'a>(d: &'a Desired, s: &'a SecretObs, regs: &'a [RegObs]) -> Observed<'a> {
        Observed {
            desired: d,
            secret: Some(s),
            registrations: regs,
            status_token_id: None,
            status_handled: None,
            status_in_grace: &[],
            status_revoked_unused: false,
            rolled_out: None,
            now: ts(NOW),
        }
    }

    #[test]
    fn first_issue() {
        let p = run(&desired(), None, &[], None);
        assert_eq!(
            p.actions,
            vec![Action::Issue {
                previous: None,
                reason: IssueReason::First,
                retired: vec![],
                answers: None
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
                expiry: None
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
                    reason: IssueReason::Rotation,
                    retired: vec![until("a", NOW + HOUR)],
                    answers: d.rotation_request.clone()
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
        s.retired = Some(vec![until("a", NOW + 3600)]);
        let mut old = reg("a");
        old.expires_at = Some(ts(NOW + 3600));
        let p = run(&d, Some(&s), &[old, reg("b")], Some("a"));
        assert_eq!(p.actions, vec![]);
        assert_eq!(p.handled_rotation.as_deref(), Some("2026-11-29T12:00:00Z"));
        assert_eq!(p.in_grace, vec![grace("a", ts(NOW + 3600))]);
        // Back half-way through the grace period (is it still in use?), then at its end.
        assert_eq!(p.wake_at, Some(ts(NOW + 1800)));
        let p = plan(&Observed {
            now: ts(NOW + 1800),
            ..observed(&d, &s, &[expiring("a", NOW + 3600), reg("b")])
        });
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
                reason: IssueReason::First,
                retired: vec![],
                answers: Some("v1".into())
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
                    reason: IssueReason::Rotation,
                    retired: vec![],
                    answers: Some("leaked".into())
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
        // Rotated to "b" (Secret written, listing "a" as retired until the end of its grace
        // period) but the old token's expiry was never set.
        let mut s = secret("b");
        s.previous_token_id = Some("a".into());
        s.issued_at = Some(ts(NOW - 600));
        s.retired = Some(vec![until("a", NOW - 600 + 3600)]);
        let p = run(&desired(), Some(&s), &[reg("a"), reg("b")], Some("a"));
        assert_eq!(
            p.actions,
            vec![Action::Expire {
                id: "a".into(),
                at: ts(NOW - 600 + 3600)
            }]
        );
        // ... and if the grace period has already passed since then, revoke.
        s.retired = Some(vec![until("a", NOW - 7200 + 3600)]);
        let p = run(&desired(), Some(&s), &[reg("a"), reg("b")], Some("a"));
        assert_eq!(
            p.actions,
            vec![Action::Revoke {
                id: "a".into(),
                reason: RevokeReason::GraceOver
            }]
        );
        // A Secret from before the list: the grace period runs from the issue time.
        s.retired = None;
        s.issued_at = Some(ts(NOW - 7200));
        let p = run(&desired(), Some(&s), &[reg("a"), reg("b")], Some("a"));
        assert_eq!(
            p.actions,
            vec![Action::Revoke {
                id: "a".into(),
                reason: RevokeReason::GraceOver
            }]
        );
        s.issued_at = Some(ts(NOW - 600));
        let p = run(&desired(), Some(&s), &[reg("a"), reg("b")], Some("a"));
        assert_eq!(
            p.actions,
            vec![Action::Expire {
                id: "a".into(),
                at: ts(NOW - 600 + 3600)
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
                    reason: IssueReason::SecretLost,
                    retired: vec![until("a", NOW + HOUR)],
                    answers: None
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
                reason: IssueReason::SecretLost,
                retired: vec![until("a", NOW + HOUR)],
                answers: None
            }
        );
        s.fingerprint = None; // key deleted, or not a token at all
        let p = run(&desired(), Some(&s), &[reg("a")], Some("a"));
        assert_eq!(
            p.actions[0],
            Action::Issue {
                previous: Some("a".into()),
                reason: IssueReason::SecretLost,
                retired: vec![until("a", NOW + HOUR)],
                answers: None
            }
        );
    }

    #[test]
    fn edited_labels_are_repaired_without_a_new_token() {
        let mut s = secret("a");
        s.shape_ok = false;
        let p = run(&desired(), Some(&s), &[reg("a")], Some("a"));
        assert_eq!(
            p.actions,
            vec![Action::RewriteSecret {
                issued_at: ts(NOW - 100)
            }]
        );
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
                reason: IssueReason::RevokedElsewhere,
                retired: vec![],
                answers: None
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
                expiry: Some(None)
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

    fn aging(every: Option<i64>, after: Option<(i64, bool)>) -> Desired {
        let mut d = desired();
        d.aging = Aging {
            every: every.map(SignedDuration::from_hours),
            expiry: after.map(|(h, renew)| Expiry {
                after: SignedDuration::from_hours(h),
                renew,
            }),
        };
        d
    }

    /// Our Secret holding token `id`, issued `ago` seconds before now.
    fn issued_ago(id: &str, ago: i64) -> SecretObs {
        let mut s = secret(id);
        s.issued_at = Some(ts(NOW - ago));
        s
    }

    /// Registration `id` that expires at `at`.
    fn expiring(id: &str, at: i64) -> RegObs {
        let mut r = reg(id);
        r.expires_at = Some(ts(at));
        r
    }

    const HOUR: i64 = 3600;

    /// A retired-list entry: `id` in grace until `at`.
    fn until(id: &str, at: i64) -> Retired {
        Retired {
            id: id.into(),
            until: Some(ts(at)),
        }
    }

    #[test]
    fn a_scheduled_token_rotates_when_due_and_the_old_one_keeps_its_grace() {
        let d = aging(Some(24), None);
        let p = run(
            &d,
            Some(&issued_ago("a", 23 * HOUR)),
            &[reg("a")],
            Some("a"),
        );
        assert_eq!(p.actions, vec![]);
        assert_eq!(
            p.next_rotation,
            Some((ts(NOW + HOUR), schedule::Due::Scheduled))
        );
        assert_eq!(p.wake_at, Some(ts(NOW + HOUR)));

        let p = run(
            &d,
            Some(&issued_ago("a", 24 * HOUR)),
            &[reg("a")],
            Some("a"),
        );
        assert_eq!(
            p.actions,
            vec![
                Action::Issue {
                    previous: Some("a".into()),
                    reason: IssueReason::Scheduled,
                    retired: vec![until("a", NOW + HOUR)],
                    answers: None
                },
                Action::Expire {
                    id: "a".into(),
                    at: ts(NOW + HOUR)
                },
            ]
        );
    }

    #[test]
    fn an_operator_down_for_several_periods_rotates_once() {
        let d = aging(Some(24), None);
        let p = run(
            &d,
            Some(&issued_ago("a", 75 * HOUR)),
            &[reg("a")],
            Some("a"),
        );
        assert_eq!(p.actions.len(), 2, "one issue, one grace: {:?}", p.actions);
        // The new token counts its period from its own issue: nothing more is due.
        let mut s = issued_ago("b", 0);
        s.previous_token_id = Some("a".into());
        s.retired = Some(vec![until("a", NOW + HOUR)]);
        let p = run(
            &d,
            Some(&s),
            &[expiring("a", NOW + HOUR), reg("b")],
            Some("a"),
        );
        assert_eq!(p.actions, vec![]);
        assert_eq!(p.next_rotation.map(|n| n.0), Some(ts(NOW + 24 * HOUR)));
    }

    #[test]
    fn a_token_that_expires_is_registered_with_its_expiry_and_kept_to_it() {
        let d = aging(None, Some((90, true)));
        let issued = NOW - 10 * HOUR;
        let expiry = issued + 90 * HOUR;
        // Registered without (an ApiToken that gained spec.expiry): set from the issue time.
        let p = run(
            &d,
            Some(&issued_ago("a", 10 * HOUR)),
            &[reg("a")],
            Some("a"),
        );
        assert_eq!(
            p.actions,
            vec![Action::Update {
                id: "a".into(),
                name: "App".into(),
                scopes: desired().scopes,
                expiry: Some(Some(ts(expiry)))
            }]
        );
        // Registered with it: a legitimate expiry is kept, and the renewal is planned.
        let p = run(
            &d,
            Some(&issued_ago("a", 10 * HOUR)),
            &[expiring("a", expiry)],
            Some("a"),
        );
        assert_eq!(p.actions, vec![]);
        assert_eq!(p.expires_at, Some(ts(expiry)));
        assert_eq!(
            p.next_rotation,
            Some((ts(issued + 60 * HOUR), schedule::Due::Renewal))
        );
    }

    #[test]
    fn renewal_comes_before_expiry_and_the_grace_never_outlives_the_old_token() {
        let d = aging(None, Some((90, true)));
        let issued = NOW - 60 * HOUR;
        let p = run(
            &d,
            Some(&issued_ago("a", 60 * HOUR)),
            &[expiring("a", issued + 90 * HOUR)],
            Some("a"),
        );
        assert_eq!(
            p.actions,
            vec![
                Action::Issue {
                    previous: Some("a".into()),
                    reason: IssueReason::Renewal,
                    retired: vec![until("a", NOW + HOUR)],
                    answers: None
                },
                Action::Expire {
                    id: "a".into(),
                    at: ts(NOW + HOUR)
                },
            ]
        );
        // Renewed late (the operator was down): the old token keeps its own, sooner, expiry.
        let p = run(
            &d,
            Some(&issued_ago("a", 89 * HOUR + 1800)),
            &[expiring("a", NOW + 1800)],
            Some("a"),
        );
        assert_eq!(
            p.actions,
            vec![Action::Issue {
                previous: Some("a".into()),
                reason: IssueReason::Renewal,
                retired: vec![until("a", NOW + 1800)],
                answers: None
            }]
        );
        assert_eq!(p.in_grace, vec![grace("a", ts(NOW + 1800))]);
    }

    #[test]
    fn an_expired_token_without_renew_stays_expired_until_a_new_rotate_value() {
        let mut d = aging(None, Some((90, false)));
        let s = issued_ago("a", 91 * HOUR);
        let regs = [expiring("a", NOW - HOUR)];
        let p = run(&d, Some(&s), &regs, Some("a"));
        assert_eq!(p.actions, vec![]);
        assert_eq!(
            p.blocked,
            Some(Blocked::Expired {
                fingerprint: "fp-a".into(),
                at: ts(NOW - HOUR)
            })
        );
        // Before it expires, the operator comes back at the expiry to say so.
        let p = run(
            &d,
            Some(&issued_ago("a", HOUR)),
            &[expiring("a", NOW + 89 * HOUR)],
            Some("a"),
        );
        assert_eq!(
            (p.next_rotation, p.wake_at),
            (None, Some(ts(NOW + 89 * HOUR)))
        );
        d.rotation_request = Some("again".into());
        let p = run(&d, Some(&s), &regs, Some("a"));
        assert_eq!(
            p.actions,
            vec![
                Action::Issue {
                    previous: None,
                    reason: IssueReason::Rotation,
                    retired: vec![],
                    answers: Some("again".into())
                },
                // Expired: revoked for good.
                Action::Revoke {
                    id: "a".into(),
                    reason: RevokeReason::GraceOver
                }
            ]
        );
    }

    #[test]
    fn a_token_that_expired_while_the_operator_was_down_is_replaced_when_renew_is_on() {
        let d = aging(None, Some((90, true)));
        let p = run(
            &d,
            Some(&issued_ago("a", 91 * HOUR)),
            &[expiring("a", NOW - HOUR)],
            Some("a"),
        );
        assert_eq!(
            p.actions,
            vec![
                Action::Issue {
                    previous: None,
                    reason: IssueReason::Expired,
                    retired: vec![],
                    answers: None
                },
                // Expired: revoked for good.
                Action::Revoke {
                    id: "a".into(),
                    reason: RevokeReason::GraceOver
                }
            ]
        );
    }

    #[test]
    fn a_running_grace_period_is_not_shortened_by_a_new_grace_period() {
        let mut d = desired();
        d.grace = SignedDuration::ZERO;
        let mut s = issued_ago("b", 600);
        s.previous_token_id = Some("a".into());
        s.retired = Some(vec![until("a", NOW + 3000)]);
        let p = run(
            &d,
            Some(&s),
            &[expiring("a", NOW + 3000), reg("b")],
            Some("b"),
        );
        assert_eq!(p.actions, vec![]);
        assert_eq!(p.in_grace, vec![grace("a", ts(NOW + 3000))]);
    }

    #[test]
    fn with_an_expiry_a_grace_period_never_started_is_started_from_the_issue_time() {
        let d = aging(None, Some((90, true)));
        let mut s = issued_ago("b", 600);
        s.previous_token_id = Some("a".into());
        s.retired = Some(vec![until("a", NOW - 600 + HOUR)]);
        // "a" still has the expiry it was registered with: the crash came before its grace.
        let mut a = expiring("a", NOW - 60 * HOUR + 90 * HOUR);
        a.created_at = ts(NOW - 60 * HOUR);
        let b = expiring("b", NOW - 600 + 90 * HOUR);
        let p = run(&d, Some(&s), &[a.clone(), b.clone()], Some("b"));
        assert_eq!(
            p.actions,
            vec![Action::Expire {
                id: "a".into(),
                at: ts(NOW - 600 + HOUR)
            }]
        );
        // Once started, it runs.
        a.expires_at = Some(ts(NOW - 600 + HOUR));
        assert_eq!(run(&d, Some(&s), &[a, b], Some("b")).actions, vec![]);
    }

    #[test]
    fn a_registration_with_an_expiry_is_in_grace_only_when_the_record_retired_it() {
        let d = aging(None, Some((90, true)));
        let mut s = issued_ago("b", 1800);
        s.previous_token_id = Some("a".into());
        s.retired = Some(vec![until("a", NOW + 60), until("old", NOW + 30)]);
        let cur = expiring("b", NOW - 1800 + 90 * HOUR);
        let regs = [
            cur.clone(),
            expiring("a", NOW + 60),
            expiring("old", NOW + 30),
            expiring("orphan", NOW + 89 * HOUR),
        ];
        let p = run(&d, Some(&s), &regs, Some("b"));
        assert_eq!(
            p.actions,
            vec![Action::Revoke {
                id: "orphan".into(),
                reason: RevokeReason::Orphan
            }]
        );
        assert_eq!(p.in_grace.len(), 2);
        // A record from before the list: every registration with an expiry is in grace.
        s.retired = None;
        let p = run(&d, Some(&s), &regs, Some("b"));
        assert_eq!(p.actions, vec![]);
        assert_eq!(p.in_grace.len(), 3);
    }

    #[test]
    fn an_earlier_timestamp_put_back_by_gitops_does_not_rotate() {
        let mut d = desired();
        d.rotation_request = Some("2026-12-01T09:00:00Z".into());
        let mut s = secret("a");
        s.rotation_request = Some("2026-12-02T09:00:00Z".into());
        let p = run(&d, Some(&s), &[reg("a")], Some("a"));
        assert_eq!(p.actions, vec![]);
        assert_eq!(p.handled_rotation.as_deref(), Some("2026-12-02T09:00:00Z"));
    }

    #[test]
    fn an_edited_issue_time_cannot_extend_a_token_s_life() {
        let d = aging(Some(24), Some((90, true)));
        let mut s = secret("a");
        s.issued_at = Some(ts(NOW + 1000 * HOUR)); // edited into the future
        let mut a = expiring("a", NOW - 23 * HOUR + 90 * HOUR);
        a.created_at = ts(NOW - 23 * HOUR);
        let p = run(&d, Some(&s), &[a.clone()], Some("a"));
        // The store's registration time bounds it: due in an hour, and the record repaired.
        assert_eq!(p.next_rotation.map(|n| n.0), Some(ts(NOW + HOUR)));
        assert_eq!(
            p.actions,
            vec![Action::RewriteSecret {
                issued_at: ts(NOW - 23 * HOUR)
            }]
        );
    }

    #[test]
    fn a_schedule_that_fell_due_before_the_expiry_rotates_even_without_renew() {
        // every 24h, expiry 72h not renewed; the operator was away from hour 23 to hour 73.
        let d = aging(Some(24), Some((72, false)));
        let p = run(
            &d,
            Some(&issued_ago("a", 73 * HOUR)),
            &[expiring("a", NOW - HOUR)],
            Some("a"),
        );
        assert_eq!(p.blocked, None);
        assert!(
            matches!(
                p.actions.first(),
                Some(Action::Issue {
                    reason: IssueReason::Scheduled,
                    previous: None,
                    ..
                })
            ),
            "{:?}",
            p.actions
        );
    }

    #[test]
    fn a_retired_token_whose_expiry_failed_keeps_only_its_grace_through_another_issue() {
        // Rotated a -> b (the Secret lists a until NOW + 10 min), the expiry of a failed, and a
        // new rotate value comes before the next pass.
        let mut d = aging(None, Some((90, true)));
        d.rotation_request = Some("again".into());
        let mut s = issued_ago("b", 50 * 60);
        s.previous_token_id = Some("a".into());
        s.retired = Some(vec![until("a", NOW + 600)]);
        let a = expiring("a", NOW + 80 * HOUR); // still its registered expiry
        let b = expiring("b", NOW + 89 * HOUR);
        let p = run(&d, Some(&s), &[a, b], Some("b"));
        assert!(
            p.actions.contains(&Action::Expire {
                id: "a".into(),
                at: ts(NOW + 600)
            }),
            "{:?}",
            p.actions
        );
    }

    #[test]
    fn losing_the_secret_does_not_renew_a_token_left_to_expire() {
        let d = aging(None, Some((2, false)));
        let p = run(&d, None, &[expiring("a", NOW - 60)], Some("a"));
        assert_eq!(p.actions, vec![]);
        assert!(matches!(p.blocked, Some(Blocked::Expired { .. })));
        // A new rotate value (the status says which one was handled) does issue.
        let mut d = d;
        d.rotation_request = Some("r2".into());
        let p = plan(&Observed {
            desired: &d,
            secret: None,
            registrations: &[expiring("a", NOW - 60)],
            status_token_id: Some("a"),
            status_handled: Some("r1"),
            status_in_grace: &[],
            status_revoked_unused: false,
            rolled_out: None,
            now: ts(NOW),
        });
        assert_eq!(p.blocked, None);
        assert!(matches!(p.actions.first(), Some(Action::Issue { .. })));
    }

    #[test]
    fn without_a_secret_only_the_tokens_status_lists_are_kept_in_grace() {
        let d = aging(None, Some((90, true)));
        let regs = [
            expiring("cur", NOW + 80 * HOUR),
            expiring("grace", NOW + 600),
            expiring("orphan", NOW + 89 * HOUR),
        ];
        let p = plan(&Observed {
            desired: &d,
            secret: None,
            registrations: &regs,
            status_token_id: Some("cur"),
            status_handled: None,
            status_in_grace: &["grace".to_owned()],
            status_revoked_unused: false,
            rolled_out: None,
            now: ts(NOW),
        });
        assert!(p.actions.contains(&Action::Revoke {
            id: "orphan".into(),
            reason: RevokeReason::Orphan
        }));
        assert!(
            !p.actions
                .iter()
                .any(|a| matches!(a, Action::Revoke { id, .. } if id == "grace"))
        );
    }

    #[test]
    fn an_issue_for_another_reason_keeps_the_later_rotate_value() {
        // Handled t2; Git put back t1; a scheduled rotation records t2, not t1 (which would let
        // t2 rotate again later).
        let mut d = aging(Some(24), None);
        d.rotation_request = Some("2026-12-01T09:00:00Z".into());
        let mut s = issued_ago("a", 25 * HOUR);
        s.rotation_request = Some("2026-12-02T09:00:00Z".into());
        let p = run(&d, Some(&s), &[reg("a")], Some("a"));
        assert!(
            matches!(p.actions.first(), Some(Action::Issue { reason: IssueReason::Scheduled, answers: Some(v), .. }) if v == "2026-12-02T09:00:00Z"),
            "{:?}",
            p.actions
        );
    }

    /// A plan for token "b", which replaced "a" (in its grace period), with this rollout.
    fn rolled(d: &Desired, rolled_out: Option<&str>) -> Plan {
        let mut s = issued_ago("b", 600);
        s.previous_token_id = Some("a".into());
        s.retired = Some(vec![until("a", NOW + 3000)]);
        plan(&Observed {
            desired: d,
            secret: Some(&s),
            registrations: &[expiring("a", NOW + 3000), reg("b")],
            status_token_id: Some("b"),
            status_handled: None,
            status_in_grace: &[],
            status_revoked_unused: false,
            rolled_out,
            now: ts(NOW),
        })
    }

    fn with_rollout(retire: crate::operator::resource::crd::Retire) -> Desired {
        use crate::operator::resource::crd::{RolloutKind, RolloutPolicy, RolloutTarget};
        let mut d = desired();
        d.consumers.rollout = Some(RolloutPolicy {
            targets: vec![RolloutTarget {
                kind: RolloutKind::Deployment,
                name: "shop".into(),
            }],
            retire,
        });
        d
    }

    #[test]
    fn after_rollout_the_previous_token_goes_once_every_target_runs_the_new_one() {
        use crate::operator::resource::crd::Retire;
        let d = with_rollout(Retire::AfterRollout);
        // Not rolled out yet, or only the previous token was: the grace period runs.
        assert_eq!(rolled(&d, None).actions, vec![]);
        assert_eq!(rolled(&d, Some("fp-a")).actions, vec![]);
        assert_eq!(
            rolled(&d, Some("fp-b")).actions,
            vec![Action::Revoke {
                id: "a".into(),
                reason: RevokeReason::RolledOut
            }]
        );
        // AfterGrace: the rollout does not shorten the grace period.
        let d = with_rollout(Retire::AfterGrace);
        assert_eq!(rolled(&d, Some("fp-b")).actions, vec![]);
        // A new rotation: the old rollout retires nothing; "a" keeps its grace period.
        let mut d = with_rollout(Retire::AfterRollout);
        d.rotation_request = Some("again".into());
        let p = rolled(&d, Some("fp-b"));
        assert!(
            !p.actions
                .iter()
                .any(|a| matches!(a, Action::Revoke { id, .. } if id == "a")),
            "{:?}",
            p.actions
        );
    }

    #[test]
    fn grace_periods_parse_like_go_durations() {
        assert_eq!(
            parse_duration("f", "1h30m").unwrap(),
            SignedDuration::from_mins(90)
        );
        assert_eq!(parse_duration("f", "0").unwrap(), SignedDuration::ZERO);
        assert_eq!(parse_duration("f", "0s").unwrap(), SignedDuration::ZERO);
        assert!(parse_duration("f", "soon").is_err());
        assert!(parse_duration("f", "-1h").is_err());
        assert_eq!(
            parse_duration("f", "720h").unwrap(),
            SignedDuration::from_hours(720)
        );
    }

    fn unused_rule(action: UnusedAction) -> Desired {
        let mut d = desired();
        d.unused = Some(Unused {
            after: SignedDuration::from_hours(24),
            action,
        });
        d
    }

    const DAY: i64 = 24 * HOUR;

    #[test]
    fn an_unused_token_is_reported_with_warn() {
        let d = unused_rule(UnusedAction::Warn);
        let s = issued_ago("a", 0);
        let mut used = reg("a");
        used.last_used_at = Some(ts(NOW + HOUR));
        used.use_count = 1;
        // Used an hour after its issue: unused a day after that use, not before.
        let before = plan(&Observed {
            now: ts(NOW + DAY),
            ..observed(&d, &s, std::slice::from_ref(&used))
        });
        assert_eq!(
            (before.actions.clone(), before.unused.clone()),
            (vec![], None)
        );
        assert_eq!(before.wake_at, Some(ts(NOW + HOUR + DAY)));
        let after = plan(&Observed {
            now: ts(NOW + HOUR + DAY),
            ..observed(&d, &s, std::slice::from_ref(&used))
        });
        assert_eq!(after.actions, vec![]);
        let idle = after.unused.expect("unused");
        assert_eq!(
            (idle.fingerprint.as_str(), idle.since),
            ("fp-a", ts(NOW + HOUR))
        );
        assert!(after.current.is_some(), "the token stays current");
    }

    #[test]
    fn an_unused_token_is_taken_out_of_the_secret_then_revoked_with_revoke() {
        let d = unused_rule(UnusedAction::Revoke);
        let s = issued_ago("a", 0);
        let p = plan(&Observed {
            now: ts(NOW + DAY),
            ..observed(&d, &s, &[reg("a")])
        });
        assert_eq!(
            p.actions,
            vec![
                Action::MarkUnused { id: "a".into() },
                Action::Revoke {
                    id: "a".into(),
                    reason: RevokeReason::Unused { since: ts(NOW) }
                }
            ]
        );
        assert_eq!(p.current, None);
    }

    /// The Secret after `MarkUnused`: the record, no token.
    fn marked(id: &str) -> SecretObs {
        let mut s = issued_ago(id, 0);
        s.fingerprint = None;
        s.shape_ok = false;
        s.revoked_unused = Some(id.into());
        s
    }

    #[test]
    fn a_token_revoked_as_unused_stays_so_until_a_new_rotate_value() {
        let d = unused_rule(UnusedAction::Revoke);
        let s = marked("a");
        // A crash came between the Secret and the store: finish the revocation, nothing else.
        let p = plan(&Observed {
            now: ts(NOW + DAY),
            ..observed(&d, &s, &[reg("a")])
        });
        assert_eq!(
            p.actions,
            vec![Action::Revoke {
                id: "a".into(),
                reason: RevokeReason::Unused { since: ts(NOW) }
            }]
        );
        // Revoked: blocked, never "revoked elsewhere, reissue" (also after a restart).
        let mut gone = reg("a");
        gone.revoked = true;
        let p = plan(&observed(&d, &s, std::slice::from_ref(&gone)));
        assert_eq!(p.actions, vec![]);
        assert_eq!(
            p.blocked,
            Some(Blocked::RevokedUnused {
                fingerprint: "fp-a".into(),
                since: ts(NOW)
            })
        );
        // A new rotate value issues a new token.
        let mut d2 = d.clone();
        d2.rotation_request = Some("again".into());
        let p = plan(&observed(&d2, &s, std::slice::from_ref(&gone)));
        assert_eq!(
            p.actions,
            vec![Action::Issue {
                previous: None,
                reason: IssueReason::Rotation,
                retired: vec![],
                answers: Some("again".into())
            }]
        );
        // Without the Secret, the status says it: still no new token.
        let p = plan(&Observed {
            secret: None,
            status_token_id: Some("a"),
            status_revoked_unused: true,
            ..observed(&d, &s, std::slice::from_ref(&gone))
        });
        assert!(
            matches!(p.blocked, Some(Blocked::RevokedUnused { .. })),
            "{p:?}"
        );
        // A mark naming another token than the record's is not this token's.
        let mut other = marked("a");
        other.revoked_unused = Some("z".into());
        let p = plan(&observed(&d, &other, std::slice::from_ref(&gone)));
        assert!(p.blocked.is_none(), "{p:?}");
    }

    /// `b` current (issued at NOW), `a` in its grace period until NOW + 1h.
    fn rotated(retire_when_idle: Option<i64>) -> (Desired, SecretObs) {
        let mut d = desired();
        d.retire_when_idle = retire_when_idle.map(SignedDuration::from_secs);
        let mut s = issued_ago("b", 0);
        s.retired = Some(vec![until("a", NOW + HOUR)]);
        (d, s)
    }

    fn used(mut r: RegObs, at: i64) -> RegObs {
        r.last_used_at = Some(ts(at));
        r.use_count += 1;
        r
    }

    #[test]
    fn an_idle_previous_token_retires_early_once_the_new_one_is_used() {
        let (d, s) = rotated(Some(60));
        let old = used(expiring("a", NOW + HOUR), NOW - 10);
        // The new token not used yet: the old one keeps its grace period.
        let p = plan(&Observed {
            now: ts(NOW + 120),
            ..observed(&d, &s, &[old.clone(), reg("b")])
        });
        assert_eq!(p.actions, vec![]);
        assert_eq!(p.in_grace.len(), 1);
        // Used: the old one, idle for a minute since the rotation, retires.
        let p = plan(&Observed {
            now: ts(NOW + 120),
            ..observed(&d, &s, &[old.clone(), used(reg("b"), NOW + 30)])
        });
        assert_eq!(
            p.actions,
            vec![Action::Revoke {
                id: "a".into(),
                reason: RevokeReason::Idle { since: ts(NOW) }
            }]
        );
        assert!(p.in_grace.is_empty());
        // Used after the rotation: it waits for a minute after that use.
        let busy = used(expiring("a", NOW + HOUR), NOW + 100);
        let p = plan(&Observed {
            now: ts(NOW + 120),
            ..observed(&d, &s, &[busy, used(reg("b"), NOW + 30)])
        });
        assert_eq!(p.actions, vec![]);
        // No wake-up for the retirement (every use moves it: the usage refresh looks again),
        // only half-way through the grace period.
        assert_eq!(p.wake_at, Some(ts(NOW + 1800)));
    }

    #[test]
    fn a_previous_token_used_half_way_through_its_grace_is_still_in_use() {
        let (d, s) = rotated(Some(60));
        let busy = used(expiring("a", NOW + HOUR), NOW + 1790);
        let p = plan(&Observed {
            now: ts(NOW + 1800),
            ..observed(&d, &s, &[busy, used(reg("b"), NOW + 30)])
        });
        assert_eq!(p.actions, vec![]);
        assert_eq!(
            p.in_grace,
            vec![Grace {
                last_used_at: Some(ts(NOW + 1790)),
                in_use_half_way: true,
                ..grace("a", ts(NOW + HOUR))
            }]
        );
        // Without retireWhenIdle, too, and it never retires early.
        let (d, s) = rotated(None);
        let busy = used(expiring("a", NOW + HOUR), NOW + 1000);
        let p = plan(&Observed {
            now: ts(NOW + 1800),
            ..observed(&d, &s, &[busy, used(reg("b"), NOW + 30)])
        });
        assert_eq!(p.actions, vec![]);
        assert!(p.in_grace[0].in_use_half_way);
    }

    #[test]
    fn the_count_of_non_use_goes_on_through_scheduled_rotations() {
        let mut d = unused_rule(UnusedAction::Warn);
        d.aging.every = Some(SignedDuration::from_hours(12));
        // The current token is an hour old; the ApiToken's first token, never used, 25h.
        let mut s = issued_ago("b", HOUR);
        s.usage_from = Some(ts(NOW - 25 * HOUR));
        let mut old = reg("a");
        old.created_at = ts(NOW - 25 * HOUR);
        old.revoked = true;
        let mut cur = reg("b");
        cur.created_at = ts(NOW - HOUR);
        let p = plan(&observed(&d, &s, &[old, cur]));
        assert_eq!(p.unused.map(|i| i.since), Some(ts(NOW - 25 * HOUR)));
    }

    #[test]
    fn a_previous_token_in_use_keeps_the_apitoken_in_use() {
        let d = unused_rule(UnusedAction::Revoke);
        let mut s = issued_ago("b", 30 * HOUR);
        s.retired = Some(vec![until("a", NOW + 100 * HOUR)]);
        let busy_old = used(expiring("a", NOW + 100 * HOUR), NOW - HOUR);
        let mut cur = reg("b");
        cur.created_at = ts(NOW - 30 * HOUR);
        let p = plan(&observed(&d, &s, &[busy_old, cur]));
        assert_eq!(
            p.actions,
            vec![],
            "the app on the old token counts as a use"
        );
        assert_eq!(p.unused, None);
    }

    #[test]
    fn a_token_registered_again_is_not_held_to_the_usage_the_store_lost() {
        let d = unused_rule(UnusedAction::Revoke);
        // Issued 40 days ago; the store lost it and the operator registered it again just now.
        let s = issued_ago("a", 40 * DAY);
        let p = plan(&observed(&d, &s, &[reg("a")]));
        assert_eq!(p.actions, vec![]);
        assert_eq!(p.wake_at, Some(ts(NOW + DAY)));
    }
}
