//! Certificates made at test time by `openssl` (on PATH; `.ci/run` installs it): a CA and
//! server certificates for `localhost` and 127.0.0.1 that it signs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA or a leaf certificate with its key, as PEM files in a directory of their own.
pub struct Pem {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl (needed on PATH): {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// A self-signed CA named `name` (EC P-256, one day).
pub fn make_ca(dir: &Path, name: &str) -> Pem {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "1",
        "-subj",
        &format!("/CN={name}"),
        "-keyout",
        path_str(&key),
        "-out",
        path_str(&cert),
    ]);
    Pem { cert, key }
}

/// A server certificate for `localhost` and 127.0.0.1 signed by `ca`.
pub fn make_leaf(dir: &Path, ca: &Pem, name: &str) -> Pem {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let csr = dir.join(format!("{name}.csr"));
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(&ext, "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        path_str(&key),
        "-out",
        path_str(&csr),
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        path_str(&csr),
        "-CA",
        path_str(&ca.cert),
        "-CAkey",
        path_str(&ca.key),
        "-set_serial",
        &format!("{}", std::process::id()),
        "-days",
        "1",
        "-extfile",
        path_str(&ext),
        "-out",
        path_str(&cert),
    ]);
    Pem { cert, key }
}
