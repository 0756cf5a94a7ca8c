//! The operator: the `ApiToken` custom resource and its reconcile loop.
//!
//! Four folders, each importing only from the ones before it (`tests/architecture.rs` checks):
//!
//! - [`resource`]: the custom resources and every name other parts agree on;
//! - [`core`]: the decisions, pure (no I/O, no `.await`, the clock passed in), unit-tested
//!   without a cluster;
//! - [`shell`]: the I/O: observe, call [`core`], apply the result (Kubernetes, the store,
//!   caches, metrics);
//! - [`runtime`]: wiring (configuration, watches, controller, leader election, servers).

pub mod core;
pub mod resource;
pub mod runtime;
pub mod shell;

#[cfg(test)]
mod architecture;
