//! The I/O: observe, ask [`super::core`], apply the result. Imports [`super::core`] and
//! [`super::resource`], never [`super::runtime`].
//!
//! - [`context`]: what every reconcile shares (clients, caches, settings);
//! - [`reconcile`]: observe → plan → act passes, the only writer of status, deletion, policy holds;
//! - [`act`]: carrying out one planned action, and the one revocation loop;
//! - [`handover`]: orphaning a token on deletion, adopting it later, abandoning revocation;
//! - [`rollout_io`]: reading and restarting rollout targets ([`super::core::rollout`] decides);
//! - [`tenancy`]: policy and namespace watches, the admission digest, the cluster's name
//!   ([`super::core::policy`] decides);
//! - [`kube_io`]: the Kubernetes calls for one ApiToken;
//! - [`store_client`]: the client of `loop-store`;
//! - [`cache`]: the compact watch caches ([`super::core::watch`] says what they keep);
//! - [`metrics`]: Prometheus metrics;
//! - [`sweep_io`]: the sweep of registrations nothing accounts for ([`super::core::sweep`] decides);
//! - [`crash`]: the crash-test hook.

pub mod act;
pub mod cache;
pub mod context;
pub mod crash;
pub mod handover;
pub mod kube_io;
pub mod metrics;
pub mod reconcile;
pub mod rollout_io;
pub mod store_client;
pub mod sweep_io;
pub mod tenancy;
