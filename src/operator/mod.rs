//! The operator: the `ApiToken` custom resource and its reconcile loop.
//!
//! Pure (no I/O; unit-tested without a cluster):
//! - [`crd`]: the resource's types, schema and CEL rules;
//! - [`policy_crd`]: the `ApiTokenPolicy` resource (which namespaces may ask for which scopes);
//! - [`policy`]: how policies select namespaces and combine, checking an ApiToken, the admission digest;
//! - [`names`]: every name other parts agree on (DESIGN.md §3), condition and Event reasons;
//! - [`plan`]: the decision core (what to issue, update, expire, revoke);
//! - [`schedule`]: how a token ages (expiry, when it is due, which rotate values rotate);
//! - [`status`]: conditions and status from a plan and an outcome;
//! - [`deletion`]: what deleting an ApiToken does (Revoke, Orphan, Abandon) and when one adopts an orphan;
//! - [`decide`]: the shell's own decisions (trusting the cache, announcing, writing status);
//! - [`secret`]: the Secret record (the Secret to write, reading one back, the cache form);
//! - [`events`]: the wording of every Event;
//! - [`watch`]: what the watch caches keep and which changes wake the controller;
//! - [`error`]: the reconcile error, one variant per failed operation.
//!
//! I/O shell:
//! - [`reconcile`]: observe → plan → act passes, status writes, deletion;
//! - [`act`]: carrying out one planned action;
//! - [`handover`]: orphaning a token on deletion, adopting it later, abandoning revocation;
//! - [`tenancy`]: policy and namespace watches, holding violations, the admission digest, the cluster's name;
//! - [`kube_io`]: the Kubernetes calls for one ApiToken;
//! - [`store_client`]: the client of `loop-store`;
//! - [`metrics`]: Prometheus metrics;
//! - [`crash`]: the crash-test hook;
//! - [`leader`]: leader election on a Lease;
//! - [`run`]: wiring (configuration, watches, controller, metrics server).

pub mod act;
pub mod cache;
pub mod crash;
pub mod crd;
pub mod decide;
pub mod deletion;
pub mod error;
pub mod events;
pub mod handover;
pub mod kube_io;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod plan;
pub mod policy;
pub mod policy_crd;
pub mod reconcile;
pub mod rollout;
pub mod rollout_io;
pub mod run;
pub mod schedule;
pub mod secret;
pub mod status;
pub mod store_client;
pub mod tenancy;
pub mod usage;
pub mod watch;
