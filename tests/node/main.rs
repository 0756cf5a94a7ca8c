//! Tests on the local cluster's node (`scripts/dev-cluster up --node`, started when absent): the
//! chart installed as users install it, real pods through their probes, and the consumer app
//! (`tests/consumer/app.rs`) calling the store with its token across rotations, rollouts, a
//! store pod's loss and a leader failover. One test at a time (two cores run
//! one chart install well), each in namespaces of its own; the figures each test prints
//! (`FIGURE ...` lines) are collected in docs/benchmarks.md, never asserted on.

#[path = "../support/mod.rs"]
mod support;

mod common;
mod failover;
mod postgres;
mod quick_start;
mod rollout;
mod rotation;

/// The node tests share one node and two cores: one at a time.
pub(crate) static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
