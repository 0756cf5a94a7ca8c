//! The token's consumers, on the real API server (with its deployment and replicaset
//! controllers, and no kubelet: pods stay Pending) with a real store and a real operator:
//! rollout targets restarted exactly once per new token (counted in the API server's audit
//! log), `retire: AfterRollout` revoking the previous token as soon as the rollout completes
//! and never later than its grace period, a missing target, and the Secret's labels,
//! annotations and rendered keys.

use crate::operator_e2e::{Env, ready, reason, start_store_with};
use crate::support;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use loop_token_operator::operator::resource::crd::{ApiToken, RolloutState};
use serde_json::Value;
use support::operator::OperatorProcess;
use support::{ControlPlane, eventually, with_namespace};

async fn env(cp: ControlPlane, ns: String) -> Env {
    support::install_crd(&cp).await;
    let data = tempfile::tempdir().unwrap();
    let store = start_store_with(data.path(), None, &[]);
    let operator = OperatorProcess::builder(&cp, &store, &ns).start();
    Env {
        cp,
        ns,
        store,
        operator,
        data,
    }
}

/// A Deployment whose pods never start (there is no kubelet) unless `replicas` is 0.
fn create_deployment(e: &Env, name: &str, replicas: u32) {
    let yaml = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  \
         selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    \
         spec: {{containers: [{{name: app, image: registry.invalid/app:1}}]}}\n"
    );
    let out =
        e.cp.kubectl_stdin(&["create", "-n", &e.ns, "-f", "-"], Some(&yaml));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An ApiToken with this rollout (and any other spec lines).
fn token(name: &str, scopes: &str, spec: &str) -> String {
    format!(
        "apiVersion: loop.dev/v1alpha1\nkind: ApiToken\nmetadata:\n  name: {name}\nspec:\n  scopes: [{scopes}]\n{spec}"
    )
}

fn states(t: &ApiToken) -> Vec<RolloutState> {
    t.status
        .as_ref()
        .map(|s| s.rollout.iter().map(|r| r.state).collect())
        .unwrap_or_default()
}

fn fingerprint(t: &ApiToken) -> String {
    t.status
        .as_ref()
        .and_then(|s| s.fingerprint.clone())
        .unwrap_or_default()
}

use support::rolled_out;

/// Accepted writes in the namespace, as the API server's audit log records them, of this
/// resource and name, and this verb.
fn audited(e: &Env, resource: &str, name: &str, verb: Option<&str>) -> usize {
    let audit = e.cp.state_dir.join("logs/audit.log");
    let text = std::fs::read_to_string(&audit).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            let o = &v["objectRef"];
            o["namespace"] == e.ns.as_str()
                && o["resource"] == resource
                && o["name"] == name
                && o["subresource"].is_null()
                && v["stage"] == "ResponseComplete"
                && v["responseStatus"]["code"]
                    .as_i64()
                    .is_some_and(|c| c < 300)
                && verb.is_none_or(|verb| v["verb"] == verb)
                && !matches!(v["verb"].as_str(), Some("get" | "list" | "watch"))
        })
        .count()
}

/// Pod template patches of the Deployment `name`.
fn restarts(e: &Env, name: &str) -> usize {
    audited(e, "deployments", name, Some("patch"))
}

async fn restart_annotation(e: &Env, deployment: &str, token: &str) -> Option<String> {
    let api: Api<Deployment> = Api::namespaced(e.cp.client.clone(), &e.ns);
    let d = api.get(deployment).await.unwrap();
    d.spec
        .template
        .metadata?
        .annotations?
        .get(&format!("loop.dev/restarted-for.{token}"))
        .cloned()
}

/// Reconciles the operator has finished.
async fn reconciles(op: &OperatorProcess) -> f64 {
    op.metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("loop_operator_reconciles_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Stop the operator and start a new one; return once it has reconciled `n` times.
async fn restart_operator(e: &mut Env, n: f64) {
    e.operator.terminate();
    e.operator = OperatorProcess::builder(&e.cp, &e.store, &e.ns).start();
    let op = &e.operator;
    eventually(90, "the new operator to reconcile", || async {
        (reconciles(op).await >= n).then_some(())
    })
    .await;
}

fn warnings(e: &Env, reason: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(&e.events()).unwrap_or(Value::Null);
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|ev| ev["reason"] == reason && ev["type"] == "Warning")
        .filter_map(|ev| ev["message"].as_str().map(str::to_owned))
        .collect()
}

/// Exactly one pod template patch per target per rotation: none on first issue, on an
/// operator restart or on a scope edit; the same value after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_target_is_restarted_exactly_once_per_rotation() {
    with_namespace("rollout-once", |cp, ns| async move {
        let mut e = env(cp, ns).await;
        create_deployment(&e, "shop", 0);
        create_deployment(&e, "worker", 0);
        let rollout = "  rollout:\n    targets: [{kind: Deployment, name: shop}, {kind: Deployment, name: worker}]\n";
        e.apply(&token("shop-token", "orders:read", rollout));
        e.wait_until("shop-token", "a first token, rolled out", rolled_out)
            .await;
        let counts = |e: &Env| (restarts(e, "shop"), restarts(e, "worker"));
        assert_eq!(counts(&e), (0, 0), "a first token restarts nothing");

        restart_operator(&mut e, 1.0).await;
        e.apply(&token("shop-token", "orders:read, customers:read", rollout));
        e.wait_until("shop-token", "the scope edit", |t| {
            ready(t) && t.status.as_ref().and_then(|s| s.observed_generation) == Some(2)
        })
        .await;
        assert_eq!(counts(&e), (0, 0), "an operator restart or a scope edit restarts nothing");

        for (round, value) in ["r1", "r2"].into_iter().enumerate() {
            e.kubectl(&["annotate", "--overwrite", "apitoken/shop-token", &format!("loop.dev/rotate={value}")]);
            let t = e.wait_rotated("shop-token", value).await;
            let fp = fingerprint(&t);
            let want = fp.clone();
            e.wait_until("shop-token", "the rollout of the new token", move |t| {
                rolled_out(t) && fingerprint(t) == want
            })
            .await;
            let n = round + 1;
            assert_eq!(counts(&e), (n, n), "one restart per target for rotation {value}");
            for d in ["shop", "worker"] {
                assert_eq!(restart_annotation(&e, d, "shop-token").await.as_deref(), Some(fp.as_str()));
            }
            restart_operator(&mut e, 1.0).await;
            assert_eq!(counts(&e), (n, n), "an operator restart writes the same value again: nothing");
        }
    })
    .await;
}

/// `retire: AfterRollout`: a rollout that completes (`replicas: 0`) retires the previous token
/// at once; one that never completes (pods never available) leaves it active until its grace
/// period ends, and the ApiToken says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_rollout_retires_the_previous_token_early_and_the_grace_period_caps_it() {
    with_namespace("rollout-retire", |cp, ns| async move {
        let e = env(cp, ns).await;
        create_deployment(&e, "fast", 0);
        create_deployment(&e, "stuck", 1);
        let spec = |target: &str, grace: &str| {
            format!(
                "  rotation: {{gracePeriod: {grace}}}\n  rollout:\n    retire: AfterRollout\n    targets: [{{kind: Deployment, name: {target}}}]\n"
            )
        };
        e.apply(&token("fast-token", "orders:read", &spec("fast", "1h")));
        e.apply(&token("stuck-token", "orders:read", &spec("stuck", "30s")));
        e.wait_ready("fast-token");
        e.wait_ready("stuck-token");
        let fast_old = e.secret_token("fast-token").await;
        let fast_old_id = e.get("fast-token").await.status.and_then(|s| s.token_id).unwrap_or_default();
        let stuck_old = e.secret_token("stuck-token").await;

        for name in ["fast-token", "stuck-token"] {
            e.kubectl(&["annotate", &format!("apitoken/{name}"), "loop.dev/rotate=r1"]);
        }
        // Complete: the old token goes right after the rollout, far inside its hour of grace.
        let started = std::time::Instant::now();
        eventually(60, "the previous token to be revoked after the rollout", || async {
            (e.introspect(&fast_old).await["active"] == false).then_some(())
        })
        .await;
        assert!(started.elapsed().as_secs() < 60);
        let t = e.wait_until("fast-token", "no previous token left", |t| {
            rolled_out(t) && t.status.as_ref().is_some_and(|s| s.previous_tokens.is_empty())
        })
        .await;
        assert_eq!(e.introspect(&e.secret_token("fast-token").await).await["active"], true);
        assert!(t.status.is_some_and(|s| !s.rollout[0].fingerprint.is_empty()));
        // The store's audit trail: revoked as the end of a rotation.
        let (status, trail) = e
            .store
            .call(reqwest::Method::GET, &format!("/v1/tokens/{fast_old_id}/events"), Some(support::store::ADMIN), None)
            .await;
        assert_eq!(status, 200, "{trail}");
        let revoked: Vec<&Value> = trail["items"].as_array().into_iter().flatten().filter(|ev| ev["kind"] == "revoked").collect();
        assert_eq!(revoked.len(), 1, "{trail}");
        assert_eq!(revoked[0]["reason"], "rotation");

        // Never complete: the ApiToken says it waits for the rollout; the old token works.
        let t = e
            .wait_until("stuck-token", "the rollout in progress", |t| {
                ready(t)
                    && reason(t, "Reconciling").as_deref() == Some("RolloutInProgress")
                    && t.status.as_ref().and_then(|s| s.last_rotation_request.as_deref()) == Some("r1")
            })
            .await;
        assert_eq!(states(&t), [RolloutState::Pending]);
        let message = t
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Reconciling"))
            .map(|c| c.message.clone())
            .unwrap_or_default();
        assert!(message.contains("Deployment stuck"), "{message}");
        assert_eq!(t.status.as_ref().map(|s| s.previous_tokens.len()), Some(1));
        assert_eq!(e.introspect(&stuck_old).await["active"], true, "kept while the rollout runs");
        // ... until its grace period ends, with a Warning naming the target.
        eventually(90, "the grace period to end", || async {
            (e.introspect(&stuck_old).await["active"] == false).then_some(())
        })
        .await;
        let e = &e;
        let notes = eventually(30, "a RolloutIncomplete warning", || async move {
            let w = warnings(e, "RolloutIncomplete");
            (!w.is_empty()).then_some(w)
        })
        .await;
        assert!(notes[0].contains("Deployment stuck"), "{notes:?}");
    })
    .await;
}

/// A missing target: a clear condition and a Warning, no crash; created later, it is picked up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_target_is_reported_and_picked_up_when_created() {
    with_namespace("rollout-missing", |cp, ns| async move {
        let e = env(cp, ns).await;
        let rollout = "  rollout:\n    targets: [{kind: Deployment, name: later}]\n";
        e.apply(&token("late-token", "orders:read", rollout));
        let t = e
            .wait_until("late-token", "the missing target", |t| {
                ready(t) && reason(t, "Reconciling").as_deref() == Some("RolloutTargetMissing")
            })
            .await;
        assert_eq!(states(&t), [RolloutState::Missing]);
        let e = &e;
        eventually(30, "a RolloutTargetMissing warning", || async move {
            (!warnings(e, "RolloutTargetMissing").is_empty()).then_some(())
        })
        .await;
        assert!(
            e.operator
                .metrics()
                .await
                .contains("loop_operator_reconciles_total"),
            "the operator is up"
        );

        create_deployment(e, "later", 0);
        e.wait_until("late-token", "the target to be picked up", |t| {
            rolled_out(t) && reason(t, "Reconciling").is_none()
        })
        .await;
        assert_eq!(restarts(e, "later"), 0, "it started with the current token");
    })
    .await;
}

fn data(s: &Secret, key: &str) -> Option<String> {
    s.data
        .as_ref()?
        .get(key)
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
}

/// Labels, annotations and rendered keys land with the token, change with it in one write, and
/// go when the spec drops them, while a label added by someone else stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_gets_labels_annotations_and_rendered_keys() {
    with_namespace("secret-shape", |cp, ns| async move {
        let e = env(cp, ns).await;
        let shaped = "  secret:\n    labels: {team: shop}\n    annotations: {reloader.stakater.com/match: \"true\"}\n    \
                      template:\n      .env: \"LOOP_TOKEN=${token}\\nLOOP_TOKEN_ID=${tokenId}\\n\"\n";
        e.apply(&token("shaped", "orders:read", shaped));
        e.wait_ready("shaped");
        let secrets: Api<Secret> = Api::namespaced(e.cp.client.clone(), &e.ns);
        let s = secrets.get("shaped").await.unwrap();
        let tok = data(&s, "token").unwrap_or_default();
        let id = e.get("shaped").await.status.and_then(|s| s.token_id).unwrap_or_default();
        assert_eq!(data(&s, ".env"), Some(format!("LOOP_TOKEN={tok}\nLOOP_TOKEN_ID={id}\n")));
        let labels = s.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("team").map(String::as_str), Some("shop"));
        let annotations = s.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(annotations.get("reloader.stakater.com/match").map(String::as_str), Some("true"));

        // A rotation: the new token and its rendering, in one write.
        e.kubectl(&["label", "secret/shaped", "replicator/sync=yes"]);
        let writes = audited(&e, "secrets", "shaped", None);
        e.kubectl(&["annotate", "apitoken/shaped", "loop.dev/rotate=r1"]);
        e.wait_rotated("shaped", "r1").await;
        assert_eq!(audited(&e, "secrets", "shaped", None), writes + 1, "one write per rotation");
        let s = secrets.get("shaped").await.unwrap();
        let new = data(&s, "token").unwrap_or_default();
        assert_ne!(new, tok);
        assert!(data(&s, ".env").is_some_and(|v| v.starts_with(&format!("LOOP_TOKEN={new}\n"))));
        // Nowhere else: not in the status or the events.
        let status = serde_json::to_string(&e.get("shaped").await.status).unwrap_or_default();
        assert!(!status.contains(&new) && !e.events().contains(&new));
        assert!(!e.operator.log_text().contains(&new), "a token in the operator's log");

        // The spec drops the label and the template and edits the annotation.
        let edited = "  secret:\n    annotations: {reloader.stakater.com/match: \"false\"}\n";
        e.apply(&token("shaped", "orders:read", edited));
        let s = eventually(60, "the Secret to follow the spec", || async {
            let s = secrets.get("shaped").await.ok()?;
            let a = s.metadata.annotations.clone().unwrap_or_default();
            let gone = !s.metadata.labels.clone().unwrap_or_default().contains_key("team")
                && data(&s, ".env").is_none();
            (gone && a.get("reloader.stakater.com/match").map(String::as_str) == Some("false"))
                .then_some(s)
        })
        .await;
        let labels = s.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("replicator/sync").map(String::as_str), Some("yes"), "a foreign label stays");
        assert_eq!(data(&s, "token"), Some(new), "an edit does not rotate");
    })
    .await;
}

/// StatefulSets and DaemonSets are restarted and followed too (`replicas: 0`, and a node
/// selector that no node matches for the DaemonSet, as the cluster may have a node: both
/// complete once their controller has seen the change).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateful_sets_and_daemon_sets_are_restarted_and_followed() {
    with_namespace("rollout-kinds", |cp, ns| async move {
        let e = env(cp, ns).await;
        let pod = "  template:\n    metadata: {labels: {app: x}}\n    spec: {containers: [{name: app, image: registry.invalid/app:1}]}\n";
        let sts = format!("apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: db}}\nspec:\n  replicas: 0\n  serviceName: db\n  selector: {{matchLabels: {{app: x}}}}\n{pod}");
        let ds_pod = pod.replace("spec: {containers:", "spec: {nodeSelector: {loop.dev/no-such-node: \"true\"}, containers:");
        let ds = format!("apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: agent}}\nspec:\n  selector: {{matchLabels: {{app: x}}}}\n{ds_pod}");
        for yaml in [sts, ds] {
            let out = e.cp.kubectl_stdin(&["create", "-n", &e.ns, "-f", "-"], Some(&yaml));
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        let rollout = "  rollout:\n    targets: [{kind: StatefulSet, name: db}, {kind: DaemonSet, name: agent}]\n";
        e.apply(&token("kinds", "orders:read", rollout));
        e.wait_until("kinds", "a first token, rolled out", rolled_out).await;
        e.kubectl(&["annotate", "apitoken/kinds", "loop.dev/rotate=r1"]);
        let t = e.wait_rotated("kinds", "r1").await;
        let want = fingerprint(&t);
        e.wait_until("kinds", "the rollout of the new token", move |t| rolled_out(t) && fingerprint(t) == want)
            .await;
        assert_eq!(
            (audited(&e, "statefulsets", "db", Some("patch")), audited(&e, "daemonsets", "agent", Some("patch"))),
            (1, 1)
        );
    })
    .await;
}
