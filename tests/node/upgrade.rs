//! A chart upgrade from the previous chart version (0.3.0, taken from git history: the parent of
//! the commit that made it 0.4.0) with its code's image, to this checkout's chart and image, with
//! live tokens and an app calling the store all along: no token changes (same fingerprint, same
//! Secret), and no call is refused. The old image is that commit's code built in today's image
//! layout (`scripts/image previous`: the same two static binaries FROM scratch; chart 0.3.0's
//! own Dockerfile pulled base images, which cannot be pulled here), so the upgrade runs the old
//! code against the old chart's RBAC, as a user's cluster did.

use crate::common::{figure, fingerprint, lease_holder, ready, secret_token};
use crate::support;

use std::process::Command;

use support::node::{Collector, Namespace, OPERATOR_IMAGE, Release, TokenFrom, consumer, node};

/// The chart as it was at version 0.3.0, extracted into `dir`; returns its path and the commit.
fn previous_chart(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(support::repo_root())
            .output()
            .unwrap_or_else(|e| panic!("git: {e}"));
        assert!(
            out.status.success(),
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(
        git(&["rev-parse", "--is-shallow-repository"]),
        "false",
        "the upgrade test needs the git history (not a shallow clone)"
    );
    let bump = git(&[
        "log",
        "--format=%H",
        "-G^version: 0.4.0",
        "--",
        "charts/loop-token-operator/Chart.yaml",
    ]);
    let bump = bump
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no commit made the chart 0.4.0"));
    let old = format!("{bump}^");
    let chart_yaml = git(&[
        "show",
        &format!("{old}:charts/loop-token-operator/Chart.yaml"),
    ]);
    assert!(
        chart_yaml.lines().any(|l| l == "version: 0.3.0"),
        "{old} holds chart {chart_yaml}"
    );
    let archive = Command::new("git")
        .args(["archive", &old, "charts/loop-token-operator"])
        .current_dir(support::repo_root())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(archive.status.success());
    let mut tar = Command::new("tar")
        .args(["-x", "-C", dir.to_str().unwrap_or_default()])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    use std::io::Write;
    tar.stdin
        .take()
        .unwrap_or_else(|| panic!("stdin"))
        .write_all(&archive.stdout)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(tar.wait().unwrap_or_else(|e| panic!("{e}")).success());
    (dir.join("charts/loop-token-operator"), old)
}

/// `scripts/image previous REV`, loaded into the node; returns the image's tag.
fn previous_image(rev: &str) -> String {
    let run = |script: &str, args: &[&str]| {
        let out = Command::new(support::repo_root().join("scripts").join(script))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "{script} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let image = run("image", &["previous", rev]);
    let loaded = run("dev-cluster", &["load-image", &image]);
    loaded
        .rsplit_once(':')
        .map(|(_, tag)| tag.to_owned())
        .unwrap_or_else(|| panic!("{loaded}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrading_the_chart_from_0_3_0_changes_no_token_and_refuses_no_call() {
    let _one = crate::ONE_AT_A_TIME.lock().await;
    let cp = node().await;
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (old_chart, old_commit) = previous_chart(tmp.path());
    let old_tag = previous_image(&old_commit);
    let system = Namespace::create(&cp, "up-system");
    let apps = Namespace::create(&cp, "up-apps");
    let name = format!("up-{}", support::suffix());
    let release = Release::adopt(&cp, &name, &system.name);
    let claim = format!("{}-store-data", release.fullname);
    let out = Command::new(support::repo_root().join("scripts/dev-cluster"))
        .args(["volume", &system.name, &claim])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let helm_args = |verb: &str, chart: &std::path::Path, tag: &str| {
        let sets = [
            format!("image.repository={OPERATOR_IMAGE}"),
            format!("image.tag={tag}"),
            format!("watchNamespace={}", apps.name),
        ];
        let mut a: Vec<String> = [
            verb,
            &name,
            chart.to_str().unwrap_or_default(),
            "-n",
            &system.name,
            "--wait",
            "--timeout",
            "180s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for s in &sets {
            a.extend(["--set".to_owned(), s.clone()]);
        }
        a
    };
    let args = helm_args("install", &old_chart, &old_tag);
    support::helm::helm_ok(&cp, &args.iter().map(String::as_str).collect::<Vec<_>>());
    release.grant_store_access(&apps.name);
    let collector = Collector::start().await;
    let tokens = "apiVersion: loop.dev/v1alpha1\nkind: ApiToken\nmetadata: {name: a}\nspec: {scopes: [orders:read]}\n---\n\
                  apiVersion: loop.dev/v1alpha1\nkind: ApiToken\nmetadata: {name: b}\nspec:\n  scopes: [orders:read]\n  rotation: {gracePeriod: 1h}\n";
    cp.apply_ok_in(&apps.name, tokens);
    let a = cp
        .wait_for_apitoken(&apps.name, "a", "a Ready", ready)
        .await;
    let b = cp
        .wait_for_apitoken(&apps.name, "b", "b Ready", ready)
        .await;
    let before = [
        (fingerprint(&a), secret_token(&cp, &apps.name, "a")),
        (fingerprint(&b), secret_token(&cp, &apps.name, "b")),
    ];
    cp.apply_ok_in(
        &apps.name,
        &consumer(
            "app",
            "a",
            TokenFrom::File,
            &release.store_url(),
            &collector.url,
            1,
        ),
    );
    collector
        .until(180, "the app active", |r| r.iter().any(|x| x.last_active))
        .await;
    let old_operators = release.pods("operator");

    // The upgrade, as the README says: helm upgrade, then the CRDs.
    let args = helm_args("upgrade", &support::helm::chart(), "dev");
    support::helm::helm_ok(&cp, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let crds = support::repo_root().join("charts/loop-token-operator/crds");
    cp.kubectl_ok(&[
        "apply",
        "--server-side",
        "-f",
        crds.to_str().unwrap_or_default(),
    ]);
    let version = support::helm::helm_ok(&cp, &["list", "-n", &system.name, "-o", "json"]);
    assert!(
        version.contains("loop-token-operator-0.4.0"),
        "upgraded: {version}"
    );
    // A new operator pod leads (and has reconciled what it found), and the app went on calling.
    // The operator's default --lease-name when it watches one namespace.
    let lease = format!("loop-token-operator-{}", apps.name);
    support::eventually(120, "a new operator pod leading", || {
        let h = lease_holder(&cp, &system.name, &lease);
        let old = old_operators.clone();
        async move { (!h.is_empty() && !old.iter().any(|p| h.starts_with(p.as_str()))).then_some(()) }
    })
    .await;
    let calls_now = collector.reports().iter().map(|r| r.calls).sum::<u64>();
    collector
        .until(120, "100 more calls after the upgrade", |r| {
            r.iter().map(|x| x.calls).sum::<u64>() >= calls_now + 100
        })
        .await;
    let a = cp
        .wait_for_apitoken(&apps.name, "a", "a Ready", ready)
        .await;
    let b = cp
        .wait_for_apitoken(&apps.name, "b", "b Ready", ready)
        .await;
    let after = [
        (fingerprint(&a), secret_token(&cp, &apps.name, "a")),
        (fingerprint(&b), secret_token(&cp, &apps.name, "b")),
    ];
    assert!(
        before == after,
        "a token changed in the upgrade (fingerprints {:?} -> {:?})",
        [&before[0].0, &before[1].0],
        [&after[0].0, &after[1].0]
    );
    let (active, refused, errors) = collector.totals();
    assert_eq!(
        refused, 0,
        "calls refused across the upgrade ({active} active, {errors} errors)"
    );
    figure(
        "chart upgrade 0.3.0 -> 0.4.0 with the app calling: active/refused/errors",
        format!("{active}/{refused}/{errors}"),
    );
}
