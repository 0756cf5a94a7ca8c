//! `loop-token-operator run`: wiring. I/O shell: connects to Kubernetes and the store, serves
//! metrics and health, runs the controller until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::events::Reporter;
use kube::runtime::{Controller, WatchStreamExt, controller, reflector, watcher};
use kube::{Api, Client};

use crate::operator::resource::crd::ApiToken;
use crate::operator::resource::names::{FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::operator::runtime::leader;
use crate::operator::shell::cache::{self, CachedToken, Changes, SecretCache};
use crate::operator::shell::context::Context;
use crate::operator::shell::kube_io::Publisher;
use crate::operator::shell::metrics::Metrics;
use crate::operator::shell::reconcile::{error_policy, reconcile};
use crate::operator::shell::store_client::{StoreClient, Trust};
use crate::operator::shell::sweep_io;
use crate::operator::shell::tenancy::{self, TenancyConfig, TenancyError, Watches};
use crate::serve::{self, CredentialError, SecretFileError};

/// Everything `run` needs, already parsed.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub store_url: String,
    pub store_token_file: Option<PathBuf>,
    pub store_token_env: Option<String>,
    /// PEM file of the CA that signed the store's certificate (https:// only); else the
    /// system's roots.
    pub store_ca_file: Option<PathBuf>,
    /// `None`: the uid of the `kube-system` namespace.
    pub cluster_name: Option<String>,
    pub namespace: Option<String>,
    pub metrics_addr: SocketAddr,
    pub concurrency: u16,
    pub usage_interval: Duration,
    pub store_timeout: Duration,
    pub retry_after: Duration,
    pub crash_at: Option<String>,
    pub leader_election: Option<leader::LeaderElection>,
    /// Export per-ApiToken expiry and next-rotation gauges (labelled by namespace and name).
    pub per_token_metrics: bool,
    pub tenancy: TenancyConfig,
    /// How often the store's registrations of this cluster that nothing accounts for are
    /// revoked (see [`crate::operator::core::sweep`]); zero: never.
    pub sweep_interval: Duration,
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
    #[error(transparent)]
    InsecureFile(#[from] SecretFileError),
    #[error("--store-url must be an http:// or https:// URL")]
    StoreUrl,
    #[error(
        "--store-ca-file is set but --store-url is not https://; use https:// (the store then needs --tls-cert-file and --tls-key-file) or drop --store-ca-file"
    )]
    CaFileWithoutHttps,
    #[error("cannot read the store CA file {path}")]
    StoreCaFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the store client: {0}")]
    StoreClient(String),
    #[error("cannot connect to Kubernetes (is KUBECONFIG set, or is this running in a cluster?)")]
    Kube(#[source] kube::Error),
    #[error(transparent)]
    Leader(#[from] leader::Error),
    #[error(transparent)]
    Tenancy(#[from] TenancyError),
    #[error("cannot listen on {addr} for metrics")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The store's admin credential, from `--store-token-file` or `LOOP_STORE_TOKEN`.
fn credential(cfg: &RunConfig) -> Result<String, StartError> {
    serve::read_credential(
        cfg.store_token_file.as_deref(),
        cfg.store_token_env.as_deref(),
    )
    .map_err(|e| match e {
        CredentialError::File { path, source } => StartError::CredentialFile {
            path: path.display().to_string(),
            source,
        },
        CredentialError::Missing | CredentialError::Empty => StartError::NoCredential,
        CredentialError::Insecure(source) => StartError::InsecureFile(source),
    })
}

/// Run until a shutdown signal.
pub async fn run(cfg: RunConfig) -> Result<(), StartError> {
    if !(cfg.store_url.starts_with("http://") || cfg.store_url.starts_with("https://")) {
        return Err(StartError::StoreUrl);
    }
    let metrics = Metrics::new(cfg.per_token_metrics);
    let store = store_client(&cfg, Arc::clone(&metrics))?;
    let client = Client::try_default().await.map_err(StartError::Kube)?;
    let cluster = tenancy::cluster_name(&client, cfg.cluster_name.clone()).await?;
    let (tenancy, watches) =
        tenancy::start(&client, &cfg.tenancy, cfg.namespace.as_deref()).await?;
    let secret_cache = SecretCache::default();
    let ctx = Arc::new(Context {
        client: client.clone(),
        secrets: secret_cache.clone(),
        store,
        cluster: cluster.clone(),
        events: Publisher::new(client.clone(), reporter()),
        metrics: Arc::clone(&metrics),
        usage_interval: cfg.usage_interval,
        retry_after: cfg.retry_after,
        crash_at: cfg.crash_at.clone(),
        tenancy,
    });
    let metrics_addr = serve_metrics(cfg.metrics_addr, metrics).await?;
    tracing::info!(
        store = %cfg.store_url,
        cluster = %cluster,
        namespace = cfg.namespace.as_deref().unwrap_or("(all)"),
        metrics = %metrics_addr,
        concurrency = cfg.concurrency,
        "loop-token-operator started"
    );
    let lease = match &cfg.leader_election {
        Some(le) => match leader::acquire(client.clone(), le).await? {
            Some(lease) => Some(lease),
            None => return Ok(()), // asked to stop while waiting
        },
        None => None,
    };
    let sweeping = sweep(Arc::clone(&ctx), cfg.namespace.clone(), cfg.sweep_interval);
    let controller = controller(&client, &cfg, ctx, secret_cache, watches);
    // The sweep runs beside the controller, while this process leads, and stops with it.
    let work = async move {
        tokio::select! {
            () = controller => {}
            () = sweeping => {}
        }
    };
    match lease {
        None => work.await,
        Some(lease) => leader::run_while_leading(work, lease).await?,
    }
    tracing::info!("loop-token-operator stopped");
    Ok(())
}

/// The sweep, for ever (or never, with a zero interval).
async fn sweep(ctx: Arc<Context>, namespace: Option<String>, every: Duration) {
    if every.is_zero() {
        return std::future::pending().await;
    }
    sweep_io::run(&ctx, namespace.as_deref(), every).await;
}

/// Which certificates the store client trusts.
fn trust(cfg: &RunConfig) -> Result<Trust, StartError> {
    let https = cfg.store_url.starts_with("https://");
    match &cfg.store_ca_file {
        None => Ok(Trust::SystemRoots),
        Some(_) if !https => Err(StartError::CaFileWithoutHttps),
        Some(path) => {
            std::fs::read(path)
                .map(Trust::CaBundle)
                .map_err(|source| StartError::StoreCaFile {
                    path: path.display().to_string(),
                    source,
                })
        }
    }
}

/// The store client, reporting each call to the metrics.
fn store_client(cfg: &RunConfig, metrics: Arc<Metrics>) -> Result<StoreClient, StartError> {
    Ok(StoreClient::new(
        &cfg.store_url,
        &credential(cfg)?,
        cfg.store_timeout,
        &trust(cfg)?,
    )
    .map_err(|e| StartError::StoreClient(e.to_string()))?
    .with_observer(Arc::new(move |op, secs, outcome| {
        metrics.store_call(op, secs, outcome)
    })))
}

/// Who publishes the Events: this controller, in this pod.
fn reporter() -> Reporter {
    Reporter {
        controller: FIELD_MANAGER.into(),
        instance: std::env::var("POD_NAME")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok()),
    }
}

/// Serve /healthz, /readyz and /metrics in the background; returns the bound address.
async fn serve_metrics(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<SocketAddr, StartError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || {
                let encoded = metrics.encode();
                async move {
                    match encoded {
                        Ok(text) => serve::openmetrics(text),
                        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                    }
                }
            }),
        );
    let bound = listener.local_addr().unwrap_or(addr);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server failed");
        }
    });
    Ok(bound)
}

/// Objects per page of a watch's (re-)list. Each page is decoded whole, managedFields included,
/// before the caches drop what they do not keep: at kube's default of 500, the pages were the
/// largest item of the heap profile of a restart (issue 16). 100 costs a few more LIST requests.
const LIST_PAGE: u32 = 100;

fn list_config() -> watcher::Config {
    watcher::Config::default().page_size(LIST_PAGE)
}

/// The controller over narrow watches, until a shutdown signal drains it.
///
/// Both caches drop what the operator never reads and keep the rest in compact form (less
/// memory per object: see [`cache`]), and the Secret cache keeps fingerprints, not tokens.
/// Only the Secrets the operator manages are watched (and cached), and any change to one, its
/// deletion included, wakes its owner; ApiTokens wake it only on the changes
/// [`crate::operator::core::watch::triggers`] names ([`Changes`]), and on the changes to ApiTokenPolicies and
/// namespaces that concern them (see [`tenancy`]).
fn controller(
    client: &Client,
    cfg: &RunConfig,
    ctx: Arc<Context>,
    secret_cache: SecretCache,
    tenancy: Watches,
) -> impl std::future::Future<Output = ()> + use<> {
    let (tokens, secrets): (Api<ApiToken>, Api<Secret>) = match &cfg.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let (token_cache, token_writer) = reflector::store::<CachedToken>();
    let token_changes = watcher(tokens, list_config())
        .default_backoff()
        .map_ok(cache::compact_event)
        .reflect(token_writer)
        .try_filter_map({
            let mut changes = Changes::default();
            move |event| futures::future::ready(Ok(changes.wake(event)))
        });
    let owned = list_config().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
    let secret_changes = watcher(secrets, owned)
        .default_backoff()
        .map_ok(move |event| cache::secret_event(&secret_cache, event))
        .touched_objects();
    let controller =
        Controller::for_stream(token_changes, token_cache.clone()).owns_stream(secret_changes);
    let (controller, digest) = tenancy.wire(controller, token_cache);
    let controller = controller
        .with_config(controller::Config::default().concurrency(cfg.concurrency))
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        });
    // The digest writer runs beside the controller, and stops with it.
    async move {
        match digest {
            Some(d) => {
                futures::pin_mut!(controller);
                let writer = d.run();
                futures::pin_mut!(writer);
                futures::future::select(controller, writer).await;
            }
            None => controller.await,
        }
    }
}
