//! What every reconcile shares: the clients, caches and settings the shell's modules take.
//! I/O module (it holds the clients); built once by [`crate::operator::runtime::run`].

use std::sync::Arc;
use std::time::Duration;

use kube::Client;

use crate::operator::shell::cache::SecretCache;
use crate::operator::shell::kube_io::Publisher;
use crate::operator::shell::metrics::Metrics;
use crate::operator::shell::store_client::StoreClient;
use crate::operator::shell::tenancy::Tenancy;

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    /// The owned Secrets (label-selected), as last seen by the controller's watch.
    pub secrets: SecretCache,
    pub store: StoreClient,
    pub cluster: String,
    /// Publishes Events.
    pub events: Publisher,
    pub metrics: Arc<Metrics>,
    /// How often usage figures are refreshed from the store.
    pub usage_interval: Duration,
    /// How long to wait before retrying after an error.
    pub retry_after: Duration,
    /// Test hook (see [`crate::operator::shell::crash`]).
    pub crash_at: Option<String>,
    /// ApiTokenPolicies and namespaces.
    pub tenancy: Tenancy,
}
