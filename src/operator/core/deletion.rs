//! What deleting an ApiToken does to its tokens, and when a later ApiToken of the same name may
//! take over what an earlier one left behind. Pure: no I/O; the shell's handover acts on it.
//!
//! - **Revoke** (`deletionPolicy: Revoke`, the default): every token the ApiToken registered is
//!   revoked before the finalizer goes; with the store down, deletion waits and says why.
//! - **Orphan** (`deletionPolicy: Orphan`): the token in the Secret stays registered, and the
//!   Secret stays, without its owner reference and marked with the ApiToken's uid
//!   (`loop.dev/orphaned-from`). Registrations that are neither that token nor still in a
//!   grace period (crash leftovers) are revoked. In a namespace being deleted, the Secret goes
//!   with the namespace, so an orphan would be a token nobody holds: Revoke instead.
//! - **Abandon** (`loop.dev/abandon-revocation: <reason>` on an ApiToken being deleted): the
//!   finalizer goes without reaching the store, for a store that is gone for good; the
//!   fingerprints of the tokens that stay active are named in a Warning.
//!
//! **Adoption.** An ApiToken whose Secret name holds an orphaned Secret of the same ApiToken
//! name takes it over without minting: the registration the Secret names is handed to the new
//! ApiToken, then the Secret gets its owner reference back. Only when the store confirms that
//! registration is active, holds the Secret's token (same fingerprint) and was owned by the
//! ApiToken that left the Secret, under the same cluster, namespace and name: a Secret made by
//! hand to look orphaned takes over nobody else's token.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use crate::api::{Owner, TokenView};
use crate::operator::core::vocabulary::{RegObs, SecretObs};
use crate::operator::resource::crd::{ApiToken, ApiTokenStatus, DeletionPolicy};
use crate::operator::resource::names::secret_annotations as ann;
use crate::operator::resource::names::{
    ABANDON_ANNOTATION, API_TOKEN_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
};

/// What a deletion does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    Revoke,
    Orphan,
    /// Let go without reaching the store.
    Abandon {
        /// The annotation's value.
        reason: String,
    },
}

/// Whether the decision for this ApiToken depends on its namespace being deleted (worth asking
/// the API server rather than a cache that may lag the ApiToken's own deletion).
pub fn depends_on_namespace(t: &ApiToken) -> bool {
    t.annotations().contains_key(ABANDON_ANNOTATION)
        || t.spec.deletion_policy == DeletionPolicy::Orphan
}

/// Decide for an ApiToken being deleted.
pub fn decide(t: &ApiToken, namespace_terminating: bool) -> Deletion {
    if let Some(reason) = t.annotations().get(ABANDON_ANNOTATION) {
        return Deletion::Abandon {
            reason: reason.clone(),
        };
    }
    match t.spec.deletion_policy {
        DeletionPolicy::Orphan if !namespace_terminating => Deletion::Orphan,
        _ => Deletion::Revoke,
    }
}

/// The fingerprints of the tokens an abandoned ApiToken leaves active, as far as the operator
/// knows without the store: its status (current and previous tokens) and its Secret's record.
pub fn known_fingerprints(
    status: Option<&ApiTokenStatus>,
    secret_fingerprint: Option<&str>,
) -> Vec<String> {
    let mut all: Vec<String> = status
        .into_iter()
        .flat_map(|s| {
            s.fingerprint
                .iter()
                .cloned()
                .chain(s.previous_tokens.iter().map(|p| p.fingerprint.clone()))
        })
        .chain(secret_fingerprint.map(str::to_owned))
        .collect();
    all.sort();
    all.dedup();
    all
}

/// What orphaning does in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrphanPlan {
    /// The registration left behind with the Secret (the Secret's own token), if there is one.
    /// `None`: the Secret holds no usable token, so nothing can be orphaned: revoke everything.
    pub keep: Option<String>,
    /// Registrations to revoke: active, not kept, and not ending by themselves (a previous
    /// token in its grace period has an expiry in the store and stops on time).
    pub revoke: Vec<String>,
}

/// Plan an orphaning from the live Secret and the registrations of the ApiToken.
pub fn orphan_plan(secret: Option<&SecretObs>, regs: &[RegObs], now: Timestamp) -> OrphanPlan {
    let active = |r: &&RegObs| !r.revoked && r.expires_at.is_none_or(|e| e > now);
    let keep = secret
        .filter(|s| s.owned)
        .and_then(|s| s.token_id.as_deref().zip(s.fingerprint.as_deref()))
        .and_then(|(id, fp)| {
            regs.iter()
                .filter(active)
                .find(|r| r.id == id && r.fingerprint == fp)
        })
        .map(|r| r.id.clone());
    let revoke = regs
        .iter()
        .filter(active)
        .filter(|r| Some(&r.id) != keep.as_ref())
        .filter(|r| keep.is_none() || r.expires_at.is_none())
        .map(|r| r.id.clone())
        .collect();
    OrphanPlan { keep, revoke }
}

/// An orphaned Secret's marks: which ApiToken left it, and the store id of its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphaned {
    pub from_uid: String,
    pub token_id: String,
}

/// The marks of a Secret left behind by an earlier ApiToken named `name`: the operator's
/// labels for that name, no controller, and the orphan and token-id annotations.
pub fn orphaned_for(meta: &ObjectMeta, name: &str) -> Option<Orphaned> {
    let labels = meta.labels.as_ref()?;
    let annotations = meta.annotations.as_ref()?;
    let ours = labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY_VALUE)
        && labels.get(API_TOKEN_LABEL).map(String::as_str) == Some(name);
    let controlled = meta
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true));
    if !ours || controlled {
        return None;
    }
    Some(Orphaned {
        from_uid: annotations.get(ann::ORPHANED_FROM)?.clone(),
        token_id: annotations.get(ann::TOKEN_ID)?.clone(),
    })
}

/// Why an orphaned token cannot be adopted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAdoptable {
    #[error("the Loop token store does not know its token {0}")]
    Unknown(String),
    #[error("its token {0} is no longer active in the Loop token store")]
    Inactive(String),
    #[error(
        "its token {0} was not registered by an earlier ApiToken of this name in this namespace and cluster"
    )]
    OtherOwner(String),
    #[error("the Secret does not hold token {0}")]
    NotInSecret(String),
}

/// Whether the registration `view` (the store's answer for the Secret's token id) may pass to
/// the ApiToken `adopter`.
pub fn may_adopt(
    view: Option<&TokenView>,
    o: &Orphaned,
    adopter: &Owner,
    secret_fingerprint: Option<&str>,
) -> Result<(), NotAdoptable> {
    let id = || o.token_id.clone();
    let v = view.ok_or_else(|| NotAdoptable::Unknown(id()))?;
    // Handed over already, by an adoption interrupted before the Secret was taken over.
    let from = v.owner.uid == o.from_uid || v.owner.uid == adopter.uid;
    let same_place = from
        && v.owner.cluster == adopter.cluster
        && v.owner.namespace == adopter.namespace
        && v.owner.name == adopter.name;
    if !same_place {
        return Err(NotAdoptable::OtherOwner(id()));
    }
    if !v.active {
        return Err(NotAdoptable::Inactive(id()));
    }
    if secret_fingerprint != Some(v.fingerprint.as_str()) {
        return Err(NotAdoptable::NotInSecret(id()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::resource::crd::PreviousToken;
    use crate::operator::resource::crd::fixtures::api_token;

    const NOW: i64 = 1_800_000_000;

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("a time")
    }

    fn reg(id: &str) -> RegObs {
        RegObs {
            id: id.into(),
            fingerprint: format!("fp-{id}"),
            name: "n".into(),
            scopes: vec!["orders:read".into()],
            expires_at: None,
            revoked: false,
            last_used_at: None,
            use_count: 0,
            created_at: ts(NOW),
        }
    }

    fn secret(id: &str) -> SecretObs {
        SecretObs {
            owned: true,
            token_id: Some(id.into()),
            previous_token_id: None,
            issued_at: None,
            rotation_request: None,
            fingerprint: Some(format!("fp-{id}")),
            shape_ok: true,
            retired: Some(vec![]),
            revoked_unused: None,
            usage_from: None,
        }
    }

    #[test]
    fn the_abandon_annotation_wins_and_orphan_revokes_in_a_dying_namespace() {
        let revoke = api_token(serde_json::json!({"scopes": ["orders:read"]}));
        let orphan =
            api_token(serde_json::json!({"scopes": ["orders:read"], "deletionPolicy": "Orphan"}));
        assert_eq!(decide(&revoke, false), Deletion::Revoke);
        assert_eq!(decide(&orphan, false), Deletion::Orphan);
        assert_eq!(
            decide(&orphan, true),
            Deletion::Revoke,
            "the Secret goes with the namespace"
        );
        assert!(!depends_on_namespace(&revoke) && depends_on_namespace(&orphan));
        let mut abandoned = orphan.clone();
        abandoned
            .annotations_mut()
            .insert(ABANDON_ANNOTATION.into(), "store decommissioned".into());
        assert_eq!(
            decide(&abandoned, true),
            Deletion::Abandon {
                reason: "store decommissioned".into()
            }
        );
    }

    #[test]
    fn abandoned_fingerprints_come_from_status_and_secret() {
        let status = ApiTokenStatus {
            fingerprint: Some("bbb".into()),
            previous_tokens: vec![PreviousToken {
                token_id: "u.1".into(),
                fingerprint: "aaa".into(),
                expires_at: "2030-01-01T00:00:00Z".into(),
                last_used_at: None,
                still_in_use: false,
            }],
            ..ApiTokenStatus::default()
        };
        assert_eq!(
            known_fingerprints(Some(&status), Some("bbb")),
            vec!["aaa".to_owned(), "bbb".to_owned()]
        );
        assert_eq!(
            known_fingerprints(None, Some("ccc")),
            vec!["ccc".to_owned()]
        );
        assert!(known_fingerprints(None, None).is_empty());
    }

    #[test]
    fn orphaning_keeps_the_secrets_token_and_tokens_in_grace_and_revokes_strays() {
        let mut in_grace = reg("old");
        in_grace.expires_at = Some(ts(NOW + 60));
        let mut gone = reg("gone");
        gone.revoked = true;
        let regs = [reg("cur"), in_grace, reg("stray"), gone];
        let p = orphan_plan(Some(&secret("cur")), &regs, ts(NOW));
        assert_eq!(
            p,
            OrphanPlan {
                keep: Some("cur".into()),
                revoke: vec!["stray".into()]
            }
        );
        // Nothing usable in the Secret (edited by hand, or not ours): nothing to orphan.
        let mut edited = secret("cur");
        edited.fingerprint = Some("fp-other".into());
        for s in [Some(&edited), None] {
            let p = orphan_plan(s, &regs, ts(NOW));
            assert_eq!(p.keep, None);
            assert_eq!(
                p.revoke,
                vec!["cur".to_owned(), "old".into(), "stray".into()]
            );
        }
    }

    fn orphan_meta(name: &str, controlled: bool) -> ObjectMeta {
        serde_json::from_value(serde_json::json!({
            "name": "s",
            "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE, API_TOKEN_LABEL: name},
            "annotations": {ann::ORPHANED_FROM: "old-uid", ann::TOKEN_ID: "old-uid.abc"},
            "ownerReferences": if controlled {
                serde_json::json!([{"apiVersion": "loop.dev/v1alpha1", "kind": "ApiToken", "name": name, "uid": "x", "controller": true}])
            } else {
                serde_json::json!([])
            },
        }))
        .expect("metadata")
    }

    #[test]
    fn only_an_uncontrolled_orphan_of_the_same_name_is_a_candidate() {
        assert_eq!(
            orphaned_for(&orphan_meta("a", false), "a"),
            Some(Orphaned {
                from_uid: "old-uid".into(),
                token_id: "old-uid.abc".into()
            })
        );
        assert_eq!(orphaned_for(&orphan_meta("a", false), "b"), None);
        assert_eq!(orphaned_for(&orphan_meta("a", true), "a"), None);
        let mut unmarked = orphan_meta("a", false);
        unmarked.annotations = None;
        assert_eq!(orphaned_for(&unmarked, "a"), None);
    }

    #[test]
    fn adoption_needs_the_same_place_an_active_token_and_the_secrets_token() {
        let o = Orphaned {
            from_uid: "old-uid".into(),
            token_id: "old-uid.abc".into(),
        };
        let owner = |uid: &str, ns: &str| Owner {
            cluster: "c".into(),
            namespace: ns.into(),
            name: "a".into(),
            uid: uid.into(),
        };
        let view = |active: bool, ns: &str| -> TokenView {
            serde_json::from_value(serde_json::json!({
                "id": "old-uid.abc", "name": "n", "scopes": ["orders:read"],
                "owner": owner("old-uid", ns), "fingerprint": "fp", "active": active,
                "createdAt": "2030-01-01T00:00:00Z", "updatedAt": "2030-01-01T00:00:00Z", "useCount": 0
            }))
            .expect("a view")
        };
        let adopter = owner("new-uid", "ns");
        assert_eq!(
            may_adopt(Some(&view(true, "ns")), &o, &adopter, Some("fp")),
            Ok(())
        );
        let mut handed = view(true, "ns");
        handed.owner.uid = "new-uid".into();
        assert_eq!(
            may_adopt(Some(&handed), &o, &adopter, Some("fp")),
            Ok(()),
            "an adoption interrupted after the handover goes on"
        );
        handed.owner.uid = "third-uid".into();
        assert_eq!(
            may_adopt(Some(&handed), &o, &adopter, Some("fp")),
            Err(NotAdoptable::OtherOwner("old-uid.abc".into()))
        );
        assert_eq!(
            may_adopt(None, &o, &adopter, Some("fp")),
            Err(NotAdoptable::Unknown("old-uid.abc".into()))
        );
        assert_eq!(
            may_adopt(Some(&view(false, "ns")), &o, &adopter, Some("fp")),
            Err(NotAdoptable::Inactive("old-uid.abc".into()))
        );
        assert_eq!(
            may_adopt(Some(&view(true, "elsewhere")), &o, &adopter, Some("fp")),
            Err(NotAdoptable::OtherOwner("old-uid.abc".into()))
        );
        assert_eq!(
            may_adopt(Some(&view(true, "ns")), &o, &adopter, Some("fp-forged")),
            Err(NotAdoptable::NotInSecret("old-uid.abc".into()))
        );
    }
}
