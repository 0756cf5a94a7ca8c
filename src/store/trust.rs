//! When the introspection cache may answer: the trust bound.
//!
//! Pure module (no I/O; the clock is a parameter). With PostgreSQL, a store process hears of
//! changes made by other processes only through its change listener, and a listener whose link
//! has gone silent (a blackhole: no reset, no close) looks exactly like one with nothing to say.
//! So the cache is not trusted because the listener *seems* connected; it is trusted because
//! the listener has *proven* itself end to end, recently:
//!
//! 1. every heartbeat interval the process sends a notification to a channel of its own, through
//!    its own database connection, stamped with the time it was sent ([`Trust::stamp`]);
//! 2. PostgreSQL delivers notifications in commit order, and the heartbeat commits after it was
//!    sent, so when the listener receives a heartbeat stamped `s`, every change committed
//!    before `s`, and after the listener's `LISTEN` took effect, has already reached the
//!    listener, and its invalidation is applied. (Changes committed before the `LISTEN` are
//!    covered by emptying the cache once the `LISTEN` is in place: see [`super::notify`].);
//! 3. the cache answers at time `t` only while `t < s + bound` for the latest such `s`
//!    ([`Trust::proven`], [`Trust::is_trusted_at`]).
//!
//! Hence a change committed at `c` and not yet applied means `s <= c`, and the cache stops
//! answering by `c + bound` at the latest: **no revoked token is answered as active more than
//! `bound` after its revocation committed**, whatever the network does. Past the bound the
//! process reads the database (and answers 503 if it cannot). When the listener's connection
//! is lost or replaced, notifications may have been lost with it: trust is withdrawn
//! ([`Trust::withdraw`]) and the cache emptied, and only a heartbeat received on the new
//! connection gives it back.
//!
//! A SQLite file has one writer, this process, so its cache is trusted for ever
//! ([`Trust::always`]).
//!
//! The clock is [`Instant`] (`CLOCK_MONOTONIC` on Linux), which does not advance while the
//! machine is suspended: a process resumed from a suspension (a VM paused, a laptop closed) may
//! answer from its cache for up to one bound of its own clock before the listener's silence
//! shows. Servers are not suspended in normal operation; the bound assumes they are not.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The default bound: how long after a change commits the cache may still answer as before.
pub const DEFAULT_BOUND: Duration = Duration::from_secs(2);

/// Shortest bound accepted (a heartbeat every quarter of it is sent through the database).
pub const MIN_BOUND: Duration = Duration::from_millis(200);

/// Longest bound accepted: past it the promise means little, and the listener's silence limit
/// (five bounds) stays far from overflowing a clock.
pub const MAX_BOUND: Duration = Duration::from_secs(3600);

/// `until` value of a cache that is always trusted.
const ALWAYS: u64 = u64::MAX;
/// `until` value of a cache that is not trusted now.
const NEVER: u64 = 0;

/// Whether, and until when, the cache may answer.
#[derive(Debug)]
pub struct Trust {
    /// The origin of every stamp and deadline of this process.
    base: Instant,
    bound: Duration,
    /// Nanoseconds after `base` until which the cache is trusted ([`ALWAYS`], [`NEVER`]).
    until: AtomicU64,
}

impl Trust {
    /// Trusted for ever (a SQLite file: no other writer).
    pub fn always() -> Self {
        Trust {
            base: Instant::now(),
            bound: Duration::MAX,
            until: AtomicU64::new(ALWAYS),
        }
    }

    /// Trusted only within `bound` (clamped to [`MIN_BOUND`]..=[`MAX_BOUND`]) of the latest
    /// heartbeat received; not trusted until the first.
    pub fn bounded(bound: Duration) -> Self {
        Trust {
            base: Instant::now(),
            bound: bound.clamp(MIN_BOUND, MAX_BOUND),
            until: AtomicU64::new(NEVER),
        }
    }

    pub fn bound(&self) -> Duration {
        self.bound
    }

    /// How often to send a heartbeat: a quarter of the bound, so that a round trip, a late
    /// timer or a busy runtime can take three quarters of it before the cache stops answering.
    pub fn heartbeat_interval(&self) -> Duration {
        self.bound / 4
    }

    /// How long without a heartbeat before the listener's connection is replaced: the link is
    /// then taken for dead even though it never said so.
    pub fn silence_limit(&self) -> Duration {
        self.bound.saturating_mul(5)
    }

    fn nanos(&self, at: Instant) -> u64 {
        let n = at.saturating_duration_since(self.base).as_nanos();
        // Never 0 (NEVER) for a real instant, never ALWAYS: 584 years after start.
        u64::try_from(n).unwrap_or(ALWAYS - 1).clamp(1, ALWAYS - 1)
    }

    /// May the cache answer at `now`.
    pub fn is_trusted_at(&self, now: Instant) -> bool {
        let until = self.until.load(Ordering::Acquire);
        until == ALWAYS || self.nanos(now) < until
    }

    /// May the cache answer now (reads the clock only for a bounded cache).
    pub fn is_trusted(&self) -> bool {
        let until = self.until.load(Ordering::Acquire);
        until == ALWAYS || (until != NEVER && self.nanos(Instant::now()) < until)
    }

    /// A heartbeat sent at `sent_at` was received on the current listener connection: every
    /// change committed before `sent_at` has been applied.
    pub fn proven(&self, sent_at: Instant) {
        let until = self
            .nanos(sent_at)
            .saturating_add(self.nanos_of(self.bound));
        let until = until.min(ALWAYS - 1);
        // fetch_update, not fetch_max: an ALWAYS cache stays so, and a late, older proof never
        // shortens a newer one.
        let _ = self
            .until
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                (cur != ALWAYS && cur < until).then_some(until)
            });
    }

    /// How long ago the latest heartbeat that came back was sent (`None`: none on this
    /// connection yet, or a cache that needs none). Above the bound the cache does not answer.
    pub fn proof_age(&self, now: Instant) -> Option<Duration> {
        let until = self.until.load(Ordering::Acquire);
        if until == ALWAYS || until == NEVER {
            return None;
        }
        let sent = until.saturating_sub(self.nanos_of(self.bound));
        Some(Duration::from_nanos(self.nanos(now).saturating_sub(sent)))
    }

    /// The listener's connection is gone or being replaced: notifications may be lost.
    pub fn withdraw(&self) {
        let _ = self
            .until
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                (cur != ALWAYS).then_some(NEVER)
            });
    }

    fn nanos_of(&self, d: Duration) -> u64 {
        u64::try_from(d.as_nanos()).unwrap_or(ALWAYS - 1)
    }

    /// The payload of a heartbeat sent at `at`.
    pub fn stamp(&self, at: Instant) -> String {
        self.nanos(at).to_string()
    }

    /// The send time of a heartbeat payload; `None` for anything this process did not stamp,
    /// or a stamp from the future.
    pub fn parse_stamp(&self, payload: &str, now: Instant) -> Option<Instant> {
        let n: u64 = payload.parse().ok()?;
        let at = self.base.checked_add(Duration::from_nanos(n))?;
        (at <= now).then_some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: Duration = Duration::from_secs(2);

    #[test]
    fn a_bounded_cache_is_untrusted_until_its_first_heartbeat() {
        let t = Trust::bounded(BOUND);
        assert!(!t.is_trusted());
        assert!(!t.is_trusted_at(Instant::now()));
    }

    #[test]
    fn a_heartbeat_trusts_the_cache_for_the_bound_after_it_was_sent_not_received() {
        let t = Trust::bounded(BOUND);
        let sent = Instant::now();
        // Received late (a slow link): the bound still counts from the send.
        t.proven(sent);
        assert!(t.is_trusted_at(sent));
        assert!(t.is_trusted_at(sent + BOUND - Duration::from_millis(1)));
        assert!(!t.is_trusted_at(sent + BOUND));
        assert!(!t.is_trusted_at(sent + BOUND * 10));
    }

    #[test]
    fn an_older_proof_never_shortens_a_newer_one() {
        let t = Trust::bounded(BOUND);
        let first = Instant::now();
        let later = first + Duration::from_secs(1);
        t.proven(later);
        t.proven(first);
        assert!(t.is_trusted_at(first + BOUND + Duration::from_millis(500)));
    }

    #[test]
    fn withdrawing_ends_trust_at_once_until_a_new_heartbeat() {
        let t = Trust::bounded(BOUND);
        let sent = Instant::now();
        t.proven(sent);
        t.withdraw();
        assert!(!t.is_trusted_at(sent));
        let again = sent + Duration::from_millis(10);
        t.proven(again);
        assert!(t.is_trusted_at(again));
    }

    #[test]
    fn an_always_trusted_cache_ignores_heartbeats_and_withdrawals() {
        let t = Trust::always();
        t.withdraw();
        t.proven(Instant::now());
        assert!(t.is_trusted());
        assert!(t.is_trusted_at(Instant::now() + Duration::from_secs(86_400 * 365)));
    }

    #[test]
    fn stamps_round_trip_and_foreign_or_future_payloads_are_refused() {
        let t = Trust::bounded(BOUND);
        let at = Instant::now();
        let parsed = t.parse_stamp(&t.stamp(at), at + Duration::from_millis(5));
        let parsed = parsed.unwrap_or_else(|| panic!("own stamp refused"));
        assert!(parsed <= at && at - parsed < Duration::from_micros(1));
        assert_eq!(t.parse_stamp("not a stamp", at), None);
        assert_eq!(t.parse_stamp("-1", at), None);
        let future = t.stamp(at + Duration::from_secs(60));
        assert_eq!(t.parse_stamp(&future, at), None);
    }

    #[test]
    fn the_proof_age_counts_from_the_send_of_the_latest_heartbeat() {
        let t = Trust::bounded(BOUND);
        let now = Instant::now();
        assert_eq!(t.proof_age(now), None);
        t.proven(now);
        let later = now + Duration::from_millis(700);
        let age = t.proof_age(later).unwrap_or_default();
        assert!(
            age >= Duration::from_millis(699) && age <= Duration::from_millis(701),
            "{age:?}"
        );
        assert_eq!(Trust::always().proof_age(later), None);
    }

    #[test]
    fn bounds_are_clamped() {
        assert_eq!(Trust::bounded(Duration::ZERO).bound(), MIN_BOUND);
        assert_eq!(Trust::bounded(Duration::MAX).bound(), MAX_BOUND);
    }

    #[test]
    fn the_heartbeat_and_silence_limits_follow_the_bound() {
        let t = Trust::bounded(BOUND);
        assert_eq!(t.heartbeat_interval(), Duration::from_millis(500));
        assert_eq!(t.silence_limit(), Duration::from_secs(10));
    }
}
