//! TLS for the store: the certificate and key from PEM files, reloaded when the files change.
//!
//! I/O module: reads the two files at start-up and then every `--tls-reload-interval`.
//! cert-manager renews a certificate by rewriting the files of a mounted Secret in place (a
//! symbolic link swap of `..data`), so the files are read again on each tick and compared by
//! content (robust to a swap that keeps modification times, and to clocks). A new pair that
//! parses and whose key matches its certificate replaces the old one for every later handshake;
//! connections already open keep theirs. A pair that does not (a half-written renewal, a wrong
//! key) is logged as a warning and the old pair is kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::serve::{SecretFileError, check_secret_file};

/// Where the certificate chain and its private key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why a certificate and key cannot be used. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {what} file {}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the TLS certificate file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("the TLS certificate file {} is not valid PEM", path.display())]
    BadCertificate {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("the TLS key file {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)", path.display())]
    BadKey {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error(transparent)]
    Insecure(#[from] SecretFileError),
    #[error(
        "the TLS key {} cannot be used with the certificate {} (a key of another certificate, or an unsupported key type)",
        key.display(),
        cert.display()
    )]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot build the TLS configuration")]
    Config(#[source] rustls::Error),
}

/// The crypto provider the store uses (ring, already in the tree through kube).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Parse a PEM certificate chain and key, and check that the key belongs to the certificate.
fn certified_key(
    files: &TlsFiles,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::BadCertificate {
            path: files.cert.clone(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: files.cert.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| TlsError::BadKey {
        path: files.key.clone(),
        source,
    })?;
    let certified =
        CertifiedKey::from_der(chain, key, &provider()).map_err(|source| TlsError::Mismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
            source,
        })?;
    // `from_der` lets a key whose public half it cannot compute through; insist on a match.
    certified
        .keys_match()
        .map_err(|source| TlsError::Mismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
            source,
        })?;
    Ok(certified)
}

/// The file contents a pair was last read from, to notice a change.
type Contents = (Vec<u8>, Vec<u8>);

/// What is kept of the contents to notice a change: their SHA-256, never the key itself.
type Seen = [u8; 32];

fn digest(c: &Contents) -> Seen {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update((c.0.len() as u64).to_be_bytes());
    h.update(&c.0);
    h.update(&c.1);
    h.finalize().into()
}

fn read_pair(files: &TlsFiles) -> Result<Contents, TlsError> {
    Ok((read("certificate", &files.cert)?, read("key", &files.key)?))
}

/// The certificate handed to each new handshake; replaced when the files change.
#[derive(Debug)]
pub struct ReloadingCert {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
    seen: RwLock<Seen>,
}

impl ReloadingCert {
    /// Load the pair; any problem is a start-up error.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        // The key file's permissions are checked once, here (a warning on every reload tick
        // would drown the logs); a renewed file is written by the same mount.
        check_secret_file(&files.key, "TLS key")?;
        let contents = read_pair(&files)?;
        let key = certified_key(&files, &contents.0, &contents.1)?;
        Ok(ReloadingCert {
            files,
            current: RwLock::new(Arc::new(key)),
            seen: RwLock::new(digest(&contents)),
        })
    }

    /// Read the files again; when they changed, use the new pair if it is valid. Returns
    /// whether the pair in use changed.
    pub fn reload(&self) -> bool {
        let contents = match read_pair(&self.files) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the TLS files; keeping the certificate in use");
                return false;
            }
        };
        let seen = digest(&contents);
        if *self.seen.read().unwrap_or_else(|e| e.into_inner()) == seen {
            return false;
        }
        let parsed = certified_key(&self.files, &contents.0, &contents.1);
        *self.seen.write().unwrap_or_else(|e| e.into_inner()) = seen;
        match parsed {
            Ok(key) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "the changed TLS files are not a valid pair; keeping the certificate in use");
                false
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

/// A TLS acceptor (HTTP/1.1 by ALPN) whose certificate comes from `cert`.
pub fn acceptor(cert: Arc<ReloadingCert>) -> Result<TlsAcceptor, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Re-read the files every `every` until shutdown.
pub fn spawn_reloader(
    cert: Arc<ReloadingCert>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {},
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let c = Arc::clone(&cert);
            // File reads block: keep them off the request threads.
            let _ = tokio::task::spawn_blocking(move || c.reload()).await;
        }
    })
}
