//! `spec.rollout` with an app that reads its token from an environment variable (so only a
//! restart gives it a new one), two replicas, and `retire: AfterRollout`: on rotation the real
//! pods restart once, the old token is revoked right after the rollout completes, and no call
//! is refused at any time (a pod being replaced stops calling on SIGTERM). Figure: rotation →
//! every replica on the new fingerprint (rollout).

use crate::common::{figure, fingerprint, install, secret_token};
use crate::support;

use std::collections::BTreeSet;

use support::node::{Collector, Namespace, TokenFrom, consumer, median_p99, node, now_ms};
use support::rolled_out;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_restarts_env_var_apps_once_and_retires_the_old_token_without_a_refused_call() {
    let _one = crate::ONE_AT_A_TIME.lock().await;
    let cp = node().await;
    let system = Namespace::create(&cp, "ro-system");
    let apps = Namespace::create(&cp, "ro-apps");
    let release = install(
        &cp,
        &format!("ro-{}", support::suffix()),
        &system,
        &apps,
        &["rollout.enabled=true"],
    );
    release.grant_store_access(&apps.name);
    let store = release.store_client();
    let collector = Collector::start().await;
    let yaml = format!(
        "apiVersion: loop.dev/v1alpha1\nkind: ApiToken\nmetadata: {{name: shop}}\nspec:\n  scopes: [orders:read]\n  \
         rotation: {{gracePeriod: 1h}}\n  rollout:\n    retire: AfterRollout\n    targets: [{{kind: Deployment, name: app}}]\n---\n{}",
        consumer(
            "app",
            "shop",
            TokenFrom::Env,
            &release.store_url(),
            &collector.url,
            2
        )
    );
    cp.apply_ok_in(&apps.name, &yaml);
    let t = cp
        .wait_for_apitoken(&apps.name, "shop", "a first token, rolled out", rolled_out)
        .await;
    let mut fp = fingerprint(&t);
    {
        let fp = fp.clone();
        collector
            .until(180, "two replicas active on the first token", move |r| {
                r.iter()
                    .filter(|x| x.fingerprint.as_deref() == Some(fp.as_str()) && x.last_active)
                    .count()
                    == 2
            })
            .await;
    }

    let mut waits = Vec::new();
    for round in 1..=3 {
        let old_token = secret_token(&cp, &apps.name, "shop");
        let before: BTreeSet<String> = collector
            .reports()
            .iter()
            .filter(|x| !x.stopped)
            .map(|x| x.name.clone())
            .collect();
        let asked = now_ms();
        cp.kubectl_in(
            &apps.name,
            &[
                "annotate",
                "--overwrite",
                "apitoken/shop",
                &format!("loop.dev/rotate=r{round}"),
            ],
        );
        let old_fp = fp.clone();
        let t = cp
            .wait_for_apitoken(&apps.name, "shop", "the new token, rolled out", move |t| {
                rolled_out(t) && fingerprint(t) != old_fp
            })
            .await;
        fp = fingerprint(&t);
        let rolled = now_ms();
        // Right after the rollout completed, the old token is revoked (not after its hour of grace).
        let refused_at = support::eventually(60, "the old token revoked after the rollout", || {
            let store = &store;
            let old = old_token.clone();
            async move { (store.active(&old).await == Some(false)).then(now_ms) }
        })
        .await;
        let new_fp = fp.clone();
        let reports = collector
            .until(
                120,
                "two new replicas on the new token, the old ones stopped",
                move |r| {
                    let on_new = r
                        .iter()
                        .filter(|x| x.fingerprint.as_deref() == Some(new_fp.as_str()) && !x.stopped)
                        .count();
                    let old_stopped = r
                        .iter()
                        .filter(|x| before.contains(&x.name))
                        .all(|x| x.stopped);
                    on_new == 2 && old_stopped
                },
            )
            .await;
        let newest = reports
            .iter()
            .filter(|x| x.fingerprint.as_deref() == Some(fp.as_str()))
            .filter_map(|x| x.first_active_ms)
            .max()
            .unwrap_or_default();
        waits.push(newest.saturating_sub(asked));
        println!(
            "round {round}: rolled out {} ms after the request, old token refused {} ms after that",
            rolled - asked,
            refused_at.saturating_sub(rolled)
        );
        // Each pod used one token: restarted once, never handed a second one.
        for r in &reports {
            assert!(
                r.fingerprints.len() <= 1,
                "{} used {} tokens",
                r.name,
                r.fingerprints.len()
            );
        }
        let (active, refused, errors) = collector.totals();
        assert_eq!(
            refused, 0,
            "round {round}: refused calls during the rollout ({active} active, {errors} errors): {reports:#?}"
        );
        assert_eq!(
            errors, 0,
            "round {round}: failed calls during the rollout: {reports:#?}"
        );
    }
    // Two pods per token: the first pair and one pair per rotation.
    assert_eq!(
        collector.reports().len(),
        8,
        "every rotation restarted each replica once"
    );
    let (active, refused, errors) = collector.totals();
    figure(
        "rollout (env var, 2 replicas, AfterRollout): calls active/refused/errors",
        format!("{active}/{refused}/{errors}"),
    );
    let (median, p99) = median_p99(&mut waits);
    figure(
        "rotation -> every replica on the new fingerprint (rollout), ms",
        format!("median {median}, p99 {p99}, runs {waits:?}"),
    );
}
