//! The Secret record: the Secret the operator writes for an ApiToken, how it reads one back,
//! and the form the watch cache keeps. Pure, no I/O.
//!
//! The Secret is the durable record of the token chain (see [`crate::operator::core::plan`]): its data holds
//! the token, its annotations the store id of that token, the token it replaced, when it was
//! issued and which `loop.dev/rotate` value it answered. All of it is written in one request,
//! so it is never half-written.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::operator::core::vocabulary::{Desired, Retired, SecretObs};
use crate::operator::resource::crd::ApiToken;
use crate::operator::resource::names::secret_annotations as ann;
use crate::operator::resource::names::{API_TOKEN_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::token::Token;

/// What the Secret cache keeps in place of a token: this prefix and the token's fingerprint.
const CACHED_FINGERPRINT: &str = "loop.dev/fingerprint:";
/// What the Secret cache keeps in place of a rendered template value (which holds the token).
const CACHED_RENDERED: &[u8] = b"loop.dev/rendered";

/// The operator's annotations on a Secret, parsed once: the record of the token chain as
/// written, whoever reads it (the plan through [`read`], the shell through the Secret it holds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Annotations {
    pub token_id: Option<String>,
    pub previous: Option<String>,
    pub issued_at: Option<Timestamp>,
    pub rotation: Option<String>,
    /// `None` in a record written before the list existed.
    pub retired: Option<Vec<Retired>>,
    pub revoked_unused: Option<String>,
    pub usage_from: Option<Timestamp>,
    /// The data key the token was written under.
    pub token_key: Option<String>,
    pub fingerprint: Option<String>,
}

impl Annotations {
    pub fn of(s: &Secret) -> Annotations {
        let Some(a) = s.metadata.annotations.as_ref() else {
            return Annotations::default();
        };
        Annotations {
            token_id: a.get(ann::TOKEN_ID).cloned(),
            previous: a.get(ann::PREVIOUS_TOKEN_ID).cloned(),
            issued_at: a.get(ann::ISSUED_AT).and_then(|v| v.parse().ok()),
            rotation: a.get(ann::ROTATION_REQUEST).cloned(),
            retired: a.get(ann::RETIRED_TOKEN_IDS).map(|v| parse_retired(v)),
            revoked_unused: a.get(ann::REVOKED_UNUSED).cloned(),
            usage_from: a.get(ann::USAGE_COUNTED_FROM).and_then(|v| v.parse().ok()),
            token_key: a.get(ann::TOKEN_KEY).cloned(),
            fingerprint: a.get(ann::FINGERPRINT).cloned(),
        }
    }
}

/// The record a token is written with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub token_id: String,
    pub previous: Option<String>,
    pub issued_at: Timestamp,
    pub rotation: Option<String>,
    /// Tokens kept in their grace period by this issue, with the end of it.
    pub retired: Vec<Retired>,
    /// From when non-use is counted (`spec.unused`).
    pub usage_from: Option<Timestamp>,
}

impl Record {
    /// The record a Secret carries, to write its token again with the issue time the plan
    /// decided (`issued_at`). `None` without a token id (then it is not a record the operator
    /// can restore).
    pub fn of(s: &Secret, issued_at: Timestamp) -> Option<Record> {
        let a = Annotations::of(s);
        Some(Record {
            token_id: a.token_id?,
            previous: a.previous,
            issued_at,
            rotation: a.rotation,
            retired: a.retired.unwrap_or_default(),
            usage_from: a.usage_from,
        })
    }
}

/// The retired list as written: `id@until` entries, comma-separated (an entry without a
/// readable time keeps its id).
fn parse_retired(v: &str) -> Vec<Retired> {
    v.split(',')
        .filter(|e| !e.is_empty())
        .map(|e| match e.split_once('@') {
            Some((id, until)) => Retired {
                id: id.to_owned(),
                until: until.parse().ok(),
            },
            None => Retired {
                id: e.to_owned(),
                until: None,
            },
        })
        .collect()
}

fn format_retired(list: &[Retired]) -> String {
    list.iter()
        .map(|r| match r.until {
            Some(t) => format!("{}@{t}", r.id),
            None => r.id.clone(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether an object is controlled by the ApiToken with this uid.
pub fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references.as_ref().is_some_and(|refs| {
        refs.iter()
            .any(|r| r.uid == uid && r.controller == Some(true))
    })
}

/// The Secret to write for `t`: the token under the desired key, the record, the operator's
/// labels, and a controller owner reference (so the Secret goes with its ApiToken); with the
/// labels, annotations and rendered keys of `spec.secret`, all in the same write.
pub fn desired(t: &ApiToken, d: &Desired, token: &Token, r: &Record) -> Secret {
    let c = &d.consumers;
    let mut annotations = c.annotations.clone();
    annotations.extend([
        (ann::TOKEN_ID.to_owned(), r.token_id.clone()),
        (ann::ISSUED_AT.to_owned(), r.issued_at.to_string()),
        (ann::FINGERPRINT.to_owned(), token.fingerprint()),
        (ann::TOKEN_KEY.to_owned(), d.secret_key.clone()),
        (
            ann::RETIRED_TOKEN_IDS.to_owned(),
            format_retired(&r.retired),
        ),
    ]);
    let extras = extras(d);
    if !extras.is_empty() {
        annotations.insert(ann::EXTRAS.to_owned(), extras);
    }
    if let Some(digest) = template_digest(d) {
        annotations.insert(ann::TEMPLATE_DIGEST.to_owned(), digest);
    }
    if let Some(p) = &r.previous {
        annotations.insert(ann::PREVIOUS_TOKEN_ID.to_owned(), p.clone());
    }
    if let Some(v) = &r.rotation {
        annotations.insert(ann::ROTATION_REQUEST.to_owned(), v.clone());
    }
    if let Some(t) = r.usage_from {
        annotations.insert(ann::USAGE_COUNTED_FROM.to_owned(), t.to_string());
    }
    let mut labels = c.labels.clone();
    labels.extend([
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned()),
        (API_TOKEN_LABEL.to_owned(), t.name_any()),
    ]);
    let mut data: BTreeMap<String, ByteString> = c
        .template
        .iter()
        .map(|(k, v)| (k.clone(), ByteString(render(v, token, r).into_bytes())))
        .collect();
    data.insert(
        d.secret_key.clone(),
        ByteString(token.expose().as_bytes().to_vec()),
    );
    Secret {
        metadata: ObjectMeta {
            name: Some(d.secret_name.clone()),
            namespace: t.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: t.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

/// A template rendered for a token: its four placeholders replaced. The result holds the token:
/// it goes into the Secret's data and nowhere else.
fn render(template: &str, token: &Token, r: &Record) -> String {
    template
        .replace("${token}", token.expose())
        .replace("${tokenId}", &r.token_id)
        .replace("${fingerprint}", &token.fingerprint())
        .replace("${issuedAt}", &r.issued_at.to_string())
}

/// The extras of `spec.secret` as the record lists them: `label:<key>`, `annotation:<key>`,
/// `data:<key>`, sorted, comma-separated (no key of these kinds holds a comma).
fn extras(d: &Desired) -> String {
    let c = &d.consumers;
    let mut all: Vec<String> = c
        .labels
        .keys()
        .map(|k| format!("label:{k}"))
        .chain(c.annotations.keys().map(|k| format!("annotation:{k}")))
        .chain(c.template.keys().map(|k| format!("data:{k}")))
        .collect();
    all.sort();
    all.join(",")
}

/// The data keys the Secret's record says were rendered from `spec.secret.template` (each holds
/// the token).
pub fn rendered_keys(s: &Secret) -> Vec<String> {
    recorded_extras(s)
        .iter()
        .filter_map(|e| e.strip_prefix("data:").map(str::to_owned))
        .collect()
}

/// The extras a Secret's record lists.
fn recorded_extras(s: &Secret) -> Vec<String> {
    s.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ann::EXTRAS))
        .map(|v| {
            v.split(',')
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// A digest of the template texts (not of what they render to), so that an edited template is
/// rendered again. `None` without a template.
fn template_digest(d: &Desired) -> Option<String> {
    use sha2::{Digest, Sha256};
    if d.consumers.template.is_empty() {
        return None;
    }
    let mut h = Sha256::new();
    for (k, v) in &d.consumers.template {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    let hex: String = h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Some(hex)
}

/// Whether the Secret carries the extras of `spec.secret` as the operator writes them: the
/// record of extras and the template digest, each label and annotation with its value, each
/// rendered key (its value is not compared: it holds the token, which the cache does not keep).
fn extras_ok(s: &Secret, d: &Desired) -> bool {
    let c = &d.consumers;
    let empty = BTreeMap::new();
    let annotations = s.metadata.annotations.as_ref().unwrap_or(&empty);
    let labels = s.metadata.labels.as_ref().unwrap_or(&empty);
    let has_all = |have: &BTreeMap<String, String>, want: &BTreeMap<String, String>| {
        want.iter().all(|(k, v)| have.get(k) == Some(v))
    };
    let data_keys = s.data.as_ref();
    annotations.get(ann::EXTRAS).map_or("", String::as_str) == extras(d)
        && annotations.get(ann::TEMPLATE_DIGEST) == template_digest(d).as_ref()
        && has_all(labels, &c.labels)
        && has_all(annotations, &c.annotations)
        && c.template
            .keys()
            .all(|k| data_keys.is_some_and(|data| data.contains_key(k)))
}

/// The patch that removes from `existing` the extras its record lists and the spec no longer
/// has (server-side apply cannot: the Secret was created by a plain create, whose fields stay
/// with it). Labels, annotations and keys that others added are never listed, so they stay.
/// `None` when nothing is to be removed.
pub fn removal_patch(existing: &Secret, d: &Desired) -> Option<serde_json::Value> {
    let wanted = extras(d);
    let wanted: Vec<&str> = wanted.split(',').collect();
    let mut labels = serde_json::Map::new();
    let mut annotations = serde_json::Map::new();
    let mut data = serde_json::Map::new();
    for e in recorded_extras(existing) {
        if wanted.contains(&e.as_str()) {
            continue;
        }
        let (map, key) = match e.split_once(':') {
            Some(("label", k)) => (&mut labels, k),
            Some(("annotation", k)) => (&mut annotations, k),
            Some(("data", k)) => (&mut data, k),
            _ => continue,
        };
        map.insert(key.to_owned(), serde_json::Value::Null);
    }
    if labels.is_empty() && annotations.is_empty() && data.is_empty() {
        return None;
    }
    Some(serde_json::json!({
        "metadata": {"labels": labels, "annotations": annotations},
        "data": data,
    }))
}

/// The body of a server-side apply of `s` (apiVersion and kind set, as apply requires).
pub fn apply_body(s: &Secret) -> Result<serde_json::Value, serde_json::Error> {
    let mut body = serde_json::to_value(s)?;
    body["apiVersion"] = serde_json::json!("v1");
    body["kind"] = serde_json::json!("Secret");
    Ok(body)
}

/// A Secret as read back: what the plan may see of it, and the token it holds when it is the
/// ApiToken's own and was read live (for re-registering or rewriting it; never logged).
pub struct Read {
    pub obs: SecretObs,
    pub token: Option<Token>,
}

/// Read a Secret back for the ApiToken `name` with `uid`. A cached Secret (see [`for_cache`])
/// gives the fingerprint but no token.
pub fn read(s: &Secret, name: &str, uid: &str, d: &Desired) -> Read {
    let empty = BTreeMap::new();
    let a = Annotations::of(s);
    let labels = s.metadata.labels.as_ref().unwrap_or(&empty);
    let owned = controlled_by(&s.metadata, uid);
    let (found, at_desired_key) = match token_at(s, &d.secret_key) {
        Some(f) => (Some(f), true),
        None => (a.token_key.as_deref().and_then(|k| token_at(s, k)), false),
    };
    let (token, fingerprint) = match found {
        Some((token, fp)) => (token, Some(fp)),
        None => (None, None),
    };
    // Only what the operator writes is checked: keys, labels or annotations others add belong
    // to them, and server-side apply could not remove them anyway.
    let shape_ok = at_desired_key
        && labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY_VALUE)
        && labels.get(API_TOKEN_LABEL).map(String::as_str) == Some(name)
        && a.fingerprint == fingerprint
        && a.token_key.as_ref() == Some(&d.secret_key)
        && extras_ok(s, d);
    let obs = SecretObs {
        owned,
        token_id: a.token_id,
        previous_token_id: a.previous,
        issued_at: a.issued_at,
        rotation_request: a.rotation,
        fingerprint,
        shape_ok,
        retired: a.retired,
        revoked_unused: a.revoked_unused,
        usage_from: a.usage_from,
    };
    Read {
        obs,
        token: if owned { token } else { None },
    }
}

/// The token under `key` (when read live) and its fingerprint, or the fingerprint alone (from
/// the cache). `None` when the key is missing or holds no well-formed token.
fn token_at(s: &Secret, key: &str) -> Option<(Option<Token>, String)> {
    let raw = s.data.as_ref()?.get(key)?;
    let v = std::str::from_utf8(&raw.0).ok()?;
    match v.strip_prefix(CACHED_FINGERPRINT) {
        Some(fp) => Some((None, fp.to_owned())),
        None => Token::parse(v).ok().map(|t| {
            let fp = t.fingerprint();
            (Some(t), fp)
        }),
    }
}

/// Prepare an owned Secret for the watch cache: no managedFields (never read), and no token
/// (rendered template values, which hold it, are kept as a mark).
/// Each value that is a token becomes its fingerprint, which is all a plan made from the cache
/// needs: anything that uses the token itself is planned again from a live read. So the
/// operator's memory does not hold thousands of tokens for as long as it runs.
pub fn for_cache(s: &mut Secret) {
    s.metadata.managed_fields = None;
    let rendered: Vec<String> = recorded_extras(s)
        .iter()
        .filter_map(|e| e.strip_prefix("data:").map(str::to_owned))
        .collect();
    for (k, v) in s.data.iter_mut().flat_map(|d| d.iter_mut()) {
        if rendered.contains(k) {
            v.0 = CACHED_RENDERED.to_vec();
            continue;
        }
        let fingerprint = std::str::from_utf8(&v.0)
            .ok()
            .and_then(|t| Token::parse(t).ok())
            .map(|t| t.fingerprint());
        if let Some(fp) = fingerprint {
            v.0 = format!("{CACHED_FINGERPRINT}{fp}").into_bytes();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::resource::crd::fixtures::minimal;

    fn desired_spec() -> Desired {
        crate::operator::core::spec::desired(&minimal(), "a", None).expect("a valid spec")
    }

    fn record() -> Record {
        Record {
            token_id: "u.abc".into(),
            previous: Some("u.old".into()),
            issued_at: Timestamp::from_second(1_800_000_000).expect("a time"),
            rotation: Some("r1".into()),
            retired: vec![
                Retired {
                    id: "u.old".into(),
                    until: Some(Timestamp::from_second(1_800_003_600).expect("a time")),
                },
                Retired {
                    id: "u.older".into(),
                    until: Some(Timestamp::from_second(1_800_000_600).expect("a time")),
                },
            ],
            usage_from: Some(Timestamp::from_second(1_700_000_000).expect("a time")),
        }
    }

    #[test]
    fn a_written_secret_reads_back_as_the_same_record_and_token() {
        let token = Token::mint().expect("a token");
        let s = desired(&minimal(), &desired_spec(), &token, &record());
        let r = read(&s, "a", "u", &desired_spec());
        assert!(r.obs.owned && r.obs.shape_ok);
        assert_eq!(r.obs.fingerprint, Some(token.fingerprint()));
        assert_eq!(r.obs.token_id.as_deref(), Some("u.abc"));
        assert_eq!(r.obs.previous_token_id.as_deref(), Some("u.old"));
        assert_eq!(r.obs.rotation_request.as_deref(), Some("r1"));
        assert_eq!(r.obs.retired, Some(record().retired));
        assert_eq!(r.token.map(|t| t.fingerprint()), Some(token.fingerprint()));
        assert_eq!(Record::of(&s, record().issued_at), Some(record()));
        let body = apply_body(&s).expect("encodes");
        assert_eq!(
            (body["apiVersion"].as_str(), body["kind"].as_str()),
            (Some("v1"), Some("Secret"))
        );
    }

    #[test]
    fn another_owner_s_secret_gives_no_token() {
        let token = Token::mint().expect("a token");
        let s = desired(&minimal(), &desired_spec(), &token, &record());
        let r = read(&s, "a", "another-uid", &desired_spec());
        assert!(!r.obs.owned);
        assert!(r.token.is_none());
    }

    #[test]
    fn a_hand_edited_secret_is_seen_as_misshapen() {
        let token = Token::mint().expect("a token");
        let mut s = desired(&minimal(), &desired_spec(), &token, &record());
        s.metadata
            .labels
            .as_mut()
            .map(|l| l.insert(API_TOKEN_LABEL.into(), "other".into()));
        assert!(!read(&s, "a", "u", &desired_spec()).obs.shape_ok);
        // The token moved to another key: found through the token-key annotation, misshapen.
        let moved = desired(&minimal(), &desired_spec(), &token, &record());
        let mut d = desired_spec();
        d.secret_key = "new-key".into();
        let r = read(&moved, "a", "u", &d);
        assert_eq!(r.obs.fingerprint, Some(token.fingerprint()));
        assert!(!r.obs.shape_ok);
    }

    #[test]
    fn the_secret_cache_keeps_fingerprints_not_tokens() {
        let token = Token::mint().expect("a token");
        let mut s = desired(&minimal(), &desired_spec(), &token, &record());
        s.data
            .as_mut()
            .map(|d| d.insert("other".into(), ByteString(b"not a token".to_vec())));
        s.metadata.managed_fields = Some(vec![Default::default()]);
        for_cache(&mut s);
        assert!(!format!("{s:?}").contains(token.expose()));
        let data = s.data.clone().unwrap_or_default();
        assert_eq!(data["other"].0, b"not a token");
        assert_eq!(s.metadata.managed_fields, None);
        // Read back from the cache: the same observation, without the token.
        let r = read(&s, "a", "u", &desired_spec());
        assert_eq!(r.obs.fingerprint, Some(token.fingerprint()));
        assert!(r.obs.shape_ok);
        assert!(r.token.is_none());
    }

    fn shaped() -> Desired {
        let mut d = desired_spec();
        d.consumers.labels = BTreeMap::from([("team".into(), "shop".into())]);
        d.consumers.annotations =
            BTreeMap::from([("reloader.stakater.com/match".into(), "true".into())]);
        d.consumers.template = BTreeMap::from([(
            ".env".into(),
            "LOOP_TOKEN=${token}\nLOOP_TOKEN_ID=${tokenId} ${fingerprint} ${issuedAt} $HOME\n"
                .into(),
        )]);
        d
    }

    #[test]
    fn labels_annotations_and_rendered_keys_land_in_the_same_secret() {
        let token = Token::mint().expect("a token");
        let d = shaped();
        let s = desired(&minimal(), &d, &token, &record());
        let labels = s.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("team").map(String::as_str), Some("shop"));
        assert_eq!(
            labels.get(MANAGED_BY_LABEL).map(String::as_str),
            Some(MANAGED_BY_VALUE)
        );
        let annotations = s.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(annotations["reloader.stakater.com/match"], "true");
        let env = String::from_utf8(s.data.clone().unwrap_or_default()[".env"].0.clone()).unwrap();
        assert_eq!(
            env,
            format!(
                "LOOP_TOKEN={}\nLOOP_TOKEN_ID=u.abc {} {} $HOME\n",
                token.expose(),
                token.fingerprint(),
                record().issued_at
            )
        );
        assert!(read(&s, "a", "u", &d).obs.shape_ok);
        // Nothing to remove while the spec still has them all.
        assert_eq!(removal_patch(&s, &d), None);
        // The cache keeps neither the token nor what was rendered from it.
        let mut cached = s.clone();
        for_cache(&mut cached);
        assert!(!format!("{cached:?}").contains(token.expose()));
        assert!(read(&cached, "a", "u", &d).obs.shape_ok);
    }

    #[test]
    fn an_edited_shape_is_written_again_and_dropped_keys_only_are_removed() {
        let token = Token::mint().expect("a token");
        let s = desired(&minimal(), &shaped(), &token, &record());
        // A label added by someone else is no concern of the operator.
        let mut foreign = s.clone();
        foreign
            .metadata
            .labels
            .as_mut()
            .map(|l| l.insert("replicator/sync".into(), "yes".into()));
        assert!(read(&foreign, "a", "u", &shaped()).obs.shape_ok);
        // The spec drops the label and the template, and edits the annotation.
        let mut d = shaped();
        d.consumers.labels.clear();
        d.consumers.template.clear();
        d.consumers
            .annotations
            .insert("reloader.stakater.com/match".into(), "false".into());
        assert!(!read(&foreign, "a", "u", &d).obs.shape_ok);
        assert_eq!(
            removal_patch(&foreign, &d),
            Some(serde_json::json!({
                "metadata": {"labels": {"team": null}, "annotations": {}},
                "data": {".env": null},
            }))
        );
        // An edited template text renders again.
        let mut d = shaped();
        d.consumers
            .template
            .insert(".env".into(), "TOKEN=${token}".into());
        assert!(!read(&s, "a", "u", &d).obs.shape_ok);
    }
}
