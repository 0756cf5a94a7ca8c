//! The `ApiToken` custom resource (`loop.dev/v1alpha1`).
//!
//! Pure types. The schema does as much validation as the API server can enforce at apply time
//! (patterns, lengths, a set of scopes, CEL for durations); what only the store can judge (is a
//! scope in its catalogue) becomes a condition. `crds/apitoken.yaml` is generated from these
//! types by `cargo run --bin crdgen`; a test fails when it is stale.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::operator::resource::names::{DEFAULT_GRACE_PERIOD, DEFAULT_SECRET_KEY};

/// A Kubernetes DNS subdomain name (Secret names).
pub const DNS_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A valid key of a Secret's data.
pub const SECRET_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";
/// A Go-style duration such as `1h`, `30m`, `1h30m`, `90s` or `0s`.
pub const DURATION_PATTERN: &str = r"^(0|([0-9]+(ms|s|m|h))+)$";

/// An API token for Loop's Admin API. The operator mints the token, writes it into a Secret in
/// this namespace, registers its SHA-256 hash with the Loop token store, applies edits of
/// `displayName` and `scopes` in place, rotates it whenever the `loop.dev/rotate` annotation
/// changes, and revokes it when this resource is deleted.
// Each `printcolumn(...)` repeats `type_`; clippy mistakes that for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "loop.dev",
    version = "v1alpha1",
    kind = "ApiToken",
    plural = "apitokens",
    shortname = "lat",
    category = "loop",
    namespaced,
    status = "ApiTokenStatus",
    doc = "An API token for Loop's Admin API, minted into a Secret and registered with the Loop token store.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Scopes", type_ = "string", json_path = ".spec.scopes"),
    printcolumn(name = "Secret", type_ = "string", json_path = ".status.secretName"),
    printcolumn(name = "Last used", type_ = "date", json_path = ".status.lastUsedAt"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Fingerprint",
        type_ = "string",
        json_path = ".status.fingerprint",
        priority = "1"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = "1"
    ),
    printcolumn(
        name = "Expires",
        type_ = "date",
        json_path = ".status.expiresAt",
        priority = "1"
    ),
    printcolumn(
        name = "Next rotation",
        type_ = "date",
        json_path = ".status.nextRotationAt",
        priority = "1"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(EXPIRY_COVERS_EVERY).message(EXPIRY_COVERS_EVERY_MESSAGE))]
#[x_kube(validation = Rule::new(EXPIRY_COVERS_RENEWAL).message(EXPIRY_COVERS_RENEWAL_MESSAGE))]
pub struct ApiTokenSpec {
    /// The token's name in Loop, as shown in Loop's list of API tokens (1-100 characters, no
    /// leading or trailing spaces). Defaults to the resource's name. Editing it renames the
    /// token in place; the token itself does not change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100), regex(pattern = r"^\S(.*\S)?$"))]
    pub display_name: Option<String>,

    /// What the token may do: a set of `<resource>:read` or `<resource>:write` scopes (write
    /// implies read), for example `subscriptions:read`. At least one. The Loop token store
    /// decides which resources exist; an unknown one makes the resource Stalled. Editing the
    /// scopes updates the token in place; the token itself does not change.
    #[schemars(
        length(min = 1, max = 64),
        inner(regex(pattern = "^[a-z][a-z0-9_-]{0,62}:(read|write)$")),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub scopes: Vec<String>,

    /// Where the token is written.
    #[serde(default)]
    pub secret: SecretTarget,

    /// How rotations behave: the previous token's grace period, and an optional schedule.
    #[serde(default)]
    pub rotation: RotationPolicy,

    /// An expiry for each token, enforced by the Loop token store: a token stops working this
    /// long after it was issued, even while the operator is down. Without it, tokens do not
    /// expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<ExpiryPolicy>,

    /// What happens to a token that nobody uses: after `after` without a call (counted from
    /// its last use, or from its issue if it was never used), `Warn` sets the condition
    /// `Unused=True` and sends one Warning Event; `Revoke` revokes it, removes it from the
    /// Secret and stops (`Ready=False`, reason `RevokedUnused`) until a new `loop.dev/rotate`
    /// value issues a new token. Without it, usage only shows in the status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unused: Option<UnusedPolicy>,

    /// What deleting this ApiToken does to its token. `Revoke` (the default): every token it
    /// registered is revoked, and the Secret goes with it. `Orphan`: its current token stays
    /// registered and its Secret stays (without the owner reference), and a later ApiToken of
    /// the same name in this namespace adopts both without issuing a new token. In a namespace
    /// that is being deleted, `Orphan` revokes as well: the Secret goes with the namespace.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Workloads that read the token at start-up: after each new token is in the Secret (not on
    /// first issue), the operator restarts them once, by setting the pod template annotation
    /// `loop.dev/restarted-for.<ApiToken name>` to the new token's fingerprint (as `kubectl
    /// rollout restart` does with its own annotation). Needs the chart's `rollout.enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutPolicy>,
}

/// Which workloads to restart when the token changes, and whether their rollout ends the
/// previous token's grace period.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutPolicy {
    /// Deployments, StatefulSets and DaemonSets in this namespace (1 to 16).
    #[schemars(
        length(min = 1, max = 16),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["kind", "name"])
    )]
    pub targets: Vec<RolloutTarget>,

    /// `AfterGrace` (the default): the previous token works until its grace period ends.
    /// `AfterRollout`: it is revoked as soon as every target reports its rollout complete (as
    /// `kubectl rollout status` judges it, except that a partitioned StatefulSet never counts as
    /// complete: its pods below the partition keep the previous token), and at the latest when
    /// its grace period ends.
    #[serde(default)]
    pub retire: Retire,
}

/// A workload to restart.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutTarget {
    /// `Deployment`, `StatefulSet` or `DaemonSet` (group `apps`).
    pub kind: RolloutKind,
    /// Its name, in the ApiToken's namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
}

/// The kinds of workload a rollout restarts.
#[derive(
    schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord,
)]
pub enum RolloutKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl RolloutKind {
    /// The kind's name, as in `status.rollout[].kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutKind::Deployment => "Deployment",
            RolloutKind::StatefulSet => "StatefulSet",
            RolloutKind::DaemonSet => "DaemonSet",
        }
    }
}

/// When the previous token is revoked.
#[derive(
    schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum Retire {
    /// At the end of its grace period.
    #[default]
    AfterGrace,
    /// Once every rollout target has rolled out the new token; the grace period is the cap.
    AfterRollout,
}

/// What deleting an ApiToken does to its token.
#[derive(
    schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum DeletionPolicy {
    /// Revoke every token the ApiToken registered.
    #[default]
    Revoke,
    /// Keep the current token registered and its Secret, for a later ApiToken of the same name.
    Orphan,
}

/// `expiry.after` must leave the previous token its grace period after a scheduled rotation.
const EXPIRY_COVERS_EVERY: &str = "!has(self.expiry) || !has(self.rotation) || !has(self.rotation.every) || \
     duration(self.expiry.after) >= duration(self.rotation.every) + duration(self.rotation.gracePeriod)";
const EXPIRY_COVERS_EVERY_MESSAGE: &str = "expiry.after must be at least rotation.every + rotation.gracePeriod, so that a token replaced on schedule keeps its grace period before it expires";
/// With `renew`, a token is replaced at 2/3 of `after`: the last third must hold the grace period.
const EXPIRY_COVERS_RENEWAL: &str = "!has(self.expiry) || (has(self.expiry.renew) && !self.expiry.renew) || \
     duration(self.expiry.after) >= duration(self.rotation.gracePeriod) + duration(self.rotation.gracePeriod) + duration(self.rotation.gracePeriod)";
const EXPIRY_COVERS_RENEWAL_MESSAGE: &str = "with expiry.renew, expiry.after must be at least 3 x rotation.gracePeriod: a token is renewed at 2/3 of expiry.after and the previous one keeps its grace period until it expires";

/// The Secret that receives the token.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.template) || !(self.key in self.template)").message("spec.secret.template must not have a key named like spec.secret.key, which holds the token"))]
pub struct SecretTarget {
    /// Name of the Secret in this namespace. Defaults to the resource's name. The operator
    /// creates it and never writes into a Secret it did not create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub name: Option<String>,

    /// Key of the token in the Secret's data.
    #[serde(default = "default_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY_PATTERN))]
    pub key: String,

    /// Labels added to the Secret (for a replicator or Reloader, say). Keys under `loop.dev/`
    /// and `app.kubernetes.io/managed-by` are the operator's. A label removed here is removed
    /// from the Secret; labels others add stay.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "label_map")]
    #[x_kube(validation = Rule::new(NOT_RESERVED).message(NOT_RESERVED_MESSAGE))]
    #[x_kube(validation = Rule::new(LABEL_KEYS).message("spec.secret.labels: a key must be a label key ([prefix/]name, the name at most 63 characters of [-A-Za-z0-9_.], alphanumeric at both ends)"))]
    #[x_kube(validation = Rule::new(LABEL_VALUES).message("spec.secret.labels: a value must be at most 63 characters of [-A-Za-z0-9_.], alphanumeric at both ends"))]
    pub labels: BTreeMap<String, String>,

    /// Annotations added to the Secret (e.g. for Reloader). Keys under `loop.dev/` and
    /// `app.kubernetes.io/managed-by` are the operator's. An annotation removed here is removed
    /// from the Secret; annotations others add stay.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "annotation_map")]
    #[x_kube(validation = Rule::new(NOT_RESERVED).message(NOT_RESERVED_MESSAGE))]
    #[x_kube(validation = Rule::new(LABEL_KEYS).message("spec.secret.annotations: a key must be [prefix/]name, the name at most 63 characters of [-A-Za-z0-9_.], alphanumeric at both ends"))]
    pub annotations: BTreeMap<String, String>,

    /// Extra keys of the Secret, rendered each time a token is issued, for apps that read the
    /// token in another shape: `{".env": "LOOP_TOKEN=${token}\n"}`. The placeholders are
    /// `${token}`, `${tokenId}`, `${fingerprint}` and `${issuedAt}`; no others. A rendered value
    /// holds the token: it is as secret as the token.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "template_map")]
    #[x_kube(validation = Rule::new(TEMPLATE_KEYS).message("spec.secret.template: a key must be a valid Secret key ([-._a-zA-Z0-9], at most 253 characters)"))]
    #[x_kube(validation = Rule::new(TEMPLATE_PLACEHOLDERS).message("spec.secret.template: the only placeholders are ${token}, ${tokenId}, ${fingerprint} and ${issuedAt}"))]
    pub template: BTreeMap<String, String>,
}

/// Keys the operator writes itself.
const NOT_RESERVED: &str =
    "self.all(k, !k.startsWith('loop.dev/') && k != 'app.kubernetes.io/managed-by')";
const NOT_RESERVED_MESSAGE: &str =
    "keys under loop.dev/ and the key app.kubernetes.io/managed-by are the operator's own";
/// A label or annotation key: an optional DNS-subdomain prefix and a name of at most 63.
const LABEL_KEYS: &str = r"self.all(k, k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))";
const LABEL_VALUES: &str =
    r"self.all(k, self[k].matches('^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$'))";
const TEMPLATE_KEYS: &str = r"self.all(k, k.matches('^[-._a-zA-Z0-9]{1,253}$'))";
/// Any `$` is either not followed by `{`, or starts one of the four placeholders.
const TEMPLATE_PLACEHOLDERS: &str = r"self.all(k, self[k].matches('^([^$]|[$]+([^{$]|$)|[$]+[{](token|tokenId|fingerprint|issuedAt)[}])*$'))";

/// A string map of at most `max_properties` entries whose values are at most `max_len` bytes.
fn string_map(max_properties: u32, max_len: u32) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": max_properties,
        "additionalProperties": {"type": "string", "maxLength": max_len},
    })
}

fn label_map(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    string_map(32, 63)
}

fn annotation_map(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    string_map(32, 4096)
}

fn template_map(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    string_map(16, 4096)
}

impl Default for SecretTarget {
    fn default() -> Self {
        SecretTarget {
            name: None,
            key: default_key(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            template: BTreeMap::new(),
        }
    }
}

fn default_key() -> String {
    DEFAULT_SECRET_KEY.to_owned()
}

/// Rotation settings. A rotation is requested by changing the `loop.dev/rotate` annotation
/// (a timestamp is the convention, as with `kubectl rollout restart`; between two RFC 3339
/// timestamps only a later one rotates), or comes on schedule with `every`.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(EVERY_EXCEEDS_GRACE).message("rotation.every must be longer than rotation.gracePeriod"))]
#[x_kube(validation = Rule::new(IDLE_UNDER_GRACE).message("rotation.retireWhenIdle must be shorter than rotation.gracePeriod, which stays the limit"))]
pub struct RotationPolicy {
    /// How long the previous token keeps working after a rotation, as a duration such as
    /// `1h`, `30m` or `90s`, at most `168h`. `0s` revokes the previous token at once (the
    /// "token leaked" path).
    #[serde(default = "default_grace")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) <= duration('168h')").message("gracePeriod must be at most 168h"))]
    pub grace_period: String,

    /// Rotate on a schedule: a new token this long after the current one was issued (`1h` to
    /// `8760h`, and longer than `gracePeriod`), for example `720h`. An operator that was down past
    /// the time rotates once when it is back. Without it, tokens rotate only when
    /// `loop.dev/rotate` changes (or, with `expiry.renew`, before they expire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1h')").message("rotation.every must be at least 1h"))]
    #[x_kube(validation = Rule::new("duration(self) <= duration('8760h')").message("rotation.every must be at most 8760h (one year)"))]
    pub every: Option<String>,

    /// End the previous token's grace period early: after a rotation, the previous token is
    /// revoked once it has gone this long without a call (counted from the later of its last
    /// use and the rotation) and the new token has been used at least once, for example `15m`.
    /// Shorter than `gracePeriod`, which stays the limit. Without it, the previous token works
    /// for its whole grace period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1m')").message("rotation.retireWhenIdle must be at least 1m"))]
    pub retire_when_idle: Option<String>,
}

/// What to do with a token that nobody uses.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UnusedPolicy {
    /// How long without a call makes a token unused, as a duration such as `720h`, from `24h`
    /// to `8760h` (one year). Usage is what the Loop token store records on each introspection.
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('24h')").message("unused.after must be at least 24h"))]
    #[x_kube(validation = Rule::new("duration(self) <= duration('8760h')").message("unused.after must be at most 8760h (one year)"))]
    pub after: String,

    /// `Warn` (the default): condition `Unused=True` and one Warning Event. `Revoke`: revoke the
    /// token and remove it from the Secret; a new `loop.dev/rotate` value issues a new one.
    #[serde(default)]
    pub action: UnusedAction,
}

/// What to do with an unused token.
#[derive(
    schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum UnusedAction {
    /// Say so: condition `Unused=True` and one Warning Event.
    #[default]
    Warn,
    /// Revoke it and empty its Secret key.
    Revoke,
}

/// `every` must be longer than the grace period, or tokens would pile up in grace.
const EVERY_EXCEEDS_GRACE: &str = "!has(self.every) || duration(self.every) > duration(has(self.gracePeriod) ? self.gracePeriod : '1h')";

/// `retireWhenIdle` ends a grace period early, so it must be shorter than it.
const IDLE_UNDER_GRACE: &str = "!has(self.retireWhenIdle) || duration(self.retireWhenIdle) < duration(has(self.gracePeriod) ? self.gracePeriod : '1h')";

impl Default for RotationPolicy {
    fn default() -> Self {
        RotationPolicy {
            grace_period: default_grace(),
            every: None,
            retire_when_idle: None,
        }
    }
}

/// Token expiry.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ExpiryPolicy {
    /// How long each token works after it was issued, as a duration such as `2160h`, from `1h`
    /// to `8760h` (one year). The expiry is registered with the Loop token store when the token
    /// is issued. Changing it applies to the current token from its issue time.
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1h')").message("expiry.after must be at least 1h"))]
    #[x_kube(validation = Rule::new("duration(self) <= duration('8760h')").message("expiry.after must be at most 8760h (one year)"))]
    pub after: String,

    /// `true` (the default): rotate before the token expires, at 2/3 of `after` (or on
    /// `rotation.every` if that comes sooner). `false`: let it expire; the ApiToken then says
    /// `Ready=False`, reason `Expired`, until a new `loop.dev/rotate` value issues a new token.
    #[serde(default = "default_renew")]
    pub renew: bool,
}

fn default_renew() -> bool {
    true
}

fn default_grace() -> String {
    DEFAULT_GRACE_PERIOD.to_owned()
}

/// What the operator observed and did. Never holds a token.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ApiTokenStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`, `Reconciling` and `Stalled` (kstatus conventions), each with a reason and an
    /// actionable message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The Loop token store's id of the current token (not the token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,

    /// Short, non-secret identifier of the current token (first 12 hex digits of its SHA-256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,

    /// When the current token was issued (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<String>,

    /// When the current token stops working, as registered with the store (RFC 3339); absent
    /// when it does not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,

    /// When the current token is due to be replaced, on schedule or before it expires
    /// (RFC 3339); absent when no rotation is scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_at: Option<String>,

    /// The Secret holding the current token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,

    /// The last `loop.dev/rotate` value that was handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_request: Option<String>,

    /// Earlier tokens still active during their grace period.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_tokens: Vec<PreviousToken>,

    /// When the current token was last used, as the store last reported it (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,

    /// How many calls the store has answered for the current token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_count: Option<i64>,

    /// Each `spec.rollout.targets` entry: the token fingerprint it is rolling out and how far.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollout: Vec<RolloutTargetStatus>,
}

/// How far a rollout target is with the current token.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutTargetStatus {
    /// `Deployment`, `StatefulSet` or `DaemonSet`.
    pub kind: String,
    /// The target's name.
    pub name: String,
    /// The token it is rolling out (the current token's fingerprint).
    pub fingerprint: String,
    /// `Pending`, `Complete` or `Missing`.
    pub state: RolloutState,
    /// What it waits for, when not complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A rollout target's state.
#[derive(schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolloutState {
    /// Restarted (or to be restarted) for the current token; not all its pods run it yet.
    Pending,
    /// Every pod runs with the current token.
    Complete,
    /// It does not exist (or the operator may not read it).
    Missing,
}

/// A previous token in its grace period.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PreviousToken {
    pub token_id: String,
    pub fingerprint: String,
    /// When it stops working (RFC 3339).
    pub expires_at: String,
    /// When it was last used, as the store last reported it (RFC 3339). A use after the
    /// rotation means an app still reads the old token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
    /// It was still being used half-way through its grace period (a Warning
    /// `PreviousTokenStillInUse` said so): some app missed the rotation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub still_in_use: bool,
}

impl ApiTokenStatus {
    /// The condition of this type (a status has at most one of each).
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// The condition of this type, when it is `True`.
    pub fn true_condition(&self, type_: &str) -> Option<&Condition> {
        self.condition(type_).filter(|c| c.status == "True")
    }

    /// The condition of this type is `True`.
    pub fn is_true(&self, type_: &str) -> bool {
        self.true_condition(type_).is_some()
    }

    /// The condition of this type has this reason, whatever its status.
    pub fn has_reason(&self, type_: &str, reason: &str) -> bool {
        self.condition(type_).is_some_and(|c| c.reason == reason)
    }
}

/// A status condition (the shape of `metav1.Condition`).
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Reconciling` or `Stalled`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase reason, stable for automation.
    pub reason: String,
    /// What happened and what to do, for a human.
    pub message: String,
    /// When `status` last changed (RFC 3339).
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The CRD as YAML, as committed in `crds/apitoken.yaml`.
pub fn crd_yaml() -> Result<String, serde_norway::Error> {
    use kube::CustomResourceExt;
    let mut crd = serde_json::to_value(ApiToken::crd())
        .map_err(<serde_norway::Error as serde::ser::Error>::custom)?;
    unwrap_descriptions(&mut crd);
    let header =
        "# Generated by `cargo run --bin crdgen` from src/operator/resource/crd.rs. Do not edit.\n";
    Ok(format!("{header}{}", serde_norway::to_string(&crd)?))
}

/// Doc comments are wrapped at source width; `kubectl explain` wraps again. Join wrapped lines
/// (single newlines) and keep paragraph breaks.
pub(crate) fn unwrap_descriptions(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                match child {
                    serde_json::Value::String(text) if k == "description" => {
                        *text = text
                            .split("\n\n")
                            .map(|p| p.replace('\n', " "))
                            .collect::<Vec<_>>()
                            .join("\n\n");
                    }
                    _ => unwrap_descriptions(child),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(unwrap_descriptions),
        _ => {}
    }
}

/// Test fixtures shared by the operator's unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::ApiToken;

    /// An ApiToken `a` in namespace `n` with uid `u` and generation 1, with this spec.
    pub fn api_token(spec: serde_json::Value) -> ApiToken {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "loop.dev/v1alpha1", "kind": "ApiToken",
            "metadata": {"name": "a", "namespace": "n", "uid": "u", "generation": 1},
            "spec": spec
        }))
        .expect("a valid ApiToken")
    }

    /// The smallest valid ApiToken: one scope, defaults for the rest.
    pub fn minimal() -> ApiToken {
        api_token(serde_json::json!({"scopes": ["orders:read"]}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_an_almost_empty_spec() {
        let spec: ApiTokenSpec =
            serde_json::from_value(serde_json::json!({"scopes": ["orders:read"]})).unwrap();
        assert_eq!(
            spec.secret,
            SecretTarget {
                name: None,
                key: "token".into(),
                ..SecretTarget::default()
            }
        );
        assert_eq!(spec.rotation.grace_period, "1h");
        assert_eq!(spec.display_name, None);
    }

    #[test]
    fn status_condition_helpers_read_type_status_and_reason() {
        let cond = |type_: &str, status: &str, reason: &str| Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: String::new(),
            last_transition_time: String::new(),
            observed_generation: None,
        };
        let s = ApiTokenStatus {
            conditions: vec![
                cond("Ready", "False", "Expired"),
                cond("Stalled", "True", "X"),
            ],
            ..ApiTokenStatus::default()
        };
        assert!(s.is_true("Stalled") && !s.is_true("Ready") && !s.is_true("Unused"));
        assert!(s.has_reason("Ready", "Expired") && !s.has_reason("Ready", "X"));
        assert_eq!(
            s.true_condition("Stalled").map(|c| c.reason.as_str()),
            Some("X")
        );
        assert!(s.true_condition("Ready").is_none() && s.condition("Ready").is_some());
    }

    #[test]
    fn the_committed_crd_is_current() {
        let committed = include_str!("../../../crds/apitoken.yaml");
        assert!(
            committed == crd_yaml().unwrap(),
            "crds/apitoken.yaml is stale; regenerate it with: cargo run --bin crdgen > crds/apitoken.yaml"
        );
    }

    #[test]
    fn the_charts_crd_is_the_same() {
        assert!(
            include_str!("../../../charts/loop-token-operator/crds/apitoken.yaml")
                == include_str!("../../../crds/apitoken.yaml"),
            "charts/loop-token-operator/crds/apitoken.yaml differs; copy it: cp crds/apitoken.yaml charts/loop-token-operator/crds/"
        );
    }

    #[test]
    fn the_schema_says_what_the_api_server_must_enforce() {
        let yaml = crd_yaml().unwrap();
        for needle in [
            "x-kubernetes-list-type: set",
            "^[a-z][a-z0-9_-]{0,62}:(read|write)$",
            "duration(self) <= duration('168h')",
            "minItems: 1",
            "maxLength: 100",
            "subresources:\n      status: {}",
            "shortNames:\n    - lat",
        ] {
            assert!(
                yaml.contains(needle),
                "missing {needle:?} in the CRD:\n{yaml}"
            );
        }
        // The CRD's scope pattern is the store's.
        assert!(yaml.contains(crate::store::scopes::SCOPE_PATTERN));
    }
}
