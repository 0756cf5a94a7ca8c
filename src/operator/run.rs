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
use kube::runtime::{Controller, controller, watcher};
use kube::{Api, Client};

use super::controller::{Context, error_policy, reconcile};
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
    #[error("cannot listen on {addr} for metrics")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
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
    let ctx = Arc::new(Context {
        client: client.clone(),
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

    // Only the Secrets the operator manages are watched, and only their changes wake their owner.
    let owned =
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
    Controller::new(tokens, watcher::Config::default())
        .owns(secrets, owned)
        .with_config(controller::Config::default().concurrency(cfg.concurrency))
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
    tracing::info!("loop-token-operator stopped");
    Ok(())
}
