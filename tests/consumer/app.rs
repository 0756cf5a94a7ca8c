//! `loop-consumer`: the app of the node tests (`tests/node`), standing for an application and
//! Loop's API at once. It takes its token from a mounted Secret file, read again before every
//! call (so it follows kubelet's updates of the volume), or from an environment variable, read
//! once (only a restart gives it a new token). At a steady rate it asks the store whether the
//! token is active (`POST /v1/introspect` over HTTPS, through the Service name, trusting one CA)
//! and counts the answers: active, refused (`active: false`) and errors (no answer, or not 200).
//!
//! It reports what it saw, never the token: `GET /report` (JSON), a log line whenever the
//! fingerprint or the kind of answer changes, and with `--report-url` a POST of the same JSON
//! every half second and once more after it stops. On SIGTERM it stops calling at once, sends
//! its final report and exits: a pod being replaced never calls with a token it no longer holds.
//! It is ready (`GET /ready`) while its last answer was active.
//!
//! Built by `scripts/image consumer` into the image `loop-consumer:dev`, FROM scratch.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use clap::Parser;
use loop_token_operator::token::Token;
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(
    name = "loop-consumer",
    about = "An app that reads its Loop token and calls the store with it"
)]
struct Args {
    /// The token's file (a mounted Secret's key), read before every call.
    #[arg(
        long,
        conflicts_with = "token_env",
        required_unless_present = "token_env"
    )]
    token_file: Option<PathBuf>,
    /// The environment variable that holds the token, read once at start.
    #[arg(long)]
    token_env: Option<String>,
    /// The store, e.g. https://loop-token-operator-store.loop-system.svc:8080
    #[arg(long)]
    store_url: String,
    /// The CA certificate (PEM) that signed the store's certificate.
    #[arg(long)]
    ca_file: PathBuf,
    /// The file holding the store's introspection credential.
    #[arg(long)]
    credential_file: PathBuf,
    /// Time between two calls.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    interval: Duration,
    /// Deadline of one call.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    timeout: Duration,
    /// Where `/report` and `/ready` are served.
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// A URL to POST the report to every half second and after stopping.
    #[arg(long)]
    report_url: Option<String>,
    /// Named in the reports (the pod's name, from the downward API).
    #[arg(long, env = "POD_NAME", default_value = "")]
    name: String,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let span: jiff::Span = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    let d = jiff::SignedDuration::try_from(span).map_err(|e| format!("{s:?}: {e}"))?;
    Duration::try_from(d).map_err(|e| format!("{s:?}: {e}"))
}

/// What one fingerprint went through.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Seen {
    fingerprint: String,
    first_seen_ms: u64,
    first_active_ms: Option<u64>,
    active: u64,
    refused: u64,
    errors: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    name: String,
    started_ms: u64,
    calls: u64,
    active: u64,
    refused: u64,
    errors: u64,
    /// The fingerprint of the token of the last call.
    fingerprint: Option<String>,
    first_active_ms: Option<u64>,
    /// Every fingerprint used, in order.
    fingerprints: Vec<Seen>,
    /// Why the last error happened (never the token).
    last_error: Option<String>,
    last_active: bool,
    /// Calls stopped (SIGTERM): this report is final.
    stopped: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    Active,
    Refused,
    Error,
}

impl Report {
    fn record(&mut self, fingerprint: &str, answer: Answer, at: u64) {
        self.calls += 1;
        if self.fingerprint.as_deref() != Some(fingerprint) {
            println!(
                "{} token {fingerprint} in use (call {})",
                self.name, self.calls
            );
            self.fingerprint = Some(fingerprint.to_owned());
        }
        if self.fingerprints.last().map(|s| s.fingerprint.as_str()) != Some(fingerprint) {
            self.fingerprints.push(Seen {
                fingerprint: fingerprint.to_owned(),
                first_seen_ms: at,
                first_active_ms: None,
                active: 0,
                refused: 0,
                errors: 0,
            });
        }
        let was_active = self.last_active;
        let Some(seen) = self.fingerprints.last_mut() else {
            return;
        };
        match answer {
            Answer::Active => {
                self.active += 1;
                seen.active += 1;
                seen.first_active_ms.get_or_insert(at);
                self.first_active_ms.get_or_insert(at);
            }
            Answer::Refused => {
                self.refused += 1;
                seen.refused += 1;
            }
            Answer::Error => {
                self.errors += 1;
                seen.errors += 1;
            }
        }
        self.last_active = answer == Answer::Active;
        if was_active != self.last_active || self.calls == 1 {
            println!(
                "{} {fingerprint}: {answer:?} (active {}, refused {}, errors {})",
                self.name, self.active, self.refused, self.errors
            );
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

type Shared = Arc<Mutex<Report>>;

fn snapshot(report: &Shared) -> Report {
    report.lock().map(|r| r.clone()).unwrap_or_default()
}

/// The token to use now: the file's current content, or the variable read at start.
fn current_token(args: &Args, from_env: &Option<Token>) -> Result<Token, String> {
    let text = match (&args.token_file, from_env) {
        (_, Some(t)) => return Ok(t.clone()),
        (Some(path), None) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        (None, None) => return Err("no token source".to_owned()),
    };
    Token::parse(text.trim()).map_err(|e| format!("the token file holds no token: {e}"))
}

async fn call(
    http: &reqwest::Client,
    args: &Args,
    credential: &str,
    token: &Token,
) -> Result<bool, String> {
    let url = format!("{}/v1/introspect", args.store_url.trim_end_matches('/'));
    let resp = http
        .post(url)
        .bearer_auth(credential)
        .json(&serde_json::json!({"token": token.expose()}))
        .send()
        .await
        .map_err(|e| format!("no answer: {}", describe(e)))?;
    let status = resp.status();
    if status != reqwest::StatusCode::OK {
        return Err(format!("status {status}"));
    }
    let body: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| format!("bad body: {}", describe(e)))?;
    Ok(body.get("active").and_then(serde_json::Value::as_bool) == Some(true))
}

/// reqwest's error with its causes, without the URL (the same on every line).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

async fn calls(
    args: Arc<Args>,
    http: reqwest::Client,
    report: Shared,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let credential = match std::fs::read_to_string(&args.credential_file) {
        Ok(c) => c.trim().to_owned(),
        Err(e) => {
            eprintln!("cannot read {}: {e}", args.credential_file.display());
            return;
        }
    };
    let from_env = args.token_env.as_ref().map(|name| {
        std::env::var(name)
            .ok()
            .and_then(|v| Token::parse(v.trim()).ok())
    });
    let from_env = match from_env {
        Some(None) => {
            eprintln!("the environment variable holds no token");
            return;
        }
        Some(Some(t)) => Some(t),
        None => None,
    };
    let mut tick = tokio::time::interval(args.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let token = match current_token(&args, &from_env) {
            Ok(t) => t,
            Err(e) => {
                if let Ok(mut r) = report.lock() {
                    r.last_error = Some(e);
                }
                continue;
            }
        };
        let answer = tokio::select! {
            a = call(&http, &args, &credential, &token) => a,
            // A call in flight when the pod is told to stop is abandoned, not counted.
            _ = stop.changed() => return,
        };
        let at = now_ms();
        if let Ok(mut r) = report.lock() {
            match answer {
                Ok(true) => r.record(&token.fingerprint(), Answer::Active, at),
                Ok(false) => r.record(&token.fingerprint(), Answer::Refused, at),
                Err(e) => {
                    r.record(&token.fingerprint(), Answer::Error, at);
                    r.last_error = Some(e);
                }
            }
        }
    }
}

fn build_client(args: &Args) -> anyhow::Result<reqwest::Client> {
    let ca = std::fs::read(&args.ca_file)
        .with_context(|| format!("cannot read {}", args.ca_file.display()))?;
    let tls = loop_token_operator::operator::tls_config(
        &loop_token_operator::operator::Trust::CaBundle(ca),
    )?;
    Ok(reqwest::Client::builder()
        .timeout(args.timeout)
        .connect_timeout(args.timeout)
        .pool_idle_timeout(Duration::from_secs(5))
        .tls_backend_preconfigured(tls)
        .build()?)
}

async fn push(http: &reqwest::Client, url: &str, report: &Report) -> bool {
    http.post(url)
        .json(report)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

async fn pushes(
    http: reqwest::Client,
    url: String,
    report: Shared,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => { push(&http, &url, &snapshot(&report)).await; }
            _ = stop.changed() => break,
        }
    }
}

async fn ready(State(report): State<Shared>) -> StatusCode {
    if snapshot(&report).last_active {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn report_json(State(report): State<Shared>) -> Json<Report> {
    Json(snapshot(&report))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    loop_token_operator::serve::install_crypto_provider();
    let args = Arc::new(Args::parse());
    let report: Shared = Arc::new(Mutex::new(Report {
        name: args.name.clone(),
        started_ms: now_ms(),
        ..Report::default()
    }));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // One client for the store and the reports (an image FROM scratch has no system roots).
    let http = build_client(&args)?;

    let app = axum::Router::new()
        .route("/report", get(report_json))
        .route("/ready", get(ready))
        .with_state(report.clone());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let caller = tokio::spawn(calls(
        args.clone(),
        http.clone(),
        report.clone(),
        stop_rx.clone(),
    ));
    let pusher = args
        .report_url
        .clone()
        .map(|url| tokio::spawn(pushes(http.clone(), url, report.clone(), stop_rx.clone())));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    let _ = stop_tx.send(true);
    let _ = caller.await;
    if let Ok(mut r) = report.lock() {
        r.stopped = true;
    }
    let last = snapshot(&report);
    println!(
        "{} stopped: calls {}, active {}, refused {}, errors {}",
        last.name, last.calls, last.active, last.refused, last.errors
    );
    if let Some(p) = pusher {
        let _ = p.await;
    }
    if let Some(url) = &args.report_url {
        // The final report matters most: a few tries within the pod's grace period.
        for _ in 0..10 {
            if push(&http, url, &last).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    server.abort();
    Ok(())
}
