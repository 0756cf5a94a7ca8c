//! The store's source of "now", injected so that tests can move time. Pure apart from reading
//! the system clock in [`system_clock`].

use std::sync::Arc;

/// Source of "now" in Unix milliseconds.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| jiff::Timestamp::now().as_millisecond())
}
