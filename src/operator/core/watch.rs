//! What the controller's watches keep and what wakes it. Pure functions over objects; the
//! the runtime's wiring applies them to the watch streams.
//!
//! - ApiTokens are cached without managedFields and without the client-side-apply copy of the
//!   object, neither of which the operator reads;
//! - owned Secrets are cached in the form of [`crate::operator::core::secret::for_cache`] (fingerprints, not
//!   tokens);
//! - only spec, annotations, finalizers and deletion wake the controller ([`triggers`]);
//! - a namespace wakes the ApiTokens in it only when its labels (which policies select it) or
//!   its deletion change ([`namespace_triggers`]).

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;

use crate::operator::resource::crd::ApiToken;
use crate::operator::resource::names::LAST_APPLIED_ANNOTATION;

/// Prepare an ApiToken for the watch cache.
pub fn token_for_cache(t: &mut ApiToken) {
    t.metadata.managed_fields = None;
    t.annotations_mut().remove(LAST_APPLIED_ANNOTATION);
}

/// The changes to an ApiToken that wake the controller: a new object of the same name (uid),
/// its spec (generation), its annotations
/// (`loop.dev/rotate`, and any other, so that annotating an ApiToken asks for a reconcile, as
/// GitOps tools do), its finalizers and its deletion. Status-only changes, most of them the
/// operator's own status writes, do not: a status edited by someone else is put right at the
/// next periodic reconcile (`--usage-interval`).
pub fn triggers(t: &ApiToken) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    t.metadata.uid.hash(&mut h);
    t.metadata.generation.hash(&mut h);
    t.annotations().hash(&mut h);
    t.finalizers().hash(&mut h);
    t.metadata.deletion_timestamp.is_some().hash(&mut h);
    h.finish()
}

/// The changes to a namespace that concern its ApiTokens: its labels (ApiTokenPolicies select
/// namespaces by label) and its deletion.
pub fn namespace_triggers(n: &PartialObjectMeta<Namespace>) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    n.labels().hash(&mut h);
    n.metadata.deletion_timestamp.is_some().hash(&mut h);
    Some(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::resource::crd::fixtures::minimal;
    use crate::operator::resource::crd::{ApiTokenStatus, Condition};
    use crate::operator::resource::names::{FINALIZER, ROTATE_ANNOTATION};

    #[test]
    fn status_only_changes_do_not_wake_the_controller() {
        let t = minimal();
        let mut with_status = t.clone();
        with_status.status = Some(ApiTokenStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: "Issued".into(),
                message: "issued".into(),
                last_transition_time: "2026-11-29T12:00:00Z".into(),
                observed_generation: Some(1),
            }],
            ..ApiTokenStatus::default()
        });
        with_status.metadata.resource_version = Some("42".into());
        with_status
            .labels_mut()
            .insert("team".into(), "payments".into());
        assert_eq!(triggers(&t), triggers(&with_status));
    }

    #[test]
    fn spec_rotation_finalizer_deletion_and_recreation_wake_the_controller() {
        let t = minimal();
        let mut spec = t.clone();
        spec.metadata.generation = Some(2);
        let mut rotate = t.clone();
        rotate
            .annotations_mut()
            .insert(ROTATE_ANNOTATION.into(), "2026-11-29T12:00:00Z".into());
        let mut finalized = t.clone();
        finalized.finalizers_mut().push(FINALIZER.into());
        let mut deleting = finalized.clone();
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        let mut nudged = t.clone();
        nudged
            .annotations_mut()
            .insert("reconcile.fluxcd.io/requestedAt".into(), "now".into());
        let mut recreated = t.clone();
        recreated.metadata.uid = Some("another".into());
        let all = [
            &t, &spec, &rotate, &finalized, &deleting, &nudged, &recreated,
        ]
        .map(triggers);
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn only_labels_and_deletion_of_a_namespace_wake_its_apitokens() {
        let ns: PartialObjectMeta<Namespace> = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "team-a", "labels": {"team": "a"}, "resourceVersion": "1"},
        }))
        .expect("a namespace");
        let mut annotated = ns.clone();
        annotated
            .annotations_mut()
            .insert("note".into(), "x".into());
        annotated.metadata.resource_version = Some("2".into());
        assert_eq!(namespace_triggers(&ns), namespace_triggers(&annotated));
        let mut relabelled = ns.clone();
        relabelled.labels_mut().insert("team".into(), "b".into());
        let mut deleting = ns.clone();
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        assert_ne!(namespace_triggers(&ns), namespace_triggers(&relabelled));
        assert_ne!(namespace_triggers(&ns), namespace_triggers(&deleting));
    }

    #[test]
    fn the_cache_drops_what_is_never_read() {
        let mut t = minimal();
        t.annotations_mut()
            .insert(LAST_APPLIED_ANNOTATION.into(), "{...}".into());
        t.annotations_mut()
            .insert(ROTATE_ANNOTATION.into(), "r1".into());
        t.metadata.managed_fields = Some(vec![Default::default()]);
        token_for_cache(&mut t);
        assert_eq!(t.metadata.managed_fields, None);
        assert!(!t.annotations().contains_key(LAST_APPLIED_ANNOTATION));
        assert!(t.annotations().contains_key(ROTATE_ANNOTATION));
    }
}
