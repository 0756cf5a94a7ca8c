//! Flux's source-controller and kustomize-controller as real processes against the local control
//! plane, limited to one test namespace, with their logs captured. The binaries and CRDs come
//! from `scripts/gitops-tools` (built from Flux's Go modules, cached outside the repository).
//! Every address they serve (artifacts, metrics, health) is on 127.0.0.1.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use super::ControlPlane;

/// Path of a tool built by `scripts/gitops-tools` (building it when missing).
pub fn gitops_tool(args: &[&str]) -> String {
    let path = super::repo_root().join("scripts/gitops-tools");
    let out = Command::new(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    assert!(
        out.status.success(),
        "scripts/gitops-tools {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Install Flux's CRDs (server-side apply, idempotent) and wait until the two this test uses
/// are served.
pub async fn install_flux_crds(cp: &ControlPlane) {
    let dir = gitops_tool(&["crds"]);
    cp.kubectl_ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=loop-tests",
        "-f",
        &dir,
    ]);
    cp.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/gitrepositories.source.toolkit.fluxcd.io",
        "crd/kustomizations.kustomize.toolkit.fluxcd.io",
    ]);
}

/// One controller process and its captured log lines (stdout and stderr: Flux logs JSON to
/// stderr).
pub struct FluxProcess {
    child: Child,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl FluxProcess {
    pub fn log_text(&self) -> String {
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }
}

impl Drop for FluxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// source-controller and kustomize-controller for namespace `ns`.
pub struct Flux {
    pub source: FluxProcess,
    pub kustomize: FluxProcess,
    _storage: tempfile::TempDir,
}

/// A free TCP port on 127.0.0.1 (the kernel's choice; the controllers bind it right after).
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = l.local_addr().unwrap_or_else(|e| panic!("{e}"));
    addr.to_string()
}

fn spawn(cp: &ControlPlane, ns: &str, name: &str, args: &[String]) -> (FluxProcess, String) {
    let health = free_addr();
    let mut cmd = Command::new(gitops_tool(&["bin", name]));
    cmd.args(args)
        .arg(format!("--health-addr={health}"))
        .arg(format!("--metrics-addr={}", free_addr()))
        .args([
            "--enable-leader-election=false",
            "--watch-all-namespaces=false",
        ])
        .args(["--log-level=debug", "--log-encoding=json"])
        .env("KUBECONFIG", &cp.kubeconfig)
        .env("RUNTIME_NAMESPACE", ns)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let logs = Arc::new(Mutex::new(Vec::new()));
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
    }
    (FluxProcess { child, logs }, health)
}

/// Wait until a controller answers its readiness probe (`/readyz` on its health address).
async fn wait_ready(p: &mut FluxProcess, name: &str, health: &str) {
    let http = super::http_client();
    let url = format!("http://{health}/readyz");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(&url).send().await
            && r.status().is_success()
        {
            return;
        }
        if let Ok(Some(status)) = p.child.try_wait() {
            panic!("{name} exited ({status}); logs:\n{}", p.log_text());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} not ready after 60s; logs:\n{}",
            p.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

impl Flux {
    /// Start both controllers, watching only `ns`; returns once both are ready.
    pub async fn start(cp: &ControlPlane, ns: &str) -> Flux {
        install_flux_crds(cp).await;
        let storage = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let storage_addr = free_addr();
        let (mut source, source_health) = spawn(
            cp,
            ns,
            "source-controller",
            &[
                format!("--storage-path={}", storage.path().display()),
                format!("--storage-addr={storage_addr}"),
                format!("--storage-adv-addr={storage_addr}"),
            ],
        );
        let (mut kustomize, kustomize_health) = spawn(cp, ns, "kustomize-controller", &[]);
        wait_ready(&mut source, "source-controller", &source_health).await;
        wait_ready(&mut kustomize, "kustomize-controller", &kustomize_health).await;
        Flux {
            source,
            kustomize,
            _storage: storage,
        }
    }

    /// Both controllers' logs, for a failure message.
    pub fn log_text(&self) -> String {
        format!(
            "----- source-controller -----\n{}\n----- kustomize-controller -----\n{}",
            self.source.log_text(),
            self.kustomize.log_text()
        )
    }
}
