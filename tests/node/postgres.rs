//! The store on PostgreSQL with three replicas behind its Service, and a store pod deleted
//! while an app calls it: no answer is wrong (the app's live token is never refused, a revoked
//! token is never active, asked through the Service all along), and the failed calls are
//! counted and reported. PostgreSQL is the machine's (scripts/dev-postgres), reached by the
//! pods through a Service without selector whose endpoint is a proxy of the test process on the
//! node's address, as a database outside the cluster is. Figure: ApiToken deleted → refused by
//! every store replica.

use crate::common::{figure, install, ready, secret_token};
use crate::support;

use std::net::SocketAddr;

use support::node::{Collector, NODE_IP, Namespace, TokenFrom, consumer, median_p99, node, now_ms};
use support::store::Proxy;

/// A Service `pg` in `ns` for the PostgreSQL at `url` (postgres://user@127.0.0.1:PORT/db);
/// returns the URL pods use, and the proxy that carries it.
async fn database_for_pods(cp: &support::ControlPlane, ns: &str, url: &str) -> (String, Proxy) {
    let rest = url
        .strip_prefix("postgres://")
        .unwrap_or_else(|| panic!("{url}"));
    let (user, rest) = rest.split_once('@').unwrap_or_else(|| panic!("{url}"));
    let (addr, db) = rest.split_once('/').unwrap_or_else(|| panic!("{url}"));
    let target: SocketAddr = addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}"));
    let proxy = Proxy::start_on(&format!("{NODE_IP}:0"), target).await;
    let port = proxy.addr.port();
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: pg}}\nspec: {{ports: [{{name: pg, port: 5432, targetPort: {port}}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: pg-1, labels: {{kubernetes.io/service-name: pg}}}}\n\
         addressType: IPv4\nports: [{{name: pg, port: {port}, protocol: TCP}}]\nendpoints: [{{addresses: [\"{NODE_IP}\"]}}]\n"
    );
    cp.apply_ok_in(ns, &yaml);
    (format!("postgres://{user}@pg.{ns}.svc:5432/{db}"), proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_store_replicas_on_postgres_lose_a_pod_and_answer_nothing_wrong() {
    let _one = crate::ONE_AT_A_TIME.lock().await;
    let cp = node().await;
    let system = Namespace::create(&cp, "pg-system");
    let apps = Namespace::create(&cp, "pg-apps");
    let (url, _proxy) = database_for_pods(&cp, &system.name, &support::postgres().await).await;
    let secret = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "store-db"}, "stringData": {"url": url}});
    cp.apply_ok_in(&system.name, &secret.to_string());
    let release = install(
        &cp,
        &format!("pg-{}", support::suffix()),
        &system,
        &apps,
        &[
            "store.database=postgres",
            "store.replicas=3",
            "store.postgres.existingSecret=store-db",
        ],
    );
    release.grant_store_access(&apps.name);
    let store = release.store_client();
    let collector = Collector::start().await;
    let tokens = "apiVersion: loop.dev/v1alpha1\nkind: ApiToken\nmetadata: {name: live}\nspec: {scopes: [orders:read]}\n---\n\
                  apiVersion: loop.dev/v1alpha1\nkind: ApiToken\nmetadata: {name: doomed}\nspec: {scopes: [orders:read]}\n";
    cp.apply_ok_in(&apps.name, tokens);
    cp.wait_for_apitoken(&apps.name, "live", "live Ready", ready)
        .await;
    cp.wait_for_apitoken(&apps.name, "doomed", "doomed Ready", ready)
        .await;
    let doomed = secret_token(&cp, &apps.name, "doomed");
    cp.apply_ok_in(
        &apps.name,
        &consumer(
            "app",
            "live",
            TokenFrom::File,
            &release.store_url(),
            &collector.url,
            1,
        ),
    );
    collector
        .until(180, "the app active", |r| r.iter().any(|x| x.last_active))
        .await;

    // Revoked through the operator; from then on no replica may call it active.
    cp.kubectl_in(&apps.name, &["delete", "apitoken", "doomed"]);
    support::eventually(60, "the revoked token refused", || async {
        (store.active(&doomed).await == Some(false)).then_some(())
    })
    .await;
    let pods = release.pods("store");
    assert_eq!(pods.len(), 3, "three store replicas: {pods:?}");
    let before = collector.totals();
    cp.kubectl_in(&system.name, &["delete", "pod", &pods[0], "--wait=false"]);
    // Through the Service while the pod goes and its replacement comes.
    let (mut refused, mut failed, mut wrong) = (0u32, 0u32, 0u32);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        match store.active(&doomed).await {
            Some(false) => refused += 1,
            Some(true) => wrong += 1,
            None => failed += 1,
        }
    }
    support::eventually(180, "three store replicas Ready again", || async {
        (release.store_pod_ips().len() == 3).then_some(())
    })
    .await;
    let after = collector.totals();
    assert_eq!(
        wrong, 0,
        "the revoked token was answered active {wrong} times ({refused} refused, {failed} failed)"
    );
    assert_eq!(
        after.1, 0,
        "the app's live token was refused {} times",
        after.1
    );
    figure(
        "store pod deleted (3 replicas, PostgreSQL): the revoked token via the Service refused/failed/active",
        format!("{refused}/{failed}/{wrong}"),
    );
    figure(
        "store pod deleted: the app's calls during it active/refused/errors",
        format!(
            "{}/{}/{}",
            after.0 - before.0,
            after.1 - before.1,
            after.2 - before.2
        ),
    );

    // The figure: ApiToken deleted -> refused by every replica (each asked at its pod's address).
    let replicas: Vec<_> = release
        .store_pod_ips()
        .iter()
        .map(|ip| release.store_client_at(ip))
        .collect();
    let mut waits = Vec::new();
    for i in 0..5 {
        let name = format!("gone-{i}");
        cp.apply_ok_in(&apps.name, &format!("apiVersion: loop.dev/v1alpha1\nkind: ApiToken\nmetadata: {{name: {name}}}\nspec: {{scopes: [orders:read]}}\n"));
        cp.wait_for_apitoken(&apps.name, &name, "Ready", ready)
            .await;
        let token = secret_token(&cp, &apps.name, &name);
        for r in &replicas {
            assert_eq!(
                r.active(&token).await,
                Some(true),
                "every replica knows the new token"
            );
        }
        let deleted = now_ms();
        cp.kubectl_in(&apps.name, &["delete", "apitoken", &name, "--wait=false"]);
        let mut slowest = 0;
        for r in &replicas {
            let at = support::eventually(60, "refused by this replica", || {
                let token = token.clone();
                async move { (r.active(&token).await == Some(false)).then(now_ms) }
            })
            .await;
            slowest = slowest.max(at.saturating_sub(deleted));
        }
        waits.push(slowest);
    }
    let (median, p99) = median_p99(&mut waits);
    figure(
        "ApiToken deleted -> refused by every store replica (3, PostgreSQL), ms",
        format!("median {median}, p99 {p99}, runs {waits:?}"),
    );
}
