//! `loop-store`: the Loop token store.
//!
//! Holds token hashes with their names, scopes, owners, expiry, revocation and usage, and
//! answers Loop's API on every call: "is this token valid, with which scopes?".
//!
//! - [`model`], [`scopes`]: pure domain types and validation (the wire types are in
//!   [`crate::api`]; the scope catalogue is read from its file at start-up);
//! - [`repo`]: storage (SQLite, PostgreSQL);
//! - [`cache`]: the in-memory introspection cache and its invalidation rules;
//! - [`trust`]: when the cache may answer (the trust bound; pure);
//! - [`notify`]: the change listener and its heartbeat (PostgreSQL);
//! - [`writes`]: every change to a registration, with its cache invalidation, as one unit;
//! - [`usage`]: coalesced usage counters;
//! - [`http`]: the HTTP API (`app(state) -> Router`), one file per concern;
//! - [`metrics`]: Prometheus metrics;
//! - [`server`]: wiring for `loop-store serve` (files, sockets, database, signals);
//! - [`listen`]: the HTTP transport (accept loop, timeouts, connection limit, bounded shutdown);
//! - [`tls`]: the certificate and key, reloaded when their files change.
//!
//! Only [`server`], [`listen`], [`notify`], [`tls`] and [`repo`] do I/O of their own; [`cache`], [`usage`], [`writes`] and
//! [`http`] reach the database through [`repo`].

pub mod cache;
pub mod http;
pub mod listen;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod repo;
pub mod scopes;
pub mod server;
pub mod tls;
pub mod trust;
pub mod usage;
pub mod writes;
