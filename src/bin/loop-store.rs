//! `loop-store`: the Loop token store. See `loop-store --help`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use loop_token_operator::cli::parse_duration;
use loop_token_operator::serve::write_secret_file;
use loop_token_operator::store::http::ApiDoc;
use loop_token_operator::store::listen::Limits;
use loop_token_operator::store::repo::PoolSettings;
use loop_token_operator::store::server::{self, ServeConfig};
use loop_token_operator::store::tls::TlsFiles;
use loop_token_operator::telemetry::{LogFormat, init_logging};
use utoipa::OpenApi;

#[derive(Parser)]
#[command(
    name = "loop-store",
    version,
    about = "The Loop token store: token hashes, scopes, usage, and RFC 7662 introspection"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve(Box<ServeArgs>),
    /// Make a new random credential (for --admin-token-file / --introspect-token-file).
    GenerateCredential(GenerateArgs),
    /// Print the OpenAPI document of the HTTP API.
    Openapi,
}

#[derive(Args)]
#[command(
    after_help = "Without --output the credential is printed to stdout; a shell redirection \
creates the file with your umask (usually readable by everyone): prefer --output."
)]
struct GenerateArgs {
    /// Write the credential to this new file, readable by you only (0600); an existing file is
    /// never overwritten.
    #[arg(long, env = "LOOP_STORE_CREDENTIAL_OUTPUT")]
    output: Option<PathBuf>,
}

#[derive(Args)]
#[command(
    after_help = "Credentials can also come from LOOP_STORE_ADMIN_TOKEN and LOOP_STORE_INTROSPECT_TOKEN \
(for local use; files are preferred because they can be mounted from Kubernetes Secrets).\n\
Files holding secrets (credentials, --tls-key-file, --database-url-file) that other users can \
write are refused; readable by every user is warned about.\n\
Logs go to stderr; RUST_LOG filters them (default: info)."
)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "LOOP_STORE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Directory of the embedded SQLite database (used when --database-url is not given).
    #[arg(long, env = "LOOP_STORE_DATA_DIR", default_value = "loop-store-data")]
    data_dir: PathBuf,
    /// sqlite://PATH or postgres://USER:PASSWORD@HOST/DB. Default: SQLite in --data-dir.
    /// Several store processes need PostgreSQL. A password given as this flag is visible in
    /// the process list: set the variable instead, or use --database-url-file.
    #[arg(long, env = "LOOP_STORE_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// File holding the database URL (e.g. a mounted Secret); instead of --database-url.
    #[arg(
        long,
        env = "LOOP_STORE_DATABASE_URL_FILE",
        conflicts_with = "database_url"
    )]
    database_url_file: Option<PathBuf>,
    /// File holding the management credential (the operator's).
    #[arg(long, env = "LOOP_STORE_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// File holding the introspection credential (Loop API's).
    #[arg(long, env = "LOOP_STORE_INTROSPECT_TOKEN_FILE")]
    introspect_token_file: Option<PathBuf>,
    /// JSON scope catalogue: {"resources": {"<resource>": "read" | "write"}}. Default: Loop's resources.
    #[arg(long, env = "LOOP_STORE_SCOPES_FILE")]
    scopes_file: Option<PathBuf>,
    /// How often coalesced usage figures are written (e.g. 5s, 1m).
    #[arg(long, env = "LOOP_STORE_USAGE_FLUSH_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    usage_flush_interval: Duration,
    /// Largest number of database connections.
    #[arg(long, env = "LOOP_STORE_DB_MAX_CONNECTIONS", default_value_t = 10)]
    db_max_connections: u32,
    /// How long a request waits for a database connection before answering 503.
    #[arg(long, env = "LOOP_STORE_DB_ACQUIRE_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    db_acquire_timeout: Duration,
    /// Longest wait for introspection's database read (a connection included) before it
    /// answers 503.
    #[arg(long, env = "LOOP_STORE_DB_READ_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    db_read_timeout: Duration,
    /// With PostgreSQL: how long after a change (a revocation) commits through another store
    /// process this one may still answer from its cache as before. The cache answers only
    /// while a heartbeat sent through the database every quarter of this came back through
    /// the change listener within it; otherwise introspection reads the database, or answers
    /// 503. Between 200ms and 1h.
    #[arg(long, env = "LOOP_STORE_CACHE_TRUST_BOUND", default_value = "2s", value_parser = parse_trust_bound)]
    cache_trust_bound: Duration,
    /// Answer introspection from memory (on) or query the database every time (off; a
    /// benchmark baseline, not for production).
    #[arg(long, env = "LOOP_STORE_INTROSPECTION_CACHE", default_value = "on", value_parser = ["on", "off"])]
    introspection_cache: String,
    /// PEM certificate chain to serve HTTPS with (needs --tls-key-file). Re-read when the
    /// file changes (e.g. renewed by cert-manager). Without it the store serves plain HTTP.
    #[arg(long, env = "LOOP_STORE_TLS_CERT_FILE", requires = "tls_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, env = "LOOP_STORE_TLS_KEY_FILE", requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
    /// How often the TLS files are checked for a new certificate.
    #[arg(long, env = "LOOP_STORE_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    tls_reload_interval: Duration,
    /// Longest wait for a client's TLS handshake and for each request's headers; the
    /// connection is closed after it.
    #[arg(long, env = "LOOP_STORE_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    header_read_timeout: Duration,
    /// Longest time to receive a request body, start to end.
    #[arg(long, env = "LOOP_STORE_BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    body_timeout: Duration,
    /// Most connections open at once; further clients wait to be accepted until one closes.
    #[arg(long, env = "LOOP_STORE_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// After SIGTERM: how long in-flight requests may take before the remaining connections
    /// are closed (keep it below the pod's terminationGracePeriodSeconds, 30s by default).
    #[arg(long, env = "LOOP_STORE_SHUTDOWN_DEADLINE", default_value = "20s", value_parser = parse_duration)]
    shutdown_deadline: Duration,
    /// Log format.
    #[arg(
        long,
        env = "LOOP_STORE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
}

fn parse_trust_bound(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    use loop_token_operator::store::trust::{MAX_BOUND, MIN_BOUND};
    if d < MIN_BOUND {
        return Err(format!(
            "{s} is shorter than {MIN_BOUND:?}: a heartbeat is sent every quarter of the bound"
        ));
    }
    if d > MAX_BOUND {
        return Err(format!(
            "{s} is longer than {MAX_BOUND:?}: a bound that long promises little"
        ));
    }
    Ok(d)
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn serve_config(a: ServeArgs) -> ServeConfig {
    let tls = match (a.tls_cert_file, a.tls_key_file) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        _ => None,
    };
    ServeConfig {
        listen: a.listen,
        data_dir: a.data_dir,
        database_url: a.database_url,
        database_url_file: a.database_url_file,
        admin_token_file: a.admin_token_file,
        introspect_token_file: a.introspect_token_file,
        admin_token_env: non_empty_env("LOOP_STORE_ADMIN_TOKEN"),
        introspect_token_env: non_empty_env("LOOP_STORE_INTROSPECT_TOKEN"),
        scopes_file: a.scopes_file,
        usage_flush_interval: a.usage_flush_interval,
        pool: PoolSettings {
            max_connections: a.db_max_connections,
            acquire_timeout: a.db_acquire_timeout,
        },
        introspection_cache: a.introspection_cache == "on",
        cache_trust_bound: a.cache_trust_bound,
        db_read_timeout: a.db_read_timeout,
        tls,
        tls_reload_interval: a.tls_reload_interval,
        limits: Limits {
            header_read_timeout: a.header_read_timeout,
            body_timeout: a.body_timeout,
            max_connections: usize::try_from(a.max_connections).unwrap_or(usize::MAX),
            shutdown_deadline: a.shutdown_deadline,
        },
    }
}

/// A new credential: the token format's strong randomness with its own prefix.
fn generate_credential(output: Option<&Path>) -> anyhow::Result<()> {
    let t = loop_token_operator::token::Token::mint().context("cannot generate a credential")?;
    // A credential, not a Loop token: the same strong random format, a different prefix.
    let credential = format!(
        "lsc_{}",
        &t.expose()[loop_token_operator::token::PREFIX.len()..]
    );
    match output {
        None => println!("{credential}"),
        Some(path) => write_secret_file(path, format!("{credential}\n").as_bytes())
            .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?,
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    loop_token_operator::serve::install_crypto_provider();
    match Cli::parse().command {
        Command::Serve(a) => {
            init_logging(a.log_format);
            server::serve(serve_config(*a))
                .await
                .context("loop-store failed")?;
        }
        Command::GenerateCredential(g) => generate_credential(g.output.as_deref())?,
        Command::Openapi => {
            println!(
                "{}",
                ApiDoc::openapi()
                    .to_pretty_json()
                    .context("cannot render the OpenAPI document")?
            );
        }
    }
    Ok(())
}
