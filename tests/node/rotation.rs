//! Rotation with a grace period, with an app that reads the token from its mounted Secret
//! before every call: the app never sees a refused call, it is on the new token within about
//! kubelet's sync period (10 s on the local node), and the old token is refused once the grace
//! period is over. Figure: rotation → the app on the new fingerprint (mounted file).

use crate::common::{figure, fingerprint, install, ready, secret_token};
use crate::support;

use std::time::Duration;

use support::node::{Collector, Namespace, TokenFrom, consumer, median_p99, node, now_ms};

const GRACE_S: u64 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_with_grace_reaches_a_mounted_file_app_without_a_refused_call() {
    let _one = crate::ONE_AT_A_TIME.lock().await;
    let cp = node().await;
    let system = Namespace::create(&cp, "rot-system");
    let apps = Namespace::create(&cp, "rot-apps");
    let release = install(
        &cp,
        &format!("rot-{}", support::suffix()),
        &system,
        &apps,
        &[],
    );
    release.grant_store_access(&apps.name);
    let store = release.store_client();
    let collector = Collector::start().await;
    let yaml = format!(
        "apiVersion: loop.dev/v1alpha1\nkind: ApiToken\nmetadata: {{name: orders}}\nspec:\n  scopes: [orders:read]\n  rotation: {{gracePeriod: {GRACE_S}s}}\n---\n{}",
        consumer(
            "app",
            "orders",
            TokenFrom::File,
            &release.store_url(),
            &collector.url,
            1
        )
    );
    cp.apply_ok_in(&apps.name, &yaml);
    let first = cp
        .wait_for_apitoken(&apps.name, "orders", "a first token", ready)
        .await;
    let mut fp = fingerprint(&first);
    collector
        .until(180, "the app active on the first token", |r| {
            r.iter()
                .any(|x| x.fingerprint.as_deref() == Some(fp.as_str()) && x.last_active)
        })
        .await;

    let mut switches = Vec::new();
    for round in 1..=3 {
        let old_token = secret_token(&cp, &apps.name, "orders");
        let old_fp = fp.clone();
        let asked = now_ms();
        cp.kubectl_in(
            &apps.name,
            &[
                "annotate",
                "--overwrite",
                "apitoken/orders",
                &format!("loop.dev/rotate=r{round}"),
            ],
        );
        let want = old_fp.clone();
        let t = cp
            .wait_for_apitoken(&apps.name, "orders", "the new token", move |t| {
                ready(t) && fingerprint(t) != want
            })
            .await;
        fp = fingerprint(&t);
        let new_fp = fp.clone();
        let reports = collector
            .until(120, "the app on the new token", |r| {
                r.iter()
                    .any(|x| x.fingerprint.as_deref() == Some(new_fp.as_str()))
            })
            .await;
        let seen = reports[0]
            .fingerprints
            .iter()
            .find(|s| s.fingerprint == fp)
            .map(|s| s.first_seen_ms)
            .unwrap_or_default();
        switches.push(seen.saturating_sub(asked));
        // The old token still works inside its grace period, then is refused.
        assert_eq!(
            store.active(&old_token).await,
            Some(true),
            "the previous token works during its grace period"
        );
        let refused_at = support::eventually(
            GRACE_S + 60,
            "the previous token refused after its grace period",
            || {
                let store = &store;
                let old = old_token.clone();
                async move { (store.active(&old).await == Some(false)).then(now_ms) }
            },
        )
        .await;
        let after = Duration::from_millis(refused_at.saturating_sub(asked));
        assert!(
            after >= Duration::from_secs(GRACE_S),
            "the previous token was refused {after:?} after the rotation, before its grace period of {GRACE_S} s"
        );
        let (active, refused, errors) = collector.totals();
        assert_eq!(
            (refused, errors),
            (0, 0),
            "round {round}: the app saw refused or failed calls ({active} active)"
        );
    }
    let (active, refused, errors) = collector.totals();
    figure(
        "rotation with grace, mounted file: calls active/refused/errors",
        format!("{active}/{refused}/{errors}"),
    );
    let (median, p99) = median_p99(&mut switches);
    figure(
        "rotation -> the app on the new fingerprint (mounted file, kubelet syncFrequency 10s), ms",
        format!("median {median}, p99 {p99}, runs {switches:?}"),
    );
}
