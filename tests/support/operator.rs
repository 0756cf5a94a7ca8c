//! Running `loop-token-operator` as a real process against the local control plane, limited to
//! one test namespace, with its logs captured.
#![allow(dead_code)]

use std::path::Path;
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

/// How to start an operator process: `OperatorProcess::builder(&cp, &store, &ns)`, then any of
/// the settings below, then `start()`.
pub struct OperatorBuilder<'a> {
    kubeconfig: &'a Path,
    store: &'a StoreProcess,
    ns: &'a str,
    crash_at: Option<&'a str>,
    leader_election: bool,
    cluster_name: bool,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    usage_interval: &'a str,
}

impl<'a> OperatorBuilder<'a> {
    /// Without `--cluster-name e2e`: the operator names the cluster itself.
    pub fn without_cluster_name(mut self) -> Self {
        self.cluster_name = false;
        self
    }

    /// Authenticate with another identity (e.g. a ServiceAccount's kubeconfig).
    pub fn kubeconfig(mut self, path: &'a Path) -> Self {
        self.kubeconfig = path;
        self
    }

    /// Die at this step of an issue (`LOOP_OPERATOR_CRASH_AT`).
    pub fn crash_at(mut self, step: &'a str) -> Self {
        self.crash_at = Some(step);
        self
    }

    /// Run with leader election (off by default), with these extra flags for it.
    pub fn leader_election(mut self, args: &[&str]) -> Self {
        self.leader_election = true;
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// Extra environment variables (e.g. a [`super::clock::FakeClock`]'s).
    pub fn envs(mut self, envs: &[(String, String)]) -> Self {
        self.envs.extend(envs.iter().cloned());
        self
    }

    /// `--usage-interval` (1h by default here: tests wake the operator by changing things).
    pub fn usage_interval(mut self, every: &'a str) -> Self {
        self.usage_interval = every;
        self
    }

    /// Extra flags.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// Start the operator; returns once it has started (or waits for its lease).
    pub fn start(self) -> OperatorProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_loop-token-operator"));
        cmd.args([
            "run",
            "--store-url",
            &self.store.url,
            "--namespace",
            self.ns,
        ])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .args([
            "--retry-after",
            "500ms",
            "--usage-interval",
            self.usage_interval,
        ])
        .env("KUBECONFIG", self.kubeconfig)
        .env("LOOP_STORE_TOKEN", ADMIN)
        .env(
            "RUST_LOG",
            "debug,hyper=info,tower=info,h2=info,rustls=info,kube_client=info",
        )
        .env_remove("LOOP_OPERATOR_CRASH_AT");
        if !self.leader_election {
            cmd.arg("--leader-election=false");
        }
        if self.cluster_name {
            cmd.args(["--cluster-name", "e2e"]);
        }
        cmd.args(&self.args);
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)));
        if let Some(step) = self.crash_at {
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
}

impl OperatorProcess {
    /// An operator for namespace `ns` of the control plane, talking to `store`, without leader
    /// election unless asked.
    pub fn builder<'a>(
        cp: &'a ControlPlane,
        store: &'a StoreProcess,
        ns: &'a str,
    ) -> OperatorBuilder<'a> {
        OperatorBuilder {
            kubeconfig: &cp.kubeconfig,
            store,
            ns,
            crash_at: None,
            leader_election: false,
            cluster_name: true,
            args: Vec::new(),
            envs: Vec::new(),
            usage_interval: "1h",
        }
    }

    pub async fn metrics(&self) -> String {
        let resp = super::http_client()
            .get(format!("{}/metrics", self.metrics_url))
            .send()
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
        // A failing test shows what the operator said (its first and last lines), so that a
        // failure in CI can be read without running it again.
        if std::thread::panicking() {
            let logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
            let (head, tail) = (200.min(logs.len()), logs.len().saturating_sub(200));
            eprintln!("===== loop-token-operator log ({} lines) =====", logs.len());
            for line in &logs[..head] {
                eprintln!("{line}");
            }
            if tail > head {
                eprintln!("[... {} lines left out ...]", tail - head);
            }
            for line in &logs[tail.max(head)..] {
                eprintln!("{line}");
            }
        }
    }
}
