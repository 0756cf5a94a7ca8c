//! The node of the local cluster, for tests that run real pods (`tests/node`):
//!
//! - [`node`]: the control plane with its node (`scripts/dev-cluster up --node`, started when
//!   absent), the project's image and the consumer's (`scripts/image`, `scripts/image consumer`)
//!   loaded into the node's containerd;
//! - [`Release`]: the chart installed with `helm install` in a test's namespace, uninstalled on
//!   drop (its cluster-scoped objects are named after the release);
//! - [`consumer`]: the YAML of a Deployment of the consumer app (`tests/consumer/app.rs`);
//! - [`Collector`]: where the consumers post their reports (an HTTP server of the test process on
//!   the node's bridge address, which pods reach).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::OnceCell;

use super::{ControlPlane, control_plane, eventually, run_script};

/// The node's address on its bridge: kube-apiserver, kubelet and CoreDNS listen there, and pods
/// reach the host there (scripts/lib/node.sh).
pub const NODE_IP: &str = "10.244.0.1";
pub const OPERATOR_IMAGE: &str = "localhost/loop-token-operator";
pub const CONSUMER_IMAGE: &str = "localhost/loop-consumer:dev";

static NODE: OnceCell<()> = OnceCell::const_new();

/// The local cluster with its node, and both images loaded on it.
pub async fn node() -> ControlPlane {
    NODE.get_or_init(|| async {
        tokio::task::spawn_blocking(|| {
            run_script("dev-cluster", &["up", "--node"]);
            run_script("image", &[]);
            run_script("image", &["consumer"]);
            run_script("dev-cluster", &["load-image", "loop-token-operator:dev"]);
            run_script("dev-cluster", &["load-image", "loop-consumer:dev"]);
        })
        .await
        .unwrap_or_else(|e| panic!("starting the node panicked: {e}"));
    })
    .await;
    control_plane().await
}

/// A namespace of a node test: created with the test's label, deleted (with everything in it)
/// on drop.
pub struct Namespace {
    cp: ControlPlane,
    pub name: String,
}

impl Namespace {
    pub fn create(cp: &ControlPlane, prefix: &str) -> Namespace {
        let name = format!("{prefix}-{}", super::suffix());
        let yaml = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {{loop.dev/test: \"true\"}}}}\n"
        );
        let out = cp.kubectl_stdin(&["create", "-f", "-"], Some(&yaml));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Namespace {
            cp: cp.clone(),
            name,
        }
    }

    /// A namespace named `name` that something else creates (the README's commands): only
    /// deleted on drop.
    pub fn adopt(cp: &ControlPlane, name: String) -> Namespace {
        Namespace {
            cp: cp.clone(),
            name,
        }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.cp.dump(&self.name));
        }
        let _ = self
            .cp
            .kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
        // The volumes that `scripts/dev-cluster volume` made for its claims (Retain).
        let selector = format!("loop.dev/claim-namespace={}", self.name);
        let _ = self
            .cp
            .kubectl(&["delete", "pv", "-l", &selector, "--wait=false"]);
    }
}

/// The chart, installed with `helm install`.
pub struct Release {
    cp: ControlPlane,
    pub name: String,
    pub ns: String,
    /// The chart's full name (the prefix of its objects' names).
    pub fullname: String,
}

impl Release {
    /// `helm install NAME charts/loop-token-operator -n NS --wait` with the local image and
    /// `sets` (`key=value` each).
    pub fn install(cp: &ControlPlane, name: &str, ns: &str, sets: &[&str]) -> Release {
        let chart = super::helm::chart();
        let image_repo = format!("image.repository={OPERATOR_IMAGE}");
        let mut args = vec![
            "install",
            name,
            chart.to_str().unwrap_or_default(),
            "--namespace",
            ns,
            "--set",
            &image_repo,
            "--set",
            "image.tag=dev",
            "--wait",
            "--timeout",
            "180s",
        ];
        for s in sets {
            args.extend(["--set", s]);
        }
        let release = Release::adopt(cp, name, ns);
        super::helm::helm_ok(cp, &args);
        release
    }

    /// The chart's full name for a release `name` (its `lto.fullname`).
    pub fn adopt_name(name: &str) -> String {
        if name.contains("loop-token-operator") {
            name.to_owned()
        } else {
            format!("{name}-loop-token-operator")
        }
    }

    /// A release that something else installs (the README's commands): only uninstalled on drop.
    pub fn adopt(cp: &ControlPlane, name: &str, ns: &str) -> Release {
        let fullname = Self::adopt_name(name);
        Release {
            cp: cp.clone(),
            name: name.to_owned(),
            ns: ns.to_owned(),
            fullname,
        }
    }

    /// The store's Service name, as its certificate names it.
    pub fn store_host(&self) -> String {
        format!("{}-store.{}.svc", self.fullname, self.ns)
    }

    /// What apps (and Loop's API) call: `https://<fullname>-store.<ns>.svc:8080`.
    pub fn store_url(&self) -> String {
        format!("https://{}:8080", self.store_host())
    }

    /// One key of a Secret of the release, decoded.
    pub fn secret(&self, secret: &str, key: &str) -> String {
        let jsonpath = format!("jsonpath={{.data.{}}}", key.replace('.', "\\."));
        let b64 = self
            .cp
            .kubectl_ok(&["get", "secret", secret, "-n", &self.ns, "-o", &jsonpath]);
        let bytes = base64_decode(b64.trim());
        String::from_utf8(bytes).unwrap_or_else(|e| panic!("{secret}/{key}: {e}"))
    }

    pub fn ca_pem(&self) -> String {
        self.secret(&format!("{}-store-tls", self.fullname), "ca.crt")
    }

    pub fn credential(&self, which: &str) -> String {
        self.secret(&format!("{}-credentials", self.fullname), which)
    }

    /// The Secret `store-access` in `app_ns` that the consumers mount: the store's CA and the
    /// introspection credential (what Loop's API is given).
    pub fn grant_store_access(&self, app_ns: &str) {
        let ca = self.ca_pem();
        let introspect = self.credential("introspect");
        let yaml = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "store-access", "namespace": app_ns},
            "stringData": {"ca.crt": ca, "introspect": introspect},
        });
        self.cp.apply_ok_in(app_ns, &yaml.to_string());
    }

    /// An HTTP client of the store from the test process: its Service name resolves to the
    /// Service's cluster IP (kube-proxy's rules carry the host's connections too), and only the
    /// release's CA is trusted.
    pub fn store_client(&self) -> StoreApi {
        let ip = self.cp.kubectl_ok(&[
            "get",
            "service",
            &format!("{}-store", self.fullname),
            "-n",
            &self.ns,
            "-o",
            "jsonpath={.spec.clusterIP}",
        ]);
        self.store_client_at(ip.trim())
    }

    /// [`Self::store_client`] for one store pod: its Service name resolves to the pod's IP.
    pub fn store_client_at(&self, ip: &str) -> StoreApi {
        let addr: SocketAddr = format!("{ip}:8080")
            .parse()
            .unwrap_or_else(|e| panic!("address {ip:?}: {e}"));
        loop_token_operator::serve::install_crypto_provider();
        let tls = loop_token_operator::operator::tls_config(
            &loop_token_operator::operator::Trust::CaBundle(self.ca_pem().into_bytes()),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let http = super::client_builder()
            .timeout(Duration::from_secs(10))
            .resolve(&self.store_host(), addr)
            .tls_backend_preconfigured(tls)
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        StoreApi {
            http,
            base: self.store_url(),
            admin: self.credential("admin"),
            introspect: self.credential("introspect"),
        }
    }

    /// The IPs of the release's Ready store pods.
    pub fn store_pod_ips(&self) -> Vec<String> {
        let selector = format!(
            "app.kubernetes.io/instance={},app.kubernetes.io/component=store",
            self.name
        );
        let out = self.cp.kubectl_ok(&[
            "get", "pods", "-n", &self.ns, "-l", &selector, "-o",
            "jsonpath={range .items[*]}{.status.podIP} {.status.conditions[?(@.type==\"Ready\")].status} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
        ]);
        out.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 2 && f[1] == "True").then(|| f[0].to_owned())
            })
            .collect()
    }

    /// The pods of the release's component (`operator` or `store`).
    pub fn pods(&self, component: &str) -> Vec<String> {
        let selector = format!(
            "app.kubernetes.io/instance={},app.kubernetes.io/component={component}",
            self.name
        );
        self.cp
            .kubectl_ok(&["get", "pods", "-n", &self.ns, "-l", &selector, "-o", "name"])
            .lines()
            .map(|l| l.trim_start_matches("pod/").to_owned())
            .collect()
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        // Before the uninstall takes the pods and their events away.
        if std::thread::panicking() {
            eprintln!("{}", self.cp.dump(&self.ns));
        }
        let _ = super::helm::helm(
            &self.cp,
            &["uninstall", &self.name, "--namespace", &self.ns, "--wait"],
        );
    }
}

/// Standard base64 (a Secret's `data`), decoded.
pub fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_else(|e| panic!("base64 {s:?}: {e}"))
}

/// The store's API as the test process calls it.
pub struct StoreApi {
    pub http: reqwest::Client,
    pub base: String,
    pub admin: String,
    pub introspect: String,
}

impl StoreApi {
    /// `POST /v1/introspect`: whether the token is active (None: no 200 answer).
    pub async fn active(&self, token: &str) -> Option<bool> {
        let resp = self
            .http
            .post(format!("{}/v1/introspect", self.base))
            .bearer_auth(&self.introspect)
            .json(&serde_json::json!({"token": token}))
            .send()
            .await
            .ok()?;
        if resp.status() != reqwest::StatusCode::OK {
            return None;
        }
        let body: serde_json::Value = resp.json().await.ok()?;
        body.get("active").and_then(serde_json::Value::as_bool)
    }

    /// `GET /v1/tokens?ownerUid=UID` (every page): the registrations of one ApiToken.
    pub async fn registrations(&self, owner_uid: &str) -> Vec<serde_json::Value> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{}/v1/tokens?ownerUid={owner_uid}&limit=1000", self.base);
            if let Some(c) = &cursor {
                url.push_str(&format!("&after={c}"));
            }
            let resp = self
                .http
                .get(url)
                .bearer_auth(&self.admin)
                .send()
                .await
                .unwrap_or_else(|e| panic!("list registrations: {e}"));
            assert_eq!(resp.status(), reqwest::StatusCode::OK, "list registrations");
            let page: serde_json::Value = resp.json().await.unwrap_or_else(|e| panic!("{e}"));
            if let Some(items) = page.get("items").and_then(|v| v.as_array()) {
                all.extend(items.iter().cloned());
            }
            match page.get("next").and_then(|v| v.as_str()) {
                Some(c) => cursor = Some(c.to_owned()),
                None => return all,
            }
        }
    }
}

/// Where the consumer reads its token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TokenFrom {
    /// The Secret mounted as a volume, read before every call.
    File,
    /// An environment variable from the Secret, read at start.
    Env,
}

/// A Deployment `name` of the consumer app reading the key `token` of the Secret `secret`, calling
/// `store_url` with the Secret `store-access` of its namespace, posting to `report_url`.
pub fn consumer(
    name: &str,
    secret: &str,
    from: TokenFrom,
    store_url: &str,
    report_url: &str,
    replicas: u32,
) -> String {
    let (source, env, mounts, volumes) = match from {
        TokenFrom::File => (
            "--token-file, /var/run/token/token",
            String::new(),
            "        - {name: token, mountPath: /var/run/token, readOnly: true}\n",
            format!("      - {{name: token, secret: {{secretName: {secret}}}}}\n"),
        ),
        TokenFrom::Env => (
            "--token-env, LOOP_TOKEN",
            format!(
                "        - {{name: LOOP_TOKEN, valueFrom: {{secretKeyRef: {{name: {secret}, key: token}}}}}}\n"
            ),
            "",
            String::new(),
        ),
    };
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 10
      securityContext: {{runAsNonRoot: true, seccompProfile: {{type: RuntimeDefault}}}}
      containers:
      - name: app
        image: {CONSUMER_IMAGE}
        imagePullPolicy: Never
        args: [{source}, --store-url, \"{store_url}\", --ca-file, /var/run/store/ca.crt, --credential-file, /var/run/store/introspect, --report-url, \"{report_url}\"]
        env:
        - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
{env}        readinessProbe: {{httpGet: {{path: /ready, port: 8080}}, periodSeconds: 1}}
        securityContext: {{allowPrivilegeEscalation: false, capabilities: {{drop: [ALL]}}, readOnlyRootFilesystem: true}}
        volumeMounts:
        - {{name: store, mountPath: /var/run/store, readOnly: true}}
{mounts}      volumes:
      - {{name: store, secret: {{secretName: store-access}}}}
{volumes}"
    )
}

/// What one fingerprint went through, as a consumer reports it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Seen {
    pub fingerprint: String,
    pub first_seen_ms: u64,
    pub first_active_ms: Option<u64>,
    pub active: u64,
    pub refused: u64,
    pub errors: u64,
}

/// A consumer's report (tests/consumer/app.rs).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub name: String,
    pub started_ms: u64,
    pub calls: u64,
    pub active: u64,
    pub refused: u64,
    pub errors: u64,
    pub fingerprint: Option<String>,
    pub first_active_ms: Option<u64>,
    pub fingerprints: Vec<Seen>,
    pub last_error: Option<String>,
    pub last_active: bool,
    pub stopped: bool,
}

/// The consumers' reports, by pod name (the latest of each).
pub struct Collector {
    pub url: String,
    reports: Arc<Mutex<BTreeMap<String, Report>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    pub async fn start() -> Collector {
        use axum::routing::post;
        let reports: Arc<Mutex<BTreeMap<String, Report>>> = Arc::default();
        let r = Arc::clone(&reports);
        let app = axum::Router::new().route(
            "/report",
            post(move |axum::Json(report): axum::Json<Report>| {
                let r = Arc::clone(&r);
                async move {
                    let mut all = r.lock().unwrap_or_else(|e| e.into_inner());
                    // A late periodic report never replaces a final one.
                    if !all.get(&report.name).is_some_and(|old| old.stopped) {
                        all.insert(report.name.clone(), report);
                    }
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(format!("{NODE_IP}:0"))
            .await
            .unwrap_or_else(|e| panic!("cannot listen on the node's address: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Collector {
            url: format!("http://{addr}/report"),
            reports,
            task,
        }
    }

    pub fn reports(&self) -> Vec<Report> {
        self.reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Active, refused and error answers of every consumer so far.
    pub fn totals(&self) -> (u64, u64, u64) {
        self.reports().iter().fold((0, 0, 0), |(a, r, e), x| {
            (a + x.active, r + x.refused, e + x.errors)
        })
    }

    /// Wait until `pred` holds for the reports.
    pub async fn until(
        &self,
        secs: u64,
        what: &str,
        pred: impl Fn(&[Report]) -> bool,
    ) -> Vec<Report> {
        eventually(secs, what, || {
            let reports = self.reports();
            let ok = pred(&reports);
            async move { ok.then_some(reports) }
        })
        .await
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Milliseconds since the epoch on this machine's clock (the pods share it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Median and 99th percentile (nearest rank) of `xs`, in the unit given.
pub fn median_p99(xs: &mut [u64]) -> (u64, u64) {
    xs.sort_unstable();
    if xs.is_empty() {
        return (0, 0);
    }
    let rank = |p: f64| xs[((p * xs.len() as f64).ceil() as usize).clamp(1, xs.len()) - 1];
    (rank(0.5), rank(0.99))
}
