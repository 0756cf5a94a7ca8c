//! Usage that acts: when a token counts as unused (`spec.unused`), when a previous token may
//! retire before its grace period ends (`spec.rotation.retireWhenIdle`), and when a previous
//! token is still in use half-way through its grace period. Pure: the caller passes every time;
//! usage is what the Loop token store recorded (`lastUsedAt`, `useCount`).
//!
//! - **Unused**: the ApiToken's tokens are idle since the latest use of any of them (the token
//!   in the Secret, or a previous one still in its grace period: apps not restarted yet), and
//!   not before the time counting started (see [`counting_from`]): the first token's issue, and
//!   again after a token was revoked as unused. A rotation on schedule or before expiry does not
//!   restart the count, so a token nobody uses is found even when it is replaced more often than
//!   `spec.unused.after`. Past `after`, `Warn` reports it and `Revoke` revokes it.
//! - **Retire when idle**: a previous token is idle since the later of its last use and the
//!   rotation (an app gets at least `retireWhenIdle` after the rotation to show up). It retires
//!   once that idle time reaches `retireWhenIdle` and the new token has been used; its grace
//!   period stays the limit (the store's expiry).
//! - **Still in use**: from half-way through its grace period, a previous token used since the
//!   rotation and within the last `retireWhenIdle` (without it, within the last quarter of the
//!   grace period, so that pods draining just after a rollout do not count) is still in use: some
//!   app missed the rotation.

use jiff::{SignedDuration, Timestamp};

use crate::operator::core::vocabulary::{Idle, RegObs, Unused};

/// Since when `r`, issued at `issued`, has not been used.
pub fn idle_since(r: &RegObs, issued: Timestamp) -> Timestamp {
    r.last_used_at.map_or(issued, |used| used.max(issued))
}

/// How far a registration's time may be after the Secret's issue time before it counts as a
/// registration made again later (the store lost the token and the operator put it back).
const REREGISTERED_AFTER: SignedDuration = SignedDuration::from_secs(5);

/// From when non-use of the ApiToken's tokens is counted: the time the Secret records
/// (`recorded`), or without it the current token's issue (`issued`); never before the oldest
/// registration (an edited record cannot make a token look older than it is), and never before
/// the current token was registered again (usage the store lost is not held against it).
pub fn counting_from(
    recorded: Option<Timestamp>,
    issued: Timestamp,
    cur: &RegObs,
    registrations: &[RegObs],
) -> Timestamp {
    let oldest = registrations
        .iter()
        .map(|r| r.created_at)
        .min()
        .unwrap_or(cur.created_at);
    let mut from = recorded.unwrap_or(issued).max(oldest);
    if cur.created_at > issued + REREGISTERED_AFTER {
        from = from.max(cur.created_at);
    }
    from
}

/// What a new token's Secret records as the start of the count: the count goes on through a
/// new token (`carried`, from the Secret it replaces), and starts again at `issued` for a first
/// token or after a token was revoked as unused (`restart`).
pub fn counting_from_at_issue(
    carried: Option<Timestamp>,
    restart: bool,
    issued: Timestamp,
) -> Timestamp {
    match carried {
        Some(t) if !restart && t <= issued => t,
        _ => issued,
    }
}

/// The ApiToken's tokens judged by `rule`: idle since the latest use of any of `registrations`,
/// not before `from`. `Ok(idle)` (named by `fingerprint`, the current token) when unused now,
/// `Err(Some(at))` with the time it will be if nothing uses them before then.
pub fn unused(
    rule: &Unused,
    fingerprint: &str,
    registrations: &[RegObs],
    from: Timestamp,
    now: Timestamp,
) -> Result<Idle, Option<Timestamp>> {
    let since = registrations
        .iter()
        .filter_map(|r| r.last_used_at)
        .fold(from, Timestamp::max);
    match since.checked_add(rule.after) {
        Ok(at) if at > now => Err(Some(at)),
        Ok(_) => Ok(Idle {
            fingerprint: fingerprint.to_owned(),
            since,
            after: rule.after,
        }),
        Err(_) => Err(None),
    }
}

/// A previous token in its grace period, as the rules here see it.
#[derive(Debug, Clone, Copy)]
pub struct InGrace<'a> {
    pub token: &'a RegObs,
    /// When its grace period ends (its expiry in the store).
    pub until: Timestamp,
    /// When the current token was issued: the rotation that started the grace period.
    pub rotated_at: Timestamp,
}

/// What to do with a previous token before its grace period ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Early {
    /// Revoke it now: idle since then, and the new token is in use.
    Retire { since: Timestamp },
    /// Not yet. No time to come back at: a use moves it, so the usage refresh looks again.
    Wait,
}

/// Whether a previous token retires early under `retire_when_idle`, given the current token.
pub fn retire_early(
    g: InGrace<'_>,
    current: &RegObs,
    retire_when_idle: Option<SignedDuration>,
    now: Timestamp,
) -> Early {
    let Some(window) = retire_when_idle else {
        return Early::Wait;
    };
    let since = idle_since(g.token, g.rotated_at);
    let at = since.checked_add(window).ok().filter(|at| *at < g.until);
    match at {
        Some(at) if at <= now && current.use_count > 0 => Early::Retire { since },
        _ => Early::Wait,
    }
}

/// The middle of a grace period.
pub fn half_way(g: InGrace<'_>) -> Timestamp {
    let half = g.until.duration_since(g.rotated_at) / 2;
    g.rotated_at.checked_add(half).unwrap_or(g.until)
}

/// Whether a previous token is still in use half-way through its grace period: `Ok(true)` when
/// it is past half-way and was used since the rotation, within the last `retireWhenIdle`
/// (without it, within the last quarter of the grace period); `Ok(false)` when not; `Err(at)`
/// before half-way (look again at `at`).
pub fn still_in_use(
    g: InGrace<'_>,
    retire_when_idle: Option<SignedDuration>,
    now: Timestamp,
) -> Result<bool, Timestamp> {
    let mid = half_way(g);
    if now < mid || now >= g.until {
        return if now < mid { Err(mid) } else { Ok(false) };
    }
    let half = mid.duration_since(g.rotated_at);
    let window = retire_when_idle.map_or(half / 2, |w| w.min(half));
    let used_after_rotation = g.token.last_used_at.filter(|u| *u > g.rotated_at);
    Ok(used_after_rotation.is_some_and(|u| now.duration_since(u) <= window))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::resource::crd::UnusedAction;

    const T0: i64 = 1_800_000_000;

    fn at(offset_secs: i64) -> Timestamp {
        Timestamp::from_second(T0 + offset_secs).unwrap()
    }

    fn reg(last_used: Option<i64>, uses: i64) -> RegObs {
        RegObs {
            id: "u.1".into(),
            fingerprint: "fp1".into(),
            name: "a".into(),
            scopes: vec!["orders:read".into()],
            expires_at: None,
            revoked: false,
            last_used_at: last_used.map(at),
            use_count: uses,
            created_at: at(0),
        }
    }

    const DAY: i64 = 86_400;

    fn rule() -> Unused {
        Unused {
            after: SignedDuration::from_hours(24),
            action: UnusedAction::Warn,
        }
    }

    #[test]
    fn never_used_tokens_are_idle_since_counting_started() {
        let regs = [reg(None, 0)];
        assert_eq!(
            unused(&rule(), "fp1", &regs, at(0), at(DAY - 1)),
            Err(Some(at(DAY)))
        );
        let idle = unused(&rule(), "fp1", &regs, at(0), at(DAY)).unwrap();
        assert_eq!(idle.since, at(0));
        assert_eq!(idle.fingerprint, "fp1");
    }

    #[test]
    fn a_use_of_any_token_restarts_the_count() {
        // A previous token still used by an app that was not restarted.
        let regs = [reg(None, 0), reg(Some(3600), 1)];
        assert_eq!(
            unused(&rule(), "fp1", &regs, at(0), at(DAY + 10)),
            Err(Some(at(DAY + 3600)))
        );
        assert_eq!(
            unused(&rule(), "fp1", &regs, at(0), at(DAY + 3600)).map(|i| i.since),
            Ok(at(3600))
        );
    }

    #[test]
    fn the_count_goes_on_through_new_tokens_and_restarts_after_a_revocation_as_unused() {
        assert_eq!(counting_from_at_issue(Some(at(0)), false, at(DAY)), at(0));
        assert_eq!(counting_from_at_issue(Some(at(0)), true, at(DAY)), at(DAY));
        assert_eq!(counting_from_at_issue(None, false, at(DAY)), at(DAY));
        // A recorded start in the future is not believed.
        assert_eq!(
            counting_from_at_issue(Some(at(2 * DAY)), false, at(DAY)),
            at(DAY)
        );
    }

    #[test]
    fn counting_never_starts_before_the_oldest_token_nor_before_a_registration_made_again() {
        let mut cur = reg(None, 0);
        cur.created_at = at(DAY);
        let mut first = reg(None, 0);
        first.created_at = at(10);
        let regs = [first, cur.clone()];
        // An edited record (1970) counts from the oldest registration.
        let edited = Timestamp::UNIX_EPOCH;
        assert_eq!(counting_from(Some(edited), at(DAY), &cur, &regs), at(10));
        assert_eq!(counting_from(Some(at(100)), at(DAY), &cur, &regs), at(100));
        assert_eq!(counting_from(None, at(DAY), &cur, &regs), at(DAY));
        // Issued a month before the store registered it again: count from the registration.
        assert_eq!(
            counting_from(Some(at(100)), at(-29 * DAY), &cur, &regs),
            at(DAY)
        );
    }

    #[test]
    fn a_use_recorded_before_the_issue_time_counts_from_the_issue() {
        // A registration whose issue time in the Secret is later than a recorded use.
        let r = reg(Some(10), 1);
        assert_eq!(idle_since(&r, at(100)), at(100));
    }

    fn grace(token: &RegObs) -> InGrace<'_> {
        InGrace {
            token,
            until: at(3600),
            rotated_at: at(0),
        }
    }

    const MINUTE: Option<SignedDuration> = Some(SignedDuration::from_secs(60));

    #[test]
    fn an_idle_previous_token_retires_once_the_new_one_is_used() {
        let old = reg(Some(-100), 5);
        let unused_new = reg(None, 0);
        let used_new = reg(Some(30), 1);
        // Counted from the rotation, not from its last use before it.
        assert_eq!(
            retire_early(grace(&old), &used_new, MINUTE, at(59)),
            Early::Wait
        );
        assert_eq!(
            retire_early(grace(&old), &used_new, MINUTE, at(60)),
            Early::Retire { since: at(0) }
        );
        // The new token not used yet: nothing, and no time to come back at.
        assert_eq!(
            retire_early(grace(&old), &unused_new, MINUTE, at(600)),
            Early::Wait
        );
    }

    #[test]
    fn a_previous_token_in_use_does_not_retire() {
        let old = reg(Some(500), 9);
        let new = reg(Some(30), 1);
        assert_eq!(
            retire_early(grace(&old), &new, MINUTE, at(530)),
            Early::Wait
        );
        assert_eq!(
            retire_early(grace(&old), &new, MINUTE, at(560)),
            Early::Retire { since: at(500) }
        );
        // Without retireWhenIdle: never early.
        assert_eq!(retire_early(grace(&old), &new, None, at(3000)), Early::Wait);
        // The grace period ends first: nothing early to do.
        let late = reg(Some(3590), 9);
        assert_eq!(
            retire_early(grace(&late), &new, MINUTE, at(3595)),
            Early::Wait
        );
    }

    #[test]
    fn still_in_use_is_judged_from_half_way() {
        let used_recently = reg(Some(1790), 9);
        assert_eq!(
            still_in_use(grace(&used_recently), MINUTE, at(1700)),
            Err(at(1800))
        );
        assert_eq!(
            still_in_use(grace(&used_recently), MINUTE, at(1800)),
            Ok(true)
        );
        // Used only before the rotation, or not for longer than retireWhenIdle: not in use.
        let before = reg(Some(-5), 9);
        assert_eq!(still_in_use(grace(&before), MINUTE, at(1800)), Ok(false));
        let a_while_ago = reg(Some(1000), 9);
        assert_eq!(
            still_in_use(grace(&a_while_ago), MINUTE, at(1800)),
            Ok(false)
        );
        // Without retireWhenIdle, a use within the last quarter of the grace period (15 min of
        // 1 h): pods draining just after the rollout do not count.
        let draining = reg(Some(120), 9);
        assert_eq!(still_in_use(grace(&draining), None, at(1800)), Ok(false));
        assert_eq!(still_in_use(grace(&a_while_ago), None, at(1800)), Ok(true));
        assert_eq!(still_in_use(grace(&a_while_ago), None, at(1901)), Ok(false));
        // After the grace period: nothing to say.
        assert_eq!(
            still_in_use(grace(&used_recently), MINUTE, at(3600)),
            Ok(false)
        );
    }
}
