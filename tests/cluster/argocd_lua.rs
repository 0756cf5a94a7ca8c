//! Argo CD's Lua, for real: the health check and the Rotate action exactly as
//! `docs/gitops.md` shows them (taken from the doc, so it cannot drift), run by gopher-lua with
//! Argo CD's conventions (`tests/argocd/lua-runner`, built by `scripts/gitops-tools`), on
//! ApiTokens taken from a real run of the store and the operator.

use crate::support;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::{Value, json};
use support::docs::marked_yaml;
use support::flux::gitops_tool;
use support::operator::OperatorProcess;
use support::store::{StoreProcess, sqlite_args};
use support::{ControlPlane, eventually, with_namespace};

const DOC: &str = "docs/gitops.md";

/// The doc's scripts, each in a file for the runner.
struct Scripts {
    health: PathBuf,
    discovery: PathBuf,
    rotate: PathBuf,
    _dir: tempfile::TempDir,
}

fn scripts_from_doc() -> Scripts {
    let dir = tempfile::tempdir().unwrap();
    let cm = marked_yaml(DOC, "argocd-health");
    let health = cm["data"]["resource.customizations.health.loop.dev_ApiToken"]
        .as_str()
        .unwrap_or_else(|| panic!("no health check in the doc's argocd-cm: {cm}"));
    let cm = marked_yaml(DOC, "argocd-actions");
    let actions = cm["data"]["resource.customizations.actions.loop.dev_ApiToken"]
        .as_str()
        .unwrap_or_else(|| panic!("no actions in the doc's argocd-cm: {cm}"));
    let actions: Value = serde_norway::from_str(actions).unwrap_or_else(|e| panic!("{e}"));
    let rotate = actions["definitions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["name"] == "rotate")
        .unwrap_or_else(|| panic!("no rotate action: {actions}"));
    let write = |name: &str, text: &Value| {
        let path = dir.path().join(name);
        let text = text
            .as_str()
            .unwrap_or_else(|| panic!("{name} is not text"));
        std::fs::write(&path, text).unwrap();
        path
    };
    Scripts {
        health: write("health.lua", &json!(health)),
        discovery: write("discovery.lua", &actions["discovery.lua"]),
        rotate: write("action.lua", &rotate["action.lua"]),
        _dir: dir,
    }
}

/// Run a script on `obj` as Argo CD does; returns the runner's JSON answer.
fn run_lua(mode: &str, script: &std::path::Path, obj: &Value) -> Value {
    use std::io::Write;
    let mut child = Command::new(gitops_tool(&["bin", "argocd-lua"]))
        .args([mode, script.to_str().unwrap_or_default()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run argocd-lua: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(obj.to_string().as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the {mode} script failed on {obj}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("runner output: {e}"))
}

/// Argo CD's health of `obj` by the doc's check: (status, message).
fn health(s: &Scripts, obj: &Value) -> (String, String) {
    let hs = run_lua("health", &s.health, obj);
    let text = |k: &str| hs[k].as_str().unwrap_or_default().to_owned();
    (text("status"), text("message"))
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == "True")
}

struct Env {
    cp: ControlPlane,
    ns: String,
}

impl Env {
    fn apply(&self, yaml: &str) {
        self.cp.apply_ok_in(&self.ns, yaml);
    }

    fn kubectl(&self, args: &[&str]) -> String {
        self.cp.kubectl_in(&self.ns, args)
    }

    /// The live object, as Argo CD's cache holds it.
    fn live(&self, name: &str) -> Value {
        let json = self.kubectl(&["get", "apitoken", name, "-o", "json"]);
        serde_json::from_str(&json).unwrap()
    }

    /// Wait until `pred` holds for the live object; returns it.
    async fn wait_for(&self, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let tokens: Api<loop_token_operator::operator::resource::crd::ApiToken> =
            Api::namespaced(self.cp.client.clone(), &self.ns);
        // Generous for a loaded machine (the whole suite in parallel on 2 cores). The minutes
        // this once took were a lost wake-up in the operator (see `tenancy::caches_ready`), not
        // load.
        eventually(120, what, || async {
            let t = tokens.get_opt(name).await.ok().flatten()?;
            let v = serde_json::to_value(t).ok()?;
            pred(&v).then(|| self.live(name))
        })
        .await
    }

    async fn wait_true(&self, name: &str, type_: &str, reason: &str) -> Value {
        let what = format!("apitoken/{name} to be {type_} with {reason}");
        self.wait_for(name, &what, |v| {
            condition(v, type_).is_some_and(|c| c["reason"] == reason)
        })
        .await
    }
}

/// An ApiToken with `scopes` and more of its spec in `extra` (YAML lines indented by two).
fn token_yaml(name: &str, scopes: &str, extra: &str) -> String {
    format!(
        "apiVersion: loop.dev/v1alpha1\nkind: ApiToken\nmetadata:\n  name: {name}\nspec:\n  scopes: [{scopes}]\n{extra}"
    )
}

fn start_store(dir: &std::path::Path, listen: Option<&str>, envs: &[(&str, &str)]) -> StoreProcess {
    let args = sqlite_args(dir);
    let mut argv: Vec<&str> = args.iter().map(String::as_str).collect();
    if let Some(addr) = listen {
        argv.extend(["--listen", addr]);
    }
    StoreProcess::start(&argv, envs)
}

/// `Stalled` (reason and message) → Degraded with `reason: message`, for each reason the
/// operator can stall with.
async fn degraded_for_each_stalled_reason(e: &Env, s: &Scripts) {
    e.kubectl(&[
        "create",
        "secret",
        "generic",
        "taken",
        "--from-literal=token=not-ours",
    ]);
    let cases = [
        (
            "conflict",
            "orders:read",
            "  secret: {name: taken}\n",
            "SecretConflict",
        ),
        ("scope", "widgets:read", "", "UnknownScope"),
        // A zero-width space passes the CRD's pattern; the store refuses the name.
        (
            "refused",
            "orders:read",
            "  displayName: \"Klaviyo\u{200b}sync\"\n",
            "StoreRejected",
        ),
        // The CRD's pattern and CEL accept this order of units; the operator does not.
        (
            "invalid",
            "orders:read",
            "  rotation: {gracePeriod: 30m1h}\n",
            "InvalidSpec",
        ),
    ];
    for (name, scopes, extra, _) in cases {
        e.apply(&token_yaml(name, scopes, extra));
    }
    for (name, _, _, reason) in cases {
        let obj = e.wait_true(name, "Stalled", reason).await;
        let msg = message(&obj, "Stalled");
        assert_eq!(
            health(s, &obj),
            ("Degraded".into(), format!("{reason}: {msg}")),
            "{obj}"
        );
    }
}

/// The message of the condition `type_` that is True.
fn message(obj: &Value, type_: &str) -> String {
    let c = condition(obj, type_).unwrap_or_else(|| panic!("no {type_}=True in {obj}"));
    c["message"].as_str().unwrap_or_default().to_owned()
}

/// An operator whose credential the store refuses: Degraded.
async fn degraded_when_the_store_refuses_the_credential(e: &Env, s: &Scripts) {
    let other = tempfile::tempdir().unwrap();
    let admin = [("LOOP_STORE_ADMIN_TOKEN", "another-admin-credential-0001")];
    let wrong = start_store(other.path(), None, &admin);
    let mut op = OperatorProcess::builder(&e.cp, &wrong, &e.ns).start();
    let reason = "StoreCredentialRejected";
    let obj = e.wait_true("shop", "Stalled", reason).await;
    let expected = format!("{reason}: {}", message(&obj, "Stalled"));
    assert_eq!(health(s, &obj), ("Degraded".into(), expected));
    op.kill();
}

/// The store down: Progressing while the operator retries (`StoreUnavailable`, for the edit
/// left pending) and while a deletion waits for it (`RevocationPending`); then the store comes
/// back on the same data and address, and the deletion completes.
async fn progressing_while_the_store_is_down(
    e: &Env,
    s: &Scripts,
    mut store: StoreProcess,
    data: &std::path::Path,
) {
    let listen = store.url.trim_start_matches("http://").to_owned();
    store.kill();
    let op = OperatorProcess::builder(&e.cp, &store, &e.ns).start();
    for (reason, delete) in [("StoreUnavailable", false), ("RevocationPending", true)] {
        if delete {
            e.kubectl(&["delete", "apitoken", "shop", "--wait=false"]);
        }
        let obj = e.wait_true("shop", "Reconciling", reason).await;
        let expected = format!("{reason}: {}", message(&obj, "Reconciling"));
        assert_eq!(health(s, &obj), ("Progressing".into(), expected));
    }
    let _store = start_store(data, Some(&listen), &[]);
    let tokens: Api<loop_token_operator::operator::resource::crd::ApiToken> =
        Api::namespaced(e.cp.client.clone(), &e.ns);
    eventually(90, "apitoken/shop to be deleted", || async {
        let gone = tokens.get_opt("shop").await.ok()?.is_none();
        gone.then_some(())
    })
    .await;
    drop(op);
}

/// Healthy for Ready, Degraded for each Stalled reason, Progressing while the operator has not
/// seen the object, while it reconciles, and while `observedGeneration` lags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argo_cd_health_check_from_the_doc_on_real_apitokens() {
    with_namespace("argocd-health", |cp, ns| async move {
        support::install_crd(&cp).await;
        let s = scripts_from_doc();
        let e = Env { cp, ns };
        let data = tempfile::tempdir().unwrap();
        let store = start_store(data.path(), None, &[]);
        let waiting = ("Progressing".into(), "waiting for the operator".into());

        // No operator yet: no status.
        e.apply(&token_yaml("shop", "orders:read", ""));
        let obj = e.live("shop");
        assert!(obj["status"].is_null(), "{obj}");
        assert_eq!(health(&s, &obj), waiting);
        degraded_when_the_store_refuses_the_credential(&e, &s).await;

        // The right store: Ready is Healthy, with the Ready condition's message.
        let mut op = OperatorProcess::builder(&e.cp, &store, &e.ns).start();
        let obj = e.wait_true("shop", "Ready", "Issued").await;
        assert_eq!(health(&s, &obj), ("Healthy".into(), message(&obj, "Ready")));
        for c in obj["status"]["conditions"].as_array().unwrap() {
            assert_eq!(
                c["observedGeneration"], obj["metadata"]["generation"],
                "{obj}"
            );
        }
        degraded_for_each_stalled_reason(&e, &s).await;

        // The operator stopped, the spec edited: Ready is still True, but for an older
        // generation.
        op.kill();
        let edit = r#"{"spec":{"displayName":"Shop v2"}}"#;
        e.kubectl(&["patch", "apitoken", "shop", "--type=merge", "-p", edit]);
        let obj = e.live("shop");
        assert!(condition(&obj, "Ready").is_some());
        let (seen, now) = (
            &obj["status"]["observedGeneration"],
            &obj["metadata"]["generation"],
        );
        assert!(seen.as_i64() < now.as_i64(), "{obj}");
        assert_eq!(health(&s, &obj), waiting);

        progressing_while_the_store_is_down(&e, &s, store, data.path()).await;
    })
    .await;
}

/// The doc's Rotate action on a live Ready ApiToken: its output, applied as Argo CD applies it
/// (a JSON merge patch of the live object), rotates once; applying it again does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argo_cd_rotate_action_from_the_doc_rotates_once() {
    with_namespace("argocd-rotate", |cp, ns| async move {
        support::install_crd(&cp).await;
        let s = scripts_from_doc();
        let e = Env { cp, ns };
        let data = tempfile::tempdir().unwrap();
        let store = start_store(data.path(), None, &[]);
        let op = OperatorProcess::builder(&e.cp, &store, &e.ns).start();
        e.apply(&token_yaml("shop", "orders:read", ""));
        let live = e.wait_true("shop", "Ready", "Issued").await;
        let secrets: Api<Secret> = Api::namespaced(e.cp.client.clone(), &e.ns);
        let token_in_secret = || async {
            let s = secrets.get("shop").await.unwrap();
            String::from_utf8(s.data.unwrap_or_default()["token"].0.clone()).unwrap()
        };
        let first = token_in_secret().await;

        assert_eq!(run_lua("discovery", &s.discovery, &live), json!(["rotate"]));
        let patch = run_lua("action", &s.rotate, &live);
        let value = patch["metadata"]["annotations"]["loop.dev/rotate"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert_eq!(
            patch,
            json!({"metadata": {"annotations": {"loop.dev/rotate": value}}}),
            "the action changes only the annotation"
        );
        assert!(
            value.len() == 20 && value.parse::<jiff::Timestamp>().is_ok(),
            "an RFC 3339 UTC time: {value}"
        );
        let patch = patch.to_string();
        e.kubectl(&["patch", "apitoken", "shop", "--type=merge", "-p", &patch]);
        let rotated = e
            .wait_for("shop", "the rotation the action asked for", |v| {
                v["status"]["lastRotationRequest"] == value.as_str()
                    && condition(v, "Ready").is_some()
            })
            .await;
        let second = token_in_secret().await;
        assert_ne!(second, first, "the action rotated");
        assert_eq!(
            rotated["status"]["previousTokens"].as_array().map(Vec::len),
            Some(1)
        );
        let one = "loop_operator_token_actions_total{action=\"rotate\"} 1\n";
        assert!(op.metrics().await.contains(one), "{}", op.metrics().await);

        // The same output applied again, with an edit the operator visibly handles: no second
        // rotation.
        e.kubectl(&["patch", "apitoken", "shop", "--type=merge", "-p", &patch]);
        e.kubectl(&[
            "patch",
            "apitoken",
            "shop",
            "--type=merge",
            "-p",
            r#"{"spec":{"displayName":"Shop v2"}}"#,
        ]);
        eventually(90, "the new name in the store", || async {
            (store.introspect(&second).await.1["name"] == "Shop v2").then_some(())
        })
        .await;
        assert_eq!(token_in_secret().await, second, "rotated once");
        assert!(op.metrics().await.contains(one), "{}", op.metrics().await);
    })
    .await;
}
