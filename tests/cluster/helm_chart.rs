//! The Helm chart against the real API server: it lints strictly, renders objects the API
//! server accepts, installs, keeps its generated credentials across upgrades and across syncs
//! of `helm template` renders (GitOps), closes its NetworkPolicy to all but the operator and the
//! listed peers, and its RBAC is both sufficient (the operator, running as the chart's
//! ServiceAccount, serves a token's whole life) and least-privilege (`kubectl auth can-i`
//! refuses what it must not do, and the chart's admission policy refuses its writes to Secrets
//! without its label), and serves the store over HTTPS from each certificate source (a
//! generated one kept across upgrades and never rendered by `helm template`, the user's Secret,
//! cert-manager), with a schema that refuses contradictory TLS settings.

use crate::support;

use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use loop_token_operator::operator::resource::crd::ApiToken;
use serde::Deserialize;
use serde_json::{Value, json};
use support::operator::OperatorProcess;
use support::store::{StoreProcess, sqlite_args};
use support::{ControlPlane, eventually, with_namespace};

const KUBE_VERSION: &str = "1.37.2";

pub(crate) use support::helm::{chart, helm, helm_ok};

/// `helm template` of the chart as `release` in `ns`, the way Argo CD renders it (no cluster).
fn render(cp: &ControlPlane, release: &str, ns: &str, extra: &[&str]) -> String {
    let c = chart();
    let mut args = vec![
        "template",
        release,
        c.to_str().unwrap_or_default(),
        "--namespace",
        ns,
        "--kube-version",
        KUBE_VERSION,
    ];
    args.extend(extra);
    helm_ok(cp, &args)
}

/// A server-side dry-run of a rendered chart must pass.
fn server_accepts(cp: &ControlPlane, rendered: &str, what: &str) {
    let out = cp.kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], Some(rendered));
    assert!(
        out.status.success(),
        "the API server refused the rendered chart ({what}):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `helm template` with `extra` must fail, its message containing every one of `needles`.
fn render_refused(cp: &ControlPlane, extra: &[&str], needles: &[&str]) {
    let c = chart();
    let mut args = vec![
        "template",
        "r",
        c.to_str().unwrap_or_default(),
        "--kube-version",
        KUBE_VERSION,
    ];
    args.extend(extra);
    let out = helm(cp, &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted {extra:?}");
    for needle in needles {
        assert!(
            err.contains(needle),
            "for {extra:?}: expected {needle:?} in {err}"
        );
    }
}

/// The objects of a multi-document render.
pub(crate) fn objects(rendered: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(rendered)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("bad YAML rendered: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// The one object of `kind` named `name` in a render.
fn object<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the render"))
}

/// A values file in `dir`.
fn values_file(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap_or_default().to_owned()
}

const POSTGRES_VALUES: &[&str] = &[
    "--set",
    "store.database=postgres",
    "--set",
    "store.replicas=3",
    "--set",
    "store.postgres.existingSecret=pg",
    "--set",
    "networkPolicy.enabled=true",
    "--set",
    "store.scopes.resources.orders=write",
];

#[tokio::test]
async fn the_chart_lints_and_renders_what_the_api_server_accepts() {
    with_namespace("helm-render", |cp, ns| async move {
        let c = chart();
        let c = c.to_str().unwrap_or_default();
        helm_ok(&cp, &["lint", "--strict", c]);
        let mut pg = vec!["lint", "--strict", c];
        pg.extend(POSTGRES_VALUES);
        helm_ok(&cp, &pg);

        for extra in [
            &[][..],
            POSTGRES_VALUES,
            &["--set", &format!("watchNamespace={ns}")],
            &[
                "--set",
                "tenancy.unselectedNamespaces=Deny",
                "--set",
                "clusterName=prod-eu",
            ],
            &["--set", "tenancy.admissionPolicy.enabled=false"],
        ] {
            let rendered = render(&cp, "r", &ns, extra);
            server_accepts(&cp, &rendered, &format!("{extra:?}"));
        }

        // What the chart refuses, with a message that says why.
        for (set, why) in [
            (
                "store.replicas=2",
                "one SQLite file serves one store process",
            ),
            (
                "operator.logFormat=xml",
                "value must be one of 'text', 'json'",
            ),
            (
                "tenancy.unselectedNamespaces=Maybe",
                "value must be one of 'Allow', 'Deny'",
            ),
            (
                "store.database=postgres",
                "needs store.postgres.existingSecret",
            ),
        ] {
            render_refused(&cp, &["--set", set], &[why]);
        }
    })
    .await;
}

/// Tenancy settings reach the operator's flags and the admission policy; without clusterName
/// the operator names the cluster itself.
#[tokio::test]
async fn helm_tenancy_values_reach_the_operator_and_the_admission_policy() {
    with_namespace("helm-tenancy", |cp, ns| async move {
        let objs = objects(&render(
            &cp,
            "r",
            &ns,
            &[
                "--set",
                "tenancy.unselectedNamespaces=Deny",
                "--set",
                "clusterName=prod-eu",
            ],
        ));
        let op = container(&objs, "r", "operator");
        for arg in [
            "--unselected-namespaces=deny",
            "--cluster-name=prod-eu",
            &format!("--admission-configmap={ns}/r-loop-token-operator-policies"),
        ] {
            assert!(has_arg(op, arg), "{arg} in {}", op["args"]);
        }
        let vap = object(
            &objs,
            "ValidatingAdmissionPolicy",
            &format!("r-loop-token-operator-apitoken-policies.{ns}"),
        );
        assert!(
            vap["spec"]["validations"]
                .to_string()
                .contains("no ApiTokenPolicy selects namespace"),
            "{vap}"
        );
        let objs = objects(&render(&cp, "r", &ns, &[]));
        let op = container(&objs, "r", "operator");
        assert!(has_arg(op, "--unselected-namespaces=allow"));
        assert!(
            !op["args"].to_string().contains("--cluster-name"),
            "{}",
            op["args"]
        );
        let vap = object(
            &objs,
            "ValidatingAdmissionPolicy",
            &format!("r-loop-token-operator-apitoken-policies.{ns}"),
        );
        assert!(
            !vap["spec"]["validations"]
                .to_string()
                .contains("no ApiTokenPolicy selects namespace")
        );
    })
    .await;
}

/// A kubeconfig that authenticates as a ServiceAccount with a short-lived token.
pub(crate) fn service_account_kubeconfig(
    cp: &ControlPlane,
    ns: &str,
    sa: &str,
    dir: &std::path::Path,
) -> PathBuf {
    let token = cp.kubectl_ok(&["create", "token", sa, "-n", ns, "--duration=1h"]);
    let server = cp.kubectl_ok(&[
        "config",
        "view",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]);
    let ca = cp.kubectl_ok(&[
        "config",
        "view",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.certificate-authority}",
    ]);
    let path = dir.join("sa.kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"{server}\", certificate-authority: \"{ca}\"}}}}]\n\
         users: [{{name: sa, user: {{token: \"{}\"}}}}]\ncontexts: [{{name: c, context: {{cluster: c, user: sa}}}}]\ncurrent-context: c\n",
        token.trim()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Tenancy, as the API server's authorizer sees it: the operator `who` reads policies, its
/// watched namespace `ns` and kube-system, writes only the policy digest ConfigMap, and cannot
/// change policies or see other namespaces.
fn tenancy_least_privilege(cp: &ControlPlane, ns: &str, who: &str) {
    let can = |verb: &str, what: &str| {
        let out = cp.kubectl(&["auth", "can-i", verb, what, "-n", ns, "--as", who]);
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    let can_anywhere = |verb: &str, what: &str| {
        let out = cp.kubectl(&["auth", "can-i", verb, what, "--as", who]);
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    let watched = format!("namespaces/{ns}");
    for (verb, what) in [
        ("watch", "apitokenpolicies.loop.dev"),
        ("get", watched.as_str()),
        ("get", "namespaces/kube-system"),
    ] {
        assert!(
            can_anywhere(verb, what),
            "the operator must be able to {verb} {what}"
        );
    }
    for (verb, what) in [
        ("create", "apitokenpolicies.loop.dev"),
        ("patch", "apitokenpolicies.loop.dev"),
        ("delete", "apitokenpolicies.loop.dev"),
        ("get", "namespaces/default"),
        ("list", "namespaces"),
        ("patch", watched.as_str()),
    ] {
        assert!(
            !can_anywhere(verb, what),
            "the operator must not be able to {verb} {what}"
        );
    }
    assert!(
        can("patch", "configmaps/lto-loop-token-operator-policies"),
        "the policy digest"
    );
    assert!(
        !can("patch", "configmaps/other") && !can("create", "configmaps/other"),
        "only the policy digest"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installed_chart_rbac_is_sufficient_and_least_privilege() {
    with_namespace("helm-install", |cp, ns| async move {
        support::install_crd(&cp).await;
        let c = chart();
        let c = c.to_str().unwrap_or_default();
        let release = "lto";
        let install = ["upgrade", "--install", release, c, "--namespace", ns.as_str(), "--set", &format!("watchNamespace={ns}"), "--wait=false"];
        helm_ok(&cp, &install);

        // The objects, as the chart promises them.
        let replicas = cp.kubectl_ok(&["get", "deploy", "lto-loop-token-operator-operator", "-n", &ns, "-o", "jsonpath={.spec.replicas}"]);
        assert_eq!(replicas, "2");
        let sc = cp.kubectl_ok(&["get", "deploy", "lto-loop-token-operator-store", "-n", &ns, "-o", "jsonpath={.spec.template.spec.containers[0].securityContext}"]);
        for needle in ["\"readOnlyRootFilesystem\":true", "\"allowPrivilegeEscalation\":false", "\"drop\":[\"ALL\"]"] {
            assert!(sc.contains(needle), "{sc}");
        }
        cp.kubectl_ok(&["get", "pvc", "lto-loop-token-operator-store-data", "-n", &ns]);
        cp.kubectl_ok(&["get", "svc", "lto-loop-token-operator-store", "-n", &ns]);
        let secrets: Api<Secret> = Api::namespaced(cp.client.clone(), &ns);
        let creds = secrets.get("lto-loop-token-operator-credentials").await.unwrap().data.unwrap_or_default();
        let admin = creds.get("admin").map(|b| b.0.clone()).unwrap_or_default();
        assert_eq!(admin.len(), 43);
        assert_ne!(creds.get("introspect").map(|b| b.0.clone()).unwrap_or_default(), admin, "two different credentials");
        // An upgrade keeps the generated credentials.
        helm_ok(&cp, &install);
        let again = secrets.get("lto-loop-token-operator-credentials").await.unwrap().data.unwrap_or_default();
        assert_eq!(again.get("admin").map(|b| b.0.clone()).unwrap_or_default(), admin, "credentials changed on upgrade");

        // Least privilege, as the API server's authorizer sees it.
        let who = format!("system:serviceaccount:{ns}:lto-loop-token-operator-operator");
        let can = |verb: &str, what: &str| {
            let out = cp.kubectl(&["auth", "can-i", verb, what, "-n", &ns, "--as", &who]);
            String::from_utf8_lossy(&out.stdout).trim() == "yes"
        };
        for (verb, what) in [("watch", "apitokens.loop.dev"), ("patch", "apitokens.loop.dev/status"), ("create", "secrets"), ("create", "events.events.k8s.io"), ("patch", "leases.coordination.k8s.io")] {
            assert!(can(verb, what), "the operator must be able to {verb} {what}");
        }
        for (verb, what) in [("delete", "apitokens.loop.dev"), ("create", "apitokens.loop.dev"), ("update", "apitokens.loop.dev"), ("get", "configmaps"), ("create", "pods"), ("delete", "leases.coordination.k8s.io"), ("get", "deployments.apps"), ("patch", "deployments.apps"), ("patch", "statefulsets.apps"), ("patch", "daemonsets.apps")] {
            assert!(!can(verb, what), "the operator must not be able to {verb} {what}");
        }
        let elsewhere = cp.kubectl(&["auth", "can-i", "get", "secrets", "-n", "kube-system", "--as", &who]);
        assert_eq!(String::from_utf8_lossy(&elsewhere.stdout).trim(), "no", "no Secrets outside the watched namespace");
        tenancy_least_privilege(&cp, &ns, &who);

        // Sufficient: the operator, authenticated as that ServiceAccount, serves a whole life,
        // with the chart's admission policy in force.
        admission_policy_in_force(&cp, &ns).await;
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = service_account_kubeconfig(&cp, &ns, "lto-loop-token-operator-operator", dir.path());
        let data = tempfile::tempdir().unwrap();
        let args = sqlite_args(data.path());
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let store = StoreProcess::start(&argv, &[]);
        let operator = OperatorProcess::builder(&cp, &store, &ns)
            .kubeconfig(&kubeconfig)
            .leader_election(&["--leader-election-namespace", &ns, "--lease-name", "lto"])
            .start();
        eventually(30, "leadership", || async { operator.logged("became leader").then_some(()) }).await;
        let yaml = "apiVersion: loop.dev/v1alpha1\nkind: ApiToken\nmetadata: {name: rbac}\nspec: {scopes: [orders:read]}\n";
        let out = cp.kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], Some(yaml));
        assert!(out.status.success());
        cp.kubectl_ok(&["wait", "-n", &ns, "--for=condition=Ready", "apitoken/rbac", "--timeout=90s"]);
        let token_of = |s: Secret| String::from_utf8(s.data.unwrap_or_default().get("token").map(|b| b.0.clone()).unwrap_or_default()).unwrap();
        let first = token_of(secrets.get("rbac").await.unwrap());
        assert_eq!(store.introspect(&first).await.1["active"], true);
        cp.kubectl_ok(&["annotate", "-n", &ns, "apitoken/rbac", "loop.dev/rotate=rbac-1"]);
        let tokens: Api<ApiToken> = Api::namespaced(cp.client.clone(), &ns);
        eventually(60, "the rotation", || async {
            let t = tokens.get("rbac").await.ok()?;
            (t.status?.last_rotation_request.as_deref() == Some("rbac-1")).then_some(())
        })
        .await;
        let second = token_of(secrets.get("rbac").await.unwrap());
        assert_ne!(second, first);
        cp.kubectl_ok(&["delete", "-n", &ns, "apitoken/rbac", "--timeout=90s"]);
        assert_eq!(store.introspect(&second).await.1, json!({"active": false}));
        let logs = operator.log_text();
        assert!(!logs.to_lowercase().contains("forbidden"), "the operator hit a permission error:\n{logs}");

        // Rollout restarts are opt-in: without rollout.enabled the operator has no access to
        // workloads, and an ApiToken that names one says so (its token works all the same).
        rollout_is_opt_in(&cp, &ns, &who, &install, &tokens).await;

        helm_ok(&cp, &["uninstall", release, "--namespace", &ns]);
    })
    .await;
}

/// `rollout.enabled`: off, an ApiToken with `spec.rollout` is `Reconciling`, reason
/// `RolloutForbidden`, and keeps its token; on, the operator may get and patch the three
/// workload kinds (and nothing more on them), and the rollout is followed.
async fn rollout_is_opt_in(
    cp: &ControlPlane,
    ns: &str,
    who: &str,
    install: &[&str],
    tokens: &Api<ApiToken>,
) {
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 0\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: app, image: registry.invalid/web:1}]}\n";
    cp.apply_ok_in(ns, deployment);
    let yaml = "apiVersion: loop.dev/v1alpha1\nkind: ApiToken\nmetadata: {name: web}\nspec: {scopes: [orders:read], rollout: {targets: [{kind: Deployment, name: web}]}}\n";
    cp.apply_ok_in(ns, yaml);
    let reconciling = |t: &ApiToken| {
        t.status
            .as_ref()
            .and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == "Reconciling" && c.status == "True")
            })
            .map(|c| (c.reason.clone(), c.message.clone()))
    };
    let (_, message) = eventually(90, "RolloutForbidden", || async {
        let t = tokens.get("web").await.ok()?;
        reconciling(&t).filter(|(r, _)| r == "RolloutForbidden")
    })
    .await;
    assert!(message.contains("rollout.enabled=true"), "{message}");
    cp.kubectl_ok(&[
        "wait",
        "-n",
        ns,
        "--for=condition=Ready",
        "apitoken/web",
        "--timeout=90s",
    ]);

    let mut enabled = install.to_vec();
    enabled.extend(["--set", "rollout.enabled=true"]);
    helm_ok(cp, &enabled);
    let can = |verb: &str, what: &str| {
        let out = cp.kubectl(&["auth", "can-i", verb, what, "-n", ns, "--as", who]);
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    for kind in ["deployments.apps", "statefulsets.apps", "daemonsets.apps"] {
        assert!(
            can("get", kind) && can("patch", kind),
            "rollout.enabled grants get and patch on {kind}"
        );
        for verb in ["create", "delete", "update", "list", "watch"] {
            assert!(
                !can(verb, kind),
                "rollout.enabled must not grant {verb} on {kind}"
            );
        }
    }
    assert!(
        !can("patch", "pods") && !can("patch", "replicasets.apps"),
        "nothing beyond the three kinds"
    );
    // The next look (an annotation wakes it) follows the rollout.
    cp.kubectl_ok(&["annotate", "-n", ns, "apitoken/web", "example.com/nudge=1"]);
    eventually(90, "the rollout to be followed", || async {
        let t = tokens.get("web").await.ok()?;
        let s = t.status.as_ref()?;
        (reconciling(&t).is_none()
            && s.rollout.len() == 1
            && s.rollout[0].state
                == loop_token_operator::operator::resource::crd::RolloutState::Complete)
            .then_some(())
    })
    .await;
    cp.kubectl_ok(&["delete", "-n", ns, "apitoken/web", "--timeout=90s"]);
}

/// The peers of every ingress rule of the store's NetworkPolicy, in order.
fn store_policy_peers(rendered: &str, release: &str) -> Vec<Value> {
    let objs = objects(rendered);
    let policy = object(
        &objs,
        "NetworkPolicy",
        &format!("{release}-loop-token-operator-store"),
    );
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
        "store"
    );
    let rules = policy["spec"]["ingress"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for rule in &rules {
        assert_eq!(rule["ports"], json!([{"port": 8080, "protocol": "TCP"}]));
    }
    rules
        .iter()
        .flat_map(|r| r["from"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn helm_network_policy_admits_the_operator_and_only_the_listed_peers() {
    with_namespace("helm-netpol", |cp, ns| async move {
        let operator = json!({"podSelector": {"matchLabels": {
            "app.kubernetes.io/name": "loop-token-operator",
            "app.kubernetes.io/instance": "r",
            "app.kubernetes.io/component": "operator",
        }}});
        let this_namespace = json!({"matchLabels": {"kubernetes.io/metadata.name": ns}});

        // Enabled and nothing else: the operator's pods, in the release namespace (a podSelector
        // alone), and no one else.
        let rendered = render(&cp, "r", &ns, &["--set", "networkPolicy.enabled=true"]);
        assert_eq!(store_policy_peers(&rendered, "r"), vec![operator.clone()]);
        server_accepts(&cp, &rendered, "networkPolicy.enabled=true");

        // Loop's API from an explicit list: a podSelector alone means the release namespace;
        // a namespaceSelector alone means every pod of the namespaces it selects.
        let dir = tempfile::tempdir().unwrap();
        let listed = values_file(
            dir.path(),
            "listed.yaml",
            "networkPolicy:\n  enabled: true\n  introspectFrom:\n\
             \x20   - podSelector: {matchLabels: {app: loop-api}}\n\
             \x20   - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: loop}}\n\
             \x20     podSelector: {matchExpressions: [{key: app, operator: In, values: [loop-api]}]}\n\
             \x20   - namespaceSelector: {matchLabels: {team: loop}}\n",
        );
        let rendered = render(&cp, "r", &ns, &["-f", &listed]);
        assert_eq!(
            store_policy_peers(&rendered, "r"),
            vec![
                operator,
                json!({"namespaceSelector": this_namespace, "podSelector": {"matchLabels": {"app": "loop-api"}}}),
                json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "loop"}},
                       "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["loop-api"]}]}}),
                json!({"namespaceSelector": {"matchLabels": {"team": "loop"}}, "podSelector": {}}),
            ]
        );
        server_accepts(&cp, &rendered, "networkPolicy.introspectFrom");

        // An entry that selects nothing would admit every pod: the schema refuses it, and so
        // the old object form, whose defaults were exactly that.
        let why = "an entry that selects nothing would admit every pod";
        for (entry, expected) in [
            ("[{}]", why),
            ("[{podSelector: {}}]", why),
            ("[{namespaceSelector: {}}]", why),
            ("[{podSelector: {}, namespaceSelector: {}}]", why),
            ("[{podSelector: {matchLabels: {}}, namespaceSelector: {matchExpressions: []}}]", why),
            ("{podSelector: {}, namespaceSelector: {}}", "want array"),
        ] {
            let open = values_file(
                dir.path(),
                "open.yaml",
                &format!("networkPolicy:\n  enabled: true\n  introspectFrom: {entry}\n"),
            );
            render_refused(&cp, &["-f", &open], &["/networkPolicy/introspectFrom", expected]);
        }
    })
    .await;
}

/// The store credentials of a running installation, as the Secret `name` holds them now.
async fn live_credentials(secrets: &Api<Secret>, name: &str) -> Vec<(String, Vec<u8>)> {
    let s = secrets
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("no credentials Secret {name}: {e}"));
    let data = s.data.unwrap_or_default();
    assert!(
        data.contains_key("admin") && data.contains_key("introspect"),
        "keys of {name}"
    );
    data.into_iter().map(|(k, v)| (k, v.0)).collect()
}

/// Sync two `helm template` renders of `release` over the cluster the way Argo CD does (a
/// client-side apply of every object), and insist that the credentials Secret `name` holds
/// what it held before; returns the last render.
async fn two_syncs_keep_credentials(
    cp: &ControlPlane,
    secrets: &Api<Secret>,
    release: &str,
    extra: &[&str],
    name: &str,
) -> String {
    let ns = secrets.namespace().unwrap_or_default().to_owned();
    let before = live_credentials(secrets, name).await;
    let mut rendered = String::new();
    for sync_no in 1..=2 {
        rendered = render(cp, release, &ns, extra);
        let out = cp.kubectl_stdin(&["apply", "-f", "-"], Some(&rendered));
        assert!(
            out.status.success(),
            "apply failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            live_credentials(secrets, name).await == before,
            "sync #{sync_no} of a `helm template` render of {release} changed the store credentials"
        );
    }
    rendered
}

#[tokio::test]
async fn helm_template_renders_do_not_change_a_running_installations_credentials() {
    with_namespace("helm-gitops", |cp, ns| async move {
        let secrets: Api<Secret> = Api::namespaced(cp.client.clone(), &ns);
        let scope = format!("watchNamespace={ns}");

        // A GitOps installation from scratch: the one-time step the chart documents (the
        // credentials Secret, created in the cluster), then syncs.
        let own: Secret = serde_json::from_value(json!({
            "metadata": {"name": "gitops-loop-token-operator-credentials"},
            "stringData": {"admin": support::suffix().repeat(5), "introspect": support::suffix().repeat(5)},
        }))
        .unwrap();
        secrets.create(&Default::default(), &own).await.unwrap();
        let last = two_syncs_keep_credentials(&cp, &secrets, "gitops", &["--set", &scope], "gitops-loop-token-operator-credentials").await;

        // An installation made with `helm install` (credentials generated in the cluster),
        // later synced from `helm template` renders.
        let c = chart();
        helm_ok(&cp, &["upgrade", "--install", "installed", c.to_str().unwrap_or_default(), "--namespace", &ns, "--set", &scope, "--wait=false"]);
        let name = "installed-loop-token-operator-credentials";
        let annotations = secrets.get(name).await.unwrap().metadata.annotations.unwrap_or_default();
        assert_eq!(annotations.get("helm.sh/resource-policy").map(String::as_str), Some("keep"));
        assert_eq!(annotations.get("argocd.argoproj.io/sync-options").map(String::as_str), Some("Prune=false"));
        two_syncs_keep_credentials(&cp, &secrets, "installed", &["--set", &scope], name).await;

        // Rendered without a cluster, the chart holds no credential values at all; the pods
        // mount the Secret by name (credentials.existingSecret, or the default name).
        for (extra, mounted) in [
            (vec!["--set", &scope], "r-loop-token-operator-credentials"),
            (vec!["--set", &scope, "--set", "credentials.existingSecret=mine"], "mine"),
        ] {
            let objs = objects(&render(&cp, "r", &ns, &extra));
            assert!(!objs.iter().any(|o| o["kind"] == "Secret"), "a Secret in the render ({extra:?})");
            for component in ["operator", "store"] {
                let d = object(&objs, "Deployment", &format!("r-loop-token-operator-{component}"));
                assert_eq!(d["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"], mounted);
            }
        }

        // Cluster-scoped objects outlive the namespace: remove what the syncs created.
        cp.kubectl_stdin(&["delete", "--ignore-not-found", "--wait=false", "-f", "-"], Some(&last));
        helm_ok(&cp, &["uninstall", "installed", "--namespace", &ns]);
    })
    .await;
}

const OPERATOR_SA: &str = "lto-loop-token-operator-operator";
const WRITE_REFUSED: &str =
    "may only create or update Secrets labelled app.kubernetes.io/managed-by=loop-token-operator";
const TOUCH_REFUSED: &str = "may only update or delete Secrets that already carry the label app.kubernetes.io/managed-by=loop-token-operator";
const CREATE_REFUSED: &str = "may only create Opaque Secrets that an ApiToken controls";

/// kubectl as `user` (impersonated); returns (success, stderr).
pub(crate) fn kubectl_as(
    cp: &ControlPlane,
    user: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> (bool, String) {
    let mut all = vec!["--as", user];
    all.extend(args);
    let out = cp.kubectl_stdin(&all, stdin);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Wait until the chart's admission policy refuses the operator's ServiceAccount an unlabelled
/// Secret (policies take effect a moment after they are created).
async fn admission_policy_in_force(cp: &ControlPlane, ns: &str) {
    let sa = format!("system:serviceaccount:{ns}:{OPERATOR_SA}");
    eventually(30, "the admission policy to be in force", || async {
        let (ok, err) = kubectl_as(
            cp,
            &sa,
            &[
                "create",
                "secret",
                "generic",
                "probe",
                "-n",
                ns,
                "--dry-run=server",
            ],
            None,
        );
        (!ok && err.contains(WRITE_REFUSED)).then_some(())
    })
    .await;
}

fn secret_yaml(name: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, labels: {{{labels}}}}}\nstringData: {{k: v}}\n"
    )
}

#[tokio::test]
async fn helm_admission_policy_confines_the_operators_secret_writes_to_its_label() {
    with_namespace("helm-vap", |cp, ns| async move {
        let c = chart();
        helm_ok(&cp, &["upgrade", "--install", "lto", c.to_str().unwrap_or_default(), "--namespace", &ns, "--set", &format!("watchNamespace={ns}"), "--wait=false"]);
        let sa = format!("system:serviceaccount:{ns}:{OPERATOR_SA}");
        let label = "app.kubernetes.io/managed-by: loop-token-operator";
        cp.kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], Some(&secret_yaml("theirs", "team: a")));
        admission_policy_in_force(&cp, &ns).await;
        let apply = |who: &str, yaml: &str| kubectl_as(&cp, who, &["apply", "-n", &ns, "-f", "-"], Some(yaml));
        let expect = |(ok, err): (bool, String), refused: Option<&str>, what: &str| match refused {
            None => assert!(ok, "{what} was refused: {err}"),
            Some(why) => assert!(!ok && err.contains(why), "{what}: expected {why:?}, got ok={ok} {err}"),
        };

        // An ApiToken to own the Secrets the operator creates (as it does).
        support::install_crd(&cp).await;
        let token = "apiVersion: loop.dev/v1alpha1\nkind: ApiToken\nmetadata: {name: owner}\nspec: {scopes: [orders:read]}\n";
        cp.kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], Some(token));
        let uid = cp.kubectl_ok(&["get", "apitoken", "owner", "-n", &ns, "-o", "jsonpath={.metadata.uid}"]);
        let owned_by = |name: &str, labels: &str, type_: &str| format!(
            "apiVersion: v1\nkind: Secret\ntype: {type_}\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\n  ownerReferences: [{{apiVersion: loop.dev/v1alpha1, kind: ApiToken, name: owner, uid: {uid}, controller: true}}]\nstringData: {{k: v}}\n"
        );

        // The operator's ServiceAccount: its own labelled Secrets only, created as it creates
        // them (Opaque, controlled by an ApiToken).
        expect(apply(&sa, &secret_yaml("unlabelled", "")), Some(WRITE_REFUSED), "create an unlabelled Secret");
        expect(apply(&sa, &secret_yaml("free", label)), Some(CREATE_REFUSED), "create a labelled Secret no ApiToken controls");
        let sa_token = owned_by("sa-token", label, "kubernetes.io/service-account-token")
            .replace("metadata:\n", "metadata:\n  annotations: {kubernetes.io/service-account.name: default}\n");
        expect(apply(&sa, &sa_token), Some(CREATE_REFUSED), "create a ServiceAccount token Secret");
        expect(apply(&sa, &owned_by("mine", label, "Opaque")), None, "create a labelled Secret an ApiToken controls");
        expect(kubectl_as(&cp, &sa, &["annotate", "-n", &ns, "secret/mine", "note=kept"], None), None, "update a labelled Secret");
        expect(kubectl_as(&cp, &sa, &["label", "-n", &ns, "secret/mine", "app.kubernetes.io/managed-by-"], None), Some(WRITE_REFUSED), "drop the label");
        expect(kubectl_as(&cp, &sa, &["label", "-n", &ns, "--overwrite", "secret/mine", "app.kubernetes.io/managed-by=someone"], None), Some(WRITE_REFUSED), "change the label");
        expect(kubectl_as(&cp, &sa, &["label", "-n", &ns, "secret/theirs", "app.kubernetes.io/managed-by=loop-token-operator"], None), Some(TOUCH_REFUSED), "adopt an unlabelled Secret");
        expect(kubectl_as(&cp, &sa, &["delete", "-n", &ns, "secret/theirs"], None), Some(TOUCH_REFUSED), "delete an unlabelled Secret");
        expect(kubectl_as(&cp, &sa, &["delete", "-n", &ns, "secret/mine"], None), None, "delete a labelled Secret");

        // A Secret an ApiToken controls, its label removed by hand: the operator restores it.
        cp.kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], Some(&owned_by("owned", "", "Opaque")));
        expect(kubectl_as(&cp, &sa, &["label", "-n", &ns, "secret/owned", "app.kubernetes.io/managed-by=loop-token-operator"], None), None, "restore the label of a Secret an ApiToken controls");
        let labels = cp.kubectl_ok(&["get", "secret", "theirs", "-n", &ns, "-o", "jsonpath={.metadata.labels}"]);
        assert_eq!(labels, r#"{"team":"a"}"#, "the unlabelled Secret is untouched");

        // Nor can it lift the policy.
        for what in ["validatingadmissionpolicies", "validatingadmissionpolicybindings"] {
            let out = cp.kubectl(&["auth", "can-i", "delete", &format!("{what}.admissionregistration.k8s.io"), "--as", &sa]);
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no", "the operator may delete {what}");
        }

        // Anyone else, with the very same Role, is unaffected.
        cp.kubectl_ok(&["create", "rolebinding", "jane", "-n", &ns, &format!("--role={OPERATOR_SA}"), "--user=jane"]);
        expect(apply("jane", &secret_yaml("janes", "")), None, "another user creates an unlabelled Secret");
        expect(kubectl_as(&cp, "jane", &["label", "-n", &ns, "secret/theirs", "team-"], None), None, "another user updates an unlabelled Secret");
        expect(kubectl_as(&cp, "jane", &["delete", "-n", &ns, "secret/theirs"], None), None, "another user deletes an unlabelled Secret");

        helm_ok(&cp, &["uninstall", "lto", "--namespace", &ns]);
    })
    .await;
}

/// The container of the Deployment `<release>-loop-token-operator-<component>` in a render.
fn container<'a>(objs: &'a [Value], release: &str, component: &str) -> &'a Value {
    &object(
        objs,
        "Deployment",
        &format!("{release}-loop-token-operator-{component}"),
    )["spec"]["template"]["spec"]["containers"][0]
}

/// The volume `name` of the Deployment of `component`, if it has one.
fn volume<'a>(objs: &'a [Value], release: &str, component: &str, name: &str) -> Option<&'a Value> {
    object(
        objs,
        "Deployment",
        &format!("{release}-loop-token-operator-{component}"),
    )["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == name))
}

fn has_arg(container: &Value, arg: &str) -> bool {
    container["args"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x == arg))
}

/// The operator's `--store-url` and the Secret its `--store-ca-file` comes from (None: no CA
/// file, so system roots or plain HTTP), checked against the flag, mount and volume together.
fn operator_store_trust(objs: &[Value], release: &str) -> (String, Option<String>) {
    let c = container(objs, release, "operator");
    let url = c["args"].as_array().and_then(|a| {
        a.iter()
            .find_map(|x| x.as_str()?.strip_prefix("--store-url="))
    });
    let ca = volume(objs, release, "operator", "store-ca");
    let mounted = c["volumeMounts"].as_array().is_some_and(|m| {
        m.contains(
            &json!({"name": "store-ca", "mountPath": "/var/run/loop-store-ca", "readOnly": true}),
        )
    });
    assert_eq!(
        has_arg(c, "--store-ca-file=/var/run/loop-store-ca/ca.crt"),
        ca.is_some(),
        "flag and volume disagree"
    );
    assert_eq!(mounted, ca.is_some(), "mount and volume disagree");
    let secret = ca.map(|v| {
        assert_eq!(
            v["secret"]["items"],
            json!([{"key": "ca.crt", "path": "ca.crt"}]),
            "the operator gets the CA only"
        );
        assert_eq!(v["secret"]["defaultMode"], 0o440);
        v["secret"]["secretName"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    });
    (url.unwrap_or_default().to_owned(), secret)
}

/// The Secret the store's certificate is mounted from (None: plain HTTP), after checking the
/// flags, the mount, the probes and the Service's port for that scheme.
fn store_certificate(objs: &[Value], release: &str) -> Option<String> {
    let c = container(objs, release, "store");
    // The credentials too are 0440: the store warns about a credential file every user may read.
    for component in ["store", "operator"] {
        let creds = volume(objs, release, component, "credentials");
        assert_eq!(
            creds.map(|v| v["secret"]["defaultMode"].clone()),
            Some(json!(0o440)),
            "{component}'s credentials volume"
        );
    }
    let tls = volume(objs, release, "store", "tls");
    let (port, scheme) = if tls.is_some() {
        ("https", "HTTPS")
    } else {
        ("http", "HTTP")
    };
    for flag in [
        "--tls-cert-file=/var/run/loop-tls/tls.crt",
        "--tls-key-file=/var/run/loop-tls/tls.key",
    ] {
        assert_eq!(has_arg(c, flag), tls.is_some(), "{flag}");
    }
    let mounted = c["volumeMounts"].as_array().is_some_and(|m| {
        m.contains(&json!({"name": "tls", "mountPath": "/var/run/loop-tls", "readOnly": true}))
    });
    assert_eq!(mounted, tls.is_some());
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["scheme"], scheme, "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], port, "{probe}");
    }
    assert_eq!(c["ports"], json!([{"name": port, "containerPort": 8080}]));
    let svc = object(
        objs,
        "Service",
        &format!("{release}-loop-token-operator-store"),
    );
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"name": port, "port": 8080, "targetPort": port}])
    );
    tls.map(|v| {
        assert_eq!(
            v["secret"]["items"],
            json!([{"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"}])
        );
        assert_eq!(v["secret"]["defaultMode"], 0o440);
        v["secret"]["secretName"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    })
}

/// The store Service's DNS names, which its certificate must be valid for.
fn store_dns_names(release: &str, ns: &str) -> Vec<String> {
    let svc = format!("{release}-loop-token-operator-store");
    vec![
        svc.clone(),
        format!("{svc}.{ns}"),
        format!("{svc}.{ns}.svc"),
        format!("{svc}.{ns}.svc.cluster.local"),
    ]
}

/// cert-manager's Certificate kind, as a minimal CRD (cert-manager is not installed here), so
/// that a server-side dry-run can check the chart's Certificate. Left installed: other tests
/// may use it at the same time, and it serves nothing else.
async fn install_certificate_crd(cp: &ControlPlane) {
    support::install_crd_file(
        cp,
        "tests/fixtures/cert-manager-certificate-crd.yaml",
        "certificates.cert-manager.io",
    )
    .await;
}

#[tokio::test]
async fn helm_store_serves_https_from_each_certificate_source() {
    with_namespace("helm-tls", |cp, ns| async move {
        install_certificate_crd(&cp).await;
        let url = format!("https://r-loop-token-operator-store.{ns}.svc:8080");
        let generated = "r-loop-token-operator-store-tls";
        let cert_manager = ["--set", "store.tls.certManager.enabled=true", "--set", "store.tls.certManager.issuerRef.name=loop-ca"];
        for (what, extra, certificate, store_url, ca) in [
            ("generated (default)", &[][..], Some(generated), url.as_str(), Some(generated)),
            ("existingSecret", &["--set", "store.tls.existingSecret=my-tls"][..], Some("my-tls"), &url, Some("my-tls")),
            ("certManager", &cert_manager[..], Some(generated), &url, Some(generated)),
            ("disabled", &["--set", "store.tls.enabled=false"][..], None, &url.replace("https:", "http:"), None),
        ] {
            let rendered = render(&cp, "r", &ns, extra);
            let objs = objects(&rendered);
            assert_eq!(store_certificate(&objs, "r").as_deref(), certificate, "{what}: the store's certificate");
            assert_eq!(operator_store_trust(&objs, "r"), (store_url.to_owned(), ca.map(str::to_owned)), "{what}: the operator's URL and CA");
            // Under `helm template` the chart renders no certificate (nor any Secret).
            assert!(!objs.iter().any(|o| o["kind"] == "Secret"), "{what}: a Secret in a `helm template` render");
            let certificates: Vec<&Value> = objs.iter().filter(|o| o["kind"] == "Certificate").collect();
            if what == "certManager" {
                let spec = &certificates[0]["spec"];
                assert_eq!(spec["secretName"], generated);
                assert_eq!(spec["dnsNames"], json!(store_dns_names("r", &ns)));
                assert_eq!(spec["issuerRef"], json!({"name": "loop-ca", "kind": "Issuer", "group": "cert-manager.io"}));
                assert!(spec["usages"].as_array().is_some_and(|u| u.contains(&json!("server auth"))), "{spec}");
            } else {
                assert!(certificates.is_empty(), "{what}: a Certificate without certManager.enabled");
            }
            server_accepts(&cp, &rendered, what);
        }

        // A store elsewhere: the user's CA Secret for its https:// URL, or the system roots.
        let external = ["--set", "store.enabled=false", "--set", "store.externalUrl=https://loop-store.example:8443"];
        let objs = objects(&render(&cp, "r", &ns, &external));
        assert_eq!(operator_store_trust(&objs, "r"), ("https://loop-store.example:8443".to_owned(), None));
        let with_ca = [&external[..], &["--set", "store.externalCaSecret=store-ca"]].concat();
        let rendered = render(&cp, "r", &ns, &with_ca);
        assert_eq!(operator_store_trust(&objects(&rendered), "r"), ("https://loop-store.example:8443".to_owned(), Some("store-ca".to_owned())));
        server_accepts(&cp, &rendered, "an external store with a CA Secret");

        // Prometheus scrapes the store over HTTPS with the CA (rendered only: the ServiceMonitor
        // CRD is not installed here).
        let objs = objects(&render(&cp, "r", &ns, &["--set", "serviceMonitor.enabled=true"]));
        let endpoints = &object(&objs, "ServiceMonitor", "r-loop-token-operator")["spec"]["endpoints"];
        assert_eq!(endpoints[1], json!({
            "port": "https", "path": "/metrics", "interval": "30s", "scheme": "https",
            "tlsConfig": {"ca": {"secret": {"name": generated, "key": "ca.crt"}}, "serverName": format!("r-loop-token-operator-store.{ns}.svc")},
        }));
    })
    .await;
}

#[tokio::test]
async fn helm_store_tls_schema_refuses_contradictory_settings() {
    with_namespace("helm-tls-schema", |cp, _ns| async move {
        for (sets, why) in [
            (
                &[
                    "store.tls.existingSecret=mine",
                    "store.tls.certManager.enabled=true",
                    "store.tls.certManager.issuerRef.name=ca",
                ][..],
                "existingSecret or certManager.enabled, not both",
            ),
            (
                &["store.tls.certManager.enabled=true"][..],
                "certManager.issuerRef.name (the Issuer or ClusterIssuer",
            ),
            (
                &["store.tls.enabled=false", "store.tls.existingSecret=mine"][..],
                "but TLS is disabled",
            ),
            (
                &[
                    "store.tls.enabled=false",
                    "store.tls.certManager.enabled=true",
                    "store.tls.certManager.issuerRef.name=ca",
                ][..],
                "but TLS is disabled",
            ),
            (
                &[
                    "store.enabled=false",
                    "store.externalUrl=http://store:8080",
                    "store.externalCaSecret=ca",
                ][..],
                "'^https://'",
            ),
        ] {
            let extra: Vec<&str> = sets.iter().flat_map(|s| ["--set", s]).collect();
            render_refused(&cp, &extra, &["/store", why]);
        }
    })
    .await;
}

/// `openssl` with `args`; returns (success, stdout and stderr).
fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The generated certificate Secret's data, with its keys checked.
async fn store_tls_data(
    secrets: &Api<Secret>,
    name: &str,
) -> std::collections::BTreeMap<String, Vec<u8>> {
    let s = secrets
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("no Secret {name}: {e}"));
    assert_eq!(s.type_.as_deref(), Some("kubernetes.io/tls"));
    let annotations = s.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations
            .get("helm.sh/resource-policy")
            .map(String::as_str),
        Some("keep")
    );
    let data: std::collections::BTreeMap<String, Vec<u8>> = s
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["ca.crt", "tls.crt", "tls.key"]
    );
    data
}

#[tokio::test]
async fn helm_install_generates_a_store_certificate_for_its_service_and_keeps_it() {
    with_namespace("helm-tls-install", |cp, ns| async move {
        let c = chart();
        let scope = format!("watchNamespace={ns}");
        let install = [
            "upgrade",
            "--install",
            "tls",
            c.to_str().unwrap_or_default(),
            "--namespace",
            &ns,
            "--set",
            &scope,
            "--wait=false",
        ];
        helm_ok(&cp, &install);
        let secrets: Api<Secret> = Api::namespaced(cp.client.clone(), &ns);
        let name = "tls-loop-token-operator-store-tls";
        let data = store_tls_data(&secrets, name).await;

        // A server certificate for each of the Service's names, signed by the CA in ca.crt,
        // with the key beside it.
        let dir = tempfile::tempdir().unwrap();
        let file = |key: &str| {
            let path = dir.path().join(key);
            std::fs::write(&path, &data[key]).unwrap();
            path.to_str().unwrap_or_default().to_owned()
        };
        let (ca, crt, key) = (file("ca.crt"), file("tls.crt"), file("tls.key"));
        let (_, sans) = openssl(&["x509", "-noout", "-ext", "subjectAltName", "-in", &crt]);
        for dns in store_dns_names("tls", &ns) {
            assert!(sans.contains(&format!("DNS:{dns}")), "{dns} not in {sans}");
            let (ok, said) = openssl(&[
                "verify",
                "-CAfile",
                &ca,
                "-purpose",
                "sslserver",
                "-verify_hostname",
                &dns,
                &crt,
            ]);
            assert!(ok, "openssl verify for {dns}: {said}");
        }
        let (_, constraints) =
            openssl(&["x509", "-noout", "-ext", "basicConstraints", "-in", &crt]);
        assert!(
            constraints.contains("CA:FALSE"),
            "a CA certificate as the server's (rustls refuses it): {constraints}"
        );
        let (ok, _) = openssl(&[
            "verify",
            "-CAfile",
            &ca,
            "-verify_hostname",
            "elsewhere.example",
            &crt,
        ]);
        assert!(
            !ok,
            "the certificate is valid for a name that is not the Service's"
        );
        assert_eq!(
            openssl(&["x509", "-noout", "-pubkey", "-in", &crt]).1,
            openssl(&["pkey", "-pubout", "-in", &key]).1,
            "tls.key is not tls.crt's key"
        );

        // Stable: an upgrade, and a sync of a `helm template` render over the install, keep it.
        helm_ok(&cp, &install);
        assert!(
            store_tls_data(&secrets, name).await == data,
            "helm upgrade changed the store's certificate"
        );
        let out = cp.kubectl_stdin(
            &["apply", "-f", "-"],
            Some(&render(&cp, "tls", &ns, &["--set", &scope])),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            store_tls_data(&secrets, name).await == data,
            "a `helm template` sync changed the store's certificate"
        );

        helm_ok(&cp, &["uninstall", "tls", "--namespace", &ns]);
    })
    .await;
}

/// The metric names a PromQL expression reads.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names: Vec<String> = expr
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("loop_"))
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// With `prometheusRule.enabled` (and the per-token gauges it needs), the chart renders a
/// PrometheusRule the API server accepts, whose alert expressions are valid PromQL over metrics
/// the operator exports; without the gauges it refuses to render; by default neither is there.
#[tokio::test]
async fn helm_prometheus_rule_alerts_on_metrics_the_operator_exports() {
    with_namespace("helm-alerts", |cp, ns| async move {
        support::install_crd_file(
            &cp,
            "tests/fixtures/prometheusrule-crd.yaml",
            "prometheusrules.monitoring.coreos.com",
        )
        .await;
        let on = [
            "--set",
            "prometheusRule.enabled=true",
            "--set",
            "operator.perTokenMetrics=true",
        ];
        let rendered = render(&cp, "r", &ns, &on);
        server_accepts(&cp, &rendered, "prometheusRule.enabled");
        let objs = objects(&rendered);
        assert!(has_arg(
            container(&objs, "r", "operator"),
            "--per-token-metrics=true"
        ));
        let rule = object(&objs, "PrometheusRule", "r-loop-token-operator");
        let rules = rule["spec"]["groups"][0]["rules"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let alerts: Vec<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
        assert_eq!(
            alerts,
            [
                "LoopApiTokenExpiringSoon",
                "LoopApiTokenRotationOverdue",
                "LoopApiTokensStalled"
            ]
        );

        // What the operator exports with --per-token-metrics, for one ApiToken with a schedule.
        let metrics = loop_token_operator::operator::Metrics::new(true);
        metrics.set_state("u", loop_token_operator::operator::Readiness::Stalled);
        metrics.set_times("u", "ns", "a", Some(1_800_000_000), Some(1_700_000_000));
        let exported = metrics.encode().unwrap_or_default();
        for r in &rules {
            let expr = r["expr"].as_str().unwrap_or_default();
            if let Err(e) = promql_parser::parser::parse(expr) {
                panic!("{}: not PromQL ({e}):\n{expr}", r["alert"]);
            }
            for name in metric_names(expr) {
                assert!(
                    exported
                        .lines()
                        .any(|l| l.starts_with(&format!("{name}{{"))),
                    "{}: the operator exports no {name}:\n{exported}",
                    r["alert"]
                );
            }
        }

        render_refused(
            &cp,
            &["--set", "prometheusRule.enabled=true"],
            &["prometheusRule.enabled needs operator.perTokenMetrics=true"],
        );
        let objs = objects(&render(&cp, "r", &ns, &[]));
        assert!(objs.iter().all(|o| o["kind"] != "PrometheusRule"));
        assert!(!has_arg(
            container(&objs, "r", "operator"),
            "--per-token-metrics=true"
        ));
    })
    .await;
}
