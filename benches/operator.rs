//! Operator benchmarks against the real API server (the local control plane of
//! `scripts/dev-cluster`): create-to-Ready latency, rotation and deletion latency, bulk creation
//! of N ApiTokens against the plain-client baseline (N Secrets), API-server writes per token read
//! from kube-apiserver's own `apiserver_request_total`, writes while idle, and the operator's
//! peak memory.
//!
//!   KUBECONFIG=... cargo bench --bench operator -- --help
//!
//! The program starts its own `loop-store` (SQLite) and `loop-token-operator` (release builds,
//! leader election off, default concurrency) and prints one JSON document on stdout; progress
//! goes to stderr. `scripts/bench operator` runs it and writes `bench-results/operator.{json,md}`.
//! Tokens are read from the Secrets only to ask the store whether they are active; they are
//! never printed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use loop_token_operator::operator::resource::crd::ApiToken;
use serde_json::{Value, json};
use tokio::sync::mpsc;

const ADMIN: &str = "bench-admin-credential-000000";
const INTROSPECT: &str = "bench-introspect-credential-0";

#[derive(Parser, Debug)]
#[command(about = "Operator benchmarks against the real API server (see docs/benchmarks.md)")]
struct Args {
    /// The loop-store binary (a release build).
    #[arg(long)]
    store_bin: PathBuf,
    /// The loop-token-operator binary (a release build).
    #[arg(long)]
    operator_bin: PathBuf,
    /// A scratch directory for the store's database and the processes' logs.
    #[arg(long)]
    work: PathBuf,
    /// Sequential create, rotate and delete rounds for the latency figures.
    #[arg(long, default_value_t = 100)]
    rounds: usize,
    /// Bulk sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    bulk: Vec<usize>,
    /// Requests in flight when the benchmark creates or deletes objects in bulk (the same for
    /// the baseline and for ApiTokens).
    #[arg(long, default_value_t = 32)]
    client_concurrency: usize,
    /// How long to watch for writes once the largest bulk set has converged.
    #[arg(long, default_value = "300")]
    idle_secs: u64,
    /// Extra arguments for the operator (for comparisons, e.g. --concurrency 16).
    #[arg(long, allow_hyphen_values = true)]
    operator_arg: Vec<String>,
    /// A program the operator is started through, which must `exec` it so that the operator
    /// keeps its pid (for heap profiles: a heaptrack preload wrapper). Its memory figures are
    /// then the profiled process's, not comparable with a plain run.
    #[arg(long)]
    operator_wrapper: Option<PathBuf>,
}

/// Counts of kube-apiserver's `apiserver_request_total`, by (verb, resource, subresource).
type Counts = BTreeMap<(String, String, String), u64>;

const WRITE_VERBS: &[&str] = &[
    "POST",
    "PUT",
    "PATCH",
    "APPLY",
    "DELETE",
    "DELETECOLLECTION",
];

async fn request_counts(client: &Client) -> anyhow::Result<Counts> {
    let req = axum::http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(req).await?;
    let mut counts = Counts::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let mut l = HashMap::new();
        for pair in labels.split("\",") {
            if let Some((k, v)) = pair.split_once("=\"") {
                l.insert(k, v.trim_end_matches('"'));
            }
        }
        let key = |k: &str| l.get(k).copied().unwrap_or_default().to_owned();
        let v: f64 = value.trim().parse().unwrap_or(0.0);
        *counts
            .entry((key("verb"), key("resource"), key("subresource")))
            .or_default() += v as u64;
    }
    Ok(counts)
}

fn writes_between(before: &Counts, after: &Counts) -> Counts {
    after
        .iter()
        .filter(|((verb, _, _), _)| WRITE_VERBS.contains(&verb.as_str()))
        .filter_map(|(k, v)| {
            let d = v.saturating_sub(before.get(k).copied().unwrap_or(0));
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

fn reads_between(before: &Counts, after: &Counts) -> u64 {
    after
        .iter()
        .filter(|((verb, _, _), _)| matches!(verb.as_str(), "GET" | "LIST"))
        .map(|(k, v)| v.saturating_sub(before.get(k).copied().unwrap_or(0)))
        .sum()
}

/// Writes the operator makes: creates, updates and patches of ApiTokens, Secrets and Events,
/// except the benchmark's own (`own`: its ApiToken creates and rotation patches). Deletes are
/// the benchmark's (ApiTokens) and the garbage collector's (Secrets); the operator deletes a
/// Secret only after `spec.secret.name` changed, which the benchmark does not do.
fn operator_writes(w: &Counts, own: &[(&str, &str)]) -> u64 {
    w.iter()
        .filter(|((verb, res, _), _)| {
            matches!(res.as_str(), "apitokens" | "secrets" | "events")
                && matches!(verb.as_str(), "POST" | "PUT" | "PATCH" | "APPLY")
                && !own.contains(&(verb.as_str(), res.as_str()))
        })
        .map(|(_, v)| *v)
        .sum()
}

fn table(w: &Counts) -> Value {
    Value::Array(
        w.iter()
            .map(|((verb, res, sub), n)| {
                let r = if sub.is_empty() {
                    res.clone()
                } else {
                    format!("{res}/{sub}")
                };
                json!({"verb": verb, "resource": r, "count": n})
            })
            .collect(),
    )
}

/// Wait until kube-apiserver's write counters stop moving (two equal readings a second apart),
/// so that trailing writes are counted in the phase that caused them.
async fn settled_counts(client: &Client) -> anyhow::Result<Counts> {
    let mut last = request_counts(client).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = request_counts(client).await?;
        let moved = writes_between(&last, &now)
            .keys()
            .any(|(_, res, _)| res != "leases");
        if !moved || Instant::now() > deadline {
            return Ok(now);
        }
        last = now;
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct Proc {
    child: Child,
    name: &'static str,
}

impl Proc {
    fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> anyhow::Result<Proc> {
        let out = std::fs::File::create(&log)?;
        let child = cmd
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc { child, name })
    }

    /// (peak RSS, current RSS) in KiB, from /proc.
    fn memory_kib(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let field = |f: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(f))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok((field("VmHWM:"), field("VmRSS:")))
    }

    fn alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early: {status}", self.name);
        }
        Ok(())
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_http_ok(url: &str, p: &mut Proc) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        p.alive()?;
        if let Ok(r) = reqwest::get(url).await
            && r.status().is_success()
        {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "{url} not ready after 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start_store(args: &Args) -> anyhow::Result<(Proc, String)> {
    let port = free_port()?;
    let db = args.work.join("store.db");
    let mut cmd = Command::new(&args.store_bin);
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--database-url", &format!("sqlite://{}", db.display())])
        .env("LOOP_STORE_ADMIN_TOKEN", ADMIN)
        .env("LOOP_STORE_INTROSPECT_TOKEN", INTROSPECT)
        .env("RUST_LOG", "warn");
    let mut p = Proc::spawn("loop-store", cmd, args.work.join("store.log"))?;
    let url = format!("http://127.0.0.1:{port}");
    wait_http_ok(&format!("{url}/readyz"), &mut p).await?;
    Ok((p, url))
}

/// The operator's own figures: reconciles and store calls, count and total seconds, from its
/// Prometheus histograms (`loop_operator_*_duration_seconds`).
async fn operator_profile(metrics: &str) -> anyhow::Result<Value> {
    let text = reqwest::get(metrics)
        .await?
        .error_for_status()?
        .text()
        .await?;
    let mut out: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for line in text.lines() {
        for (metric, label) in [
            ("loop_operator_reconcile_duration_seconds", "result"),
            ("loop_operator_store_request_duration_seconds", "operation"),
        ] {
            let Some(rest) = line.strip_prefix(metric) else {
                continue;
            };
            let (is_sum, rest) = match (rest.strip_prefix("_sum"), rest.strip_prefix("_count")) {
                (Some(r), _) => (true, r),
                (_, Some(r)) => (false, r),
                _ => continue,
            };
            let Some((labels, value)) = rest.rsplit_once(' ') else {
                continue;
            };
            let which = labels
                .split(&[',', '{', '}'][..])
                .find_map(|kv| kv.strip_prefix(&format!("{label}=\"")))
                .map(|v| v.trim_end_matches('"'))
                .unwrap_or("all");
            let key = format!(
                "{}:{which}",
                metric
                    .trim_start_matches("loop_operator_")
                    .trim_end_matches("_duration_seconds")
            );
            let e = out.entry(key).or_default();
            let v: f64 = value.trim().parse().unwrap_or(0.0);
            if is_sum { e.1 += v } else { e.0 += v }
        }
    }
    Ok(Value::Object(
        out.into_iter()
            .map(|(k, (count, sum))| {
                let mean = if count > 0.0 {
                    sum / count * 1000.0
                } else {
                    0.0
                };
                (k, json!({"count": count, "total_s": sum, "mean_ms": mean}))
            })
            .collect(),
    ))
}

async fn start_operator(args: &Args, store: &str, phase: &str) -> anyhow::Result<(Proc, String)> {
    let port = free_port()?;
    let mut cmd = match &args.operator_wrapper {
        Some(w) => {
            let mut c = Command::new(w);
            c.arg(&args.operator_bin);
            c
        }
        None => Command::new(&args.operator_bin),
    };
    cmd.args(["run", "--store-url", store, "--leader-election", "false"])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .args(["--cluster-name", "bench"])
        .args(&args.operator_arg)
        .env("LOOP_STORE_TOKEN", ADMIN)
        .env("RUST_LOG", "warn");
    let mut p = Proc::spawn(
        "loop-token-operator",
        cmd,
        args.work.join(format!("operator-{phase}.log")),
    )?;
    wait_http_ok(&format!("http://127.0.0.1:{port}/healthz"), &mut p).await?;
    Ok((p, format!("http://127.0.0.1:{port}/metrics")))
}

async fn namespace(client: &Client, prefix: &str) -> anyhow::Result<String> {
    let name = format!(
        "{prefix}-{}",
        jiff::Timestamp::now().as_millisecond() % 100_000_000
    );
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    Ok(name)
}

/// Delete a namespace and wait until it is gone, so that the namespace controller's deletions
/// do not fall into the next phase's counts.
async fn drop_namespace(client: &Client, ns: &str) -> anyhow::Result<()> {
    let api = Api::<Namespace>::all(client.clone());
    api.delete(ns, &DeleteParams::background()).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while api.get_opt(ns).await?.is_some() {
        ensure!(
            Instant::now() < deadline,
            "namespace {ns} not gone after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

fn api_token(name: &str) -> anyhow::Result<ApiToken> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "loop.dev/v1alpha1",
        "kind": "ApiToken",
        "metadata": {"name": name},
        "spec": {"displayName": format!("bench {name}"), "scopes": ["orders:read", "customers:write"]}
    }))?)
}

fn is_ready(t: &ApiToken) -> bool {
    let Some(s) = &t.status else { return false };
    s.observed_generation == t.metadata.generation
        && s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

#[derive(Debug)]
enum Seen {
    Ready(String, Option<String>, Instant),
    Gone(String),
    /// The ApiToken watch restarted: deletions during the gap are not reported.
    Restarted,
    SecretFingerprint(String, String),
}

/// Watch ApiTokens and Secrets of a namespace and report what the benchmark waits for.
fn watch(client: &Client, ns: &str) -> mpsc::UnboundedReceiver<Seen> {
    let (tx, rx) = mpsc::unbounded_channel();
    let tokens: Api<ApiToken> = Api::namespaced(client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let tx2 = tx.clone();
    tokio::spawn(async move {
        let mut s = watcher(tokens, watcher::Config::default()).boxed();
        while let Some(ev) = s.next().await {
            let now = Instant::now();
            let msg = match ev {
                Ok(watcher::Event::Apply(t) | watcher::Event::InitApply(t)) if is_ready(&t) => {
                    let rotation = t
                        .status
                        .as_ref()
                        .and_then(|s| s.last_rotation_request.clone());
                    Seen::Ready(t.name_any(), rotation, now)
                }
                Ok(watcher::Event::Delete(t)) => Seen::Gone(t.name_any()),
                Ok(watcher::Event::Init) => Seen::Restarted,
                _ => continue,
            };
            if tx2.send(msg).is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        let mut s = watcher(secrets, watcher::Config::default()).boxed();
        while let Some(ev) = s.next().await {
            if let Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) = ev
                && let Some(fp) = s.annotations().get("loop.dev/fingerprint")
                && tx
                    .send(Seen::SecretFingerprint(s.name_any(), fp.clone()))
                    .is_err()
            {
                return;
            }
        }
    });
    rx
}

async fn next_seen(rx: &mut mpsc::UnboundedReceiver<Seen>) -> anyhow::Result<Seen> {
    match tokio::time::timeout(Duration::from_secs(600), rx.recv()).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => bail!("the watch stopped"),
        Err(_) => bail!("nothing happened for 10 minutes"),
    }
}

/// The next thing seen, or `None` after 5 s of nothing (time to check with a LIST).
async fn next_seen_or_quiet(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
) -> anyhow::Result<Option<Seen>> {
    match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
        Ok(Some(s)) => Ok(Some(s)),
        Ok(None) => bail!("the watch stopped"),
        Err(_) => Ok(None),
    }
}

async fn introspect_active(
    http: &reqwest::Client,
    store: &str,
    token: &str,
) -> anyhow::Result<bool> {
    let v: Value = http
        .post(format!("{store}/v1/introspect"))
        .bearer_auth(INTROSPECT)
        .json(&json!({ "token": token }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(v["active"] == true)
}

/// The token in an ApiToken's Secret, and its fingerprint annotation (one GET).
async fn secret_token(secrets: &Api<Secret>, name: &str) -> anyhow::Result<(String, String)> {
    let s = secrets.get(name).await?;
    let fp = s
        .annotations()
        .get("loop.dev/fingerprint")
        .cloned()
        .unwrap_or_default();
    let data = s.data.unwrap_or_default();
    let ByteString(bytes) = data.get("token").context("the Secret has no token key")?;
    Ok((String::from_utf8(bytes.clone())?, fp))
}

/// End a phase: wait for its writes to settle, check the operator is still alive and read its
/// peak memory, stop it, and delete the phase's namespace.
async fn wind_down(mut op: Proc, client: &Client, ns: &str) -> anyhow::Result<(Counts, u64)> {
    let settled = settled_counts(client).await?;
    op.alive()?;
    let (peak, _) = op.memory_kib()?;
    op.stop();
    drop_namespace(client, ns).await?;
    Ok((settled, peak))
}

fn summary(mut ms: Vec<f64>) -> Value {
    ms.sort_by(f64::total_cmp);
    if ms.is_empty() {
        return json!(null);
    }
    let pick = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
    json!({"n": ms.len(), "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": ms[ms.len() - 1]})
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Sequential create → Ready, rotate → new token in the Secret and active, delete → gone and
/// revoked; with the API-server writes of each kind of change.
async fn latency(args: &Args, client: &Client, store: &str) -> anyhow::Result<Value> {
    let n = args.rounds;
    let ns = namespace(client, "bench-latency").await?;
    let tokens: Api<ApiToken> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let http = reqwest::Client::new();
    let mut rx = watch(client, &ns);
    let (op, _) = start_operator(args, store, "latency").await?;

    // One unrecorded round first: the operator's watches are still starting.
    tokens
        .create(&PostParams::default(), &api_token("warm-up")?)
        .await?;
    loop {
        if let Seen::Ready(n, _, _) = next_seen(&mut rx).await?
            && n == "warm-up"
        {
            break;
        }
    }
    tokens.delete("warm-up", &DeleteParams::default()).await?;
    loop {
        if let Seen::Gone(n) = next_seen(&mut rx).await?
            && n == "warm-up"
        {
            break;
        }
    }
    eprintln!("latency: {n} sequential creations");
    let before = settled_counts(client).await?;
    let mut create = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("lat-{i}");
        let t0 = Instant::now();
        tokens
            .create(&PostParams::default(), &api_token(&name)?)
            .await?;
        loop {
            if let Seen::Ready(n, _, at) = next_seen(&mut rx).await?
                && n == name
            {
                create.push(ms(at - t0));
                break;
            }
        }
    }
    let after_create = settled_counts(client).await?;

    eprintln!("latency: {n} sequential rotations");
    let mut rotate = Vec::with_capacity(n);
    let mut old_tokens = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("lat-{i}");
        let (old, old_fp) = secret_token(&secrets, &name).await?;
        let value = format!("rotation-{i}");
        let patch = json!({"metadata": {"annotations": {"loop.dev/rotate": value}}});
        let t0 = Instant::now();
        tokens
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        loop {
            if let Seen::SecretFingerprint(s, fp) = next_seen(&mut rx).await?
                && s == name
                && fp != old_fp
            {
                let (new, _) = secret_token(&secrets, &name).await?;
                ensure!(new != old, "the fingerprint changed but the token did not");
                ensure!(
                    introspect_active(&http, store, &new).await?,
                    "the rotated token is not active in the store"
                );
                rotate.push(ms(t0.elapsed()));
                old_tokens.push((old, new));
                break;
            }
        }
        // Ready again with this rotation recorded, so its status write falls in this phase.
        loop {
            if let Seen::Ready(s, Some(r), _) = next_seen(&mut rx).await?
                && s == name
                && r == value
            {
                break;
            }
        }
    }
    let after_rotate = settled_counts(client).await?;

    eprintln!("latency: {n} sequential deletions");
    let mut delete = Vec::with_capacity(n);
    for (i, (old, new)) in old_tokens.iter().enumerate() {
        let name = format!("lat-{i}");
        let t0 = Instant::now();
        tokens.delete(&name, &DeleteParams::default()).await?;
        loop {
            if let Seen::Gone(s) = next_seen(&mut rx).await?
                && s == name
            {
                break;
            }
        }
        ensure!(
            !introspect_active(&http, store, new).await?
                && !introspect_active(&http, store, old).await?,
            "a token of a deleted ApiToken is still active"
        );
        delete.push(ms(t0.elapsed()));
    }
    let (after_delete, peak) = wind_down(op, client, &ns).await?;

    let w_create = writes_between(&before, &after_create);
    let w_rotate = writes_between(&after_create, &after_rotate);
    let w_delete = writes_between(&after_rotate, &after_delete);
    let per = |w: &Counts, own: &[(&str, &str)]| operator_writes(w, own) as f64 / n as f64;
    Ok(json!({
        "rounds": n,
        "create_to_ready": summary(create),
        "rotation": summary(rotate),
        "deletion": summary(delete),
        "operator_writes_per_create": per(&w_create, &[("POST", "apitokens")]),
        "operator_writes_per_rotation": per(&w_rotate, &[("PATCH", "apitokens")]),
        "operator_writes_per_deletion": per(&w_delete, &[("DELETE", "apitokens")]),
        "writes_create": table(&w_create),
        "writes_rotation": table(&w_rotate),
        "writes_deletion": table(&w_delete),
        "operator_peak_rss_kib": peak,
    }))
}

/// N Secrets through a plain client, then N ApiTokens until all are Ready, then idle, then
/// N deletions until all are gone.
async fn bulk(
    args: &Args,
    client: &Client,
    store: &str,
    n: usize,
    idle: Option<u64>,
) -> anyhow::Result<Value> {
    let c = args.client_concurrency;
    // Baseline: the API server alone, the same number of objects, the same client concurrency.
    let base_ns = namespace(client, &format!("bench-baseline-{n}")).await?;
    let plain: Api<Secret> = Api::namespaced(client.clone(), &base_ns);
    let before_base = settled_counts(client).await?;
    eprintln!("bulk {n}: baseline, {n} Secrets through a plain client");
    let t0 = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let plain = plain.clone();
            async move {
                let mut s = Secret {
                    type_: Some("Opaque".into()),
                    data: Some(BTreeMap::from([(
                        "token".to_owned(),
                        ByteString(vec![b'x'; 47]),
                    )])),
                    ..Secret::default()
                };
                s.metadata.name = Some(format!("plain-{i}"));
                plain.create(&PostParams::default(), &s).await
            }
        })
        .buffer_unordered(c)
        .try_collect::<Vec<_>>()
        .await?;
    let baseline = t0.elapsed();
    let after_base = settled_counts(client).await?;
    drop_namespace(client, &base_ns).await?;

    let ns = namespace(client, &format!("bench-bulk-{n}")).await?;
    let tokens: Api<ApiToken> = Api::namespaced(client.clone(), &ns);
    let mut rx = watch(client, &ns);
    let (mut op, op_metrics) = start_operator(args, store, &format!("bulk-{n}")).await?;
    let before = settled_counts(client).await?;
    eprintln!("bulk {n}: {n} ApiTokens applied at once");
    let t0 = Instant::now();
    let objects = (0..n)
        .map(|i| api_token(&format!("bulk-{i}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let creator = {
        let tokens = tokens.clone();
        tokio::spawn(async move {
            stream::iter(objects)
                .map(|t| {
                    let tokens = tokens.clone();
                    async move { tokens.create(&PostParams::default(), &t).await }
                })
                .buffer_unordered(c)
                .try_collect::<Vec<_>>()
                .await
                .map(|_| Instant::now())
        })
    };
    let mut ready = HashSet::with_capacity(n);
    let mut peak_during = 0;
    let mut last_sample = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(3600);
    while ready.len() < n {
        ensure!(Instant::now() < deadline, "not all Ready after an hour");
        match next_seen_or_quiet(&mut rx).await? {
            Some(Seen::Ready(name, _, _)) => {
                ready.insert(name);
            }
            // A watch gap: count again from a LIST.
            Some(Seen::Restarted) | None => {
                ready = tokens
                    .list(&Default::default())
                    .await?
                    .items
                    .iter()
                    .filter(|t| is_ready(t))
                    .map(|t| t.name_any())
                    .collect();
            }
            Some(_) => {}
        }
        if last_sample.elapsed() > Duration::from_millis(500) {
            op.alive()?;
            peak_during = peak_during.max(op.memory_kib()?.0);
            last_sample = Instant::now();
        }
    }
    let all_ready = t0.elapsed();
    let submitted = creator.await??.duration_since(t0);
    let after = settled_counts(client).await?;
    op.alive()?;
    let (peak, rss_converged) = op.memory_kib()?;
    let profile = operator_profile(&op_metrics).await?;

    // A restart (an upgrade, a new leader): a fresh process that finds N converged ApiTokens
    // and reconciles each once. Its memory is the steady state without creation's churn.
    eprintln!("bulk {n}: restarting the operator with {n} converged ApiTokens");
    op.stop();
    let before_restart = request_counts(client).await?;
    let (mut op, op_metrics) = start_operator(args, store, &format!("bulk-{n}-restart")).await?;
    let t2 = Instant::now();
    loop {
        let p = operator_profile(&op_metrics).await?;
        let done = p["reconcile:ok"]["count"].as_f64().unwrap_or(0.0);
        if done >= n as f64 {
            break;
        }
        ensure!(
            t2.elapsed() < Duration::from_secs(1800),
            "the restarted operator did not reconcile every ApiToken"
        );
        op.alive()?;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let restart_s = t2.elapsed().as_secs_f64();
    let after_restart = settled_counts(client).await?;
    let (restart_peak, restart_rss) = op.memory_kib()?;
    let w_restart = writes_between(&before_restart, &after_restart);
    let restart = json!({
        "reconciled_all_s": restart_s,
        "operator_writes": operator_writes(&w_restart, &[]),
        "reads": reads_between(&before_restart, &after_restart),
        "operator_peak_rss_kib": restart_peak,
        "operator_rss_kib": restart_rss,
    });

    let idle_report = match idle {
        None => json!(null),
        Some(secs) => {
            eprintln!("bulk {n}: idle for {secs} s");
            let a = request_counts(client).await?;
            tokio::time::sleep(Duration::from_secs(secs)).await;
            let b = request_counts(client).await?;
            op.alive()?;
            let w = writes_between(&a, &b);
            json!({
                "seconds": secs,
                "operator_writes": operator_writes(&w, &[]),
                "all_writes": table(&w),
                "reads": reads_between(&a, &b),
            })
        }
    };

    eprintln!("bulk {n}: deleting {n} ApiTokens");
    let before_delete = settled_counts(client).await?;
    let t1 = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let tokens = tokens.clone();
            async move {
                tokens
                    .delete(&format!("bulk-{i}"), &DeleteParams::default())
                    .await
            }
        })
        .buffer_unordered(c)
        .try_collect::<Vec<_>>()
        .await?;
    let mut gone = HashSet::with_capacity(n);
    let deadline = Instant::now() + Duration::from_secs(3600);
    while gone.len() < n {
        ensure!(Instant::now() < deadline, "not all gone after an hour");
        match next_seen_or_quiet(&mut rx).await? {
            Some(Seen::Gone(name)) => {
                gone.insert(name);
            }
            // A watch gap: the deletions in it are not reported; ask a LIST what is left.
            Some(Seen::Restarted) | None => {
                let left: HashSet<String> = tokens
                    .list_metadata(&Default::default())
                    .await?
                    .items
                    .iter()
                    .map(|t| t.name_any())
                    .collect();
                gone = (0..n)
                    .map(|i| format!("bulk-{i}"))
                    .filter(|name| !left.contains(name))
                    .collect();
            }
            Some(_) => {}
        }
    }
    let deleted = t1.elapsed();
    let (after_delete, peak_final) = wind_down(op, client, &ns).await?;

    let w_base = writes_between(&before_base, &after_base);
    let w = writes_between(&before, &after);
    let w_del = writes_between(&before_delete, &after_delete);
    let secs = |d: Duration| d.as_secs_f64();
    Ok(json!({
        "n": n,
        "baseline_secrets_s": secs(baseline),
        "baseline_per_s": n as f64 / secs(baseline),
        "baseline_writes": table(&w_base),
        "apitokens_submitted_s": secs(submitted),
        "all_ready_s": secs(all_ready),
        "tokens_per_s": n as f64 / secs(all_ready),
        "ratio_to_baseline": secs(all_ready) / secs(baseline),
        "operator_writes_per_create": operator_writes(&w, &[("POST", "apitokens")]) as f64 / n as f64,
        "reads_per_create": reads_between(&before, &after) as f64 / n as f64,
        "writes_create": table(&w),
        "operator_peak_rss_kib": peak.max(peak_during),
        "operator_rss_converged_kib": rss_converged,
        "operator_profile_create": profile,
        "idle": idle_report,
        "restart": restart,
        "deletion_s": secs(deleted),
        "deletions_per_s": n as f64 / secs(deleted),
        "operator_writes_per_deletion": operator_writes(&w_del, &[("DELETE", "apitokens")]) as f64 / n as f64,
        "writes_deletion": table(&w_del),
        "operator_peak_rss_after_deletion_kib": peak_final,
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    loop_token_operator::serve::install_crypto_provider();
    let args = Args::parse_from(std::env::args().filter(|a| a != "--bench"));
    std::fs::create_dir_all(&args.work)?;
    let client = Client::try_default()
        .await
        .context("no Kubernetes client: set KUBECONFIG (scripts/dev-cluster env)")?;
    let (store, store_url) = start_store(&args).await?;
    let result = async {
        let latency = latency(&args, &client, &store_url).await?;
        // Each phase's figures as soon as they exist (the whole document comes at the end).
        eprintln!("{latency}");
        let largest = args.bulk.iter().copied().max();
        let mut bulks = Vec::new();
        for &n in &args.bulk {
            let idle = (Some(n) == largest).then_some(args.idle_secs);
            let b = bulk(&args, &client, &store_url, n, idle).await?;
            eprintln!("{b}");
            bulks.push(b);
        }
        anyhow::Ok(json!({
            "client_concurrency": args.client_concurrency,
            "operator_args": args.operator_arg,
            "latency": latency,
            "bulk": bulks,
        }))
    }
    .await;
    store.stop();
    println!("{}", serde_json::to_string(&result?)?);
    Ok(())
}
