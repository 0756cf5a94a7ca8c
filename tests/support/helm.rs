//! Helm (built by `scripts/dev-cluster build`) against the local cluster, with its caches in
//! the temporary directory.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use super::ControlPlane;

pub fn chart() -> PathBuf {
    super::repo_root().join("charts/loop-token-operator")
}

pub fn helm(cp: &ControlPlane, args: &[&str]) -> std::process::Output {
    let bin = String::from_utf8(
        Command::new(super::repo_root().join("scripts/dev-cluster"))
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

pub fn helm_ok(cp: &ControlPlane, args: &[&str]) -> String {
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
