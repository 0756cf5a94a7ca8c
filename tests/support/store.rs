//! Running `loop-store` as a real process, and a TCP proxy that can cut its database off.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

pub const ADMIN: &str = "admin-credential-for-tests-0001";
pub const INTROSPECT: &str = "introspect-credential-for-tests-01";

/// A `loop-store serve` child process whose stderr (its logs) is captured.
pub struct StoreProcess {
    child: Child,
    pub url: String,
    pub logs: Arc<Mutex<Vec<String>>>,
    http: reqwest::Client,
}

impl StoreProcess {
    /// Start `loop-store serve` with extra arguments; returns once it listens.
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> StoreProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_loop-store"));
        cmd.arg("serve");
        if !args.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.args(args);
        cmd.env("LOOP_STORE_ADMIN_TOKEN", ADMIN)
            .env("LOOP_STORE_INTROSPECT_TOKEN", INTROSPECT);
        cmd.env("RUST_LOG", "debug");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let (super::Logged { child, logs }, addr) =
            super::spawn_logged(cmd, "loop-store", " listening ", "addr=");
        StoreProcess {
            child,
            url: format!("http://{addr}"),
            logs,
            http: super::http_client(),
        }
    }

    /// Start `loop-store serve` over TLS with the certificate and key of `leaf`; the URL is
    /// `https://localhost:PORT` and the test's client trusts only `ca` (a PEM file).
    pub fn start_tls(args: &[&str], leaf: &super::tls::Pem, ca: &std::path::Path) -> StoreProcess {
        let mut all = vec![
            "--tls-cert-file",
            super::tls::path_str(&leaf.cert),
            "--tls-key-file",
            super::tls::path_str(&leaf.key),
        ];
        all.extend(args);
        let mut s = Self::start(&all, &[]);
        s.url = s.url.replace("http://127.0.0.1", "https://localhost");
        let pem = std::fs::read(ca).unwrap_or_else(|e| panic!("read {}: {e}", ca.display()));
        let cert = reqwest::Certificate::from_pem(&pem).unwrap_or_else(|e| panic!("CA: {e}"));
        s.http = super::client_builder()
            .tls_certs_only([cert])
            .build()
            .unwrap_or_else(|e| panic!("TLS client: {e}"));
        s
    }

    pub fn log_text(&self) -> String {
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        cred: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(c) = cred {
            req = req.bearer_auth(c);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("request to loop-store failed: {e:?}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn register(&self, id: &str, hash: &str, scopes: &[&str]) -> (u16, Value) {
        let body = json!({
            "hash": hash, "name": format!("token {id}"), "scopes": scopes,
            "owner": {"cluster": "test", "namespace": "ns", "name": id, "uid": format!("uid-{id}")},
        });
        self.call(
            reqwest::Method::PUT,
            &format!("/v1/tokens/{id}"),
            Some(ADMIN),
            Some(body),
        )
        .await
    }

    pub async fn introspect(&self, token: &str) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            "/v1/introspect",
            Some(INTROSPECT),
            Some(json!({ "token": token })),
        )
        .await
    }

    pub async fn metrics(&self) -> String {
        let (_, v) = self
            .call(reqwest::Method::GET, "/metrics", None, None)
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    /// Kill the process at once (an outage); the struct keeps its URL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = self
            .child
            .wait()
            .unwrap_or_else(|e| panic!("waiting for loop-store: {e}"));
        std::mem::forget(self);
        status
    }
}

impl Drop for StoreProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `loop-store` with arguments and expect it to fail at start-up; returns its stderr.
pub fn start_failure(args: &[&str], envs: &[(&str, &str)]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_loop-store"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("LOOP_STORE_ADMIN_TOKEN")
        .env_remove("LOOP_STORE_INTROSPECT_TOKEN")
        .envs(envs.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot run loop-store: {e}"));
    assert!(
        !out.status.success(),
        "loop-store started although it should not have"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A TCP proxy in front of a server, which a test can cut (dropping every connection and
/// refusing new ones) and restore: a database outage without touching the shared database. It
/// can also hold the connections open at that moment: they stay open and forward nothing ever
/// again, in either direction (a blackhole: no reset, no close), while new ones pass.
pub struct Proxy {
    pub addr: SocketAddr,
    down: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
    /// Bumped by [`Proxy::hold`]; a connection opened before the bump is held.
    holds: tokio::sync::watch::Sender<u64>,
    /// [`Proxy::hold_new`]: connections accepted from now on are held from the start.
    hold_new: Arc<AtomicBool>,
    /// The local port of each connection to the target: the client port the server sees.
    outbound_ports: Arc<Mutex<Vec<u16>>>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        Self::start_on("127.0.0.1:0", target).await
    }

    /// A proxy listening on `bind` (e.g. the node's bridge address, for pods).
    pub async fn start_on(bind: &str, target: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .unwrap_or_else(|e| panic!("cannot listen on {bind}: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let down = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (d, c) = (Arc::clone(&down), Arc::clone(&conns));
        let (holds, holds_rx) = tokio::sync::watch::channel(0u64);
        let hold_new = Arc::new(AtomicBool::new(false));
        let outbound_ports: Arc<Mutex<Vec<u16>>> = Arc::default();
        let (hn, ports) = (Arc::clone(&hold_new), Arc::clone(&outbound_ports));
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if d.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let mut held = holds_rx.clone();
                let opened_in = *held.borrow_and_update();
                let held_from_start = hn.load(Ordering::SeqCst);
                let ports = Arc::clone(&ports);
                let task = tokio::spawn(async move {
                    if held_from_start {
                        // Accepted, never answered: a connection attempt that hangs.
                        let _keep = &inbound;
                        std::future::pending::<()>().await;
                    }
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        if let Ok(local) = outbound.local_addr() {
                            ports
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(local.port());
                        }
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = async { let _ = held.wait_for(|h| *h > opened_in).await; } => {
                                // Both sockets stay open and nothing is read or written: the
                                // peers see a link that accepts bytes and never answers.
                                std::future::pending::<()>().await;
                            }
                        }
                    }
                });
                c.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(task.abort_handle());
            }
        });
        Proxy {
            addr,
            down,
            conns,
            accept,
            holds,
            hold_new,
            outbound_ports,
        }
    }

    /// From now on (until called with `false`), new connections are accepted and held: they
    /// never reach the target and never close (a connection attempt that hangs). Open ones
    /// pass as before.
    pub fn hold_new(&self, on: bool) {
        self.hold_new.store(on, Ordering::SeqCst);
    }

    /// The client ports the target has seen from this proxy (to find its sessions in
    /// `pg_stat_activity`).
    pub fn client_ports(&self) -> Vec<u16> {
        self.outbound_ports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Hold every connection open now: from here on it forwards nothing and never closes
    /// (until [`Proxy::cut`] or the proxy's drop). New connections pass as usual.
    pub fn hold(&self) {
        self.holds.send_modify(|h| *h += 1);
    }

    /// Cut every connection and refuse new ones.
    pub fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for c in self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            c.abort();
        }
    }

    pub fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// The data directory argument for a SQLite store in `dir`.
pub fn sqlite_args(dir: &Path) -> Vec<String> {
    vec!["--data-dir".into(), dir.display().to_string()]
}
