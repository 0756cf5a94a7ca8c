//! The introspection path: checksum, cache, database, usage. Reaches the database only through
//! the repository, on a cache miss.
//!
//! Loop's API asks the store about every call it serves, so answers come from memory. The rule
//! that makes that safe: **a revoked or expired token is never answered as active**.
//!
//! - Expiry is checked on every answer against the clock, never cached as a verdict.
//! - Every write through this process invalidates the entry before the HTTP response is sent,
//!   and also when the request is dropped mid-write (see [`super::writes`]).
//! - With PostgreSQL, writes through other processes arrive as notifications (see
//!   [`super::repo::NOTIFY_CHANNEL`]) and invalidate the entry the moment they commit.
//! - A read-through fill races with invalidations; every invalidation bumps a generation, and a
//!   fill whose database read started before the latest invalidation is discarded.
//! - While the notification listener is disconnected the cache is *untrusted*: it is emptied and
//!   every request reads the database (and fails closed with 503 if that is down too), because
//!   notifications sent in the gap are lost.
//!
//! Unknown but well-formed tokens are cached too (a bounded set), so a flood of made-up tokens
//! with valid checksums does not become a flood of database queries; registrations invalidate
//! them like any other change. The set has two generations of up to [`MAX_UNKNOWN`]` / 2`
//! hashes each: when the current one is full it becomes the old one and the previous old one is
//! dropped, so passing the bound forgets the oldest half, never everything at once.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use super::metrics::{CacheResult, IntrospectOutcome, Metrics};
use super::model::{Activity, TokenRecord, activity};
use super::repo::{RepoError, Repository};
use super::usage::Usage;
use crate::api::IntrospectResponse;
use crate::token::{self, TokenHash};

/// Most unknown hashes remembered; past this the older half is forgotten.
pub const MAX_UNKNOWN: usize = 65_536;

/// What the cache keeps of a registration: just what an answer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: Arc<str>,
    pub name: Arc<str>,
    pub scope: Arc<str>,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub revoked: bool,
}

impl From<&TokenRecord> for Entry {
    fn from(r: &TokenRecord) -> Self {
        Entry {
            id: Arc::from(r.id.as_str()),
            name: Arc::from(r.name.as_str()),
            scope: Arc::from(r.scopes.joined().as_str()),
            created_at_ms: r.created_at_ms,
            expires_at_ms: r.expires_at_ms,
            revoked: r.revoked_at_ms.is_some(),
        }
    }
}

#[derive(Default)]
struct Inner {
    known: HashMap<TokenHash, Arc<Entry>>,
    /// The newer generation of unknown hashes (filled), and the older one (only read).
    unknown: HashSet<TokenHash>,
    unknown_old: HashSet<TokenHash>,
    generation: u64,
}

impl Inner {
    fn is_unknown(&self, hash: &TokenHash) -> bool {
        self.unknown.contains(hash) || self.unknown_old.contains(hash)
    }

    fn add_unknown(&mut self, hash: &TokenHash) {
        if self.unknown.len() >= MAX_UNKNOWN / 2 {
            self.unknown_old = std::mem::take(&mut self.unknown);
        }
        self.unknown.insert(hash.clone());
    }

    fn forget(&mut self, hash: &TokenHash) {
        self.known.remove(hash);
        self.unknown.remove(hash);
        self.unknown_old.remove(hash);
    }

    fn forget_all(&mut self) {
        self.known.clear();
        self.unknown.clear();
        self.unknown_old.clear();
    }
}

enum Lookup {
    Known(Arc<Entry>),
    Unknown,
    Miss(u64),
    Bypass,
}

/// The hash-to-entry cache with generation-checked fills.
pub struct Cache {
    inner: RwLock<Inner>,
    trusted: AtomicBool,
}

impl Cache {
    /// A cache that starts trusted (SQLite, or PostgreSQL once its listener is connected).
    pub fn new(trusted: bool) -> Self {
        Cache {
            inner: RwLock::new(Inner::default()),
            trusted: AtomicBool::new(trusted),
        }
    }

    fn lookup(&self, hash: &TokenHash) -> Lookup {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        if !self.trusted.load(Ordering::Acquire) {
            return Lookup::Bypass;
        }
        if let Some(e) = inner.known.get(hash) {
            Lookup::Known(Arc::clone(e))
        } else if inner.is_unknown(hash) {
            Lookup::Unknown
        } else {
            Lookup::Miss(inner.generation)
        }
    }

    fn fill(&self, hash: &TokenHash, generation: u64, found: Option<&TokenRecord>) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if !self.trusted.load(Ordering::Acquire) || inner.generation != generation {
            return;
        }
        match found {
            Some(r) => {
                inner.known.insert(hash.clone(), Arc::new(Entry::from(r)));
            }
            None => inner.add_unknown(hash),
        }
    }

    /// Forget one token (it changed somewhere).
    pub fn invalidate(&self, hash: &TokenHash) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        inner.generation = inner.generation.wrapping_add(1);
        inner.forget(hash);
    }

    /// Forget everything, keeping whether the cache may answer (a write whose outcome is
    /// unknown).
    pub fn clear(&self) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        inner.generation = inner.generation.wrapping_add(1);
        inner.forget_all();
    }

    /// Forget everything and set whether the cache may answer (false while changes may be
    /// missed, true once they can be heard again).
    pub fn reset(&self, trusted: bool) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        inner.generation = inner.generation.wrapping_add(1);
        inner.forget_all();
        self.trusted.store(trusted, Ordering::Release);
    }

    pub fn is_trusted(&self) -> bool {
        self.trusted.load(Ordering::Acquire)
    }
}

/// Answers `POST /v1/introspect`.
pub struct Introspector {
    repo: Arc<dyn Repository>,
    cache: Arc<Cache>,
    usage: Arc<Usage>,
    metrics: Arc<Metrics>,
    /// When false, every request reads the database (the benchmark baseline).
    use_cache: bool,
}

impl Introspector {
    pub fn new(
        repo: Arc<dyn Repository>,
        cache: Arc<Cache>,
        usage: Arc<Usage>,
        metrics: Arc<Metrics>,
        use_cache: bool,
    ) -> Self {
        Introspector {
            repo,
            cache,
            usage,
            metrics,
            use_cache,
        }
    }

    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// Introspect a presented token. `Err` only when the answer cannot be known (the database
    /// is needed and unreachable): the caller fails closed.
    pub async fn introspect(
        &self,
        presented: &str,
        now_ms: i64,
    ) -> Result<IntrospectResponse, RepoError> {
        if token::verify(presented).is_err() {
            self.metrics.introspection(IntrospectOutcome::Malformed);
            return Ok(IntrospectResponse::inactive());
        }
        let hash = TokenHash::of(presented);
        let lookup = if self.use_cache {
            self.cache.lookup(&hash)
        } else {
            Lookup::Bypass
        };
        let entry = match lookup {
            Lookup::Known(e) => {
                self.metrics.cache(CacheResult::Hit);
                Some(e)
            }
            Lookup::Unknown => {
                self.metrics.cache(CacheResult::Hit);
                None
            }
            Lookup::Miss(generation) => {
                self.metrics.cache(CacheResult::Miss);
                let found = self.repo.find_by_hash(&hash).await?;
                self.cache.fill(&hash, generation, found.as_ref());
                found.as_ref().map(|r| Arc::new(Entry::from(r)))
            }
            Lookup::Bypass => {
                self.metrics.cache(CacheResult::Bypass);
                let found = self.repo.find_by_hash(&hash).await?;
                found.as_ref().map(|r| Arc::new(Entry::from(r)))
            }
        };
        Ok(self.answer(entry.as_deref(), now_ms))
    }

    fn answer(&self, entry: Option<&Entry>, now_ms: i64) -> IntrospectResponse {
        let Some(e) = entry else {
            self.metrics.introspection(IntrospectOutcome::Unknown);
            return IntrospectResponse::inactive();
        };
        let revoked_marker = e.revoked.then_some(0);
        match activity(revoked_marker, e.expires_at_ms, now_ms) {
            Activity::Revoked => {
                self.metrics.introspection(IntrospectOutcome::Revoked);
                IntrospectResponse::inactive()
            }
            Activity::Expired => {
                self.metrics.introspection(IntrospectOutcome::Expired);
                IntrospectResponse::inactive()
            }
            Activity::Active => {
                self.metrics.introspection(IntrospectOutcome::Active);
                self.usage.record(&e.id, now_ms);
                IntrospectResponse {
                    active: true,
                    scope: Some(e.scope.to_string()),
                    token_id: Some(e.id.to_string()),
                    name: Some(e.name.to_string()),
                    exp: e.expires_at_ms.map(|ms| ms.div_euclid(1000)),
                    iat: Some(e.created_at_ms.div_euclid(1000)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unknown(i: usize) -> TokenHash {
        TokenHash::of(&format!("unknown-{i}"))
    }

    #[test]
    fn the_unknown_set_forgets_its_oldest_entries_not_all_of_them() {
        let cache = Cache::new(true);
        for i in 0..=MAX_UNKNOWN {
            let Lookup::Miss(generation) = cache.lookup(&unknown(i)) else {
                panic!("{i} should be a miss");
            };
            cache.fill(&unknown(i), generation, None);
        }
        // The newest half is still remembered after passing the bound...
        for i in (MAX_UNKNOWN / 2 + 1)..=MAX_UNKNOWN {
            assert!(matches!(cache.lookup(&unknown(i)), Lookup::Unknown), "{i}");
        }
        // ...the oldest entry is gone, and the set never holds more than the bound.
        assert!(matches!(cache.lookup(&unknown(0)), Lookup::Miss(_)));
        let inner = cache.inner.read().unwrap();
        assert!(inner.unknown.len() + inner.unknown_old.len() <= MAX_UNKNOWN);
        drop(inner);
        // An invalidation forgets a hash in either half.
        cache.invalidate(&unknown(MAX_UNKNOWN));
        cache.invalidate(&unknown(MAX_UNKNOWN / 2 + 1));
        assert!(matches!(
            cache.lookup(&unknown(MAX_UNKNOWN)),
            Lookup::Miss(_)
        ));
        assert!(matches!(
            cache.lookup(&unknown(MAX_UNKNOWN / 2 + 1)),
            Lookup::Miss(_)
        ));
    }
}
