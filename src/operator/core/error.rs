//! The reconcile error: one variant per failed operation, so a condition, a log line and a
//! metric can say which call failed. Pure, no I/O.
//!
//! Messages are for humans (they reach `kubectl describe` through the `Ready` condition): they
//! name the operation and the object, and carry the API server's own message, never a Rust
//! `Debug` dump and never a token.

use kube::runtime::finalizer;

use crate::token::MintError;

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

/// A reconcile failure. Never carries a token.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading Secret {name} failed: {}", describe(.source))]
    GetSecret {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("creating Secret {name} failed: {}", describe(.source))]
    CreateSecret {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("updating Secret {name} failed: {}", describe(.source))]
    ApplySecret {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("listing the Secrets of this ApiToken failed: {}", describe(.source))]
    ListSecrets {
        #[source]
        source: kube::Error,
    },
    #[error("deleting the former Secret {name} failed: {}", describe(.source))]
    DeleteSecret {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("encoding Secret {name} for server-side apply failed")]
    EncodeSecret {
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("reading the ApiToken failed: {}", describe(.source))]
    GetApiToken {
        #[source]
        source: kube::Error,
    },
    #[error("reading the ApiToken's namespace failed: {}", describe(.source))]
    GetNamespace {
        #[source]
        source: kube::Error,
    },
    #[error("encoding the ApiToken's status failed")]
    EncodeStatus(#[source] serde_json::Error),
    #[error("writing the ApiToken's status failed: {}", describe(.source))]
    PatchStatus {
        #[source]
        source: kube::Error,
    },
    #[error("adding the finalizer {} failed: {}", crate::operator::resource::names::FINALIZER, describe(.source))]
    AddFinalizer {
        #[source]
        source: kube::Error,
    },
    #[error("removing the finalizer {} failed: {}", crate::operator::resource::names::FINALIZER, describe(.source))]
    RemoveFinalizer {
        #[source]
        source: kube::Error,
    },
    #[error("reading rollout target {kind} {name} failed: {}", describe(.source))]
    GetRolloutTarget {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("restarting rollout target {kind} {name} failed: {}", describe(.source))]
    RestartRolloutTarget {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the ApiToken has no namespace or no name")]
    Unnamed,
    #[error(
        "Secret {name} no longer holds token {id}, which is being revoked as unused; looking again"
    )]
    SecretChanged { name: String, id: String },
    #[error("cannot mint a token: {0}")]
    Mint(#[from] MintError),
}

impl Error {
    /// Bounded label for metrics (`docs/operator.md` lists them).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::GetSecret { .. } => "get_secret",
            Error::CreateSecret { .. } => "create_secret",
            Error::ApplySecret { .. } => "apply_secret",
            Error::ListSecrets { .. } => "list_secrets",
            Error::DeleteSecret { .. } => "delete_secret",
            Error::EncodeSecret { .. } => "encode_secret",
            Error::GetApiToken { .. } => "get_apitoken",
            Error::GetNamespace { .. } => "get_namespace",
            Error::EncodeStatus(_) => "encode_status",
            Error::PatchStatus { .. } => "patch_status",
            Error::AddFinalizer { .. } => "add_finalizer",
            Error::RemoveFinalizer { .. } => "remove_finalizer",
            Error::GetRolloutTarget { .. } => "get_rollout_target",
            Error::RestartRolloutTarget { .. } => "restart_rollout_target",
            Error::Store(e) => match e {
                StoreError::Unavailable(_) => "store_unavailable",
                StoreError::Unauthorized { .. } => "store_unauthorized",
                StoreError::Rejected { .. } => "store_rejected",
            },
            Error::Unnamed => "unnamed",
            Error::SecretChanged { .. } => "secret_changed",
            Error::Mint(_) => "mint",
        }
    }

    /// Every kind [`Error::kind`] can return.
    #[cfg(test)]
    pub const KINDS: [&'static str; 20] = [
        "get_secret",
        "create_secret",
        "apply_secret",
        "list_secrets",
        "delete_secret",
        "encode_secret",
        "get_apitoken",
        "get_namespace",
        "encode_status",
        "patch_status",
        "add_finalizer",
        "remove_finalizer",
        "get_rollout_target",
        "restart_rollout_target",
        "store_unavailable",
        "store_unauthorized",
        "store_rejected",
        "unnamed",
        "secret_changed",
        "mint",
    ];
}

/// The finalizer helper wraps the reconcile's own error; unwrap it, so that the metric's kind,
/// the log line and the condition name the operation that really failed.
impl From<finalizer::Error<Error>> for Error {
    fn from(e: finalizer::Error<Error>) -> Self {
        match e {
            finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
            finalizer::Error::AddFinalizer(source) => Error::AddFinalizer { source },
            finalizer::Error::RemoveFinalizer(source) => Error::RemoveFinalizer { source },
            finalizer::Error::UnnamedObject | finalizer::Error::InvalidFinalizer => Error::Unnamed,
        }
    }
}

/// A kube error for humans: the API server's reason and message (its `Display` adds a `Debug`
/// dump of the whole `Status`), or the client's own message.
pub fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => {
            let reason = if status.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", status.reason)
            };
            format!("HTTP {}{reason}: {}", status.code, status.message)
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            message: message.into(),
            reason: reason.into(),
            ..Default::default()
        }))
    }

    #[test]
    fn the_metrics_kind_is_the_real_failure_not_the_finalizer() {
        let e = Error::from(finalizer::Error::ApplyFailed(Error::Store(
            StoreError::Unavailable("connection failed".into()),
        )));
        assert_eq!(e.kind(), "store_unavailable");
        let e = Error::from(finalizer::Error::CleanupFailed(Error::PatchStatus {
            source: api_error(500, "InternalError", "etcd is down"),
        }));
        assert_eq!(e.kind(), "patch_status");
        let e = Error::from(finalizer::Error::<Error>::AddFinalizer(api_error(
            403,
            "Forbidden",
            "no",
        )));
        assert_eq!(e.kind(), "add_finalizer");
    }

    #[test]
    fn no_message_for_humans_holds_a_debug_dump() {
        let e = Error::CreateSecret {
            name: "x".into(),
            source: api_error(409, "AlreadyExists", "secrets \"x\" already exists"),
        };
        let msg = e.to_string();
        assert_eq!(
            msg,
            "creating Secret x failed: HTTP 409 (AlreadyExists): secrets \"x\" already exists"
        );
        let e = Error::from(finalizer::Error::<Error>::RemoveFinalizer(api_error(
            422, "", "bad",
        )));
        assert_eq!(
            e.to_string(),
            "removing the finalizer loop.dev/revoke failed: HTTP 422: bad"
        );
    }

    #[test]
    fn kinds_are_listed() {
        let samples = [
            Error::Unnamed,
            Error::Store(StoreError::Rejected {
                status: 422,
                code: "c".into(),
                message: "m".into(),
            }),
            Error::ListSecrets {
                source: api_error(500, "", ""),
            },
        ];
        for e in samples {
            assert!(Error::KINDS.contains(&e.kind()));
        }
    }
}
