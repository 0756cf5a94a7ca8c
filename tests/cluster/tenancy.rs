//! Tenancy on the real control plane: ApiTokenPolicies refused at apply time by the chart's
//! admission policy (and `--dry-run=server`), policies narrowed after the fact (the operator
//! holds what they no longer allow, revokes under `enforcement: Revoke`, and leaves the rest
//! untouched), tenants who cannot change policies, deletion that never traps a namespace
//! (`loop.dev/abandon-revocation`), and `deletionPolicy: Orphan`.
//!
//! Policies are cluster-scoped: each test's policies select only its own namespace, by a
//! label carrying the namespace's name, and are deleted at the end.

use crate::helm_chart::{chart, helm_ok, kubectl_as, service_account_kubeconfig};
use crate::support;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use loop_token_operator::operator::resource::crd::ApiToken;
use loop_token_operator::operator::{Limit, Violation};
use reqwest::Method;
use serde_json::{Value, json};
use support::operator::OperatorProcess;
use support::store::{ADMIN, INTROSPECT, StoreProcess, sqlite_args};
use support::{ControlPlane, eventually, with_namespace};

/// The label each test's policies select its namespace by.
const TENANT: &str = "loop.dev/test-tenant";

struct Tenant {
    cp: ControlPlane,
    ns: String,
    store: StoreProcess,
    _data: tempfile::TempDir,
}

fn start_store(dir: &std::path::Path) -> StoreProcess {
    let args = sqlite_args(dir);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    StoreProcess::start(&argv, &[])
}

/// The CRDs, the namespace labelled for its policies, and a store.
async fn tenant(cp: ControlPlane, ns: String) -> Tenant {
    support::install_crd(&cp).await;
    cp.kubectl_ok(&["label", "namespace", &ns, &format!("{TENANT}={ns}")]);
    let data = tempfile::tempdir().unwrap();
    let store = start_store(data.path());
    Tenant {
        cp,
        ns,
        store,
        _data: data,
    }
}

impl Tenant {
    fn apply(&self, yaml: &str) -> (bool, String) {
        self.cp.apply_in(&self.ns, yaml)
    }

    fn apply_ok(&self, yaml: &str) {
        self.cp.apply_ok_in(&self.ns, yaml);
    }

    fn kubectl(&self, args: &[&str]) -> String {
        self.cp.kubectl_in(&self.ns, args)
    }

    /// An ApiTokenPolicy selecting this test's namespace (`spec` without the selector).
    fn policy(&self, name: &str, spec: Value) -> String {
        let mut spec = spec;
        spec["namespaceSelector"] = json!({"matchLabels": {TENANT: self.ns}});
        let p = json!({"apiVersion": "loop.dev/v1alpha1", "kind": "ApiTokenPolicy",
            "metadata": {"name": name}, "spec": spec});
        self.apply_ok(&p.to_string());
        name.to_owned()
    }

    fn delete_policies(&self, names: &[&str]) {
        for n in names {
            self.cp
                .kubectl_ok(&["delete", "apitokenpolicy", n, "--ignore-not-found"]);
        }
    }

    fn tokens(&self) -> Api<ApiToken> {
        Api::namespaced(self.cp.client.clone(), &self.ns)
    }

    async fn wait_until(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&ApiToken) -> bool + Send + 'static,
    ) -> ApiToken {
        self.cp.wait_for_apitoken(&self.ns, name, what, pred).await
    }

    async fn wait_ready(&self, name: &str) -> ApiToken {
        self.wait_until(name, "Ready", |t| condition(t, "Ready").0 == "True")
            .await
    }

    async fn secret_token(&self, secret: &str) -> String {
        let api: Api<Secret> = Api::namespaced(self.cp.client.clone(), &self.ns);
        let s = api
            .get(secret)
            .await
            .unwrap_or_else(|e| panic!("get secret/{secret}: {e}"));
        let data = s.data.unwrap_or_default();
        String::from_utf8(data.get("token").map(|b| b.0.clone()).unwrap_or_default()).unwrap()
    }

    /// One request to the store on a connection of its own: a pooled one may have been
    /// closed by the store as idle (its header timeout) between two phases of a test.
    async fn store_call(
        &self,
        method: Method,
        path: &str,
        cred: Option<&str>,
        body: Option<Value>,
    ) -> Value {
        let mut req = support::http_client().request(method, format!("{}{path}", self.store.url));
        if let Some(c) = cred {
            req = req.bearer_auth(c);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }

    async fn active(&self, token: &str) -> bool {
        let v = self
            .store_call(
                Method::POST,
                "/v1/introspect",
                Some(INTROSPECT),
                Some(json!({"token": token})),
            )
            .await;
        v["active"] == true
    }

    /// The store's registrations (`query`: `ownerUid=...`, `namespace=...`).
    async fn registrations(&self, query: &str) -> Vec<Value> {
        let v = self
            .store_call(
                Method::GET,
                &format!("/v1/tokens?{query}"),
                Some(ADMIN),
                None,
            )
            .await;
        v["items"].as_array().cloned().unwrap_or_default()
    }

    /// How many requests the store answered with this method (a line of its metrics).
    async fn store_requests(&self, method: &str) -> f64 {
        let m = self.store_call(Method::GET, "/metrics", None, None).await;
        m.as_str()
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                l.starts_with("loop_store_http_requests_total")
                    && l.contains(&format!("method=\"{method}\""))
                    && l.contains("route=\"/v1/tokens")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Writes to this namespace accepted by the API server, from its audit log, as
    /// `verb resource name`.
    fn writes(&self) -> Vec<String> {
        let audit = self.cp.state_dir.join("logs/audit.log");
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| {
                v["objectRef"]["namespace"] == self.ns.as_str()
                    && v["stage"] == "ResponseComplete"
                    && v["responseStatus"]["code"]
                        .as_i64()
                        .is_some_and(|c| c < 400)
                    && matches!(
                        v["objectRef"]["resource"].as_str(),
                        Some("apitokens" | "secrets" | "events")
                    )
            })
            .map(|v| {
                format!(
                    "{} {} {}",
                    v["verb"].as_str().unwrap_or_default(),
                    v["objectRef"]["resource"].as_str().unwrap_or_default(),
                    v["objectRef"]["name"].as_str().unwrap_or_default()
                )
            })
            .collect()
    }
}

fn token_yaml(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: loop.dev/v1alpha1\nkind: ApiToken\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

/// The status, reason and message of a condition ("" when absent).
fn condition(t: &ApiToken, type_: &str) -> (String, String, String) {
    t.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

fn stalled_by_policy(t: &ApiToken) -> bool {
    let (status, reason, _) = condition(t, "Stalled");
    status == "True" && reason == "PolicyViolation"
}

/// The chart's admission policy refuses what the policies of a namespace do not allow, in the
/// operator's own words, for `kubectl apply` and `--dry-run=server` alike; what several
/// policies allow together is admitted and issued. The operator runs as the chart's
/// ServiceAccount without `--cluster-name` (the kube-system namespace's uid is recorded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admission_policy_refuses_what_no_policy_allows() {
    with_namespace("tenancy-vap", |cp, ns| async move {
        let t = tenant(cp, ns).await;
        let ns = t.ns.clone();
        let orders = t.policy(
            &format!("{ns}-orders"),
            json!({"allowedScopes": ["orders:*"], "maxGracePeriod": "2h"}),
        );
        let customers = t.policy(
            &format!("{ns}-customers"),
            json!({"allowedScopes": ["customers:read"], "maxGracePeriod": "30m"}),
        );
        let (operator, _kubeconfig) = chart_and_operator(&t);

        // The words of the refusals are the operator's own (policy::Violation).
        let mut both = vec![customers.clone(), orders.clone()];
        both.sort();
        let scopes = Violation::Scopes {
            scopes: vec!["payments:read".into()],
            ns: ns.clone(),
            by: both,
        }
        .to_string();
        assert!(
            scopes.contains("payments:read") && scopes.contains(&ns) && scopes.contains(&orders)
        );
        let wide = token_yaml(
            "wide",
            "  scopes: [orders:read, payments:read]\n  rotation: {gracePeriod: 30m}\n",
        );
        // Once the operator has written the policies' digest, the dry run is refused...
        let err = eventually(60, "the admission policy to refuse", || async {
            let out = t.cp.kubectl_stdin(
                &["apply", "--dry-run=server", "-n", &ns, "-f", "-"],
                Some(&wide),
            );
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            (!out.status.success() && err.contains("not allowed")).then_some(err)
        })
        .await;
        assert!(err.contains(&scopes), "expected {scopes:?} in {err}");
        // ... and so is the real apply, with the same message; nothing is created.
        let (ok, err) = t.apply(&wide);
        assert!(!ok && err.contains(&scopes), "{err}");
        assert!(t.tokens().get_opt("wide").await.unwrap().is_none());
        // The strictest grace period of the two, named with the policy that sets it.
        let limit = Limit {
            max: jiff::SignedDuration::from_mins(30),
            text: "30m".into(),
            by: customers.clone(),
        };
        let grace = Violation::GracePeriod {
            asked: "1h".into(),
            ns: ns.clone(),
            limit,
        }
        .to_string();
        let (ok, err) = t.apply(&token_yaml(
            "slow",
            "  scopes: [orders:read]\n  rotation: {gracePeriod: 1h}\n",
        ));
        assert!(!ok && err.contains(&grace), "expected {grace:?} in {err}");

        within_the_policies_is_admitted(&t, &operator).await;

        t.delete_policies(&[&orders, &customers]);
        helm_ok(&t.cp, &["uninstall", "lto", "--namespace", &ns]);
    })
    .await;
}

/// What the policies allow together (orders from one, customers from the other) is accepted
/// and Ready, with a working token registered under the kube-system namespace's uid as the
/// cluster's name; the operator never hit a permission error.
async fn within_the_policies_is_admitted(t: &Tenant, operator: &OperatorProcess) {
    let (ok, err) = t.apply(&token_yaml(
        "within",
        "  scopes: [orders:write, customers:read]\n  rotation: {gracePeriod: 30m}\n",
    ));
    assert!(ok, "{err}");
    let within_token = t.wait_ready("within").await;
    assert!(t.active(&t.secret_token("within").await).await);

    // The cluster's name is the kube-system namespace's uid.
    let uid = t.cp.kubectl_ok(&[
        "get",
        "namespace",
        "kube-system",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    let regs = t
        .registrations(&format!(
            "ownerUid={}",
            within_token.metadata.uid.clone().unwrap_or_default()
        ))
        .await;
    assert_eq!(regs.len(), 1);
    assert_eq!(regs[0]["owner"]["cluster"], uid.as_str());
    let logs = operator.log_text();
    assert!(
        !logs.to_lowercase().contains("forbidden"),
        "the operator hit a permission error:\n{logs}"
    );
}

/// The chart installed as release `lto` watching the test's namespace (its admission policies
/// included), and the operator running as the chart's ServiceAccount, without `--cluster-name`,
/// writing the policy digest the chart's admission policy reads.
fn chart_and_operator(t: &Tenant) -> (OperatorProcess, tempfile::TempDir) {
    let c = chart();
    let ns = &t.ns;
    let watch = format!("watchNamespace={ns}");
    helm_ok(
        &t.cp,
        &[
            "upgrade",
            "--install",
            "lto",
            c.to_str().unwrap_or_default(),
            "--namespace",
            ns,
            "--set",
            &watch,
            "--wait=false",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig =
        service_account_kubeconfig(&t.cp, ns, "lto-loop-token-operator-operator", dir.path());
    let digest = format!("{ns}/lto-loop-token-operator-policies");
    let operator = OperatorProcess::builder(&t.cp, &t.store, ns)
        .kubeconfig(&kubeconfig)
        .without_cluster_name()
        .args(&["--admission-configmap", &digest])
        .start();
    (operator, dir)
}

/// A policy narrowed after the fact: the ApiToken it no longer allows is held (Stalled,
/// PolicyViolation), keeps its token under `Report` and loses it under `Revoke`, gets nothing
/// new, and comes back once allowed; the ApiToken it still allows is looked at and makes no
/// write. (No admission policy here: the operator alone.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_narrowed_policy_holds_what_it_no_longer_allows() {
    with_namespace("tenancy-narrow", |cp, ns| async move {
        let t = tenant(cp, ns).await;
        let ns = t.ns.clone();
        let _operator = OperatorProcess::builder(&t.cp, &t.store, &ns).start();
        t.apply_ok(&token_yaml("inside", "  scopes: [orders:read]\n"));
        t.apply_ok(&token_yaml("wide", "  scopes: [orders:read, payments:read]\n"));
        t.wait_ready("inside").await;
        t.wait_ready("wide").await;
        let (inside, wide) = (t.secret_token("inside").await, t.secret_token("wide").await);

        // Narrow: only orders. Report, the default.
        let writes_before = t.writes().len();
        let (lists, changes) = (t.store_requests("GET").await, t.store_requests("PUT").await + t.store_requests("PATCH").await + t.store_requests("DELETE").await);
        let name = t.policy(&format!("{ns}-narrow"), json!({"allowedScopes": ["orders:*"]}));
        let held = t.wait_until("wide", "PolicyViolation", stalled_by_policy).await;
        let (_, _, message) = condition(&held, "Stalled");
        assert!(message.starts_with(&format!("scope payments:read not allowed in namespace {ns} by ApiTokenPolicy {name}")), "{message}");
        assert!(message.contains("its current token keeps working (enforcement Report)"), "{message}");
        assert_eq!(condition(&held, "Ready").0, "False");
        assert!(t.active(&wide).await, "Report keeps the token working");
        let events = t.kubectl(&["get", "events", "-o", "json"]);
        assert!(events.contains("PolicyViolation"), "{events}");
        // The ApiToken still inside was reconciled (a store list: the held one makes none)...
        eventually(60, "the ApiToken inside the policy to be looked at", || async {
            (t.store_requests("GET").await > lists).then_some(())
        })
        .await;
        // ... and made no write: every write since the policy is the held one's status and Event.
        let since: Vec<String> = t.writes().split_off(writes_before);
        assert!(!since.is_empty());
        for w in &since {
            assert!(w == "patch apitokens wide" || (w.starts_with("create events wide.") || w.starts_with("patch events wide.")), "a write not about the held ApiToken: {w} in {since:?}");
        }
        let changes_after = t.store_requests("PUT").await + t.store_requests("PATCH").await + t.store_requests("DELETE").await;
        assert_eq!(changes_after, changes, "no store write under Report");
        assert!(t.active(&inside).await);

        // A new ApiToken the policy does not allow gets nothing: no Secret, no registration.
        t.apply_ok(&token_yaml("late", "  scopes: [settings:read]\n"));
        let late = t.wait_until("late", "PolicyViolation", stalled_by_policy).await;
        let regs = t.registrations(&format!("ownerUid={}", late.metadata.uid.clone().unwrap_or_default())).await;
        assert!(regs.is_empty(), "{regs:?}");
        let secrets: Api<Secret> = Api::namespaced(t.cp.client.clone(), &ns);
        assert!(secrets.get_opt("late").await.unwrap().is_none());

        // Revoke: the held ApiToken's token stops working; the other's does not.
        t.policy(&name, json!({"allowedScopes": ["orders:*"], "enforcement": "Revoke"}));
        eventually(60, "the held token to be revoked", || async { (!t.active(&wide).await).then_some(()) }).await;
        let held = t.wait_until("wide", "the Revoke message", |t| condition(t, "Stalled").2.contains("enforcement Revoke")).await;
        assert!(stalled_by_policy(&held));
        assert!(t.active(&inside).await);

        // Allowed again: Ready with a new token (the old one stays revoked).
        t.policy(&name, json!({"allowedScopes": ["orders:*", "payments:read", "settings:read"], "enforcement": "Revoke"}));
        t.wait_ready("wide").await;
        t.wait_ready("late").await;
        let renewed = t.secret_token("wide").await;
        assert_ne!(renewed, wide);
        assert!(t.active(&renewed).await && !t.active(&wide).await);

        t.delete_policies(&[&name]);
    })
    .await;
}

/// A tenant (a ServiceAccount with every right in its namespace) cannot create, edit or delete
/// ApiTokenPolicies.
#[tokio::test]
async fn a_tenant_cannot_change_policies() {
    with_namespace("tenancy-rbac", |cp, ns| async move {
        support::install_crd(&cp).await;
        cp.kubectl_ok(&["create", "serviceaccount", "tenant", "-n", &ns]);
        let all = "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: everything}\nrules: [{apiGroups: ['*'], resources: ['*'], verbs: ['*']}]\n";
        cp.kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], Some(all));
        cp.kubectl_ok(&["create", "rolebinding", "tenant-everything", "-n", &ns, "--role=everything", &format!("--serviceaccount={ns}:tenant")]);
        let who = format!("system:serviceaccount:{ns}:tenant");
        let name = format!("{ns}-guard");
        let policy = json!({"apiVersion": "loop.dev/v1alpha1", "kind": "ApiTokenPolicy",
            "metadata": {"name": name},
            // Selecting no namespace: the other tests run at the same time, in namespaces of their own.
            "spec": {"namespaceSelector": {"matchLabels": {"loop.dev/no-such-label": "x"}}, "allowedScopes": []}})
        .to_string();
        // The tenant may do anything in its namespace (create Secrets, ApiTokens) ...
        let (ok, err) = kubectl_as(
            &cp,
            &who,
            &["create", "secret", "generic", "s", "-n", &ns],
            None,
        );
        assert!(ok, "{err}");
        // ... but may not create a policy, ...
        let (ok, err) = kubectl_as(&cp, &who, &["create", "-f", "-"], Some(&policy));
        assert!(!ok && err.contains("forbidden"), "{err}");
        // ... nor edit or delete one that exists.
        cp.kubectl_stdin(&["create", "-f", "-"], Some(&policy));
        for args in [
            vec![
                "patch",
                "apitokenpolicy",
                &name,
                "--type=merge",
                "-p",
                r#"{"spec":{"allowedScopes":["payments:*"]}}"#,
            ],
            vec!["label", "apitokenpolicy", &name, "x=y"],
            vec!["delete", "apitokenpolicy", &name],
        ] {
            let (ok, err) = kubectl_as(&cp, &who, &args, None);
            assert!(!ok && err.contains("forbidden"), "{args:?}: {err}");
        }
        let still = cp.kubectl_ok(&[
            "get",
            "apitokenpolicy",
            &name,
            "-o",
            "jsonpath={.spec.allowedScopes}",
        ]);
        assert_eq!(still, "[]");
        cp.kubectl_ok(&["delete", "apitokenpolicy", &name]);
    })
    .await;
}

/// `examples/tenancy.yaml` works as its comments say: the policy governs a namespace labelled
/// `team=growth`, its ApiToken is issued there, and a scope it does not allow is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenancy_example_works() {
    with_namespace("tenancy-example", |cp, ns| async move {
        let t = tenant(cp, ns).await;
        let ns = t.ns.clone();
        let _operator = OperatorProcess::builder(&t.cp, &t.store, &ns).start();
        let file = support::repo_root().join("examples/tenancy.yaml");
        let file = file.to_str().unwrap_or_default();
        // The policy is cluster-scoped: kubectl applies it without the namespace.
        t.cp.kubectl_ok(&["label", "namespace", &ns, "team=growth"]);
        t.kubectl(&["apply", "-f", file]);
        t.wait_ready("growth-crm-sync").await;
        assert!(t.active(&t.secret_token("growth-crm-sync").await).await);
        t.apply_ok(&token_yaml("payments", "  scopes: [payments:read]\n"));
        let held = t
            .wait_until("payments", "PolicyViolation", stalled_by_policy)
            .await;
        assert!(condition(&held, "Stalled").2.starts_with(&format!(
            "scope payments:read not allowed in namespace {ns} by ApiTokenPolicy growth-team"
        )));
        t.delete_policies(&["growth-team"]);
    })
    .await;
}

/// The fingerprint in an ApiToken's status.
fn fingerprint(t: &ApiToken) -> String {
    t.status
        .as_ref()
        .and_then(|s| s.fingerprint.clone())
        .unwrap_or_default()
}

/// With the store gone for good, deleting an ApiToken, or its whole namespace, waits and says
/// why; `loop.dev/abandon-revocation` lets it go, with a Warning naming the tokens that stay
/// active (about the ApiToken, or about the namespace while it is being deleted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_escape_hatch_lets_a_namespace_go_when_the_store_is_gone() {
    with_namespace("tenancy-gone", |cp, ns| async move {
        let mut t = tenant(cp, ns).await;
        let ns = t.ns.clone();
        let _operator = OperatorProcess::builder(&t.cp, &t.store, &ns).start();
        for name in ["single", "a", "b"] {
            t.apply_ok(&token_yaml(name, "  scopes: [orders:read]\n"));
        }
        let single = fingerprint(&t.wait_ready("single").await);
        let (a, b) = (fingerprint(&t.wait_ready("a").await), fingerprint(&t.wait_ready("b").await));
        let held = [t.secret_token("single").await, t.secret_token("a").await, t.secret_token("b").await];
        t.store.kill();

        // One ApiToken: waits, says why and how out; the annotation lets it go.
        t.kubectl(&["delete", "apitoken", "single", "--wait=false"]);
        let waiting = t.wait_until("single", "RevocationPending", |t| condition(t, "Reconciling").1 == "RevocationPending").await;
        assert!(condition(&waiting, "Reconciling").2.contains("loop.dev/abandon-revocation"));
        t.kubectl(&["annotate", "apitoken", "single", "loop.dev/abandon-revocation=store decommissioned"]);
        let tokens = t.tokens();
        eventually(60, "apitoken/single to go", || async { tokens.get_opt("single").await.ok().flatten().is_none().then_some(()) }).await;
        let events = t.kubectl(&["get", "events", "--field-selector", "reason=RevocationAbandoned", "-o", "json"]);
        assert!(events.contains(&single) && events.contains("store decommissioned") && events.contains("\"Warning\""), "{events}");

        // The namespace: Terminating, held by the finalizer of the others, and saying so.
        t.cp.kubectl_ok(&["delete", "namespace", &ns, "--wait=false"]);
        let why = eventually(90, "the namespace to say what holds it", || async {
            let c = t.cp.kubectl_ok(&["get", "namespace", &ns, "-o", "jsonpath={.status.conditions[?(@.type==\"NamespaceFinalizersRemaining\")].message}"]);
            c.contains("loop.dev/revoke").then_some(c)
        })
        .await;
        assert!(why.contains("loop.dev/revoke"), "{why}");
        for name in ["a", "b"] {
            t.wait_until(name, "RevocationPending", |t| condition(t, "Reconciling").1 == "RevocationPending").await;
            t.kubectl(&["annotate", "apitoken", name, "loop.dev/abandon-revocation=store decommissioned"]);
        }
        eventually(120, "the namespace to be deleted", || async {
            let out = t.cp.kubectl(&["get", "namespace", &ns]);
            (!out.status.success()).then_some(())
        })
        .await;
        // Kubernetes creates nothing in a namespace being deleted: the Warning is about the
        // namespace, in `default`.
        let about = eventually(60, "the Warning about the namespace", || async {
            let out = t.cp.kubectl_ok(&["get", "events", "-n", "default", "--field-selector", &format!("involvedObject.kind=Namespace,involvedObject.name={ns}"), "-o", "json"]);
            (out.contains(&a) && out.contains(&b)).then_some(out)
        })
        .await;
        assert!(about.contains("RevocationAbandoned") && about.contains("\"Warning\""), "{about}");
        // As the Warnings say, the tokens stay active: the store, back on its data, still
        // answers for them.
        t.store = start_store(t._data.path());
        for token in &held {
            assert!(t.active(token).await, "an abandoned token is still registered");
        }
    })
    .await;
}

/// `deletionPolicy: Orphan`: deleting the ApiToken keeps its token working and its Secret;
/// applying it again adopts both (the same token, one registration); deleting the namespace
/// with the default `Revoke` revokes every token in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_keeps_the_token_for_the_next_apitoken_of_that_name() {
    with_namespace("tenancy-orphan", |cp, ns| async move {
        let t = tenant(cp, ns).await;
        let ns = t.ns.clone();
        let _operator = OperatorProcess::builder(&t.cp, &t.store, &ns).start();
        let keep = token_yaml("keep", "  scopes: [orders:read]\n  deletionPolicy: Orphan\n");
        t.apply_ok(&keep);
        let first = t.wait_ready("keep").await;
        let token = t.secret_token("keep").await;
        let first_uid = first.metadata.uid.clone().unwrap_or_default();

        t.kubectl(&["delete", "apitoken", "keep", "--timeout=90s"]);
        let secrets: Api<Secret> = Api::namespaced(t.cp.client.clone(), &ns);
        let left = secrets.get("keep").await.expect("the Secret stays");
        assert!(left.metadata.owner_references.clone().unwrap_or_default().is_empty(), "{:?}", left.metadata.owner_references);
        assert_eq!(left.metadata.annotations.clone().unwrap_or_default().get("loop.dev/orphaned-from"), Some(&first_uid));
        assert!(t.active(&token).await, "the token stays active");
        assert!(t.kubectl(&["get", "events", "-o", "json"]).contains("Orphaned"));

        // Applied again: adopted, not minted.
        t.apply_ok(&keep);
        let second = t.wait_ready("keep").await;
        assert_ne!(second.metadata.uid, first.metadata.uid);
        assert_eq!(t.secret_token("keep").await, token, "the same token");
        let all = t.registrations(&format!("namespace={ns}")).await;
        assert_eq!(all.len(), 1, "one registration: {all:?}");
        assert_eq!(all[0]["owner"]["uid"], second.metadata.uid.clone().unwrap_or_default().as_str());
        let owned = secrets.get("keep").await.unwrap();
        assert!(owned.metadata.owner_references.unwrap_or_default().iter().any(|r| Some(&r.uid) == second.metadata.uid.as_ref() && r.controller == Some(true)));
        assert!(!owned.metadata.annotations.unwrap_or_default().contains_key("loop.dev/orphaned-from"));
        assert!(t.kubectl(&["get", "events", "-o", "json"]).contains("Adopted"));

        // The namespace goes: Orphan revokes there too (the Secret goes with the namespace),
        // and so does the default Revoke. (A finalizer of the test's keeps the Secret while the
        // ApiToken is deleted, so the operator finds it and must still not orphan the token.)
        t.apply_ok(&token_yaml("plain", "  scopes: [orders:read]\n"));
        t.wait_ready("plain").await;
        let plain = t.secret_token("plain").await;
        t.kubectl(&["patch", "secret", "keep", "--type=merge", "-p", r#"{"metadata":{"finalizers":["loop.dev/test-hold"]}}"#]);
        t.cp.kubectl_ok(&["delete", "namespace", &ns, "--wait=false"]);
        let tokens = t.tokens();
        eventually(120, "apitoken/keep to go", || async { tokens.get_opt("keep").await.ok().flatten().is_none().then_some(()) }).await;
        assert!(secrets.get_opt("keep").await.unwrap().is_some(), "the Secret is still there");
        assert!(!t.active(&token).await, "Orphan revokes in a namespace being deleted");
        t.kubectl(&["patch", "secret", "keep", "--type=json", "-p", r#"[{"op":"remove","path":"/metadata/finalizers"}]"#]);
        eventually(120, "the namespace to be deleted", || async {
            (!t.cp.kubectl(&["get", "namespace", &ns]).status.success()).then_some(())
        })
        .await;
        assert!(!t.active(&token).await && !t.active(&plain).await, "every token in the namespace is revoked");
        let active = t.registrations(&format!("namespace={ns}&active=true")).await;
        assert!(active.is_empty(), "{active:?}");
    })
    .await;
}

/// Completed sweeps, from the operator's metrics.
async fn sweeps(operator: &OperatorProcess) -> f64 {
    operator
        .metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix("loop_operator_sweeps_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Issue 25: a revocation that was lost (a restore of the store's database from before it, a
/// failover to a standby that had not received it) brings back a registration whose ApiToken
/// is gone, and nothing revoked it again. The sweep does: the store's active registrations of
/// this cluster that no live ApiToken owns and no Secret of the operator holds are revoked;
/// a live ApiToken's, an orphan's (`deletionPolicy: Orphan`) and another cluster's stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_revokes_registrations_that_nothing_accounts_for() {
    with_namespace("tenancy-sweep", |cp, ns| async move {
        let t = tenant(cp, ns).await;
        let ns = t.ns.clone();
        let register = |id: &'static str, cluster: &'static str| {
            let token = loop_token_operator::token::Token::mint().unwrap();
            let body = json!({
                "hash": token.hash().as_str(), "name": id, "scopes": ["orders:read"],
                "owner": {"cluster": cluster, "namespace": ns.clone(), "name": id, "uid": format!("uid-{id}")},
            });
            (token, body)
        };
        let (lost, body) = register("restored", "e2e");
        t.store_call(Method::PUT, "/v1/tokens/restored", Some(ADMIN), Some(body)).await;
        let (foreign, body) = register("foreign", "another-cluster");
        t.store_call(Method::PUT, "/v1/tokens/foreign", Some(ADMIN), Some(body)).await;
        assert!(t.active(lost.expose()).await && t.active(foreign.expose()).await);

        let operator = OperatorProcess::builder(&t.cp, &t.store, &ns)
            .args(&["--sweep-interval", "1s"])
            .start();
        t.apply_ok(&token_yaml("live", "  scopes: [orders:read]\n"));
        t.wait_ready("live").await;
        let live = t.secret_token("live").await;
        t.apply_ok(&token_yaml("keep", "  scopes: [orders:read]\n  deletionPolicy: Orphan\n"));
        t.wait_ready("keep").await;
        let orphan = t.secret_token("keep").await;
        t.kubectl(&["delete", "apitoken", "keep", "--timeout=90s"]);
        assert!(t.active(&orphan).await, "the orphan's token stays registered");

        eventually(120, "the sweep to revoke the restored registration", || async {
            (!t.active(lost.expose()).await).then_some(())
        })
        .await;
        // Two more whole sweeps after the orphan was left behind: the others still stand.
        let done = sweeps(&operator).await;
        eventually(120, "two more sweeps", || async {
            (sweeps(&operator).await >= done + 2.0).then_some(())
        })
        .await;
        assert!(t.active(&live).await, "a live ApiToken's token stays");
        assert!(t.active(&orphan).await, "an orphan's token stays");
        assert!(t.active(foreign.expose()).await, "another cluster's token is not ours to judge");
        let events = t
            .store_call(Method::GET, "/v1/tokens/restored/events", Some(ADMIN), None)
            .await;
        let last = events["items"].as_array().and_then(|e| e.last()).cloned().unwrap_or_default();
        assert_eq!((last["kind"].as_str(), last["reason"].as_str()), (Some("revoked"), Some("deleted")), "{events}");
        assert!(operator.logged("revoked a registration whose ApiToken no longer exists"));
    })
    .await;
}
