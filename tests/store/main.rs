//! Tests of `loop-store`: the storage contract on SQLite and a real PostgreSQL; the HTTP API
//! through its router, and under abuse; real store processes (several on one PostgreSQL, an
//! outage, cut connections, shutdown, start-up errors, a log scan); serving (TLS and its
//! reload, timeouts, the connection limit, file permissions); and two RFC 7662 client libraries
//! against a real process. One test binary; each test gets a fresh database.

#[path = "../support/mod.rs"]
mod support;

mod contract;
mod http;
mod http_abuse;
mod processes;
mod rfc7662;
mod serving;
