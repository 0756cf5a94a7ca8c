//! The image, built and run here: `scripts/image` (`make image`) builds
//! `loop-token-operator:dev` FROM scratch with podman, from static binaries built on this
//! machine; then `loop-store` and the operator run from it the way the Helm chart runs them
//! (its installed Deployments' commands, arguments, security contexts and volumes, filled from
//! the Secrets the chart generated), against the local control plane, and a token lives its
//! whole life through the containerised pair. Skipped, saying so, only where podman is absent
//! (`.ci/run` installs it).
//!
//! What differs from a cluster, and why: no kubelet runs here, so the containers share the
//! host's network (the control plane listens on loopback, or on the node's bridge address) and every address the chart
//! binds on 0.0.0.0 is moved to a free port on 127.0.0.1; the store's Service name resolves to
//! 127.0.0.1 through `--add-host`, so the operator still checks the chart's certificate against
//! that name; the operator authenticates as the chart's ServiceAccount through the in-cluster
//! configuration (a token from `kubectl create token`, the API server's CA).

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde::Deserialize;
use serde_json::{Value, json};
use support::{ControlPlane, eventually, with_namespace};

const IMAGE: &str = "localhost/loop-token-operator:dev";
const RELEASE: &str = "lto";

/// `podman` with the runtime that works on these machines: Debian 12's crun refuses a host
/// with hybrid cgroups v1/v2; runc runs there (and anywhere else).
fn podman() -> Command {
    let mut cmd = Command::new("podman");
    if Command::new("runc").arg("--version").output().is_ok() {
        cmd.args(["--runtime", "runc"]);
    }
    cmd
}

fn podman_ok(args: &[&str]) -> String {
    let out = podman()
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run podman: {e}"));
    assert!(
        out.status.success(),
        "podman {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn podman_present() -> bool {
    Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Build the image as `make image` does; returns its size in bytes.
fn build_image() -> u64 {
    let out = Command::new(support::repo_root().join("scripts/image"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run scripts/image: {e}"));
    assert!(
        out.status.success(),
        "scripts/image failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    podman_ok(&["image", "inspect", "--format", "{{.Size}}", IMAGE])
        .parse()
        .unwrap_or_default()
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A container started by the test, removed when dropped.
struct Container {
    name: String,
}

impl Container {
    fn logs(&self) -> String {
        let out = podman().args(["logs", &self.name]).output().unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// `/proc/PID/status` of the container's process, as the host sees it.
    fn proc_status(&self) -> String {
        let pid = podman_ok(&["inspect", "--format", "{{.State.Pid}}", &self.name]);
        std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman()
            .args(["rm", "--force", "--time", "5", &self.name])
            .output();
    }
}

/// The pieces of an installed Deployment that decide how its container runs.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSpec {
    security_context: Value,
    containers: Vec<Value>,
    volumes: Vec<Value>,
}

fn pod_spec(manifests: &[Value], component: &str) -> PodSpec {
    let name = format!("{RELEASE}-loop-token-operator-{component}");
    let d = manifests
        .iter()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == name.as_str())
        .unwrap_or_else(|| panic!("no Deployment {name} in the release"));
    serde_json::from_value(d["spec"]["template"]["spec"].clone()).unwrap()
}

/// A Secret volume as the kubelet writes it: the listed keys (or all), mode `defaultMode`,
/// owned by root and the pod's `fsGroup`.
async fn secret_volume(cp: &ControlPlane, ns: &str, volume: &Value, dir: &Path, gid: u32) {
    use std::os::unix::fs::PermissionsExt;
    let spec = &volume["secret"];
    let secrets: Api<Secret> = Api::namespaced(cp.client.clone(), ns);
    let name = spec["secretName"].as_str().unwrap();
    let data = secrets.get(name).await.unwrap().data.unwrap_or_default();
    let items: Vec<(String, String)> = match spec["items"].as_array() {
        Some(items) => items
            .iter()
            .map(|i| {
                (
                    i["key"].as_str().unwrap().into(),
                    i["path"].as_str().unwrap().into(),
                )
            })
            .collect(),
        None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
    };
    let mode = spec["defaultMode"].as_u64().unwrap_or(0o644) as u32;
    std::fs::create_dir_all(dir).unwrap();
    for (key, path) in items {
        let file = dir.join(path);
        std::fs::write(&file, &data[&key].0).unwrap();
        std::os::unix::fs::chown(&file, Some(0), Some(gid)).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// The podman flags for a pod's security context and its container's, as Kubernetes applies
/// them.
fn security_flags(pod: &PodSpec, container: &Value) -> Vec<String> {
    let p = &pod.security_context;
    let c = &container["securityContext"];
    assert_eq!(p["runAsNonRoot"], true);
    assert_eq!(p["seccompProfile"]["type"], "RuntimeDefault"); // podman's default profile
    let mut flags = vec![
        format!("--user={}:{}", p["runAsUser"], p["runAsGroup"]),
        format!("--group-add={}", p["fsGroup"]),
    ];
    assert_eq!(c["readOnlyRootFilesystem"], true);
    // Kubernetes adds no tmpfs of its own to a read-only root.
    flags.extend(["--read-only".into(), "--read-only-tmpfs=false".into()]);
    assert_eq!(c["capabilities"]["drop"], json!(["ALL"]));
    flags.push("--cap-drop=all".into());
    assert_eq!(c["allowPrivilegeEscalation"], false);
    flags.push("--security-opt=no-new-privileges".into());
    flags
}

/// Run the Deployment's container with the chart's command, arguments (with `rewrite` applied
/// to each), security context and volumes (materialised under `dir`).
async fn run_as_chart(
    cp: &ControlPlane,
    ns: &str,
    pod: &PodSpec,
    dir: &Path,
    extra: &[String],
    rewrite: &(dyn Fn(&str) -> String + Sync),
) -> Container {
    use std::os::unix::fs::PermissionsExt;
    let container = &pod.containers[0];
    let gid = pod.security_context["fsGroup"].as_u64().unwrap() as u32;
    let name = format!("{ns}-{}", container["name"].as_str().unwrap());
    let mut args: Vec<String> = vec!["run".into(), "--detach".into(), format!("--name={name}")];
    args.extend(["--network=host".into(), "--ulimit=nofile=4096:4096".into()]);
    args.push("--ulimit=nproc=4096:4096".into());
    args.extend(security_flags(pod, container));
    for m in container["volumeMounts"].as_array().into_iter().flatten() {
        let vname = m["name"].as_str().unwrap();
        let volume = pod.volumes.iter().find(|v| v["name"] == vname).unwrap();
        let host: PathBuf = dir.join(vname);
        if volume.get("secret").is_some() {
            secret_volume(cp, ns, volume, &host, gid).await;
        } else {
            // A PersistentVolumeClaim: an empty directory the pod's fsGroup may write.
            std::fs::create_dir_all(&host).unwrap();
            std::os::unix::fs::chown(&host, Some(0), Some(gid)).unwrap();
            std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o2770)).unwrap();
        }
        let ro = if m["readOnly"] == true { ":ro" } else { "" };
        args.push(format!(
            "--volume={}:{}{ro}",
            host.display(),
            m["mountPath"].as_str().unwrap()
        ));
    }
    for env in container["env"].as_array().into_iter().flatten() {
        // The chart's env are the downward API's pod name and namespace.
        let field = env["valueFrom"]["fieldRef"]["fieldPath"]
            .as_str()
            .unwrap_or_default();
        let value = if field == "metadata.namespace" {
            ns.to_owned()
        } else {
            name.clone()
        };
        args.push(format!("--env={}={value}", env["name"].as_str().unwrap()));
    }
    args.extend(extra.iter().cloned());
    args.push(format!(
        "--entrypoint={}",
        container["command"][0].as_str().unwrap()
    ));
    args.push(IMAGE.into());
    for a in container["command"]
        .as_array()
        .unwrap()
        .iter()
        .skip(1)
        .chain(container["args"].as_array().unwrap())
    {
        args.push(rewrite(a.as_str().unwrap()));
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    podman_ok(&argv);
    Container { name }
}

/// Wait until `url` answers 2xx through `http`, or fail with the container's log.
async fn wait_serving(http: &reqwest::Client, url: &str, c: &Container) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        if let Ok(r) = http.get(url).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} not serving after 90s; log of {}:\n{}",
            c.name,
            c.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The chart's settings are in force on the container's process: its user and group, no
/// capability at all, no new privileges, and a read-only root filesystem.
fn assert_confined(c: &Container) {
    let status = c.proc_status();
    let line = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .map(|l| {
                l[key.len()..]
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_else(|| panic!("no {key} in /proc status of {}:\n{status}", c.name))
    };
    assert_eq!(line("Uid:"), "65532 65532 65532 65532", "{}", c.name);
    assert_eq!(line("Gid:"), "65532 65532 65532 65532", "{}", c.name);
    for caps in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        assert_eq!(line(caps), "0000000000000000", "{} {caps}", c.name);
    }
    assert_eq!(line("NoNewPrivs:"), "1", "{}", c.name);
    let ro = podman_ok(&[
        "inspect",
        "--format",
        "{{.HostConfig.ReadonlyRootfs}}",
        &c.name,
    ]);
    assert_eq!(ro, "true", "{}", c.name);
}

/// The chart's Secret `name`, key `key`.
async fn secret_value(cp: &ControlPlane, ns: &str, name: &str, key: &str) -> Vec<u8> {
    let secrets: Api<Secret> = Api::namespaced(cp.client.clone(), ns);
    let s = secrets
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    s.data.unwrap_or_default()[key].0.clone()
}

/// A ServiceAccount's files as the kubelet projects them for the in-cluster configuration.
fn service_account_dir(cp: &ControlPlane, ns: &str, sa: &str, dir: &Path) -> PathBuf {
    let token = cp.kubectl_ok(&["create", "token", sa, "-n", ns, "--duration=1h"]);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("token"), token.trim()).unwrap();
    std::fs::copy(cp.state_dir.join("pki/ca.crt"), dir.join("ca.crt")).unwrap();
    std::fs::write(dir.join("namespace"), ns).unwrap();
    dir.to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_the_store_and_the_operator_as_the_chart_does() {
    if !podman_present() {
        eprintln!(
            "SKIPPED the_image_runs_the_store_and_the_operator_as_the_chart_does: podman is not \
             installed (Debian: apt-get install podman buildah runc; .ci/run installs them)"
        );
        return;
    }
    let size = tokio::task::spawn_blocking(build_image).await.unwrap();
    eprintln!("image {IMAGE}: {size} bytes ({} MiB)", size >> 20);
    let run = [
        "run",
        "--rm",
        "--ulimit=nofile=4096:4096",
        "--ulimit=nproc=4096:4096",
        IMAGE,
    ];
    for bin in ["loop-store", "loop-token-operator"] {
        let help = podman_ok(&[&run[..], &[bin, "--help"]].concat());
        assert!(help.contains("Usage:"), "{bin} --help: {help}");
    }
    let shell = podman()
        .args([&run[..], &["sh", "-c", "true"]].concat())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&shell.stderr);
    assert!(
        !shell.status.success() && said.contains("not found in $PATH"),
        "FROM scratch: no shell in the image; podman said: {said}"
    );
    with_namespace("image", life_in_containers).await;
}

/// Install the chart (its RBAC, ServiceAccount, generated credentials and certificate) and
/// return its installed Deployments' pod specs: store, operator.
fn install_chart(cp: &ControlPlane, ns: &str) -> (PodSpec, PodSpec) {
    let chart = support::repo_root().join("charts/loop-token-operator");
    let watch = format!("watchNamespace={ns}");
    let install = [
        "upgrade",
        "--install",
        RELEASE,
        chart.to_str().unwrap_or_default(),
        "--namespace",
        ns,
        "--set",
        &watch,
        "--set",
        "image.repository=localhost/loop-token-operator",
        "--set",
        "image.tag=dev",
        "--wait=false",
    ];
    crate::helm_chart::helm_ok(cp, &install);
    let manifest = crate::helm_chart::helm_ok(cp, &["get", "manifest", RELEASE, "-n", ns]);
    let manifests = crate::helm_chart::objects(&manifest);
    let store = pod_spec(&manifests, "store");
    assert_eq!(
        store.containers[0]["image"], IMAGE,
        "the chart runs the image built here"
    );
    (store, pod_spec(&manifests, "operator"))
}

/// The store's container and how to reach it: a client that trusts only the chart's CA and
/// resolves the store's Service name to 127.0.0.1, and the store's URL by that name.
struct StoreContainer {
    container: Container,
    http: reqwest::Client,
    url: String,
    svc: String,
    port: u16,
}

async fn start_store(cp: &ControlPlane, ns: &str, pod: &PodSpec, dir: &Path) -> StoreContainer {
    let svc = format!("{RELEASE}-loop-token-operator-store.{ns}.svc");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let rewrite = |a: &str| a.replace("0.0.0.0:8080", &addr);
    let container = run_as_chart(cp, ns, pod, dir, &[], &rewrite).await;
    let tls = format!("{RELEASE}-loop-token-operator-store-tls");
    let ca = secret_value(cp, ns, &tls, "ca.crt").await;
    support::http_client();
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .resolve(&svc, ([127, 0, 0, 1], port).into())
        .build()
        .unwrap();
    let url = format!("https://{svc}:{port}");
    wait_serving(&http, &format!("{url}/readyz"), &container).await;
    StoreContainer {
        container,
        http,
        url,
        svc,
        port,
    }
}

/// The operator's container, as the chart's ServiceAccount through the in-cluster
/// configuration, calling the store by its Service name.
async fn start_operator(
    cp: &ControlPlane,
    ns: &str,
    pod: &PodSpec,
    dir: &Path,
    store: &StoreContainer,
) -> Container {
    let sa = format!("{RELEASE}-loop-token-operator-operator");
    let sa = service_account_dir(cp, ns, &sa, &dir.join("serviceaccount"));
    let apiserver_port = std::fs::read_to_string(cp.state_dir.join("apiserver-port")).unwrap();
    // 127.0.0.1, or the node's bridge address when the cluster has a node.
    let apiserver_addr = std::fs::read_to_string(cp.state_dir.join("apiserver-addr"))
        .map(|a| a.trim().to_owned())
        .unwrap_or_else(|_| "127.0.0.1".to_owned());
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let extra = [
        format!(
            "--volume={}:/var/run/secrets/kubernetes.io/serviceaccount:ro",
            sa.display()
        ),
        format!("--env=KUBERNETES_SERVICE_HOST={apiserver_addr}"),
        format!("--env=KUBERNETES_SERVICE_PORT={}", apiserver_port.trim()),
        format!("--add-host={}:127.0.0.1", store.svc),
    ];
    let (chart_url, url) = (
        format!("{}:8080", store.svc),
        format!("{}:{}", store.svc, store.port),
    );
    let rewrite = |a: &str| {
        a.replace(&chart_url, &url)
            .replace("0.0.0.0:9090", &metrics_addr)
    };
    let container = run_as_chart(cp, ns, pod, dir, &extra, &rewrite).await;
    let readyz = format!("http://{metrics_addr}/readyz");
    wait_serving(&store.http, &readyz, &container).await;
    container
}

async fn life_in_containers(cp: ControlPlane, ns: String) {
    support::install_crd(&cp).await;
    let (store_pod, operator_pod) = install_chart(&cp, &ns);
    let dir = tempfile::tempdir().unwrap();
    let store = start_store(&cp, &ns, &store_pod, &dir.path().join("store")).await;
    let operator = start_operator(&cp, &ns, &operator_pod, &dir.path().join("op"), &store).await;
    assert_confined(&store.container);
    assert_confined(&operator);

    let creds = format!("{RELEASE}-loop-token-operator-credentials");
    let introspect = secret_value(&cp, &ns, &creds, "introspect").await;
    let introspect = String::from_utf8(introspect).unwrap();
    let tokens = token_life(&cp, &ns, &store.http, &store.url, &introspect).await;
    let logs = format!("{}\n{}", store.container.logs(), operator.logs());
    assert!(logs.contains("became leader"), "{logs}");
    assert!(
        !logs.to_lowercase().contains("forbidden"),
        "a permission error:\n{logs}"
    );
    for t in &tokens {
        assert!(
            !logs.contains(t.as_str()),
            "a token in the containers' logs"
        );
    }
    drop((store, operator));
    crate::helm_chart::helm_ok(&cp, &["uninstall", RELEASE, "--namespace", &ns]);
}

/// Issue, rotate and delete a token through the containerised pair; returns the tokens seen.
async fn token_life(
    cp: &ControlPlane,
    ns: &str,
    http: &reqwest::Client,
    store: &str,
    cred: &str,
) -> Vec<String> {
    let introspect = |token: String| async move {
        let r = http
            .post(format!("{store}/v1/introspect"))
            .bearer_auth(cred)
            .json(&json!({"token": token}))
            .send()
            .await
            .unwrap();
        r.json::<Value>().await.unwrap()
    };
    let yaml = "apiVersion: loop.dev/v1alpha1\nkind: ApiToken\nmetadata: {name: boxed}\nspec: {scopes: [orders:read]}\n";
    let out = cp.kubectl_stdin(&["apply", "-n", ns, "-f", "-"], Some(yaml));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cp.kubectl_ok(&[
        "wait",
        "-n",
        ns,
        "--for=condition=Ready",
        "apitoken/boxed",
        "--timeout=120s",
    ]);
    let first = String::from_utf8(secret_value(cp, ns, "boxed", "token").await).unwrap();
    let answer = introspect(first.clone()).await;
    assert_eq!(
        (answer["active"].clone(), answer["scope"].clone()),
        (json!(true), json!("orders:read")),
        "{answer}"
    );

    cp.kubectl_ok(&[
        "annotate",
        "-n",
        ns,
        "apitoken/boxed",
        "loop.dev/rotate=2026-11-29T12:00:00Z",
    ]);
    let tokens: Api<loop_token_operator::operator::resource::crd::ApiToken> =
        Api::namespaced(cp.client.clone(), ns);
    eventually(120, "the rotation", || async {
        let t = tokens.get("boxed").await.ok()?;
        (t.status?.last_rotation_request.as_deref() == Some("2026-11-29T12:00:00Z")).then_some(())
    })
    .await;
    let second = String::from_utf8(secret_value(cp, ns, "boxed", "token").await).unwrap();
    assert_ne!(second, first);
    assert_eq!(introspect(second.clone()).await["active"], true);
    assert_eq!(
        introspect(first.clone()).await["active"],
        true,
        "grace period"
    );

    cp.kubectl_ok(&["delete", "-n", ns, "apitoken/boxed", "--timeout=120s"]);
    for t in [&first, &second] {
        assert_eq!(
            introspect(t.clone()).await,
            json!({"active": false}),
            "revoked"
        );
    }
    vec![first, second]
}
