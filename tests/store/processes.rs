//! `loop-store` as real processes: several on one PostgreSQL, a database outage, graceful
//! shutdown, start-up errors, and a scan of every log line for token plaintext.

use crate::support;

use std::time::{Duration, Instant};

use loop_token_operator::token::Token;
use reqwest::Method;
use serde_json::json;
use support::eventually;
use support::store::{ADMIN, Proxy, StoreProcess, sqlite_args, start_failure};

fn pg_addr(url: &str) -> std::net::SocketAddr {
    // postgres://postgres@127.0.0.1:PORT/db
    let host_port = url
        .split('@')
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_default();
    host_port
        .parse()
        .unwrap_or_else(|e| panic!("bad url {url}: {e}"))
}

#[tokio::test]
async fn changes_through_one_process_are_seen_at_once_by_another() {
    let url = support::postgres().await;
    let a = StoreProcess::start(&["--database-url", &url], &[]);
    let b = StoreProcess::start(&["--database-url", &url], &[]);
    let t = Token::mint().unwrap();
    assert_eq!(
        a.register("shared", t.hash().as_str(), &["orders:read"])
            .await
            .0,
        201
    );

    // B answers, then answers again from its cache. (The registration's notification may reach
    // B after its first answer and empty that entry once: keep asking until two hits.)
    eventually(10, "B to answer from its cache", || async {
        let (s, v) = b.introspect(t.expose()).await;
        assert_eq!((s, v["active"].as_bool()), (200, Some(true)), "{v}");
        let m = b.metrics().await;
        let hits = m
            .lines()
            .find_map(|l| l.strip_prefix("loop_store_introspection_cache_total{result=\"Hit\"} "))
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(0.0);
        (hits >= 2.0).then_some(())
    })
    .await;

    // A scope edit through A reaches B's cache.
    let (s, _) = a
        .call(
            Method::PATCH,
            "/v1/tokens/shared",
            Some(ADMIN),
            Some(json!({"scopes": ["orders:write"]})),
        )
        .await;
    assert_eq!(s, 200);
    eventually(10, "B to see the new scopes", || async {
        (b.introspect(t.expose()).await.1["scope"] == "orders:write").then_some(())
    })
    .await;

    // Revocation through A: B stops answering active as soon as the notification lands.
    let (s, _) = a
        .call(Method::DELETE, "/v1/tokens/shared", Some(ADMIN), None)
        .await;
    assert_eq!(s, 200);
    let revoked_at = Instant::now();
    eventually(10, "B to see the revocation", || async {
        (b.introspect(t.expose()).await.1 == json!({"active": false})).then_some(())
    })
    .await;
    eprintln!(
        "revocation visible through the other process after {:?}",
        revoked_at.elapsed()
    );
    for _ in 0..3 {
        assert_eq!(
            b.introspect(t.expose()).await.1,
            json!({"active": false}),
            "a revoked token stays inactive"
        );
    }

    // A token B had looked up while unknown becomes active once A registers it.
    let late = Token::mint().unwrap();
    assert_eq!(
        b.introspect(late.expose()).await.1,
        json!({"active": false})
    );
    assert_eq!(
        a.register("late", late.hash().as_str(), &["orders:read"])
            .await
            .0,
        201
    );
    eventually(10, "B to see the new registration", || async {
        (b.introspect(late.expose()).await.1["active"] == true).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_fails_closed_and_recovers_without_half_writes() {
    let url = support::postgres().await;
    let proxy = Proxy::start(pg_addr(&url)).await;
    let proxied = url.replace(&pg_addr(&url).to_string(), &proxy.addr.to_string());
    let s = StoreProcess::start(
        &["--database-url", &proxied, "--db-acquire-timeout", "1s"],
        &[],
    );
    let t = Token::mint().unwrap();
    assert_eq!(
        s.register("before", t.hash().as_str(), &["orders:read"])
            .await
            .0,
        201
    );
    assert_eq!(s.introspect(t.expose()).await.1["active"], true);

    proxy.cut();
    assert_eq!(s.call(Method::GET, "/readyz", None, None).await.0, 503);
    let (status, v) = s
        .register(
            "during",
            Token::mint().unwrap().hash().as_str(),
            &["orders:read"],
        )
        .await;
    assert_eq!(
        (status, v["error"].as_str()),
        (503, Some("store_unavailable")),
        "{v}"
    );
    assert!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains("nothing was changed")
    );
    // Revocations by other processes cannot be heard now: the cache stops answering, and
    // introspection fails closed instead of vouching for a token it cannot check.
    eventually(10, "the cache to be marked untrusted", || async {
        (!cache_trusted(&s).await).then_some(())
    })
    .await;
    let (status, v) = s.introspect(t.expose()).await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["error"], "store_unavailable");

    proxy.restore();
    eventually(30, "readiness after the outage", || async {
        (s.call(Method::GET, "/readyz", None, None).await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(s.introspect(t.expose()).await.1["active"], true);
    let (status, _) = s
        .call(Method::GET, "/v1/tokens/during", Some(ADMIN), None)
        .await;
    assert_eq!(
        status, 404,
        "the registration refused during the outage left nothing behind"
    );
    assert_eq!(
        s.register(
            "after",
            Token::mint().unwrap().hash().as_str(),
            &["orders:read"]
        )
        .await
        .0,
        201
    );
    eventually(30, "the change listener to reconnect", || async {
        cache_trusted(&s).await.then_some(())
    })
    .await;
}

/// The trust bound of the replica behind the held link in the next test.
const TRUST_BOUND: Duration = Duration::from_secs(2);

/// The gauge `loop_store_introspection_cache_trusted`, read from its sample line (its HELP text
/// also contains "trusted 1").
async fn cache_trusted(s: &StoreProcess) -> bool {
    let m = s.metrics().await;
    match m
        .lines()
        .find_map(|l| l.strip_prefix("loop_store_introspection_cache_trusted "))
    {
        Some("1") => true,
        Some("0") => false,
        other => panic!("no cache_trusted sample ({other:?}) in {m}"),
    }
}

/// How many hits B's cache has answered so far.
async fn cache_hits(s: &StoreProcess) -> f64 {
    s.metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix("loop_store_introspection_cache_total{result=\"Hit\"} "))
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// Register through A and wait until B answers the token from its cache.
async fn cached_by_b(a: &StoreProcess, b: &StoreProcess, id: &str) -> Token {
    let t = Token::mint().unwrap();
    assert_eq!(
        a.register(id, t.hash().as_str(), &["orders:read"]).await.0,
        201
    );
    let before = cache_hits(b).await;
    eventually(30, "B to answer the token from its cache", || async {
        let (s, v) = b.introspect(t.expose()).await;
        assert!(s == 200 || s == 503, "{s} {v}");
        (s == 200 && v["active"] == true && cache_hits(b).await >= before + 2.0).then_some(())
    })
    .await;
    t
}

/// The live defect of issue 25: replica B's link to PostgreSQL silently stops delivering (every
/// connection open at that moment held: no reset, no close), then a token B has cached is
/// revoked through replica A. B must stop vouching for it within the trust bound: from then on
/// every answer is `active: false` (read from the database over a new connection) or 503, never
/// `active: true`. Then B comes back by itself: its listener, whose link never reported an error,
/// is replaced once no heartbeat returns, and B's cache answers again and hears revocations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_a_silent_link_never_answers_a_revoked_token_active_beyond_the_bound() {
    let url = support::postgres().await;
    let proxy = Proxy::start(pg_addr(&url)).await;
    let proxied = url.replace(&pg_addr(&url).to_string(), &proxy.addr.to_string());
    let a = StoreProcess::start(&["--database-url", &url], &[]);
    let bound = format!("{}ms", TRUST_BOUND.as_millis());
    let b = StoreProcess::start(
        &[
            "--database-url",
            &proxied,
            "--cache-trust-bound",
            &bound,
            "--db-read-timeout",
            "1s",
            "--db-acquire-timeout",
            "1s",
        ],
        &[],
    );
    let t = cached_by_b(&a, &b, "held").await;

    proxy.hold();
    let (s, _) = a
        .call(Method::DELETE, "/v1/tokens/held", Some(ADMIN), None)
        .await;
    assert_eq!(s, 200, "A revokes");
    // The revocation committed before A answered.
    let revoked = Instant::now();
    assert_eq!(a.introspect(t.expose()).await.1, json!({"active": false}));

    // Ask B for four bounds after the revocation. B looks a token up after the request left
    // the test, so an active answer to a request sent at or after `revoked + bound` breaks the
    // promise, whatever the answer's way back took.
    let mut answers = std::collections::BTreeMap::<&str, u32>::new();
    let mut last_active = None;
    let mut sent_after_bound = 0;
    while revoked.elapsed() < TRUST_BOUND * 4 {
        let sent = revoked.elapsed();
        let (s, v) = b.introspect(t.expose()).await;
        let active = s == 200 && v["active"] == true;
        assert!(
            !active || sent < TRUST_BOUND,
            "B answered the revoked token active to a request sent {sent:?} after the revocation (bound {TRUST_BOUND:?}): {v}"
        );
        assert!(s == 200 || s == 503, "{s} {v}");
        if active {
            last_active = Some(sent);
        }
        if sent >= TRUST_BOUND {
            sent_after_bound += 1;
        }
        let kind = match (s, active) {
            (200, true) => "active",
            (200, false) => "inactive",
            _ => "503",
        };
        *answers.entry(kind).or_default() += 1;
    }
    eprintln!(
        "answers of B behind the held link: {answers:?}; last active answer to a request sent {last_active:?} after the revocation"
    );
    assert!(sent_after_bound > 0, "B was asked after the bound");

    // B recovers without help: the revocation is read, the cache is trusted again...
    eventually(
        60,
        "B to answer from the database over a new connection",
        || async {
            (b.introspect(t.expose()).await == (200, json!({"active": false}))).then_some(())
        },
    )
    .await;
    eventually(60, "B's cache to be trusted again", || async {
        cache_trusted(&b).await.then_some(())
    })
    .await;
    let m = b.metrics().await;
    assert!(
        m.contains("loop_store_change_listener_restarts_total{reason=\"Silent\"}"),
        "the silent listener was replaced: {m}\n{}",
        b.log_text()
    );
    // The entry cached before the hold is gone: the revoked token is answered inactive from
    // the trusted cache (hits rise), never active.
    let hits = cache_hits(&b).await;
    eventually(
        30,
        "B to answer the revoked token from its cache",
        || async {
            assert_eq!(
                b.introspect(t.expose()).await,
                (200, json!({"active": false}))
            );
            (cache_hits(&b).await >= hits + 2.0).then_some(())
        },
    )
    .await;
    // ...and it hears revocations again.
    let again = cached_by_b(&a, &b, "after-hold").await;
    let (s, _) = a
        .call(Method::DELETE, "/v1/tokens/after-hold", Some(ADMIN), None)
        .await;
    assert_eq!(s, 200);
    eventually(10, "B to hear the next revocation", || async {
        (b.introspect(again.expose()).await == (200, json!({"active": false}))).then_some(())
    })
    .await;
}

/// Issue 25's reconnect window: B's listener connection is ended by PostgreSQL
/// (`pg_terminate_backend`, as a restart or an administrator does) while new connections to
/// the database hang, and a token B has cached is revoked through A at that moment. B must stop
/// answering from its cache as soon as it sees the loss, not when a reconnection it cannot
/// finish gives up, nor when the trust bound runs out: the bound here is 30 s, and B must answer
/// the revoked token inactive (from the database, over a connection it already has) well
/// before that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_listener_stops_the_cache_at_once_even_when_reconnecting_hangs() {
    /// Far more than the few milliseconds it takes B to see its connection end.
    const SEEN_WITHIN: Duration = Duration::from_secs(5);
    let url = support::postgres().await;
    let proxy = Proxy::start(pg_addr(&url)).await;
    let proxied = url.replace(&pg_addr(&url).to_string(), &proxy.addr.to_string());
    let a = StoreProcess::start(&["--database-url", &url], &[]);
    let b = StoreProcess::start(
        &[
            "--database-url",
            &proxied,
            "--cache-trust-bound",
            "30s",
            // A read that tries a new connection (which hangs here) gives up fast, so that
            // the next one takes a connection B already has.
            "--db-acquire-timeout",
            "1s",
            "--db-read-timeout",
            "1s",
        ],
        &[],
    );
    let t = cached_by_b(&a, &b, "lost").await;

    proxy.hold_new(true);
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let ports: Vec<i32> = proxy.client_ports().into_iter().map(i32::from).collect();
    let ended: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE client_port = ANY($1) AND query LIKE 'LISTEN%'",
    )
    .bind(&ports)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(
        ended,
        vec![(true,)],
        "B's one listener connection was ended"
    );
    let (s, _) = a
        .call(Method::DELETE, "/v1/tokens/lost", Some(ADMIN), None)
        .await;
    assert_eq!(s, 200);
    let revoked = Instant::now();

    let mut inactive_after = 0;
    while revoked.elapsed() < SEEN_WITHIN * 3 {
        let sent = revoked.elapsed();
        let (s, v) = b.introspect(t.expose()).await;
        let active = s == 200 && v["active"] == true;
        assert!(
            !active || sent < SEEN_WITHIN,
            "B answered the revoked token active to a request sent {sent:?} after the revocation, its listener gone: {v}"
        );
        if sent >= SEEN_WITHIN && (s, &v) == (200, &json!({"active": false})) {
            inactive_after += 1;
        }
    }
    assert!(
        inactive_after > 0,
        "B answered from the database after the loss\n{}",
        b.log_text()
    );
    let m = b.metrics().await;
    assert!(
        m.contains("loop_store_change_listener_restarts_total{reason=\"Lost\"} 1"),
        "{m}"
    );
    assert!(!cache_trusted(&b).await, "no listener, no trust");
}

/// Issue 25: every audited write of every replica takes one advisory lock, so a replica frozen
/// inside a write (its link held, its process stopped) would stop every revocation everywhere
/// until PostgreSQL noticed the dead peer, about 2 hours by default. The store's sessions end a
/// transaction left idle for 5 s: a revocation through another replica then waits seconds, not
/// hours, and the frozen session is the one PostgreSQL ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_frozen_inside_a_write_holds_other_writes_back_for_seconds() {
    use loop_token_operator::store::repo::{AUDIT_LOCK, PoolSettings, pg_pool_options};
    let url = support::postgres().await;
    let a = StoreProcess::start(&["--database-url", &url], &[]);
    let t = Token::mint().unwrap();
    assert_eq!(
        a.register("frozen", t.hash().as_str(), &["orders:read"])
            .await
            .0,
        201
    );
    // A replica frozen in the middle of an audited write: a session made as the store makes
    // them, inside a transaction that holds the audit lock, which then never says a word.
    let frozen = pg_pool_options(&PoolSettings::default())
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let mut tx = frozen.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(AUDIT_LOCK)
        .execute(&mut *tx)
        .await
        .unwrap();

    let started = Instant::now();
    let (s, v) = support::within(60, "the revocation behind the frozen session", async {
        a.call(Method::DELETE, "/v1/tokens/frozen", Some(ADMIN), None)
            .await
    })
    .await;
    let waited = started.elapsed();
    assert_eq!(s, 200, "{v}");
    eprintln!("a revocation behind a frozen session answered after {waited:?}");
    assert_eq!(a.introspect(t.expose()).await.1, json!({"active": false}));
    // PostgreSQL ended the frozen session (its transaction, and the lock with it).
    let err = sqlx::query("SELECT 1")
        .execute(&mut *tx)
        .await
        .expect_err("the frozen session was ended");
    let text = format!("{err}");
    assert!(
        text.contains("idle-in-transaction") || text.contains("connection"),
        "{text}"
    );
}

/// Issue 25: each replica decides expiry by a clock; a replica whose clock is 60 s behind would
/// answer an expired token active for 60 s. The store follows the database's clock, read with
/// every heartbeat: B, on a clock 60 s behind (libfaketime), answers the expired token inactive
/// as soon as A does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_clock_is_behind_expires_tokens_on_the_database_clock() {
    use jiff::{SignedDuration, Timestamp};
    let url = support::postgres().await;
    let behind = support::clock::FakeClock::new();
    behind.advance(SignedDuration::from_secs(-60));
    let envs = behind.envs();
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let a = StoreProcess::start(&["--database-url", &url], &[]);
    let b = StoreProcess::start(&["--database-url", &url], &envs);
    eventually(30, "B to measure the database's clock", || async {
        let m = b.metrics().await;
        let offset = m
            .lines()
            .find_map(|l| l.strip_prefix("loop_store_database_clock_offset_seconds "))
            .and_then(|v| v.parse::<f64>().ok())?;
        ((59.0..61.0).contains(&offset)).then_some(())
    })
    .await;

    let t = Token::mint().unwrap();
    let expires = Timestamp::now() + SignedDuration::from_secs(3);
    let body = json!({
        "hash": t.hash().as_str(), "name": "expiring", "scopes": ["orders:read"],
        "owner": {"cluster": "test", "namespace": "ns", "name": "e", "uid": "uid-e"},
        "expiresAt": expires.to_string(),
    });
    let (s, v) = a
        .call(Method::PUT, "/v1/tokens/expiring", Some(ADMIN), Some(body))
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(b.introspect(t.expose()).await.1["active"], true);
    eventually(30, "A to answer the token expired", || async {
        (a.introspect(t.expose()).await.1 == json!({"active": false})).then_some(())
    })
    .await;
    assert_eq!(
        b.introspect(t.expose()).await,
        (200, json!({"active": false})),
        "B, 60 s behind, answers the expired token as the database's clock says"
    );
}

#[tokio::test]
async fn shutdown_flushes_usage_and_sqlite_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let args = sqlite_args(dir.path());
    let mut argv: Vec<&str> = args.iter().map(String::as_str).collect();
    argv.extend(["--usage-flush-interval", "1h"]);
    let s = StoreProcess::start(&argv, &[]);
    let t = Token::mint().unwrap();
    assert_eq!(
        s.register("u", t.hash().as_str(), &["orders:read"]).await.0,
        201
    );
    for _ in 0..3 {
        assert_eq!(s.introspect(t.expose()).await.1["active"], true);
    }
    let status = s.terminate();
    assert!(status.success(), "loop-store exited with {status}");

    let again = StoreProcess::start(&argv, &[]);
    let (_, v) = again
        .call(Method::GET, "/v1/tokens/u", Some(ADMIN), None)
        .await;
    assert_eq!(v["useCount"], 3, "{v}");
    assert!(v["lastUsedAt"].is_string());
}

/// Issue 25: two stores on one SQLite file would each trust their own cache, and neither would
/// hear the other's revocations. The second is refused at start, with what to do; once the
/// first has stopped, the file can be served again.
#[test]
fn a_second_store_on_one_sqlite_file_is_refused() {
    use support::store::INTROSPECT;
    let dir = tempfile::tempdir().unwrap();
    let args = sqlite_args(dir.path());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = StoreProcess::start(&argv, &[]);
    let creds = [
        ("LOOP_STORE_ADMIN_TOKEN", ADMIN),
        ("LOOP_STORE_INTROSPECT_TOKEN", INTROSPECT),
    ];
    let err = start_failure(&argv, &creds);
    assert!(
        err.contains("another loop-store process is serving the SQLite database")
            && err.contains("use PostgreSQL"),
        "{err}"
    );
    let status = first.terminate();
    assert!(status.success(), "loop-store exited with {status}");
    let again = StoreProcess::start(&argv, &[]);
    drop(again);
}

#[test]
fn start_up_errors_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap_or_default();
    let err = start_failure(&["--data-dir", d], &[]);
    assert!(
        err.contains("no admin credential") && err.contains("--admin-token-file"),
        "{err}"
    );
    let err = start_failure(
        &["--data-dir", d],
        &[
            ("LOOP_STORE_ADMIN_TOKEN", "short"),
            ("LOOP_STORE_INTROSPECT_TOKEN", "introspect-credential-000"),
        ],
    );
    assert!(err.contains("shorter than 16"), "{err}");
    let same = "the-same-credential-for-both";
    let err = start_failure(
        &["--data-dir", d],
        &[
            ("LOOP_STORE_ADMIN_TOKEN", same),
            ("LOOP_STORE_INTROSPECT_TOKEN", same),
        ],
    );
    assert!(err.contains("must differ"), "{err}");
    let err = start_failure(
        &["--data-dir", d, "--database-url", "mysql://x"],
        &[
            ("LOOP_STORE_ADMIN_TOKEN", "admin-credential-000000"),
            ("LOOP_STORE_INTROSPECT_TOKEN", "introspect-credential-000"),
        ],
    );
    assert!(err.contains("unsupported database URL scheme"), "{err}");
    let missing = dir.path().join("nope.json");
    let err = start_failure(
        &[
            "--data-dir",
            d,
            "--scopes-file",
            missing.to_str().unwrap_or_default(),
        ],
        &[
            ("LOOP_STORE_ADMIN_TOKEN", "admin-credential-000000"),
            ("LOOP_STORE_INTROSPECT_TOKEN", "introspect-credential-000"),
        ],
    );
    assert!(err.contains("cannot read scopes file"), "{err}");
}

/// Promise 1 for the store: a full life of many tokens at debug level, and no log line holds
/// any of them.
#[tokio::test]
async fn logs_never_contain_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let args = sqlite_args(dir.path());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = StoreProcess::start(&argv, &[("RUST_LOG", "trace")]);
    let mut used = Vec::new();
    for i in 0..5 {
        let t = Token::mint().unwrap();
        let id = format!("scan-{i}");
        assert_eq!(
            s.register(&id, t.hash().as_str(), &["orders:read"]).await.0,
            201
        );
        assert_eq!(s.introspect(t.expose()).await.1["active"], true);
        s.call(
            Method::PATCH,
            &format!("/v1/tokens/{id}"),
            Some(ADMIN),
            Some(json!({"scopes": ["orders:write"]})),
        )
        .await;
        s.call(
            Method::DELETE,
            &format!("/v1/tokens/{id}"),
            Some(ADMIN),
            None,
        )
        .await;
        assert_eq!(s.introspect(t.expose()).await.1["active"], false);
        // Misuse: tokens where they do not belong, and tampered tokens.
        s.call(
            Method::POST,
            "/v1/introspect",
            Some(ADMIN),
            Some(json!({"token": t.expose()})),
        )
        .await;
        s.call(
            Method::POST,
            "/v1/introspect",
            Some(t.expose()),
            Some(json!({"token": t.expose()})),
        )
        .await;
        s.call(
            Method::POST,
            "/v1/introspect",
            Some(support::store::INTROSPECT),
            Some(json!({"token": [t.expose()]})),
        )
        .await;
        let mut tampered = t.expose().to_owned();
        tampered.push('x');
        s.introspect(&tampered).await;
        used.push(t.expose().to_owned());
    }
    let logs = s.log_text();
    s.terminate();
    assert!(
        logs.lines().count() > 20,
        "expected a verbose log, got:\n{logs}"
    );
    for t in &used {
        // The whole token, and any 16-character window of its random part.
        assert!(!logs.contains(t.as_str()), "a token appears in the logs");
        for w in t.as_bytes()[5..41].windows(16) {
            assert!(
                !logs.contains(std::str::from_utf8(w).unwrap_or_default()),
                "part of a token appears in the logs"
            );
        }
    }
}

/// Hardening (1): a request whose client goes away mid-write must not leave the cache behind
/// the database. Each DELETE or scope-narrowing PATCH is sent on a raw connection that is reset
/// (RST, linger 0) 0-3 ms later, the way an operator's timeout or a dying pod cuts a call. Then
/// whatever the database holds must be what introspection answers: no revoked token active, no
/// narrowed token with its old scopes.
async fn cut_writes_leave_no_stale_answer(args: &[&str]) {
    use tokio::io::AsyncWriteExt;
    const N: usize = 240;
    let s = StoreProcess::start(args, &[]);
    let addr = s.url.trim_start_matches("http://").to_owned();
    let mut tokens = Vec::new();
    for i in 0..N {
        let t = Token::mint().unwrap();
        let id = format!("cut-{i}");
        let (st, v) = s
            .register(&id, t.hash().as_str(), &["orders:read", "customers:read"])
            .await;
        assert_eq!(st, 201, "{v}");
        // Prime the cache: the stale answer, if any, would come from here.
        assert_eq!(s.introspect(t.expose()).await.1["active"], true);
        tokens.push((id, t));
    }
    for (i, (id, _)) in tokens.iter().enumerate() {
        let request = if i % 2 == 0 {
            format!(
                "DELETE /v1/tokens/{id} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN}\r\nContent-Length: 0\r\n\r\n"
            )
        } else {
            let body = r#"{"scopes":["orders:read"]}"#;
            format!(
                "PATCH /v1/tokens/{id} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
        conn.write_all(request.as_bytes()).await.unwrap();
        // Fault injection, not synchronisation: the reset lands somewhere in the write.
        tokio::time::sleep(std::time::Duration::from_micros((i % 4) as u64 * 1000)).await;
        conn.set_zero_linger().unwrap();
        drop(conn);
    }
    // The database is the truth; a write still in flight gets a few seconds to finish.
    let (mut revoked, mut narrowed) = (0, 0);
    for (id, t) in &tokens {
        let db = eventually(15, "introspection to match the database", || async {
            let (st, db) = s
                .call(Method::GET, &format!("/v1/tokens/{id}"), Some(ADMIN), None)
                .await;
            assert_eq!(st, 200, "{db}");
            let answer = s.introspect(t.expose()).await.1;
            let matches = if db["revokedAt"].is_string() {
                answer == json!({"active": false})
            } else {
                answer["active"] == true && answer["scope"] == scope_string(&db)
            };
            matches.then_some(db)
        })
        .await;
        if db["revokedAt"].is_string() {
            revoked += 1;
        } else if scope_string(&db) == "orders:read" {
            narrowed += 1;
        }
    }
    eprintln!(
        "{} of {} cut DELETEs and {} of {} cut PATCHes committed; every answer matches the database",
        revoked,
        N / 2,
        narrowed,
        N / 2
    );
    assert!(
        revoked + narrowed > 0,
        "no cut write committed: the test did not reach the window it is about"
    );
}

/// The scopes of a token view as introspection writes them: space-separated.
fn scope_string(view: &serde_json::Value) -> String {
    view["scopes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_writes_leave_no_stale_answer_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let args = sqlite_args(dir.path());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    cut_writes_leave_no_stale_answer(&argv).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_writes_leave_no_stale_answer_on_postgres() {
    let url = support::postgres().await;
    cut_writes_leave_no_stale_answer(&["--database-url", &url]).await;
}
