//! Coalesced usage counters. Memory only; the flush writes through the repository.
//!
//! Recording a use is an in-memory increment; a background task flushes the sums to the database
//! every few seconds (and once more at shutdown), so the hot path never writes to the database.
//! Additive updates make this correct with several store processes on one PostgreSQL. A failed
//! flush keeps its figures for the next attempt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::model::TokenId;
use super::repo::{RepoError, Repository, UsageDelta};

#[derive(Default)]
pub struct Usage {
    pending: Mutex<HashMap<Arc<str>, (i64, i64)>>,
}

impl Usage {
    /// Count one use of `id` at `now_ms`.
    pub fn record(&self, id: &Arc<str>, now_ms: i64) {
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let e = p.entry(Arc::clone(id)).or_insert((0, now_ms));
        e.0 += 1;
        e.1 = e.1.max(now_ms);
    }

    /// Write what has accumulated. On failure the figures are kept for the next flush.
    pub async fn flush(&self, repo: &dyn Repository) -> Result<usize, RepoError> {
        let taken =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        if taken.is_empty() {
            return Ok(0);
        }
        let deltas: Vec<UsageDelta> = taken
            .iter()
            .filter_map(|(id, &(count, last))| {
                TokenId::parse(id).ok().map(|id| UsageDelta {
                    id,
                    count,
                    last_used_at_ms: last,
                })
            })
            .collect();
        match repo.record_usage(&deltas).await {
            Ok(()) => Ok(deltas.len()),
            Err(e) => {
                let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
                for (id, (count, last)) in taken {
                    let e = p.entry(id).or_insert((0, last));
                    e.0 += count;
                    e.1 = e.1.max(last);
                }
                Err(e)
            }
        }
    }

    /// Uses not yet flushed, for tests and metrics.
    pub fn pending(&self) -> usize {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}
