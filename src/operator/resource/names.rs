//! Every name the operator shares with users, other tools and its own future versions, in one
//! place: the names of DESIGN.md §3, the Secret record's annotations, condition types and
//! reasons, and Event reasons. Pure constants, no I/O.
//!
//! Changing one of these is a breaking change for someone: a user's `kubectl wait`, an alert on
//! a reason, a Secret written by an older operator.

/// Annotation whose every new value asks for one rotation.
pub const ROTATE_ANNOTATION: &str = "loop.dev/rotate";
/// Finalizer that holds deletion until every token of the resource is revoked.
pub const FINALIZER: &str = "loop.dev/revoke";
/// Label on every Secret the operator manages.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "loop-token-operator";
/// Label naming the ApiToken a Secret belongs to.
pub const API_TOKEN_LABEL: &str = "loop.dev/api-token";
/// Server-side apply field manager of the operator, and the controller name in Events.
pub const FIELD_MANAGER: &str = "loop-token-operator";
/// Default key of the token in its Secret.
pub const DEFAULT_SECRET_KEY: &str = "token";
/// Default grace period of the previous token after a rotation.
pub const DEFAULT_GRACE_PERIOD: &str = "1h";
/// Annotation on an ApiToken that is being deleted: release it without reaching the store (the
/// store is gone for good); the value says why. Ignored on an ApiToken not being deleted.
pub const ABANDON_ANNOTATION: &str = "loop.dev/abandon-revocation";
/// Prefix of the pod template annotation that restarts a rollout target for an ApiToken:
/// `loop.dev/restarted-for.<ApiToken name>: <fingerprint>`.
pub const RESTARTED_FOR_PREFIX: &str = "loop.dev/restarted-for.";
/// The client-side-apply copy of an object, which the operator never reads.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Secret annotations: the durable record of the token chain (see `plan` and `secret`).
pub mod secret_annotations {
    pub const TOKEN_ID: &str = "loop.dev/token-id";
    pub const PREVIOUS_TOKEN_ID: &str = "loop.dev/previous-token-id";
    pub const ISSUED_AT: &str = "loop.dev/issued-at";
    pub const ROTATION_REQUEST: &str = "loop.dev/rotation-request";
    /// Comma-separated store ids of the tokens kept in their grace period by this issue.
    pub const RETIRED_TOKEN_IDS: &str = "loop.dev/retired-token-ids";
    pub const FINGERPRINT: &str = "loop.dev/fingerprint";
    pub const TOKEN_KEY: &str = "loop.dev/token-key";
    /// On a Secret its ApiToken left behind (`deletionPolicy: Orphan`): that ApiToken's uid.
    pub const ORPHANED_FROM: &str = "loop.dev/orphaned-from";
    /// The store id of the Secret's token when it was revoked as unused (`spec.unused.action:
    /// Revoke`); the token is no longer in the Secret. A new rotate value issues a new one.
    pub const REVOKED_UNUSED: &str = "loop.dev/revoked-unused";
    /// From when non-use of the ApiToken's tokens is counted (`spec.unused`): the first token's
    /// issue, carried to each new token, restarted after a revocation as unused.
    pub const USAGE_COUNTED_FROM: &str = "loop.dev/usage-counted-from";
    /// The labels, annotations and data keys the operator added from `spec.secret` (so that
    /// those removed from the spec are removed from the Secret, and no others).
    pub const EXTRAS: &str = "loop.dev/extras";
    /// A digest of `spec.secret.template` as last rendered (an edited template renders again).
    pub const TEMPLATE_DIGEST: &str = "loop.dev/template-digest";
}

/// Condition types (kstatus conventions).
pub mod condition {
    pub const READY: &str = "Ready";
    pub const RECONCILING: &str = "Reconciling";
    pub const STALLED: &str = "Stalled";
    /// The current token went unused for longer than `spec.unused.after` (only while true).
    pub const UNUSED: &str = "Unused";
}

/// Condition reasons: stable, CamelCase, for automation and `kubectl get -o wide`.
pub mod reason {
    pub const ISSUED: &str = "Issued";
    pub const PROGRESSING: &str = "Progressing";
    pub const SECRET_CONFLICT: &str = "SecretConflict";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const UNKNOWN_SCOPE: &str = "UnknownScope";
    pub const STORE_REJECTED: &str = "StoreRejected";
    pub const STORE_CREDENTIAL_REJECTED: &str = "StoreCredentialRejected";
    pub const STORE_UNAVAILABLE: &str = "StoreUnavailable";
    pub const KUBERNETES_ERROR: &str = "KubernetesError";
    pub const REVOCATION_PENDING: &str = "RevocationPending";
    /// The token expired and `spec.expiry.renew` is off.
    pub const EXPIRED: &str = "Expired";
    /// A rotation is due and cannot happen (the store or the API server fails).
    pub const ROTATION_OVERDUE: &str = "RotationOverdue";
    /// Outside the ApiTokenPolicies of its namespace (Stalled).
    pub const POLICY_VIOLATION: &str = "PolicyViolation";
    /// The token was revoked as unused (`spec.unused.action: Revoke`); Stalled.
    pub const REVOKED_UNUSED: &str = "RevokedUnused";
    /// `Unused=True`: no call for longer than `spec.unused.after`.
    pub const IDLE: &str = "Idle";
    /// `Reconciling`: rollout targets are restarting for the current token.
    pub const ROLLOUT_IN_PROGRESS: &str = "RolloutInProgress";
    /// `Reconciling`: a rollout target does not exist.
    pub const ROLLOUT_TARGET_MISSING: &str = "RolloutTargetMissing";
    /// `Reconciling`: the operator may not read or patch the rollout targets.
    pub const ROLLOUT_FORBIDDEN: &str = "RolloutForbidden";
}

/// Event reasons (the `reason` and `action` of each Event the operator publishes).
pub mod event {
    pub const ROTATED: &str = "Rotated";
    pub const REISSUED: &str = "Reissued";
    pub const REREGISTERED: &str = "Reregistered";
    pub const SECRET_REPAIRED: &str = "SecretRepaired";
    pub const UPDATED: &str = "Updated";
    pub const REVOKED: &str = "Revoked";
    /// The same words as the condition reasons, on purpose: the Event marks the transition.
    pub const SECRET_CONFLICT: &str = super::reason::SECRET_CONFLICT;
    pub const STORE_REJECTED: &str = super::reason::STORE_REJECTED;
    pub const EXPIRED: &str = super::reason::EXPIRED;
    pub const ROTATION_OVERDUE: &str = super::reason::ROTATION_OVERDUE;
    pub const POLICY_VIOLATION: &str = super::reason::POLICY_VIOLATION;
    /// Released without revoking (`loop.dev/abandon-revocation`).
    pub const REVOCATION_ABANDONED: &str = "RevocationAbandoned";
    /// Deleted with `deletionPolicy: Orphan`: the token and its Secret were kept.
    pub const ORPHANED: &str = "Orphaned";
    /// A token and Secret an earlier ApiToken of the same name left behind were taken over.
    pub const ADOPTED: &str = "Adopted";
    /// The current token went unused for longer than `spec.unused.after` (`action: Warn`).
    pub const UNUSED: &str = super::condition::UNUSED;
    /// The current token was revoked as unused (`action: Revoke`).
    pub const REVOKED_UNUSED: &str = super::reason::REVOKED_UNUSED;
    /// A previous token's grace period ended early (`spec.rotation.retireWhenIdle`).
    pub const RETIRED: &str = "Retired";
    /// A previous token is still used half-way through its grace period.
    pub const PREVIOUS_TOKEN_STILL_IN_USE: &str = "PreviousTokenStillInUse";
    /// A rollout target was restarted for a new token.
    pub const RESTARTED: &str = "RolloutRestarted";
    pub const ROLLOUT_TARGET_MISSING: &str = super::reason::ROLLOUT_TARGET_MISSING;
    pub const ROLLOUT_FORBIDDEN: &str = super::reason::ROLLOUT_FORBIDDEN;
    /// The previous token's grace period ended before a target finished its rollout.
    pub const ROLLOUT_INCOMPLETE: &str = "RolloutIncomplete";
}
