//! The `ApiTokenPolicy` custom resource (`loop.dev/v1alpha1`, cluster-scoped): which namespaces
//! may ask for which scopes, and the limits their ApiTokens must keep.
//!
//! Pure types. The schema refuses what it can at apply time (scope patterns, durations, selector
//! operators); how several policies combine is [`crate::operator::core::policy`]'s. `crds/apitokenpolicy.yaml`
//! is generated from these types by `cargo run --bin crdgen -- apitokenpolicy`; a test fails
//! when it is stale.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::operator::resource::crd::DURATION_PATTERN;

/// A scope a policy may allow: `<resource>:read`, `<resource>:write` (which also allows
/// `<resource>:read`) or `<resource>:*`.
pub const ALLOWED_SCOPE_PATTERN: &str = r"^[a-z][a-z0-9_-]{0,62}:(read|write|\*)$";

/// Which namespaces may ask for which scopes. A namespace is governed by every ApiTokenPolicy
/// whose `namespaceSelector` selects it: a scope is allowed when any of them allows it, and
/// each limit is the strictest of them. Where no policy selects a namespace, the operator's
/// `--unselected-namespaces` decides (the chart's `tenancy.unselectedNamespaces`): `Allow`
/// (the default) or `Deny`.
// Each `printcolumn(...)` repeats `type_`; clippy mistakes that for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "loop.dev",
    version = "v1alpha1",
    kind = "ApiTokenPolicy",
    plural = "apitokenpolicies",
    shortname = "latp",
    category = "loop",
    doc = "Which namespaces may ask ApiTokens for which scopes, and the limits their ApiTokens keep (cluster-scoped).",
    printcolumn(
        name = "Enforcement",
        type_ = "string",
        json_path = ".spec.enforcement"
    ),
    printcolumn(
        name = "Allowed scopes",
        type_ = "string",
        json_path = ".spec.allowedScopes"
    ),
    printcolumn(
        name = "Max grace",
        type_ = "string",
        json_path = ".spec.maxGracePeriod"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ApiTokenPolicySpec {
    /// The namespaces this policy governs, by their labels (as a NetworkPolicy's
    /// `namespaceSelector`). `{}` selects every namespace. To name one namespace, match its
    /// `kubernetes.io/metadata.name` label.
    pub namespace_selector: NamespaceSelector,

    /// The scopes ApiTokens in the selected namespaces may ask for: `<resource>:read`,
    /// `<resource>:write` (which also allows `<resource>:read`) or `<resource>:*`. A scope is
    /// allowed when any policy selecting the namespace allows it. Without this field the
    /// policy sets only limits and takes no part in deciding scopes; `[]` allows none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 256),
        inner(regex(pattern = ALLOWED_SCOPE_PATTERN)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub allowed_scopes: Option<Vec<String>>,

    /// The longest `spec.rotation.gracePeriod` an ApiToken may ask for, as a duration such as
    /// `1h` or `0s`. With several policies the shortest applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub max_grace_period: Option<String>,

    /// Rules for `spec.expiry.after`, each token's lifetime in the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<ExpiryRule>,

    /// What happens to an ApiToken that existed before this policy made it a violation:
    /// `Report` (the default) makes it Stalled with reason `PolicyViolation` and keeps its token
    /// working; `Revoke` does the same and revokes its tokens in the store. Either way nothing
    /// new is issued for it until it complies. (New ApiTokens that violate a policy are refused
    /// at apply time by the chart's admission policy.)
    #[serde(default)]
    pub enforcement: Enforcement,
}

/// Whether an ApiToken outside its policies keeps its token.
#[derive(
    schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash,
)]
pub enum Enforcement {
    /// Stalled with reason `PolicyViolation`; the token keeps working.
    #[default]
    Report,
    /// Stalled with reason `PolicyViolation`, and its tokens are revoked.
    Revoke,
}

/// Rules for `spec.expiry.after`.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ExpiryRule {
    /// ApiTokens must set `spec.expiry.after`. With several policies, required when any
    /// requires it.
    #[serde(default)]
    pub required: bool,

    /// The longest `spec.expiry.after` an ApiToken may ask for, as a duration such as `2160h`.
    /// With several policies the shortest applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub max_after: Option<String>,
}

/// A label selector over namespaces (the shape of `metav1.LabelSelector`). Both parts must
/// match; an empty selector matches every namespace.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSelector {
    /// Labels the namespace must carry with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,

    /// Requirements on the namespace's labels, all of which must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub match_expressions: Vec<SelectorRequirement>,
}

/// One requirement of a namespace selector.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(self.operator == 'In' || self.operator == 'NotIn') == (has(self.values) && size(self.values) > 0)").message("In and NotIn need values; Exists and DoesNotExist take none"))]
pub struct SelectorRequirement {
    /// The label's key.
    #[schemars(length(min = 1, max = 317))]
    pub key: String,
    pub operator: SelectorOperator,
    /// The values for `In` and `NotIn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 63)))]
    pub values: Vec<String>,
}

/// How a selector requirement compares the label's value: `In`, `NotIn`, `Exists`, `DoesNotExist`.
#[derive(schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// The CRD as YAML, as committed in `crds/apitokenpolicy.yaml`.
pub fn crd_yaml() -> Result<String, serde_norway::Error> {
    use kube::CustomResourceExt;
    let mut crd = serde_json::to_value(ApiTokenPolicy::crd())
        .map_err(<serde_norway::Error as serde::ser::Error>::custom)?;
    crate::operator::resource::crd::unwrap_descriptions(&mut crd);
    let header = "# Generated by `cargo run --bin crdgen -- apitokenpolicy` from src/operator/resource/policy_crd.rs. Do not edit.\n";
    Ok(format!("{header}{}", serde_norway::to_string(&crd)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_crd_is_current() {
        let committed = include_str!("../../../crds/apitokenpolicy.yaml");
        assert!(
            committed == crd_yaml().unwrap(),
            "crds/apitokenpolicy.yaml is stale; regenerate it with: cargo run --bin crdgen -- apitokenpolicy > crds/apitokenpolicy.yaml"
        );
    }

    #[test]
    fn the_charts_crd_is_the_same() {
        assert!(
            include_str!("../../../charts/loop-token-operator/crds/apitokenpolicy.yaml")
                == include_str!("../../../crds/apitokenpolicy.yaml"),
            "charts/loop-token-operator/crds/apitokenpolicy.yaml differs; copy it: cp crds/apitokenpolicy.yaml charts/loop-token-operator/crds/"
        );
    }

    #[test]
    fn the_schema_says_what_the_api_server_must_enforce() {
        let yaml = crd_yaml().unwrap();
        for needle in [
            "scope: Cluster",
            ALLOWED_SCOPE_PATTERN,
            DURATION_PATTERN,
            "- Report\n",
            "- Revoke\n",
            "- DoesNotExist\n",
            "In and NotIn need values",
            "x-kubernetes-list-type: set",
            "- namespaceSelector\n",
        ] {
            assert!(
                yaml.contains(needle),
                "missing {needle:?} in the CRD:\n{yaml}"
            );
        }
    }

    #[test]
    fn an_almost_empty_policy_reports_and_restricts_nothing_but_its_namespaces() {
        let spec: ApiTokenPolicySpec =
            serde_json::from_value(serde_json::json!({"namespaceSelector": {}})).unwrap();
        assert_eq!(spec.enforcement, Enforcement::Report);
        assert_eq!(spec.allowed_scopes, None);
        assert_eq!(spec.max_grace_period, None);
    }
}
