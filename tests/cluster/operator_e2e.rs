//! End to end: the real API server, a real `loop-store` process and a real
//! `loop-token-operator` process (limited to the test's namespace), driven with kubectl as a
//! user would, and checked through the store's `POST /v1/introspect`. Each test names the
//! promises of DESIGN.md §6 it proves.

use crate::support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use loop_token_operator::operator::resource::crd::ApiToken;
use reqwest::Method;
use serde_json::{Value, json};
use support::operator::OperatorProcess;
use support::store::{ADMIN, StoreProcess, sqlite_args};
use support::tls::{make_ca, make_leaf, path_str};
use support::{ControlPlane, eventually, with_namespace};

pub(crate) struct Env {
    pub(crate) cp: ControlPlane,
    pub(crate) ns: String,
    pub(crate) store: StoreProcess,
    pub(crate) operator: OperatorProcess,
    pub(crate) data: tempfile::TempDir,
}

async fn env(cp: ControlPlane, ns: String) -> Env {
    support::install_crd(&cp).await;
    let data = tempfile::tempdir().unwrap();
    let store = start_store(data.path());
    let operator = OperatorProcess::builder(&cp, &store, &ns).start();
    Env {
        cp,
        ns,
        store,
        operator,
        data,
    }
}

/// As [`env`], with the store serving TLS (a certificate signed by a CA made for the test) and
/// the operator given `trusted` as its `--store-ca-file` (the signing CA, unless a test wants
/// another).
async fn env_tls(cp: ControlPlane, ns: String, trust_the_signing_ca: bool) -> Env {
    support::install_crd(&cp).await;
    let data = tempfile::tempdir().unwrap();
    let certs = data.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let ca = make_ca(&certs, "store-ca");
    let leaf = make_leaf(&certs, &ca, "store");
    let other = make_ca(&certs, "other-ca");
    let db = data.path().join("db");
    let store = StoreProcess::start_tls(
        &[
            "--data-dir",
            path_str(&db),
            "--usage-flush-interval",
            "100ms",
        ],
        &leaf,
        &ca.cert,
    );
    let trusted = if trust_the_signing_ca { &ca } else { &other };
    let operator = OperatorProcess::builder(&cp, &store, &ns)
        .args(&["--store-ca-file", path_str(&trusted.cert)])
        .start();
    Env {
        cp,
        ns,
        store,
        operator,
        data,
    }
}

fn start_store(dir: &std::path::Path) -> StoreProcess {
    start_store_with(dir, None, &[])
}

/// A store on SQLite in `dir`, on `listen` (an address it had before) or a free port, with these
/// environment variables (e.g. a fake clock's).
pub(crate) fn start_store_with(
    dir: &std::path::Path,
    listen: Option<&str>,
    envs: &[(String, String)],
) -> StoreProcess {
    let args = sqlite_args(dir);
    let mut argv: Vec<&str> = args.iter().map(String::as_str).collect();
    argv.extend(["--usage-flush-interval", "100ms"]);
    if let Some(addr) = listen {
        argv.extend(["--listen", addr]);
    }
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    StoreProcess::start(&argv, &envs)
}

impl Env {
    pub(crate) fn apply(&self, yaml: &str) {
        self.cp.apply_ok_in(&self.ns, yaml);
    }

    pub(crate) fn kubectl(&self, args: &[&str]) -> String {
        self.cp.kubectl_in(&self.ns, args)
    }

    pub(crate) fn wait_ready(&self, name: &str) {
        self.kubectl(&[
            "wait",
            "--for=condition=Ready",
            &format!("apitoken/{name}"),
            "--timeout=90s",
        ]);
    }

    pub(crate) fn tokens(&self) -> Api<ApiToken> {
        Api::namespaced(self.cp.client.clone(), &self.ns)
    }

    pub(crate) async fn get(&self, name: &str) -> ApiToken {
        self.tokens()
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("get apitoken/{name}: {e}"))
    }

    /// Wait until the ApiToken satisfies `pred`.
    pub(crate) async fn wait_until(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&ApiToken) -> bool + Send + 'static,
    ) -> ApiToken {
        self.cp.wait_for_apitoken(&self.ns, name, what, pred).await
    }

    /// Wait until the ApiToken is Stalled with `why`; returns it and the condition's message.
    pub(crate) async fn wait_stalled(&self, name: &str, why: &'static str) -> (ApiToken, String) {
        let t = self
            .wait_until(name, why, move |t| {
                reason(t, "Stalled").as_deref() == Some(why)
            })
            .await;
        let msg = t
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Stalled"))
            .map(|c| c.message.clone())
            .unwrap_or_default();
        (t, msg)
    }

    /// Wait until the rotation asked for with `value` is handled and the token Ready.
    pub(crate) async fn wait_rotated(&self, name: &str, value: &str) -> ApiToken {
        let value = value.to_owned();
        self.wait_until(name, "the rotation to be handled", move |t| {
            ready(t)
                && t.status
                    .as_ref()
                    .and_then(|s| s.last_rotation_request.as_deref())
                    == Some(value.as_str())
        })
        .await
    }

    pub(crate) async fn secret_token(&self, secret: &str) -> String {
        let api: Api<Secret> = Api::namespaced(self.cp.client.clone(), &self.ns);
        let s = api
            .get(secret)
            .await
            .unwrap_or_else(|e| panic!("get secret/{secret}: {e}"));
        let data = s.data.unwrap_or_default();
        let bytes = data
            .get("token")
            .unwrap_or_else(|| panic!("secret/{secret} has no key 'token'"));
        String::from_utf8(bytes.0.clone()).unwrap()
    }

    pub(crate) async fn introspect(&self, token: &str) -> Value {
        let (status, v) = self.store.introspect(token).await;
        assert_eq!(status, 200, "{v}");
        v
    }

    /// Ids of the store's active registrations of this ApiToken.
    pub(crate) async fn active_ids(&self, t: &ApiToken) -> Vec<String> {
        let uid = t.metadata.uid.clone().unwrap_or_default();
        let (_, v) = self
            .store
            .call(
                Method::GET,
                &format!("/v1/tokens?ownerUid={uid}&active=true"),
                Some(ADMIN),
                None,
            )
            .await;
        let mut ids: Vec<String> = v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["id"].as_str().map(str::to_owned))
            .collect();
        ids.sort();
        ids
    }

    pub(crate) fn events(&self) -> String {
        self.kubectl(&["get", "events", "-o", "json"])
    }
}

pub(crate) fn token_yaml(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: loop.dev/v1alpha1\nkind: ApiToken\nmetadata:\n  name: {name}\n{extra}spec:\n  displayName: Klaviyo sync\n  scopes: [subscriptions:read, customers:read]\n"
    )
}

pub(crate) fn ready(t: &ApiToken) -> bool {
    t.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

pub(crate) fn reason(t: &ApiToken, type_: &str) -> Option<String> {
    t.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| c.reason.clone())
}

/// Promises 1, 2, 4, 5, 6: issue, edit in place, rotate with and without grace, delete; and no
/// token in logs, status or events. Over TLS, as the chart runs it: the store serves HTTPS and
/// the operator trusts its CA (`--store-ca-file`); the test's own calls are HTTPS too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_life_of_a_token() {
    with_namespace("e2e-life", |cp, ns| async move {
        let e = env_tls(cp, ns, true).await;
        assert!(e.store.url.starts_with("https://"), "{}", e.store.url);
        e.apply(&token_yaml("klaviyo-sync", ""));
        e.wait_ready("klaviyo-sync");
        let t = e.get("klaviyo-sync").await;
        let first = e.secret_token("klaviyo-sync").await;
        let st = t.status.clone().unwrap_or_default();
        assert_eq!(st.secret_name.as_deref(), Some("klaviyo-sync"));
        let answer = e.introspect(&first).await;
        // Promise 2: what is in the Secret works, with exactly the spec's scopes.
        assert_eq!(answer["active"], true);
        assert_eq!(answer["scope"], "customers:read subscriptions:read");
        assert_eq!(answer["name"], "Klaviyo sync");
        assert_eq!(answer["tokenId"].as_str(), st.token_id.as_deref());
        assert_eq!(st.fingerprint.as_deref(), Some(loop_token_operator::token::TokenHash::of(&first).fingerprint().as_str()));

        // Promise 4: edits do not rotate.
        e.kubectl(&["patch", "apitoken", "klaviyo-sync", "--type=merge", "-p", r#"{"spec":{"scopes":["orders:write"],"displayName":"Klaviyo v2"}}"#]);
        eventually(60, "the new scopes in the store", || async {
            (e.introspect(&first).await["scope"] == "orders:write").then_some(())
        })
        .await;
        assert_eq!(e.introspect(&first).await["name"], "Klaviyo v2");
        assert_eq!(e.secret_token("klaviyo-sync").await, first, "an edit must not change the token");

        // Promise 5: a rotation through the annotation; the old token keeps working (1h grace).
        e.kubectl(&["annotate", "apitoken", "klaviyo-sync", "loop.dev/rotate=2026-11-29T12:00:00Z"]);
        let t = e.wait_rotated("klaviyo-sync", "2026-11-29T12:00:00Z").await;
        let second = e.secret_token("klaviyo-sync").await;
        assert_ne!(second, first);
        assert_eq!(e.introspect(&second).await["scope"], "orders:write");
        assert_eq!(e.introspect(&first).await["active"], true, "the previous token is in its grace period");
        let prev = &t.status.as_ref().unwrap().previous_tokens;
        assert_eq!(prev.len(), 1, "{prev:?}");
        let second_id = t.status.as_ref().and_then(|s| s.token_id.clone()).unwrap_or_default();
        assert_eq!(e.active_ids(&t).await.len(), 2);

        // The same annotation value again (a re-apply) does not rotate again.
        e.kubectl(&["annotate", "--overwrite", "apitoken", "klaviyo-sync", "loop.dev/rotate=2026-11-29T12:00:00Z"]);
        e.kubectl(&["label", "--overwrite", "apitoken", "klaviyo-sync", "touched=yes"]);
        tokio::time::sleep(Duration::from_secs(2)).await; // nothing to wait for: proving an absence
        assert_eq!(e.secret_token("klaviyo-sync").await, second, "one rotation per annotation value");

        // Promise 5: gracePeriod 0 revokes the previous token at once ("token leaked").
        e.kubectl(&["patch", "apitoken", "klaviyo-sync", "--type=merge", "-p", r#"{"spec":{"rotation":{"gracePeriod":"0s"}}}"#]);
        e.kubectl(&["annotate", "--overwrite", "apitoken", "klaviyo-sync", "loop.dev/rotate=leaked"]);
        let t3 = e.wait_rotated("klaviyo-sync", "leaked").await;
        let third_id = t3.status.as_ref().and_then(|s| s.token_id.clone()).unwrap_or_default();
        let third = e.secret_token("klaviyo-sync").await;
        assert_eq!(e.introspect(&third).await["active"], true);
        assert_eq!(e.introspect(&second).await, json!({"active": false}), "revoked at once");
        assert_eq!(e.introspect(&first).await["active"], true, "the first token's own grace period still runs");

        // Usage reaches the status (read from the store, written only when it changes): one
        // introspection above and three here.
        for _ in 0..3 {
            assert_eq!(e.introspect(&third).await["active"], true);
        }
        let mut n = 0;
        let env_ref = &e;
        eventually(60, "usage in the status", || {
            n += 1;
            let nudge = format!("nudge={n}");
            let e = env_ref;
            async move {
                e.kubectl(&["annotate", "--overwrite", "apitoken", "klaviyo-sync", &nudge]);
                let t = e.get("klaviyo-sync").await;
                let s = t.status.unwrap_or_default();
                (s.use_count == Some(4) && s.last_used_at.is_some()).then_some(())
            }
        })
        .await;

        // Metrics with bounded labels.
        let metrics = e.operator.metrics().await;
        for needle in [
            "loop_operator_token_actions_total{action=\"issue\"} 1",
            "loop_operator_token_actions_total{action=\"rotate\"} 2",
            "loop_operator_token_actions_total{action=\"update\"} 1",
            "loop_operator_api_tokens{state=\"ready\"} 1",
            "loop_operator_reconciles_total{result=\"ok\"}",
            "loop_operator_store_request_duration_seconds_count{operation=\"register\",outcome=\"ok\"} 3",
        ] {
            assert!(metrics.contains(needle), "missing {needle:?} in:\n{metrics}");
        }
        assert!(!metrics.contains(&e.ns) && !metrics.contains("klaviyo"), "names must not be metric labels");

        // Promise 6: deletion revokes every token before the finalizer is released.
        e.kubectl(&["delete", "apitoken", "klaviyo-sync", "--wait=true", "--timeout=90s"]);
        for tok in [&first, &second, &third] {
            assert_eq!(e.introspect(tok).await, json!({"active": false}));
        }
        let secrets: Api<Secret> = Api::namespaced(e.cp.client.clone(), &e.ns);
        eventually(90, "the Secret to be garbage-collected", || async {
            secrets.get_opt("klaviyo-sync").await.ok().flatten().is_none().then_some(())
        })
        .await;

        // The store's audit trail tells the whole life, with reasons and generations.
        let ids = [st.token_id.clone().unwrap_or_default(), second_id, third_id];
        let trail = audit_trail(&e, &t).await;
        assert_life_trail(&trail, &ids);
        for (tok, id) in [&first, &second, &third].into_iter().zip(&ids) {
            let hash = loop_token_operator::token::TokenHash::of(tok);
            for secret in [tok.as_str(), hash.as_str(), &hash.as_str()[7..], "sha256:"] {
                assert!(!json!(trail).to_string().contains(secret), "the audit trail of {id} holds a token or a hash");
            }
        }

        // Promise 1: no token in the operator's or the store's logs, in events or in status.
        let events = e.events();
        assert!(events.contains("Rotated") && events.contains("Revoked") && events.contains("Updated"), "{events}");
        let logs = format!("{}\n{}", e.operator.log_text(), e.store.log_text());
        assert!(logs.lines().count() > 10);
        for tok in [&first, &second, &third] {
            assert!(!logs.contains(tok.as_str()), "a token appears in the logs");
            assert!(!events.contains(tok.as_str()), "a token appears in an event");
            assert!(!format!("{:?}", t.status).contains(tok.as_str()), "a token appears in the status");
        }
    })
    .await;
}

/// The store's audit trail of a token's whole life (create, edit scopes, rotate, delete) is
/// exactly the expected sequence, with the scopes before and after and the reasons, on SQLite
/// and on PostgreSQL, and holds no token and no hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_of_a_life_on_sqlite() {
    with_namespace("e2e-trail-sqlite", |cp, ns| async move {
        let e = env(cp, ns).await;
        audit_life(&e).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_of_a_life_on_postgresql() {
    with_namespace("e2e-trail-pg", |cp, ns| async move {
        support::install_crd(&cp).await;
        let url = support::postgres().await;
        let store = StoreProcess::start(
            &["--database-url", &url, "--usage-flush-interval", "100ms"],
            &[],
        );
        let operator = OperatorProcess::builder(&cp, &store, &ns).start();
        let data = tempfile::tempdir().unwrap();
        let e = Env {
            cp,
            ns,
            store,
            operator,
            data,
        };
        audit_life(&e).await;
    })
    .await;
}

async fn audit_life(e: &Env) {
    e.apply(&token_yaml("trail", ""));
    e.wait_ready("trail");
    let first = e.secret_token("trail").await;
    e.kubectl(&[
        "patch",
        "apitoken",
        "trail",
        "--type=merge",
        "-p",
        r#"{"spec":{"scopes":["orders:write"]}}"#,
    ]);
    eventually(60, "the new scopes in the store", || async {
        (e.introspect(&first).await["scope"] == "orders:write").then_some(())
    })
    .await;
    e.kubectl(&["annotate", "apitoken", "trail", "loop.dev/rotate=r1"]);
    let t = e.wait_rotated("trail", "r1").await;
    let second = e.secret_token("trail").await;
    let ids: Vec<String> = {
        let mut all: Vec<(String, String)> = audit_trail(e, &t)
            .await
            .iter()
            .filter(|ev| ev["kind"] == "registered")
            .map(|ev| {
                (
                    ev["id"].to_string(),
                    ev["tokenId"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        all.sort_by_key(|(id, _)| id.parse::<u64>().unwrap_or(0));
        all.into_iter().map(|(_, t)| t).collect()
    };
    assert_eq!(ids.len(), 2, "two tokens registered");
    e.kubectl(&[
        "delete",
        "apitoken",
        "trail",
        "--wait=true",
        "--timeout=90s",
    ]);
    let trail = audit_trail(e, &t).await;
    let lines: Vec<(usize, String, String, Value, Value)> = trail
        .iter()
        .map(|ev| {
            let token = ids
                .iter()
                .position(|id| ev["tokenId"] == id.as_str())
                .map_or(0, |i| i + 1);
            let s = |k: &str| ev[k].as_str().unwrap_or("").to_owned();
            (
                token,
                s("kind"),
                s("reason"),
                ev["before"]["scopes"].clone(),
                ev["after"]["scopes"].clone(),
            )
        })
        .collect();
    let both = json!(["customers:read", "subscriptions:read"]);
    let edited = json!(["orders:write"]);
    let n = Value::Null;
    let s = |k: &str| k.to_owned();
    assert_eq!(
        lines[..4],
        [
            (1, s("registered"), s("manual"), n.clone(), both.clone()),
            (1, s("updated"), s("manual"), both, edited.clone()),
            (2, s("registered"), s("rotation"), n.clone(), edited.clone()),
            (
                1,
                s("expiry_set"),
                s("rotation"),
                edited.clone(),
                edited.clone()
            ),
        ],
        "{trail:#?}"
    );
    let mut last: Vec<_> = lines[4..]
        .iter()
        .map(|l| (l.0, l.1.as_str(), l.2.as_str()))
        .collect();
    last.sort();
    assert_eq!(
        last,
        [(1, "revoked", "deleted"), (2, "revoked", "deleted")],
        "{trail:#?}"
    );
    let text = json!(trail).to_string();
    for tok in [&first, &second] {
        let hash = loop_token_operator::token::TokenHash::of(tok);
        for secret in [tok.as_str(), hash.as_str(), &hash.as_str()[7..], "sha256:"] {
            assert!(
                !text.contains(secret),
                "the audit trail holds a token or a hash"
            );
        }
    }
}

/// Every event of the store's audit trail for an ApiToken (all pages of `GET /v1/events`).
async fn audit_trail(e: &Env, t: &ApiToken) -> Vec<Value> {
    let uid = t.metadata.uid.clone().unwrap_or_default();
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let uri = format!("/v1/events?ownerUid={uid}&limit=3{after}");
        let (status, page) = e.store.call(Method::GET, &uri, Some(ADMIN), None).await;
        assert_eq!(status, 200, "{page}");
        out.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page.get("next") {
            Some(next) => after = format!("&after={next}"),
            None => return out,
        }
    }
}

/// The life of `the_life_of_a_token` in the store's words: (token, kind, reason, generation).
/// `ids` are the first, second and third tokens' ids.
fn assert_life_trail(trail: &[Value], ids: &[String; 3]) {
    let line = |e: &Value| {
        let token = ids
            .iter()
            .position(|id| e["tokenId"] == id.as_str())
            .map_or(0, |i| i + 1);
        (
            token,
            e["kind"].as_str().unwrap_or("").to_owned(),
            e["reason"].as_str().unwrap_or("").to_owned(),
            e["generation"].as_i64(),
        )
    };
    let lines: Vec<_> = trail.iter().map(line).collect();
    let s = |k: &str| k.to_owned();
    let expected_start = [
        (1, s("registered"), s("manual"), Some(1)),
        // The spec edit: name and scopes in place (generation 2).
        (1, s("updated"), s("manual"), Some(2)),
        // The rotation through the annotation (which leaves the generation as it is): the new
        // token, then the previous one's grace period as its expiry.
        (2, s("registered"), s("rotation"), Some(2)),
        (1, s("expiry_set"), s("rotation"), Some(2)),
        // gracePeriod 0 (generation 3), then a rotation: the new token, the previous revoked.
        (3, s("registered"), s("rotation"), Some(3)),
        (2, s("revoked"), s("rotation"), Some(3)),
    ];
    assert_eq!(lines.len(), 8, "{trail:#?}");
    assert_eq!(lines[..6], expected_start[..], "{trail:#?}");
    // Deletion revokes the first and the third token, in either order.
    let mut last: Vec<_> = lines[6..]
        .iter()
        .map(|l| (l.0, l.1.as_str(), l.2.as_str()))
        .collect();
    last.sort();
    assert_eq!(
        last,
        [(1, "revoked", "deleted"), (3, "revoked", "deleted")],
        "{trail:#?}"
    );
    assert!(lines[6..].iter().all(|l| l.3 >= Some(3)), "{trail:#?}");
    let updated = &trail[1];
    assert_eq!(
        updated["before"]["scopes"],
        json!(["customers:read", "subscriptions:read"])
    );
    assert_eq!(updated["after"]["scopes"], json!(["orders:write"]));
    assert_eq!(
        (
            updated["before"]["name"].as_str(),
            updated["after"]["name"].as_str()
        ),
        (Some("Klaviyo sync"), Some("Klaviyo v2"))
    );
}

/// An operator that does not trust the store's certificate says so in the ApiToken's status,
/// naming what to check, and registers nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_certificate_the_operator_does_not_trust_is_named() {
    with_namespace("e2e-wrong-ca", |cp, ns| async move {
        let e = env_tls(cp, ns, false).await;
        e.apply(&token_yaml("untrusted", ""));
        let t = e
            .wait_until("untrusted", "the TLS failure in the status", |t| {
                reason(t, "Reconciling").as_deref() == Some("StoreUnavailable")
            })
            .await;
        let ready = t
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.message.clone())
            .unwrap_or_default();
        assert!(
            ready.contains("TLS handshake failed") && ready.contains("--store-ca-file"),
            "{ready}"
        );
        assert!(!ready.contains("connection failed"), "{ready}");
        assert!(
            e.active_ids(&t).await.is_empty(),
            "nothing may be registered"
        );
        assert!(
            e.store.log_text().contains("handshake") || e.store.log_text().contains("TLS"),
            "the store should have seen a failed handshake:\n{}",
            e.store.log_text()
        );
    })
    .await;
}

/// Promise 7: a Secret the operator does not own is never written; the ApiToken is Stalled
/// with a clear condition and event. Two ApiTokens naming one Secret: the second one stalls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_clobbers_a_secret_it_does_not_own() {
    with_namespace("e2e-clobber", |cp, ns| async move {
        let e = env(cp, ns).await;
        e.kubectl(&[
            "create",
            "secret",
            "generic",
            "taken",
            "--from-literal=token=precious",
        ]);
        let before = e.kubectl(&[
            "get",
            "secret",
            "taken",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ]);
        e.apply(
            &token_yaml("clash", "").replace("  scopes:", "  secret: {name: taken}\n  scopes:"),
        );
        let (t, msg) = e.wait_stalled("clash", "SecretConflict").await;
        assert!(
            msg.contains("Secret taken already exists and is not managed by this ApiToken"),
            "{msg}"
        );
        assert!(e.events().contains("SecretConflict"));
        let after = e.kubectl(&[
            "get",
            "secret",
            "taken",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ]);
        assert_eq!(before, after, "the foreign Secret was written");
        assert_eq!(e.secret_token("taken").await, "precious");
        assert!(
            e.active_ids(&t).await.is_empty(),
            "nothing registered for a blocked token"
        );

        // Two ApiTokens, one Secret name.
        e.apply(
            &token_yaml("first", "").replace("  scopes:", "  secret: {name: shared}\n  scopes:"),
        );
        e.wait_ready("first");
        let owned_token = e.secret_token("shared").await;
        e.apply(
            &token_yaml("second", "").replace("  scopes:", "  secret: {name: shared}\n  scopes:"),
        );
        let second = e
            .wait_until("second", "the second to stall", |t| {
                reason(t, "Stalled").is_some()
            })
            .await;
        assert_eq!(
            reason(&second, "Stalled").as_deref(),
            Some("SecretConflict")
        );
        assert_eq!(
            e.secret_token("shared").await,
            owned_token,
            "the first one's Secret is untouched"
        );
        assert_eq!(e.introspect(&owned_token).await["active"], true);

        // Freeing the name lets it proceed.
        e.kubectl(&["delete", "secret", "taken"]);
        e.kubectl(&["annotate", "apitoken", "clash", "nudge=1"]);
        e.wait_ready("clash");
    })
    .await;
}

/// Promise 9: a scope the store does not know is Stalled with the store's reason, and nothing
/// is half-registered; fixing the spec recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_scopes_stall_with_the_stores_reason() {
    with_namespace("e2e-scope", |cp, ns| async move {
        let e = env(cp, ns).await;
        e.apply(
            &token_yaml("widgets", "")
                .replace("[subscriptions:read, customers:read]", "[widgets:read]"),
        );
        let (t, msg) = e.wait_stalled("widgets", "UnknownScope").await;
        assert!(
            msg.contains("widgets:read") && msg.contains("Fix spec.scopes"),
            "{msg}"
        );
        let uid = t.metadata.uid.clone().unwrap_or_default();
        let (_, all) = e
            .store
            .call(
                Method::GET,
                &format!("/v1/tokens?ownerUid={uid}"),
                Some(ADMIN),
                None,
            )
            .await;
        assert_eq!(all["items"], json!([]), "nothing registered");
        let secrets: Api<Secret> = Api::namespaced(e.cp.client.clone(), &e.ns);
        assert!(
            secrets.get_opt("widgets").await.unwrap().is_none(),
            "no Secret written"
        );

        e.kubectl(&[
            "patch",
            "apitoken",
            "widgets",
            "--type=merge",
            "-p",
            r#"{"spec":{"scopes":["orders:read"]}}"#,
        ]);
        e.wait_ready("widgets");
        let t = e.get("widgets").await;
        assert!(
            reason(&t, "Stalled").is_none(),
            "Stalled is gone once fixed"
        );
        assert_eq!(
            e.introspect(&e.secret_token("widgets").await).await["scope"],
            "orders:read"
        );
    })
    .await;
}

/// Promise 3: the operator is killed at each step of a rotation and restarted; afterwards the
/// Secret's token is active with the right scopes, the previous token follows its grace
/// period, and nothing else of that resource is active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_step_of_a_rotation_leaves_no_orphan() {
    with_namespace("e2e-crash", |cp, ns| async move {
        let mut e = env(cp, ns).await;
        e.apply(&token_yaml("crashy", ""));
        e.wait_ready("crashy");
        for (i, step) in [
            "after-mint",
            "after-register",
            "after-secret",
            "before-status",
        ]
        .iter()
        .enumerate()
        {
            let before = e.secret_token("crashy").await;
            e.operator.kill();
            let mut crashing = OperatorProcess::builder(&e.cp, &e.store, &e.ns)
                .crash_at(step)
                .start();
            let value = format!("crash-{i}");
            e.kubectl(&[
                "annotate",
                "--overwrite",
                "apitoken",
                "crashy",
                &format!("loop.dev/rotate={value}"),
            ]);
            let died = crashing
                .wait_exit(60)
                .unwrap_or_else(|| panic!("the operator did not reach crash point {step}"));
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&died),
                Some(9),
                "{step}: killed by SIGKILL"
            );
            e.operator = OperatorProcess::builder(&e.cp, &e.store, &e.ns).start();
            let t = e.wait_rotated("crashy", &value).await;
            let now = e.secret_token("crashy").await;
            assert_ne!(now, before, "{step}: the rotation happened");
            let answer = e.introspect(&now).await;
            assert_eq!(
                (answer["active"].as_bool(), answer["scope"].as_str()),
                (Some(true), Some("customers:read subscriptions:read")),
                "{step}"
            );
            assert_eq!(
                e.introspect(&before).await["active"],
                true,
                "{step}: the previous token is in its grace period"
            );
            // Exactly: the current token plus those in their grace period.
            let st = t.status.clone().unwrap_or_default();
            let mut expected: Vec<String> = st
                .previous_tokens
                .iter()
                .map(|p| p.token_id.clone())
                .collect();
            expected.extend(st.token_id.clone());
            expected.sort();
            assert_eq!(
                e.active_ids(&t).await,
                expected,
                "{step}: no orphan stays active"
            );
            assert_eq!(
                st.previous_tokens.len(),
                i + 1,
                "{step}: every earlier token is in grace"
            );
        }
    })
    .await;
}

/// Promise 6 and 3 with the store down: creation waits and says why, deletion waits and says
/// why, and everything converges once the store is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_delays_but_loses_nothing() {
    with_namespace("e2e-outage", |cp, ns| async move {
        let mut e = env(cp, ns).await;
        e.apply(&token_yaml("early", ""));
        e.apply(&token_yaml("rotating", ""));
        e.wait_ready("early");
        e.wait_ready("rotating");
        let early_token = e.secret_token("early").await;
        let rotating_before = e.secret_token("rotating").await;

        // Store down: a new ApiToken waits with a reason.
        let listen = e.store.url.trim_start_matches("http://").to_owned();
        e.store.kill();
        e.apply(&token_yaml("during", ""));
        let t = e
            .wait_until("during", "StoreUnavailable", |t| {
                reason(t, "Reconciling").as_deref() == Some("StoreUnavailable")
            })
            .await;
        assert!(!ready(&t));
        // Deletion with the store down waits, with a reason, and keeps the finalizer.
        e.kubectl(&["delete", "apitoken", "early", "--wait=false"]);
        let t = e
            .wait_until("early", "RevocationPending", |t| {
                reason(t, "Reconciling").as_deref() == Some("RevocationPending")
            })
            .await;
        assert!(
            t.metadata
                .finalizers
                .as_ref()
                .is_some_and(|f| f.iter().any(|x| x == "loop.dev/revoke"))
        );
        // A rotation asked for during the outage waits too.
        e.kubectl(&[
            "annotate",
            "apitoken",
            "rotating",
            "loop.dev/rotate=during-outage",
        ]);
        e.wait_until("rotating", "the rotation to wait for the store", |t| {
            reason(t, "Reconciling").as_deref() == Some("StoreUnavailable")
        })
        .await;
        assert_eq!(
            e.secret_token("rotating").await,
            rotating_before,
            "no token is written before it is registered"
        );

        // The store comes back on the same data and address.
        e.store = start_store_with(e.data.path(), Some(&listen), &[]);
        e.wait_ready("during");
        let during = e.secret_token("during").await;
        assert_eq!(e.introspect(&during).await["active"], true);
        let tokens = e.tokens();
        eventually(90, "apitoken/early to be deleted", || async {
            tokens
                .get_opt("early")
                .await
                .ok()
                .flatten()
                .is_none()
                .then_some(())
        })
        .await;
        assert_eq!(
            e.introspect(&early_token).await,
            json!({"active": false}),
            "deleted while the store was down: revoked once it was back"
        );
        let t = e.wait_rotated("rotating", "during-outage").await;
        let rotated = e.secret_token("rotating").await;
        assert_ne!(rotated, rotating_before);
        assert_eq!(e.introspect(&rotated).await["active"], true);
        assert_eq!(
            e.introspect(&rotating_before).await["active"],
            true,
            "grace period after the outage"
        );
        assert_eq!(
            e.active_ids(&t).await.len(),
            2,
            "current plus previous, nothing else"
        );
    })
    .await;
}

/// A Secret deleted or edited by hand is repaired; the token that was in it keeps its grace
/// period (apps may still hold it); labels edited by hand are restored without a new token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_edits_of_the_secret_are_repaired() {
    with_namespace("e2e-repair", |cp, ns| async move {
        let e = env(cp, ns).await;
        e.apply(&token_yaml("fixme", ""));
        e.wait_ready("fixme");
        let first = e.secret_token("fixme").await;

        e.kubectl(&[
            "label",
            "--overwrite",
            "secret",
            "fixme",
            "app.kubernetes.io/managed-by=someone",
        ]);
        eventually(60, "the label to be restored", || async {
            (e.kubectl(&[
                "get",
                "secret",
                "fixme",
                "-o",
                "jsonpath={.metadata.labels.app\\.kubernetes\\.io/managed-by}",
            ]) == "loop-token-operator")
                .then_some(())
        })
        .await;
        assert_eq!(
            e.secret_token("fixme").await,
            first,
            "a label repair keeps the token"
        );

        e.kubectl(&["delete", "secret", "fixme"]);
        let secrets: Api<Secret> = Api::namespaced(e.cp.client.clone(), &e.ns);
        let second = eventually(60, "a new Secret", || async {
            let s = secrets.get_opt("fixme").await.ok().flatten()?;
            let tok = String::from_utf8(s.data?.get("token")?.0.clone()).ok()?;
            (tok != first).then_some(tok)
        })
        .await;
        assert_eq!(e.introspect(&second).await["active"], true);
        assert_eq!(
            e.introspect(&first).await["active"],
            true,
            "the lost token keeps its grace period"
        );
        let t = e
            .wait_until("fixme", "previous token in status", |t| {
                t.status
                    .as_ref()
                    .is_some_and(|s| s.previous_tokens.len() == 1)
            })
            .await;
        assert!(ready(&t));

        // A key added by someone else is theirs: left alone, and the token stays.
        e.kubectl(&[
            "patch",
            "secret",
            "fixme",
            "--type=merge",
            "-p",
            r#"{"stringData":{"note":"mine"}}"#,
        ]);
        e.kubectl(&["annotate", "apitoken", "fixme", "nudge=1"]);
        assert_eq!(e.secret_token("fixme").await, second);
        let note = e.kubectl(&["get", "secret", "fixme", "-o", "jsonpath={.data.note}"]);
        assert_eq!(note, "bWluZQ==", "another party's key is left alone");

        // Moving the token to another Secret: a new token there, the old one keeps its grace,
        // the old Secret goes.
        e.kubectl(&[
            "patch",
            "apitoken",
            "fixme",
            "--type=merge",
            "-p",
            r#"{"spec":{"secret":{"name":"fixme-moved"}}}"#,
        ]);
        let t = e
            .wait_until("fixme", "the move", |t| {
                ready(t)
                    && t.status.as_ref().and_then(|s| s.secret_name.as_deref())
                        == Some("fixme-moved")
            })
            .await;
        let moved = e.secret_token("fixme-moved").await;
        assert_ne!(moved, second);
        assert_eq!(e.introspect(&moved).await["active"], true);
        assert_eq!(
            e.introspect(&second).await["active"],
            true,
            "the token of the old Secret keeps its grace"
        );
        let secrets: Api<Secret> = Api::namespaced(e.cp.client.clone(), &e.ns);
        eventually(60, "the old Secret to be removed", || async {
            secrets
                .get_opt("fixme")
                .await
                .ok()
                .flatten()
                .is_none()
                .then_some(())
        })
        .await;
        assert_eq!(e.active_ids(&t).await.len(), 3, "current, and two in grace");
    })
    .await;
}

/// A hand edit of the token itself (data only, none of the operator's metadata) is seen, and the
/// Secret again holds a token the store answers active for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_overwritten_by_hand_is_replaced() {
    with_namespace("e2e-overwrite", |cp, ns| async move {
        let e = env(cp, ns).await;
        e.apply(&token_yaml("scribbled", ""));
        e.wait_ready("scribbled");
        let first = e.secret_token("scribbled").await;
        e.kubectl(&[
            "patch",
            "secret",
            "scribbled",
            "--type=merge",
            "-p",
            r#"{"stringData":{"token":"overwritten-by-hand"}}"#,
        ]);
        let repaired = eventually(60, "a working token in the Secret again", || async {
            let t = e.secret_token("scribbled").await;
            (t != "overwritten-by-hand" && e.introspect(&t).await["active"] == true).then_some(t)
        })
        .await;
        assert_ne!(repaired, "overwritten-by-hand");
        assert!(!first.is_empty());
    })
    .await;
}

/// Promise 3: a registration of this resource that is neither in the Secret nor in a grace
/// period (as an interrupted issue would leave) is revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_registrations_are_revoked() {
    with_namespace("e2e-orphan", |cp, ns| async move {
        let e = env(cp, ns).await;
        e.apply(&token_yaml("tidy", ""));
        e.wait_ready("tidy");
        let t = e.get("tidy").await;
        let uid = t.metadata.uid.clone().unwrap_or_default();
        let stray = loop_token_operator::token::Token::mint().unwrap();
        let body = json!({"hash": stray.hash(), "name": "stray", "scopes": ["orders:read"],
            "owner": {"cluster": "e2e", "namespace": e.ns, "name": "tidy", "uid": uid}});
        let (s, _) = e
            .store
            .call(
                Method::PUT,
                &format!("/v1/tokens/{uid}.stray"),
                Some(ADMIN),
                Some(body),
            )
            .await;
        assert_eq!(s, 201);
        assert_eq!(e.introspect(stray.expose()).await["active"], true);
        e.kubectl(&["annotate", "apitoken", "tidy", "nudge=1"]);
        eventually(60, "the orphan to be revoked", || async {
            (e.introspect(stray.expose()).await["active"] == false).then_some(())
        })
        .await;
        assert_eq!(
            e.introspect(&e.secret_token("tidy").await).await["active"],
            true
        );
    })
    .await;
}

/// Promise 8: once converged, a minute passes without a single write by the operator to the
/// API server (read from the API server's own audit log) or to the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_converged_token_is_quiet() {
    with_namespace("e2e-quiet", |cp, ns| async move {
        let e = env(cp, ns).await;
        e.apply(&token_yaml("calm", ""));
        e.wait_ready("calm");
        let audit = e.cp.state_dir.join("logs/audit.log");
        let writes_in_ns = || {
            let text = std::fs::read_to_string(&audit).unwrap_or_default();
            text.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| {
                    v["objectRef"]["namespace"] == e.ns.as_str() && v["stage"] == "ResponseComplete"
                })
                .count()
        };
        let store_writes = || async {
            let m = e.store.metrics().await;
            m.lines()
                .filter(|l| {
                    l.starts_with("loop_store_http_requests_total")
                        && (l.contains("method=\"PUT\"")
                            || l.contains("method=\"PATCH\"")
                            || l.contains("method=\"DELETE\""))
                })
                .map(|l| {
                    l.rsplit(' ')
                        .next()
                        .and_then(|n| n.parse::<f64>().ok())
                        .unwrap_or(0.0)
                })
                .sum::<f64>()
        };
        // Ready is the operator's last write; the audit log and the store's counters must show
        // the creation's writes, or this test would measure nothing. The write budget of a
        // creation: the test's create, then the operator's finalizer, Secret and status (no
        // Event for a first issue). Refused writes (a 409 retried) would be extra.
        let (api_before, store_before) = (writes_in_ns(), store_writes().await);
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        let accepted: Vec<String> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| {
                v["objectRef"]["namespace"] == e.ns.as_str()
                    && v["stage"] == "ResponseComplete"
                    && v["responseStatus"]["code"]
                        .as_i64()
                        .is_some_and(|c| c < 400)
                    // (kube-controller-manager fills a new namespace with a ServiceAccount and a
                    // ConfigMap)
                    && matches!(
                        v["objectRef"]["resource"].as_str(),
                        Some("apitokens" | "secrets" | "events")
                    )
            })
            .map(|v| {
                format!(
                    "{} {} {}",
                    v["verb"], v["objectRef"]["resource"], v["objectRef"]["subresource"]
                )
            })
            .collect();
        assert_eq!(
            accepted.len(),
            4,
            "a creation is 1 create and 3 operator writes: {accepted:?} ({})",
            audit.display()
        );
        assert!(
            store_before >= 1.0,
            "expected the registration in the store's metrics"
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
        let (api_after, store_after) = (writes_in_ns(), store_writes().await);
        assert_eq!(
            api_after, api_before,
            "the operator wrote to the API server while nothing changed"
        );
        // From creation to here the status was written exactly once: a reconcile woken by the
        // operator's own writes must not write it again (its watch cache may lag).
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        let status_writes = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| {
                v["objectRef"]["namespace"] == e.ns.as_str()
                    && v["objectRef"]["resource"] == "apitokens"
                    && v["objectRef"]["subresource"] == "status"
                    && v["stage"] == "ResponseComplete"
            })
            .count();
        assert_eq!(status_writes, 1, "status writes for one creation");
        assert_eq!(
            store_after, store_before,
            "the operator wrote to the store while nothing changed"
        );
    })
    .await;
}

/// Every file in `examples/` applies as a user would apply it, and every token becomes Ready
/// with a working token in its Secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_work() {
    with_namespace("e2e-examples", |cp, ns| async move {
        let e = env(cp, ns).await;
        let root = support::repo_root().join("examples");
        for f in [
            "basic.yaml",
            "rotation.yaml",
            "two-integrations.yaml",
            "aging.yaml",
            "usage.yaml",
            "app-with-rollout.yaml",
        ] {
            e.kubectl(&["apply", "-f", root.join(f).to_str().unwrap_or_default()]);
        }
        // The kustomization names its own namespace, as a GitOps repo would; retarget it.
        let built = e.cp.kubectl_ok(&[
            "kustomize",
            root.join("gitops").to_str().unwrap_or_default(),
        ]);
        assert!(built.contains("namespace: integrations"), "{built}");
        e.apply(&built.replace("namespace: integrations", &format!("namespace: {}", e.ns)));

        let expected = [
            (
                "klaviyo-sync",
                "klaviyo-sync",
                "token",
                "customers:read subscriptions:read",
            ),
            (
                "recharge-migration",
                "recharge-migration-loop-token",
                "LOOP_API_TOKEN",
                "customers:read orders:read subscriptions:write",
            ),
            (
                "shop-orders",
                "shop-loop-orders",
                "token",
                "orders:read products:read",
            ),
            (
                "shop-webhooks",
                "shop-loop-webhooks",
                "token",
                "webhooks:write",
            ),
            (
                "helpdesk-sync",
                "helpdesk-sync",
                "token",
                "customers:read subscriptions:read",
            ),
            (
                "analytics-export",
                "analytics-export",
                "token",
                "orders:read reports:read",
            ),
            (
                "partner-export",
                "partner-export",
                "token",
                "customers:read orders:read",
            ),
            (
                "backfill-job",
                "backfill-job",
                "token",
                "subscriptions:read",
            ),
            (
                "reporting",
                "reporting",
                "token",
                "orders:read subscriptions:read",
            ),
            (
                "quarterly-export",
                "quarterly-export",
                "token",
                "customers:read",
            ),
            (
                "shop-orders-api",
                "shop-orders-loop",
                "token",
                "customers:read orders:read",
            ),
        ];
        let secrets: Api<Secret> = Api::namespaced(e.cp.client.clone(), &e.ns);
        for (name, secret, key, scopes) in expected {
            e.wait_ready(name);
            let s = secrets
                .get(secret)
                .await
                .unwrap_or_else(|err| panic!("secret {secret}: {err}"));
            let tok = String::from_utf8(
                s.data
                    .unwrap_or_default()
                    .get(key)
                    .unwrap_or_else(|| panic!("{secret} lacks {key}"))
                    .0
                    .clone(),
            )
            .unwrap();
            let answer = e.introspect(&tok).await;
            assert_eq!(
                (answer["active"].as_bool(), answer["scope"].as_str()),
                (Some(true), Some(scopes)),
                "{name}"
            );
        }
        // The app with a rollout target: its .env is rendered with the token, and the status
        // follows its Deployment (whose pods never start here: no kubelet).
        let s = secrets.get("shop-orders-loop").await.unwrap();
        let data = s.data.unwrap_or_default();
        let text = |k: &str| {
            String::from_utf8(data.get(k).map(|b| b.0.clone()).unwrap_or_default()).unwrap()
        };
        assert_eq!(
            text(".env"),
            format!(
                "LOOP_API_URL=https://api.loop.example/v1\nLOOP_API_TOKEN={}\n",
                text("token")
            )
        );
        let rollout = e
            .get("shop-orders-api")
            .await
            .status
            .unwrap_or_default()
            .rollout;
        assert_eq!(
            (rollout.len(), rollout[0].name.as_str()),
            (1, "shop-orders")
        );
        let t = e.get("recharge-migration").await;
        assert_eq!(
            t.status
                .unwrap_or_default()
                .last_rotation_request
                .as_deref(),
            Some("2026-11-29T12:00:00Z"),
            "an annotation present at creation is handled without a second rotation"
        );
        // The aging example: its expiry and schedule reach the status, 90 and 30 days out.
        let s = e.get("partner-export").await.status.unwrap_or_default();
        let at = |v: Option<&String>| -> jiff::Timestamp {
            v.and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("not a time: {v:?}"))
        };
        let issued = at(s.issued_at.as_ref());
        assert_eq!(
            at(s.expires_at.as_ref()),
            issued + jiff::SignedDuration::from_hours(2160)
        );
        assert_eq!(
            at(s.next_rotation_at.as_ref()),
            issued + jiff::SignedDuration::from_hours(720)
        );
        let labels = e.kubectl(&[
            "get",
            "apitoken",
            "helpdesk-sync",
            "-o",
            "jsonpath={.metadata.labels}",
        ]);
        assert!(labels.contains("integrations"), "{labels}");
    })
    .await;
}

/// Leader election: of two operators only the leader reconciles; when it is killed the standby
/// takes over within the lease duration, and no token is minted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_and_a_standby_takes_over() {
    with_namespace("e2e-leader", |cp, ns| async move {
        let mut e = env(cp, ns).await;
        e.operator.kill();
        let le = [
            "--leader-election-namespace",
            e.ns.as_str(),
            "--lease-duration",
            "4s",
            "--lease-renew-before",
            "2s",
        ];
        let mut a = OperatorProcess::builder(&e.cp, &e.store, &e.ns)
            .leader_election(&le)
            .start();
        eventually(30, "operator A to lead", || async {
            a.logged("became leader").then_some(())
        })
        .await;
        let b = OperatorProcess::builder(&e.cp, &e.store, &e.ns)
            .leader_election(&le)
            .start();
        eventually(30, "operator B to wait", || async {
            b.logged("waiting for leadership").then_some(())
        })
        .await;

        e.apply(&token_yaml("one", ""));
        e.wait_ready("one");
        assert!(
            !b.logged("became leader"),
            "the standby must not lead while the leader lives"
        );
        let b_metrics = b.metrics().await;
        assert!(
            !b_metrics.contains("loop_operator_reconciles_total{"),
            "the standby reconciled:\n{b_metrics}"
        );
        let first = e.secret_token("one").await;

        // The leader dies without releasing the lease; the standby takes over once it expires.
        a.kill();
        let killed_at = std::time::Instant::now();
        eventually(30, "operator B to lead", || async {
            b.logged("became leader").then_some(())
        })
        .await;
        let takeover = killed_at.elapsed();
        eprintln!("standby took over {takeover:?} after the leader was killed (lease duration 4s)");
        assert!(takeover < Duration::from_secs(4 + 4), "took {takeover:?}");
        e.apply(&token_yaml("two", ""));
        e.wait_ready("two");

        // The new leader adopted "one" without minting it again.
        assert_eq!(e.secret_token("one").await, first);
        let t = e.get("one").await;
        let uid = t.metadata.uid.clone().unwrap_or_default();
        let (_, all) = e
            .store
            .call(
                Method::GET,
                &format!("/v1/tokens?ownerUid={uid}"),
                Some(ADMIN),
                None,
            )
            .await;
        assert_eq!(
            all["items"].as_array().map(Vec::len),
            Some(1),
            "one token ever registered for 'one': {all}"
        );
        let b_metrics = b.metrics().await;
        assert!(
            b_metrics.contains("loop_operator_token_actions_total{action=\"issue\"} 1"),
            "{b_metrics}"
        );

        // A clean shutdown (SIGTERM) drains, releases the lease and exits 0; a new candidate
        // then leads without waiting for the lease to expire.
        let mut b = b;
        let c = OperatorProcess::builder(&e.cp, &e.store, &e.ns)
            .leader_election(&le)
            .start();
        eventually(30, "operator C to wait", || async {
            c.logged("waiting for leadership").then_some(())
        })
        .await;
        let status = b
            .terminate()
            .unwrap_or_else(|| panic!("B did not stop on SIGTERM"));
        assert!(status.success(), "B exited with {status}");
        assert!(b.logged("released the lease"), "{}", b.log_text());
        eventually(30, "operator C to lead", || async {
            c.logged("became leader").then_some(())
        })
        .await;
    })
    .await;
}
