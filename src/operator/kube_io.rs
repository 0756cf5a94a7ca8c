//! The operator's Kubernetes calls for one ApiToken: read, create and apply its Secret, remove
//! Secrets it left under a former name, read it live, write its status, publish Events. I/O
//! module; each failure becomes the [`Error`] variant named after the call.
//!
//! A Secret that does not exist yet is created with a plain create, never applied: if another
//! party created one of that name in the meantime, the create fails instead of taking it over.
//! Only a Secret this ApiToken controls is updated, by server-side apply (promise 7).

use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};

use super::crd::{ApiToken, ApiTokenStatus};
use super::error::{Error, describe};
use super::events::Note;
use super::names::{API_TOKEN_LABEL, FIELD_MANAGER};
use super::secret;
use crate::api::Owner;

/// One ApiToken and the API handles its reconcile uses.
pub struct Target<'a> {
    pub t: &'a ApiToken,
    pub name: String,
    pub ns: String,
    pub uid: String,
    secrets: Api<Secret>,
    tokens: Api<ApiToken>,
}

impl<'a> Target<'a> {
    pub fn new(t: &'a ApiToken, client: &Client) -> Result<Self, Error> {
        let ns = t.namespace().ok_or(Error::Unnamed)?;
        Ok(Target {
            t,
            name: t.name_any(),
            uid: t.uid().unwrap_or_default(),
            secrets: Api::namespaced(client.clone(), &ns),
            tokens: Api::namespaced(client.clone(), &ns),
            ns,
        })
    }

    /// The owner recorded with each of its tokens in the store.
    pub fn owner(&self, cluster: &str) -> Owner {
        Owner {
            cluster: cluster.to_owned(),
            namespace: self.ns.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
        }
    }

    /// The status the reconcile started from (the watch cache's).
    pub fn status(&self) -> Option<&ApiTokenStatus> {
        self.t.status.as_ref()
    }

    /// Read a Secret of this namespace.
    pub async fn get_secret(&self, name: &str) -> Result<Option<Secret>, Error> {
        self.secrets
            .get_opt(name)
            .await
            .map_err(|source| Error::GetSecret {
                name: name.to_owned(),
                source,
            })
    }

    /// Write `s`: create it when `exists` is false, else server-side apply it.
    pub async fn write_secret(&self, s: &Secret, exists: bool) -> Result<Secret, Error> {
        let name = s.name_any();
        if !exists {
            let pp = PostParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PostParams::default()
            };
            return self
                .secrets
                .create(&pp, s)
                .await
                .map_err(|source| Error::CreateSecret { name, source });
        }
        let body = secret::apply_body(s).map_err(|source| Error::EncodeSecret {
            name: name.clone(),
            source,
        })?;
        self.secrets
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(body),
            )
            .await
            .map_err(|source| Error::ApplySecret { name, source })
    }

    /// Delete the Secrets this ApiToken controls under any name but `keep` (after
    /// `spec.secret.name` changed).
    pub async fn remove_secrets_except(&self, keep: &str) -> Result<(), Error> {
        let lp = ListParams::default().labels(&format!("{API_TOKEN_LABEL}={}", self.name));
        let owned = self
            .secrets
            .list_metadata(&lp)
            .await
            .map_err(|source| Error::ListSecrets { source })?;
        for s in owned {
            let name = s.name_any();
            if secret::controlled_by(&s.metadata, &self.uid) && name != keep {
                self.secrets
                    .delete(&name, &DeleteParams::default())
                    .await
                    .map_err(|source| Error::DeleteSecret { name, source })?;
            }
        }
        Ok(())
    }

    /// The ApiToken as the API server has it now. (A get of the object: the chart's RBAC grants
    /// get on apitokens, not on apitokens/status.)
    pub async fn live(&self) -> Result<ApiToken, Error> {
        self.tokens
            .get(&self.name)
            .await
            .map_err(|source| Error::GetApiToken { source })
    }

    /// Server-side apply of the whole status: fields the operator set before and leaves out
    /// now are removed.
    pub async fn patch_status(&self, new: &ApiTokenStatus) -> Result<(), Error> {
        let patch = serde_json::json!({
            "apiVersion": "loop.dev/v1alpha1", "kind": "ApiToken", "status": new,
        });
        self.tokens
            .patch_status(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(|source| Error::PatchStatus { source })?;
        Ok(())
    }

    /// Publish an Event on the ApiToken. A failure is logged, never fatal: Events are hints.
    pub async fn publish(&self, events: &Publisher, n: Note) {
        let ev = Event {
            type_: n.type_,
            reason: n.reason.to_owned(),
            note: Some(n.note),
            action: n.reason.to_owned(),
            secondary: None,
        };
        if let Err(e) = events
            .recorder()
            .publish(&ev, &self.t.object_ref(&()))
            .await
        {
            tracing::warn!(error = %describe(&e), reason = n.reason, "could not publish an event");
        }
    }
}

/// Publishes the operator's Events, each as a new Event. kube's [`Recorder`] folds Events of the
/// same reason on the same object into one series that keeps the first note: a second rotation
/// within minutes would be shown with the first one's fingerprint and cause. Every Event the
/// operator publishes marks one change, so none may be folded: a fresh recorder (and its empty
/// cache) per Event. This also keeps no per-object cache in memory.
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    reporter: Reporter,
}

impl Publisher {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Publisher { client, reporter }
    }

    fn recorder(&self) -> Recorder {
        Recorder::new(self.client.clone(), self.reporter.clone())
    }
}
