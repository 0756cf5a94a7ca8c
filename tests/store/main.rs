//! Tests of `loop-store`: the storage contract on SQLite and a real PostgreSQL, the HTTP API
//! through its router, and real store processes (several on one PostgreSQL, an outage, cut
//! connections, shutdown, start-up errors, a log scan), and two RFC 7662 client libraries against
//! a real process. One test binary; each test gets a fresh
//! database.

#[path = "../support/mod.rs"]
mod support;

mod contract;
mod http;
mod http_abuse;
mod processes;
mod rfc7662;
