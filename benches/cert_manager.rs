//! cert-manager side by side: N self-signed ECDSA P-256 Certificates (a `SelfSigned` Issuer)
//! created through a plain client until all are Ready, against the same local control plane as
//! the operator benchmark, with the same client concurrency. Measures objects Ready per second,
//! API-server writes per object (kube-apiserver's `apiserver_request_total`, less the
//! benchmark's own creates and the Lease renewals), the controller's peak RSS, and the time a
//! restarted controller takes to go through N converged Certificates.
//!
//!   KUBECONFIG=... cargo bench --bench cert_manager -- --help
//!
//! `scripts/bench cert-manager` builds cert-manager (`scripts/peers`), installs its CRDs, runs
//! this program and then the operator's bulk phases at the same N, and writes
//! `bench-results/cert-manager.{json,md}`. Prints one JSON document on stdout.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(about = "cert-manager side by side (see docs/benchmarks.md)")]
struct Args {
    /// cert-manager's controller binary (`scripts/peers cert-manager`).
    #[arg(long)]
    cert_manager_bin: PathBuf,
    /// The kubeconfig cert-manager is given (`--kubeconfig`).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// A scratch directory for its log.
    #[arg(long)]
    work: PathBuf,
    /// Sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    n: Vec<usize>,
    /// Requests in flight while creating (the operator benchmark's default).
    #[arg(long, default_value_t = 32)]
    client_concurrency: usize,
    /// cert-manager's client-side rate limit (`--kube-api-qps`, `--kube-api-burst`). Its
    /// defaults (20 and 50) would make it the bottleneck; the operator has none.
    #[arg(long, default_value_t = 10000)]
    kube_api_qps: u32,
}

type Counts = BTreeMap<(String, String), u64>;

/// kube-apiserver's `apiserver_request_total` by (verb, resource/subresource).
async fn request_counts(client: &Client) -> anyhow::Result<Counts> {
    let req = axum::http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(req).await?;
    let mut counts = Counts::new();
    for line in text.lines() {
        let Some((labels, value)) = line
            .strip_prefix("apiserver_request_total{")
            .and_then(|r| r.rsplit_once("} "))
        else {
            continue;
        };
        let l: HashMap<&str, &str> = labels
            .split("\",")
            .filter_map(|p| p.split_once("=\""))
            .map(|(k, v)| (k, v.trim_end_matches('"')))
            .collect();
        let get = |k: &str| l.get(k).copied().unwrap_or_default();
        let resource = match get("subresource") {
            "" => get("resource").to_owned(),
            sub => format!("{}/{sub}", get("resource")),
        };
        let v: f64 = value.trim().parse().unwrap_or(0.0);
        *counts
            .entry((get("verb").to_owned(), resource))
            .or_default() += v as u64;
    }
    Ok(counts)
}

const WRITES: &[&str] = &["POST", "PUT", "PATCH", "APPLY", "DELETE"];

/// Writes between two readings, leases left out (kube-apiserver's own identity lease).
fn writes_between(before: &Counts, after: &Counts) -> Counts {
    after
        .iter()
        .filter(|((verb, res), _)| WRITES.contains(&verb.as_str()) && res != "leases")
        .filter_map(|(k, v)| {
            let d = v.saturating_sub(before.get(k).copied().unwrap_or(0));
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

fn reads_between(before: &Counts, after: &Counts) -> u64 {
    after
        .iter()
        .filter(|((verb, _), _)| matches!(verb.as_str(), "GET" | "LIST"))
        .map(|(k, v)| v.saturating_sub(before.get(k).copied().unwrap_or(0)))
        .sum()
}

/// Readings until the write counters stop moving (two equal readings a second apart).
async fn settled_counts(client: &Client) -> anyhow::Result<Counts> {
    let mut last = request_counts(client).await?;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = request_counts(client).await?;
        if writes_between(&last, &now).is_empty() || Instant::now() > deadline {
            return Ok(now);
        }
        last = now;
    }
}

fn table(w: &Counts) -> Value {
    Value::Array(
        w.iter()
            .map(|((verb, res), n)| json!({"verb": verb, "resource": res, "count": n}))
            .collect(),
    )
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The cert-manager controller process.
struct Controller {
    child: Child,
    metrics: String,
}

impl Controller {
    async fn start(args: &Args, phase: &str) -> anyhow::Result<Controller> {
        let (metrics, health) = (free_port()?, free_port()?);
        let log = std::fs::File::create(args.work.join(format!("cert-manager-{phase}.log")))?;
        let child = Command::new(&args.cert_manager_bin)
            .arg(format!("--kubeconfig={}", args.kubeconfig.display()))
            .arg("--leader-elect=false")
            .arg(format!("--metrics-listen-address=127.0.0.1:{metrics}"))
            .arg(format!(
                "--internal-healthz-listen-address=127.0.0.1:{health}"
            ))
            .arg(format!("--kube-api-qps={}", args.kube_api_qps))
            .arg(format!("--kube-api-burst={}", args.kube_api_qps))
            .arg("--v=1")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting cert-manager's controller")?;
        let mut c = Controller {
            child,
            metrics: format!("http://127.0.0.1:{metrics}/metrics"),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while reqwest::get(&c.metrics).await.is_err() {
            c.alive()?;
            ensure!(
                Instant::now() < deadline,
                "cert-manager's metrics not up after 120 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(c)
    }

    fn alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("cert-manager's controller exited early: {status}");
        }
        Ok(())
    }

    /// (peak RSS, current RSS) in KiB.
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

    /// The sum of `certmanager_controller_sync_call_count` over its controllers.
    async fn sync_calls(&self) -> anyhow::Result<f64> {
        let text = reqwest::get(&self.metrics).await?.text().await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with("certmanager_controller_sync_call_count{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
            .sum())
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
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

fn resource(group: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, "v1", kind), plural)
}

fn certificate(i: usize) -> anyhow::Result<DynamicObject> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
        "metadata": {"name": format!("cert-{i}")},
        "spec": {
            "secretName": format!("cert-{i}"),
            "commonName": format!("cert-{i}.bench.invalid"),
            "dnsNames": [format!("cert-{i}.bench.invalid")],
            "privateKey": {"algorithm": "ECDSA", "size": 256},
            "issuerRef": {"name": "selfsigned", "kind": "Issuer"},
        }
    }))?)
}

fn is_ready(c: &DynamicObject) -> bool {
    let generation = c.metadata.generation;
    c.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|cond| {
            cond["type"] == "Ready"
                && cond["status"] == "True"
                && cond["observedGeneration"].as_i64() == generation
        })
}

async fn namespace(client: &Client, n: usize) -> anyhow::Result<String> {
    let name = format!(
        "bench-cm-{n}-{}",
        jiff::Timestamp::now().as_millisecond() % 100_000_000
    );
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    Ok(name)
}

async fn drop_namespace(client: &Client, ns: &str) -> anyhow::Result<()> {
    let api = Api::<Namespace>::all(client.clone());
    api.delete(ns, &DeleteParams::background()).await?;
    let deadline = Instant::now() + Duration::from_secs(900);
    while api.get_opt(ns).await?.is_some() {
        ensure!(
            Instant::now() < deadline,
            "namespace {ns} not gone after 15 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// Create N Certificates (client_concurrency in flight) and wait until all are Ready; returns
/// the seconds from the first create to the last Ready. (The peak RSS is the kernel's VmHWM.)
async fn create_until_ready(
    args: &Args,
    certs: &Api<DynamicObject>,
    cm: &mut Controller,
    n: usize,
) -> anyhow::Result<f64> {
    let ready_watch = watcher(certs.clone(), watcher::Config::default());
    let t0 = Instant::now();
    let creator = {
        let certs = certs.clone();
        let c = args.client_concurrency;
        let objects = (0..n)
            .map(certificate)
            .collect::<anyhow::Result<Vec<_>>>()?;
        tokio::spawn(async move {
            stream::iter(objects)
                .map(|o| {
                    let certs = certs.clone();
                    async move { certs.create(&PostParams::default(), &o).await }
                })
                .buffer_unordered(c)
                .try_collect::<Vec<_>>()
                .await
        })
    };
    let mut ready = HashSet::with_capacity(n);
    let mut s = ready_watch.boxed();
    let deadline = Instant::now() + Duration::from_secs(3600);
    while ready.len() < n {
        ensure!(
            Instant::now() < deadline,
            "not all Certificates Ready after an hour"
        );
        match tokio::time::timeout(Duration::from_secs(5), s.next()).await {
            Ok(Some(Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)))) => {
                if is_ready(&c) {
                    ready.insert(c.name_any());
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => bail!("the Certificate watch ended"),
            Err(_) => cm.alive()?,
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    creator.await??;
    Ok(secs)
}

/// A fresh controller that finds N converged Certificates: the seconds until its sync calls
/// stop growing (no change for 3 s; the time of the last change is reported), and its memory.
async fn restart(args: &Args, n: usize) -> anyhow::Result<(Controller, f64)> {
    let cm = Controller::start(args, &format!("{n}-restart")).await?;
    let t0 = Instant::now();
    let (mut last, mut last_change) = (0.0, 0.0);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let calls = cm.sync_calls().await?;
        let now = t0.elapsed().as_secs_f64();
        if calls != last {
            (last, last_change) = (calls, now);
        } else if calls >= n as f64 && now - last_change > 3.0 {
            return Ok((cm, last_change));
        }
        ensure!(now < 1800.0, "the restarted cert-manager did not settle");
    }
}

async fn run_n(args: &Args, client: &Client, n: usize) -> anyhow::Result<Value> {
    let ns = namespace(client, n).await?;
    let issuers = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        &ns,
        &resource("cert-manager.io", "Issuer", "issuers"),
    );
    let issuer: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "cert-manager.io/v1", "kind": "Issuer",
        "metadata": {"name": "selfsigned"}, "spec": {"selfSigned": {}}
    }))?;
    issuers.create(&PostParams::default(), &issuer).await?;
    let certs = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        &ns,
        &resource("cert-manager.io", "Certificate", "certificates"),
    );
    let mut cm = Controller::start(args, &n.to_string()).await?;
    let before = settled_counts(client).await?;
    eprintln!("cert-manager {n}: {n} Certificates");
    let all_ready_s = create_until_ready(args, &certs, &mut cm, n).await?;
    let after = settled_counts(client).await?;
    cm.alive()?;
    let (peak, rss) = cm.memory_kib()?;
    cm.stop();
    let w = writes_between(&before, &after);
    let own = w
        .get(&("POST".to_owned(), "certificates".to_owned()))
        .copied()
        .unwrap_or(0);
    let controller_writes = w.values().sum::<u64>() - own;

    eprintln!("cert-manager {n}: restart with {n} converged Certificates");
    let before_restart = request_counts(client).await?;
    let (mut cm, restart_s) = restart(args, n).await?;
    let after_restart = settled_counts(client).await?;
    cm.alive()?;
    let (restart_peak, restart_rss) = cm.memory_kib()?;
    cm.stop();
    let w_restart = writes_between(&before_restart, &after_restart);
    drop_namespace(client, &ns).await?;
    Ok(json!({
        "n": n,
        "all_ready_s": all_ready_s,
        "ready_per_s": n as f64 / all_ready_s,
        "writes_per_object": controller_writes as f64 / n as f64,
        "reads_per_object": reads_between(&before, &after) as f64 / n as f64,
        "writes": table(&w),
        "peak_rss_kib": peak,
        "rss_converged_kib": rss,
        "restart": {
            "settled_s": restart_s,
            "writes": w_restart.values().sum::<u64>(),
            "reads": reads_between(&before_restart, &after_restart),
            "peak_rss_kib": restart_peak,
            "rss_kib": restart_rss,
        },
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
    let mut runs = Vec::new();
    for &n in &args.n {
        let r = run_n(&args, &client, n).await?;
        eprintln!("{r}");
        runs.push(r);
    }
    println!(
        "{}",
        json!({
            "client_concurrency": args.client_concurrency,
            "kube_api_qps": args.kube_api_qps,
            "runs": runs,
        })
    );
    Ok(())
}
