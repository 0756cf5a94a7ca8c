//! The form the controller's watch caches keep objects in (issue 16: memory at 10,000
//! ApiTokens).
//!
//! kube-runtime's reflector, owner mapping and scheduler read only an object's name and
//! namespace; a reconcile reads the whole object, once. So:
//!
//! - an ApiToken is cached as a [`CachedToken`]: an `ObjectMeta` with its name and namespace
//!   (what kube-runtime reads), and everything else as one buffer of compact JSON, decoded when
//!   a reconcile asks for it ([`CachedToken::decode`]);
//! - an owned Secret is cached as compact JSON only, in the operator's own [`SecretCache`]
//!   keyed by namespace and name (the controller needs no kube-runtime store of them);
//! - what wakes the controller is decided by [`Changes`], which keeps one hash per ApiToken
//!   (kube-runtime's predicate filter keeps a key of three strings for each: name, namespace
//!   and uid).
//!
//! The JSON is LZ4-compressed against a dictionary: a typical object of its kind as the
//! operator leaves it ([`TOKEN_DICTIONARY`], [`SECRET_DICTIONARY`]), so what is kept is mostly
//! what makes the object unique (names, uids, times, fingerprints).
//!
//! Why: a typed object costs an allocation per string and per list, a B-tree node of over 500
//! bytes per non-empty map, and an `ObjectMeta` of 360 bytes before any of them. The heap
//! profile of 2,000 converged ApiTokens put a cached Secret at about 2.9 KB and a cached
//! ApiToken at about 1.9 KB; as JSON each is one allocation of its length (about 850 bytes),
//! and compressed a quarter to a third of that. What the caches keep is unchanged: the same
//! prepared objects (no managedFields, fingerprints in place of tokens), so every decision
//! reads what it read before.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, LazyLock, PoisonError, RwLock};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::runtime::watcher;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use crate::operator::core::{secret, watch};
use crate::operator::resource::crd::ApiToken;
use crate::operator::resource::names::secret_annotations as ann;
use crate::operator::resource::names::{
    API_TOKEN_LABEL, DEFAULT_GRACE_PERIOD, DEFAULT_SECRET_KEY, FINALIZER, MANAGED_BY_LABEL,
    MANAGED_BY_VALUE, ROTATE_ANNOTATION,
};

/// An ApiToken as the controller's cache keeps it: name and namespace in `metadata`, the hash
/// of what wakes the controller ([`watch::triggers`]), the rest as compressed JSON.
#[derive(Clone)]
pub struct CachedToken {
    metadata: ObjectMeta,
    trigger: u64,
    body: Box<[u8]>,
}

/// Why a cached object could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("decompressing it failed")]
    Unpack(#[from] lz4_flex::block::DecompressError),
    #[error("decoding its JSON failed")]
    Json(#[from] serde_json::Error),
}

/// `obj` as compressed JSON, or an empty buffer if it cannot be encoded (not expected for these
/// kinds: string keys, derived `Serialize`): that fails to decode, and a reconcile then reads
/// the object from the API server instead.
fn encode<K: Resource<DynamicType = ()> + Serialize>(
    obj: &K,
    dictionary: &[u8],
    name: Option<&str>,
) -> Box<[u8]> {
    match serde_json::to_vec(obj) {
        Ok(json) => {
            lz4_flex::block::compress_prepend_size_with_dict(&json, dictionary).into_boxed_slice()
        }
        Err(e) => {
            tracing::error!(kind = %K::kind(&()), name, error = %e, "could not cache an object");
            Box::default()
        }
    }
}

impl CachedToken {
    /// Prepare `t` for the cache ([`watch::token_for_cache`]) and compact it.
    pub fn new(mut t: ApiToken) -> Self {
        watch::token_for_cache(&mut t);
        let trigger = watch::triggers(&t);
        let metadata = ObjectMeta {
            name: t.metadata.name.take(),
            namespace: t.metadata.namespace.take(),
            ..ObjectMeta::default()
        };
        CachedToken {
            body: encode(&t, &TOKEN_DICTIONARY, metadata.name.as_deref()),
            metadata,
            trigger,
        }
    }

    /// The ApiToken as it was cached.
    pub fn decode(&self) -> Result<ApiToken, CacheError> {
        let mut t: ApiToken = unpack(&self.body, &TOKEN_DICTIONARY)?;
        t.metadata.name.clone_from(&self.metadata.name);
        t.metadata.namespace.clone_from(&self.metadata.namespace);
        Ok(t)
    }
}

/// An object from what [`encode`] kept.
fn unpack<K: DeserializeOwned>(body: &[u8], dictionary: &[u8]) -> Result<K, CacheError> {
    let json = lz4_flex::block::decompress_size_prepended_with_dict(body, dictionary)?;
    Ok(serde_json::from_slice(&json)?)
}

/// `value` as `K` would be written (its field order), for a dictionary; empty if it is not a
/// `K` (then nothing is lost but the compression).
fn typical<K: Serialize + DeserializeOwned>(value: serde_json::Value) -> Vec<u8> {
    serde_json::from_value::<K>(value)
        .and_then(|k| serde_json::to_vec(&k))
        .unwrap_or_default()
}

const UID: &str = "00000000-0000-4000-8000-000000000000";
const TIME: &str = "2026-01-01T00:00:00Z";
const FINGERPRINT: &str = "000000000000";

/// A converged ApiToken as the token cache keeps it (no name or namespace: see
/// [`CachedToken`]).
pub static TOKEN_DICTIONARY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    typical::<ApiToken>(serde_json::json!({
        "apiVersion": "loop.dev/v1alpha1", "kind": "ApiToken",
        "metadata": {
            "annotations": {ROTATE_ANNOTATION: TIME},
            "creationTimestamp": TIME, "finalizers": [FINALIZER], "generation": 1,
            "resourceVersion": "100000", "uid": UID,
        },
        "spec": {"displayName": "", "scopes": ["orders:read", "customers:write"],
            "secret": {"key": DEFAULT_SECRET_KEY}, "rotation": {"gracePeriod": DEFAULT_GRACE_PERIOD}},
        "status": {
            "observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Issued",
                "message": format!("token {FINGERPRINT} is in Secret  and active in the Loop token store with scopes "),
                "lastTransitionTime": "2026-01-01T00:00:00.000000000Z", "observedGeneration": 1}],
            "tokenId": format!("{UID}.0000000000"), "fingerprint": FINGERPRINT,
            "issuedAt": TIME, "secretName": "", "lastRotationRequest": TIME, "useCount": 0,
        },
    }))
});

/// An owned Secret as [`secret::for_cache`] leaves it.
pub static SECRET_DICTIONARY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let fingerprint = format!("loop.dev/fingerprint:{FINGERPRINT}");
    typical::<Secret>(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {
            "annotations": {
                ann::FINGERPRINT: FINGERPRINT, ann::ISSUED_AT: TIME, ann::RETIRED_TOKEN_IDS: "",
                ann::TOKEN_ID: format!("{UID}.0000000000"), ann::TOKEN_KEY: DEFAULT_SECRET_KEY,
                ann::USAGE_COUNTED_FROM: TIME, ann::PREVIOUS_TOKEN_ID: format!("{UID}.0000000000"),
            },
            "creationTimestamp": TIME,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE, API_TOKEN_LABEL: ""},
            "name": "", "namespace": "",
            "ownerReferences": [{"apiVersion": "loop.dev/v1alpha1", "kind": "ApiToken",
                "name": "", "uid": UID, "controller": true, "blockOwnerDeletion": true}],
            "resourceVersion": "100000", "uid": UID,
        },
        "data": {DEFAULT_SECRET_KEY: k8s_openapi::ByteString(fingerprint.into_bytes())},
        "type": "Opaque",
    }))
});

/// A watch event about an ApiToken as one about its cached form.
pub fn compact_event(event: watcher::Event<ApiToken>) -> watcher::Event<CachedToken> {
    use watcher::Event as E;
    match event {
        E::Apply(t) => E::Apply(CachedToken::new(t)),
        E::Delete(t) => E::Delete(CachedToken::new(t)),
        E::Init => E::Init,
        E::InitApply(t) => E::InitApply(CachedToken::new(t)),
        E::InitDone => E::InitDone,
    }
}

/// Identity and size only: the body is not printed.
impl fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedToken")
            .field("namespace", &self.metadata.namespace)
            .field("name", &self.metadata.name)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

/// Read as an ApiToken, then compacted (kube-runtime's controller asks for `DeserializeOwned`).
impl<'de> Deserialize<'de> for CachedToken {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ApiToken::deserialize(d).map(CachedToken::new)
    }
}

/// The ApiToken kind: kube-runtime's requests, object references and owner matching see an
/// ApiToken.
impl Resource for CachedToken {
    type DynamicType = ();
    type Scope = <ApiToken as Resource>::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        ApiToken::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        ApiToken::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        ApiToken::version(dt)
    }

    fn api_version(dt: &()) -> Cow<'_, str> {
        ApiToken::api_version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        ApiToken::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The hash of an object's namespace and name.
fn key_of(meta: &ObjectMeta) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    meta.namespace.hash(&mut h);
    meta.name.hash(&mut h);
    h.finish()
}

/// Which watch events wake the controller: an ApiToken seen for the first time, or whose
/// trigger hash changed. One `u64` per ApiToken, keyed by the hash of its namespace
/// and name: two ApiTokens whose keys collide only wake each other more often, never less
/// (each sees the other's trigger as a change).
#[derive(Debug, Default)]
pub struct Changes {
    seen: HashMap<u64, u64>,
    /// During a re-list: what was seen before it (dropped at its end, with the ApiTokens
    /// deleted meanwhile).
    before: Option<HashMap<u64, u64>>,
}

impl Changes {
    /// The ApiToken to reconcile for this event, if any.
    pub fn wake(&mut self, event: watcher::Event<CachedToken>) -> Option<CachedToken> {
        use watcher::Event as E;
        match event {
            E::Apply(o) => {
                let before = self.seen.insert(key_of(&o.metadata), o.trigger);
                (before != Some(o.trigger)).then_some(o)
            }
            E::Delete(o) => {
                self.seen.remove(&key_of(&o.metadata));
                None
            }
            E::Init => {
                let seen = std::mem::take(&mut self.seen);
                match self.before.as_mut() {
                    // A re-list that failed part way starts again: what it saw is the newest.
                    Some(before) => before.extend(seen),
                    None => self.before = Some(seen),
                }
                None
            }
            E::InitApply(o) => {
                let key = key_of(&o.metadata);
                self.seen.insert(key, o.trigger);
                let before = self.before.as_ref().and_then(|b| b.get(&key)).copied();
                (before != Some(o.trigger)).then_some(o)
            }
            E::InitDone => {
                self.before = None;
                None
            }
        }
    }
}

/// The owned Secrets as the controller's watch last saw them, prepared by
/// [`secret::for_cache`] and kept as compact JSON, by namespace and name. Filled like
/// kube-runtime's reflector: a re-list replaces the whole set when it is complete.
#[derive(Clone, Default)]
pub struct SecretCache {
    inner: Arc<RwLock<Sets>>,
}

#[derive(Debug, Default)]
struct Sets {
    live: HashMap<Box<str>, Box<[u8]>>,
    /// Being filled by a re-list.
    next: Option<HashMap<Box<str>, Box<[u8]>>>,
}

fn encode_secret(s: &Secret) -> Box<[u8]> {
    encode(s, &SECRET_DICTIONARY, s.metadata.name.as_deref())
}

fn secret_key(namespace: &str, name: &str) -> Box<str> {
    format!("{namespace}/{name}").into_boxed_str()
}

fn key_of_secret(s: &Secret) -> Box<str> {
    secret_key(
        s.metadata.namespace.as_deref().unwrap_or_default(),
        s.metadata.name.as_deref().unwrap_or_default(),
    )
}

impl SecretCache {
    /// Apply a watch event (its Secrets already prepared by [`secret::for_cache`]).
    pub fn apply(&self, event: &watcher::Event<Secret>) {
        use watcher::Event as E;
        let mut sets = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        match event {
            E::Apply(s) => {
                sets.live.insert(key_of_secret(s), encode_secret(s));
            }
            E::Delete(s) => {
                sets.live.remove(&key_of_secret(s));
            }
            E::Init => sets.next = Some(HashMap::new()),
            E::InitApply(s) => {
                if let Some(next) = sets.next.as_mut() {
                    next.insert(key_of_secret(s), encode_secret(s));
                }
            }
            E::InitDone => {
                if let Some(next) = sets.next.take() {
                    sets.live = next;
                }
            }
        }
    }

    /// The cached Secret `namespace/name`, if the watch has seen it.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Result<Secret, CacheError>> {
        let sets = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        sets.live
            .get(&secret_key(namespace, name))
            .map(|body| unpack(body, &SECRET_DICTIONARY))
    }

    /// Secrets cached.
    fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .live
            .len()
    }
}

/// The count only: the bodies are not printed.
impl fmt::Debug for SecretCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretCache")
            .field("secrets", &self.len())
            .finish()
    }
}

/// Prepare the Secrets of a watch event for the cache and the controller (no token leaves
/// the watch), and record them in `cache`.
pub fn secret_event(
    cache: &SecretCache,
    mut event: watcher::Event<Secret>,
) -> watcher::Event<Secret> {
    use watcher::Event as E;
    if let E::Apply(s) | E::Delete(s) | E::InitApply(s) = &mut event {
        secret::for_cache(s);
    }
    cache.apply(&event);
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::resource::crd::fixtures::minimal;
    use crate::operator::resource::crd::{ApiTokenStatus, Condition};
    use crate::operator::resource::names::{LAST_APPLIED_ANNOTATION, ROTATE_ANNOTATION};
    use crate::token::Token;
    use kube::ResourceExt;
    use kube::runtime::reflector::ObjectRef;
    use watcher::Event as E;

    fn token() -> ApiToken {
        let mut t = minimal();
        t.metadata.uid = Some("3f1c6d5e-0000-4000-8000-000000000001".into());
        t.metadata.resource_version = Some("42".into());
        t.metadata.generation = Some(3);
        t.metadata.finalizers = Some(vec!["loop.dev/revoke".into()]);
        t.annotations_mut()
            .insert(ROTATE_ANNOTATION.into(), "r1".into());
        t.labels_mut().insert("team".into(), "payments".into());
        t.status = Some(ApiTokenStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: "Issued".into(),
                message: "token abc is in Secret a".into(),
                last_transition_time: "2026-11-29T12:00:00Z".into(),
                observed_generation: Some(3),
            }],
            token_id: Some("id-1".into()),
            ..ApiTokenStatus::default()
        });
        t
    }

    /// The JSON a body holds.
    fn plain(body: &[u8], dictionary: &[u8]) -> String {
        let json = lz4_flex::block::decompress_size_prepended_with_dict(body, dictionary)
            .expect("decompresses");
        String::from_utf8(json).expect("utf-8")
    }

    #[test]
    fn the_dictionaries_are_typical_objects_of_their_kind() {
        let t: ApiToken = serde_json::from_slice(&TOKEN_DICTIONARY).expect("an ApiToken");
        assert_eq!(t.finalizers(), [FINALIZER]);
        let s: Secret = serde_json::from_slice(&SECRET_DICTIONARY).expect("a Secret");
        assert!(s.annotations().contains_key(ann::TOKEN_ID));
    }

    #[test]
    fn a_cached_apitoken_keeps_little_more_than_what_makes_it_unique() {
        let mut t = token();
        t.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::UNIX_EPOCH,
        ));
        let json = serde_json::to_vec(&t).expect("encodes");
        let c = CachedToken::new(t);
        assert!(
            c.body.len() * 2 < json.len(),
            "{} bytes kept for {} of JSON",
            c.body.len(),
            json.len()
        );
    }

    fn named(name: &str) -> ApiToken {
        let mut t = token();
        t.metadata.name = Some(name.into());
        t
    }

    fn json<T: Serialize>(v: &T) -> serde_json::Value {
        serde_json::to_value(v).expect("encodes")
    }

    #[test]
    fn an_apitoken_decodes_to_what_the_cache_kept_before() {
        let t = token();
        let mut prepared = t.clone();
        watch::token_for_cache(&mut prepared);
        let back = CachedToken::new(t).decode().expect("decodes");
        assert_eq!(json(&back), json(&prepared));
        assert_eq!(back.uid(), prepared.uid());
        assert_eq!(back.resource_version(), Some("42".into()));
    }

    #[test]
    fn the_cache_keeps_no_managed_fields_nor_the_last_applied_copy() {
        let mut t = token();
        t.metadata.managed_fields = Some(vec![Default::default()]);
        t.annotations_mut()
            .insert(LAST_APPLIED_ANNOTATION.into(), "{\"big\": true}".into());
        let c = CachedToken::new(t);
        let body = plain(&c.body, &TOKEN_DICTIONARY);
        assert!(!body.contains("managedFields"), "{body}");
        assert!(!body.contains("big"), "{body}");
        let back = c.decode().expect("decodes");
        assert_eq!(back.metadata.managed_fields, None);
        assert!(back.annotations().contains_key(ROTATE_ANNOTATION));
    }

    #[test]
    fn kube_runtime_sees_the_kind_name_and_namespace_and_nothing_twice() {
        let t = token();
        let c = CachedToken::new(t.clone());
        assert_eq!(
            ObjectRef::from_obj(&c),
            ObjectRef::<CachedToken>::new(&t.name_any()).within("n")
        );
        assert_eq!(CachedToken::kind(&()), "ApiToken");
        assert_eq!(CachedToken::api_version(&()), ApiToken::api_version(&()));
        assert_eq!(CachedToken::plural(&()), "apitokens");
        // The rest is in the body only.
        assert_eq!(c.meta().uid, None);
        assert_eq!(c.meta().generation, None);
        assert_eq!(c.meta().resource_version, None);
        assert_eq!(c.meta().annotations, None);
        let body = plain(&c.body, &TOKEN_DICTIONARY);
        assert!(!body.contains("\"name\":\"a\""), "{body}");
    }

    #[test]
    fn the_trigger_is_taken_from_the_full_object() {
        let t = token();
        let c = CachedToken::new(t.clone());
        assert_eq!(c.trigger, watch::triggers(&t));
        let mut rotated = t.clone();
        rotated
            .annotations_mut()
            .insert(ROTATE_ANNOTATION.into(), "r2".into());
        assert_ne!(CachedToken::new(rotated).trigger, c.trigger);
        let mut status_only = t;
        if let Some(s) = status_only.status.as_mut() {
            s.token_id = Some("id-2".into());
        }
        assert_eq!(CachedToken::new(status_only).trigger, c.trigger);
    }

    #[test]
    fn debug_shows_identity_and_size_only() {
        let c = CachedToken::new(token());
        let shown = format!("{c:?}");
        assert!(shown.contains("body_bytes"), "{shown}");
        assert!(!shown.contains("Issued"), "{shown}");
        assert!(!c.body.is_empty());
    }

    #[test]
    fn watch_events_keep_their_kind() {
        assert!(matches!(compact_event(E::Init), E::Init));
        assert!(matches!(compact_event(E::InitDone), E::InitDone));
        assert!(matches!(compact_event(E::Apply(token())), E::Apply(_)));
        assert!(matches!(
            compact_event(E::InitApply(token())),
            E::InitApply(_)
        ));
        assert!(matches!(compact_event(E::Delete(token())), E::Delete(_)));
    }

    fn woken(c: &mut Changes, e: watcher::Event<ApiToken>) -> bool {
        c.wake(compact_event(e)).is_some()
    }

    #[test]
    fn an_apitoken_wakes_the_controller_when_new_or_changed_not_when_the_same() {
        let mut c = Changes::default();
        assert!(woken(&mut c, E::Apply(named("a"))));
        assert!(!woken(&mut c, E::Apply(named("a"))), "unchanged");
        assert!(woken(&mut c, E::Apply(named("b"))), "another name");
        let mut rotated = named("a");
        rotated
            .annotations_mut()
            .insert(ROTATE_ANNOTATION.into(), "r2".into());
        assert!(woken(&mut c, E::Apply(rotated.clone())));
        let mut status_only = rotated.clone();
        status_only.status = None;
        assert!(!woken(&mut c, E::Apply(status_only)), "status only");
        // Deleted, then created again with the same content: seen as new.
        assert!(!woken(&mut c, E::Delete(rotated.clone())));
        assert_eq!(c.seen.len(), 1);
        assert!(woken(&mut c, E::Apply(rotated)));
    }

    #[test]
    fn a_relist_wakes_only_what_changed_and_forgets_what_is_gone() {
        let mut c = Changes::default();
        for n in ["a", "b", "c"] {
            assert!(woken(&mut c, E::Apply(named(n))));
        }
        let mut b2 = named("b");
        b2.metadata.generation = Some(4);
        assert!(!woken(&mut c, E::Init));
        assert!(!woken(&mut c, E::InitApply(named("a"))), "unchanged");
        assert!(woken(&mut c, E::InitApply(b2)), "changed while away");
        assert!(woken(&mut c, E::InitApply(named("d"))), "new");
        assert!(!woken(&mut c, E::InitDone));
        // `c` was deleted while the watch was away: forgotten.
        assert_eq!(c.seen.len(), 3);
        assert!(woken(&mut c, E::Apply(named("c"))));
    }

    #[test]
    fn a_relist_that_starts_again_wakes_only_what_changed() {
        let mut c = Changes::default();
        for n in ["a", "b"] {
            assert!(woken(&mut c, E::Apply(named(n))));
        }
        assert!(!woken(&mut c, E::Init));
        assert!(!woken(&mut c, E::InitApply(named("a"))));
        // The list failed after one page; the watcher lists again from the start.
        assert!(!woken(&mut c, E::Init));
        assert!(!woken(&mut c, E::InitApply(named("a"))), "unchanged");
        assert!(!woken(&mut c, E::InitApply(named("b"))), "unchanged");
        assert!(!woken(&mut c, E::InitDone));
        assert_eq!(c.seen.len(), 2);
    }

    #[test]
    fn an_unreadable_entry_is_an_error_not_an_absent_object() {
        // What `encode` leaves when it cannot encode: the reconcile then reads live.
        let mut c = CachedToken::new(token());
        c.body = Box::default();
        assert!(c.decode().is_err());
        let cache = SecretCache::default();
        cache
            .inner
            .write()
            .expect("not poisoned")
            .live
            .insert(secret_key("team-a", "a"), Box::default());
        assert!(matches!(cache.get("team-a", "a"), Some(Err(_))));
    }

    #[test]
    fn the_secret_cache_debug_shows_the_count_only() {
        let token = Token::mint().expect("a token");
        let cache = SecretCache::default();
        secret_event(&cache, E::Apply(a_secret("a", &token)));
        assert_eq!(format!("{cache:?}"), "SecretCache { secrets: 1 }");
    }

    fn a_secret(name: &str, token: &Token) -> Secret {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {
                "name": name, "namespace": "team-a", "uid": "u-1", "resourceVersion": "7",
                "labels": {"app.kubernetes.io/managed-by": "loop-token-operator"},
                "annotations": {"loop.dev/token-id": "id-1"},
                "ownerReferences": [{"apiVersion": "loop.dev/v1alpha1", "kind": "ApiToken",
                    "name": "a", "uid": "o-1", "controller": true}],
                "managedFields": [{"manager": "x", "operation": "Apply"}],
            },
            "data": {"token": k8s_openapi::ByteString(token.expose().as_bytes().to_vec())},
        }))
        .expect("a Secret")
    }

    #[test]
    fn the_secret_cache_holds_fingerprints_not_tokens_and_gives_back_the_prepared_secret() {
        let token = Token::mint().expect("a token");
        let s = a_secret("a", &token);
        let cache = SecretCache::default();
        let passed = secret_event(&cache, E::Apply(s.clone()));
        let mut expected = s;
        secret::for_cache(&mut expected);
        // What the controller is handed is prepared too.
        assert!(matches!(&passed, E::Apply(p) if *p == expected));
        let held: String = cache
            .inner
            .read()
            .expect("not poisoned")
            .live
            .values()
            .map(|b| plain(b, &SECRET_DICTIONARY))
            .collect();
        let b64 = json(&k8s_openapi::ByteString(token.expose().as_bytes().to_vec()));
        assert!(!held.contains(token.expose()), "the token is in the cache");
        assert!(
            !held.contains(b64.as_str().unwrap_or("?")),
            "the token is in the cache"
        );
        assert!(!held.contains("managedFields"), "{held}");
        let back = cache.get("team-a", "a").expect("cached").expect("decodes");
        assert_eq!(back, expected);
        assert!(cache.get("team-a", "b").is_none());
        assert!(cache.get("team-b", "a").is_none());
    }

    #[test]
    fn the_secret_cache_follows_deletions_and_swaps_in_a_complete_relist() {
        let token = Token::mint().expect("a token");
        let cache = SecretCache::default();
        secret_event(&cache, E::Apply(a_secret("a", &token)));
        secret_event(&cache, E::Apply(a_secret("b", &token)));
        secret_event(&cache, E::Delete(a_secret("a", &token)));
        assert!(cache.get("team-a", "a").is_none());
        assert_eq!(cache.len(), 1);
        secret_event(&cache, E::Init);
        secret_event(&cache, E::InitApply(a_secret("c", &token)));
        // Until the re-list is complete, the cache answers from the earlier set.
        assert!(cache.get("team-a", "b").is_some());
        assert!(cache.get("team-a", "c").is_none());
        secret_event(&cache, E::InitDone);
        assert!(cache.get("team-a", "b").is_none());
        assert!(cache.get("team-a", "c").is_some());
        assert_eq!(cache.len(), 1);
    }
}
