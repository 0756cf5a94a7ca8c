//! Two independent RFC 7662 client libraries against a real `loop-store` process: Authlib
//! (Python, `tests/rfc7662/authlib_introspect.py`) and the Nimbus OAuth 2.0 SDK (Java,
//! `tests/rfc7662/NimbusIntrospect.java`). Both send a form-encoded `token` with
//! `client_secret_basic`, as standard clients do. A missing runtime or library is a failure
//! that names its install command, never a skip.

use crate::support;

use std::process::Command;

use loop_token_operator::token::Token;
use serde_json::Value;
use support::store::{INTROSPECT, StoreProcess, sqlite_args};

const PIP_INSTALL: &str = "python3 -m pip install -r tests/rfc7662/requirements.txt";
const MVN_INSTALL: &str = "mvn -q -f tests/rfc7662/pom.xml dependency:go-offline";

/// What a client saw: the HTTP status, and for a 200 `active` and `scope`.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    status: u16,
    active: Option<bool>,
    scope: Option<String>,
}

fn run(cmd: &mut Command, what: &str, install: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run the {what} RFC 7662 client ({e}); install it with: {install}")
    });
    assert!(
        out.status.success(),
        "the {what} RFC 7662 client failed; is it installed ({install})?\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn authlib(url: &str, secret: &str, token: &str) -> Seen {
    let script = support::repo_root().join("tests/rfc7662/authlib_introspect.py");
    let check = Command::new("python3")
        .args(["-c", "import authlib, requests"])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}); install Python 3 and: {PIP_INSTALL}")
        });
    assert!(
        check.status.success(),
        "Authlib or requests is missing; install them with: {PIP_INSTALL}\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let out = run(
        Command::new("python3")
            .arg(script)
            .args([url, "loop-api", secret, token]),
        "Authlib",
        PIP_INSTALL,
    );
    let v: Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("unexpected output of the Authlib client ({e}): {out}"));
    let status = v["status"].as_u64().and_then(|s| u16::try_from(s).ok());
    Seen {
        status: status.unwrap_or_else(|| panic!("no status in {v}")),
        active: v["body"]["active"].as_bool(),
        scope: v["body"]["scope"].as_str().map(str::to_owned),
    }
}

/// The classpath of the Nimbus SDK, from the local Maven repository (offline).
fn nimbus_classpath() -> String {
    let file = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}"));
    let pom = support::repo_root().join("tests/rfc7662/pom.xml");
    run(
        Command::new("mvn")
            .args(["-q", "-o", "-B", "-f"])
            .arg(&pom)
            .arg("dependency:build-classpath")
            .arg(format!("-Dmdep.outputFile={}", file.path().display())),
        "Nimbus (Maven)",
        MVN_INSTALL,
    );
    std::fs::read_to_string(file.path()).unwrap_or_else(|e| panic!("{e}"))
}

fn nimbus(classpath: &str, url: &str, secret: &str, token: &str) -> Seen {
    let source = support::repo_root().join("tests/rfc7662/NimbusIntrospect.java");
    let out = run(
        Command::new("java")
            .args(["-cp", classpath])
            .arg(source)
            .args([url, "loop-api", secret, token]),
        "Nimbus (Java)",
        MVN_INSTALL,
    );
    let field = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::to_owned)
    };
    Seen {
        status: field("status=")
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in the Nimbus client's output: {out}")),
        active: field("active=").map(|a| a == "true"),
        scope: field("scope=").filter(|s| !s.is_empty()),
    }
}

#[tokio::test]
async fn rfc7662_clients_introspect_with_client_secret_basic() {
    let dir = tempfile::tempdir().unwrap();
    let args = sqlite_args(dir.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let store = StoreProcess::start(&args, &[]);
    let t = Token::mint().unwrap();
    let (status, v) = store
        .register("rfc", t.hash().as_str(), &["orders:read", "customers:read"])
        .await;
    assert_eq!(status, 201, "{v}");
    let url = format!("{}/v1/introspect", store.url);
    let unknown = Token::mint().unwrap();
    let active = Seen {
        status: 200,
        active: Some(true),
        scope: Some("customers:read orders:read".into()),
    };
    let inactive = Seen {
        status: 200,
        active: Some(false),
        scope: None,
    };
    let refused = |s: &Seen| s.status == 401 && s.active.is_none();

    let a = (
        authlib(&url, INTROSPECT, t.expose()),
        authlib(&url, INTROSPECT, unknown.expose()),
        authlib(&url, "not-the-credential", t.expose()),
    );
    assert_eq!((&a.0, &a.1), (&active, &inactive), "Authlib");
    assert!(refused(&a.2), "Authlib with a wrong secret: {:?}", a.2);

    let cp = tokio::task::spawn_blocking(nimbus_classpath).await.unwrap();
    let n = (
        nimbus(&cp, &url, INTROSPECT, t.expose()),
        nimbus(&cp, &url, INTROSPECT, unknown.expose()),
        nimbus(&cp, &url, "not-the-credential", t.expose()),
    );
    assert_eq!((&n.0, &n.1), (&active, &inactive), "Nimbus");
    assert!(refused(&n.2), "Nimbus with a wrong secret: {:?}", n.2);
    assert!(
        !store.log_text().contains(t.expose()),
        "the token appears in the store's logs"
    );
}
