//! Tenancy in the shell. I/O module: watches ApiTokenPolicies and namespaces, wakes the
//! ApiTokens a change concerns, holds an ApiToken that [`policy::check`] finds outside its
//! policies, writes the policy digest that the chart's admission policy reads, and finds the
//! cluster's name.
//!
//! - **Watches.** Policies (when their CRD is installed; without it there are none and a
//!   warning says so) and namespaces' metadata (labels select, a deletion timestamp tells a
//!   namespace that is going) feed reflector caches. A policy change wakes every ApiToken in a
//!   namespace that the policy selects now or selected before; a namespace's label or deletion
//!   change wakes the ApiTokens in it. An ApiToken that still complies makes no write.
//! - **Holding.** An ApiToken outside its policies is Stalled with reason `PolicyViolation`:
//!   nothing is issued, rotated or updated for it, its current token is kept, and its tokens
//!   are revoked when a policy behind the broken rule says `enforcement: Revoke`. A Warning
//!   marks the moment it becomes a violation.
//! - **Digest.** With `--admission-configmap`, the leader keeps that ConfigMap's data equal to
//!   [`policy::digest`] of what it watches, written only when it changes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::stream::BoxStream;
use jiff::SignedDuration;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::PredicateConfig;
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::Notify;

use crate::operator::core::error::Error;
use crate::operator::core::policy::{self, Asked, Unselected, Verdict};
use crate::operator::core::vocabulary::Desired;
use crate::operator::core::watch::namespace_triggers;
use crate::operator::resource::crd::ApiToken;
use crate::operator::resource::names::{FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::operator::resource::policy_crd::{ApiTokenPolicy, NamespaceSelector};
use crate::operator::shell::cache::CachedToken;

/// How long the digest writer waits before trying a failed write again.
const DIGEST_RETRY: Duration = Duration::from_secs(10);
/// How often the digest writer reads the ConfigMap back, to put right an edit by someone else.
const DIGEST_RECHECK: Duration = Duration::from_secs(300);

/// Why tenancy cannot start.
#[derive(Debug, thiserror::Error)]
pub enum TenancyError {
    #[error(
        "cannot list ApiTokenPolicies: {}; grant get, list and watch on apitokenpolicies.loop.dev (the chart does)",
        crate::operator::core::error::describe(.0)
    )]
    Policies(#[source] kube::Error),
    #[error(
        "--cluster-name is not set and the uid of the kube-system namespace cannot be read: {}; set --cluster-name or grant get on namespaces/kube-system",
        crate::operator::core::error::describe(.0)
    )]
    ClusterName(#[source] kube::Error),
    #[error("--admission-configmap must be NAMESPACE/NAME, not {0:?}")]
    ConfigMapName(String),
}

/// Tenancy settings from the command line.
#[derive(Debug, Clone)]
pub struct TenancyConfig {
    pub unselected: Unselected,
    /// The ConfigMap (namespace, name) the digest is written to.
    pub admission_configmap: Option<(String, String)>,
}

/// `NAMESPACE/NAME` of the digest ConfigMap.
pub fn parse_configmap(s: &str) -> Result<(String, String), TenancyError> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_owned(), name.to_owned()))
        }
        _ => Err(TenancyError::ConfigMapName(s.to_owned())),
    }
}

/// What reconciles read: the policy and namespace caches.
pub struct Tenancy {
    /// `None` when the ApiTokenPolicy CRD is not installed: there are no policies.
    policies: Option<Store<ApiTokenPolicy>>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    ready: CachesReady,
    unselected: Unselected,
}

/// Resolves once both caches hold the cluster's state, for any number of waiters.
///
/// Not `Store::wait_until_ready` in each waiter: kube-runtime 5.0 keeps one waker per store
/// (a oneshot receiver behind a mutex), so of several reconciles waiting at once only the last
/// one polled was woken, and the others never ran again. One shared future waits on the stores
/// and wakes every clone.
type CachesReady = Shared<BoxFuture<'static, ()>>;

fn caches_ready(
    policies: Option<Store<ApiTokenPolicy>>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
) -> CachesReady {
    async move {
        if let Some(p) = policies {
            let _ = p.wait_until_ready().await;
        }
        let _ = namespaces.wait_until_ready().await;
    }
    .boxed()
    .shared()
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

impl Tenancy {
    fn new(
        policies: Option<Store<ApiTokenPolicy>>,
        namespaces: Store<PartialObjectMeta<Namespace>>,
        unselected: Unselected,
    ) -> Self {
        Tenancy {
            ready: caches_ready(policies.clone(), namespaces.clone()),
            policies,
            namespaces,
            unselected,
        }
    }

    /// Wait until both caches hold the cluster's state (at start-up only).
    async fn ready(&self) {
        self.ready.clone().await;
    }

    fn namespace(&self, ns: &str) -> Option<Arc<PartialObjectMeta<Namespace>>> {
        self.namespaces.get(&ObjectRef::new(ns))
    }

    /// Whether namespace `ns` is being deleted.
    pub fn namespace_terminating(&self, ns: &str) -> bool {
        self.namespace(ns)
            .is_some_and(|n| n.metadata.deletion_timestamp.is_some())
    }

    /// Whether namespace `ns` is being deleted, as the API server says now (the cache may lag:
    /// a namespace's deletion and the deletions of its objects arrive on separate watches).
    pub async fn namespace_terminating_now(
        &self,
        client: &Client,
        ns: &str,
    ) -> Result<bool, Error> {
        if self.namespace_terminating(ns) {
            return Ok(true);
        }
        let api: Api<Namespace> = Api::all(client.clone());
        let live = api
            .get_metadata_opt(ns)
            .await
            .map_err(|source| Error::GetNamespace { source })?;
        Ok(live.is_none_or(|n| n.metadata.deletion_timestamp.is_some()))
    }

    /// The uid of namespace `ns`, if known (to name it in an Event).
    pub fn namespace_uid(&self, ns: &str) -> Option<String> {
        self.namespace(ns).and_then(|n| n.metadata.uid.clone())
    }

    /// Check an ApiToken in namespace `ns`, which asks for `d`, against its policies. A
    /// namespace the cache does not hold yet (created a moment ago, its ApiToken's event first)
    /// is read live: judged without its labels, it would escape the policies that select it.
    pub async fn check(
        &self,
        client: &Client,
        t: &ApiToken,
        ns: &str,
        d: &Desired,
    ) -> Result<Verdict, Error> {
        self.ready().await;
        let found = match self.namespace(ns) {
            Some(n) => Some(n),
            None => Api::<PartialObjectMeta<Namespace>>::all(client.clone())
                .get_opt(ns)
                .await
                .map_err(|source| Error::GetNamespace { source })?
                .map(Arc::new),
        };
        let labels = found
            .as_ref()
            .and_then(|n| n.metadata.labels.as_ref())
            .unwrap_or(&NO_LABELS);
        let all = self.policies.as_ref().map(Store::state).unwrap_or_default();
        let rules = policy::combine(&policy::governing(all.iter().map(Arc::as_ref), labels));
        let asked = Asked {
            scopes: &d.scopes,
            grace: (t.spec.rotation.grace_period.as_str(), d.grace),
            expiry_after: requested_expiry(t),
        };
        Ok(policy::check(ns, rules.as_ref(), self.unselected, &asked))
    }
}

/// `spec.expiry.after`, which policies may require and cap (`None` without an expiry, or with
/// one the schema should have refused).
fn requested_expiry(t: &ApiToken) -> Option<(&str, SignedDuration)> {
    let after = t.spec.expiry.as_ref()?.after.as_str();
    let d = crate::operator::core::spec::parse_duration("expiry.after", after).ok()?;
    Some((after, d))
}

/// The watches behind [`Tenancy`], for the controller.
pub struct Watches {
    policies: Option<BoxStream<'static, Result<ApiTokenPolicy, watcher::Error>>>,
    namespaces: BoxStream<'static, Result<PartialObjectMeta<Namespace>, watcher::Error>>,
    policy_cache: Option<Store<ApiTokenPolicy>>,
    namespace_cache: Store<PartialObjectMeta<Namespace>>,
    ready: CachesReady,
    digest: Option<Digest>,
}

/// Set up the policy and namespace watches (`watch_namespace`: only that one).
pub async fn start(
    client: &Client,
    cfg: &TenancyConfig,
    watch_namespace: Option<&str>,
) -> Result<(Tenancy, Watches), TenancyError> {
    let changed = Arc::new(Notify::new());
    let (policy_cache, policies) = match policies_installed(client).await? {
        true => {
            let (cache, writer) = reflector::store::<ApiTokenPolicy>();
            let notify = Arc::clone(&changed);
            let stream = watcher(Api::all(client.clone()), watcher::Config::default())
                .default_backoff()
                .modify(|p: &mut ApiTokenPolicy| p.managed_fields_mut().clear())
                .reflect(writer)
                .touched_objects()
                .inspect(move |_| notify.notify_one())
                .boxed();
            (Some(cache), Some(stream))
        }
        false => (None, None),
    };
    let (namespace_cache, writer) = reflector::store::<PartialObjectMeta<Namespace>>();
    let config = match watch_namespace {
        Some(ns) => watcher::Config::default().fields(&format!("metadata.name={ns}")),
        None => watcher::Config::default(),
    };
    let notify = Arc::clone(&changed);
    let api: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
    let namespaces = watcher(api, config)
        .default_backoff()
        .modify(|n: &mut PartialObjectMeta<Namespace>| n.managed_fields_mut().clear())
        .reflect(writer)
        .touched_objects()
        .inspect(move |_| notify.notify_one())
        .predicate_filter(namespace_triggers, PredicateConfig::default())
        .boxed();
    let digest = cfg.admission_configmap.as_ref().map(|(ns, name)| Digest {
        api: Api::namespaced(client.clone(), ns),
        name: name.clone(),
        changed,
    });
    let tenancy = Tenancy::new(
        policy_cache.clone(),
        namespace_cache.clone(),
        cfg.unselected,
    );
    let watches = Watches {
        policies,
        namespaces,
        policy_cache,
        namespace_cache,
        ready: tenancy.ready.clone(),
        digest,
    };
    Ok((tenancy, watches))
}

/// Whether the ApiTokenPolicy CRD is served (one list call at start-up).
async fn policies_installed(client: &Client) -> Result<bool, TenancyError> {
    let api: Api<ApiTokenPolicy> = Api::all(client.clone());
    match api.list_metadata(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            tracing::warn!(
                "the ApiTokenPolicy CRD is not installed: no tenancy policy applies; apply crds/apitokenpolicy.yaml and restart the operator to use them"
            );
            Ok(false)
        }
        Err(e) => Err(TenancyError::Policies(e)),
    }
}

impl Watches {
    /// Wake ApiTokens on policy and namespace changes; `tokens` is the controller's own cache.
    /// Returns the controller and the digest writer to run beside it, if any.
    pub fn wire(
        self,
        controller: Controller<CachedToken>,
        tokens: Store<CachedToken>,
    ) -> (Controller<CachedToken>, Option<DigestWriter>) {
        let in_ns = tokens.clone();
        let mut controller = controller.watches_stream(self.namespaces, move |n| {
            tokens_in(&in_ns, &BTreeSet::from([n.name_any()]))
        });
        if let Some(stream) = self.policies {
            let namespaces = self.namespace_cache.clone();
            let seen: Mutex<HashMap<String, NamespaceSelector>> = Mutex::default();
            controller = controller.watches_stream(stream, move |p: ApiTokenPolicy| {
                let selector = p.spec.namespace_selector.clone();
                let before = seen
                    .lock()
                    .map(|mut s| s.insert(p.name_any(), selector.clone()))
                    .ok()
                    .flatten();
                let selected = selected_namespaces(&namespaces, [Some(selector), before]);
                tokens_in(&tokens, &selected)
            });
        }
        let digest = self
            .digest
            .map(|d| d.with_caches(self.policy_cache, self.namespace_cache, self.ready));
        (controller, digest)
    }
}

/// The namespaces any of these selectors selects.
fn selected_namespaces(
    namespaces: &Store<PartialObjectMeta<Namespace>>,
    selectors: impl IntoIterator<Item = Option<NamespaceSelector>>,
) -> BTreeSet<String> {
    let selectors: Vec<NamespaceSelector> = selectors.into_iter().flatten().collect();
    namespaces
        .state()
        .iter()
        .filter(|n| {
            let labels = n.metadata.labels.as_ref().unwrap_or(&NO_LABELS);
            selectors.iter().any(|s| policy::selects(s, labels))
        })
        .map(|n| n.name_any())
        .collect()
}

/// The ApiTokens (from the controller's cache) in these namespaces.
fn tokens_in(
    tokens: &Store<CachedToken>,
    namespaces: &BTreeSet<String>,
) -> Vec<ObjectRef<CachedToken>> {
    tokens
        .state()
        .iter()
        .filter(|t| t.namespace().is_some_and(|ns| namespaces.contains(&ns)))
        .map(|t| ObjectRef::from_obj(t.as_ref()))
        .collect()
}

/// Writes the policy digest into the admission policy's ConfigMap.
pub struct Digest {
    api: Api<ConfigMap>,
    name: String,
    changed: Arc<Notify>,
}

/// A [`Digest`] with the caches it reads.
pub struct DigestWriter {
    d: Digest,
    policies: Option<Store<ApiTokenPolicy>>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    ready: CachesReady,
}

impl Digest {
    fn with_caches(
        self,
        policies: Option<Store<ApiTokenPolicy>>,
        namespaces: Store<PartialObjectMeta<Namespace>>,
        ready: CachesReady,
    ) -> DigestWriter {
        DigestWriter {
            d: self,
            policies,
            namespaces,
            ready,
        }
    }
}

impl DigestWriter {
    fn current(&self) -> BTreeMap<String, String> {
        let all = self.policies.as_ref().map(Store::state).unwrap_or_default();
        let refs: Vec<&ApiTokenPolicy> = all.iter().map(Arc::as_ref).collect();
        let namespaces = self.namespaces.state();
        policy::digest(
            &refs,
            namespaces.iter().map(|n| {
                let labels = n.metadata.labels.as_ref().unwrap_or(&NO_LABELS);
                (n.name_any(), labels)
            }),
        )
    }

    /// What the ConfigMap holds now (`None` when it cannot be read: write it).
    async fn live(&self) -> Option<BTreeMap<String, String>> {
        match self.d.api.get_opt(&self.d.name).await {
            Ok(cm) => Some(cm.and_then(|c| c.data).unwrap_or_default()),
            Err(_) => None,
        }
    }

    /// Keep the ConfigMap equal to the digest until the future is dropped (with the
    /// controller). Writes only when the digest differs from what the ConfigMap holds, which
    /// is read at start and every [`DIGEST_RECHECK`] (to put right an edit by someone else).
    pub async fn run(self) {
        self.ready.clone().await;
        let mut written = self.live().await;
        loop {
            let now = self.current();
            if written.as_ref() != Some(&now) {
                match self.write(&now).await {
                    Ok(()) => written = Some(now),
                    Err(e) => {
                        tracing::warn!(configmap = %self.d.name, error = %crate::operator::core::error::describe(&e), "could not write the policy digest for the admission policy; retrying");
                        tokio::time::sleep(DIGEST_RETRY).await;
                        continue;
                    }
                }
            }
            tokio::select! {
                () = self.d.changed.notified() => {}
                () = tokio::time::sleep(DIGEST_RECHECK) => written = self.live().await,
            }
        }
    }

    async fn write(&self, data: &BTreeMap<String, String>) -> Result<(), kube::Error> {
        let body = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": self.d.name, "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE}},
            "data": data,
        });
        self.d
            .api
            .patch(
                &self.d.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await?;
        tracing::info!(configmap = %self.d.name, namespaces = data.keys().filter(|k| k.starts_with(policy::digest_keys::NAMESPACE_PREFIX)).count(), "policy digest written");
        Ok(())
    }
}

/// `--cluster-name`, or when it is not given the uid of the `kube-system` namespace: unique
/// per cluster, so two clusters sharing one store never record the same name.
pub async fn cluster_name(client: &Client, given: Option<String>) -> Result<String, TenancyError> {
    if let Some(name) = given {
        return Ok(name);
    }
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = api
        .get_metadata("kube-system")
        .await
        .map_err(TenancyError::ClusterName)?;
    Ok(ns.metadata.uid.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_configmap_is_named_namespace_slash_name() {
        assert_eq!(
            parse_configmap("loop-system/lto-policies").unwrap(),
            ("loop-system".into(), "lto-policies".into())
        );
        for bad in ["lto-policies", "/x", "x/", "a/b/c"] {
            assert!(parse_configmap(bad).is_err(), "{bad}");
        }
    }

    /// Every reconcile that starts before the caches are filled waits for them, and all of
    /// them go on once the caches are: kube's `Store::wait_until_ready` wakes only the last of
    /// several concurrent waiters (its oneshot receiver keeps one waker), which stalled all but
    /// one of the first reconciles after a restart, for good.
    #[tokio::test]
    async fn every_reconcile_waiting_for_the_caches_goes_on_once_they_are_filled() {
        let (policies, mut policy_writer) = reflector::store::<ApiTokenPolicy>();
        let (namespaces, mut ns_writer) = reflector::store::<PartialObjectMeta<Namespace>>();
        let tenancy = Arc::new(Tenancy::new(Some(policies), namespaces, Unselected::Allow));
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let t = Arc::clone(&tenancy);
                tokio::spawn(async move { t.ready().await })
            })
            .collect();
        // Let every waiter register before the caches fill.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        policy_writer.apply_watcher_event(&watcher::Event::Init);
        policy_writer.apply_watcher_event(&watcher::Event::InitDone);
        ns_writer.apply_watcher_event(&watcher::Event::Init);
        ns_writer.apply_watcher_event(&watcher::Event::InitDone);
        for w in waiters {
            let done = tokio::time::timeout(Duration::from_secs(10), w).await;
            assert!(done.is_ok_and(|j| j.is_ok()), "a waiter was never woken");
        }
    }

    #[test]
    fn policies_see_the_expiry_an_apitoken_asks_for() {
        use crate::operator::resource::crd::fixtures::api_token;
        let none = api_token(serde_json::json!({"scopes": ["orders:read"]}));
        assert_eq!(requested_expiry(&none), None);
        let asks =
            api_token(serde_json::json!({"scopes": ["orders:read"], "expiry": {"after": "2160h"}}));
        assert_eq!(
            requested_expiry(&asks),
            Some(("2160h", SignedDuration::from_hours(2160)))
        );
    }
}
