//! The operator's client of `loop-store` (`/v1/tokens`). I/O module.
//!
//! Maps the store's answers onto what the reconciler needs: registrations of one owner as
//! [`RegObs`], and errors split into "retry later" ([`StoreError::Unavailable`]) and "a human
//! must act" ([`StoreError::Rejected`], [`StoreError::Unauthorized`]). Never sends a token: only
//! its hash.
//!
//! Requests are built from, and answers read into, the wire types of [`crate::api`]; those read
//! answers tolerantly, so a newer store that adds a field does not break this client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::api::{
    ChangeReason, ErrorBody, ListQuery, MAX_PAGE, Owner, PatchRequest, RegisterRequest,
    RevokeQuery, TokenList, TokenView,
};
use crate::operator::core::error::StoreError;
use crate::operator::core::sweep::Registration;
use crate::operator::core::vocabulary::RegObs;
use crate::token::TokenHash;

/// Why the operator asks for a change, for the store's audit trail: the reason, and the
/// ApiToken's `metadata.generation` so that a store event can be joined to the API server's
/// audit log. Sent with every register, update and revoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Audit {
    pub reason: ChangeReason,
    pub generation: Option<i64>,
}

/// Called after every store request with (operation, seconds, outcome), for metrics.
pub type Observer = std::sync::Arc<dyn Fn(&'static str, f64, &'static str) + Send + Sync>;

#[derive(Clone)]
pub struct StoreClient {
    http: reqwest::Client,
    base: String,
    credential: String,
    observer: Option<Observer>,
}

impl std::fmt::Debug for StoreClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// Which certificates the client trusts for an `https://` store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The system's roots (a store with a publicly trusted certificate).
    SystemRoots,
    /// Only these PEM certificates (`--store-ca-file`: the CA that signed the store's
    /// certificate, e.g. cert-manager's).
    CaBundle(Vec<u8>),
}

/// Why the client cannot be built. Says what to change.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the CA file holds no PEM certificate")]
    NoCaCertificate,
    #[error("the CA file holds a certificate that cannot be used: {0}")]
    BadCaCertificate(String),
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

/// A rustls configuration on the `ring` provider trusting `trust`.
pub fn tls_config(trust: &Trust) -> Result<rustls::ClientConfig, ClientError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match trust {
        Trust::CaBundle(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| ClientError::BadCaCertificate(e.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|e| ClientError::BadCaCertificate(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(ClientError::NoCaCertificate);
            }
        }
        Trust::SystemRoots => {
            let found = rustls_native_certs::load_native_certs();
            // Unusable system certificates are skipped, as browsers do.
            let _ = roots.add_parsable_certificates(found.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl StoreClient {
    pub fn new(
        base: &str,
        credential: &str,
        timeout: Duration,
        trust: &Trust,
    ) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .tls_backend_preconfigured(tls_config(trust)?)
            .build()
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        Ok(StoreClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
            credential: credential.to_owned(),
            observer: None,
        })
    }

    pub fn with_observer(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    async fn send(
        &self,
        op: &'static str,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, StoreError> {
        let start = Instant::now();
        let result = req.bearer_auth(&self.credential).send().await;
        let outcome = match &result {
            Ok(r) if r.status().is_success() || r.status() == reqwest::StatusCode::NOT_FOUND => {
                "ok"
            }
            Ok(r) if r.status().is_server_error() => "unavailable",
            Ok(_) => "rejected",
            Err(_) => "unavailable",
        };
        if let Some(o) = &self.observer {
            o(op, start.elapsed().as_secs_f64(), outcome);
        }
        let resp = result.map_err(|e| StoreError::Unavailable(without_url(&e)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(StoreError::Unauthorized {
                status: status.as_u16(),
            });
        }
        let body: Option<ErrorBody> = resp.json().await.ok();
        let (code, message) = body.map_or_else(
            || ("unknown".to_owned(), String::new()),
            |b| (b.error, b.message),
        );
        if status.is_server_error() {
            return Err(StoreError::Unavailable(format!(
                "HTTP {}: {message}",
                status.as_u16()
            )));
        }
        Err(StoreError::Rejected {
            status: status.as_u16(),
            code,
            message,
        })
    }

    /// Every registration of one owner (all pages).
    pub async fn list_owned(&self, owner_uid: &str) -> Result<Vec<RegObs>, StoreError> {
        let q = ListQuery {
            owner_uid: Some(owner_uid.to_owned()),
            ..ListQuery::default()
        };
        Ok(self.list_all(q).await?.iter().map(reg_obs).collect())
    }

    /// The active registrations of `cluster` (in `namespace` only, when given), for the sweep.
    pub async fn list_cluster(
        &self,
        cluster: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<Registration>, StoreError> {
        let q = ListQuery {
            cluster: Some(cluster.to_owned()),
            namespace: namespace.map(str::to_owned),
            active: Some(true),
            ..ListQuery::default()
        };
        let views = self.list_all(q).await?;
        Ok(views
            .into_iter()
            .map(|v| Registration {
                id: v.id,
                owner_uid: v.owner.uid,
                owner_namespace: v.owner.namespace,
                owner_name: v.owner.name,
                fingerprint: v.fingerprint,
            })
            .collect())
    }

    /// Every page of `GET /v1/tokens` for the filters of `q`.
    async fn list_all(&self, mut q: ListQuery) -> Result<Vec<TokenView>, StoreError> {
        let mut out = Vec::new();
        q.limit = Some(MAX_PAGE);
        loop {
            let resp = self
                .send(
                    "list",
                    self.http.get(format!("{}/v1/tokens", self.base)).query(&q),
                )
                .await?;
            let page: TokenList = resp
                .json()
                .await
                .map_err(|e| StoreError::Unavailable(without_url(&e)))?;
            out.extend(page.items);
            match page.next {
                Some(n) => q.after = Some(n),
                None => return Ok(out),
            }
        }
    }

    /// Register a token hash (idempotent for the same id and hash), with its expiry if it has
    /// one.
    #[allow(clippy::too_many_arguments)]
    pub async fn register(
        &self,
        id: &str,
        hash: &TokenHash,
        name: &str,
        scopes: &[String],
        owner: &Owner,
        expires_at: Option<Timestamp>,
        audit: Audit,
    ) -> Result<RegObs, StoreError> {
        let body = RegisterRequest {
            hash: hash.clone(),
            name: name.to_owned(),
            scopes: scopes.to_vec(),
            owner: owner.clone(),
            expires_at,
            reason: Some(audit.reason),
            generation: audit.generation,
        };
        let resp = self
            .send("register", self.http.put(self.url(id)).json(&body))
            .await?;
        let view: TokenView = resp
            .json()
            .await
            .map_err(|e| StoreError::Unavailable(without_url(&e)))?;
        Ok(reg_obs(&view))
    }

    /// Change name and scopes; `expires_at: Some(None)` clears the expiry.
    pub async fn update(
        &self,
        id: &str,
        name: Option<&str>,
        scopes: Option<&[String]>,
        expires_at: Option<Option<Timestamp>>,
        audit: Audit,
    ) -> Result<(), StoreError> {
        let body = PatchRequest {
            name: name.map(str::to_owned),
            scopes: scopes.map(<[String]>::to_vec),
            expires_at,
            owner: None,
            reason: Some(audit.reason),
            generation: audit.generation,
        };
        self.send("update", self.http.patch(self.url(id)).json(&body))
            .await?;
        Ok(())
    }

    /// One registration with its owner; `None` when the store does not know the id.
    pub async fn get(&self, id: &str) -> Result<Option<TokenView>, StoreError> {
        let req = self.http.get(self.url(id));
        let resp = match self.send("get", req).await {
            Ok(r) => r,
            Err(StoreError::Rejected { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        resp.json()
            .await
            .map(Some)
            .map_err(|e| StoreError::Unavailable(without_url(&e)))
    }

    /// Hand a registration over to another owner (an ApiToken adopting an orphaned token).
    pub async fn hand_over(&self, id: &str, owner: &Owner, audit: Audit) -> Result<(), StoreError> {
        let body = PatchRequest {
            owner: Some(owner.clone()),
            reason: Some(audit.reason),
            generation: audit.generation,
            ..PatchRequest::default()
        };
        self.send("hand_over", self.http.patch(self.url(id)).json(&body))
            .await?;
        Ok(())
    }

    /// Revoke; an id the store does not know counts as revoked.
    pub async fn revoke(&self, id: &str, audit: Audit) -> Result<(), StoreError> {
        let q = RevokeQuery {
            reason: Some(audit.reason),
            generation: audit.generation,
        };
        self.send("revoke", self.http.delete(self.url(id)).query(&q))
            .await?;
        Ok(())
    }

    fn url(&self, id: &str) -> String {
        format!("{}/v1/tokens/{id}", self.base)
    }
}

/// reqwest errors print the URL; ours holds no secret, but keep messages short and stable. A
/// certificate the client does not trust is named as such, with what to change.
fn without_url(e: &reqwest::Error) -> String {
    if let Some(tls) = tls_cause(e) {
        return format!(
            "the TLS handshake failed ({tls}); check that --store-ca-file holds the CA that signed the store's certificate and that --store-url names a host in it"
        );
    }
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_decode() {
        "unreadable answer"
    } else {
        "request failed"
    };
    match std::error::Error::source(e) {
        Some(src) => format!("{kind}: {src}"),
        None => kind.to_owned(),
    }
}

/// The rustls error somewhere in an error's chain of sources, if any.
fn tls_cause(e: &reqwest::Error) -> Option<String> {
    let mut next = std::error::Error::source(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        // An io::Error's `source` skips the error it wraps (hyper and tokio-rustls nest two):
        // step into it instead.
        next = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

fn reg_obs(v: &TokenView) -> RegObs {
    let mut scopes = v.scopes.clone();
    scopes.sort();
    RegObs {
        id: v.id.clone(),
        fingerprint: v.fingerprint.clone(),
        name: v.name.clone(),
        scopes,
        expires_at: v.expires_at,
        revoked: v.revoked_at.is_some(),
        last_used_at: v.last_used_at,
        use_count: v.use_count,
        created_at: v.created_at,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::extract::{Path, State};
    use axum::routing::{get, put};
    use serde_json::{Value, json};

    use super::*;

    /// Request bodies the fake store received, as (method, id, body).
    type Seen = Arc<Mutex<Vec<(&'static str, String, Value)>>>;

    /// A registration as a newer store might answer it: extra fields at the top level and in
    /// `owner`.
    fn newer_view(id: &str) -> Value {
        json!({
            "id": id, "name": "Klaviyo", "scopes": ["orders:read"],
            "owner": {"cluster": "c", "namespace": "n", "name": "t", "uid": "u", "kind": "ApiToken"},
            "fingerprint": "0123456789ab", "active": true,
            "createdAt": "2030-01-01T00:00:00Z", "updatedAt": "2030-01-01T00:00:00Z",
            "useCount": 3, "labels": {"team": "growth"}
        })
    }

    /// A fake store on a loopback port; returns its base URL.
    async fn fake_store(seen: Seen) -> String {
        /// Records the body, answers like a newer store.
        async fn record(
            method: axum::http::Method,
            State(seen): State<Seen>,
            Path(id): Path<String>,
            body: axum::Json<Value>,
        ) -> axum::Json<Value> {
            let v = newer_view(&id);
            let method = if method == axum::http::Method::PUT {
                "PUT"
            } else {
                "PATCH"
            };
            seen.lock().unwrap().push((method, id, body.0));
            axum::Json(v)
        }
        let app = Router::new()
            .route(
                "/v1/tokens",
                get(|| async {
                    axum::Json(json!({"items": [newer_view("t1")], "total": 1, "next": null}))
                }),
            )
            .route("/v1/tokens/{id}", put(record).patch(record))
            .with_state(seen);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    const AUDIT: Audit = Audit {
        reason: ChangeReason::Scheduled,
        generation: Some(4),
    };

    fn owner() -> Owner {
        Owner {
            cluster: "c".into(),
            namespace: "n".into(),
            name: "t".into(),
            uid: "u".into(),
        }
    }

    #[tokio::test]
    async fn answers_of_a_newer_store_with_unknown_fields_are_read() {
        let base = fake_store(Seen::default()).await;
        let client =
            StoreClient::new(&base, "cred", Duration::from_secs(5), &Trust::SystemRoots).unwrap();
        let listed = client.list_owned("u").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].use_count, 3);
        let scopes = vec!["orders:read".to_owned()];
        let reg = client
            .register(
                "t1",
                &TokenHash::of("x"),
                "Klaviyo",
                &scopes,
                &owner(),
                None,
                AUDIT,
            )
            .await
            .unwrap();
        assert_eq!(reg.fingerprint, "0123456789ab");
    }

    #[tokio::test]
    async fn request_bodies_keep_their_shape() {
        let seen = Seen::default();
        let base = fake_store(seen.clone()).await;
        let client =
            StoreClient::new(&base, "cred", Duration::from_secs(5), &Trust::SystemRoots).unwrap();
        let hash = TokenHash::of("x");
        let scopes = vec!["orders:read".to_owned()];
        let expiry: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let _ = client
            .register("t1", &hash, "Klaviyo", &scopes, &owner(), None, AUDIT)
            .await;
        let _ = client
            .register(
                "t2",
                &hash,
                "Klaviyo",
                &scopes,
                &owner(),
                Some(expiry),
                AUDIT,
            )
            .await;
        client
            .update("t1", Some("New"), None, None, AUDIT)
            .await
            .unwrap();
        client
            .update("t1", None, Some(&scopes), Some(None), AUDIT)
            .await
            .unwrap();
        client
            .update("t1", None, None, Some(Some(expiry)), AUDIT)
            .await
            .unwrap();
        let seen = seen.lock().unwrap().clone();
        let bodies: Vec<(&str, Value)> = seen.into_iter().map(|(m, _, b)| (m, b)).collect();
        assert_eq!(
            bodies,
            vec![
                (
                    "PUT",
                    json!({"hash": hash.as_str(), "name": "Klaviyo", "scopes": ["orders:read"],
                        "owner": {"cluster": "c", "namespace": "n", "name": "t", "uid": "u"},
                        "reason": "scheduled", "generation": 4})
                ),
                // A token that expires is registered with its expiry.
                (
                    "PUT",
                    json!({"hash": hash.as_str(), "name": "Klaviyo", "scopes": ["orders:read"],
                        "owner": {"cluster": "c", "namespace": "n", "name": "t", "uid": "u"},
                        "expiresAt": "2030-01-01T00:00:00Z", "reason": "scheduled", "generation": 4})
                ),
                (
                    "PATCH",
                    json!({"name": "New", "reason": "scheduled", "generation": 4})
                ),
                // An explicit null clears the expiry; an absent field leaves it.
                (
                    "PATCH",
                    json!({"scopes": ["orders:read"], "expiresAt": null, "reason": "scheduled", "generation": 4})
                ),
                (
                    "PATCH",
                    json!({"expiresAt": "2030-01-01T00:00:00Z", "reason": "scheduled", "generation": 4})
                ),
            ]
        );
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused_with_a_reason() {
        assert!(matches!(
            tls_config(&Trust::CaBundle(b"not a certificate".to_vec())),
            Err(ClientError::NoCaCertificate)
        ));
        let broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec();
        assert!(matches!(
            tls_config(&Trust::CaBundle(broken)),
            Err(ClientError::BadCaCertificate(_))
        ));
        assert!(tls_config(&Trust::SystemRoots).is_ok());
    }
}
