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
//! - The cache answers only while it is *trusted* ([`super::trust`]): with PostgreSQL, while the
//!   listener has received, within the trust bound, a heartbeat this process sent through the
//!   database. Otherwise every request reads the database (and fails closed with 503 if that is
//!   down too): past the bound, a silent listener may be missing notifications. A lost listener
//!   connection also empties the cache, because notifications sent in the gap are lost.
//!
//! Unknown but well-formed tokens are cached too (a bounded set), so a flood of made-up tokens
//! with valid checksums does not become a flood of database queries; registrations invalidate
//! them like any other change. The set has two generations of up to [`MAX_UNKNOWN`]` / 2`
//! hashes each: when the current one is full it becomes the old one and the previous old one is
//! dropped, so passing the bound forgets the oldest half, never everything at once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::body::Bytes;

use super::metrics::{CacheResult, IntrospectOutcome, Metrics};
use super::model::{Activity, TokenRecord, activity};
use super::repo::{RepoError, Repository};
use super::trust::Trust;
use super::usage::{Slot, Usage};
use crate::api::IntrospectResponse;
use crate::token::{self, TokenHash};

/// Most unknown hashes remembered; past this the older half is forgotten.
pub const MAX_UNKNOWN: usize = 65_536;

/// What the cache keeps of a registration: just what an answer needs, with the active answer
/// already encoded (its fields are fixed for the entry's life; only whether it is still active
/// depends on the clock) and the token's usage slot, so that an active answer from the cache
/// serialises nothing and takes no lock.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: Arc<str>,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub revoked: bool,
    /// The JSON body of the active answer (see [`Entry::active_response`]).
    active_body: Bytes,
    usage: Arc<Slot>,
    /// The active answer's fields, for callers that want the struct.
    name: Arc<str>,
    scope: Arc<str>,
}

impl Entry {
    /// The entry of a stored registration. `Err` only if its answer cannot be encoded.
    pub fn new(r: &TokenRecord, usage: &Usage) -> Result<Self, RepoError> {
        let id: Arc<str> = Arc::from(r.id.as_str());
        let mut e = Entry {
            usage: usage.slot(&id),
            id,
            name: Arc::from(r.name.as_str()),
            scope: Arc::from(r.scopes.joined().as_str()),
            created_at_ms: r.created_at_ms,
            expires_at_ms: r.expires_at_ms,
            revoked: r.revoked_at_ms.is_some(),
            active_body: Bytes::new(),
        };
        let body = serde_json::to_vec(&e.active_response())
            .map_err(|err| RepoError::Corrupt(format!("cannot encode an answer: {err}")))?;
        e.active_body = Bytes::from(body);
        Ok(e)
    }

    /// The answer while the token is active.
    pub fn active_response(&self) -> IntrospectResponse {
        IntrospectResponse {
            active: true,
            scope: Some(self.scope.to_string()),
            token_id: Some(self.id.to_string()),
            name: Some(self.name.to_string()),
            exp: self.expires_at_ms.map(|ms| ms.div_euclid(1000)),
            iat: Some(self.created_at_ms.div_euclid(1000)),
        }
    }
}

/// An introspection answer: inactive, or active with the entry that says what.
#[derive(Debug, Clone)]
pub enum Answer {
    Inactive,
    Active(Arc<Entry>),
}

/// The JSON body of every inactive answer.
pub const INACTIVE_BODY: &[u8] = br#"{"active":false}"#;

impl Answer {
    /// The answer as the RFC 7662 structure.
    pub fn response(&self) -> IntrospectResponse {
        match self {
            Answer::Inactive => IntrospectResponse::inactive(),
            Answer::Active(e) => e.active_response(),
        }
    }

    /// The answer's JSON body, as `serde_json` encodes [`Answer::response`] (encoded once per
    /// entry; a clone of [`Bytes`] is a reference count).
    pub fn body(&self) -> Bytes {
        match self {
            Answer::Inactive => Bytes::from_static(INACTIVE_BODY),
            Answer::Active(e) => e.active_body.clone(),
        }
    }

    pub fn is_active(&self) -> bool {
        matches!(self, Answer::Active(_))
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
    trust: Trust,
}

impl Cache {
    /// A cache that may answer while `trust` says so.
    pub fn new(trust: Trust) -> Self {
        Cache {
            inner: RwLock::new(Inner::default()),
            trust,
        }
    }

    /// A cache that is always trusted (SQLite: this process is the only writer).
    pub fn always_trusted() -> Self {
        Self::new(Trust::always())
    }

    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    fn lookup(&self, hash: &TokenHash) -> Lookup {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        if !self.trust.is_trusted() {
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

    fn fill(&self, hash: &TokenHash, generation: u64, found: Option<&Arc<Entry>>) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if inner.generation != generation {
            return;
        }
        match found {
            Some(e) => {
                inner.known.insert(hash.clone(), Arc::clone(e));
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

    /// Stop answering and forget everything: changes may have been missed (the listener's
    /// connection is gone). Only a new heartbeat ([`Trust::proven`]) makes the cache answer
    /// again.
    pub fn untrust(&self) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        self.trust.withdraw();
        inner.generation = inner.generation.wrapping_add(1);
        inner.forget_all();
    }

    pub fn is_trusted(&self) -> bool {
        self.trust.is_trusted()
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
    /// Longest wait for a database read (a connection included): past it the answer is 503.
    read_timeout: Duration,
}

/// Default of [`Introspector::with_read_timeout`].
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(2);

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
            read_timeout: DEFAULT_READ_TIMEOUT,
        }
    }

    /// Bound every database read of introspection: a read on a connection whose link went
    /// silent would otherwise wait for the kernel to give up on it (many minutes).
    pub fn with_read_timeout(mut self, read_timeout: Duration) -> Self {
        self.read_timeout = read_timeout;
        self
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
        Ok(self.answer(presented, now_ms).await?.response())
    }

    /// [`Introspector::introspect`] as an [`Answer`], whose body is encoded once per entry.
    pub async fn answer(&self, presented: &str, now_ms: i64) -> Result<Answer, RepoError> {
        if token::verify(presented).is_err() {
            self.metrics.introspection(IntrospectOutcome::Malformed);
            return Ok(Answer::Inactive);
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
                let found = self.read(&hash).await?;
                self.cache.fill(&hash, generation, found.as_ref());
                found
            }
            Lookup::Bypass => {
                self.metrics.cache(CacheResult::Bypass);
                self.read(&hash).await?
            }
        };
        Ok(self.decide(entry, now_ms))
    }

    async fn read(&self, hash: &TokenHash) -> Result<Option<Arc<Entry>>, RepoError> {
        let found = tokio::time::timeout(self.read_timeout, self.repo.find_by_hash(hash))
            .await
            .map_err(|_| RepoError::TimedOut(self.read_timeout))?;
        match found? {
            Some(r) => Ok(Some(Arc::new(Entry::new(&r, &self.usage)?))),
            None => Ok(None),
        }
    }

    fn decide(&self, entry: Option<Arc<Entry>>, now_ms: i64) -> Answer {
        let Some(e) = entry else {
            self.metrics.introspection(IntrospectOutcome::Unknown);
            return Answer::Inactive;
        };
        let revoked_marker = e.revoked.then_some(0);
        match activity(revoked_marker, e.expires_at_ms, now_ms) {
            Activity::Revoked => {
                self.metrics.introspection(IntrospectOutcome::Revoked);
                Answer::Inactive
            }
            Activity::Expired => {
                self.metrics.introspection(IntrospectOutcome::Expired);
                Answer::Inactive
            }
            Activity::Active => {
                self.metrics.introspection(IntrospectOutcome::Active);
                e.usage.record(now_ms);
                Answer::Active(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::{Owner, TokenId};
    use crate::store::scopes::ScopeSet;

    fn record(expires_at_ms: Option<i64>) -> TokenRecord {
        TokenRecord {
            id: TokenId::parse("t-1").unwrap(),
            hash: TokenHash::of("x"),
            name: "a \"quoted\" name".into(),
            scopes: ScopeSet::parse(["orders:read", "customers:read"]).unwrap(),
            owner: Owner {
                cluster: "c".into(),
                namespace: "n".into(),
                name: "t".into(),
                uid: "u".into(),
            },
            created_at_ms: 1_700_000_000_999,
            updated_at_ms: 1_700_000_000_999,
            expires_at_ms,
            revoked_at_ms: None,
            last_used_at_ms: None,
            use_count: 0,
        }
    }

    #[test]
    fn the_encoded_bodies_are_what_serde_writes_for_the_answer() {
        let usage = Usage::default();
        for expires in [None, Some(1_800_000_000_500)] {
            let e = Arc::new(Entry::new(&record(expires), &usage).unwrap());
            let answer = Answer::Active(Arc::clone(&e));
            let r = answer.response();
            assert!(r.active);
            assert_eq!(r.token_id.as_deref(), Some("t-1"));
            assert_eq!(r.exp, expires.map(|ms| ms / 1000));
            assert_eq!(r.iat, Some(1_700_000_000));
            assert_eq!(answer.body(), serde_json::to_vec(&r).unwrap());
            let parsed: IntrospectResponse = serde_json::from_slice(&answer.body()).unwrap();
            assert_eq!(parsed, r);
        }
        let inactive = Answer::Inactive;
        assert_eq!(
            inactive.body(),
            serde_json::to_vec(&IntrospectResponse::inactive()).unwrap()
        );
    }

    #[tokio::test]
    async fn an_active_answer_records_a_use_on_the_entry_slot_and_an_inactive_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let repo: Arc<dyn Repository> = Arc::new(
            crate::store::repo::SqliteRepo::open(&url, &Default::default())
                .await
                .unwrap(),
        );
        let usage = Arc::new(Usage::default());
        let cache = Arc::new(Cache::always_trusted());
        let i = Introspector::new(repo, cache, Arc::clone(&usage), Metrics::new(), true);
        let active = Some(Arc::new(Entry::new(&record(None), &usage).unwrap()));
        let expired = Some(Arc::new(Entry::new(&record(Some(1_000)), &usage).unwrap()));
        assert!(i.decide(active.clone(), 2_000).is_active());
        assert!(i.decide(active, 3_000).is_active());
        assert!(!i.decide(expired, 2_000).is_active());
        assert!(!i.decide(None, 2_000).is_active());
        assert_eq!(usage.pending(), 1);
    }

    fn unknown(i: usize) -> TokenHash {
        TokenHash::of(&format!("unknown-{i}"))
    }

    #[test]
    fn the_unknown_set_forgets_its_oldest_entries_not_all_of_them() {
        let cache = Cache::always_trusted();
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
