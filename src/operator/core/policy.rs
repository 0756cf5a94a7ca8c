//! Tenancy decisions: which ApiTokenPolicies govern a namespace, how they combine, whether an
//! ApiToken keeps to them, and the digest the chart's admission policy reads. Pure: no I/O;
//! The shell's tenancy module feeds it the watched policies and namespaces.
//!
//! **How policies combine.** A namespace is governed by every policy whose `namespaceSelector`
//! selects it (its labels; `{}` selects all):
//! - a scope is allowed when **any** governing policy that lists `allowedScopes` allows it
//!   (`orders:write` also allows `orders:read`, `orders:*` both); policies without
//!   `allowedScopes` set only limits, and when none lists scopes, any scope is allowed;
//! - each limit is the **strictest** of the governing policies: the shortest `maxGracePeriod`,
//!   the shortest `expiry.maxAfter`, and `expiry.after` is required when any policy requires it;
//! - a violated rule revokes tokens when any policy behind that rule says `enforcement: Revoke`.
//!
//! Where no policy selects a namespace, [`Unselected`] decides: `Allow` (as before policies
//! existed) or `Deny`.
//!
//! **At apply time** the chart's ValidatingAdmissionPolicy refuses what this module would
//! report. CEL sees one parameter object at a time and could not combine several policies, so
//! the operator does the combining and writes the result as a [`digest`] (a ConfigMap's data):
//! for each governed namespace the id of its combination, and for each combination the allowed
//! scopes and the strictest limits with the policies behind them. Messages are worded the same
//! here and in the admission policy.

use std::collections::{BTreeMap, BTreeSet};

use jiff::SignedDuration;
use kube::ResourceExt;
use sha2::{Digest as _, Sha256};

use crate::operator::core::spec::parse_duration;
use crate::operator::resource::policy_crd::{
    ApiTokenPolicy, Enforcement, NamespaceSelector, SelectorOperator,
};

/// What happens in a namespace that no policy selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Unselected {
    /// Any scope and any limit, as before policies existed.
    #[default]
    Allow,
    /// No ApiToken at all.
    Deny,
}

/// Whether a namespace with these labels is selected.
pub fn selects(s: &NamespaceSelector, labels: &BTreeMap<String, String>) -> bool {
    let labelled = s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v));
    labelled
        && s.match_expressions.iter().all(|e| {
            let value = labels.get(&e.key);
            match e.operator {
                SelectorOperator::In => value.is_some_and(|v| e.values.contains(v)),
                SelectorOperator::NotIn => value.is_none_or(|v| !e.values.contains(v)),
                SelectorOperator::Exists => value.is_some(),
                SelectorOperator::DoesNotExist => value.is_none(),
            }
        })
}

/// A limit and the policy that sets it (the strictest one; the first by name on a tie).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub max: SignedDuration,
    /// As written in the policy (`1h`), for messages and for CEL's `duration()`.
    pub text: String,
    pub by: String,
}

/// The combined rules of the policies that govern one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Every governing policy, by name (sorted).
    pub policies: Vec<String>,
    /// The union of `allowedScopes`, and the policies that list them; `None` when no governing
    /// policy lists scopes (any scope is allowed).
    pub scopes: Option<(BTreeSet<String>, Vec<String>)>,
    pub max_grace: Option<Limit>,
    /// The policies that require `expiry.after`.
    pub expiry_required_by: Vec<String>,
    pub max_expiry: Option<Limit>,
    /// The policies that revoke on violation.
    pub revoking: BTreeSet<String>,
}

/// The policies among `all` that select a namespace with these labels, sorted by name.
pub fn governing<'a>(
    all: impl IntoIterator<Item = &'a ApiTokenPolicy>,
    labels: &BTreeMap<String, String>,
) -> Vec<&'a ApiTokenPolicy> {
    let mut found: Vec<&ApiTokenPolicy> = all
        .into_iter()
        .filter(|p| selects(&p.spec.namespace_selector, labels))
        .collect();
    found.sort_by_key(|p| p.name_any());
    found
}

/// The stricter of two limits (`current` wins a tie: policies come sorted by name).
fn stricter(current: Option<Limit>, text: Option<&str>, by: &str) -> Option<Limit> {
    let Some(max) = text.and_then(|t| parse_duration("policy limit", t).ok()) else {
        return current;
    };
    match current {
        Some(c) if c.max <= max => Some(c),
        _ => Some(Limit {
            max,
            text: text.unwrap_or_default().to_owned(),
            by: by.to_owned(),
        }),
    }
}

/// Combine the governing policies (sorted by name); `None` when there are none.
pub fn combine(governing: &[&ApiTokenPolicy]) -> Option<Rules> {
    if governing.is_empty() {
        return None;
    }
    let mut r = Rules {
        policies: Vec::new(),
        scopes: None,
        max_grace: None,
        expiry_required_by: Vec::new(),
        max_expiry: None,
        revoking: BTreeSet::new(),
    };
    for p in governing {
        let name = p.name_any();
        let spec = &p.spec;
        if let Some(allowed) = &spec.allowed_scopes {
            let (set, by) = r.scopes.get_or_insert_with(Default::default);
            set.extend(allowed.iter().cloned());
            by.push(name.clone());
        }
        r.max_grace = stricter(r.max_grace, spec.max_grace_period.as_deref(), &name);
        if let Some(e) = &spec.expiry {
            if e.required {
                r.expiry_required_by.push(name.clone());
            }
            r.max_expiry = stricter(r.max_expiry, e.max_after.as_deref(), &name);
        }
        if spec.enforcement == Enforcement::Revoke {
            r.revoking.insert(name.clone());
        }
        r.policies.push(name);
    }
    Some(r)
}

/// Whether `allowed` (a policy's scope) allows the requested `scope`.
pub fn allows(allowed: &str, scope: &str) -> bool {
    let Some((resource, access)) = scope.split_once(':') else {
        return false;
    };
    allowed == scope
        || allowed == format!("{resource}:*")
        || (access == "read" && allowed == format!("{resource}:write"))
}

/// What an ApiToken asks for, as far as policies care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked<'a> {
    pub scopes: &'a [String],
    /// `spec.rotation.gracePeriod` as written, and parsed.
    pub grace: (&'a str, SignedDuration),
    /// `spec.expiry.after` as written, and parsed, when set.
    pub expiry_after: Option<(&'a str, SignedDuration)>,
}

/// One broken rule. Its `Display` is the message of the condition, and the same words as the
/// admission policy's refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error(
        "no ApiTokenPolicy selects namespace {ns}, and ApiTokens are refused in namespaces that none selects"
    )]
    Unselected { ns: String },
    #[error("{} {} not allowed in namespace {ns} by {}", if .scopes.len() == 1 { "scope" } else { "scopes" }, .scopes.join(", "), policies(.by))]
    Scopes {
        scopes: Vec<String>,
        ns: String,
        by: Vec<String>,
    },
    #[error("gracePeriod {asked} exceeds {}, the longest {} allows in namespace {ns}", .limit.text, policies(std::slice::from_ref(&.limit.by)))]
    GracePeriod {
        asked: String,
        ns: String,
        limit: Limit,
    },
    #[error("expiry.after is required in namespace {ns} by {}", policies(.by))]
    ExpiryRequired { ns: String, by: Vec<String> },
    #[error("expiry.after {asked} exceeds {}, the longest {} allows in namespace {ns}", .limit.text, policies(std::slice::from_ref(&.limit.by)))]
    Expiry {
        asked: String,
        ns: String,
        limit: Limit,
    },
}

/// `ApiTokenPolicy a` or `ApiTokenPolicies a, b`: how messages name the policies behind a rule.
pub fn policies(names: &[String]) -> String {
    match names {
        [one] => format!("ApiTokenPolicy {one}"),
        many => format!("ApiTokenPolicies {}", many.join(", ")),
    }
}

/// The outcome of checking one ApiToken.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    pub violations: Vec<Violation>,
    /// Revoke its tokens (a policy behind a broken rule says `enforcement: Revoke`).
    pub revoke: bool,
}

impl Verdict {
    pub fn complies(&self) -> bool {
        self.violations.is_empty()
    }

    /// Every violation, one sentence each.
    pub fn message(&self) -> String {
        let all: Vec<String> = self.violations.iter().map(ToString::to_string).collect();
        all.join("; ")
    }
}

/// Check what an ApiToken in namespace `ns` asks for against the rules that govern it.
pub fn check(
    ns: &str,
    rules: Option<&Rules>,
    unselected: Unselected,
    asked: &Asked<'_>,
) -> Verdict {
    let Some(r) = rules else {
        return Verdict {
            violations: match unselected {
                Unselected::Allow => vec![],
                Unselected::Deny => vec![Violation::Unselected { ns: ns.to_owned() }],
            },
            revoke: false,
        };
    };
    let mut v = Verdict::default();
    let broken_by = |names: &[String], v: &mut Verdict| {
        v.revoke |= names.iter().any(|n| r.revoking.contains(n));
    };
    if let Some((allowed, by)) = &r.scopes {
        let refused: Vec<String> = asked
            .scopes
            .iter()
            .filter(|s| !allowed.iter().any(|a| allows(a, s)))
            .cloned()
            .collect();
        if !refused.is_empty() {
            broken_by(by, &mut v);
            v.violations.push(Violation::Scopes {
                scopes: refused,
                ns: ns.to_owned(),
                by: by.clone(),
            });
        }
    }
    if let Some(limit) = r.max_grace.as_ref().filter(|l| asked.grace.1 > l.max) {
        broken_by(std::slice::from_ref(&limit.by), &mut v);
        v.violations.push(Violation::GracePeriod {
            asked: asked.grace.0.to_owned(),
            ns: ns.to_owned(),
            limit: limit.clone(),
        });
    }
    check_expiry(ns, r, asked, &mut v);
    v
}

fn check_expiry(ns: &str, r: &Rules, asked: &Asked<'_>, v: &mut Verdict) {
    match asked.expiry_after {
        None if !r.expiry_required_by.is_empty() => {
            v.revoke |= r.expiry_required_by.iter().any(|n| r.revoking.contains(n));
            v.violations.push(Violation::ExpiryRequired {
                ns: ns.to_owned(),
                by: r.expiry_required_by.clone(),
            });
        }
        Some((text, after)) => {
            if let Some(limit) = r.max_expiry.as_ref().filter(|l| after > l.max) {
                v.revoke |= r.revoking.contains(&limit.by);
                v.violations.push(Violation::Expiry {
                    asked: text.to_owned(),
                    ns: ns.to_owned(),
                    limit: limit.clone(),
                });
            }
        }
        None => {}
    }
}

/// Keys of the digest (a ConfigMap's data) that the admission policy reads.
pub mod digest_keys {
    /// `ns.<namespace>`: the id of the combination governing it (absent: no policy selects it).
    pub const NAMESPACE_PREFIX: &str = "ns.";
    /// `<id>.scopes`: the allowed scopes, space-separated (absent: any scope).
    pub const SCOPES: &str = "scopes";
    /// `<id>.scopesBy`: `ApiTokenPolicy a` or `ApiTokenPolicies a, b`.
    pub const SCOPES_BY: &str = "scopesBy";
    pub const MAX_GRACE: &str = "maxGracePeriod";
    pub const MAX_GRACE_BY: &str = "maxGracePeriodBy";
    pub const EXPIRY_REQUIRED_BY: &str = "expiryRequiredBy";
    pub const MAX_EXPIRY: &str = "maxExpiry";
    pub const MAX_EXPIRY_BY: &str = "maxExpiryBy";
}

/// A short id for the combination of these policies (the same set, the same id).
fn combination_id(policies: &[String]) -> String {
    let hash = Sha256::digest(policies.join(",").as_bytes());
    hash.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// The digest of every combination in use: for each namespace (name and labels) that some
/// policy selects, its combination's id, and each combination's rules once.
pub fn digest<'a>(
    all: &[&'a ApiTokenPolicy],
    namespaces: impl IntoIterator<Item = (String, &'a BTreeMap<String, String>)>,
) -> BTreeMap<String, String> {
    use digest_keys as k;
    let mut data = BTreeMap::new();
    for (ns, labels) in namespaces {
        let Some(r) = combine(&governing(all.iter().copied(), labels)) else {
            continue;
        };
        let id = combination_id(&r.policies);
        data.insert(format!("{}{ns}", k::NAMESPACE_PREFIX), id.clone());
        let mut put = |key: &str, value: String| {
            data.insert(format!("{id}.{key}"), value);
        };
        if let Some((scopes, by)) = &r.scopes {
            let list: Vec<&str> = scopes.iter().map(String::as_str).collect();
            put(k::SCOPES, list.join(" "));
            put(k::SCOPES_BY, policies(by));
        }
        if let Some(l) = &r.max_grace {
            put(k::MAX_GRACE, l.text.clone());
            put(k::MAX_GRACE_BY, policies(std::slice::from_ref(&l.by)));
        }
        if !r.expiry_required_by.is_empty() {
            put(k::EXPIRY_REQUIRED_BY, policies(&r.expiry_required_by));
        }
        if let Some(l) = &r.max_expiry {
            put(k::MAX_EXPIRY, l.text.clone());
            put(k::MAX_EXPIRY_BY, policies(std::slice::from_ref(&l.by)));
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, spec: serde_json::Value) -> ApiTokenPolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "loop.dev/v1alpha1", "kind": "ApiTokenPolicy",
            "metadata": {"name": name}, "spec": spec,
        }))
        .expect("a valid ApiTokenPolicy")
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn scopes(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn asked(scopes: &[String]) -> Asked<'_> {
        Asked {
            scopes,
            grace: ("1h", SignedDuration::from_hours(1)),
            expiry_after: None,
        }
    }

    /// Check `scopes` in namespace `team-a` (labelled `team: a`) under `all`.
    fn verdict(all: &[ApiTokenPolicy], unselected: Unselected, a: &Asked<'_>) -> Verdict {
        let labels = labels(&[("team", "a"), ("kubernetes.io/metadata.name", "team-a")]);
        let rules = combine(&governing(all, &labels));
        check("team-a", rules.as_ref(), unselected, a)
    }

    #[test]
    fn selectors_match_labels_and_expressions_like_kubernetes() {
        let sel =
            |v: serde_json::Value| -> NamespaceSelector { serde_json::from_value(v).unwrap() };
        let l = labels(&[("team", "a"), ("env", "prod")]);
        assert!(selects(&sel(serde_json::json!({})), &l), "{{}} selects all");
        assert!(selects(
            &sel(serde_json::json!({"matchLabels": {"team": "a"}})),
            &l
        ));
        assert!(!selects(
            &sel(serde_json::json!({"matchLabels": {"team": "b"}})),
            &l
        ));
        let expr = |op: &str, values: &[&str]| {
            sel(
                serde_json::json!({"matchExpressions": [{"key": "env", "operator": op, "values": values}]}),
            )
        };
        assert!(selects(&expr("In", &["prod", "dev"]), &l));
        assert!(!selects(&expr("NotIn", &["prod"]), &l));
        assert!(
            selects(&expr("NotIn", &["prod"]), &labels(&[])),
            "NotIn holds without the label"
        );
        assert!(selects(&expr("Exists", &[]), &l));
        assert!(!selects(&expr("DoesNotExist", &[]), &l));
        // Both parts must hold.
        let both = sel(serde_json::json!({"matchLabels": {"team": "a"},
            "matchExpressions": [{"key": "env", "operator": "In", "values": ["dev"]}]}));
        assert!(!selects(&both, &l));
    }

    #[test]
    fn write_allows_read_and_a_star_allows_both() {
        assert!(allows("orders:write", "orders:read"));
        assert!(allows("orders:write", "orders:write"));
        assert!(!allows("orders:read", "orders:write"));
        assert!(allows("orders:*", "orders:write"));
        assert!(allows("orders:*", "orders:read"));
        assert!(!allows("orders:*", "ordersx:read"));
        assert!(!allows("customers:*", "orders:read"));
    }

    #[test]
    fn a_scope_is_allowed_when_any_governing_policy_allows_it() {
        let all = [
            policy(
                "base",
                serde_json::json!({"namespaceSelector": {}, "allowedScopes": ["orders:read"]}),
            ),
            policy(
                "team-a",
                serde_json::json!({"namespaceSelector": {"matchLabels": {"team": "a"}}, "allowedScopes": ["customers:*"]}),
            ),
            policy(
                "team-b",
                serde_json::json!({"namespaceSelector": {"matchLabels": {"team": "b"}}, "allowedScopes": ["payments:read"]}),
            ),
        ];
        let ok = scopes(&["orders:read", "customers:write"]);
        assert!(verdict(&all, Unselected::Allow, &asked(&ok)).complies());
        let bad = scopes(&["orders:write", "payments:read", "customers:read"]);
        let v = verdict(&all, Unselected::Allow, &asked(&bad));
        assert_eq!(
            v.violations,
            vec![Violation::Scopes {
                scopes: scopes(&["orders:write", "payments:read"]),
                ns: "team-a".into(),
                by: scopes(&["base", "team-a"]),
            }]
        );
        assert_eq!(
            v.message(),
            "scopes orders:write, payments:read not allowed in namespace team-a by ApiTokenPolicies base, team-a"
        );
        assert!(!v.revoke, "Report is the default");
    }

    #[test]
    fn policies_without_allowed_scopes_set_only_limits() {
        let limits_only = policy(
            "limits",
            serde_json::json!({"namespaceSelector": {}, "maxGracePeriod": "30m"}),
        );
        let any = scopes(&["payments:read"]);
        assert!(
            verdict(
                std::slice::from_ref(&limits_only),
                Unselected::Allow,
                &asked(&scopes(&["payments:read"]))
            )
            .violations
            .iter()
            .all(|v| !matches!(v, Violation::Scopes { .. }))
        );
        // With a policy that lists scopes, the limits-only one adds none.
        let team = policy(
            "team-a",
            serde_json::json!({"namespaceSelector": {}, "allowedScopes": ["orders:read"]}),
        );
        let v = verdict(&[limits_only, team], Unselected::Allow, &asked(&any));
        assert!(
            matches!(&v.violations[0], Violation::Scopes { by, .. } if by == &scopes(&["team-a"])),
            "{v:?}"
        );
        // An empty list allows nothing.
        let none = policy(
            "none",
            serde_json::json!({"namespaceSelector": {}, "allowedScopes": []}),
        );
        assert!(
            !verdict(
                &[none],
                Unselected::Allow,
                &asked(&scopes(&["orders:read"]))
            )
            .complies()
        );
    }

    #[test]
    fn limits_take_the_strictest_and_name_the_policy_that_sets_it() {
        let all = [
            policy(
                "loose",
                serde_json::json!({"namespaceSelector": {}, "maxGracePeriod": "2h",
                "expiry": {"maxAfter": "2160h"}}),
            ),
            policy(
                "strict",
                serde_json::json!({"namespaceSelector": {"matchLabels": {"team": "a"}},
                "maxGracePeriod": "30m", "expiry": {"required": true, "maxAfter": "720h"}, "enforcement": "Revoke"}),
            ),
        ];
        let s = scopes(&["orders:read"]);
        let v = verdict(&all, Unselected::Allow, &asked(&s));
        assert_eq!(
            v.message(),
            "gracePeriod 1h exceeds 30m, the longest ApiTokenPolicy strict allows in namespace team-a; \
             expiry.after is required in namespace team-a by ApiTokenPolicy strict"
        );
        assert!(v.revoke, "strict revokes");
        let mut a = asked(&s);
        a.grace = ("30m", SignedDuration::from_mins(30));
        a.expiry_after = Some(("1000h", SignedDuration::from_hours(1000)));
        let v = verdict(&all, Unselected::Allow, &a);
        assert_eq!(
            v.message(),
            "expiry.after 1000h exceeds 720h, the longest ApiTokenPolicy strict allows in namespace team-a"
        );
        a.expiry_after = Some(("720h", SignedDuration::from_hours(720)));
        assert!(verdict(&all, Unselected::Allow, &a).complies());
    }

    #[test]
    fn revoke_applies_only_when_a_revoking_policy_is_behind_the_broken_rule() {
        let all = [
            policy(
                "grace",
                serde_json::json!({"namespaceSelector": {}, "maxGracePeriod": "30m", "enforcement": "Revoke"}),
            ),
            policy(
                "scopes",
                serde_json::json!({"namespaceSelector": {}, "allowedScopes": ["orders:read"]}),
            ),
        ];
        let s = scopes(&["payments:read"]);
        let mut a = asked(&s);
        a.grace = ("30m", SignedDuration::from_mins(30));
        let v = verdict(&all, Unselected::Allow, &a);
        assert!(
            !v.revoke && !v.complies(),
            "only the Report policy's rule is broken: {v:?}"
        );
        a.grace = ("31m", SignedDuration::from_mins(31));
        assert!(
            verdict(&all, Unselected::Allow, &a).revoke,
            "now the Revoke policy's rule is broken too"
        );
    }

    #[test]
    fn an_unselected_namespace_is_allowed_or_denied_as_configured() {
        let elsewhere = [policy(
            "b",
            serde_json::json!({"namespaceSelector": {"matchLabels": {"team": "b"}}, "allowedScopes": []}),
        )];
        let s = scopes(&["orders:read"]);
        assert!(verdict(&elsewhere, Unselected::Allow, &asked(&s)).complies());
        let v = verdict(&elsewhere, Unselected::Deny, &asked(&s));
        assert_eq!(
            v.message(),
            "no ApiTokenPolicy selects namespace team-a, and ApiTokens are refused in namespaces that none selects"
        );
        assert!(!v.revoke);
    }

    #[test]
    fn the_digest_holds_each_combination_once() {
        let all = [
            policy(
                "base",
                serde_json::json!({"namespaceSelector": {}, "allowedScopes": ["orders:read"], "maxGracePeriod": "2h"}),
            ),
            policy(
                "team-a",
                serde_json::json!({"namespaceSelector": {"matchLabels": {"team": "a"}},
                "allowedScopes": ["customers:*"], "maxGracePeriod": "1h", "expiry": {"required": true, "maxAfter": "720h"}}),
            ),
        ];
        let refs: Vec<&ApiTokenPolicy> = all.iter().collect();
        let (a, a2, other) = (
            labels(&[("team", "a")]),
            labels(&[("team", "a")]),
            labels(&[]),
        );
        let data = digest(
            &refs,
            [
                ("a1".to_owned(), &a),
                ("a2".to_owned(), &a2),
                ("x".to_owned(), &other),
            ],
        );
        let id = data["ns.a1"].clone();
        assert_eq!(data["ns.a2"], id, "one combination, one id");
        assert_ne!(data["ns.x"], id);
        assert_eq!(data[&format!("{id}.scopes")], "customers:* orders:read");
        assert_eq!(
            data[&format!("{id}.scopesBy")],
            "ApiTokenPolicies base, team-a"
        );
        assert_eq!(data[&format!("{id}.maxGracePeriod")], "1h");
        assert_eq!(
            data[&format!("{id}.maxGracePeriodBy")],
            "ApiTokenPolicy team-a"
        );
        assert_eq!(
            data[&format!("{id}.expiryRequiredBy")],
            "ApiTokenPolicy team-a"
        );
        assert_eq!(data[&format!("{id}.maxExpiry")], "720h");
        let x = &data["ns.x"];
        assert_eq!(data[&format!("{x}.scopesBy")], "ApiTokenPolicy base");
        assert!(!data.contains_key(&format!("{x}.expiryRequiredBy")));
        assert_eq!(data.len(), 3 + 7 + 4, "{data:#?}");
        // No policy at all: nothing (every namespace unselected).
        assert!(digest(&[], [("a1".to_owned(), &a)]).is_empty());
    }
}
