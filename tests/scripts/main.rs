//! Tests of the project's scripts that start control planes of their own: `make demo` and
//! `scripts/dev-cluster` under faults. Each test that starts one holds [`ONE_CONTROL_PLANE`]
//! while it runs, so on a 2-core machine at most one extra control plane starts at a time
//! (besides the shared one of the `cluster` tests).

#[path = "../support/mod.rs"]
mod support;

mod demo;
mod dev_cluster;

/// Held by each test here that starts a control plane, for its whole run.
pub static ONE_CONTROL_PLANE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
