//! Start-up and serving plumbing shared by both binaries (`loop-store` and
//! `loop-token-operator`): where a credential comes from, when to stop, and how `/metrics`
//! answers. I/O: reads files and waits for process signals; builds HTTP responses.
//!
//! - [`read_credential`]: a secret from a file (preferred: it can be mounted from a Kubernetes
//!   Secret) or else from an environment value; trimmed; empty is refused. Each binary maps
//!   [`CredentialError`] onto its own start-up error, which names its flag and variable.
//! - [`check_secret_file`]: the permission rule for every file holding a secret (credentials, a
//!   TLS key, a database URL): writable by group or others is refused; readable by others is
//!   accepted with a warning (Kubernetes mounts Secret volumes 0644 unless `defaultMode` says
//!   otherwise); readable by the group is accepted (an `fsGroup` always adds group read).
//! - [`write_secret_file`]: create a new file readable by its owner only (0600).
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
    /// The file's permissions let other users replace it.
    #[error(transparent)]
    Insecure(#[from] SecretFileError),
}

/// A file holding a secret whose permissions are refused. Never carries the secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("cannot read the permissions of {}", path.display())]
    Metadata {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} is writable by other users (mode {mode:04o}), who could replace the secret in it; make it readable by this user only: chmod 600 {} (or defaultMode: 0400 on a Kubernetes Secret volume)",
        path.display(),
        path.display()
    )]
    Writable { path: PathBuf, mode: u32 },
}

/// Permission bits that let users other than the owner write a file.
const WRITE_BY_OTHERS: u32 = 0o022;
/// Permission bit that lets every user read a file.
const READ_BY_WORLD: u32 = 0o004;

/// Check the permissions of a file holding a secret (following symbolic links, which Kubernetes
/// Secret volumes are made of): refused when group or others may write it; a warning (never
/// the content) when every user may read it. `what` names the file in the warning.
pub fn check_secret_file(path: &Path, what: &str) -> Result<(), SecretFileError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|source| SecretFileError::Metadata {
            path: path.to_owned(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & WRITE_BY_OTHERS != 0 {
            return Err(SecretFileError::Writable {
                path: path.to_owned(),
                mode,
            });
        }
        if mode & READ_BY_WORLD != 0 {
            tracing::warn!(
                file = %path.display(),
                mode = format!("{mode:04o}"),
                "the {what} file is readable by every user of this machine; chmod 600 it (on Kubernetes: defaultMode: 0400 on the Secret volume)"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = (path, what);
    Ok(())
}

/// Create `path` (which must not exist yet) readable and writable by its owner only, and write
/// `contents` to it.
pub fn write_secret_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Read a credential: the file when given (the environment value is then ignored; its
/// permissions pass [`check_secret_file`] first), else the environment value. Surrounding white
/// space (a file's final newline) is removed; an empty result is [`CredentialError::Empty`].
/// Length or strength rules are the caller's.
pub fn read_credential(
    file: Option<&Path>,
    env_value: Option<&str>,
) -> Result<String, CredentialError> {
    let raw = match (file, env_value) {
        (Some(path), _) => {
            let raw = std::fs::read_to_string(path).map_err(|source| CredentialError::File {
                path: path.to_owned(),
                source,
            })?;
            check_secret_file(path, "credential")?;
            raw
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

    #[cfg(unix)]
    fn with_mode(mode: u32) -> tempfile::NamedTempFile {
        use std::os::unix::fs::PermissionsExt;
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "a-credential-of-some-length").unwrap();
        std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        f
    }

    #[cfg(unix)]
    #[test]
    fn credential_files_others_can_write_are_refused() {
        for mode in [0o666, 0o620, 0o602] {
            let f = with_mode(mode);
            let e = read_credential(Some(f.path()), None).unwrap_err();
            assert!(
                matches!(
                    e,
                    CredentialError::Insecure(SecretFileError::Writable { .. })
                ),
                "{mode:o}: {e}"
            );
            assert!(e.to_string().contains("chmod 600"), "{e}");
        }
        for mode in [0o600, 0o400, 0o440, 0o644] {
            let f = with_mode(mode);
            assert!(read_credential(Some(f.path()), None).is_ok(), "{mode:o}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn secret_files_are_created_for_their_owner_only_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cred");
        write_secret_file(&p, b"secret\n").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(write_secret_file(&p, b"other\n").is_err());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "secret\n");
    }

    #[test]
    fn metrics_answers_carry_the_openmetrics_type() {
        let r = openmetrics("# EOF\n".into());
        assert_eq!(r.status(), axum::http::StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], OPENMETRICS_CONTENT_TYPE);
    }
}
