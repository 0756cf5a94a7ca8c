//! The operator's Kubernetes calls for one ApiToken: read, create and apply its Secret, remove
//! Secrets it left under a former name, release its Secret to a later ApiToken or adopt one
//! left by an earlier one, read it live, write its status, publish Events. I/O module; each
//! failure becomes the [`Error`] variant named after the call.
//!
//! A Secret that does not exist yet is created with a plain create, never applied: if another
//! party created one of that name in the meantime, the create fails instead of taking it over.
//! Only a Secret this ApiToken controls is updated, by server-side apply (promise 7).

use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};

use crate::api::Owner;
use crate::operator::core::error::{Error, describe};
use crate::operator::core::events::Note;
use crate::operator::core::secret;
use crate::operator::core::status;
use crate::operator::resource::crd::{ApiToken, ApiTokenStatus};
use crate::operator::resource::names::secret_annotations::{ORPHANED_FROM, REVOKED_UNUSED};
use crate::operator::resource::names::{API_TOKEN_LABEL, FIELD_MANAGER};

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

    /// Write the whole status: fields the operator set before and leaves out now are removed
    /// (a JSON merge patch; see [`status::replacement_patch`]).
    pub async fn patch_status(&self, new: &ApiTokenStatus) -> Result<(), Error> {
        let patch = status::replacement_patch(new).map_err(Error::EncodeStatus)?;
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        self.tokens
            .patch_status(&self.name, &pp, &Patch::Merge(&patch))
            .await
            .map_err(|source| Error::PatchStatus { source })?;
        Ok(())
    }

    /// Leave the Secret `name` behind (`deletionPolicy: Orphan`): remove this ApiToken's owner
    /// reference, so the garbage collector keeps it, and mark it with this ApiToken's uid. A
    /// strategic merge patch: the reference goes whichever field manager set it.
    pub async fn release_secret(&self, name: &str) -> Result<Secret, Error> {
        let patch = serde_json::json!({"metadata": {
            "ownerReferences": [{"$patch": "delete", "uid": self.uid}],
            "annotations": {ORPHANED_FROM: self.uid},
        }});
        self.patch_secret(name, &patch).await
    }

    /// Take over the Secret `s` that an earlier ApiToken of this name left behind: this
    /// ApiToken becomes its controller and the orphan mark goes. Only the version read
    /// (`resourceVersion`): a Secret changed in the meantime is read again first.
    pub async fn adopt_secret(&self, s: &Secret) -> Result<Secret, Error> {
        let patch = serde_json::json!({"metadata": {
            "resourceVersion": s.metadata.resource_version,
            "ownerReferences": self.t.controller_owner_ref(&()).into_iter().collect::<Vec<_>>(),
            "annotations": {ORPHANED_FROM: null},
        }});
        self.patch_secret(&s.name_any(), &patch).await
    }

    /// Take the token `id` out of the Secret `s` (its data keys `keys`: the token's, and those
    /// rendered from the template) and mark it revoked as unused. A strategic merge patch, so
    /// the keys go whichever field manager wrote them; only on the version read.
    pub async fn mark_unused(
        &self,
        s: &Secret,
        keys: &[String],
        id: &str,
    ) -> Result<Secret, Error> {
        let data: serde_json::Map<String, serde_json::Value> = keys
            .iter()
            .map(|k| (k.clone(), serde_json::Value::Null))
            .collect();
        let patch = serde_json::json!({
            "metadata": {
                "resourceVersion": s.metadata.resource_version,
                "annotations": {REVOKED_UNUSED: id},
            },
            "data": data,
        });
        self.patch_secret(&s.name_any(), &patch).await
    }

    /// Remove the mark of [`Self::mark_unused`] once a new token is in the Secret.
    pub async fn clear_unused_mark(&self, name: &str) -> Result<Secret, Error> {
        let patch = serde_json::json!({"metadata": {"annotations": {REVOKED_UNUSED: null}}});
        self.patch_secret(name, &patch).await
    }

    /// Remove from the Secret `name` the extras of `spec.secret` that the spec no longer has
    /// (see [`secret::removal_patch`]).
    pub async fn remove_from_secret(
        &self,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<Secret, Error> {
        self.patch_secret(name, patch).await
    }

    async fn patch_secret(&self, name: &str, patch: &serde_json::Value) -> Result<Secret, Error> {
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        self.secrets
            .patch(name, &pp, &Patch::Strategic(patch))
            .await
            .map_err(|source| Error::ApplySecret {
                name: name.to_owned(),
                source,
            })
    }

    /// Publish an Event on the ApiToken. A failure is logged, never fatal: Events are hints.
    pub async fn publish(&self, events: &Publisher, n: Note) {
        publish_on(events, &self.t.object_ref(&()), None, n).await;
    }
}

/// Publish an Event about `regarding` (and `related`, which also keeps Events of the same
/// reason about one object but different related objects apart). A failure is logged, never
/// fatal: Events are hints.
pub async fn publish_on(
    events: &Publisher,
    regarding: &ObjectReference,
    related: Option<ObjectReference>,
    n: Note,
) {
    let ev = Event {
        type_: n.type_,
        reason: n.reason.to_owned(),
        note: Some(fit_note(n.note)),
        action: n.reason.to_owned(),
        secondary: related,
    };
    if let Err(e) = events.recorder().publish(&ev, regarding).await {
        tracing::warn!(error = %describe(&e), reason = n.reason, "could not publish an event");
    }
}

/// The API server refuses an Event whose note is 1 kB or longer; a long one (a policy
/// violation naming many scopes, a long abandon reason) is cut at a character boundary.
fn fit_note(mut note: String) -> String {
    const MAX: usize = 1000;
    if note.len() > MAX {
        let mut end = MAX - '…'.len_utf8();
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push('…');
    }
    note
}

#[cfg(test)]
mod tests {
    use super::fit_note;

    #[test]
    fn long_notes_are_cut_below_the_api_servers_limit() {
        assert_eq!(fit_note("short".into()), "short");
        let long = fit_note("é".repeat(800));
        assert!(long.len() <= 1000 && long.ends_with('…'), "{}", long.len());
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
