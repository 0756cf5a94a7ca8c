//! The decisions, pure: no I/O, no `.await`, no Kubernetes or store client, the clock passed in;
//! unit-tested without a cluster. Imports only [`super::resource`] (and the crate's wire types).
//!
//! - [`vocabulary`]: the shared words: what the spec asks for, what was observed, what to do
//!   and why (a leaf: the rule modules below share it without importing one another);
//! - [`spec`]: the spec parsed, defaults applied;
//! - [`plan`]: the decision core (what to issue, update, expire, revoke);
//! - [`schedule`]: how a token ages (expiry, when it is due, which rotate values rotate);
//! - [`usage`]: usage that acts (unused, retiring early, still in use);
//! - [`rollout`]: which workloads to restart and whether they have rolled out;
//! - [`deletion`]: what deleting an ApiToken does (Revoke, Orphan, Abandon), adopting an orphan;
//! - [`policy`]: how ApiTokenPolicies select namespaces and combine, the admission digest;
//! - [`status`]: conditions and status from a plan and an outcome;
//! - [`decide`]: the shell's own decisions (trusting the cache, announcing, writing status);
//! - [`secret`]: the Secret record (the Secret to write, reading one back, the cache form);
//! - [`events`]: the wording of every Event;
//! - [`watch`]: what the watch caches keep and which changes wake the controller;
//! - [`error`]: the reconcile error, one variant per failed operation, and the store's errors;
//! - [`sweep`]: which of the cluster's registrations nothing accounts for any more.

pub mod decide;
pub mod deletion;
pub mod error;
pub mod events;
pub mod plan;
pub mod policy;
pub mod rollout;
pub mod schedule;
pub mod secret;
pub mod spec;
pub mod status;
pub mod sweep;
pub mod usage;
pub mod vocabulary;
pub mod watch;
