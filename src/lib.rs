//! loop-token-operator: declarative Loop Admin API tokens on Kubernetes.
//!
//! The library holds everything the binaries share:
//! - [`token`]: minting, parsing, hashing and fingerprinting Loop tokens (pure, no I/O beyond the
//!   OS random source);
//! - [`store`]: the `loop-store` service (HTTP API, storage backends, introspection cache).

pub mod cli;
pub mod operator;
pub mod store;
pub mod telemetry;
pub mod token;
