//! What the node tests share: a release with its store's volume, ApiTokens and their Secrets.

use crate::support;

use loop_token_operator::operator::resource::crd::ApiToken;
use support::ControlPlane;
use support::node::{Namespace, Release};

/// The chart installed as `release` in `system`, watching only `apps`, the store on SQLite with
/// a volume of the node for its claim; `sets` on top.
pub fn install(
    cp: &ControlPlane,
    release: &str,
    system: &Namespace,
    apps: &Namespace,
    sets: &[&str],
) -> Release {
    let fullname = Release::adopt_name(release);
    let claim = format!("{fullname}-store-data");
    let out = std::process::Command::new(support::repo_root().join("scripts/dev-cluster"))
        .args(["volume", &system.name, &claim])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let watch = format!("watchNamespace={}", apps.name);
    let mut all = vec![watch.as_str()];
    all.extend_from_slice(sets);
    Release::install(cp, release, &system.name, &all)
}

/// The ApiToken's current fingerprint ("" before the first).
pub fn fingerprint(t: &ApiToken) -> String {
    t.status
        .as_ref()
        .and_then(|s| s.fingerprint.clone())
        .unwrap_or_default()
}

pub fn ready(t: &ApiToken) -> bool {
    t.status.as_ref().is_some_and(|s| s.is_true("Ready"))
}

/// The plaintext in the key `token` of the Secret `name` in `ns` (kept in the test only).
pub fn secret_token(cp: &ControlPlane, ns: &str, name: &str) -> String {
    let b64 = cp.kubectl_in(ns, &["get", "secret", name, "-o", "jsonpath={.data.token}"]);
    let bytes = support::node::base64_decode(b64.trim());
    String::from_utf8(bytes).unwrap_or_else(|e| panic!("{e}"))
}

/// A figure for docs/benchmarks.md, on the test's output.
pub fn figure(name: &str, value: impl std::fmt::Display) {
    println!("FIGURE {name}: {value}");
}

/// The holder of the Lease `name` in `ns` ("" while there is none, or no Lease yet).
pub fn lease_holder(cp: &ControlPlane, ns: &str, name: &str) -> String {
    let out = cp.kubectl(&[
        "get",
        "lease",
        name,
        "-n",
        ns,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
