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

pub(crate) mod core;
pub mod resource;
pub(crate) mod runtime;
pub(crate) mod shell;

// What the binaries and the tests use; everything else is the crate's own, so that the
// compiler reports what nothing uses.
pub use self::core::policy::{Limit, Unselected, Violation};
pub use self::core::status::Readiness;
pub use self::runtime::leader::LeaderElection;
pub use self::runtime::run::{RunConfig, StartError, run};
pub use self::shell::crash;
pub use self::shell::metrics::Metrics;
pub use self::shell::store_client::{Trust, tls_config};
pub use self::shell::tenancy::{TenancyConfig, parse_configmap};

#[cfg(test)]
mod architecture;
