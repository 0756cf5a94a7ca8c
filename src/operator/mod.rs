//! The operator: the `ApiToken` custom resource and (to come) its reconcile loop.
//!
//! - [`crd`]: the resource's types, schema and CEL rules (pure);
//! - [`names`]: every name other parts agree on (DESIGN.md §3), in one place;
//! - [`plan`]: the pure decision core (what to issue, update, expire, revoke).

pub mod controller;
pub mod crd;
pub mod metrics;
pub mod names;
pub mod plan;
pub mod run;
pub mod status;
pub mod store_client;
