//! `loop-store`: the Loop token store. See `loop-store --help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use loop_token_operator::cli::parse_duration;
use loop_token_operator::store::http::ApiDoc;
use loop_token_operator::store::repo::PoolSettings;
use loop_token_operator::store::server::{self, ServeConfig};
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
    /// Print a new random credential (for --admin-token-file / --introspect-token-file).
    GenerateCredential,
    /// Print the OpenAPI document of the HTTP API.
    Openapi,
}

#[derive(Args)]
#[command(
    after_help = "Credentials can also come from LOOP_STORE_ADMIN_TOKEN and LOOP_STORE_INTROSPECT_TOKEN \
(for local use; files are preferred because they can be mounted from Kubernetes Secrets).\n\
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
    /// Several store processes need PostgreSQL.
    #[arg(long, env = "LOOP_STORE_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
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
    /// Answer introspection from memory (on) or query the database every time (off; a
    /// benchmark baseline, not for production).
    #[arg(long, env = "LOOP_STORE_INTROSPECTION_CACHE", default_value = "on", value_parser = ["on", "off"])]
    introspection_cache: String,
    /// Log format.
    #[arg(
        long,
        env = "LOOP_STORE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(a) => {
            init_logging(a.log_format);
            let cfg = ServeConfig {
                listen: a.listen,
                data_dir: a.data_dir,
                database_url: a.database_url,
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
            };
            server::serve(cfg).await.context("loop-store failed")?;
        }
        Command::GenerateCredential => {
            let t = loop_token_operator::token::Token::mint()
                .context("cannot generate a credential")?;
            // A credential, not a Loop token: the same strong random format, a different prefix.
            println!(
                "lsc_{}",
                &t.expose()[loop_token_operator::token::PREFIX.len()..]
            );
        }
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
