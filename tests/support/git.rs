//! A Git repository served over smart HTTP on loopback, for Flux's source-controller: `git
//! http-backend` (Git's own CGI program) behind a tiny axum server that speaks CGI to it. The
//! test commits into the repository's work tree with the `git` command line; the server stops
//! when dropped.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;

/// A non-bare repository (branch `main`) in a temporary directory, served at [`GitServer::url`].
pub struct GitServer {
    /// `http://127.0.0.1:PORT/platform`: what a GitRepository's `spec.url` names.
    pub url: String,
    /// The work tree to commit in.
    pub work: PathBuf,
    _root: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

/// Run `git` in `dir` with a fixed identity; panics with its output when it fails. Returns stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=loop tests",
            "-c",
            "user.email=tests@loop.invalid",
        ])
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run git (needed on PATH): {e}"));
    assert!(
        out.status.success(),
        "git {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl GitServer {
    /// An empty repository named `platform`, served on 127.0.0.1.
    pub async fn start() -> GitServer {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let work = root.path().join("platform");
        std::fs::create_dir(&work).unwrap_or_else(|e| panic!("{e}"));
        git(&work, &["init", "-q", "-b", "main"]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let app = axum::Router::new()
            .fallback(cgi)
            .with_state(root.path().to_path_buf());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        GitServer {
            url: format!("http://{addr}/platform"),
            work,
            _root: root,
            task,
        }
    }

    /// Write `files` (path relative to the work tree, content; `None` removes it), commit them
    /// all with `message`, and return the commit's full id.
    pub fn commit(&self, files: &[(&str, Option<&str>)], message: &str) -> String {
        for (path, content) in files {
            let p = self.work.join(path);
            match content {
                Some(text) => {
                    if let Some(dir) = p.parent() {
                        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
                    }
                    std::fs::write(&p, text).unwrap_or_else(|e| panic!("{e}"));
                }
                None => std::fs::remove_file(&p).unwrap_or_else(|e| panic!("{e}")),
            }
        }
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One request through `git http-backend` (RFC 3875 CGI): the request's method, path and
/// headers as variables, its body on stdin; the program's headers (with `Status`) and body back.
async fn cgi(State(root): State<PathBuf>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 64 << 20).await else {
        return plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    };
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env("GIT_PROJECT_ROOT", &root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or_default())
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match run_cgi(cmd, body).await {
        Ok(out) => cgi_response(&out),
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

async fn run_cgi(mut cmd: tokio::process::Command, body: Bytes) -> Result<Vec<u8>, String> {
    use tokio::io::AsyncWriteExt;
    let mut child = cmd.spawn().map_err(|e| format!("git http-backend: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&body).await.map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
    if out.stdout.is_empty() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(out.stdout)
}

/// Split a CGI answer into its headers (up to the first empty line) and body.
fn cgi_response(out: &[u8]) -> Response {
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| {
            out.windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, i + 2))
        });
    let Some((head_end, body_start)) = split else {
        return plain(StatusCode::BAD_GATEWAY, "no CGI header block");
    };
    let mut resp = Response::new(Body::from(out[body_start..].to_vec()));
    for line in String::from_utf8_lossy(&out[..head_end]).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("500");
            *resp.status_mut() = code.parse().unwrap_or(StatusCode::BAD_GATEWAY);
        } else if let (Ok(n), Ok(v)) = (
            HeaderName::try_from(name.trim()),
            HeaderValue::try_from(value),
        ) {
            resp.headers_mut().append(n, v);
        }
    }
    resp
}

fn plain(code: StatusCode, text: &str) -> Response {
    let mut resp = Response::new(Body::from(text.to_owned()));
    *resp.status_mut() = code;
    resp
}
