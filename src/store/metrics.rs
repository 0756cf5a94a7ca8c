//! Prometheus metrics of the store. Pure. Every label has a bounded set of values: route
//! templates (never raw paths; [`UNMATCHED_ROUTE`] for any path the router does not know), the
//! standard methods ([`method_label`]; [`OTHER_METHOD`] for any other name a client invents),
//! status codes, and fixed outcome names.

use std::sync::Arc;

use axum::http::Method;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The route label of a request no route matched.
pub const UNMATCHED_ROUTE: &str = "unmatched";
/// The method label of a method that is not one of RFC 9110's (plus PATCH).
pub const OTHER_METHOD: &str = "other";

/// The method label: a standard method's name, or [`OTHER_METHOD`].
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => OTHER_METHOD,
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum IntrospectOutcome {
    Active,
    Unknown,
    Revoked,
    Expired,
    Malformed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: IntrospectOutcome,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum CacheResult {
    Hit,
    Miss,
    /// The cache was off or untrusted; the database answered.
    Bypass,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    result: CacheResult,
}

/// Why the change listener's connection was replaced.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ListenerRestart {
    /// The connection was lost or failed.
    Lost,
    /// No heartbeat came back within the silence limit (a link that stopped delivering).
    Silent,
    /// A new connection could not be made or subscribed.
    Error,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RestartLabels {
    reason: ListenerRestart,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 50 µs .. ~1.6 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    introspections: Family<OutcomeLabels, Counter>,
    cache: Family<CacheLabels, Counter>,
    cache_trusted: Gauge,
    heartbeat_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    clock_offset: Gauge<f64, std::sync::atomic::AtomicU64>,
    skew: std::sync::OnceLock<Arc<crate::clock::Skew>>,
    usage_flush_failures: Counter,
    listener_restarts: Family<RestartLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("loop_store");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route template, method and status",
            requests.clone(),
        );
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route template",
            latency.clone(),
        );
        let introspections = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "introspections",
            "Introspection answers by outcome",
            introspections.clone(),
        );
        let cache = Family::<CacheLabels, Counter>::default();
        registry.register(
            "introspection_cache",
            "Introspection cache lookups by result",
            cache.clone(),
        );
        let cache_trusted = Gauge::default();
        registry.register(
            "introspection_cache_trusted",
            "1 when the cache may answer (a heartbeat came back through the change listener within the trust bound), 0 while changes by other processes could be missed",
            cache_trusted.clone(),
        );
        let heartbeat_age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "change_listener_heartbeat_age_seconds",
            "PostgreSQL: how long ago the latest heartbeat that came back through the change listener was sent (the cache answers while this is below --cache-trust-bound; NaN while none came back on the current connection)",
            heartbeat_age.clone(),
        );
        let clock_offset = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "database_clock_offset_seconds",
            "PostgreSQL: how far the database's clock is ahead of this process's (the store follows the database's clock, so that every replica agrees on expiry)",
            clock_offset.clone(),
        );
        let usage_flush_failures = Counter::default();
        registry.register(
            "usage_flush_failures",
            "Failed writes of coalesced usage figures",
            usage_flush_failures.clone(),
        );
        let listener_restarts = Family::<RestartLabels, Counter>::default();
        registry.register(
            "change_listener_restarts",
            "Change listener connections replaced, by reason (lost, silent: no heartbeat came back, error)",
            listener_restarts.clone(),
        );
        Arc::new(Metrics {
            registry,
            listener_restarts,
            requests,
            latency,
            introspections,
            cache,
            cache_trusted,
            heartbeat_age,
            clock_offset,
            skew: std::sync::OnceLock::new(),
            usage_flush_failures,
        })
    }

    /// Count a request: `route` is the matched template (`None`: no route matched).
    pub fn request(&self, route: Option<&str>, method: &Method, status: u16, seconds: f64) {
        let route = route.unwrap_or(UNMATCHED_ROUTE);
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                method: method_label(method),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(seconds);
    }

    pub fn introspection(&self, outcome: IntrospectOutcome) {
        self.introspections
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn cache(&self, result: CacheResult) {
        self.cache.get_or_create(&CacheLabels { result }).inc();
    }

    pub fn set_cache_trusted(&self, trusted: bool) {
        self.cache_trusted.set(i64::from(trusted));
    }

    pub fn listener_restart(&self, reason: ListenerRestart) {
        self.listener_restarts
            .get_or_create(&RestartLabels { reason })
            .inc();
    }

    /// `None`: no heartbeat has come back on the current listener connection.
    pub fn set_heartbeat_age(&self, age: Option<std::time::Duration>) {
        self.heartbeat_age
            .set(age.map_or(f64::NAN, |a| a.as_secs_f64()));
    }

    pub fn usage_flush_failed(&self) {
        self.usage_flush_failures.inc();
    }

    /// Report the database clock's offset from `skew` (PostgreSQL only).
    pub fn follow_skew(&self, skew: Arc<crate::clock::Skew>) {
        let _ = self.skew.set(skew);
    }

    /// OpenMetrics text.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        if let Some(skew) = self.skew.get() {
            // Milliseconds, exactly representable.
            #[allow(clippy::cast_precision_loss)]
            self.clock_offset.set(skew.offset_ms() as f64 / 1000.0);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
