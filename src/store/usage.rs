//! Coalesced usage counters. Memory only; the flush writes through the repository.
//!
//! Recording a use is an in-memory increment; a background task flushes the sums to the database
//! every few seconds (and once more at shutdown), so the hot path never writes to the database.
//! Additive updates make this correct with several store processes on one PostgreSQL. A failed
//! flush keeps its figures for the next attempt.
//!
//! Each token in use has a [`Slot`] of two atomics. The introspection cache keeps the token's
//! slot in its entry, so that recording a cached token's use is two atomic operations on memory
//! of that token alone: no lock and no map lookup on the hot path. (A profile under load showed
//! the mutex-guarded map this replaces, and the futex wake-ups its contention caused between the
//! two worker threads, as the largest cost of an active answer over an inactive one.) The map of
//! slots is locked only to hand out a slot (a cache fill) and by the flush.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::model::TokenId;
use super::repo::{RepoError, Repository, UsageDelta};

/// The unflushed uses of one token: how many, and the latest time (ms).
#[derive(Debug, Default)]
pub struct Slot {
    count: AtomicI64,
    last_ms: AtomicI64,
}

impl Slot {
    /// Count one use at `now_ms`. The time is stored before the count, so a flush that sees the
    /// count also sees a time at least as late as that use.
    pub fn record(&self, now_ms: i64) {
        self.last_ms.fetch_max(now_ms, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Release);
    }

    fn add(&self, count: i64, last_ms: i64) {
        self.last_ms.fetch_max(last_ms, Ordering::Relaxed);
        self.count.fetch_add(count, Ordering::Release);
    }
}

#[derive(Default)]
pub struct Usage {
    slots: Mutex<HashMap<Arc<str>, Arc<Slot>>>,
}

impl Usage {
    /// The slot of `id`, created when missing. Callers that record many uses of one token keep
    /// it (the introspection cache does, in its entry).
    pub fn slot(&self, id: &Arc<str>) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(slots.entry(Arc::clone(id)).or_default())
    }

    /// Count one use of `id` at `now_ms` (without a kept slot: one map lookup under the lock).
    pub fn record(&self, id: &Arc<str>, now_ms: i64) {
        self.slot(id).record(now_ms);
    }

    /// Take every slot's figures, and forget the slots that had none and that nobody else holds
    /// (a slot is only handed out under the lock held here, so one held by the map alone cannot
    /// gain a holder meanwhile).
    fn take(&self) -> Vec<(Arc<str>, i64, i64)> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let mut taken = Vec::new();
        slots.retain(|id, slot| {
            let count = slot.count.swap(0, Ordering::Acquire);
            if count > 0 {
                taken.push((Arc::clone(id), count, slot.last_ms.load(Ordering::Relaxed)));
                true
            } else {
                Arc::strong_count(slot) > 1
            }
        });
        taken
    }

    /// Write what has accumulated. On failure the figures are kept for the next flush.
    pub async fn flush(&self, repo: &dyn Repository) -> Result<usize, RepoError> {
        let taken = self.take();
        if taken.is_empty() {
            return Ok(0);
        }
        let deltas: Vec<UsageDelta> = taken
            .iter()
            .filter_map(|(id, count, last)| {
                TokenId::parse(id).ok().map(|id| UsageDelta {
                    id,
                    count: *count,
                    last_used_at_ms: *last,
                })
            })
            .collect();
        match repo.record_usage(&deltas).await {
            Ok(()) => Ok(deltas.len()),
            Err(e) => {
                for (id, count, last) in taken {
                    self.slot(&id).add(count, last);
                }
                Err(e)
            }
        }
    }

    /// Tokens with uses not yet flushed, for tests and metrics.
    pub fn pending(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|s| s.count.load(Ordering::Relaxed) > 0)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_slots_and_lookups_count_into_one_figure_and_idle_slots_are_forgotten() {
        let usage = Usage::default();
        let id: Arc<str> = Arc::from("t-1");
        let kept = usage.slot(&id);
        kept.record(10);
        kept.record(30);
        usage.record(&id, 20);
        assert_eq!(usage.pending(), 1);
        let taken = usage.take();
        assert_eq!(taken.len(), 1);
        assert_eq!((taken[0].1, taken[0].2), (3, 30));
        assert_eq!(usage.pending(), 0);
        // Uses after a take go to the next one, through the same kept slot.
        kept.record(40);
        let taken = usage.take();
        assert_eq!((taken[0].1, taken[0].2), (1, 40));
        // A slot without figures stays while someone holds it, and goes when nobody does.
        assert!(usage.take().is_empty());
        assert_eq!(usage.slots.lock().unwrap().len(), 1);
        drop(kept);
        assert!(usage.take().is_empty());
        assert!(usage.slots.lock().unwrap().is_empty());
    }

    #[test]
    fn a_use_recorded_after_its_slot_was_forgotten_is_still_counted() {
        let usage = Usage::default();
        let id: Arc<str> = Arc::from("t-1");
        usage.record(&id, 5);
        assert_eq!(usage.take().len(), 1);
        assert!(usage.take().is_empty()); // forgotten now
        usage.record(&id, 6);
        let taken = usage.take();
        assert_eq!((taken[0].1, taken[0].2), (1, 6));
    }
}
