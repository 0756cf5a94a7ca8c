//! The store's source of "now", injected so that tests can move time. Pure apart from reading
//! the system clock in [`system_clock`].

use std::sync::Arc;

/// Source of "now" in Unix milliseconds.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| jiff::Timestamp::now().as_millisecond())
}

/// The database's clock as this process sees it: how far its wall clock is behind the
/// database's. With several store processes on one PostgreSQL, each decides on its own
/// whether a token has expired; a process whose clock is 60 s behind would answer an expired
/// token active for 60 s. Every heartbeat also reads the database's clock, and the store's
/// clock ([`corrected`]) follows the database's: every process agrees on "now" within a
/// heartbeat's round trip.
#[derive(Debug, Default)]
pub struct Skew {
    offset_ms: std::sync::atomic::AtomicI64,
}

impl Skew {
    /// The database said `db_ms` between the local readings `before_ms` and `after_ms`: it is
    /// taken to have read its clock half-way, so the estimate is off by at most half the round
    /// trip.
    pub fn observe(&self, before_ms: i64, db_ms: i64, after_ms: i64) {
        let local = before_ms + (after_ms - before_ms) / 2;
        self.offset_ms.store(
            db_ms.saturating_sub(local),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Milliseconds to add to the local clock (0 until the first observation).
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// `base`, moved to the database's clock by `skew`.
pub fn corrected(base: Clock, skew: Arc<Skew>) -> Clock {
    Arc::new(move || base().saturating_add(skew.offset_ms()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_corrected_clock_follows_the_database_from_the_midpoint_of_the_round_trip() {
        let skew = Arc::new(Skew::default());
        let clock = corrected(Arc::new(|| 1_000_000), Arc::clone(&skew));
        assert_eq!(clock(), 1_000_000, "no correction before an observation");
        // Local 1_000_000..1_000_010, the database said 1_060_005: 60 s ahead.
        skew.observe(1_000_000, 1_060_005, 1_000_010);
        assert_eq!(skew.offset_ms(), 60_000);
        assert_eq!(clock(), 1_060_000);
        // And behind.
        skew.observe(1_000_000, 940_000, 1_000_000);
        assert_eq!(clock(), 940_000);
    }
}
