//! `loop-token-operator`: keeps Loop API tokens in Kubernetes Secrets. See `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use loop_token_operator::cli::parse_duration;
use loop_token_operator::operator::LeaderElection;
use loop_token_operator::operator::Unselected;
use loop_token_operator::operator::{RunConfig, run};
use loop_token_operator::operator::{TenancyConfig, parse_configmap};
use loop_token_operator::telemetry::{LogFormat, init_logging};

#[derive(Parser)]
#[command(
    name = "loop-token-operator",
    version,
    about = "Kubernetes operator for declarative Loop Admin API tokens (ApiToken, loop.dev/v1alpha1)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller against the cluster of the current kubeconfig (or in-cluster config).
    Run(Box<RunArgs>),
}

#[derive(Args)]
#[command(
    after_help = "The store credential can also come from LOOP_STORE_TOKEN (for local use).\n\
The CRD is installed from crds/ (or by the Helm chart), not by the operator.\n\
Logs go to stderr; RUST_LOG filters them (default: info)."
)]
struct RunArgs {
    /// Base URL of loop-store.
    #[arg(long, env = "LOOP_STORE_URL")]
    store_url: String,
    /// File holding the store's admin credential.
    #[arg(long, env = "LOOP_STORE_TOKEN_FILE")]
    store_token_file: Option<PathBuf>,
    /// PEM file of the CA that signed the store's TLS certificate (with an https:// --store-url;
    /// without it, the system's roots are trusted).
    #[arg(long, env = "LOOP_STORE_CA_FILE")]
    store_ca_file: Option<PathBuf>,
    /// Name of this cluster, recorded as the owner of each token in the store. Default: the uid
    /// of the kube-system namespace (unique per cluster, so clusters sharing a store never
    /// record the same name).
    #[arg(long, env = "LOOP_CLUSTER_NAME")]
    cluster_name: Option<String>,
    /// Watch one namespace only (default: all namespaces).
    #[arg(long, env = "LOOP_NAMESPACE")]
    namespace: Option<String>,
    /// Address of the metrics and health endpoints (/metrics, /healthz, /readyz).
    #[arg(long, env = "LOOP_METRICS_ADDR", default_value = "127.0.0.1:9090")]
    metrics_addr: SocketAddr,
    /// ApiTokens reconciled at once.
    #[arg(long, env = "LOOP_CONCURRENCY", default_value_t = 4)]
    concurrency: u16,
    /// How often usage figures (last used, use count) are read from the store.
    #[arg(long, env = "LOOP_USAGE_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    usage_interval: Duration,
    /// How often to revoke the store's active registrations of this cluster that no live
    /// ApiToken owns and no Secret of the operator holds: revocations lost by a restore of the
    /// store's database or a failover. Also once at start-up; 0 turns it off. See
    /// docs/operator.md ("The sweep").
    #[arg(long, env = "LOOP_SWEEP_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    sweep_interval: Duration,
    /// Timeout of each call to the store.
    #[arg(long, env = "LOOP_STORE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    store_timeout: Duration,
    /// Wait before retrying a failed reconcile.
    #[arg(long, env = "LOOP_RETRY_AFTER", default_value = "5s", value_parser = parse_duration)]
    retry_after: Duration,
    /// Export two gauges per ApiToken, labelled with its namespace and name (`apitoken_namespace`,
    /// `apitoken`): when its token
    /// expires and when it is next due to rotate (for alerts). Off by default: one series per
    /// ApiToken.
    #[arg(long, env = "LOOP_PER_TOKEN_METRICS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    per_token_metrics: bool,
    /// ApiTokens in a namespace that no ApiTokenPolicy selects: allow (as without policies) or
    /// deny (Stalled, reason PolicyViolation).
    #[arg(
        long,
        env = "LOOP_UNSELECTED_NAMESPACES",
        value_enum,
        default_value = "allow"
    )]
    unselected_namespaces: Unselected,
    /// NAMESPACE/NAME of the ConfigMap the chart's ApiToken admission policy reads: the leader
    /// writes the combined ApiTokenPolicies there. Unset: not written.
    #[arg(long, env = "LOOP_ADMISSION_CONFIGMAP", value_parser = parse_configmap)]
    admission_configmap: Option<(String, String)>,
    /// Log format.
    #[arg(long, env = "LOOP_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Elect one active operator through a coordination Lease (others wait as standbys).
    #[arg(long, env = "LOOP_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Namespace of the Lease. Default: POD_NAMESPACE, else "default".
    #[arg(long, env = "LOOP_LEADER_ELECTION_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Name of the Lease. Default: loop-token-operator (loop-token-operator-<namespace> with --namespace).
    #[arg(long, env = "LOOP_LEASE_NAME")]
    lease_name: Option<String>,
    /// How long the lease stays valid without renewal: the longest a standby waits after the
    /// leader dies.
    #[arg(long, env = "LOOP_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    lease_duration: Duration,
    /// Renew the lease this long before it would expire.
    #[arg(long, env = "LOOP_LEASE_RENEW_BEFORE", default_value = "5s", value_parser = parse_duration)]
    lease_renew_before: Duration,
}

/// This process's name in the Lease: the pod name (or host name) and a random suffix, so two
/// processes on one host are two candidates.
fn identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "operator".to_owned());
    let suffix = loop_token_operator::token::Token::mint()
        .map(|t| t.expose()[loop_token_operator::token::PREFIX.len()..][..8].to_owned())
        .unwrap_or_default();
    format!("{host}-{suffix}")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Command::Run(a) = Cli::parse().command;
    loop_token_operator::serve::install_crypto_provider();
    init_logging(a.log_format);
    let leader_election = a.leader_election.then(|| LeaderElection {
        namespace: a
            .leader_election_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".to_owned()),
        lease_name: a.lease_name.clone().unwrap_or_else(|| match &a.namespace {
            Some(ns) => format!("loop-token-operator-{ns}"),
            None => "loop-token-operator".to_owned(),
        }),
        identity: identity(),
        duration: a.lease_duration,
        grace: a.lease_renew_before,
    });
    let cfg = RunConfig {
        store_url: a.store_url,
        store_token_file: a.store_token_file,
        store_ca_file: a.store_ca_file,
        store_token_env: std::env::var("LOOP_STORE_TOKEN")
            .ok()
            .filter(|v| !v.trim().is_empty()),
        cluster_name: a.cluster_name,
        namespace: a.namespace,
        metrics_addr: a.metrics_addr,
        concurrency: a.concurrency,
        usage_interval: a.usage_interval,
        sweep_interval: a.sweep_interval,
        store_timeout: a.store_timeout,
        retry_after: a.retry_after,
        // Test hook for the crash tests (debug builds only); undocumented in --help on purpose.
        crash_at: loop_token_operator::operator::crash::configured(),
        leader_election,
        per_token_metrics: a.per_token_metrics,
        tenancy: TenancyConfig {
            unselected: a.unselected_namespaces,
            admission_configmap: a.admission_configmap,
        },
    };
    run(cfg).await.context("loop-token-operator failed")
}
