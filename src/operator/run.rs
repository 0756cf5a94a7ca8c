//! `loop-token-operator run`: wiring. I/O shell: connects to Kubernetes and the store, serves
//! metrics and health, runs the controller until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::utils::PredicateConfig;
use kube::runtime::{Controller, WatchStreamExt, controller, reflector, watcher};
use kube::{Api, Client};

use super::controller::{
    Context, error_policy, reconcile, secret_for_cache, token_for_cache, triggers,
};
use super::crd::ApiToken;
use super::metrics::Metrics;
use super::names::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use super::store_client::StoreClient;

/// Everything `run` needs, already parsed.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub store_url: String,
    pub store_token_file: Option<PathBuf>,
    pub store_token_env: Option<String>,
    pub cluster_name: String,
    pub namespace: Option<String>,
    pub metrics_addr: SocketAddr,
    pub concurrency: u16,
    pub usage_interval: Duration,
    pub store_timeout: Duration,
    pub retry_after: Duration,
    pub crash_at: Option<String>,
    pub leader_election: Option<LeaderElection>,
}

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

/// Why the operator cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "no store credential: pass --store-token-file PATH (the store's admin credential) or set LOOP_STORE_TOKEN"
    )]
    NoCredential,
    #[error("cannot read the store credential file {path}")]
    CredentialFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--store-url must be an http:// or https:// URL")]
    StoreUrl,
    #[error("cannot create the store client: {0}")]
    StoreClient(String),
    #[error("cannot connect to Kubernetes (is KUBECONFIG set, or is this running in a cluster?)")]
    Kube(#[source] kube::Error),
    #[error("leader election on Lease {namespace}/{name} failed")]
    LeaderElection {
        namespace: String,
        name: String,
        #[source]
        source: kube_lease_manager::LeaseManagerError,
    },
    #[error("lost the leadership of Lease {0}; exiting so that only the new leader acts")]
    LostLeadership(String),
    #[error("cannot listen on {addr} for metrics")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

type Lease = (
    tokio::sync::watch::Receiver<bool>,
    tokio::task::JoinHandle<
        Result<kube_lease_manager::LeaseManager, kube_lease_manager::LeaseManagerError>,
    >,
    LeaderElection,
);

/// Wait until this process holds the Lease. `None` when a shutdown signal came first.
async fn acquire_leadership(
    client: Client,
    le: &LeaderElection,
) -> Result<Option<Lease>, StartError> {
    let err = |source| StartError::LeaderElection {
        namespace: le.namespace.clone(),
        name: le.lease_name.clone(),
        source,
    };
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client, &le.lease_name)
        .with_namespace(&le.namespace)
        .with_identity(&le.identity)
        .with_duration(le.duration.as_secs().max(2))
        .with_grace(le.grace.as_secs().max(1))
        .build()
        .await
        .map_err(err)?;
    let (mut leader, task) = manager.watch().await;
    tracing::info!(lease = %format!("{}/{}", le.namespace, le.lease_name), identity = %le.identity, "waiting for leadership");
    let signal = tokio::signal::ctrl_c();
    tokio::pin!(signal);
    while !*leader.borrow_and_update() {
        tokio::select! {
            changed = leader.changed() => {
                if changed.is_err() {
                    let e = match task.await {
                        Ok(Err(e)) => e,
                        _ => kube_lease_manager::LeaseManagerError::InconsistentState("the lease manager stopped".into()),
                    };
                    return Err(err(e));
                }
            }
            _ = terminate() => return Ok(None),
            _ = &mut signal => return Ok(None),
        }
    }
    tracing::info!(lease = %format!("{}/{}", le.namespace, le.lease_name), identity = %le.identity, "became leader");
    Ok(Some((leader, task, le.clone())))
}

async fn terminate() {
    #[cfg(unix)]
    {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
            return;
        }
    }
    std::future::pending::<()>().await;
}

fn credential(cfg: &RunConfig) -> Result<String, StartError> {
    let raw = match (&cfg.store_token_file, &cfg.store_token_env) {
        (Some(p), _) => {
            std::fs::read_to_string(p).map_err(|source| StartError::CredentialFile {
                path: p.display().to_string(),
                source,
            })?
        }
        (None, Some(v)) => v.clone(),
        (None, None) => return Err(StartError::NoCredential),
    };
    let c = raw.trim().to_owned();
    if c.is_empty() {
        Err(StartError::NoCredential)
    } else {
        Ok(c)
    }
}

/// Run until a shutdown signal.
pub async fn run(cfg: RunConfig) -> Result<(), StartError> {
    if !(cfg.store_url.starts_with("http://") || cfg.store_url.starts_with("https://")) {
        return Err(StartError::StoreUrl);
    }
    let metrics = Metrics::new();
    let observer_metrics = Arc::clone(&metrics);
    let store = StoreClient::new(&cfg.store_url, &credential(&cfg)?, cfg.store_timeout)
        .map_err(|e| StartError::StoreClient(e.to_string()))?
        .with_observer(Arc::new(move |op, secs, outcome| {
            observer_metrics.store_call(op, secs, outcome)
        }));
    let client = Client::try_default().await.map_err(StartError::Kube)?;
    let reporter = Reporter {
        controller: "loop-token-operator".into(),
        instance: std::env::var("POD_NAME")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok()),
    };
    let (secret_cache, secret_writer) = reflector::store::<Secret>();
    let ctx = Arc::new(Context {
        client: client.clone(),
        secrets: secret_cache,
        store,
        cluster: cfg.cluster_name.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        metrics: Arc::clone(&metrics),
        usage_interval: cfg.usage_interval,
        retry_after: cfg.retry_after,
        crash_at: cfg.crash_at.clone(),
    });
    let (tokens, secrets): (Api<ApiToken>, Api<Secret>) = match &cfg.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };

    let listener = tokio::net::TcpListener::bind(cfg.metrics_addr)
        .await
        .map_err(|source| StartError::Listen {
            addr: cfg.metrics_addr,
            source,
        })?;
    let metrics_app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || {
                let m = Arc::clone(&metrics);
                async move {
                    match m.encode() {
                        Ok(text) => (
                            [(
                                header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            text,
                        )
                            .into_response(),
                        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                    }
                }
            }),
        );
    let metrics_addr = listener.local_addr().unwrap_or(cfg.metrics_addr);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, metrics_app).await {
            tracing::error!(error = %e, "metrics server failed");
        }
    });
    tracing::info!(
        store = %cfg.store_url,
        cluster = %cfg.cluster_name,
        namespace = cfg.namespace.as_deref().unwrap_or("(all)"),
        metrics = %metrics_addr,
        concurrency = cfg.concurrency,
        "loop-token-operator started"
    );

    let lease = match &cfg.leader_election {
        Some(le) => match acquire_leadership(client.clone(), le).await? {
            Some(lease) => Some(lease),
            None => return Ok(()), // asked to stop while waiting
        },
        None => None,
    };

    // Both caches drop what the operator never reads (less memory per object), and the Secret
    // cache keeps fingerprints, not tokens.
    let (token_cache, token_writer) = reflector::store::<ApiToken>();
    let token_changes = watcher(tokens, watcher::Config::default())
        .default_backoff()
        .modify(token_for_cache)
        .reflect(token_writer)
        .applied_objects()
        .predicate_filter(triggers, PredicateConfig::default());
    // Only the Secrets the operator manages are watched (and cached), and any change to one,
    // its deletion included, wakes its owner.
    let owned =
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
    let secret_changes = watcher(secrets, owned)
        .default_backoff()
        .modify(secret_for_cache)
        .reflect(secret_writer)
        .touched_objects();
    let controller = Controller::for_stream(token_changes, token_cache)
        .owns_stream(secret_changes)
        .with_config(controller::Config::default().concurrency(cfg.concurrency))
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        });
    match lease {
        None => controller.await,
        Some((mut leader, lease_task, le)) => {
            // Losing the lease drops the controller at once (no further writes); a shutdown
            // signal drains it and then releases the lease so a standby takes over now.
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
                    tracing::error!(lease = %le.lease_name, "lost leadership; stopping at once");
                    return Err(StartError::LostLeadership(format!("{}/{}", le.namespace, le.lease_name)));
                }
            }
            leader.mark_unchanged();
            drop(leader);
            match tokio::time::timeout(Duration::from_secs(5), lease_task).await {
                Ok(Ok(Ok(_))) => tracing::info!(lease = %le.lease_name, "released the lease"),
                _ => {
                    tracing::warn!(lease = %le.lease_name, "could not release the lease; it expires by itself")
                }
            }
        }
    }
    tracing::info!("loop-token-operator stopped");
    Ok(())
}
