//! How `loop-store` serves, as real processes on raw sockets: TLS with certificates made at test
//! time (by `openssl` on PATH) and reloaded when rewritten, header/body/idle timeouts, the
//! connection limit, a shutdown bounded by its deadline, and the permissions of the files that
//! hold secrets.

use crate::support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use loop_token_operator::token::Token;
use reqwest::Method;
use support::eventually;
use support::store::{ADMIN, INTROSPECT, StoreProcess, sqlite_args, start_failure};
use support::tls::{Pem, make_ca, make_leaf, path_str};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A directory laid out like a Kubernetes Secret volume: `tls.crt` and `tls.key` are links
/// through `..data`, a link to a timestamped directory that each update replaces atomically.
struct SecretVolume {
    dir: PathBuf,
    version: u32,
}

impl SecretVolume {
    fn new(dir: &Path, pair: &Pem) -> SecretVolume {
        let mut v = SecretVolume {
            dir: dir.to_owned(),
            version: 0,
        };
        v.update(
            &std::fs::read(&pair.cert).unwrap(),
            &std::fs::read(&pair.key).unwrap(),
        );
        for f in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{f}"), dir.join(f)).unwrap();
        }
        v
    }

    /// Replace both files at once, the way the kubelet does.
    fn update(&mut self, cert: &[u8], key: &[u8]) {
        self.version += 1;
        let data = format!("..{}", self.version);
        std::fs::create_dir(self.dir.join(&data)).unwrap();
        std::fs::write(self.dir.join(&data).join("tls.crt"), cert).unwrap();
        std::fs::write(self.dir.join(&data).join("tls.key"), key).unwrap();
        set_mode(&self.dir.join(&data).join("tls.key"), 0o600);
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&data, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }

    fn cert(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }

    fn key(&self) -> PathBuf {
        self.dir.join("tls.key")
    }
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1 over TCP or TLS

fn addr_of(s: &StoreProcess) -> SocketAddr {
    s.url
        .trim_start_matches("http://")
        .parse()
        .unwrap_or_else(|e| panic!("bad store url {}: {e}", s.url))
}

/// A client trusting only `ca`.
fn tls_client(ca: &Path) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

async fn tls_connect(addr: SocketAddr, ca: &Path) -> std::io::Result<TlsStream> {
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    tls_client(ca).connect(name, tcp).await
}

/// The DER of the certificate the server presented on `conn`.
fn peer_cert(conn: &TlsStream) -> Vec<u8> {
    conn.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn pem_to_der(path: &Path) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_file(path)
        .unwrap()
        .to_vec()
}

fn get(path: &str, cred: Option<&str>) -> String {
    let auth = cred
        .map(|c| format!("Authorization: Bearer {c}\r\n"))
        .unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}\r\n")
}

/// Send one request on a kept-alive connection and read one answer: its status.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(conn: &mut S, request: &str) -> u16 {
    conn.write_all(request.as_bytes()).await.unwrap();
    read_answer(conn)
        .await
        .unwrap_or_else(|| panic!("no answer to {request:?}"))
}

/// Read one HTTP answer (head and `Content-Length` body); `None` when the connection closes
/// first.
async fn read_answer<S: AsyncRead + Unpin>(conn: &mut S) -> Option<u16> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).await.ok()?;
    Some(status)
}

/// What the server did with a connection within `within`.
#[derive(Debug, PartialEq)]
enum Fate {
    /// It answered (with this status).
    Answered(u16),
    /// It closed the connection without an answer.
    Closed,
    /// Nothing happened.
    Held,
}

async fn fate<S: AsyncRead + Unpin>(conn: &mut S, within: Duration) -> Fate {
    match tokio::time::timeout(within, read_answer(conn)).await {
        Ok(Some(status)) => Fate::Answered(status),
        Ok(None) => Fate::Closed,
        Err(_) => Fate::Held,
    }
}

fn sqlite_store(dir: &Path, extra: &[&str]) -> StoreProcess {
    let args = sqlite_args(dir);
    let mut argv: Vec<&str> = args.iter().map(String::as_str).collect();
    argv.extend(extra);
    StoreProcess::start(&argv, &[])
}

// ---------------------------------------------------------------------------------------------
// TLS

/// Every route answers a client trusting `ca` over one kept-alive connection, which is
/// returned; a client trusting `other` and plain HTTP are not served.
async fn every_route_over_tls_only(
    addr: SocketAddr,
    ca: &Pem,
    other: &Pem,
    leaf: &Pem,
) -> TlsStream {
    let mut kept = tls_connect(addr, &ca.cert)
        .await
        .expect("a client trusting the CA");
    assert_eq!(peer_cert(&kept), pem_to_der(&leaf.cert));
    for (path, cred, status) in [
        ("/healthz", None, 200),
        ("/readyz", None, 200),
        ("/metrics", None, 200),
        ("/v1/tokens/none", Some(ADMIN), 404),
        ("/v1/tokens/none", Some(INTROSPECT), 403),
    ] {
        assert_eq!(
            exchange(&mut kept, &get(path, cred)).await,
            status,
            "{path}"
        );
    }
    let refused = tls_connect(addr, &other.cert).await;
    assert!(refused.is_err(), "a client trusting another CA was served");
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(get("/healthz", None).as_bytes())
        .await
        .unwrap();
    assert_ne!(
        fate(&mut plain, Duration::from_secs(5)).await,
        Fate::Answered(200),
        "plain HTTP was answered by a TLS listener"
    );

    kept
}

/// RFC 7662 §4: every route over TLS on one listener; a client trusting another CA is refused;
/// plain HTTP gets nothing; a renewed pair (new CA, new serial) is served within the reload
/// interval without a restart and without dropping open connections; a broken renewal keeps the
/// pair in use.
#[tokio::test]
async fn tls_serves_every_route_and_reloads_a_renewed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, vol) = (dir.path().join("certs"), dir.path().join("secret"));
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::create_dir_all(&vol).unwrap();
    let (ca1, ca2) = (make_ca(&certs, "ca1"), make_ca(&certs, "ca2"));
    let (leaf1, leaf2) = (
        make_leaf(&certs, &ca1, "leaf1"),
        make_leaf(&certs, &ca2, "leaf2"),
    );
    let mut volume = SecretVolume::new(&vol, &leaf1);
    let s = sqlite_store(
        &dir.path().join("data"),
        &[
            "--tls-cert-file",
            path_str(&volume.cert()),
            "--tls-key-file",
            path_str(&volume.key()),
            "--tls-reload-interval",
            "200ms",
        ],
    );
    let addr = addr_of(&s);

    let mut kept = every_route_over_tls_only(addr, &ca1, &ca2, &leaf1).await;

    // A broken renewal (the new certificate with the old key): the pair in use stays.
    volume.update(
        &std::fs::read(&leaf2.cert).unwrap(),
        &std::fs::read(&leaf1.key).unwrap(),
    );
    eventually(10, "a warning about the broken pair", || async {
        s.log_text().contains("not a valid pair").then_some(())
    })
    .await;
    let c = tls_connect(addr, &ca1.cert)
        .await
        .expect("the old pair still served");
    assert_eq!(peer_cert(&c), pem_to_der(&leaf1.cert));

    // The renewal completes: new connections get the new certificate, the open one goes on.
    volume.update(
        &std::fs::read(&leaf2.cert).unwrap(),
        &std::fs::read(&leaf2.key).unwrap(),
    );
    let started = Instant::now();
    let renewed = eventually(10, "the renewed certificate", || async {
        let c = tls_connect(addr, &ca2.cert).await.ok()?;
        (peer_cert(&c) == pem_to_der(&leaf2.cert)).then_some(c)
    })
    .await;
    eprintln!("renewed certificate served after {:?}", started.elapsed());
    drop(renewed);
    assert!(
        tls_connect(addr, &ca1.cert).await.is_err(),
        "the old CA still works"
    );
    assert_eq!(exchange(&mut kept, &get("/healthz", None)).await, 200);
    assert!(s.log_text().contains("TLS certificate reloaded"));
    assert_eq!(s.log_text().matches(" listening ").count(), 1, "restarted");
}

#[test]
fn tls_start_up_errors_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = make_ca(d, "ca");
    let (a, b) = (make_leaf(d, &ca, "a"), make_leaf(d, &ca, "b"));
    set_mode(&a.key, 0o600);
    set_mode(&b.key, 0o600);
    let envs = [
        ("LOOP_STORE_ADMIN_TOKEN", ADMIN),
        ("LOOP_STORE_INTROSPECT_TOKEN", INTROSPECT),
    ];
    let data = d.join("data");
    let run = |cert: &Path, key: Option<&Path>| {
        let mut args = vec![
            "--data-dir",
            path_str(&data),
            "--tls-cert-file",
            path_str(cert),
        ];
        if let Some(k) = key {
            args.extend(["--tls-key-file", path_str(k)]);
        }
        start_failure(&args, &envs)
    };
    let err = run(&a.cert, None);
    assert!(err.contains("--tls-key-file"), "{err}");
    let err = run(&d.join("missing.crt"), Some(&a.key));
    assert!(
        err.contains("cannot read the TLS certificate file"),
        "{err}"
    );
    let err = run(&a.key, Some(&a.key));
    assert!(err.contains("holds no PEM certificate"), "{err}");
    let err = run(&a.cert, Some(&a.cert));
    assert!(err.contains("holds no PEM private key"), "{err}");
    let err = run(&a.cert, Some(&b.key));
    assert!(err.contains("cannot be used with the certificate"), "{err}");
    set_mode(&b.key, 0o666);
    let err = run(&b.cert, Some(&b.key));
    assert!(err.contains("writable by other users"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Timeouts, the connection limit, shutdown

#[tokio::test]
async fn an_oversized_request_head_is_refused_not_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let s = sqlite_store(dir.path(), &[]);
    // 48 KiB of headers: over the store's 32 KiB head limit, well under hyper's default.
    let filler = "x".repeat(1000);
    let headers: String = (0..48)
        .map(|i| format!("X-Filler-{i}: {filler}\r\n"))
        .collect();
    let mut conn = TcpStream::connect(addr_of(&s)).await.unwrap();
    let request = format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
    let _ = conn.write_all(request.as_bytes()).await;
    let f = fate(&mut conn, Duration::from_secs(10)).await;
    assert!(matches!(f, Fate::Closed | Fate::Answered(431)), "{f:?}");
    // A head under the limit is served.
    let headers: String = (0..8)
        .map(|i| format!("X-Filler-{i}: {filler}\r\n"))
        .collect();
    let mut conn = TcpStream::connect(addr_of(&s)).await.unwrap();
    let request = format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
    assert_eq!(exchange(&mut conn, &request).await, 200);
}

#[tokio::test]
async fn a_half_sent_request_is_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let s = sqlite_store(dir.path(), &["--header-read-timeout", "1s"]);
    let mut conn = TcpStream::connect(addr_of(&s)).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let f = fate(&mut conn, Duration::from_secs(10)).await;
    assert!(matches!(f, Fate::Closed | Fate::Answered(408)), "{f:?}");
    assert!(started.elapsed() >= Duration::from_millis(800));
    // A connection that sends nothing at all is closed too.
    let mut silent = TcpStream::connect(addr_of(&s)).await.unwrap();
    assert_eq!(
        fate(&mut silent, Duration::from_secs(10)).await,
        Fate::Closed
    );
}

#[tokio::test]
async fn a_slow_body_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let s = sqlite_store(dir.path(), &["--body-timeout", "1s"]);
    let mut conn = TcpStream::connect(addr_of(&s)).await.unwrap();
    let head = format!(
        "POST /v1/introspect HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {INTROSPECT}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"token\": "
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let f = fate(&mut conn, Duration::from_secs(10)).await;
    eprintln!("slow body: {f:?} after {:?}", started.elapsed());
    assert!(
        matches!(f, Fate::Closed) || matches!(f, Fate::Answered(s) if s >= 400),
        "{f:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(800));
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let s = sqlite_store(dir.path(), &["--header-read-timeout", "1s"]);
    let mut conn = TcpStream::connect(addr_of(&s)).await.unwrap();
    assert_eq!(exchange(&mut conn, &get("/healthz", None)).await, 200);
    let started = Instant::now();
    assert_eq!(fate(&mut conn, Duration::from_secs(10)).await, Fate::Closed);
    assert!(started.elapsed() >= Duration::from_millis(800));
}

/// Above `--max-connections` accepting waits: the next client is not refused, it is served
/// once an open connection closes.
#[tokio::test]
async fn connections_above_the_limit_wait_until_one_closes() {
    let dir = tempfile::tempdir().unwrap();
    let s = sqlite_store(dir.path(), &["--max-connections", "2"]);
    let addr = addr_of(&s);
    let mut first = TcpStream::connect(addr).await.unwrap();
    let mut second = TcpStream::connect(addr).await.unwrap();
    assert_eq!(exchange(&mut first, &get("/healthz", None)).await, 200);
    assert_eq!(exchange(&mut second, &get("/healthz", None)).await, 200);
    let mut third = TcpStream::connect(addr).await.unwrap();
    third
        .write_all(get("/healthz", None).as_bytes())
        .await
        .unwrap();
    // Observation, not synchronisation: nothing answers the third while two are open.
    assert_eq!(fate(&mut third, Duration::from_secs(1)).await, Fate::Held);
    drop(first);
    assert_eq!(
        fate(&mut third, Duration::from_secs(10)).await,
        Fate::Answered(200)
    );
    assert_eq!(exchange(&mut second, &get("/healthz", None)).await, 200);
}

/// SIGTERM with a half-sent request open: the store exits 0 within its shutdown deadline and
/// still writes the usage figures (the writes drain and the final flush run after the last
/// connection is closed).
#[tokio::test]
async fn sigterm_with_a_half_sent_request_exits_within_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--usage-flush-interval",
        "1h",
        "--header-read-timeout",
        "60s",
        "--shutdown-deadline",
        "1s",
    ];
    let s = sqlite_store(dir.path(), &flags);
    let t = Token::mint().unwrap();
    assert_eq!(
        s.register("u", t.hash().as_str(), &["orders:read"]).await.0,
        201
    );
    assert_eq!(s.introspect(t.expose()).await.1["active"], true);
    let mut half = TcpStream::connect(addr_of(&s)).await.unwrap();
    half.write_all(b"POST /v1/introspect HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut idle = TcpStream::connect(addr_of(&s)).await.unwrap();
    assert_eq!(exchange(&mut idle, &get("/healthz", None)).await, 200);
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || s.terminate())
        .await
        .unwrap();
    let took = started.elapsed();
    eprintln!("exited {status} after {took:?}");
    assert!(status.success(), "loop-store exited with {status}");
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");

    let again = sqlite_store(dir.path(), &[]);
    let (_, v) = again
        .call(Method::GET, "/v1/tokens/u", Some(ADMIN), None)
        .await;
    assert_eq!(v["useCount"], 1, "{v}");
}

// ---------------------------------------------------------------------------------------------
// Files holding secrets

#[tokio::test]
async fn files_the_store_creates_are_for_its_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = sqlite_store(&data, &[]);
    let t = Token::mint().unwrap();
    assert_eq!(
        s.register("f", t.hash().as_str(), &["orders:read"]).await.0,
        201
    );
    assert_eq!(mode_of(&data), 0o700, "data directory");
    for f in ["loop-store.db", "loop-store.db-wal", "loop-store.db-shm"] {
        assert_eq!(mode_of(&data.join(f)), 0o600, "{f}");
    }
    drop(s);

    let cred = dir.path().join("admin");
    let generate = |p: &Path| {
        Command::new(env!("CARGO_BIN_EXE_loop-store"))
            .args(["generate-credential", "--output", path_str(p)])
            .output()
            .unwrap()
    };
    let out = generate(&cred);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "the credential went to stdout too");
    assert_eq!(mode_of(&cred), 0o600);
    let first = std::fs::read_to_string(&cred).unwrap();
    assert!(first.starts_with("lsc_"), "{first}");
    let out = generate(&cred);
    assert!(!out.status.success(), "an existing file was overwritten");
    assert!(String::from_utf8_lossy(&out.stderr).contains("must not exist"));
    assert_eq!(std::fs::read_to_string(&cred).unwrap(), first);
}

/// Writable by others: refused. Readable by every user (a Kubernetes Secret volume's default
/// 0644): accepted with a warning naming the file and the fix.
#[tokio::test]
async fn credential_files_others_can_write_are_refused_and_world_readable_ones_warned() {
    let dir = tempfile::tempdir().unwrap();
    let (admin, intro) = (dir.path().join("admin"), dir.path().join("introspect"));
    std::fs::write(&admin, ADMIN).unwrap();
    std::fs::write(&intro, INTROSPECT).unwrap();
    set_mode(&admin, 0o666);
    set_mode(&intro, 0o600);
    let data = dir.path().join("data");
    let args = [
        "--data-dir",
        path_str(&data),
        "--admin-token-file",
        path_str(&admin),
        "--introspect-token-file",
        path_str(&intro),
    ];
    let err = start_failure(&args, &[]);
    assert!(
        err.contains("writable by other users") && err.contains("chmod 600"),
        "{err}"
    );
    set_mode(&admin, 0o644);
    let s = StoreProcess::start(&args, &[]);
    assert!(
        s.log_text().contains("readable by every user") && s.log_text().contains("admin"),
        "{}",
        s.log_text()
    );
    assert_eq!(
        s.call(Method::GET, "/v1/tokens/x", Some(ADMIN), None)
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn the_database_url_can_come_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    let url_file = dir.path().join("url");
    std::fs::write(&url_file, format!("sqlite://{}\n", db.display())).unwrap();
    set_mode(&url_file, 0o600);
    let s = StoreProcess::start(&["--database-url-file", path_str(&url_file)], &[]);
    let t = Token::mint().unwrap();
    assert_eq!(
        s.register("d", t.hash().as_str(), &["orders:read"]).await.0,
        201
    );
    assert_eq!(mode_of(&db), 0o600);
    drop(s);
    let err = start_failure(
        &[
            "--database-url-file",
            path_str(&url_file),
            "--database-url",
            "sqlite://x.db",
        ],
        &[
            ("LOOP_STORE_ADMIN_TOKEN", ADMIN),
            ("LOOP_STORE_INTROSPECT_TOKEN", INTROSPECT),
        ],
    );
    assert!(
        err.contains("--database-url-file") && err.contains("--database-url"),
        "{err}"
    );
}
