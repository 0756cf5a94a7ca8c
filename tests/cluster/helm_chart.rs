//! The Helm chart against the real API server: it lints strictly, renders objects the API
//! server accepts, installs, keeps its generated credentials across upgrades, and its RBAC is
//! both sufficient (the operator, running as the chart's ServiceAccount, serves a token's whole
//! life) and least-privilege (`kubectl auth can-i` refuses what it must not do).

use crate::support;

use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use loop_token_operator::operator::crd::ApiToken;
use serde_json::json;
use support::operator::OperatorProcess;
use support::store::{StoreProcess, sqlite_args};
use support::{ControlPlane, eventually, with_namespace};

const KUBE_VERSION: &str = "1.37.2";

fn chart() -> PathBuf {
    support::repo_root().join("charts/loop-token-operator")
}

fn helm(cp: &ControlPlane, args: &[&str]) -> std::process::Output {
    let bin = String::from_utf8(
        Command::new(support::repo_root().join("scripts/dev-cluster"))
            .args(["bin", "helm"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    Command::new(bin.trim())
        .args(args)
        .env("KUBECONFIG", &cp.kubeconfig)
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("loop-helm-cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("loop-helm-config"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("loop-helm-data"),
        )
        .output()
        .unwrap_or_else(|e| panic!("cannot run helm: {e}"))
}

fn helm_ok(cp: &ControlPlane, args: &[&str]) -> String {
    let out = helm(cp, args);
    assert!(
        out.status.success(),
        "helm {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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
        ] {
            let mut args = vec![
                "template",
                "r",
                c,
                "--namespace",
                &ns,
                "--kube-version",
                KUBE_VERSION,
            ];
            args.extend(extra);
            let rendered = helm_ok(&cp, &args);
            let out = cp.kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], Some(&rendered));
            assert!(
                out.status.success(),
                "the API server refused the rendered chart ({extra:?}):\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
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
                "store.database=postgres",
                "needs store.postgres.existingSecret",
            ),
        ] {
            let out = helm(
                &cp,
                &[
                    "template",
                    "r",
                    c,
                    "--kube-version",
                    KUBE_VERSION,
                    "--set",
                    set,
                ],
            );
            assert!(!out.status.success(), "accepted {set}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(why), "for {set}: expected {why:?} in {err}");
        }
    })
    .await;
}

/// A kubeconfig that authenticates as a ServiceAccount with a short-lived token.
fn service_account_kubeconfig(
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
        for (verb, what) in [("delete", "apitokens.loop.dev"), ("create", "apitokens.loop.dev"), ("update", "apitokens.loop.dev"), ("get", "configmaps"), ("create", "pods"), ("delete", "leases.coordination.k8s.io")] {
            assert!(!can(verb, what), "the operator must not be able to {verb} {what}");
        }
        let elsewhere = cp.kubectl(&["auth", "can-i", "get", "secrets", "-n", "kube-system", "--as", &who]);
        assert_eq!(String::from_utf8_lossy(&elsewhere.stdout).trim(), "no", "no Secrets outside the watched namespace");

        // Sufficient: the operator, authenticated as that ServiceAccount, serves a whole life.
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

        helm_ok(&cp, &["uninstall", release, "--namespace", &ns]);
    })
    .await;
}
