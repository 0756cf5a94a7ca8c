//! The store's HTTP API, driven through its router (no socket) on a real SQLite database, with
//! an injected clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use loop_token_operator::store::cache::{Cache, Introspector};
use loop_token_operator::store::http::{AppState, Credential, Credentials, app};
use loop_token_operator::store::metrics::Metrics;
use loop_token_operator::store::repo::{PoolSettings, Repository, SqliteRepo};
use loop_token_operator::store::scopes::Catalogue;
use loop_token_operator::store::usage::Usage;
use loop_token_operator::store::writes::Writer;
use loop_token_operator::token::Token;
use serde_json::{Value, json};
use tower::ServiceExt;

pub(crate) const ADMIN: &str = "admin-credential-0123456789";
pub(crate) const INTROSPECT: &str = "introspect-credential-0123456789";

pub(crate) struct Store {
    pub(crate) app: Router,
    now: Arc<AtomicI64>,
    usage: Arc<Usage>,
    repo: Arc<dyn Repository>,
    _dir: tempfile::TempDir,
}

pub(crate) async fn store() -> Store {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let repo: Arc<dyn Repository> = Arc::new(
        SqliteRepo::open(&url, &PoolSettings::default())
            .await
            .unwrap(),
    );
    let metrics = Metrics::new();
    let usage = Arc::new(Usage::default());
    let cache = Arc::new(Cache::always_trusted());
    let writer = Writer::new(repo.clone(), cache.clone());
    let introspector = Arc::new(Introspector::new(
        repo.clone(),
        cache,
        usage.clone(),
        metrics.clone(),
        true,
    ));
    let now = Arc::new(AtomicI64::new(1_800_000_000_000));
    let clock_now = now.clone();
    let state = AppState {
        repo: repo.clone(),
        writer,
        introspector,
        catalogue: Arc::new(Catalogue::default()),
        credentials: Arc::new(Credentials {
            admin: Credential::new(ADMIN),
            introspect: Credential::new(INTROSPECT),
        }),
        metrics,
        clock: Arc::new(move || clock_now.load(Ordering::SeqCst)),
    };
    Store {
        app: app(state),
        now,
        usage,
        repo,
        _dir: dir,
    }
}

impl Store {
    pub(crate) async fn call(
        &self,
        method: &str,
        uri: &str,
        cred: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(c) = cred {
            req = req.header(header::AUTHORIZATION, format!("Bearer {c}"));
        }
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.raw(req.body(body).unwrap()).await
    }

    pub(crate) async fn raw(&self, req: Request<Body>) -> (StatusCode, Value) {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, v)
    }

    pub(crate) async fn register(
        &self,
        id: &str,
        token: &Token,
        scopes: &[&str],
    ) -> (StatusCode, Value) {
        self.call(
            "PUT",
            &format!("/v1/tokens/{id}"),
            Some(ADMIN),
            Some(registration(token, scopes)),
        )
        .await
    }

    pub(crate) async fn introspect(&self, token: &str) -> Value {
        let (s, v) = self
            .call(
                "POST",
                "/v1/introspect",
                Some(INTROSPECT),
                Some(json!({ "token": token })),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }
}

pub(crate) fn registration(token: &Token, scopes: &[&str]) -> Value {
    json!({
        "hash": token.hash().to_string(),
        "name": "Klaviyo sync",
        "scopes": scopes,
        "owner": {"cluster": "dev", "namespace": "integrations", "name": "klaviyo-sync", "uid": "uid-1"},
    })
}

#[tokio::test]
async fn register_introspect_edit_revoke() {
    let s = store().await;
    let t = Token::mint().unwrap();
    let (status, v) = s
        .register("tok-1", &t, &["subscriptions:read", "customers:read"])
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["fingerprint"], t.fingerprint());
    assert_eq!(v["active"], true);
    assert!(
        !v.to_string().contains(&t.hash().as_str()[7..]),
        "views never carry the hash"
    );

    let (status, _) = s
        .register("tok-1", &t, &["subscriptions:read", "customers:read"])
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the same registration again is idempotent"
    );

    let v = s.introspect(t.expose()).await;
    assert_eq!(
        v,
        json!({"active": true, "scope": "customers:read subscriptions:read", "tokenId": "tok-1", "name": "Klaviyo sync", "iat": 1_800_000_000})
    );

    // Edit: the same token now has the new scopes, at once (the cached answer is dropped).
    let (status, v) = s
        .call(
            "PATCH",
            "/v1/tokens/tok-1",
            Some(ADMIN),
            Some(json!({"scopes": ["orders:write"], "name": "Renamed"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let v = s.introspect(t.expose()).await;
    assert_eq!(
        (v["scope"].as_str(), v["name"].as_str()),
        (Some("orders:write"), Some("Renamed"))
    );

    // Hand over: another owner (an ApiToken adopting an orphaned token); the token works on,
    // and an owner with a field the store does not know is refused.
    let adopter = json!({"cluster": "c", "namespace": "integrations", "name": "klaviyo-sync", "uid": "uid-2"});
    let (status, v) = s
        .call(
            "PATCH",
            "/v1/tokens/tok-1",
            Some(ADMIN),
            Some(json!({"owner": adopter})),
        )
        .await;
    assert_eq!((status, &v["owner"]), (StatusCode::OK, &adopter), "{v}");
    assert_eq!(s.introspect(t.expose()).await["active"], true);
    let mut odd = adopter.clone();
    odd["kind"] = json!("ApiToken");
    let (status, v) = s
        .call(
            "PATCH",
            "/v1/tokens/tok-1",
            Some(ADMIN),
            Some(json!({"owner": odd})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");

    // Revoke: inactive at once, and the record stays for audit.
    let (status, v) = s
        .call("DELETE", "/v1/tokens/tok-1", Some(ADMIN), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(v["revokedAt"].is_string());
    assert_eq!(s.introspect(t.expose()).await, json!({"active": false}));
    let (status, _) = s
        .call("DELETE", "/v1/tokens/tok-1", Some(ADMIN), None)
        .await;
    assert_eq!(status, StatusCode::OK, "revocation is idempotent");
    let (status, v) = s.call("GET", "/v1/tokens/tok-1", Some(ADMIN), None).await;
    assert_eq!(
        (status, v["active"].clone()),
        (StatusCode::OK, json!(false))
    );
    let (status, v) = s
        .call(
            "PATCH",
            "/v1/tokens/tok-1",
            Some(ADMIN),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
}

#[tokio::test]
async fn expiry_is_checked_on_every_answer() {
    let s = store().await;
    let t = Token::mint().unwrap();
    let mut body = registration(&t, &["orders:read"]);
    body["expiresAt"] = json!("2027-01-15T08:00:10Z"); // 1_800_000_010 s
    let (status, v) = s
        .call("PUT", "/v1/tokens/exp", Some(ADMIN), Some(body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let v = s.introspect(t.expose()).await;
    assert_eq!(
        (v["active"].as_bool(), v["exp"].as_i64()),
        (Some(true), Some(1_800_000_010))
    );
    // The answer was cached; time passes the expiry; the cache must not keep it alive.
    s.now.store(1_800_000_010_000, Ordering::SeqCst);
    assert_eq!(s.introspect(t.expose()).await, json!({"active": false}));
    let (_, v) = s
        .call("GET", "/v1/tokens?active=true", Some(ADMIN), None)
        .await;
    assert_eq!(v["items"], json!([]));
}

#[tokio::test]
async fn inactive_answers_for_unknown_malformed_and_tampered_tokens() {
    let s = store().await;
    let t = Token::mint().unwrap();
    s.register("t", &t, &["orders:read"]).await;
    let mut tampered = t.expose().to_owned();
    tampered.replace_range(10..11, if &tampered[10..11] == "A" { "B" } else { "A" });
    let unknown = Token::mint().unwrap();
    for presented in [
        "",
        "hello",
        "loop_",
        &tampered,
        unknown.expose(),
        &t.expose()[..46],
    ] {
        assert_eq!(
            s.introspect(presented).await,
            json!({"active": false}),
            "{presented:?}"
        );
    }
    // Malformed tokens never reach the database: the metrics count them as malformed, and only
    // the well-formed unknown token caused a cache miss.
    let (_, metrics) = s.call("GET", "/metrics", None, None).await;
    let m = metrics.as_str().unwrap();
    assert!(
        m.contains("loop_store_introspections_total{outcome=\"Malformed\"} 5"),
        "{m}"
    );
    assert!(
        m.contains("loop_store_introspections_total{outcome=\"Unknown\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("loop_store_introspection_cache_total{result=\"Miss\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn bad_requests_get_clear_answers() {
    let s = store().await;
    let t = Token::mint().unwrap();
    // Unknown scope: 422 naming it; nothing registered.
    let (status, v) = s.register("t", &t, &["widgets:read"]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["error"], "unknown_scope");
    assert!(
        v["message"].as_str().unwrap().contains("widgets:read"),
        "{v}"
    );
    let (status, _) = s.register("t2", &t, &["reports:write"]).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "reports is read-only"
    );
    assert_eq!(
        s.call("GET", "/v1/tokens/t", Some(ADMIN), None).await.0,
        StatusCode::NOT_FOUND
    );

    // Conflicts.
    assert_eq!(
        s.register("t", &t, &["orders:read"]).await.0,
        StatusCode::CREATED
    );
    let (status, v) = s
        .register("t", &Token::mint().unwrap(), &["orders:read"])
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("different token hash")
    );
    assert_eq!(
        s.register("other", &t, &["orders:read"]).await.0,
        StatusCode::CONFLICT
    );

    // Invalid id, scope syntax, unknown fields, malformed JSON.
    assert_eq!(
        s.register("bad%20id", &t, &["orders:read"]).await.0,
        StatusCode::BAD_REQUEST
    );
    let (status, v) = s.register("x", &Token::mint().unwrap(), &["orders"]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        v["message"].as_str().unwrap().contains("<resource>:read"),
        "{v}"
    );
    // Unknown fields, also inside the owner (which answers carry for tolerant clients).
    for at in ["", "/owner"] {
        let mut extra = registration(&Token::mint().unwrap(), &["orders:read"]);
        extra.pointer_mut(at).unwrap()["colour"] = json!("red");
        let (status, v) = s
            .call("PUT", "/v1/tokens/y", Some(ADMIN), Some(extra))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let message = v["message"].as_str().unwrap();
        assert!(message.contains("unknown field"), "{v}");
        assert!(
            !message.contains("colour"),
            "unknown keys are not echoed: {v}"
        );
    }
    let req = Request::builder()
        .method("PUT")
        .uri("/v1/tokens/z")
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"hash\": "))
        .unwrap();
    assert_eq!(s.raw(req).await.0, StatusCode::BAD_REQUEST);

    // Wrong content type: 415. Body over 64 KiB: 413.
    let req = Request::builder()
        .method("POST")
        .uri("/v1/introspect")
        .header(header::AUTHORIZATION, format!("Bearer {INTROSPECT}"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("{\"token\": \"x\"}"))
        .unwrap();
    assert_eq!(s.raw(req).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let huge = json!({ "token": "x".repeat(70 * 1024) });
    let (status, _) = s
        .call("POST", "/v1/introspect", Some(INTROSPECT), Some(huge))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // A bad value is not echoed back: a token sent in the wrong place stays out of the answer.
    let leaked = Token::mint().unwrap();
    let (status, v) = s
        .call(
            "POST",
            "/v1/introspect",
            Some(INTROSPECT),
            Some(json!({"token": 5, "token_type_hint": [leaked.expose()]})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(!v.to_string().contains(leaked.expose()), "{v}");
    let (status, v) = s.call("GET", "/v1/tokens?limit=0", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (status, _) = s
        .call("GET", "/v1/tokens?colour=red", Some(ADMIN), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn credentials_are_separate() {
    let s = store().await;
    let t = Token::mint().unwrap();
    let body = registration(&t, &["orders:read"]);
    let resp = s
        .app
        .clone()
        .oneshot(
            Request::builder()
                .method("GET")
                .uri("/v1/tokens")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.headers()[header::WWW_AUTHENTICATE],
        "Bearer realm=\"loop-store\""
    );
    assert_eq!(
        s.call(
            "PUT",
            "/v1/tokens/a",
            Some("wrong-credential-000000"),
            Some(body.clone())
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        s.call("PUT", "/v1/tokens/a", Some(INTROSPECT), Some(body.clone()))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        s.call("PUT", "/v1/tokens/a", Some(ADMIN), Some(body))
            .await
            .0,
        StatusCode::CREATED
    );
    let probe = json!({"token": t.expose()});
    assert_eq!(
        s.call("POST", "/v1/introspect", Some(ADMIN), Some(probe.clone()))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        s.call("POST", "/v1/introspect", None, Some(probe)).await.0,
        StatusCode::UNAUTHORIZED
    );
    // Health, readiness and metrics need no credential.
    assert_eq!(
        s.call("GET", "/healthz", None, None).await.0,
        StatusCode::OK
    );
    assert_eq!(s.call("GET", "/readyz", None, None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn usage_is_counted_without_a_write_per_call_and_listed() {
    let s = store().await;
    let t = Token::mint().unwrap();
    s.register("used", &t, &["orders:read"]).await;
    s.register("idle", &Token::mint().unwrap(), &["orders:read"])
        .await;
    for _ in 0..7 {
        assert_eq!(s.introspect(t.expose()).await["active"], true);
    }
    // Nothing written yet: the counts wait in memory.
    let (_, v) = s.call("GET", "/v1/tokens/used", Some(ADMIN), None).await;
    assert_eq!(v["useCount"], 0);
    assert_eq!(s.usage.pending(), 1);
    s.usage.flush(s.repo.as_ref()).await.unwrap();
    let (_, v) = s.call("GET", "/v1/tokens/used", Some(ADMIN), None).await;
    assert_eq!(v["useCount"], 7);
    assert!(v["lastUsedAt"].is_string());

    let (status, v) = s
        .call(
            "GET",
            "/v1/tokens?ownerUid=uid-1&limit=1",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    assert_eq!(v["next"], "idle");
    let (_, v) = s
        .call(
            "GET",
            "/v1/tokens?ownerUid=uid-1&after=idle",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(v["items"][0]["id"], "used");
    assert!(v.get("next").is_none());
}

#[tokio::test]
async fn the_committed_openapi_document_is_current() {
    let s = store().await;
    let (status, served) = s.call("GET", "/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    for path in [
        "/v1/tokens/{id}",
        "/v1/tokens",
        "/v1/tokens/{id}/events",
        "/v1/events",
        "/v1/introspect",
    ] {
        assert!(
            served["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json"))
            .expect("docs/openapi.json is committed");
    let committed: Value = serde_json::from_str(&committed).unwrap();
    assert!(
        committed == served,
        "docs/openapi.json is stale; regenerate it with: cargo run --bin loop-store -- openapi > docs/openapi.json"
    );
}

// ----- The audit trail -----

/// (kind, reason, generation) of each event of a page.
fn kinds(page: &Value) -> Vec<(String, String, Value)> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["reason"].as_str().unwrap().to_owned(),
                e.get("generation").cloned().unwrap_or(Value::Null),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_change_is_in_the_audit_trail_with_its_reason_and_generation() {
    let s = store().await;
    let t = Token::mint().unwrap();
    let mut body = registration(&t, &["orders:read"]);
    body["reason"] = json!("scheduled");
    body["generation"] = json!(1);
    let (status, v) = s
        .call("PUT", "/v1/tokens/life", Some(ADMIN), Some(body.clone()))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    // The same PUT again records nothing.
    s.call("PUT", "/v1/tokens/life", Some(ADMIN), Some(body))
        .await;
    let patch = json!({"scopes": ["orders:write"], "generation": 2});
    let (status, v) = s
        .call("PATCH", "/v1/tokens/life", Some(ADMIN), Some(patch))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let expiry = json!({"expiresAt": "2030-01-01T00:00:00Z", "reason": "rotation"});
    s.call("PATCH", "/v1/tokens/life", Some(ADMIN), Some(expiry))
        .await;
    for _ in 0..2 {
        let (status, v) = s
            .call(
                "DELETE",
                "/v1/tokens/life?reason=deleted&generation=3",
                Some(ADMIN),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
    }
    let (status, by_token) = s
        .call("GET", "/v1/tokens/life/events", Some(ADMIN), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{by_token}");
    let expected = vec![
        ("registered".into(), "scheduled".into(), json!(1)),
        ("updated".into(), "manual".into(), json!(2)),
        ("expiry_set".into(), "rotation".into(), Value::Null),
        ("revoked".into(), "deleted".into(), json!(3)),
    ];
    assert_eq!(kinds(&by_token), expected);
    let items = &by_token["items"];
    assert_eq!(items[1]["before"]["scopes"], json!(["orders:read"]));
    assert_eq!(items[1]["after"]["scopes"], json!(["orders:write"]));
    assert_eq!(items[2]["after"]["expiresAt"], "2030-01-01T00:00:00Z");
    assert_eq!(items[0]["owner"]["uid"], "uid-1");
    assert!(items[0].get("before").is_none() && items[3].get("after").is_none());
    let (_, by_owner) = s
        .call("GET", "/v1/events?ownerUid=uid-1", Some(ADMIN), None)
        .await;
    assert_eq!(by_owner, by_token);
    let text = by_owner.to_string();
    for secret in [
        t.expose(),
        t.hash().as_str(),
        &t.hash().as_str()[7..],
        "sha256:",
    ] {
        assert!(!text.contains(secret), "an event holds {secret}");
    }
}

#[tokio::test]
async fn audit_pages_are_bounded_and_follow_their_cursor() {
    let s = store().await;
    for id in ["p1", "p2", "p3"] {
        s.register(id, &Token::mint().unwrap(), &["orders:read"])
            .await;
    }
    let mut seen = Vec::new();
    let mut uri = "/v1/events?ownerUid=uid-1&limit=2".to_owned();
    loop {
        let (status, page) = s.call("GET", &uri, Some(ADMIN), None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(page["items"].as_array().unwrap().len() <= 2);
        for e in page["items"].as_array().unwrap() {
            seen.push(e["tokenId"].as_str().unwrap().to_owned());
        }
        match page.get("next") {
            Some(next) => uri = format!("/v1/events?ownerUid=uid-1&limit=2&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ["p1", "p2", "p3"], "oldest first, each event once");
    for bad in [
        "/v1/events?ownerUid=uid-1&limit=0",
        "/v1/events?ownerUid=uid-1&limit=1001",
        "/v1/events",
        "/v1/events?ownerUid=uid-1&after=x",
        "/v1/events?ownerUid=uid-1&owner=x",
        "/v1/tokens/p1/events?limit=1001",
    ] {
        let (status, v) = s.call("GET", bad, Some(ADMIN), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert_eq!(v["error"], "bad_request");
    }
    let (_, v) = s.call("GET", "/v1/events", Some(ADMIN), None).await;
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("missing field `ownerUid`"),
        "{v}"
    );
    let (status, v) = s
        .call(
            "GET",
            "/v1/events?ownerUid=uid-1&limit=1000",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(
        (status, v["items"].as_array().unwrap().len()),
        (StatusCode::OK, 3)
    );
    let (status, _) = s
        .call("GET", "/v1/tokens/nobody/events", Some(ADMIN), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A known token past its last event: an empty page, not a 404.
    let (status, v) = s
        .call("GET", "/v1/tokens/p1/events?after=1000", Some(ADMIN), None)
        .await;
    assert_eq!((status, v), (StatusCode::OK, json!({"items": []})));
}

#[tokio::test]
async fn the_audit_trail_is_for_the_management_credential_only() {
    let s = store().await;
    s.register("a", &Token::mint().unwrap(), &["orders:read"])
        .await;
    for uri in ["/v1/events?ownerUid=uid-1", "/v1/tokens/a/events"] {
        assert_eq!(
            s.call("GET", uri, None, None).await.0,
            StatusCode::UNAUTHORIZED
        );
        let (status, v) = s.call("GET", uri, Some(INTROSPECT), None).await;
        assert_eq!(
            (status, v["error"].as_str()),
            (StatusCode::FORBIDDEN, Some("forbidden"))
        );
        assert_eq!(
            s.call("GET", uri, Some(ADMIN), None).await.0,
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn an_unknown_reason_or_a_negative_generation_is_refused_and_changes_nothing() {
    let s = store().await;
    let t = Token::mint().unwrap();
    let mut body = registration(&t, &["orders:read"]);
    body["reason"] = json!("loop_secret_reason");
    let (status, v) = s
        .call("PUT", "/v1/tokens/r", Some(ADMIN), Some(body.clone()))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let message = v["message"].as_str().unwrap();
    assert!(
        message
            .starts_with("invalid request body: reason: unknown value, expected one of `rotation`"),
        "{message}"
    );
    assert!(!message.contains("loop_secret"), "{message}");
    body["reason"] = json!("manual");
    body["generation"] = json!(-1);
    let (status, v) = s.call("PUT", "/v1/tokens/r", Some(ADMIN), Some(body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(
        s.call("GET", "/v1/tokens/r", Some(ADMIN), None).await.0,
        StatusCode::NOT_FOUND
    );

    s.register("r", &t, &["orders:read"]).await;
    let (status, _) = s
        .call(
            "PATCH",
            "/v1/tokens/r",
            Some(ADMIN),
            Some(json!({"name": "x", "reason": "whim"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    for uri in [
        "/v1/tokens/r?reason=whim",
        "/v1/tokens/r?generation=-2",
        "/v1/tokens/r?why=x",
    ] {
        let (status, v) = s.call("DELETE", uri, Some(ADMIN), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {v}");
    }
    let (_, v) = s.call("GET", "/v1/tokens/r", Some(ADMIN), None).await;
    assert_eq!(
        (v["name"].as_str(), v["active"].as_bool()),
        (Some("Klaviyo sync"), Some(true))
    );
    let (_, events) = s
        .call("GET", "/v1/tokens/r/events", Some(ADMIN), None)
        .await;
    assert_eq!(
        kinds(&events),
        vec![("registered".into(), "manual".into(), Value::Null)]
    );
}
