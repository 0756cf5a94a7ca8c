//! `loop-store serve`: configuration, start-up, background tasks and graceful shutdown.
//!
//! I/O shell: reads credential, scope, database URL and TLS files, creates the data directory
//! (0700) and the SQLite file (0600) for the owner only, opens the database, listens for
//! changes by other store processes (PostgreSQL), flushes usage, serves HTTP or HTTPS through
//! [`super::listen`] until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::cache::{Cache, Introspector};
use super::http::{self, AppState, Credential, Credentials};
use super::listen::{self, Limits};
use super::metrics::Metrics;
use super::notify;
use super::repo::{self, PoolSettings, Repository};
use super::scopes::{Catalogue, CatalogueError};
use super::tls::{self, ReloadingCert, TlsError, TlsFiles};
use super::trust::Trust;
use super::usage::Usage;
use super::writes::Writer;
use crate::clock::{Clock, Skew, corrected, system_clock};
use crate::serve::{
    CredentialError, SecretFileError, check_secret_file, read_credential, shutdown_signal,
};

/// Shortest credential accepted.
pub const MIN_CREDENTIAL_LEN: usize = 16;

/// Everything `serve` needs, already parsed (the binary maps flags and env onto this).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    /// A file holding the database URL (it may carry a password); excludes `database_url`.
    pub database_url_file: Option<PathBuf>,
    pub admin_token_file: Option<PathBuf>,
    pub introspect_token_file: Option<PathBuf>,
    pub admin_token_env: Option<String>,
    pub introspect_token_env: Option<String>,
    pub scopes_file: Option<PathBuf>,
    pub usage_flush_interval: Duration,
    pub pool: PoolSettings,
    pub introspection_cache: bool,
    /// With PostgreSQL: how long after a change commits elsewhere this process's cache may
    /// still answer as before (see [`super::trust`]).
    pub cache_trust_bound: Duration,
    /// Longest wait for introspection's database read; past it the answer is 503.
    pub db_read_timeout: Duration,
    /// Serve HTTPS with this certificate and key (reloaded when they change), else HTTP.
    pub tls: Option<TlsFiles>,
    /// How often the TLS files are checked for a change.
    pub tls_reload_interval: Duration,
    /// Timeouts, the connection limit and the shutdown deadline.
    pub limits: Limits,
}

/// Why the store cannot start. Messages say what to change.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "no {role} credential: pass --{flag}-token-file PATH (a file holding the secret) or set {env} (for local use); `loop-store generate-credential` makes one"
    )]
    MissingCredential {
        role: &'static str,
        flag: &'static str,
        env: &'static str,
    },
    #[error("cannot read the {role} credential file {path}")]
    CredentialFile {
        role: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the {role} credential is shorter than {MIN_CREDENTIAL_LEN} characters; use `loop-store generate-credential`"
    )]
    WeakCredential { role: &'static str },
    #[error(
        "the admin and introspection credentials are the same; they must differ so that Loop's API cannot manage tokens"
    )]
    SameCredentials,
    #[error(transparent)]
    InsecureFile(#[from] SecretFileError),
    #[error(transparent)]
    Catalogue(#[from] CatalogueError),
    #[error(
        "both --database-url and --database-url-file are given; keep one (the file: a URL with a password on the command line is visible to every user in the process list)"
    )]
    TwoDatabaseUrls,
    #[error("cannot read the database URL file {path}")]
    DatabaseUrlFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the database URL file {path} is empty")]
    EmptyDatabaseUrlFile { path: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot create the data directory {path}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the SQLite database file {path}")]
    DatabaseFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "another loop-store process is serving the SQLite database {path} (it holds {lock}); SQLite supports one store process per file: stop the other one, or use PostgreSQL (--database-url postgres://...) for several replicas"
    )]
    SqliteInUse { path: String, lock: String },
    #[error("cannot lock the SQLite database {path} (with {lock})")]
    SqliteLock {
        path: String,
        lock: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the database {url}")]
    Database {
        url: String,
        #[source]
        source: repo::OpenError,
    },
    #[error(transparent)]
    NoRandomness(#[from] notify::NoRandomness),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

fn credential(
    role: &'static str,
    flag: &'static str,
    env: &'static str,
    file: Option<&Path>,
    from_env: Option<&str>,
) -> Result<Credential, StartError> {
    let secret = read_credential(file, from_env).map_err(|e| match e {
        CredentialError::Missing => StartError::MissingCredential { role, flag, env },
        CredentialError::File { path, source } => StartError::CredentialFile {
            role,
            path: path.display().to_string(),
            source,
        },
        CredentialError::Empty => StartError::WeakCredential { role },
        CredentialError::Insecure(source) => StartError::InsecureFile(source),
    })?;
    if secret.len() < MIN_CREDENTIAL_LEN {
        return Err(StartError::WeakCredential { role });
    }
    Ok(Credential::new(&secret))
}

/// Resolve both credentials from files or env.
pub fn credentials(cfg: &ServeConfig) -> Result<Credentials, StartError> {
    let admin = credential(
        "admin",
        "admin",
        "LOOP_STORE_ADMIN_TOKEN",
        cfg.admin_token_file.as_deref(),
        cfg.admin_token_env.as_deref(),
    )?;
    let introspect = credential(
        "introspection",
        "introspect",
        "LOOP_STORE_INTROSPECT_TOKEN",
        cfg.introspect_token_file.as_deref(),
        cfg.introspect_token_env.as_deref(),
    )?;
    let creds = Credentials { admin, introspect };
    if same(&creds) {
        return Err(StartError::SameCredentials);
    }
    Ok(creds)
}

fn same(c: &Credentials) -> bool {
    c.admin.digest() == c.introspect.digest()
}

/// The database URL: the flag, the file, or a SQLite file in the data directory (the
/// directory created 0700 when absent). A SQLite file is created 0600 before SQLite opens it;
/// SQLite gives its `-wal` and `-shm` files the database file's permissions.
pub fn database_url(cfg: &ServeConfig) -> Result<String, StartError> {
    let url = match (&cfg.database_url, &cfg.database_url_file) {
        (Some(_), Some(_)) => return Err(StartError::TwoDatabaseUrls),
        (Some(url), None) => url.clone(),
        (None, Some(path)) => read_database_url(path)?,
        (None, None) => {
            create_private_dir(&cfg.data_dir)?;
            format!("sqlite://{}", cfg.data_dir.join("loop-store.db").display())
        }
    };
    if let Some(path) = sqlite_path(&url) {
        create_private_file(Path::new(path))?;
    }
    Ok(url)
}

fn read_database_url(path: &Path) -> Result<String, StartError> {
    let url = std::fs::read_to_string(path).map_err(|source| StartError::DatabaseUrlFile {
        path: path.display().to_string(),
        source,
    })?;
    check_secret_file(path, "database URL")?;
    let url = url.trim();
    if url.is_empty() {
        return Err(StartError::EmptyDatabaseUrlFile {
            path: path.display().to_string(),
        });
    }
    Ok(url.to_owned())
}

/// The file of a `sqlite:` URL, unless it is in memory.
fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && !path.starts_with(":memory:")).then_some(path)
}

/// Create a directory (and its parents) readable by the owner only; an existing one is kept.
fn create_private_dir(dir: &Path) -> Result<(), StartError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| StartError::DataDir {
        path: dir.display().to_string(),
        source,
    })
}

/// Create an empty file readable by the owner only, unless it exists (then it is kept as is).
fn create_private_file(path: &Path) -> Result<(), StartError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StartError::DatabaseFile {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Hold the SQLite file for this process alone: an exclusive `flock` on `<file>.lock`, kept
/// until the returned file is dropped (at exit). Two store processes on one file would each
/// trust their own cache and miss the other's revocations; the second is refused at start.
/// (A separate file: closing any descriptor of the database file itself would drop SQLite's own
/// POSIX locks.)
fn lock_sqlite(path: &Path) -> Result<std::fs::File, StartError> {
    let lock = PathBuf::from(format!("{}.lock", path.display()));
    let (shown, shown_lock) = (path.display().to_string(), lock.display().to_string());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options
        .open(&lock)
        .map_err(|source| StartError::SqliteLock {
            path: shown.clone(),
            lock: shown_lock.clone(),
            source,
        })?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(StartError::SqliteInUse {
            path: shown,
            lock: shown_lock,
        }),
        Err(e) => Err(StartError::SqliteLock {
            path: shown,
            lock: shown_lock,
            source: e.into(),
        }),
    }
}

/// Hide the password of a database URL for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}://{}:***@{}", &url[..s], user, &url[at + 1..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// A running store, for tests and the binary.
pub struct Running {
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), StartError>>,
}

impl Running {
    /// Stop accepting, finish in-flight requests, flush usage.
    pub async fn stop(self) -> Result<(), StartError> {
        let _ = self.shutdown.send(true);
        match self.task.await {
            Ok(r) => r,
            Err(_) => Ok(()),
        }
    }
}

/// What serving needs besides the router: the pieces shutdown waits for.
struct Parts {
    state: AppState,
    writer: Writer,
    usage: Arc<Usage>,
    repo: Arc<dyn Repository>,
    metrics: Arc<Metrics>,
    backend_url: String,
    /// The SQLite file's lock, held while the store runs.
    sqlite_lock: Option<std::fs::File>,
}

/// Read the configuration's files, open the database and build the HTTP state.
async fn open_parts(
    cfg: &ServeConfig,
    mut clock: Clock,
    shutdown_rx: &watch::Receiver<bool>,
) -> Result<Parts, StartError> {
    let credentials = credentials(cfg)?;
    let catalogue = match &cfg.scopes_file {
        Some(p) => Catalogue::load(p)?,
        None => Catalogue::default(),
    };
    let url = database_url(cfg)?;
    let sqlite_lock = sqlite_path(&url)
        .map(|p| lock_sqlite(Path::new(p)))
        .transpose()?;
    let opened = repo::open(&url, &cfg.pool)
        .await
        .map_err(|source| StartError::Database {
            url: redact_url(&url),
            source,
        })?;
    let repo = opened.repo;
    let metrics = Metrics::new();
    let usage = Arc::new(Usage::default());
    // A SQLite file has one writer, this process: its cache is trusted from the start. With
    // PostgreSQL the cache is trusted only within the trust bound of a heartbeat that came
    // back through the change listener.
    let cache = match &opened.postgres {
        None => Arc::new(Cache::always_trusted()),
        Some(pool) => {
            let cache = Arc::new(Cache::new(Trust::bounded(cfg.cache_trust_bound)));
            let options = (*pool.connect_options()).clone();
            let skew = Arc::new(Skew::default());
            let local = Arc::clone(&clock);
            clock = corrected(Arc::clone(&local), Arc::clone(&skew));
            metrics.follow_skew(Arc::clone(&skew));
            let trusted = notify::spawn(
                options,
                Arc::clone(&cache),
                Arc::clone(&metrics),
                (local, skew),
                shutdown_rx.clone(),
            )?;
            // Serve once the cache is trusted (or after 10 s, reading the database).
            let _ = tokio::time::timeout(Duration::from_secs(10), trusted).await;
            cache
        }
    };
    let introspector = Arc::new(
        Introspector::new(
            Arc::clone(&repo),
            Arc::clone(&cache),
            Arc::clone(&usage),
            Arc::clone(&metrics),
            cfg.introspection_cache,
        )
        .with_read_timeout(cfg.db_read_timeout),
    );
    let writer = Writer::new(Arc::clone(&repo), Arc::clone(&cache));
    let state = AppState {
        repo: Arc::clone(&repo),
        writer: writer.clone(),
        introspector,
        catalogue: Arc::new(catalogue),
        credentials: Arc::new(credentials),
        metrics: Arc::clone(&metrics),
        clock,
    };
    Ok(Parts {
        state,
        writer,
        usage,
        repo,
        metrics,
        backend_url: redact_url(&url),
        sqlite_lock,
    })
}

/// The TLS acceptor and its reloader, when TLS is configured.
fn start_tls(
    cfg: &ServeConfig,
    shutdown_rx: &watch::Receiver<bool>,
) -> Result<Option<tokio_rustls::TlsAcceptor>, StartError> {
    let Some(files) = &cfg.tls else {
        return Ok(None);
    };
    let cert = Arc::new(ReloadingCert::load(files.clone())?);
    let acceptor = tls::acceptor(Arc::clone(&cert))?;
    tls::spawn_reloader(cert, cfg.tls_reload_interval, shutdown_rx.clone());
    Ok(Some(acceptor))
}

/// Start the store; returns once it is listening.
pub async fn start(cfg: ServeConfig, clock: Clock) -> Result<Running, StartError> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let tls = start_tls(&cfg, &shutdown_rx)?;
    let parts = open_parts(&cfg, clock, &shutdown_rx).await?;
    let (listener, addr) = bind(cfg.listen).await?;
    let flusher = spawn_usage_flusher(
        parts.usage,
        Arc::clone(&parts.repo),
        parts.metrics,
        cfg.usage_flush_interval,
        shutdown_rx.clone(),
    );
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, scheme, backend = parts.repo.backend(), database = %parts.backend_url, cache = cfg.introspection_cache, "listening");
    let app = http::app(parts.state);
    let writer = parts.writer;
    let sqlite_lock = parts.sqlite_lock;
    let drain_deadline = cfg.limits.shutdown_deadline;
    let task = tokio::spawn(async move {
        listen::serve(listener, tls, app, cfg.limits, shutdown_rx).await;
        // Every connection is closed: writes whose request was dropped may still be running.
        // They get one more deadline (a write hung on the database must not hold the exit;
        // its transaction is then rolled back by the database when the process goes).
        if tokio::time::timeout(drain_deadline, writer.drain())
            .await
            .is_err()
        {
            tracing::warn!(deadline = ?drain_deadline, "writes still running at the shutdown deadline; exiting without them");
        }
        let _ = flusher.await;
        // The last write is done: another process may take the file now.
        drop(sqlite_lock);
        Ok(())
    });
    Ok(Running {
        addr,
        shutdown: shutdown_tx,
        task,
    })
}

/// Listen on `listen`; returns the listener and the address it got (the port of `:0`).
async fn bind(listen: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), StartError> {
    let err = |source| StartError::Listen {
        addr: listen,
        source,
    };
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(err)?;
    let addr = listener.local_addr().map_err(err)?;
    Ok((listener, addr))
}

/// Run until SIGTERM or Ctrl-C.
pub async fn serve(cfg: ServeConfig) -> Result<(), StartError> {
    let running = start(cfg, system_clock()).await?;
    shutdown_signal().await;
    tracing::info!("shutting down: finishing requests and flushing usage");
    running.stop().await
}

fn spawn_usage_flusher(
    usage: Arc<Usage>,
    repo: Arc<dyn Repository>,
    metrics: Arc<Metrics>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stopping = tokio::select! {
                _ = tick.tick() => false,
                _ = shutdown.wait_for(|s| *s) => true,
            };
            if let Err(e) = usage.flush(repo.as_ref()).await {
                metrics.usage_flush_failed();
                tracing::warn!(error = %e, pending = usage.pending(), "could not write usage figures; keeping them for the next flush");
            }
            if stopping {
                break;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("sqlite://x/y.db"), "sqlite://x/y.db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }
}
