//! Writes to the token database together with the cache invalidation each one calls for.
//!
//! I/O module. The rule it keeps: **once a write has begun, its cache entry is invalidated after
//! it ends, whatever happens to the request that asked for it.** A handler's future is dropped
//! when the client goes away (a timeout, a dying operator pod, a reset connection), but the
//! database may still commit: SQLite's worker thread finishes a COMMIT it was handed, and a
//! PostgreSQL COMMIT already on the wire is applied. Were the invalidation to run in the handler
//! after the write, a dropped handler would leave a revoked token answering `active: true` (or a
//! narrowed token with its old scopes) until the process restarts.
//!
//! So each write and its invalidation run in a task of their own, which the handler awaits: a
//! dropped handler drops only its wait. (A guard that invalidates on drop is not enough: it
//! would run before the abandoned COMMIT ends, and a fill in between would cache the old row.)
//! A write that fails may still have committed (a connection lost during COMMIT), so a failure
//! empties the whole cache: a refill costs one read per token, a stale answer costs a promise.

use std::future::Future;
use std::sync::Arc;

use tokio_util::task::TaskTracker;

use super::cache::Cache;
use super::model::{Change, NewToken, TokenId, TokenPatch, TokenRecord};
use super::repo::{Registered, RepoError, Repository, Updated};
use crate::token::TokenHash;

/// A write could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// The task running the write panicked; the cache was emptied.
    #[error("the write task failed")]
    Task(#[source] tokio::task::JoinError),
    /// The store is shutting down and takes no more writes.
    #[error("the store is shutting down")]
    Closed,
}

/// The store's only path for changing token registrations.
#[derive(Clone)]
pub struct Writer {
    repo: Arc<dyn Repository>,
    cache: Arc<Cache>,
    /// Writes in flight, including those whose request is gone.
    tasks: TaskTracker,
}

impl Writer {
    pub fn new(repo: Arc<dyn Repository>, cache: Arc<Cache>) -> Self {
        Writer {
            repo,
            cache,
            tasks: TaskTracker::new(),
        }
    }

    /// Wait for every write in flight, including those whose request was dropped, to end and
    /// invalidate; later writes are refused with [`WriteError::Closed`]. Graceful shutdown
    /// calls this after the last connection closed.
    pub async fn drain(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Register a token; its hash is invalidated (it may sit in the unknown set).
    pub async fn register(
        &self,
        new: NewToken,
        change: Change,
        now_ms: i64,
    ) -> Result<Registered, WriteError> {
        let repo = Arc::clone(&self.repo);
        let hash = new.hash.clone();
        self.unit(
            async move { repo.register(&new, change, now_ms).await },
            move |_| Some(hash),
        )
        .await
    }

    /// Change name, scopes, expiry or owner; the changed token's entry is invalidated.
    pub async fn update(
        &self,
        id: TokenId,
        patch: TokenPatch,
        change: Change,
        now_ms: i64,
    ) -> Result<Updated, WriteError> {
        let repo = Arc::clone(&self.repo);
        self.unit(
            async move { repo.update(&id, &patch, change, now_ms).await },
            |outcome: &Updated| match outcome {
                Updated::Updated(r) => Some(r.hash.clone()),
                Updated::NotFound | Updated::Revoked => None,
            },
        )
        .await
    }

    /// Revoke (idempotent); the revoked token's entry is invalidated.
    pub async fn revoke(
        &self,
        id: TokenId,
        change: Change,
        now_ms: i64,
    ) -> Result<Option<TokenRecord>, WriteError> {
        let repo = Arc::clone(&self.repo);
        self.unit(
            async move { repo.revoke(&id, change, now_ms).await },
            |outcome: &Option<TokenRecord>| outcome.as_ref().map(|r| r.hash.clone()),
        )
        .await
    }

    /// Run `write`, then invalidate what it touched (everything, if it failed), in one task.
    async fn unit<T, W, F>(&self, write: W, touched: F) -> Result<T, WriteError>
    where
        T: Send + 'static,
        W: Future<Output = Result<T, RepoError>> + Send + 'static,
        F: FnOnce(&T) -> Option<TokenHash> + Send + 'static,
    {
        if self.tasks.is_closed() {
            return Err(WriteError::Closed);
        }
        let cache = Arc::clone(&self.cache);
        let task = self.tasks.spawn(async move {
            let outcome = write.await;
            match &outcome {
                Ok(value) => {
                    if let Some(hash) = touched(value) {
                        cache.invalidate(&hash);
                    }
                }
                Err(_) => cache.clear(),
            }
            outcome
        });
        match task.await {
            Ok(outcome) => Ok(outcome?),
            Err(e) => {
                self.cache.clear();
                Err(WriteError::Task(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::cache::Introspector;
    use crate::store::metrics::Metrics;
    use crate::store::model::{EventFilter, ListFilter, Owner, TokenEvent};
    use crate::store::repo::{SqliteRepo, UsageDelta};
    use crate::store::scopes::ScopeSet;
    use crate::store::usage::Usage;
    use crate::token::Token;
    use async_trait::async_trait;
    use tokio::sync::{Mutex, oneshot};

    /// A repository whose revoke and update commit, say so, and then wait for the test before
    /// returning: the window in which a client that goes away drops the request.
    struct SlowAfterCommit {
        inner: SqliteRepo,
        committed: Mutex<Option<oneshot::Sender<()>>>,
        release: Mutex<Option<oneshot::Receiver<()>>>,
    }

    impl SlowAfterCommit {
        async fn hold(&self) {
            if let Some(tx) = self.committed.lock().await.take() {
                let _ = tx.send(());
            }
            let rx = self.release.lock().await.take();
            if let Some(rx) = rx {
                let _ = rx.await;
            }
        }
    }

    #[async_trait]
    impl Repository for SlowAfterCommit {
        async fn register(
            &self,
            new: &NewToken,
            change: Change,
            now_ms: i64,
        ) -> Result<Registered, RepoError> {
            self.inner.register(new, change, now_ms).await
        }
        async fn update(
            &self,
            id: &TokenId,
            patch: &TokenPatch,
            change: Change,
            now_ms: i64,
        ) -> Result<Updated, RepoError> {
            let r = self.inner.update(id, patch, change, now_ms).await;
            self.hold().await;
            r
        }
        async fn revoke(
            &self,
            id: &TokenId,
            change: Change,
            now_ms: i64,
        ) -> Result<Option<TokenRecord>, RepoError> {
            let r = self.inner.revoke(id, change, now_ms).await;
            self.hold().await;
            r
        }
        async fn events(&self, f: &EventFilter) -> Result<Vec<TokenEvent>, RepoError> {
            self.inner.events(f).await
        }
        async fn get(&self, id: &TokenId) -> Result<Option<TokenRecord>, RepoError> {
            self.inner.get(id).await
        }
        async fn list(&self, f: &ListFilter, now_ms: i64) -> Result<Vec<TokenRecord>, RepoError> {
            self.inner.list(f, now_ms).await
        }
        async fn find_by_hash(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, RepoError> {
            self.inner.find_by_hash(hash).await
        }
        async fn record_usage(&self, usage: &[UsageDelta]) -> Result<(), RepoError> {
            self.inner.record_usage(usage).await
        }
        async fn ping(&self) -> Result<(), RepoError> {
            self.inner.ping().await
        }
        fn backend(&self) -> &'static str {
            "sqlite"
        }
    }

    struct Fixture {
        writer: Writer,
        introspector: Introspector,
        committed: oneshot::Receiver<()>,
        release: oneshot::Sender<()>,
        token: Token,
        id: TokenId,
        _dir: tempfile::TempDir,
    }

    /// One token registered through the writer and introspected once, so the cache holds it.
    async fn fixture() -> anyhow::Result<Fixture> {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let inner = SqliteRepo::open(&url, &Default::default()).await?;
        let (committed_tx, committed) = oneshot::channel();
        let (release, release_rx) = oneshot::channel();
        let repo: Arc<dyn Repository> = Arc::new(SlowAfterCommit {
            inner,
            committed: Mutex::new(Some(committed_tx)),
            release: Mutex::new(Some(release_rx)),
        });
        let cache = Arc::new(Cache::always_trusted());
        let writer = Writer::new(Arc::clone(&repo), Arc::clone(&cache));
        let introspector = Introspector::new(
            repo,
            cache,
            Arc::new(Usage::default()),
            Metrics::new(),
            true,
        );
        let token = Token::mint()?;
        let id = TokenId::parse("t-1")?;
        let new = NewToken {
            id: id.clone(),
            hash: token.hash(),
            name: "t".into(),
            scopes: ScopeSet::parse(["orders:read", "customers:read"])?,
            owner: Owner {
                cluster: "c".into(),
                namespace: "ns".into(),
                name: "t".into(),
                uid: "u".into(),
            },
            expires_at_ms: None,
        };
        assert!(matches!(
            writer.register(new, Change::default(), 0).await?,
            Registered::Created(_)
        ));
        assert!(introspector.introspect(token.expose(), 1).await?.active);
        Ok(Fixture {
            writer,
            introspector,
            committed,
            release,
            token,
            id,
            _dir: dir,
        })
    }

    /// Start `write` as a request would, drop it once the database has committed, let the
    /// abandoned write return, and give back the first introspection answer after the write
    /// task ended.
    async fn drop_after_commit<W, Fut>(
        f: Fixture,
        write: W,
    ) -> anyhow::Result<crate::api::IntrospectResponse>
    where
        W: FnOnce(Writer, TokenId) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: Send,
    {
        let request = tokio::spawn(write(f.writer.clone(), f.id.clone()));
        f.committed.await?;
        request.abort();
        assert!(request.await.is_err_and(|e| e.is_cancelled()));
        // Let the abandoned write return, and wait for its task to end.
        let _ = f.release.send(());
        f.writer.drain().await;
        Ok(f.introspector.introspect(f.token.expose(), 4).await?)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_revocation_whose_request_is_dropped_still_clears_the_cache() -> anyhow::Result<()> {
        let f = fixture().await?;
        let answer = drop_after_commit(f, |w, id| async move {
            w.revoke(id, Change::default(), 2).await
        })
        .await?;
        assert!(!answer.active, "a revoked token was answered as active");
        Ok(())
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_scope_edit_whose_request_is_dropped_still_clears_the_cache() -> anyhow::Result<()> {
        let f = fixture().await?;
        let patch = TokenPatch {
            scopes: Some(ScopeSet::parse(["orders:read"])?),
            ..TokenPatch::default()
        };
        let answer = drop_after_commit(f, |w, id| async move {
            w.update(id, patch, Change::default(), 2).await
        })
        .await?;
        assert_eq!(answer.scope.as_deref(), Some("orders:read"));
        Ok(())
    }
}
