//! `make demo` from this checkout: every step passes, no token is printed, and `demo down`
//! stops everything it started. Runs with its own control plane and state directories, so the
//! other tests' control plane is untouched.

use crate::support;

use std::process::Command;

/// Any `loop_` followed by 42 base62 characters (a whole token) in `text`.
fn contains_a_token(text: &str) -> bool {
    text.match_indices("loop_").any(|(i, _)| {
        let rest = &text.as_bytes()[i + 5..];
        rest.len() >= 42 && rest[..42].iter().all(u8::is_ascii_alphanumeric)
    })
}

#[test]
fn the_demo_walks_through_a_token_life_and_tears_down() {
    let _one = crate::ONE_CONTROL_PLANE.blocking_lock();
    let tmp = tempfile::tempdir().unwrap();
    let demo_dir = tmp.path().join("demo");
    let cluster_dir = tmp.path().join("cluster");
    let run = |arg: Option<&str>| {
        let mut cmd = Command::new(support::repo_root().join("scripts/demo"));
        cmd.args(arg)
            .env("LOOP_DEMO_DIR", &demo_dir)
            .env("LOOP_DEV_CLUSTER_DIR", &cluster_dir);
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run scripts/demo: {e}"))
    };
    let out = run(None);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Whatever happens, stop what the demo started.
    let down = run(Some("down"));
    assert!(out.status.success(), "the demo failed:\n{text}");
    for step in [
        "every ApiToken is Ready",
        "active, with exactly the scopes of spec.scopes",
        "scopes updated in place",
        "is in the Secret and active",
        "still active during its grace period",
        "inactive after its grace period",
        "revoked",
        "removed by the garbage collector",
        "every step passed",
    ] {
        assert!(text.contains(step), "missing step {step:?} in:\n{text}");
    }
    assert!(!text.contains('✗'), "{text}");
    assert!(!contains_a_token(&text), "the demo printed a token");
    assert!(
        contains_a_token("x loop_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP y"),
        "the scanner works"
    );

    assert!(
        down.status.success(),
        "demo down failed: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(
        !demo_dir.exists() && !cluster_dir.exists(),
        "demo down removes its state"
    );
    let left = Command::new("pgrep")
        .args(["-af", &tmp.path().display().to_string()])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&left.stdout).trim().is_empty(),
        "processes left: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}
