//! Leader election on a coordination Lease (kube-lease-manager): one active operator, standbys
//! waiting. I/O module.
//!
//! Losing the lease drops the controller at once (no further writes); a shutdown signal drains
//! it and then releases the lease, so a standby takes over without waiting for it to expire.

use std::future::Future;
use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Leader election settings: one active operator per Lease.
#[derive(Debug, Clone)]
pub struct LeaderElection {
    pub namespace: String,
    pub lease_name: String,
    pub identity: String,
    /// How long a lease stays valid without renewal; a standby takes over at most this long
    /// after the leader dies.
    pub duration: Duration,
    /// Renew this long before the lease would expire.
    pub grace: Duration,
}

/// Why leader election stopped the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("leader election on Lease {namespace}/{name} failed")]
    Failed {
        namespace: String,
        name: String,
        #[source]
        source: kube_lease_manager::LeaseManagerError,
    },
    #[error("lost the leadership of Lease {0}; exiting so that only the new leader acts")]
    Lost(String),
}

/// A lease this process holds.
pub struct Lease {
    leader: watch::Receiver<bool>,
    task: JoinHandle<Result<LeaseManager, LeaseManagerError>>,
    settings: LeaderElection,
}

/// Wait until this process holds the Lease. `None` when a shutdown signal came first.
pub async fn acquire(client: Client, le: &LeaderElection) -> Result<Option<Lease>, Error> {
    let err = |source| Error::Failed {
        namespace: le.namespace.clone(),
        name: le.lease_name.clone(),
        source,
    };
    let manager = LeaseManagerBuilder::new(client, &le.lease_name)
        .with_namespace(&le.namespace)
        .with_identity(&le.identity)
        .with_duration(le.duration.as_secs().max(2))
        .with_grace(le.grace.as_secs().max(1))
        .build()
        .await
        .map_err(err)?;
    let (mut leader, task) = manager.watch().await;
    let lease = format!("{}/{}", le.namespace, le.lease_name);
    tracing::info!(%lease, identity = %le.identity, "waiting for leadership");
    let stop = crate::serve::shutdown_signal();
    tokio::pin!(stop);
    while !*leader.borrow_and_update() {
        tokio::select! {
            changed = leader.changed() => {
                if changed.is_err() {
                    let e = match task.await {
                        Ok(Err(e)) => e,
                        _ => LeaseManagerError::InconsistentState("the lease manager stopped".into()),
                    };
                    return Err(err(e));
                }
            }
            () = &mut stop => return Ok(None),
        }
    }
    tracing::info!(%lease, identity = %le.identity, "became leader");
    Ok(Some(Lease {
        leader,
        task,
        settings: le.clone(),
    }))
}

/// Run `controller` while this process leads; release the lease when it ends.
pub async fn run_while_leading(
    controller: impl Future<Output = ()>,
    lease: Lease,
) -> Result<(), Error> {
    let Lease {
        mut leader,
        task,
        settings,
    } = lease;
    let name = format!("{}/{}", settings.namespace, settings.lease_name);
    let mut watch_loss = leader.clone();
    let lost = async move {
        while watch_loss.changed().await.is_ok() {
            if !*watch_loss.borrow() {
                return;
            }
        }
    };
    tokio::select! {
        () = controller => {}
        () = lost => {
            tracing::error!(lease = %name, "lost leadership; stopping at once");
            return Err(Error::Lost(name));
        }
    }
    leader.mark_unchanged();
    drop(leader);
    match tokio::time::timeout(Duration::from_secs(5), task).await {
        Ok(Ok(Ok(_))) => tracing::info!(lease = %name, "released the lease"),
        _ => tracing::warn!(lease = %name, "could not release the lease; it expires by itself"),
    }
    Ok(())
}
