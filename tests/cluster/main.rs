//! Tests against the shared local Kubernetes control plane (`scripts/dev-cluster up`, started
//! on first use): the CRD's validation, the control plane itself, the operator end to end, the
//! Helm chart, tenancy (ApiTokenPolicies, deletion policies), tokens that age, usage that acts, Flux from Git,
//! Argo CD's Lua and the container image. One test binary (one link of kube, sqlx and axum);
//! each test works in its own namespace, so they run in parallel.

#[path = "../support/mod.rs"]
mod support;

mod aging;
mod argocd_lua;
mod crd;
mod flux;
mod foundation;
mod helm_chart;
mod image;
mod operator_e2e;
mod rollout;
mod tenancy;
mod usage;
