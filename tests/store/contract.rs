//! One contract for every storage backend: each test here runs against SQLite and against a
//! real PostgreSQL, each on a fresh database.

use crate::support;

use std::sync::Arc;

use loop_token_operator::store::model::{ListFilter, NewToken, Owner, TokenId, TokenPatch};
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
);

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
    let Registered::Created(first) = repo.register(&t, 1_000).await.unwrap() else {
        panic!("not created")
    };
    assert_eq!(first.created_at_ms, 1_000);
    assert_eq!(first.scopes.joined(), "orders:read");

    // The same body again: nothing changes.
    let Registered::Existing(again) = repo.register(&t, 2_000).await.unwrap() else {
        panic!("not existing")
    };
    assert_eq!(again, first);

    // Same id and hash, new name and scopes: applied, token unchanged.
    let mut renamed = t.clone();
    renamed.name = "renamed".into();
    renamed.scopes = ScopeSet::parse(["orders:write"]).unwrap();
    let Registered::Existing(r) = repo.register(&renamed, 3_000).await.unwrap() else {
        panic!("not existing")
    };
    assert_eq!(
        (r.name.as_str(), r.scopes.joined().as_str(), r.hash.clone()),
        ("renamed", "orders:write", h.clone())
    );
    assert_eq!((r.created_at_ms, r.updated_at_ms), (1_000, 3_000));

    let other_hash = new_token("t1", &fresh_hash(), &["orders:read"], owner("u1", "ns"));
    assert_eq!(
        repo.register(&other_hash, 4_000).await.unwrap(),
        Registered::Conflict(Conflict::DifferentHash)
    );
    let hash_elsewhere = new_token("t2", &h, &["orders:read"], owner("u1", "ns"));
    assert_eq!(
        repo.register(&hash_elsewhere, 4_000).await.unwrap(),
        Registered::Conflict(Conflict::HashTaken)
    );
    let other_owner = new_token("t1", &h, &["orders:read"], owner("u2", "ns"));
    assert_eq!(
        repo.register(&other_owner, 4_000).await.unwrap(),
        Registered::Conflict(Conflict::DifferentOwner)
    );

    repo.revoke(&t.id, 5_000).await.unwrap();
    assert_eq!(
        repo.register(&t, 6_000).await.unwrap(),
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
    repo.register(&t, 1).await.unwrap();
    let patch = TokenPatch {
        name: Some("new name".into()),
        scopes: Some(ScopeSet::parse(["customers:read", "orders:write"]).unwrap()),
        expires_at_ms: Some(Some(99)),
        owner: None,
    };
    let Updated::Updated(r) = repo.update(&t.id, &patch, 2).await.unwrap() else {
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
    let Updated::Updated(r) = repo.update(&t.id, &clear, 3).await.unwrap() else {
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
    let Updated::Updated(r) = repo.update(&t.id, &handover, 3).await.unwrap() else {
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
        repo.update(&unknown, &clear, 4).await.unwrap(),
        Updated::NotFound
    );
    repo.revoke(&t.id, 5).await.unwrap();
    assert_eq!(
        repo.update(&t.id, &clear, 6).await.unwrap(),
        Updated::Revoked
    );
}

async fn revocation_is_idempotent_and_kept_for_audit(repo: Arc<dyn Repository>) {
    let t = new_token("r", &fresh_hash(), &["orders:read"], owner("u1", "ns"));
    repo.register(&t, 1).await.unwrap();
    let first = repo.revoke(&t.id, 10).await.unwrap().unwrap();
    assert_eq!(first.revoked_at_ms, Some(10));
    let second = repo.revoke(&t.id, 20).await.unwrap().unwrap();
    assert_eq!(
        second.revoked_at_ms,
        Some(10),
        "a second revoke keeps the first time"
    );
    let kept = repo.get(&t.id).await.unwrap().unwrap();
    assert_eq!(kept.name, t.name);
    assert!(
        repo.revoke(&TokenId::parse("unknown").unwrap(), 30)
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
            1,
        )
        .await
        .unwrap();
    }
    repo.revoke(&TokenId::parse("a2").unwrap(), 5)
        .await
        .unwrap();
    let expiring = TokenPatch {
        expires_at_ms: Some(Some(50)),
        ..Default::default()
    };
    repo.update(&TokenId::parse("a3").unwrap(), &expiring, 6)
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
}

async fn usage_is_additive(repo: Arc<dyn Repository>) {
    let t = new_token("use", &fresh_hash(), &["orders:read"], owner("u", "n"));
    repo.register(&t, 1).await.unwrap();
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
    repo.register(&t, 1).await.unwrap();
    let found = repo.find_by_hash(&h).await.unwrap().unwrap();
    assert_eq!(found.id, t.id);
    assert_eq!(found.scopes.joined(), "customers:write orders:read");
    assert!(repo.find_by_hash(&fresh_hash()).await.unwrap().is_none());
}
