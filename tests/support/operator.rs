//! Running `loop-token-operator` as a real process against the local control plane, limited to
//! one test namespace, with its logs captured.
#![allow(dead_code)]

use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::ControlPlane;
use super::store::{ADMIN, StoreProcess};

pub struct OperatorProcess {
    child: Child,
    pub logs: Arc<Mutex<Vec<String>>>,
    /// Address of /metrics, /healthz, /readyz.
    pub metrics_url: String,
}

impl OperatorProcess {
    /// Start the operator for namespace `ns` without leader election; returns once it has
    /// started.
    pub fn start(
        cp: &ControlPlane,
        store: &StoreProcess,
        ns: &str,
        crash_at: Option<&str>,
    ) -> OperatorProcess {
        Self::start_with(cp, store, ns, crash_at, &["--leader-election=false"])
    }

    /// Start the operator with extra arguments.
    pub fn start_with(
        cp: &ControlPlane,
        store: &StoreProcess,
        ns: &str,
        crash_at: Option<&str>,
        extra: &[&str],
    ) -> OperatorProcess {
        Self::start_as(&cp.kubeconfig, store, ns, crash_at, extra)
    }

    /// Start the operator with another identity (kubeconfig).
    pub fn start_as(
        kubeconfig: &std::path::Path,
        store: &StoreProcess,
        ns: &str,
        crash_at: Option<&str>,
        extra: &[&str],
    ) -> OperatorProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_loop-token-operator"));
        cmd.args([
            "run",
            "--store-url",
            &store.url,
            "--namespace",
            ns,
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .args([
            "--cluster-name",
            "e2e",
            "--retry-after",
            "500ms",
            "--usage-interval",
            "1h",
        ])
        .env("KUBECONFIG", kubeconfig)
        .env("LOOP_STORE_TOKEN", ADMIN)
        .env(
            "RUST_LOG",
            "debug,hyper=info,tower=info,h2=info,rustls=info,kube_client=info",
        )
        .env_remove("LOOP_OPERATOR_CRASH_AT")
        .args(extra);
        if let Some(step) = crash_at {
            cmd.env("LOOP_OPERATOR_CRASH_AT", step);
        }
        let (super::Logged { child, logs }, addr) = super::spawn_logged(
            cmd,
            "loop-token-operator",
            "loop-token-operator started",
            "metrics=",
        );
        OperatorProcess {
            child,
            logs,
            metrics_url: format!("http://{addr}"),
        }
    }

    pub async fn metrics(&self) -> String {
        let resp = reqwest::get(format!("{}/metrics", self.metrics_url))
            .await
            .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
        resp.text().await.unwrap_or_default()
    }

    /// Whether a log line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|l| l.contains(needle))
    }

    pub fn log_text(&self) -> String {
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    /// Wait for the process to exit by itself (a crash point); returns how it ended.
    pub fn wait_exit(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGTERM, then wait for the process to exit.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.wait_exit(60)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
