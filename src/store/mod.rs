//! `loop-store`: the Loop token store.
//!
//! Holds token hashes with their names, scopes, owners, expiry, revocation and usage, and
//! answers Loop's API on every call: "is this token valid, with which scopes?".
//!
//! - [`model`], [`scopes`]: pure types and validation;
//! - [`repo`]: storage (SQLite, PostgreSQL);
//! - [`cache`]: the in-memory introspection cache and its invalidation rules;
//! - [`writes`]: every change to a registration, with its cache invalidation, as one unit;
//! - [`usage`]: coalesced usage counters;
//! - [`http`]: the HTTP API (`app(state) -> Router`);
//! - [`metrics`]: Prometheus metrics;
//! - [`server`]: wiring for `loop-store serve`.

pub mod cache;
pub mod http;
pub mod metrics;
pub mod model;
pub mod repo;
pub mod scopes;
pub mod server;
pub mod usage;
pub mod writes;
