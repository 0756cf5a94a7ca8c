//! The operator's client of `loop-store` (`/v1/tokens`). I/O module.
//!
//! Maps the store's answers onto what the reconciler needs: registrations of one owner as
//! [`RegObs`], and errors split into "retry later" ([`StoreError::Unavailable`]) and "a human
//! must act" ([`StoreError::Rejected`], [`StoreError::Unauthorized`]). Never sends a token: only
//! its hash.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde::Deserialize;
use serde_json::json;

use super::plan::RegObs;
use crate::store::model::{Owner, TokenList, TokenView};
use crate::token::TokenHash;

/// A failed call to the store. Messages never carry a token or a credential.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Not reachable, timed out, or a 5xx: retry with backoff.
    #[error("the Loop token store is unavailable: {0}")]
    Unavailable(String),
    /// The store refused the admin credential.
    #[error(
        "the Loop token store rejected the operator's credential (HTTP {status}); check --store-token-file"
    )]
    Unauthorized { status: u16 },
    /// The store refused the request; `code` is its machine-readable error.
    #[error("the Loop token store refused the request ({code}): {message}")]
    Rejected {
        status: u16,
        code: String,
        message: String,
    },
}

impl StoreError {
    /// Bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Unauthorized { .. } => "unauthorized",
            StoreError::Rejected { .. } => "rejected",
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    message: String,
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

impl StoreClient {
    pub fn new(base: &str, credential: &str, timeout: Duration) -> Result<Self, StoreError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
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
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut q = vec![
                ("ownerUid", owner_uid.to_owned()),
                ("limit", "1000".to_owned()),
            ];
            if let Some(a) = &after {
                q.push(("after", a.clone()));
            }
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
            out.extend(page.items.iter().map(reg_obs));
            match page.next {
                Some(n) => after = Some(n),
                None => return Ok(out),
            }
        }
    }

    /// Register a token hash (idempotent for the same id and hash).
    pub async fn register(
        &self,
        id: &str,
        hash: &TokenHash,
        name: &str,
        scopes: &[String],
        owner: &Owner,
    ) -> Result<RegObs, StoreError> {
        let body = json!({"hash": hash, "name": name, "scopes": scopes, "owner": owner});
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
    ) -> Result<(), StoreError> {
        let mut body = serde_json::Map::new();
        if let Some(n) = name {
            body.insert("name".into(), json!(n));
        }
        if let Some(s) = scopes {
            body.insert("scopes".into(), json!(s));
        }
        if let Some(e) = expires_at {
            body.insert("expiresAt".into(), json!(e));
        }
        self.send("update", self.http.patch(self.url(id)).json(&body))
            .await?;
        Ok(())
    }

    /// Revoke; an id the store does not know counts as revoked.
    pub async fn revoke(&self, id: &str) -> Result<(), StoreError> {
        self.send("revoke", self.http.delete(self.url(id))).await?;
        Ok(())
    }

    fn url(&self, id: &str) -> String {
        format!("{}/v1/tokens/{id}", self.base)
    }
}

/// reqwest errors print the URL; ours holds no secret, but keep messages short and stable.
fn without_url(e: &reqwest::Error) -> String {
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
    }
}
