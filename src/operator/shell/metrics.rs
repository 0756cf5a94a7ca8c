//! Prometheus metrics of the operator. Labels are bounded: error kinds, action names, store
//! operations and outcomes, condition states. Never a token.
//!
//! The one exception to "bounded", opt-in (`--per-token-metrics`, off by default): two gauges
//! per ApiToken, labelled with its namespace and name (`apitoken_namespace`, `apitoken`), for
//! alerts on tokens expiring soon and rotations overdue. Their series go when the ApiToken goes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::operator::core::status::Readiness;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    operation: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

/// One ApiToken, in the opt-in per-token gauges. Not `namespace`: Prometheus gives every scraped
/// series the operator pod's own `namespace` label, and would rename ours.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    apitoken_namespace: String,
    apitoken: String,
}

/// The opt-in per-token gauges (Unix seconds), and which series each ApiToken (by uid) has.
struct PerToken {
    expiry: Family<TokenLabels, Gauge>,
    next_rotation: Family<TokenLabels, Gauge>,
    series: Mutex<HashMap<String, TokenLabels>>,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn seconds() -> Histogram {
    // 1 ms .. ~16 s
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    reconcile_seconds: Histograms<ResultLabels>,
    actions: Family<ActionLabels, Counter>,
    sweeps: Counter,
    store_seconds: Histograms<StoreLabels>,
    tokens: Family<StateLabels, Gauge>,
    states: Mutex<HashMap<String, Readiness>>,
    per_token: Option<PerToken>,
}

impl Metrics {
    /// `per_token`: also export the per-ApiToken expiry and next-rotation gauges.
    pub fn new(per_token: bool) -> Arc<Self> {
        let mut registry = Registry::with_prefix("loop_operator");
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by result (ok or an error kind)",
            reconciles.clone(),
        );
        let reconcile_seconds: Histograms<ResultLabels> = Family::new_with_constructor(seconds);
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration by result",
            reconcile_seconds.clone(),
        );
        let actions = Family::<ActionLabels, Counter>::default();
        registry.register(
            "token_actions",
            "Actions taken: issue, rotate, update, expire, revoke, reregister, repair_secret",
            actions.clone(),
        );
        let sweeps = Counter::default();
        registry.register(
            "sweeps",
            "Sweeps completed (store registrations of this cluster checked against the live ApiTokens and Secrets; revocations count as token_actions{action=\"sweep_revoke\"})",
            sweeps.clone(),
        );
        let store_seconds: Histograms<StoreLabels> = Family::new_with_constructor(seconds);
        registry.register(
            "store_request_duration_seconds",
            "Calls to the Loop token store",
            store_seconds.clone(),
        );
        let tokens = Family::<StateLabels, Gauge>::default();
        registry.register(
            "api_tokens",
            "ApiTokens by state: ready, reconciling, stalled",
            tokens.clone(),
        );
        let per_token = per_token.then(|| {
            let expiry = Family::<TokenLabels, Gauge>::default();
            registry.register(
                "api_token_expiry_timestamp_seconds",
                "When the current token of an ApiToken expires (opt-in: --per-token-metrics)",
                expiry.clone(),
            );
            let next_rotation = Family::<TokenLabels, Gauge>::default();
            registry.register(
                "api_token_next_rotation_timestamp_seconds",
                "When the current token of an ApiToken is due to be replaced (opt-in: --per-token-metrics)",
                next_rotation.clone(),
            );
            PerToken {
                expiry,
                next_rotation,
                series: Mutex::default(),
            }
        });
        Arc::new(Metrics {
            registry,
            reconciles,
            reconcile_seconds,
            actions,
            sweeps,
            store_seconds,
            tokens,
            states: Mutex::default(),
            per_token,
        })
    }

    /// Record an ApiToken's expiry and next rotation (Unix seconds; `None` removes the series).
    /// Nothing when the per-token gauges are off.
    pub fn set_times(
        &self,
        uid: &str,
        namespace: &str,
        name: &str,
        expiry: Option<i64>,
        next_rotation: Option<i64>,
    ) {
        let Some(pt) = &self.per_token else {
            return;
        };
        let labels = TokenLabels {
            apitoken_namespace: namespace.to_owned(),
            apitoken: name.to_owned(),
        };
        for (family, value) in [(&pt.expiry, expiry), (&pt.next_rotation, next_rotation)] {
            match value {
                Some(v) => {
                    family.get_or_create(&labels).set(v);
                }
                None => {
                    family.remove(&labels);
                }
            }
        }
        pt.series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(uid.to_owned(), labels);
    }

    pub fn reconciled(&self, error: Option<&'static str>, seconds: f64) {
        let l = ResultLabels {
            result: error.unwrap_or("ok").to_owned(),
        };
        self.reconciles.get_or_create(&l).inc();
        self.reconcile_seconds.get_or_create(&l).observe(seconds);
    }

    pub fn action(&self, action: &'static str) {
        self.actions
            .get_or_create(&ActionLabels {
                action: action.to_owned(),
            })
            .inc();
    }

    pub fn swept(&self) {
        self.sweeps.inc();
    }

    pub fn store_call(&self, operation: &'static str, seconds: f64, outcome: &'static str) {
        self.store_seconds
            .get_or_create(&StoreLabels {
                operation: operation.to_owned(),
                outcome: outcome.to_owned(),
            })
            .observe(seconds);
    }

    /// Record the state of one ApiToken (by uid) and refresh the per-state gauge.
    pub fn set_state(&self, uid: &str, state: Readiness) {
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        if states.get(uid) == Some(&state) {
            return;
        }
        states.insert(uid.to_owned(), state);
        self.refresh(&states);
    }

    pub fn forget(&self, uid: &str) {
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        if states.remove(uid).is_some() {
            self.refresh(&states);
        }
        if let Some(pt) = &self.per_token {
            let mut series = pt.series.lock().unwrap_or_else(PoisonError::into_inner);
            // Unless an ApiToken of the same name (a new one, another uid) has the series now.
            if let Some(labels) = series.remove(uid)
                && !series.values().any(|l| *l == labels)
            {
                pt.expiry.remove(&labels);
                pt.next_rotation.remove(&labels);
            }
        }
    }

    fn refresh(&self, states: &HashMap<String, Readiness>) {
        for s in Readiness::ALL {
            let n = states.values().filter(|v| **v == s).count();
            self.tokens
                .get_or_create(&StateLabels {
                    state: s.as_str().to_owned(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_token_gauges_are_opt_in_and_go_with_their_api_token() {
        let off = Metrics::new(false);
        off.set_times("u", "ns", "a", Some(1_800_000_000), Some(1_700_000_000));
        let text = off.encode().expect("encodes");
        assert!(!text.contains("api_token_expiry"), "{text}");

        let on = Metrics::new(true);
        on.set_times("u", "ns", "a", Some(1_800_000_000), None);
        let text = on.encode().expect("encodes");
        assert!(
            text.contains(
                r#"loop_operator_api_token_expiry_timestamp_seconds{apitoken_namespace="ns",apitoken="a"} 1800000000"#
            ),
            "{text}"
        );
        assert!(
            !text.contains(r#"loop_operator_api_token_next_rotation_timestamp_seconds{"#),
            "no series without a scheduled rotation: {text}"
        );
        // Deleted and created again under the same name: the old uid's end keeps the new series.
        on.set_times("u2", "ns", "a", Some(1_900_000_000), None);
        on.forget("u");
        let text = on.encode().expect("encodes");
        assert!(text.contains(r#"apitoken="a"} 1900000000"#), "{text}");
        on.forget("u2");
        let text = on.encode().expect("encodes");
        assert!(!text.contains(r#"apitoken="a""#), "{text}");
    }
}
