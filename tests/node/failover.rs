//! Leader failover between the chart's two operator pods: the leading pod is deleted while 200
//! ApiTokens are being created; the other pod takes the Lease over within its duration (15 s by
//! default), every ApiToken becomes Ready, and each has exactly one registration in the store
//! (nothing minted twice, nothing lost). Figures: takeover time, time to 200 Ready.

use crate::common::{figure, install, lease_holder, ready};
use crate::support;

use std::time::{Duration, Instant};

use kube::Api;
use loop_token_operator::operator::resource::crd::ApiToken;
use support::node::{Namespace, node};

const TOKENS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_operator_pod_takes_over_a_bulk_of_200_and_nothing_is_minted_twice() {
    let _one = crate::ONE_AT_A_TIME.lock().await;
    let cp = node().await;
    let system = Namespace::create(&cp, "fo-system");
    let apps = Namespace::create(&cp, "fo-apps");
    let release = install(
        &cp,
        &format!("fo-{}", support::suffix()),
        &system,
        &apps,
        &[],
    );
    // The operator's default --lease-name when it watches one namespace.
    let lease = format!("loop-token-operator-{}", apps.name);
    let holder = || lease_holder(&cp, &system.name, &lease);
    let first = support::eventually(60, "a leader", || {
        let h = holder();
        async move { (!h.is_empty()).then_some(h) }
    })
    .await;
    let pods = release.pods("operator");
    assert_eq!(pods.len(), 2, "two operator replicas: {pods:?}");
    let leader = pods
        .iter()
        .find(|p| first.starts_with(p.as_str()))
        .unwrap_or_else(|| panic!("no pod holds the lease {first:?}: {pods:?}"))
        .clone();

    let mut yaml = String::new();
    for i in 0..TOKENS {
        yaml.push_str(&format!(
            "apiVersion: loop.dev/v1alpha1\nkind: ApiToken\nmetadata: {{name: bulk-{i:03}}}\nspec: {{scopes: [orders:read]}}\n---\n"
        ));
    }
    let started = Instant::now();
    // The apply (200 creations, a few seconds) runs while the leader is deleted.
    let applying = {
        let (cp, ns) = (cp.clone(), apps.name.clone());
        tokio::task::spawn_blocking(move || cp.apply_ok_in(&ns, &yaml))
    };
    let tokens: Api<ApiToken> = Api::namespaced(cp.client.clone(), &apps.name);
    let count_ready = || async {
        tokens
            .list(&Default::default())
            .await
            .map_or(0, |l| l.items.iter().filter(|t| ready(t)).count())
    };
    // The leader dies in the middle of the bulk.
    support::eventually(120, "the first of the bulk Ready", || async {
        (count_ready().await >= 1).then_some(())
    })
    .await;
    let killed = Instant::now();
    cp.kubectl_in(&system.name, &["delete", "pod", &leader, "--wait=false"]);
    let ready_at_kill = count_ready().await;
    assert!(
        ready_at_kill < TOKENS,
        "the bulk was done before the leader was deleted: make it larger"
    );
    let next = support::eventually(60, "another pod holding the lease", || {
        let h = holder();
        let leader = leader.clone();
        async move { (!h.is_empty() && !h.starts_with(&leader)).then_some(h) }
    })
    .await;
    let takeover = killed.elapsed();
    applying
        .await
        .unwrap_or_else(|e| panic!("the apply panicked: {e}"));
    assert!(
        takeover < Duration::from_secs(15 + 5),
        "the lease was taken over after {takeover:?}"
    );
    support::eventually(300, "every ApiToken Ready", || async {
        (count_ready().await == TOKENS).then_some(())
    })
    .await;
    let all_ready = started.elapsed();

    // Exactly one registration per ApiToken.
    let store = release.store_client();
    let list = tokens
        .list(&Default::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut counts = std::collections::BTreeMap::new();
    for t in &list.items {
        let uid = t.metadata.uid.clone().unwrap_or_default();
        let regs = store.registrations(&uid).await;
        counts
            .entry(regs.len())
            .or_insert_with(Vec::new)
            .push(t.metadata.name.clone().unwrap_or_default());
    }
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        [1],
        "registrations per ApiToken: {counts:?}"
    );
    println!("leader {leader} deleted with {ready_at_kill}/{TOKENS} Ready; {next} took over");
    figure(
        "leader failover: pod deleted -> the other pod holds the lease, ms",
        takeover.as_millis(),
    );
    figure(
        "leader failover: 200 ApiTokens applied -> all Ready (leader deleted after the first), s",
        format!("{:.1}", all_ready.as_secs_f64()),
    );
}
