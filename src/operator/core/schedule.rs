//! How a token ages: when it expires, when it is due to be replaced and why, and which new
//! `loop.dev/rotate` values ask for a rotation. Pure: the caller passes every time.
//!
//! - **Expiry** (`spec.expiry.after`): a token expires `after` its issue; the store is told at
//!   issue, so the expiry holds while the operator is down.
//! - **Due** (`spec.rotation.every`, `spec.expiry.renew`): the current token is replaced at
//!   `issued + every`, or, when it expires and `renew` is on, at `issued + 2/3 × after`,
//!   whichever comes first. Both count from the current token's issue, so an operator that was
//!   down across several periods rotates once when it is back, and the period starts again.
//! - **Rotate values**: when the new value and the one the current token answered are both
//!   RFC 3339 timestamps, only a later timestamp rotates (a GitOps tool putting back the value
//!   from Git after an action set a newer one does nothing); any other change rotates once. (A
//!   mistyped far-future timestamp would hold back every later timestamp: the status says when
//!   a value is ignored, and a value that is not a timestamp, such as `leaked-1`, always
//!   rotates.)

use jiff::{SignedDuration, Timestamp};

/// How tokens expire, with defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    pub after: SignedDuration,
    pub renew: bool,
}

/// What ages a token, from the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Aging {
    pub every: Option<SignedDuration>,
    pub expiry: Option<Expiry>,
}

/// Why a token is due to be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// `spec.rotation.every` has passed since it was issued.
    Scheduled,
    /// It is 2/3 of the way to its expiry (`spec.expiry.renew`).
    Renewal,
}

impl Aging {
    /// When a token issued at `issued` expires, if tokens expire.
    /// Milliseconds, as the store keeps it, so that it compares equal to what the store says.
    pub fn expiry_of(&self, issued: Timestamp) -> Option<Timestamp> {
        let at = self.expiry.and_then(|e| issued.checked_add(e.after).ok())?;
        Timestamp::from_millisecond(at.as_millisecond()).ok()
    }

    /// When a token issued at `issued` is due to be replaced, and why; `None` when nothing
    /// replaces it on its own. On a tie the schedule is the reason.
    pub fn due(&self, issued: Timestamp) -> Option<(Timestamp, Due)> {
        let scheduled = self
            .every
            .and_then(|every| issued.checked_add(every).ok())
            .map(|at| (at, Due::Scheduled));
        let renewal = self
            .expiry
            .filter(|e| e.renew)
            .and_then(|e| e.after.checked_mul(2))
            .and_then(|twice| issued.checked_add(twice / 3).ok())
            .map(|at| (at, Due::Renewal));
        match (scheduled, renewal) {
            (Some(s), Some(r)) if r.0 < s.0 => Some(r),
            (Some(s), _) => Some(s),
            (None, r) => r,
        }
    }

    /// Whether an expired token stays expired until a human asks for a new one.
    pub fn lets_expire(&self) -> bool {
        self.expiry.is_some_and(|e| !e.renew)
    }
}

/// Whether the `loop.dev/rotate` value `new` asks for a rotation, given the value `handled` that
/// the current token answered.
pub fn rotation_requested(new: Option<&str>, handled: Option<&str>) -> bool {
    let Some(new) = new else {
        return false;
    };
    if Some(new) == handled {
        return false;
    }
    match (rfc3339(new), handled.and_then(rfc3339)) {
        (Some(new), Some(handled)) => new > handled,
        _ => true,
    }
}

/// An RFC 3339 timestamp (`2026-12-01T09:00:00Z`, with an offset or `Z`), or `None`.
fn rfc3339(v: &str) -> Option<Timestamp> {
    // jiff also reads forms RFC 3339 does not allow (`2026-12-01T09Z`); require the date, the
    // `T` (or space) and seconds, which every tool that writes a timestamp writes.
    let b = v.as_bytes();
    let shaped = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && matches!(b[10], b'T' | b't' | b' ')
        && b[13] == b':'
        && b[16] == b':';
    shaped.then(|| v.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUED: i64 = 1_800_000_000;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("a time")
    }

    fn hours(h: i64) -> SignedDuration {
        SignedDuration::from_hours(h)
    }

    #[test]
    fn nothing_ages_without_every_or_expiry() {
        let a = Aging::default();
        assert_eq!(a.due(at(ISSUED)), None);
        assert_eq!(a.expiry_of(at(ISSUED)), None);
        assert!(!a.lets_expire());
    }

    #[test]
    fn every_counts_from_the_current_token_s_issue() {
        let a = Aging {
            every: Some(hours(720)),
            expiry: None,
        };
        assert_eq!(
            a.due(at(ISSUED)),
            Some((at(ISSUED + 720 * 3600), Due::Scheduled))
        );
    }

    #[test]
    fn renewal_comes_at_two_thirds_of_the_expiry_unless_every_is_sooner() {
        let renewing = |every| Aging {
            every,
            expiry: Some(Expiry {
                after: hours(90),
                renew: true,
            }),
        };
        assert_eq!(
            renewing(None).due(at(ISSUED)),
            Some((at(ISSUED + 60 * 3600), Due::Renewal))
        );
        assert_eq!(
            renewing(Some(hours(24))).due(at(ISSUED)),
            Some((at(ISSUED + 24 * 3600), Due::Scheduled))
        );
        assert_eq!(
            renewing(Some(hours(80))).due(at(ISSUED)),
            Some((at(ISSUED + 60 * 3600), Due::Renewal))
        );
        assert_eq!(
            renewing(None).expiry_of(at(ISSUED)),
            Some(at(ISSUED + 90 * 3600))
        );
    }

    #[test]
    fn without_renew_the_token_expires_and_only_every_replaces_it() {
        let a = Aging {
            every: None,
            expiry: Some(Expiry {
                after: hours(90),
                renew: false,
            }),
        };
        assert_eq!(a.due(at(ISSUED)), None);
        assert!(a.lets_expire());
        let scheduled = Aging {
            every: Some(hours(24)),
            ..a
        };
        assert_eq!(
            scheduled.due(at(ISSUED)),
            Some((at(ISSUED + 24 * 3600), Due::Scheduled))
        );
    }

    fn rq(new: Option<&str>, handled: Option<&str>) -> bool {
        rotation_requested(new, handled)
    }

    #[test]
    fn a_word_always_gets_past_a_far_future_timestamp() {
        assert!(!rq(
            Some("2026-12-09T09:00:00Z"),
            Some("2062-01-01T00:00:00Z")
        ));
        assert!(rq(Some("leaked-1"), Some("2062-01-01T00:00:00Z")));
    }

    #[test]
    fn a_later_timestamp_rotates_and_an_earlier_or_equal_one_does_not() {
        let t1 = "2026-12-01T09:00:00Z";
        let t2 = "2026-12-02T09:00:00Z";
        assert!(rq(Some(t2), Some(t1)));
        assert!(!rq(Some(t1), Some(t2)));
        assert!(!rq(Some(t1), Some(t1)));
        // The same instant written with another offset is not later.
        assert!(!rotation_requested(
            Some("2026-12-01T10:00:00+01:00"),
            Some(t1)
        ));
        assert!(rotation_requested(
            Some("2026-12-01T09:00:01.5+00:00"),
            Some(t1)
        ));
    }

    #[test]
    fn any_other_change_of_value_rotates_once() {
        assert!(rq(Some("a"), None));
        assert!(rq(Some("b"), Some("a")));
        assert!(rq(Some("a"), Some("b")));
        assert!(!rq(Some("a"), Some("a")));
        assert!(!rq(None, Some("a")));
        // A timestamp after a word, a word after a timestamp: a change, so a rotation.
        assert!(rq(Some("2026-12-01T09:00:00Z"), Some("r1")));
        assert!(rq(Some("r1"), Some("2026-12-01T09:00:00Z")));
        // Not RFC 3339 (no seconds, no offset, a bare date): compared as words.
        assert!(rotation_requested(
            Some("2026-12-01T09:00"),
            Some("2026-12-02T09:00")
        ));
        assert!(rq(Some("2026-12-01"), Some("2026-12-02")));
    }
}
