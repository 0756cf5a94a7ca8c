//! Storage: the [`Repository`] trait and its SQLite and PostgreSQL implementations.
//!
//! I/O module. Both backends run the same SQL (runtime-checked queries; `$n` placeholders work
//! in both dialects, timestamps are BIGINT milliseconds), generated once by a macro so the two
//! cannot drift; what differs lives in each backend's small inherent impl:
//! - SQLite takes the write lock up front (`BEGIN IMMEDIATE`) so concurrent writers queue on
//!   the busy timeout instead of failing on a lock upgrade;
//! - PostgreSQL announces every change to a token with `pg_notify` inside the writing
//!   transaction, so other store processes drop their cached answer the moment it commits, and
//!   takes one transaction-level advisory lock before a change it audits (see below).
//!
//! # The audit trail
//!
//! Every change of a registration (register, a PUT that changes one, a PATCH that changes one,
//! the first revoke) appends one row to `token_events` in the transaction of the change, so the
//! change and its event commit together or not at all. A write that changes nothing (an
//! idempotent PUT, a PATCH to the values already stored, a repeated revoke) writes no event.
//! Events are numbered by the database (SQLite `AUTOINCREMENT`, PostgreSQL identity) and read
//! with a keyset cursor on that number. For the cursor never to skip an event, numbers must be
//! handed out in commit order: SQLite's writers are serialised by `BEGIN IMMEDIATE`; PostgreSQL's
//! by the advisory lock, which also makes the "before" a PATCH reads the one it changes. Token
//! writes are rare (a few per ApiToken per rotation), so serialising them costs nothing that
//! matters; usage flushes and reads do not take the lock.
//!
//! Migrations are per backend (`migrations/sqlite`, `migrations/postgres`) and run at start-up.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::model::{
    Change, EventFilter, EventScope, ListFilter, NewEvent, NewToken, Owner, Snapshot, TokenEvent,
    TokenId, TokenPatch, TokenRecord, patched,
};
use super::scopes::ScopeSet;
use crate::api::{ChangeReason, EventKind};
use crate::token::TokenHash;

/// The PostgreSQL channel on which every change to a token is announced (payload: its hash).
pub const NOTIFY_CHANNEL: &str = "loop_store_tokens";

/// The PostgreSQL advisory lock every audited write takes ("loopaudt").
pub const AUDIT_LOCK: i64 = 0x6c6f_6f70_6175_6474;

/// A storage failure, split by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The database cannot be reached (connection refused, pool timed out, ...): retry later.
    #[error("the token database is unreachable")]
    Unavailable(#[source] sqlx::Error),
    /// The database answered with an error.
    #[error("the token database refused the operation")]
    Database(#[source] sqlx::Error),
    /// The database did not answer within the deadline (a link that went silent, or a database
    /// too busy to answer): retry later.
    #[error("the token database did not answer within {0:?}")]
    TimedOut(Duration),
    /// A row does not hold what the schema promises.
    #[error("a stored token row is corrupt: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for RepoError {
    fn from(e: sqlx::Error) -> Self {
        let retry_later = e
            .as_database_error()
            .and_then(|d| d.code())
            .is_some_and(|c| RETRY_LATER_CODES.contains(&c.as_ref()));
        if retry_later {
            return RepoError::Unavailable(e);
        }
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => RepoError::Unavailable(e),
            other => RepoError::Database(other),
        }
    }
}

/// Why a registration cannot be accepted as asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// The id is registered with another hash.
    DifferentHash,
    /// The hash is registered under another id.
    HashTaken,
    /// The id belongs to another owner.
    DifferentOwner,
    /// The id was revoked; revoked registrations are audit records and never come back.
    Revoked,
}

impl Conflict {
    pub fn message(self) -> &'static str {
        match self {
            Conflict::DifferentHash => {
                "this token id is already registered with a different token hash"
            }
            Conflict::HashTaken => "this token hash is already registered under another id",
            Conflict::DifferentOwner => "this token id is already registered by a different owner",
            Conflict::Revoked => {
                "this token id was revoked; revoked registrations cannot be changed or re-registered"
            }
        }
    }
}

/// The result of [`Repository::register`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// A new registration.
    Created(TokenRecord),
    /// The same id and hash were already registered; name, scopes and expiry now match the
    /// request.
    Existing(TokenRecord),
    Conflict(Conflict),
}

/// The result of [`Repository::update`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Updated {
    Updated(Box<TokenRecord>),
    NotFound,
    Revoked,
}

/// Usage of one token since the last flush.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageDelta {
    pub id: TokenId,
    pub count: i64,
    pub last_used_at_ms: i64,
}

/// Token storage. Every method is one transaction.
#[async_trait]
pub trait Repository: Send + Sync + 'static {
    /// Register a token (idempotent for the same id and hash). Records `registered` for a new
    /// registration, `reregistered` when an existing one changes, nothing otherwise.
    async fn register(
        &self,
        new: &NewToken,
        change: Change,
        now_ms: i64,
    ) -> Result<Registered, RepoError>;
    /// Change name, scopes, expiry or owner of an unrevoked token. Records `updated` or `expiry_set`
    /// when something changes; a patch to the stored values writes nothing.
    async fn update(
        &self,
        id: &TokenId,
        patch: &TokenPatch,
        change: Change,
        now_ms: i64,
    ) -> Result<Updated, RepoError>;
    /// Revoke (idempotent). `None` when the id is unknown. Records `revoked` the first time.
    async fn revoke(
        &self,
        id: &TokenId,
        change: Change,
        now_ms: i64,
    ) -> Result<Option<TokenRecord>, RepoError>;
    /// A page of the audit trail, oldest first.
    async fn events(&self, filter: &EventFilter) -> Result<Vec<TokenEvent>, RepoError>;
    async fn get(&self, id: &TokenId) -> Result<Option<TokenRecord>, RepoError>;
    async fn list(&self, filter: &ListFilter, now_ms: i64) -> Result<Vec<TokenRecord>, RepoError>;
    /// Find a registration by the hash of a presented token (introspection).
    async fn find_by_hash(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, RepoError>;
    /// Add coalesced usage figures.
    async fn record_usage(&self, usage: &[UsageDelta]) -> Result<(), RepoError>;
    /// Is the database reachable.
    async fn ping(&self) -> Result<(), RepoError>;
    /// Backend name for logs and metrics: `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
}

macro_rules! columns {
    () => {
        "id, hash, name, scopes, owner_cluster, owner_namespace, owner_name, owner_uid, \
         created_at, updated_at, expires_at, revoked_at, last_used_at, use_count"
    };
}

const SQL_INSERT: &str = "INSERT INTO tokens (id, hash, name, scopes, owner_cluster, owner_namespace, \
     owner_name, owner_uid, created_at, updated_at, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10) ON CONFLICT DO NOTHING";
const SQL_BY_ID: &str = concat!("SELECT ", columns!(), " FROM tokens WHERE id = $1");
const SQL_BY_HASH: &str = concat!("SELECT ", columns!(), " FROM tokens WHERE hash = $1");
const SQL_RESET: &str = concat!(
    "UPDATE tokens SET name = $2, scopes = $3, expires_at = $4, updated_at = $5, \
     owner_cluster = $6, owner_namespace = $7, owner_name = $8, owner_uid = $9 WHERE id = $1 RETURNING ",
    columns!()
);
const SQL_REVOKE: &str = concat!(
    "UPDATE tokens SET revoked_at = $2, updated_at = $2 WHERE id = $1 AND revoked_at IS NULL RETURNING ",
    columns!()
);

macro_rules! event_columns {
    () => {
        "id, token_id, owner_cluster, owner_namespace, owner_name, owner_uid, at, kind, reason, \
         generation, before_name, before_scopes, before_expires_at, after_name, after_scopes, \
         after_expires_at"
    };
}

const SQL_EVENT_INSERT: &str = "INSERT INTO token_events (token_id, owner_cluster, \
     owner_namespace, owner_name, owner_uid, at, kind, reason, generation, before_name, \
     before_scopes, before_expires_at, after_name, after_scopes, after_expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)";
const SQL_EVENTS_BY_TOKEN: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM token_events WHERE token_id = $1 AND id > $2 ORDER BY id LIMIT $3"
);
const SQL_EVENTS_BY_OWNER: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM token_events WHERE owner_uid = $1 AND id > $2 ORDER BY id LIMIT $3"
);

/// Why an existing registration cannot take `new`: a different hash or owner, or revoked.
fn conflict_of(current: &TokenRecord, new: &NewToken) -> Option<Conflict> {
    if current.hash != new.hash {
        Some(Conflict::DifferentHash)
    } else if current.owner != new.owner {
        Some(Conflict::DifferentOwner)
    } else if current.revoked_at_ms.is_some() {
        Some(Conflict::Revoked)
    } else {
        None
    }
}

fn corrupt(e: impl std::fmt::Display) -> RepoError {
    RepoError::Corrupt(e.to_string())
}

/// The list query with only the filters that are set, so that each one is a plain comparison the
/// planner can serve from an index. (`($1 IS NULL OR owner_uid = $1)` made SQLite scan the whole
/// table on every list by owner, which the operator does on every reconcile.) Placeholders are
/// numbered in the order [`list`](Repository::list) binds them: owner, namespace, cluster, active and now,
/// after, limit.
fn list_sql(f: &ListFilter) -> String {
    let mut n = 0;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    let mut clauses = Vec::new();
    if f.owner_uid.is_some() {
        clauses.push(format!("owner_uid = {}", next()));
    }
    if f.namespace.is_some() {
        clauses.push(format!("owner_namespace = {}", next()));
    }
    if f.cluster.is_some() {
        clauses.push(format!("owner_cluster = {}", next()));
    }
    if f.active.is_some() {
        let (active, now) = (next(), next());
        clauses.push(format!(
            "{active} = (revoked_at IS NULL AND (expires_at IS NULL OR expires_at > {now}))"
        ));
    }
    if f.after.is_some() {
        clauses.push(format!("id > {}", next()));
    }
    let filter = if clauses.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", clauses.join(" AND "))
    };
    format!(
        "SELECT {} FROM tokens{filter} ORDER BY id LIMIT {}",
        columns!(),
        next()
    )
}
const SQL_USAGE: &str = "UPDATE tokens SET use_count = use_count + $2, \
     last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < $3 THEN $3 ELSE last_used_at END \
     WHERE id = $1";
/// [`SQL_USAGE`] for a whole flush in one statement (PostgreSQL): one round trip instead of one
/// per token used in the interval (10,000 under the benchmark's load).
const SQL_USAGE_BATCH: &str = "UPDATE tokens AS t SET use_count = t.use_count + u.n, \
     last_used_at = CASE WHEN t.last_used_at IS NULL OR t.last_used_at < u.last THEN u.last ELSE t.last_used_at END \
     FROM UNNEST($1::text[], $2::bigint[], $3::bigint[]) AS u(id, n, last) WHERE t.id = u.id";

/// Implements [`Repository`] for a backend type with a `pool` field, an inherent
/// `begin_write()` and an inherent `announce(tx, hash)`.
macro_rules! sql_repository {
    ($repo:ty, $row:ty, $name:literal) => {
        impl $repo {
            fn to_record(row: &$row) -> Result<TokenRecord, RepoError> {
                use sqlx::Row;
                let text = |c: &str| {
                    row.try_get::<String, _>(c)
                        .map_err(|e| RepoError::Corrupt(e.to_string()))
                };
                let int = |c: &str| {
                    row.try_get::<i64, _>(c)
                        .map_err(|e| RepoError::Corrupt(e.to_string()))
                };
                let opt = |c: &str| {
                    row.try_get::<Option<i64>, _>(c)
                        .map_err(|e| RepoError::Corrupt(e.to_string()))
                };
                let id = text("id")?;
                Ok(TokenRecord {
                    id: TokenId::parse(&id).map_err(|e| RepoError::Corrupt(e.to_string()))?,
                    hash: TokenHash::from_str(&text("hash")?)
                        .map_err(|e| RepoError::Corrupt(e.to_string()))?,
                    name: text("name")?,
                    scopes: ScopeSet::from_joined(&text("scopes")?)
                        .map_err(|e| RepoError::Corrupt(e.to_string()))?,
                    owner: Owner {
                        cluster: text("owner_cluster")?,
                        namespace: text("owner_namespace")?,
                        name: text("owner_name")?,
                        uid: text("owner_uid")?,
                    },
                    created_at_ms: int("created_at")?,
                    updated_at_ms: int("updated_at")?,
                    expires_at_ms: opt("expires_at")?,
                    revoked_at_ms: opt("revoked_at")?,
                    last_used_at_ms: opt("last_used_at")?,
                    use_count: int("use_count")?,
                })
            }

            fn to_event(row: &$row) -> Result<TokenEvent, RepoError> {
                use sqlx::Row;
                let text = |c: &str| row.try_get::<String, _>(c).map_err(corrupt);
                let int = |c: &str| row.try_get::<i64, _>(c).map_err(corrupt);
                let opt = |c: &str| row.try_get::<Option<i64>, _>(c).map_err(corrupt);
                let owner = Owner {
                    cluster: text("owner_cluster")?,
                    namespace: text("owner_namespace")?,
                    name: text("owner_name")?,
                    uid: text("owner_uid")?,
                };
                let state = |side: &str| -> Result<Option<Snapshot>, RepoError> {
                    let name = row
                        .try_get::<Option<String>, _>(format!("{side}_name").as_str())
                        .map_err(corrupt)?;
                    let Some(name) = name else { return Ok(None) };
                    Ok(Some(Snapshot {
                        name,
                        scopes: ScopeSet::from_joined(&text(&format!("{side}_scopes"))?)
                            .map_err(corrupt)?,
                        expires_at_ms: opt(&format!("{side}_expires_at"))?,
                        owner: owner.clone(),
                    }))
                };
                let kind = text("kind")?;
                let reason = text("reason")?;
                Ok(TokenEvent {
                    id: int("id")?,
                    event: NewEvent {
                        token_id: TokenId::parse(&text("token_id")?).map_err(corrupt)?,
                        owner: Owner {
                            cluster: text("owner_cluster")?,
                            namespace: text("owner_namespace")?,
                            name: text("owner_name")?,
                            uid: text("owner_uid")?,
                        },
                        at_ms: int("at")?,
                        kind: EventKind::parse(&kind)
                            .ok_or_else(|| corrupt(format!("unknown event kind {kind:?}")))?,
                        change: Change {
                            reason: ChangeReason::parse(&reason)
                                .ok_or_else(|| corrupt(format!("unknown reason {reason:?}")))?,
                            generation: opt("generation")?,
                        },
                        before: state("before")?,
                        after: state("after")?,
                    },
                })
            }

            /// Append one event in the transaction of its change.
            async fn append(
                tx: &mut sqlx::Transaction<'static, <$row as sqlx::Row>::Database>,
                e: &NewEvent,
            ) -> Result<(), sqlx::Error> {
                let side = |s: &Option<Snapshot>| {
                    s.as_ref()
                        .map(|s| (s.name.clone(), s.scopes.joined(), s.expires_at_ms))
                };
                let (before, after) = (side(&e.before), side(&e.after));
                sqlx::query(SQL_EVENT_INSERT)
                    .bind(e.token_id.as_str())
                    .bind(&e.owner.cluster)
                    .bind(&e.owner.namespace)
                    .bind(&e.owner.name)
                    .bind(&e.owner.uid)
                    .bind(e.at_ms)
                    .bind(e.kind.as_str())
                    .bind(e.change.reason.as_str())
                    .bind(e.change.generation)
                    .bind(before.as_ref().map(|b| b.0.clone()))
                    .bind(before.as_ref().map(|b| b.1.clone()))
                    .bind(before.as_ref().and_then(|b| b.2))
                    .bind(after.as_ref().map(|a| a.0.clone()))
                    .bind(after.as_ref().map(|a| a.1.clone()))
                    .bind(after.as_ref().and_then(|a| a.2))
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            }
        }

        #[async_trait]
        impl Repository for $repo {
            async fn register(
                &self,
                new: &NewToken,
                change: Change,
                now_ms: i64,
            ) -> Result<Registered, RepoError> {
                let mut tx = self.begin_audited().await?;
                let inserted = sqlx::query(SQL_INSERT)
                    .bind(new.id.as_str())
                    .bind(new.hash.as_str())
                    .bind(&new.name)
                    .bind(new.scopes.joined())
                    .bind(&new.owner.cluster)
                    .bind(&new.owner.namespace)
                    .bind(&new.owner.name)
                    .bind(&new.owner.uid)
                    .bind(now_ms)
                    .bind(new.expires_at_ms)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                let existing = sqlx::query(SQL_BY_ID)
                    .bind(new.id.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(row) = existing else {
                    // Not inserted and no such id: the hash belongs to another id.
                    return Ok(Registered::Conflict(Conflict::HashTaken));
                };
                let current = Self::to_record(&row)?;
                if inserted == 1 {
                    let event =
                        NewEvent::between(EventKind::Registered, None, &current, change, now_ms);
                    Self::append(&mut tx, &event).await?;
                    Self::announce(&mut tx, &new.hash).await?;
                    tx.commit().await?;
                    return Ok(Registered::Created(current));
                }
                if let Some(c) = conflict_of(&current, new) {
                    return Ok(Registered::Conflict(c));
                }
                if current.name == new.name
                    && current.scopes == new.scopes
                    && current.expires_at_ms == new.expires_at_ms
                {
                    // Nothing changes: no write, no event.
                    return Ok(Registered::Existing(current));
                }
                let row = sqlx::query(SQL_RESET)
                    .bind(new.id.as_str())
                    .bind(&new.name)
                    .bind(new.scopes.joined())
                    .bind(new.expires_at_ms)
                    .bind(now_ms)
                    .bind(&new.owner.cluster)
                    .bind(&new.owner.namespace)
                    .bind(&new.owner.name)
                    .bind(&new.owner.uid)
                    .fetch_one(&mut *tx)
                    .await?;
                let after = Self::to_record(&row)?;
                let event = NewEvent::between(
                    EventKind::Reregistered,
                    Some(&current),
                    &after,
                    change,
                    now_ms,
                );
                Self::append(&mut tx, &event).await?;
                Self::announce(&mut tx, &new.hash).await?;
                tx.commit().await?;
                Ok(Registered::Existing(after))
            }

            async fn update(
                &self,
                id: &TokenId,
                patch: &TokenPatch,
                change: Change,
                now_ms: i64,
            ) -> Result<Updated, RepoError> {
                let mut tx = self.begin_audited().await?;
                let row = sqlx::query(SQL_BY_ID)
                    .bind(id.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(row) = row else {
                    return Ok(Updated::NotFound);
                };
                let before = Self::to_record(&row)?;
                if before.revoked_at_ms.is_some() {
                    return Ok(Updated::Revoked);
                }
                let Some((target, kind)) = patched(&before, patch) else {
                    // Nothing changes: no write, no event.
                    return Ok(Updated::Updated(Box::new(before)));
                };
                let row = sqlx::query(SQL_RESET)
                    .bind(id.as_str())
                    .bind(&target.name)
                    .bind(target.scopes.joined())
                    .bind(target.expires_at_ms)
                    .bind(now_ms)
                    .bind(&target.owner.cluster)
                    .bind(&target.owner.namespace)
                    .bind(&target.owner.name)
                    .bind(&target.owner.uid)
                    .fetch_one(&mut *tx)
                    .await?;
                let after = Self::to_record(&row)?;
                let event = NewEvent::between(kind, Some(&before), &after, change, now_ms);
                Self::append(&mut tx, &event).await?;
                Self::announce(&mut tx, &after.hash).await?;
                tx.commit().await?;
                Ok(Updated::Updated(Box::new(after)))
            }

            async fn revoke(
                &self,
                id: &TokenId,
                change: Change,
                now_ms: i64,
            ) -> Result<Option<TokenRecord>, RepoError> {
                let mut tx = self.begin_audited().await?;
                let row = sqlx::query(SQL_BY_ID)
                    .bind(id.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let before = Self::to_record(&row)?;
                if before.revoked_at_ms.is_some() {
                    // Already revoked: the first time stays, and so does its one event.
                    return Ok(Some(before));
                }
                let row = sqlx::query(SQL_REVOKE)
                    .bind(id.as_str())
                    .bind(now_ms)
                    .fetch_one(&mut *tx)
                    .await?;
                let after = Self::to_record(&row)?;
                let event =
                    NewEvent::between(EventKind::Revoked, Some(&before), &after, change, now_ms);
                Self::append(&mut tx, &event).await?;
                Self::announce(&mut tx, &after.hash).await?;
                tx.commit().await?;
                Ok(Some(after))
            }

            async fn events(&self, f: &EventFilter) -> Result<Vec<TokenEvent>, RepoError> {
                let q = match &f.scope {
                    EventScope::Token(id) => sqlx::query(SQL_EVENTS_BY_TOKEN).bind(id.as_str()),
                    EventScope::Owner(uid) => sqlx::query(SQL_EVENTS_BY_OWNER).bind(uid.as_str()),
                };
                let rows = q
                    .bind(f.after)
                    .bind(i64::from(f.limit))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(Self::to_event).collect()
            }

            async fn get(&self, id: &TokenId) -> Result<Option<TokenRecord>, RepoError> {
                let row = sqlx::query(SQL_BY_ID)
                    .bind(id.as_str())
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::to_record).transpose()
            }

            async fn list(
                &self,
                f: &ListFilter,
                now_ms: i64,
            ) -> Result<Vec<TokenRecord>, RepoError> {
                // Assembled from constant fragments only; every value is bound.
                let mut q = sqlx::query(sqlx::AssertSqlSafe(list_sql(f)));
                if let Some(uid) = f.owner_uid.as_deref() {
                    q = q.bind(uid);
                }
                if let Some(ns) = f.namespace.as_deref() {
                    q = q.bind(ns);
                }
                if let Some(cluster) = f.cluster.as_deref() {
                    q = q.bind(cluster);
                }
                if let Some(active) = f.active {
                    q = q.bind(active).bind(now_ms);
                }
                if let Some(after) = f.after.as_deref() {
                    q = q.bind(after);
                }
                let rows = q.bind(i64::from(f.limit)).fetch_all(&self.pool).await?;
                rows.iter().map(Self::to_record).collect()
            }

            async fn find_by_hash(
                &self,
                hash: &TokenHash,
            ) -> Result<Option<TokenRecord>, RepoError> {
                let row = sqlx::query(SQL_BY_HASH)
                    .bind(hash.as_str())
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::to_record).transpose()
            }

            async fn record_usage(&self, usage: &[UsageDelta]) -> Result<(), RepoError> {
                if usage.is_empty() {
                    return Ok(());
                }
                let mut tx = self.begin_write().await?;
                Self::write_usage(&mut tx, usage).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn ping(&self) -> Result<(), RepoError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            fn backend(&self) -> &'static str {
                $name
            }
        }
    };
}

/// Connection settings shared by both backends.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_connections: u32,
    /// How long a request waits for a connection before the store answers 503.
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(3),
        }
    }
}

/// Opening a database failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("unsupported database URL scheme (use sqlite://PATH or postgres://...)")]
    Scheme,
    #[error("invalid database URL")]
    Url(#[source] sqlx::Error),
    #[error("cannot connect to the database")]
    Connect(#[source] sqlx::Error),
    #[error("cannot apply the database migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// SQLite: one file, one store process.
#[derive(Debug, Clone)]
pub struct SqliteRepo {
    pool: SqlitePool,
}

impl SqliteRepo {
    pub async fn open(url: &str, settings: &PoolSettings) -> Result<Self, OpenError> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(OpenError::Url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(opts)
            .await
            .map_err(OpenError::Connect)?;
        sqlx::migrate!("migrations/sqlite")
            .run(&pool)
            .await
            .map_err(OpenError::Migrate)?;
        Ok(SqliteRepo { pool })
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    /// `BEGIN IMMEDIATE` already serialises every writer of the file.
    async fn begin_audited(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.begin_write().await
    }

    async fn announce(
        _tx: &mut sqlx::SqliteConnection,
        _hash: &TokenHash,
    ) -> Result<(), sqlx::Error> {
        // One process per SQLite file: the local cache is invalidated by the caller.
        Ok(())
    }
}

impl SqliteRepo {
    /// One statement per token: SQLite runs them in-process, without round trips.
    async fn write_usage(
        tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
        usage: &[UsageDelta],
    ) -> Result<(), sqlx::Error> {
        for u in usage {
            sqlx::query(SQL_USAGE)
                .bind(u.id.as_str())
                .bind(u.count)
                .bind(u.last_used_at_ms)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}

sql_repository!(SqliteRepo, sqlx::sqlite::SqliteRow, "sqlite");

/// PostgreSQL: shared by several store processes.
#[derive(Debug, Clone)]
pub struct PostgresRepo {
    pool: PgPool,
}

/// Longest wait for the check of a connection handed back to the pool. sqlx pings every
/// released connection with no deadline; on a link that went silent that ping, and the pool slot
/// it holds, would wait for the kernel to give up (about 15 minutes). A connection whose check
/// does not answer in time is closed instead (see [`PostgresRepo::open`]).
pub const RELEASE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Settings of every PostgreSQL session of the store.
///
/// For the server's side of its socket (sqlx sets no socket option on the client's side):
/// keepalive probes after 10 s idle, every 5 s, 3 of them; and data unacknowledged for 10 s ends
/// the connection. So PostgreSQL ends, within about 25 s instead of about 2 hours, the session
/// of a store that vanished behind a silent link, and a listening session that no longer reads,
/// which would otherwise hold back the notification queue of every listener.
///
/// For a store frozen in the middle of a transaction (its link held, its process stopped):
/// every audited write takes one advisory lock, so such a session would stop every write of
/// every replica. The store's transactions take milliseconds, so a session idle inside one for
/// 5 s is ended (`idle_in_transaction_session_timeout`), which releases the lock; a write waits
/// at most 10 s for a lock (`lock_timeout`) and a statement runs at most 30 s
/// (`statement_timeout`), then fails as unavailable (503, "retry later") instead of piling up.
///
/// Sent as `SET` after connecting rather than as start-up options, which connection poolers
/// such as PgBouncer refuse; a server that refuses them is logged and used as it is.
const SESSION_SETTINGS: &str = "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; \
     SET tcp_keepalives_count = 3; SET tcp_user_timeout = 10000; \
     SET idle_in_transaction_session_timeout = 5000; SET lock_timeout = 10000; \
     SET statement_timeout = 30000";

/// PostgreSQL's error codes for a statement stopped by one of [`SESSION_SETTINGS`]' limits (or
/// an administrator), or a session ended: retry later.
const RETRY_LATER_CODES: [&str; 6] = [
    "55P03", // lock_not_available (lock_timeout)
    "57014", // query_canceled (statement_timeout)
    "25P03", // idle_in_transaction_session_timeout
    "57P01", // admin_shutdown (pg_terminate_backend, a shutdown)
    "57P02", // crash_shutdown
    "57P03", // cannot_connect_now (starting up, or a standby being promoted)
];

/// Apply [`SESSION_SETTINGS`] to a new connection.
pub async fn tune_session(conn: &mut sqlx::PgConnection) {
    use sqlx::Executor;
    if let Err(e) = conn.execute(sqlx::raw_sql(SESSION_SETTINGS)).await {
        tracing::warn!(error = %e, "PostgreSQL refused the keepalive settings; a vanished peer is noticed later");
    }
}

/// The pool's options: [`tune_session`] on connect, a bounded check on release.
pub fn pg_pool_options(settings: &PoolSettings) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                tune_session(conn).await;
                Ok(())
            })
        })
        .after_release(|conn, _meta| {
            Box::pin(async move {
                use sqlx::Connection;
                match tokio::time::timeout(RELEASE_CHECK_TIMEOUT, conn.ping()).await {
                    Ok(Ok(())) => Ok(true),
                    Ok(Err(e)) => Err(e),
                    // An error, not `false`: sqlx then drops the socket without the goodbye that a
                    // silent link would hold too.
                    Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the released connection did not answer its check",
                    ))),
                }
            })
        })
}

impl PostgresRepo {
    pub async fn open(url: &str, settings: &PoolSettings) -> Result<Self, OpenError> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(OpenError::Url)?
            .application_name("loop-store");
        let pool = pg_pool_options(settings)
            .connect_with(opts)
            .await
            .map_err(OpenError::Connect)?;
        sqlx::migrate!("migrations/postgres")
            .run(&pool)
            .await
            .map_err(OpenError::Migrate)?;
        Ok(PostgresRepo { pool })
    }

    /// The pool, for the change listener.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The whole flush in one statement ([`SQL_USAGE_BATCH`]). Ids appear once per flush (the
    /// flush sums per token), so no row is updated twice by one statement.
    async fn write_usage(
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        usage: &[UsageDelta],
    ) -> Result<(), sqlx::Error> {
        let ids: Vec<&str> = usage.iter().map(|u| u.id.as_str()).collect();
        let counts: Vec<i64> = usage.iter().map(|u| u.count).collect();
        let lasts: Vec<i64> = usage.iter().map(|u| u.last_used_at_ms).collect();
        sqlx::query(SQL_USAGE_BATCH)
            .bind(ids)
            .bind(counts)
            .bind(lasts)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.pool.begin().await
    }

    /// A transaction holding the audit lock until it ends (see the module doc).
    async fn begin_audited(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(AUDIT_LOCK)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    async fn announce(tx: &mut sqlx::PgConnection, hash: &TokenHash) -> Result<(), sqlx::Error> {
        // Delivered to every listener when the transaction commits, and only then.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(NOTIFY_CHANNEL)
            .bind(hash.as_str())
            .execute(tx)
            .await?;
        Ok(())
    }
}

sql_repository!(PostgresRepo, sqlx::postgres::PgRow, "postgres");

/// An opened database: the repository, plus the PostgreSQL pool when other store processes may
/// share it (the caller then listens for their changes).
pub struct Opened {
    pub repo: Arc<dyn Repository>,
    pub postgres: Option<PgPool>,
}

/// Open the database named by a URL: `sqlite://PATH` or `postgres://...`.
pub async fn open(url: &str, settings: &PoolSettings) -> Result<Opened, OpenError> {
    if url.starts_with("sqlite:") {
        let repo = SqliteRepo::open(url, settings).await?;
        Ok(Opened {
            repo: Arc::new(repo),
            postgres: None,
        })
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let repo = PostgresRepo::open(url, settings).await?;
        let pool = repo.pool().clone();
        Ok(Opened {
            repo: Arc::new(repo),
            postgres: Some(pool),
        })
    } else {
        Err(OpenError::Scheme)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by_owner() -> ListFilter {
        ListFilter {
            owner_uid: Some("uid-1".into()),
            limit: 10,
            ..ListFilter::default()
        }
    }

    #[test]
    fn the_list_query_has_only_the_filters_that_are_set() {
        let sql = list_sql(&by_owner());
        assert!(
            sql.ends_with("WHERE owner_uid = $1 ORDER BY id LIMIT $2"),
            "{sql}"
        );
        let all = list_sql(&ListFilter {
            owner_uid: Some("u".into()),
            namespace: Some("n".into()),
            cluster: Some("c".into()),
            active: Some(true),
            after: Some("a".into()),
            limit: 5,
        });
        assert!(
            all.ends_with(
                "WHERE owner_uid = $1 AND owner_namespace = $2 AND owner_cluster = $3 AND \
                 $4 = (revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $5)) AND \
                 id > $6 ORDER BY id LIMIT $7"
            ),
            "{all}"
        );
        let none = list_sql(&ListFilter {
            limit: 5,
            ..ListFilter::default()
        });
        assert!(none.ends_with("FROM tokens ORDER BY id LIMIT $1"), "{none}");
    }

    /// Both audit queries are served by their index, in id order, without a scan or a sort.
    #[tokio::test]
    async fn event_queries_use_their_indexes_on_sqlite() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}/plan.db", dir.path().display());
        let repo = SqliteRepo::open(&url, &PoolSettings::default()).await?;
        for (sql, index) in [
            (SQL_EVENTS_BY_TOKEN, "token_events_token"),
            (SQL_EVENTS_BY_OWNER, "token_events_owner_uid"),
        ] {
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                    .bind("x")
                    .bind(0_i64)
                    .bind(10_i64)
                    .fetch_all(&repo.pool)
                    .await?;
            let details: Vec<&str> = plan.iter().map(|r| r.3.as_str()).collect();
            assert!(
                details
                    .iter()
                    .any(|d| d.contains(&format!("INDEX {index}"))),
                "{details:?}"
            );
            assert!(
                !details
                    .iter()
                    .any(|d| d.starts_with("SCAN") || d.contains("TEMP B-TREE")),
                "{details:?}"
            );
        }
        Ok(())
    }

    /// The operator lists by owner on every reconcile: that must not scan the table.
    #[tokio::test]
    async fn a_list_by_owner_uses_the_owner_index_on_sqlite() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}/plan.db", dir.path().display());
        let repo = SqliteRepo::open(&url, &PoolSettings::default()).await?;
        let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {}",
            list_sql(&by_owner())
        )))
        .bind("uid-1")
        .bind(10_i64)
        .fetch_all(&repo.pool)
        .await?;
        let details: Vec<&str> = plan.iter().map(|r| r.3.as_str()).collect();
        assert!(
            details.iter().any(|d| d.contains("INDEX tokens_owner_uid")),
            "{details:?}"
        );
        assert!(
            !details.iter().any(|d| d.starts_with("SCAN")),
            "{details:?}"
        );
        Ok(())
    }
}
