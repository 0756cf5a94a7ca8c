//! `scripts/dev-cluster` under faults: no way to get binaries, a component that dies at start,
//! and leftover state from a killed run. Each case uses its own state directory, so the shared
//! control plane of the other tests is untouched.

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn dev_cluster(state: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(support::repo_root().join("scripts/dev-cluster"));
    cmd.args(args)
        .env("LOOP_DEV_CLUSTER_DIR", state)
        .env("LOOP_DEV_CLUSTER_READY_TIMEOUT", "60");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run dev-cluster: {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn processes_mentioning(state: &Path) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-af", &state.display().to_string()])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn without_go_or_assets_it_says_what_to_install() {
    let tmp = tempfile::tempdir().unwrap();
    let empty_cache = tmp.path().join("cache");
    // A PATH with the system tools but no Go toolchain.
    let out = dev_cluster(
        &tmp.path().join("state"),
        &["up"],
        &[
            ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            ("LOOP_K8S_CACHE", empty_cache.to_str().unwrap_or_default()),
        ],
    );
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("no Go toolchain found") && t.contains("KUBEBUILDER_ASSETS"),
        "{t}"
    );
}

#[tokio::test]
async fn a_component_that_dies_fails_up_with_its_log_and_stops_the_rest() {
    let _one = crate::ONE_CONTROL_PLANE.lock().await;
    // Real binaries come from the shared build; a fake kube-apiserver placed in
    // KUBEBUILDER_ASSETS (which wins over the cache) exits at once.
    support::control_plane().await;
    let tmp = tempfile::tempdir().unwrap();
    let assets = tmp.path().join("assets");
    std::fs::create_dir_all(&assets).unwrap();
    let real_etcd = String::from_utf8(
        Command::new(support::repo_root().join("scripts/dev-cluster"))
            .args(["bin", "etcd"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    std::os::unix::fs::symlink(real_etcd.trim(), assets.join("etcd")).unwrap();
    let fake = assets.join("kube-apiserver");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'fake apiserver: cannot start (this is the test)' >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();

    let state = tmp.path().join("state");
    let out = dev_cluster(
        &state,
        &["up"],
        &[("KUBEBUILDER_ASSETS", assets.to_str().unwrap_or_default())],
    );
    assert!(!out.status.success(), "up succeeded with a dead apiserver");
    let t = text(&out);
    assert!(t.contains("kube-apiserver exited before ready"), "{t}");
    assert!(
        t.contains("fake apiserver: cannot start (this is the test)"),
        "the log tail is shown: {t}"
    );
    assert!(
        processes_mentioning(&state).is_empty(),
        "etcd was left running: {:?}",
        processes_mentioning(&state)
    );
}

#[tokio::test]
async fn leftover_state_from_a_killed_run_is_cleaned_on_the_next_up() {
    let _one = crate::ONE_CONTROL_PLANE.lock().await;
    support::control_plane().await; // the binaries exist
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let out = dev_cluster(&state, &["up"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    // Kill everything it started, as a crash or a reboot would.
    let pids = processes_mentioning(&state);
    assert!(
        pids.len() >= 3,
        "expected etcd, kube-apiserver, kube-controller-manager: {pids:?}"
    );
    let _ = Command::new("pkill")
        .args(["-KILL", "-f", &state.display().to_string()])
        .status();
    assert!(
        !dev_cluster(&state, &["status"], &[]).status.success(),
        "status must say down"
    );

    let out = dev_cluster(&state, &["up"], &[]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("removing leftover state"), "{t}");
    let again = dev_cluster(&state, &["up"], &[]);
    assert!(
        text(&again).contains("already up"),
        "up is idempotent: {}",
        text(&again)
    );
    let out = dev_cluster(&state, &["down"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!state.exists(), "down removes the state");
    assert!(
        processes_mentioning(&state).is_empty(),
        "down stops every process: {:?}",
        processes_mentioning(&state)
    );
}
