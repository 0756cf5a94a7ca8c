//! Flux, for real: source-controller and kustomize-controller (built from Flux's Go modules by
//! `scripts/gitops-tools`) run as processes against the control plane, read a Git repository
//! served on loopback (`git http-backend`), and apply the Kustomization that `docs/gitops.md`
//! shows. A token's whole life is then driven by commits alone. kustomize-controller judges
//! health with kstatus, so this also proves the ApiToken's conditions to kstatus itself.

use crate::support;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use loop_token_operator::operator::resource::crd::ApiToken;
use serde_json::{Value, json};
use support::docs::{marked_block, marked_yaml};
use support::flux::Flux;
use support::git::GitServer;
use support::operator::OperatorProcess;
use support::store::{StoreProcess, sqlite_args};
use support::{ControlPlane, eventually, with_namespace};

const DOC: &str = "docs/gitops.md";
/// The name of the doc's Kustomization.
const DOC_KUSTOMIZATION: &str = "integrations";
const KUSTOMIZATION: &str = "examples/gitops/kustomization.yaml";
const TOKENS: &str = "examples/gitops/apitokens.yaml";
const PROBE_KUSTOMIZATION: &str = "kstatus/kustomization.yaml";
const PROBE: &str = "kstatus/probe.yaml";
/// The value of `loop.dev/rotate` in the doc's Kustomize patch.
const ROTATE: &str = "2026-12-01T09:00:00Z";
/// How long Flux and the operator get for each step (the health check polls every 5 s).
const STEP: u64 = 180;

struct Env {
    cp: ControlPlane,
    ns: String,
    repo: GitServer,
    flux: Flux,
}

/// The condition `type_` of an object's status: (status, reason, message).
fn condition(obj: &Value, type_: &str) -> Option<(String, String, String)> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            (s("status"), s("reason"), s("message"))
        })
}

impl Env {
    fn apply(&self, yaml: &str) {
        self.cp.apply_ok_in(&self.ns, yaml);
    }

    async fn kustomization(&self, name: &str) -> Value {
        let gvk = GroupVersionKind::gvk("kustomize.toolkit.fluxcd.io", "v1", "Kustomization");
        let ar = ApiResource::from_gvk_with_plural(&gvk, "kustomizations");
        let api: Api<DynamicObject> = Api::namespaced_with(self.cp.client.clone(), &self.ns, &ar);
        let k = api
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("get kustomization/{name}: {e}"));
        serde_json::to_value(k).unwrap_or_default()
    }

    /// Ask source-controller to fetch the repository now (what `flux reconcile source git`
    /// does), instead of waiting for the GitRepository's interval.
    fn request_sync(&self, commit: &str) {
        self.cp.kubectl_ok(&[
            "annotate",
            "--overwrite",
            "-n",
            &self.ns,
            "gitrepository/platform",
            &format!("reconcile.fluxcd.io/requestedAt={commit}"),
        ]);
    }

    /// Commit, ask for a sync, and return the commit's revision as Flux names it.
    fn commit(&self, files: &[(&str, Option<&str>)], message: &str) -> String {
        let sha = self.repo.commit(files, message);
        self.request_sync(&sha);
        format!("main@sha1:{sha}")
    }

    /// Wait until the Kustomization has applied `revision` and is Ready (with `wait: true`:
    /// every object it applied is healthy by kstatus).
    async fn wait_applied(&self, name: &str, revision: &str) -> Value {
        let what = format!("kustomization/{name} to be Ready at {revision}");
        let k = eventually(STEP, &what, || async {
            let k = self.kustomization(name).await;
            let ready = condition(&k, "Ready").is_some_and(|(s, _, _)| s == "True");
            (ready && k["status"]["lastAppliedRevision"] == revision).then_some(k)
        })
        .await;
        assert_eq!(
            k["status"]["observedGeneration"], k["metadata"]["generation"],
            "{k}"
        );
        k
    }

    fn tokens(&self) -> Api<ApiToken> {
        Api::namespaced(self.cp.client.clone(), &self.ns)
    }

    async fn token(&self, name: &str) -> ApiToken {
        self.tokens()
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("get apitoken/{name}: {e}"))
    }

    async fn secret_token(&self, name: &str) -> String {
        let api: Api<Secret> = Api::namespaced(self.cp.client.clone(), &self.ns);
        let s = api
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("get secret/{name}: {e}"));
        let data = s.data.unwrap_or_default();
        String::from_utf8(data["token"].0.clone()).unwrap()
    }
}

fn ready(t: &ApiToken) -> bool {
    t.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// The doc's Kustomization, in the test's namespace (and applying into it: `targetNamespace`
/// overrides the `namespace: integrations` of examples/gitops); everything else as written.
fn doc_kustomization(ns: &str) -> String {
    let mut k = marked_yaml(DOC, "flux-kustomization");
    assert_eq!(k["metadata"]["name"], DOC_KUSTOMIZATION);
    assert_eq!(k["spec"]["prune"], true, "the doc's Kustomization prunes");
    assert_eq!(k["spec"]["wait"], true, "the doc's Kustomization waits");
    k["metadata"]["namespace"] = json!(ns);
    k["spec"]["targetNamespace"] = json!(ns);
    k.to_string()
}

fn git_repository(url: &str) -> String {
    json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "GitRepository",
        "metadata": {"name": "platform"},
        "spec": {"interval": "10m", "url": url, "ref": {"branch": "main"}},
    })
    .to_string()
}

fn example(file: &str) -> String {
    let path = support::repo_root().join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Commit, push and sync: a token's whole life from Git alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flux_drives_a_tokens_whole_life_from_git() {
    with_namespace("flux", |cp, ns| async move {
        support::install_crd(&cp).await;
        let repo = GitServer::start().await;
        let flux = Flux::start(&cp, &ns).await;
        let e = Env { cp, ns, repo, flux };
        let data = tempfile::tempdir().unwrap();
        let store = start_store(data.path());

        // Step 1: commit the examples' ApiTokens. Flux applies them; with `wait: true` the
        // Kustomization is not Ready while no operator has issued them.
        let (kust, tokens) = (example(KUSTOMIZATION), example(TOKENS));
        let sha = e.repo.commit(
            &[(KUSTOMIZATION, Some(&kust)), (TOKENS, Some(&tokens))],
            "the examples' ApiTokens",
        );
        let first_commit = format!("main@sha1:{sha}");
        e.apply(&git_repository(&e.repo.url));
        e.apply(&doc_kustomization(&e.ns));
        waits_for_health_without_the_operator(&e, &first_commit).await;
        let operator = OperatorProcess::builder(&e.cp, &store, &e.ns).start();
        e.wait_applied(DOC_KUSTOMIZATION, &first_commit).await;
        for name in ["helpdesk-sync", "analytics-export"] {
            assert!(
                ready(&e.token(name).await),
                "{name} must be Ready once Flux is"
            );
        }
        let first = e.secret_token("helpdesk-sync").await;
        let analytics = e.secret_token("analytics-export").await;

        let second = rotate_from_git(&e, &store, &operator, &kust, &tokens, &first).await;
        refused_scope_from_git(&e, &tokens).await;
        kstatus_reads_stalled_as_failed(&e).await;

        let tokens_seen = [first, second, analytics];
        remove_from_git(&e, &store, &kust, &tokens_seen).await;
        let logs = format!("{}\n{}", e.flux.log_text(), operator.log_text());
        for token in &tokens_seen {
            assert!(!logs.contains(token.as_str()), "a token in the logs");
        }
    })
    .await;
}

fn start_store(dir: &std::path::Path) -> StoreProcess {
    let args = sqlite_args(dir);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    StoreProcess::start(&argv, &[])
}

/// Flux applied the ApiTokens of `revision` and runs its health checks, which cannot pass
/// before an operator has issued them.
async fn waits_for_health_without_the_operator(e: &Env, revision: &str) {
    let k = eventually(STEP, "Flux to apply and check the ApiTokens", || async {
        let k = e.kustomization(DOC_KUSTOMIZATION).await;
        let (status, _, message) = condition(&k, "Reconciling")?;
        (status == "True"
            && message.contains("Running health checks")
            && message.contains(revision))
        .then_some(k)
    })
    .await;
    assert!(
        condition(&k, "Ready").is_some_and(|(s, _, _)| s != "True"),
        "{k}"
    );
    let list = e.tokens().list(&Default::default()).await.unwrap();
    assert_eq!(list.items.len(), 2, "Flux applied both ApiTokens");
    assert!(list.items.iter().all(|t| !ready(t)), "no operator yet");
}

/// Steps 2 and 3: commit the doc's Kustomize patch with a new `loop.dev/rotate` value, and
/// exactly one rotation follows; commit the same value again (with an edit of the display
/// name), and none does. Returns the token in the Secret after the rotation.
async fn rotate_from_git(
    e: &Env,
    store: &StoreProcess,
    operator: &OperatorProcess,
    kust: &str,
    tokens: &str,
    first: &str,
) -> String {
    let patch = marked_block(DOC, "kustomize-rotate-patch");
    assert!(patch.contains(ROTATE), "{patch}");
    let with_patch = format!("{kust}{patch}");
    let rotate = e.commit(
        &[(KUSTOMIZATION, Some(&with_patch))],
        "rotate helpdesk-sync",
    );
    e.wait_applied(DOC_KUSTOMIZATION, &rotate).await;
    eventually(STEP, "the rotation from Git", || async {
        let t = e.token("helpdesk-sync").await;
        let handled = t.status.as_ref()?.last_rotation_request.as_deref() == Some(ROTATE);
        (handled && ready(&t)).then_some(())
    })
    .await;
    let second = e.secret_token("helpdesk-sync").await;
    assert_ne!(second, first, "a new token after the rotation");
    assert_eq!(store.introspect(first).await.1["active"], true, "grace");
    let one_rotation = "loop_operator_token_actions_total{action=\"rotate\"} 1\n";
    assert!(operator.metrics().await.contains(one_rotation));

    let edited = tokens.replace(
        "displayName: Helpdesk sync",
        "displayName: Helpdesk sync v2",
    );
    assert_ne!(
        edited, tokens,
        "examples/gitops/apitokens.yaml changed shape"
    );
    let again = e.commit(&[(TOKENS, Some(&edited))], "same rotate value, new name");
    e.wait_applied(DOC_KUSTOMIZATION, &again).await;
    eventually(STEP, "the new name in the store", || async {
        let answer = store.introspect(&second).await.1;
        (answer["name"] == "Helpdesk sync v2").then_some(())
    })
    .await;
    let t = e.token("helpdesk-sync").await;
    let st = t.status.clone().unwrap_or_default();
    assert_eq!(st.observed_generation, t.metadata.generation);
    assert_eq!(st.last_rotation_request.as_deref(), Some(ROTATE));
    assert_eq!(st.previous_tokens.len(), 1, "{:?}", st.previous_tokens);
    assert_eq!(
        e.secret_token("helpdesk-sync").await,
        second,
        "no second rotation"
    );
    assert!(operator.metrics().await.contains(one_rotation));
    second
}

/// Step 4: commit a scope the store refuses. The ApiToken is Stalled with the store's reason,
/// and the Kustomization's health check fails, naming the ApiToken.
async fn refused_scope_from_git(e: &Env, tokens: &str) {
    let edited = tokens
        .replace(
            "displayName: Helpdesk sync",
            "displayName: Helpdesk sync v2",
        )
        .replace(
            "scopes: [customers:read, subscriptions:read]",
            "scopes: [customers:read, widgets:read]",
        );
    let refused = e.commit(&[(TOKENS, Some(&edited))], "a scope the store refuses");
    let failed = format!("ApiToken/{}/helpdesk-sync status: 'Failed'", e.ns);
    let k = eventually(STEP, "the Kustomization to report the ApiToken", || async {
        let k = e.kustomization(DOC_KUSTOMIZATION).await;
        let (status, reason, message) = condition(&k, "Ready")?;
        (status == "False"
            && message.contains(&failed)
            && k["status"]["lastAttemptedRevision"] == refused.as_str())
        .then_some((reason, message))
    })
    .await;
    assert_eq!(k.0, "HealthCheckFailed", "{}", k.1);
    assert!(
        k.1.contains("failed early due to stalled resources"),
        "Flux stopped waiting at once: {}",
        k.1
    );
    let t = e.token("helpdesk-sync").await;
    let stalled = t
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Stalled"))
        .unwrap_or_else(|| panic!("not Stalled: {:?}", t.status));
    assert_eq!(stalled.reason, "UnknownScope");
    assert!(
        stalled.message.contains("widgets:read"),
        "{}",
        stalled.message
    );
    let events = e.cp.kubectl_ok(&[
        "get",
        "events",
        "-n",
        &e.ns,
        "--field-selector=involvedObject.name=helpdesk-sync,type=Warning",
        "-o",
        "json",
    ]);
    assert!(
        events.contains("widgets:read"),
        "a Warning event with the store's answer: {events}"
    );
}

/// kstatus itself (a Kustomization without `healthCheckExprs`) reads the ApiToken's `Stalled`
/// condition as `Failed`. The ApiToken is created, and stalls, before Flux adopts it: kstatus
/// would call it `Current` while it has no status yet (the reason for the doc's expressions).
async fn kstatus_reads_stalled_as_failed(e: &Env) {
    let probe = "apiVersion: loop.dev/v1alpha1\nkind: ApiToken\nmetadata:\n  name: probe\nspec:\n  scopes: [widgets:read]\n";
    e.apply(probe);
    eventually(STEP, "apitoken/probe to stall", || async {
        let t = e.token("probe").await;
        let stalled = t
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Stalled")?;
        (stalled.status == "True" && stalled.reason == "UnknownScope").then_some(())
    })
    .await;
    let revision = e.commit(
        &[
            (PROBE_KUSTOMIZATION, Some("resources: [probe.yaml]\n")),
            (PROBE, Some(probe)),
        ],
        "an ApiToken for kstatus alone",
    );
    let mut k: Value = serde_json::from_str(&doc_kustomization(&e.ns)).unwrap();
    k["metadata"]["name"] = json!("kstatus");
    k["spec"]["path"] = json!("./kstatus");
    k["spec"]
        .as_object_mut()
        .unwrap()
        .remove("healthCheckExprs");
    e.apply(&k.to_string());
    let failed = format!("ApiToken/{}/probe status: 'Failed'", e.ns);
    eventually(
        STEP,
        "kstatus to call the Stalled ApiToken Failed",
        || async {
            let k = e.kustomization("kstatus").await;
            let (status, reason, message) = condition(&k, "Ready")?;
            let at = k["status"]["lastAttemptedRevision"] == revision.as_str();
            (at && status == "False" && reason == "HealthCheckFailed" && message.contains(&failed))
                .then_some(())
        },
    )
    .await;
}

/// Step 5: remove the files (`prune: true`). The ApiTokens are deleted, their finalizer
/// revokes every token they registered, and the Secrets go with them.
async fn remove_from_git(e: &Env, store: &StoreProcess, kust: &str, tokens: &[String]) {
    let emptied = kust.replace("resources:\n  - apitokens.yaml\n", "resources: []\n");
    assert_ne!(
        emptied, kust,
        "examples/gitops/kustomization.yaml changed shape"
    );
    let last = e.commit(
        &[
            (KUSTOMIZATION, Some(&emptied)),
            (TOKENS, None),
            (PROBE_KUSTOMIZATION, Some("resources: []\n")),
            (PROBE, None),
        ],
        "remove the ApiTokens",
    );
    e.wait_applied(DOC_KUSTOMIZATION, &last).await;
    e.wait_applied("kstatus", &last).await;
    eventually(STEP, "the ApiTokens to be deleted", || async {
        let list = e.tokens().list(&Default::default()).await.ok()?;
        list.items.is_empty().then_some(())
    })
    .await;
    for token in tokens {
        assert_eq!(store.introspect(token).await.1, json!({"active": false}));
    }
    let secrets: Api<Secret> = Api::namespaced(e.cp.client.clone(), &e.ns);
    eventually(STEP, "the Secrets to be garbage-collected", || async {
        let list = secrets.list(&Default::default()).await.ok()?;
        let ours = list.items.iter().filter(|s| {
            let name = s.metadata.name.as_deref().unwrap_or_default();
            name == "helpdesk-sync" || name == "analytics-export"
        });
        (ours.count() == 0).then_some(())
    })
    .await;
}
