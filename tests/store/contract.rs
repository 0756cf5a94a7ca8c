//! One contract for every storage backend: each test here runs against SQLite and against a
//! real PostgreSQL, each on a fresh database.

use crate::support;

use std::sync::Arc;

use loop_token_operator::api::{ChangeReason, EventKind};
use loop_token_operator::store::model::{
    Change, EventFilter, EventScope, ListFilter, NewToken, Owner, Snapshot, TokenEvent, TokenId,
    TokenPatch,
};
use loop_token_operator::store::repo::{
    Conflict, PoolSettings, PostgresRepo, Registered, Repository, SqliteRepo, Updated, UsageDelta,
};
use loop_token_operator::store::scopes::ScopeSet;
use loop_token_operator::token::{Token, TokenHash};

async fn sqlite() -> (Arc<dyn Repository>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let repo = SqliteRepo::open(&url, &PoolSettings::default())
        .await
        .unwrap();
    (Arc::new(repo), dir)
}

async fn postgres() -> (Arc<dyn Repository>, ()) {
    let url = support::postgres().await;
    let repo = PostgresRepo::open(&url, &PoolSettings::default())
        .await
        .unwrap();
    (Arc::new(repo), ())
}

/// Runs each listed contract test against both backends.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite_backend {
            $(#[tokio::test] async fn $name() { let (r, _dir) = super::sqlite().await; super::$name(r).await; })*
        }
        mod postgres_backend {
            $(#[tokio::test] async fn $name() { let (r, _g) = super::postgres().await; super::$name(r).await; })*
        }
    };
}

contract!(
    registration_is_idempotent_and_conflicts_are_named,
    updates_change_metadata_not_the_token,
    revocation_is_idempotent_and_kept_for_audit,
    lists_filter_by_owner_namespace_and_activity_and_page,
    usage_is_additive,
    lookup_by_hash,
    every_change_is_one_event_and_no_op_writes_none,
    events_page_by_token_and_by_owner_oldest_first,
    events_never_hold_a_token_or_a_hash,
);

/// A change without a reason (recorded as `manual`).
const M: Change = Change {
    reason: ChangeReason::Manual,
    generation: None,
};

fn owner(uid: &str, ns: &str) -> Owner {
    Owner {
        cluster: "dev".into(),
        namespace: ns.into(),
        name: format!("tok-{uid}"),
        uid: uid.into(),
    }
}

fn new_token(id: &str, hash: &TokenHash, scopes: &[&str], owner: Owner) -> NewToken {
    NewToken {
        id: TokenId::parse(id).unwrap(),
        hash: hash.clone(),
        name: format!("name of {id}"),
        scopes: ScopeSet::parse(scopes.iter().copied()).unwrap(),
        owner,
        expires_at_ms: None,
    }
}

fn fresh_hash() -> TokenHash {
    Token::mint().unwrap().hash()
}

async fn registration_is_idempotent_and_conflicts_are_named(repo: Arc<dyn Repository>) {
    let h = fresh_hash();
    let t = new_token("t1", &h, &["orders:read"], owner("u1", "ns"));
    let Registered::Created(first) = repo.register(&t, M, 1_000).await.unwrap() else {
        panic!("not created")
    };
    assert_eq!(first.created_at_ms, 1_000);
    assert_eq!(first.scopes.joined(), "orders:read");

    // The same body again: nothing changes.
    let Registered::Existing(again) = repo.register(&t, M, 2_000).await.unwrap() else {
        panic!("not existing")
    };
    assert_eq!(again, first);

    // Same id and hash, new name and scopes: applied, token unchanged.
    let mut renamed = t.clone();
    renamed.name = "renamed".into();
    renamed.scopes = ScopeSet::parse(["orders:write"]).unwrap();
    let Registered::Existing(r) = repo.register(&renamed, M, 3_000).await.unwrap() else {
        panic!("not existing")
    };
    assert_eq!(
        (r.name.as_str(), r.scopes.joined().as_str(), r.hash.clone()),
        ("renamed", "orders:write", h.clone())
    );
    assert_eq!((r.created_at_ms, r.updated_at_ms), (1_000, 3_000));

    let other_hash = new_token("t1", &fresh_hash(), &["orders:read"], owner("u1", "ns"));
    assert_eq!(
        repo.register(&other_hash, M, 4_000).await.unwrap(),
        Registered::Conflict(Conflict::DifferentHash)
    );
    let hash_elsewhere = new_token("t2", &h, &["orders:read"], owner("u1", "ns"));
    assert_eq!(
        repo.register(&hash_elsewhere, M, 4_000).await.unwrap(),
        Registered::Conflict(Conflict::HashTaken)
    );
    let other_owner = new_token("t1", &h, &["orders:read"], owner("u2", "ns"));
    assert_eq!(
        repo.register(&other_owner, M, 4_000).await.unwrap(),
        Registered::Conflict(Conflict::DifferentOwner)
    );

    repo.revoke(&t.id, M, 5_000).await.unwrap();
    assert_eq!(
        repo.register(&t, M, 6_000).await.unwrap(),
        Registered::Conflict(Conflict::Revoked)
    );
    // Conflicts wrote nothing.
    assert!(
        repo.get(&TokenId::parse("t2").unwrap())
            .await
            .unwrap()
            .is_none()
    );
}

async fn updates_change_metadata_not_the_token(repo: Arc<dyn Repository>) {
    let h = fresh_hash();
    let t = new_token("u", &h, &["orders:read"], owner("u1", "ns"));
    repo.register(&t, M, 1).await.unwrap();
    let patch = TokenPatch {
        name: Some("new name".into()),
        scopes: Some(ScopeSet::parse(["customers:read", "orders:write"]).unwrap()),
        expires_at_ms: Some(Some(99)),
        owner: None,
    };
    let Updated::Updated(r) = repo.update(&t.id, &patch, M, 2).await.unwrap() else {
        panic!("not updated")
    };
    assert_eq!(r.hash, h);
    assert_eq!(r.name, "new name");
    assert_eq!(r.scopes.joined(), "customers:read orders:write");
    assert_eq!((r.expires_at_ms, r.updated_at_ms), (Some(99), 2));

    // Only what the patch names changes; `Some(None)` clears the expiry.
    let clear = TokenPatch {
        expires_at_ms: Some(None),
        ..Default::default()
    };
    let Updated::Updated(r) = repo.update(&t.id, &clear, M, 3).await.unwrap() else {
        panic!("not updated")
    };
    assert_eq!((r.name.as_str(), r.expires_at_ms), ("new name", None));

    // A new owner (an ApiToken adopting an orphaned token): listed under it from then on, and
    // nothing else changes.
    let adopter = owner("u2", "ns");
    let handover = TokenPatch {
        owner: Some(adopter.clone()),
        ..Default::default()
    };
    let Updated::Updated(r) = repo.update(&t.id, &handover, M, 3).await.unwrap() else {
        panic!("not updated")
    };
    assert_eq!(
        (&r.owner, r.hash.clone(), r.name.as_str()),
        (&adopter, h.clone(), "new name")
    );
    let by = |uid: &str| ListFilter {
        owner_uid: Some(uid.into()),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(repo.list(&by("u2"), 3).await.unwrap().len(), 1);
    assert!(repo.list(&by("u1"), 3).await.unwrap().is_empty());

    let unknown = TokenId::parse("nope").unwrap();
    assert_eq!(
        repo.update(&unknown, &clear, M, 4).await.unwrap(),
        Updated::NotFound
    );
    repo.revoke(&t.id, M, 5).await.unwrap();
    assert_eq!(
        repo.update(&t.id, &clear, M, 6).await.unwrap(),
        Updated::Revoked
    );
}

async fn revocation_is_idempotent_and_kept_for_audit(repo: Arc<dyn Repository>) {
    let t = new_token("r", &fresh_hash(), &["orders:read"], owner("u1", "ns"));
    repo.register(&t, M, 1).await.unwrap();
    let first = repo.revoke(&t.id, M, 10).await.unwrap().unwrap();
    assert_eq!(first.revoked_at_ms, Some(10));
    let second = repo.revoke(&t.id, M, 20).await.unwrap().unwrap();
    assert_eq!(
        second.revoked_at_ms,
        Some(10),
        "a second revoke keeps the first time"
    );
    let kept = repo.get(&t.id).await.unwrap().unwrap();
    assert_eq!(kept.name, t.name);
    assert!(
        repo.revoke(&TokenId::parse("unknown").unwrap(), M, 30)
            .await
            .unwrap()
            .is_none()
    );
}

async fn lists_filter_by_owner_namespace_and_activity_and_page(repo: Arc<dyn Repository>) {
    for (id, uid, ns) in [
        ("a1", "ua", "n1"),
        ("a2", "ua", "n1"),
        ("a3", "ua", "n1"),
        ("b1", "ub", "n2"),
    ] {
        repo.register(
            &new_token(id, &fresh_hash(), &["orders:read"], owner(uid, ns)),
            M,
            1,
        )
        .await
        .unwrap();
    }
    repo.revoke(&TokenId::parse("a2").unwrap(), M, 5)
        .await
        .unwrap();
    let expiring = TokenPatch {
        expires_at_ms: Some(Some(50)),
        ..Default::default()
    };
    repo.update(&TokenId::parse("a3").unwrap(), &expiring, M, 6)
        .await
        .unwrap();

    let ids = |v: Vec<loop_token_operator::store::model::TokenRecord>| {
        v.into_iter()
            .map(|r| r.id.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    let all = ListFilter {
        limit: 100,
        ..Default::default()
    };
    assert_eq!(
        ids(repo.list(&all, 10).await.unwrap()),
        ["a1", "a2", "a3", "b1"]
    );
    let by_owner = ListFilter {
        owner_uid: Some("ua".into()),
        limit: 100,
        ..Default::default()
    };
    assert_eq!(
        ids(repo.list(&by_owner, 10).await.unwrap()),
        ["a1", "a2", "a3"]
    );
    let by_ns = ListFilter {
        namespace: Some("n2".into()),
        limit: 100,
        ..Default::default()
    };
    assert_eq!(ids(repo.list(&by_ns, 10).await.unwrap()), ["b1"]);
    let active = ListFilter {
        owner_uid: Some("ua".into()),
        active: Some(true),
        limit: 100,
        ..Default::default()
    };
    assert_eq!(
        ids(repo.list(&active, 10).await.unwrap()),
        ["a1", "a3"],
        "a3 not yet expired at 10"
    );
    assert_eq!(
        ids(repo.list(&active, 60).await.unwrap()),
        ["a1"],
        "a3 expired at 50"
    );
    let inactive = ListFilter {
        active: Some(false),
        limit: 100,
        ..Default::default()
    };
    assert_eq!(ids(repo.list(&inactive, 60).await.unwrap()), ["a2", "a3"]);
    let page1 = ListFilter {
        limit: 2,
        ..Default::default()
    };
    assert_eq!(ids(repo.list(&page1, 10).await.unwrap()), ["a1", "a2"]);
    let page2 = ListFilter {
        limit: 2,
        after: Some("a2".into()),
        ..Default::default()
    };
    assert_eq!(ids(repo.list(&page2, 10).await.unwrap()), ["a3", "b1"]);
    // By cluster: another cluster's registration is not listed.
    let other = Owner {
        cluster: "other".into(),
        ..owner("uc", "n1")
    };
    repo.register(
        &new_token("c1", &fresh_hash(), &["orders:read"], other),
        M,
        1,
    )
    .await
    .unwrap();
    let by_cluster = |c: &str| ListFilter {
        cluster: Some(c.into()),
        active: Some(true),
        limit: 100,
        ..Default::default()
    };
    assert_eq!(
        ids(repo.list(&by_cluster("dev"), 10).await.unwrap()),
        ["a1", "a3", "b1"]
    );
    assert_eq!(
        ids(repo.list(&by_cluster("other"), 10).await.unwrap()),
        ["c1"]
    );
}

async fn usage_is_additive(repo: Arc<dyn Repository>) {
    let t = new_token("use", &fresh_hash(), &["orders:read"], owner("u", "n"));
    repo.register(&t, M, 1).await.unwrap();
    let d = |count, last| UsageDelta {
        id: t.id.clone(),
        count,
        last_used_at_ms: last,
    };
    repo.record_usage(&[d(3, 100)]).await.unwrap();
    repo.record_usage(&[d(2, 50)]).await.unwrap();
    let r = repo.get(&t.id).await.unwrap().unwrap();
    assert_eq!(
        (r.use_count, r.last_used_at_ms),
        (5, Some(100)),
        "counts add up; last use never goes back"
    );
    // Usage of an unknown id is ignored, not an error.
    repo.record_usage(&[UsageDelta {
        id: TokenId::parse("ghost").unwrap(),
        count: 1,
        last_used_at_ms: 1,
    }])
    .await
    .unwrap();
    // A flush of several tokens at once (one statement on PostgreSQL), an unknown one among them.
    let u = new_token("use-2", &fresh_hash(), &["orders:read"], owner("u", "n"));
    repo.register(&u, M, 1).await.unwrap();
    let batch = [
        d(1, 300),
        UsageDelta {
            id: TokenId::parse("ghost").unwrap(),
            count: 9,
            last_used_at_ms: 9,
        },
        UsageDelta {
            id: u.id.clone(),
            count: 4,
            last_used_at_ms: 40,
        },
    ];
    repo.record_usage(&batch).await.unwrap();
    let r = repo.get(&t.id).await.unwrap().unwrap();
    assert_eq!((r.use_count, r.last_used_at_ms), (6, Some(300)));
    let r = repo.get(&u.id).await.unwrap().unwrap();
    assert_eq!((r.use_count, r.last_used_at_ms), (4, Some(40)));
    repo.ping().await.unwrap();
}

async fn lookup_by_hash(repo: Arc<dyn Repository>) {
    let h = fresh_hash();
    let t = new_token(
        "h",
        &h,
        &["orders:read", "customers:write"],
        owner("u", "n"),
    );
    repo.register(&t, M, 1).await.unwrap();
    let found = repo.find_by_hash(&h).await.unwrap().unwrap();
    assert_eq!(found.id, t.id);
    assert_eq!(found.scopes.joined(), "customers:write orders:read");
    assert!(repo.find_by_hash(&fresh_hash()).await.unwrap().is_none());
}

// ----- The audit trail -----

fn why(reason: ChangeReason, generation: i64) -> Change {
    Change {
        reason,
        generation: Some(generation),
    }
}

/// A registration of owner `u1` (the token of these tests) as an event shows it.
fn state(name: &str, scopes: &[&str], expires_at_ms: Option<i64>) -> Option<Snapshot> {
    Some(Snapshot {
        name: name.into(),
        scopes: ScopeSet::parse(scopes.iter().copied()).unwrap(),
        expires_at_ms,
        owner: owner("u1", "ns"),
    })
}

async fn page(
    repo: &Arc<dyn Repository>,
    scope: EventScope,
    after: i64,
    limit: u32,
) -> Vec<TokenEvent> {
    repo.events(&EventFilter {
        scope,
        after,
        limit,
    })
    .await
    .unwrap()
}

async fn by_token(repo: &Arc<dyn Repository>, id: &TokenId) -> Vec<TokenEvent> {
    page(repo, EventScope::Token(id.clone()), 0, 1000).await
}

/// (kind, reason, generation, before, after, at) of each event.
type Line = (
    EventKind,
    ChangeReason,
    Option<i64>,
    Option<Snapshot>,
    Option<Snapshot>,
    i64,
);

fn lines(events: &[TokenEvent]) -> Vec<Line> {
    events
        .iter()
        .map(|e| {
            let e = &e.event;
            (
                e.kind,
                e.change.reason,
                e.change.generation,
                e.before.clone(),
                e.after.clone(),
                e.at_ms,
            )
        })
        .collect()
}

/// A token's whole life through the repository, with writes that change nothing in between.
async fn a_life_with_no_op_writes(repo: &Arc<dyn Repository>) -> NewToken {
    use ChangeReason::{Deleted, Manual, Policy, Rotation, Scheduled};
    let mut t = new_token("life", &fresh_hash(), &["orders:read"], owner("u1", "ns"));
    t.name = "n".into();
    repo.register(&t, why(Scheduled, 1), 10).await.unwrap();
    // An idempotent PUT changes nothing and records nothing.
    repo.register(&t, why(Manual, 1), 11).await.unwrap();
    // A PUT that changes the registration is `reregistered`.
    let mut wider = t.clone();
    wider.scopes = ScopeSet::parse(["orders:read", "orders:write"]).unwrap();
    repo.register(&wider, why(Policy, 2), 12).await.unwrap();
    // Conflicts record nothing.
    let mut other = t.clone();
    other.hash = fresh_hash();
    assert_eq!(
        repo.register(&other, M, 13).await.unwrap(),
        Registered::Conflict(Conflict::DifferentHash)
    );
    let scopes = TokenPatch {
        scopes: Some(ScopeSet::parse(["orders:read"]).unwrap()),
        ..TokenPatch::default()
    };
    repo.update(&t.id, &scopes, why(Manual, 3), 14)
        .await
        .unwrap();
    // The same values again: no write, no event.
    repo.update(&t.id, &scopes, why(Manual, 3), 15)
        .await
        .unwrap();
    let expiry = TokenPatch {
        expires_at_ms: Some(Some(1_000)),
        ..TokenPatch::default()
    };
    repo.update(&t.id, &expiry, why(Rotation, 4), 16)
        .await
        .unwrap();
    // Name and expiry at once: one `updated`, with the expiry's before and after.
    let both = TokenPatch {
        name: Some("m".into()),
        expires_at_ms: Some(None),
        ..TokenPatch::default()
    };
    repo.update(&t.id, &both, M, 17).await.unwrap();
    repo.revoke(&t.id, why(Deleted, 5), 18).await.unwrap();
    // A repeated revoke, and a patch of a revoked token, record nothing.
    repo.revoke(&t.id, why(Deleted, 6), 19).await.unwrap();
    assert_eq!(
        repo.update(&t.id, &scopes, M, 20).await.unwrap(),
        Updated::Revoked
    );

    t
}

async fn every_change_is_one_event_and_no_op_writes_none(repo: Arc<dyn Repository>) {
    use ChangeReason::{Deleted, Manual, Policy, Rotation, Scheduled};
    use EventKind as K;
    let t = a_life_with_no_op_writes(&repo).await;
    let events = by_token(&repo, &t.id).await;
    let r = &["orders:read"][..];
    let rw = &["orders:read", "orders:write"][..];
    assert_eq!(
        lines(&events),
        vec![
            (
                K::Registered,
                Scheduled,
                Some(1),
                None,
                state("n", r, None),
                10
            ),
            (
                K::Reregistered,
                Policy,
                Some(2),
                state("n", r, None),
                state("n", rw, None),
                12
            ),
            (
                K::Updated,
                Manual,
                Some(3),
                state("n", rw, None),
                state("n", r, None),
                14
            ),
            (
                K::ExpirySet,
                Rotation,
                Some(4),
                state("n", r, None),
                state("n", r, Some(1_000)),
                16
            ),
            (
                K::Updated,
                Manual,
                None,
                state("n", r, Some(1_000)),
                state("m", r, None),
                17
            ),
            (K::Revoked, Deleted, Some(5), state("m", r, None), None, 18),
        ]
    );
    assert!(events.windows(2).all(|w| w[0].id < w[1].id), "ids increase");
    for e in &events {
        assert_eq!(
            (e.event.token_id.as_str(), &e.event.owner),
            ("life", &t.owner)
        );
    }
    // A no-op PATCH does not touch the registration either.
    let kept = repo.get(&t.id).await.unwrap().unwrap();
    assert_eq!((kept.updated_at_ms, kept.revoked_at_ms), (18, Some(18)));
}

async fn events_page_by_token_and_by_owner_oldest_first(repo: Arc<dyn Repository>) {
    // Interleaved changes of two owners' tokens.
    for (id, uid) in [("a1", "ua"), ("b1", "ub"), ("a2", "ua")] {
        let t = new_token(id, &fresh_hash(), &["orders:read"], owner(uid, "ns"));
        repo.register(&t, M, 1).await.unwrap();
    }
    for id in ["a1", "b1", "a2"] {
        repo.revoke(&TokenId::parse(id).unwrap(), M, 2)
            .await
            .unwrap();
    }
    let ids = |v: &[TokenEvent]| {
        v.iter()
            .map(|e| format!("{}:{}", e.event.token_id.as_str(), e.event.kind.as_str()))
            .collect::<Vec<_>>()
    };
    let owner_a = |after, limit| page(&repo, EventScope::Owner("ua".into()), after, limit);
    let all = owner_a(0, 1000).await;
    assert_eq!(
        ids(&all),
        ["a1:registered", "a2:registered", "a1:revoked", "a2:revoked"]
    );
    // Keyset pages of two: the cursor is the id of the last event of a page.
    let first = owner_a(0, 2).await;
    let second = owner_a(first[1].id, 2).await;
    let third = owner_a(second[1].id, 2).await;
    assert_eq!(ids(&first), ["a1:registered", "a2:registered"]);
    assert_eq!(ids(&second), ["a1:revoked", "a2:revoked"]);
    assert!(third.is_empty());
    let b = by_token(&repo, &TokenId::parse("b1").unwrap()).await;
    assert_eq!(ids(&b), ["b1:registered", "b1:revoked"]);
    assert!(
        by_token(&repo, &TokenId::parse("nobody").unwrap())
            .await
            .is_empty()
    );
    assert!(
        page(&repo, EventScope::Owner("uc".into()), 0, 10)
            .await
            .is_empty()
    );
}

async fn events_never_hold_a_token_or_a_hash(repo: Arc<dyn Repository>) {
    let token = Token::mint().unwrap();
    let hash = token.hash();
    let t = new_token("secretive", &hash, &["orders:read"], owner("u1", "ns"));
    repo.register(&t, M, 1).await.unwrap();
    let mut renamed = t.clone();
    renamed.name = "other".into();
    repo.register(&renamed, M, 2).await.unwrap();
    let patch = TokenPatch {
        expires_at_ms: Some(Some(9)),
        ..TokenPatch::default()
    };
    repo.update(&t.id, &patch, M, 3).await.unwrap();
    repo.revoke(&t.id, M, 4).await.unwrap();
    let events = by_token(&repo, &t.id).await;
    assert_eq!(events.len(), 4);
    let hex = &hash.as_str()["sha256:".len()..];
    for e in &events {
        let text = format!("{}\n{e:?}", serde_json::to_string(&e.view()).unwrap());
        for secret in [token.expose(), hash.as_str(), hex, "sha256:"] {
            assert!(!text.contains(secret), "an event holds {secret}: {text}");
        }
    }
}

/// A change whose event cannot be written is not made: the event is in the change's
/// transaction. (A trigger added behind the store's back refuses every event.)
async fn a_change_without_its_event_is_not_made(
    repo: Arc<dyn Repository>,
    refuse_events: impl AsyncFnOnce(),
) {
    let kept = new_token("kept", &fresh_hash(), &["orders:read"], owner("u1", "ns"));
    repo.register(&kept, M, 1).await.unwrap();
    refuse_events().await;
    let lost = new_token("lost", &fresh_hash(), &["orders:read"], owner("u1", "ns"));
    assert!(repo.register(&lost, M, 2).await.is_err());
    assert!(repo.get(&lost.id).await.unwrap().is_none());
    let patch = TokenPatch {
        name: Some("renamed".into()),
        ..TokenPatch::default()
    };
    assert!(repo.update(&kept.id, &patch, M, 3).await.is_err());
    assert!(repo.revoke(&kept.id, M, 4).await.is_err());
    let r = repo.get(&kept.id).await.unwrap().unwrap();
    assert_eq!(
        (r.name.as_str(), r.revoked_at_ms),
        (kept.name.as_str(), None)
    );
    assert_eq!(by_token(&repo, &kept.id).await.len(), 1);
}

#[tokio::test]
async fn sqlite_a_change_without_its_event_is_not_made() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let repo = SqliteRepo::open(&url, &PoolSettings::default())
        .await
        .unwrap();
    let refuse = async || {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::raw_sql(
            "CREATE TRIGGER refuse BEFORE INSERT ON token_events \
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .execute(&pool)
        .await
        .unwrap();
    };
    a_change_without_its_event_is_not_made(Arc::new(repo), refuse).await;
}

#[tokio::test]
async fn postgres_a_change_without_its_event_is_not_made() {
    let url = support::postgres().await;
    let repo = PostgresRepo::open(&url, &PoolSettings::default())
        .await
        .unwrap();
    let refuse = async || {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::raw_sql(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'refused'; END; $$; \
             CREATE TRIGGER refuse BEFORE INSERT ON token_events \
             FOR EACH ROW EXECUTE FUNCTION refuse();",
        )
        .execute(&pool)
        .await
        .unwrap();
    };
    a_change_without_its_event_is_not_made(Arc::new(repo), refuse).await;
}
