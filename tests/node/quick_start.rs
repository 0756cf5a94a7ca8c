//! The README's "Quick start on a cluster", on the local cluster's node, command for command
//! (the block `quick-start-local`, in namespaces of the test's own): the image built and loaded,
//! the chart installed (two operator replicas, the store on SQLite with its claim bound to the
//! node's volume), every pod Ready through its own probes, the example ApiToken Ready, and an
//! app that mounts its Secret getting `active: true` from the store through its Service name.
//! Then the figure "apply → the app's first active answer", over a few ApiTokens.

use crate::common::{figure, ready};
use crate::support;

use std::process::Command;
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use support::node::{Collector, Namespace, Release, TokenFrom, consumer, median_p99, node, now_ms};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_quick_start_runs_on_the_node_as_written() {
    let _one = crate::ONE_AT_A_TIME.lock().await;
    let cp = node().await;
    let sfx = support::suffix();
    let (system, apps) = (format!("qs-system-{sfx}"), format!("qs-apps-{sfx}"));
    let _system = Namespace::adopt(&cp, system.clone());
    let _apps = Namespace::adopt(&cp, apps.clone());
    let release = Release::adopt(&cp, "loop-token-operator", &system);

    let block = support::docs::marked_block("README.md", "quick-start-local")
        .replace("loop-system", &system)
        .replace("integrations", &apps);
    let started = Instant::now();
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &block])
        .current_dir(support::repo_root())
        .env_remove("KUBECONFIG")
        .output()
        .unwrap_or_else(|e| panic!("bash: {e}"));
    assert!(
        out.status.success(),
        "the README's commands failed:\n{block}\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    figure(
        "quick start, the README's commands (image cached)",
        format!("{:.1} s", started.elapsed().as_secs_f64()),
    );

    // Every pod of the release Ready through its own probes, on the node.
    let pods: Api<Pod> = Api::namespaced(cp.client.clone(), &system);
    let list = pods
        .list(&Default::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut components = Vec::new();
    for p in &list.items {
        let spec = p.spec.as_ref().unwrap_or_else(|| panic!("no spec"));
        assert_eq!(spec.node_name.as_deref(), Some("loop-dev-node"));
        for c in &spec.containers {
            assert!(
                c.readiness_probe.is_some() && c.liveness_probe.is_some(),
                "{}: probes",
                c.name
            );
        }
        let ready = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        assert!(ready, "pod {:?} is not Ready", p.metadata.name);
        let labels = p.metadata.labels.clone().unwrap_or_default();
        components.push(
            labels
                .get("app.kubernetes.io/component")
                .cloned()
                .unwrap_or_default(),
        );
    }
    components.sort();
    assert_eq!(
        components,
        ["operator", "operator", "store"],
        "two operator replicas and one store"
    );
    let claim = cp.kubectl_in(
        &system,
        &[
            "get",
            "pvc",
            "loop-token-operator-store-data",
            "-o",
            "jsonpath={.status.phase} {.spec.volumeName}",
        ],
    );
    assert_eq!(
        claim,
        format!("Bound dev-{system}-loop-token-operator-store-data")
    );

    // The app: the Secret mounted, the store called through its Service name over HTTPS.
    release.grant_store_access(&apps);
    let collector = Collector::start().await;
    cp.apply_ok_in(
        &apps,
        &consumer(
            "app",
            "klaviyo-sync",
            TokenFrom::File,
            &release.store_url(),
            &collector.url,
            1,
        ),
    );
    let reports = collector
        .until(120, "the app's first active answer", |r| {
            r.iter().any(|x| x.active > 0)
        })
        .await;
    assert_eq!(reports[0].refused, 0, "{reports:?}");
    let token: Api<loop_token_operator::operator::resource::crd::ApiToken> =
        Api::namespaced(cp.client.clone(), &apps);
    let t = token
        .get("klaviyo-sync")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(ready(&t));
    assert_eq!(
        reports[0].fingerprint,
        t.status.as_ref().and_then(|s| s.fingerprint.clone()),
        "the app uses the ApiToken's current token"
    );
    // kubectl logs and exec reach the pod through kubelet.
    let logs = cp.kubectl_in(&apps, &["logs", "deploy/app"]);
    assert!(logs.contains("Active"), "kubectl logs: {logs}");
    let help = cp.kubectl_ok(&[
        "exec",
        "-n",
        &apps,
        "deploy/app",
        "--",
        "/loop-consumer",
        "--help",
    ]);
    assert!(help.contains("--token-file"), "kubectl exec: {help}");

    // The figure: from `kubectl apply` of an ApiToken and its app together to the app's first
    // active answer (the pod waits for the Secret the operator writes).
    let mut waits = Vec::new();
    for i in 0..5 {
        let name = format!("fig-{i}");
        let applied = now_ms();
        let yaml = format!(
            "apiVersion: loop.dev/v1alpha1\nkind: ApiToken\nmetadata: {{name: {name}}}\nspec: {{scopes: [orders:read]}}\n---\n{}",
            consumer(
                &name,
                &name,
                TokenFrom::File,
                &release.store_url(),
                &collector.url,
                1
            )
        );
        cp.apply_ok_in(&apps, &yaml);
        let prefix = format!("{name}-");
        let reports = collector
            .until(180, "the app's first active answer", |r| {
                r.iter()
                    .any(|x| x.name.starts_with(&prefix) && x.first_active_ms.is_some())
            })
            .await;
        let first = reports
            .iter()
            .filter(|x| x.name.starts_with(&prefix))
            .find_map(|x| x.first_active_ms)
            .unwrap_or_default();
        waits.push(first.saturating_sub(applied));
        cp.kubectl_in(&apps, &["delete", "deploy", &name, "--wait=false"]);
    }
    let (median, p99) = median_p99(&mut waits);
    figure(
        "apply -> the app's first active answer (mounted Secret), ms",
        format!("median {median}, p99 {p99}, runs {waits:?}"),
    );
}
