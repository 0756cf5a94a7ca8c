//! Test support for integration tests against real services.
//!
//! - [`control_plane`]: the local Kubernetes control plane (`scripts/dev-cluster up`, idempotent
//!   and locked, so any test binary may call it), a client and a `kubectl` for it;
//! - [`with_namespace`]: runs a test body in a fresh namespace, dumps the namespace's objects,
//!   events and the API server's log tail when the body panics, and deletes the namespace;
//! - [`postgres`]: a fresh PostgreSQL database per test on the local server
//!   (`scripts/dev-postgres up`).
//!
//! A missing service is a failure, never a skip: these tests are the proof.
#![allow(dead_code)]

pub mod clock;
pub mod docs;
pub mod flux;
pub mod git;
pub mod helm;
pub mod node;
pub mod operator;
pub mod store;
pub mod tls;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client, Config};
use tokio::sync::OnceCell;

/// An HTTP client for the tests (with the process's rustls provider in place, which reqwest
/// needs for its TLS support).
pub fn http_client() -> reqwest::Client {
    loop_token_operator::serve::install_crypto_provider();
    client_builder()
        .build()
        .unwrap_or_else(|e| panic!("HTTP client: {e}"))
}

/// How the tests' HTTP clients are built: an idle pooled connection is dropped after 5 s, well
/// before loop-store closes it (`--header-read-timeout`, 10 s), so a request never goes out on
/// a connection the server is closing at that moment.
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().pool_idle_timeout(Duration::from_secs(5))
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run_script(script: &str, args: &[&str]) -> String {
    let path = repo_root().join("scripts").join(script);
    let out = Command::new(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    assert!(
        out.status.success(),
        "{} {} failed:\n{}",
        path.display(),
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The local control plane.
#[derive(Clone)]
pub struct ControlPlane {
    pub kubeconfig: PathBuf,
    pub kubectl: PathBuf,
    pub state_dir: PathBuf,
    pub client: Client,
}

static CLUSTER: OnceCell<(PathBuf, PathBuf, PathBuf)> = OnceCell::const_new();

/// Connect to the local control plane, starting it if needed.
pub async fn control_plane() -> ControlPlane {
    let (kubeconfig, kubectl, state_dir) = CLUSTER
        .get_or_init(|| async {
            tokio::task::spawn_blocking(|| {
                run_script("dev-cluster", &["up"]);
                let env = run_script("dev-cluster", &["env"]);
                let kubeconfig = PathBuf::from(
                    env.strip_prefix("export KUBECONFIG=")
                        .unwrap_or_else(|| panic!("unexpected env line {env:?}")),
                );
                let kubectl = PathBuf::from(run_script("dev-cluster", &["bin", "kubectl"]));
                let state_dir = kubeconfig
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default();
                (kubeconfig, kubectl, state_dir)
            })
            .await
            .unwrap_or_else(|e| panic!("starting the control plane panicked: {e}"))
        })
        .await
        .clone();
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig)
        .unwrap_or_else(|e| panic!("bad kubeconfig: {e}"));
    let config = Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap_or_else(|e| panic!("cannot load {}: {e}", kubeconfig.display()));
    let client = Client::try_from(config).unwrap_or_else(|e| panic!("cannot build a client: {e}"));
    ControlPlane {
        kubeconfig,
        kubectl,
        state_dir,
        client,
    }
}

impl ControlPlane {
    /// `kubectl apply -n ns -f -` of `yaml`: whether it was accepted, and kubectl's stderr.
    pub fn apply_in(&self, ns: &str, yaml: &str) -> (bool, String) {
        let out = self.kubectl_stdin(&["apply", "-n", ns, "-f", "-"], Some(yaml));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// [`Self::apply_in`], which must be accepted.
    pub fn apply_ok_in(&self, ns: &str, yaml: &str) {
        let (ok, err) = self.apply_in(ns, yaml);
        assert!(ok, "kubectl apply failed: {err}");
    }

    /// kubectl in namespace `ns`, which must succeed; returns its stdout.
    pub fn kubectl_in(&self, ns: &str, args: &[&str]) -> String {
        let mut all = args.to_vec();
        all.extend(["-n", ns]);
        self.kubectl_ok(&all)
    }

    /// Wait (90 s at most) until the ApiToken `ns/name` satisfies `pred`.
    pub async fn wait_for_apitoken(
        &self,
        ns: &str,
        name: &str,
        what: &str,
        pred: impl Fn(&loop_token_operator::operator::resource::crd::ApiToken) -> bool + Send + 'static,
    ) -> loop_token_operator::operator::resource::crd::ApiToken {
        use kube::runtime::wait::await_condition;
        use loop_token_operator::operator::resource::crd::ApiToken;
        let tokens: Api<ApiToken> = Api::namespaced(self.client.clone(), ns);
        within(
            90,
            what,
            await_condition(tokens, name, move |t: Option<&ApiToken>| {
                t.is_some_and(&pred)
            }),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("apitoken/{name} vanished"))
    }

    /// Run kubectl against the control plane.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, None)
    }

    /// Run kubectl with `stdin` piped in (for `apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut cmd = Command::new(&self.kubectl);
        cmd.args(args).env("KUBECONFIG", &self.kubeconfig);
        cmd.stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        });
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run kubectl: {e}"));
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())
                .unwrap_or_else(|e| panic!("kubectl stdin: {e}"));
        }
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("kubectl: {e}"))
    }

    /// Run kubectl and insist that it succeeds; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {} failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The last lines of a component's log (etcd, kube-apiserver, kube-controller-manager).
    pub fn log_tail(&self, component: &str, lines: usize) -> String {
        let path = self.state_dir.join("logs").join(format!("{component}.log"));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Everything a human needs to understand a failed test in `ns`.
    pub fn dump(&self, ns: &str) -> String {
        let mut out = format!("===== diagnostics for namespace {ns} =====\n");
        for args in [
            vec![
                "get",
                "all,secrets,configmaps,leases",
                "-n",
                ns,
                "-o",
                "wide",
                "--show-labels",
            ],
            vec!["get", "apitokens.loop.dev", "-n", ns, "-o", "yaml"],
            vec!["get", "events", "-n", ns, "--sort-by=.lastTimestamp"],
        ] {
            let o = self.kubectl(&args);
            out.push_str(&format!(
                "$ kubectl {}\n{}{}\n",
                args.join(" "),
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        for c in ["kube-apiserver", "kube-controller-manager"] {
            out.push_str(&format!(
                "----- last lines of {c} log -----\n{}\n",
                self.log_tail(c, 20)
            ));
        }
        out
    }
}

/// A short random suffix for names.
pub fn suffix() -> String {
    let t = loop_token_operator::token::Token::mint().unwrap_or_else(|e| panic!("{e}"));
    t.expose()[5..13].to_ascii_lowercase()
}

/// Run `body` in a fresh namespace named `<prefix>-<random>`; on panic, print diagnostics; in
/// every case delete the namespace.
pub async fn with_namespace<F, Fut>(prefix: &str, body: F)
where
    F: FnOnce(ControlPlane, String) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let cp = control_plane().await;
    let name = format!("{prefix}-{}", suffix());
    let namespaces: Api<Namespace> = Api::all(cp.client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"loop.dev/test": "true"}}
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("cannot create namespace {name}: {e}"));
    let result = tokio::spawn(body(cp.clone(), name.clone())).await;
    if result.is_err() {
        eprintln!("{}", cp.dump(&name));
    }
    let _ = namespaces.delete(&name, &DeleteParams::background()).await;
    if let Err(e) = result {
        match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("test body was cancelled: {e}"),
        }
    }
}

/// Wait for a future with a generous deadline, naming what was awaited on timeout.
pub async fn within<T>(secs: u64, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {secs}s waiting for {what}"))
}

static POSTGRES: OnceCell<String> = OnceCell::const_new();

/// A fresh, empty PostgreSQL database on the local server; returns its URL.
pub async fn postgres() -> String {
    let admin_url = POSTGRES
        .get_or_init(|| async {
            tokio::task::spawn_blocking(|| {
                run_script("dev-postgres", &["up"]);
                run_script("dev-postgres", &["url"])
            })
            .await
            .unwrap_or_else(|e| panic!("starting PostgreSQL panicked: {e}"))
        })
        .await
        .clone();
    let db = format!("t_{}", suffix());
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {admin_url}: {e}"));
    sqlx::Executor::execute(
        &mut conn,
        sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")),
    )
    .await
    .unwrap_or_else(|e| panic!("cannot create database {db}: {e}"));
    let base = admin_url
        .rsplit_once('/')
        .map_or(admin_url.as_str(), |(b, _)| b);
    format!("{base}/{db}")
}

/// Poll `check` until it returns `Some`, for at most `secs` seconds. For conditions that only
/// an outside observer can see (another process's state); the deadline is generous.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Install the ApiToken and ApiTokenPolicy CRDs from `crds/` with server-side apply and wait
/// until they are served.
pub async fn install_crd(cp: &ControlPlane) {
    install_crd_file(cp, "crds/apitoken.yaml", "apitokens.loop.dev").await;
    install_crd_file(cp, "crds/apitokenpolicy.yaml", "apitokenpolicies.loop.dev").await;
}

/// Install the CRD in `path` (relative to the repository) with server-side apply and wait until
/// `name` is Established.
pub async fn install_crd_file(cp: &ControlPlane, path: &str, name: &str) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::runtime::wait::{await_condition, conditions};
    let path = repo_root().join(path);
    cp.kubectl_ok(&[
        "apply",
        "--server-side",
        "--field-manager=loop-tests",
        "-f",
        path.to_str().unwrap_or_default(),
    ]);
    let crds: Api<CustomResourceDefinition> = Api::all(cp.client.clone());
    within(
        60,
        &format!("{name} to be Established"),
        await_condition(crds, name, conditions::is_crd_established()),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// A child process whose stderr (its log) is captured line by line.
pub struct Logged {
    pub child: std::process::Child,
    pub logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// Spawn `cmd` with stderr captured; wait until a log line containing `marker` shows
/// `key=VALUE`, and return the process and VALUE (an address).
pub fn spawn_logged(
    mut cmd: Command,
    what: &str,
    marker: &'static str,
    key: &'static str,
) -> (Logged, String) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::sync::{Arc, Mutex};
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let stderr = child
        .stderr
        .take()
        .unwrap_or_else(|| panic!("{what} has no stderr"));
    let logs = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = Arc::clone(&logs);
    std::thread::spawn(move || {
        // Lossy: one line that is not UTF-8 must not stop the reading (the process would then
        // block on a full pipe).
        let mut reader = BufReader::new(stderr);
        let mut buf = Vec::new();
        while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
            let line = String::from_utf8_lossy(&buf)
                .trim_end_matches('\n')
                .to_owned();
            buf.clear();
            if line.contains(marker)
                && let Some(v) = line.split_whitespace().find_map(|w| w.strip_prefix(key))
            {
                let _ = tx.send(v.to_owned());
            }
            sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    });
    let Ok(value) = rx.recv_timeout(Duration::from_secs(60)) else {
        let _ = child.kill();
        panic!(
            "{what} did not start; logs:\n{}",
            logs.lock().unwrap_or_else(|e| e.into_inner()).join("\n")
        );
    };
    (Logged { child, logs }, value)
}

/// Ready, and every rollout target has completely rolled out the current token.
pub fn rolled_out(t: &loop_token_operator::operator::resource::crd::ApiToken) -> bool {
    use loop_token_operator::operator::resource::crd::RolloutState;
    t.status.as_ref().is_some_and(|s| {
        let fp = s.fingerprint.clone().unwrap_or_default();
        s.is_true("Ready")
            && !s.rollout.is_empty()
            && s.rollout
                .iter()
                .all(|r| r.state == RolloutState::Complete && r.fingerprint == fp)
    })
}
