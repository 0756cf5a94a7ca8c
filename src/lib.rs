//! loop-token-operator: declarative Loop Admin API tokens on Kubernetes.
//!
//! The library holds everything the binaries share:
//! - [`token`]: minting, parsing, hashing and fingerprinting Loop tokens (pure, no I/O beyond the
//!   OS random source);
//! - [`api`]: the store's v1 wire types, served by the store and sent and read by the
//!   operator (pure; strict requests, tolerant responses);
//! - [`clock`]: the injectable source of "now" (reads the system clock);
//! - [`store`]: the `loop-store` service (HTTP API, storage backends, introspection cache);
//! - [`operator`]: the `loop-token-operator` controller (pure plan and status, store client,
//!   reconcile shell);
//! - [`cli`]: command-line helpers of both binaries (pure);
//! - [`serve`]: start-up plumbing of both binaries: credentials from files (with a permission
//!   check), the shutdown signal, the `/metrics` answer, the process's rustls provider (files,
//!   signals);
//! - [`telemetry`]: log set-up (stderr).

pub mod api;
pub mod cli;
pub mod clock;
pub mod operator;
pub mod serve;
pub mod store;
pub mod telemetry;
pub mod token;
