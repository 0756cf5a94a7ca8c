//! Start-up and serving plumbing shared by both binaries (`loop-store` and
//! `loop-token-operator`): where a credential comes from, when to stop, and how `/metrics`
//! answers. I/O: reads files and waits for process signals; builds HTTP responses.
//!
//! - [`read_credential`]: a secret from a file (preferred: it can be mounted from a Kubernetes
//!   Secret) or else from an environment value; trimmed; empty is refused. Each binary maps
//!   [`CredentialError`] onto its own start-up error, which names its flag and variable.
//! - [`shutdown_signal`]: resolves on SIGTERM or Ctrl-C.
//! - [`openmetrics`]: the `/metrics` answer for text a Prometheus registry encoded;
//! - [`install_crypto_provider`]: `ring` as the process's rustls provider.

use std::path::{Path, PathBuf};

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// Content type of an OpenMetrics text exposition.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why no credential could be read. Never carries the secret.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// Neither a file nor an environment value was given.
    #[error("no credential given (neither a file nor an environment value)")]
    Missing,
    /// The file could not be read.
    #[error("cannot read the credential file {}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file or value holds only white space.
    #[error("the credential is empty")]
    Empty,
}

/// Read a credential: the file when given (the environment value is then ignored), else the
/// environment value. Surrounding white space (a file's final newline) is removed; an empty
/// result is [`CredentialError::Empty`]. Length or strength rules are the caller's.
pub fn read_credential(
    file: Option<&Path>,
    env_value: Option<&str>,
) -> Result<String, CredentialError> {
    let raw = match (file, env_value) {
        (Some(path), _) => {
            std::fs::read_to_string(path).map_err(|source| CredentialError::File {
                path: path.to_owned(),
                source,
            })?
        }
        (None, Some(v)) => v.to_owned(),
        (None, None) => return Err(CredentialError::Missing),
    };
    let secret = raw.trim();
    if secret.is_empty() {
        return Err(CredentialError::Empty);
    }
    Ok(secret.to_owned())
}

/// Resolves when the process receives SIGTERM (what Kubernetes sends) or Ctrl-C. Where no
/// SIGTERM handler can be installed (or off Unix), only Ctrl-C counts.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}

/// The `/metrics` answer: `200` with the OpenMetrics content type and `text` (the output of a
/// `prometheus_client` registry's text encoder) as body.
pub fn openmetrics(text: String) -> Response {
    ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], text).into_response()
}

/// Make `ring` the process's default rustls provider (idempotent). kube's client uses `ring`;
/// HTTP clients built without an explicit TLS configuration (reqwest with
/// `rustls-no-provider`) take the process default, and panic when there is none. Each binary
/// calls this first thing.
pub fn install_crypto_provider() {
    // Err means a provider is already installed: the first one stays.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn credentials_come_from_the_file_first_and_are_trimmed() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "  from-file ").unwrap();
        assert_eq!(
            read_credential(Some(f.path()), Some("from-env")).unwrap(),
            "from-file"
        );
        assert_eq!(
            read_credential(None, Some("from-env\n")).unwrap(),
            "from-env"
        );
    }

    #[test]
    fn missing_unreadable_or_empty_credentials_are_refused() {
        assert!(matches!(
            read_credential(None, None),
            Err(CredentialError::Missing)
        ));
        assert!(matches!(
            read_credential(None, Some(" \n")),
            Err(CredentialError::Empty)
        ));
        let e = read_credential(Some(Path::new("/nonexistent/cred")), None).unwrap_err();
        assert!(matches!(e, CredentialError::File { .. }));
        assert!(e.to_string().contains("/nonexistent/cred"));
    }

    #[test]
    fn metrics_answers_carry_the_openmetrics_type() {
        let r = openmetrics("# EOF\n".into());
        assert_eq!(r.status(), axum::http::StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], OPENMETRICS_CONTENT_TYPE);
    }
}
