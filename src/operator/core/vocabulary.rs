//! The shared vocabulary of the decision core: what the spec asks for ([`Desired`]), what was
//! observed ([`SecretObs`], [`RegObs`]), and what to do ([`Action`], [`Plan`]) and why. Pure; a
//! leaf of `core/` (it imports only `resource/` and [`super::schedule`]), so that the rule
//! modules ([`super::plan`], [`super::usage`], [`super::rollout`], [`super::events`], ...) can
//! share it without importing one another.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};

use crate::operator::core::schedule::{Aging, Due};
use crate::operator::resource::crd::{
    ApiToken, Retire, RolloutPolicy, RolloutTarget, UnusedAction,
};

/// Why a spec cannot be acted on (the schema prevents these; this is defence in depth).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecProblem {
    #[error("spec.{field} {value:?} is not a duration such as 1h, 30m or 0s")]
    Duration { field: &'static str, value: String },
    #[error("spec.scopes is empty")]
    NoScopes,
}

/// What the spec asks for, with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub secret_name: String,
    pub secret_key: String,
    pub display_name: String,
    /// Sorted, without duplicates.
    pub scopes: Vec<String>,
    pub grace: SignedDuration,
    /// The current `loop.dev/rotate` value, if any.
    pub rotation_request: Option<String>,
    /// Schedule and expiry.
    pub aging: Aging,
    /// `spec.unused`.
    pub unused: Option<Unused>,
    /// `spec.rotation.retireWhenIdle`.
    pub retire_when_idle: Option<SignedDuration>,
    /// The Secret's extra labels, annotations and keys, and the workloads to restart.
    pub consumers: Consumers,
}

/// The target Secret as observed (the shell computes the fingerprint; the plan never sees a
/// token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretObs {
    /// Controlled by this ApiToken (owner reference with its uid).
    pub owned: bool,
    /// Annotation: store id of the token in the Secret.
    pub token_id: Option<String>,
    /// Annotation: the token the current one replaced.
    pub previous_token_id: Option<String>,
    /// Annotation: when the current token was written.
    pub issued_at: Option<Timestamp>,
    /// Annotation: the `loop.dev/rotate` value the current token answered.
    pub rotation_request: Option<String>,
    /// Fingerprint of a well-formed token under the desired key; `None` when the key is missing
    /// or does not hold a well-formed token.
    pub fingerprint: Option<String>,
    /// Labels, key and annotations are as the operator writes them.
    pub shape_ok: bool,
    /// Annotation: the tokens kept in their grace period when the current one was issued.
    /// `None` in a record written before the list existed.
    pub retired: Option<Vec<Retired>>,
    /// The token the record says was revoked as unused (`spec.unused.action: Revoke`).
    pub revoked_unused: Option<String>,
    /// From when non-use is counted (`spec.unused`, see [`usage::counting_from`]).
    pub usage_from: Option<Timestamp>,
}

/// A token an issue left in its grace period, as the Secret record lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retired {
    pub id: String,
    /// The end of its grace period (`None` if the record does not say).
    pub until: Option<Timestamp>,
}

/// A store registration of this resource (from `GET /v1/tokens?ownerUid=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegObs {
    pub id: String,
    pub fingerprint: String,
    pub name: String,
    /// Sorted.
    pub scopes: Vec<String>,
    pub expires_at: Option<Timestamp>,
    pub revoked: bool,
    pub last_used_at: Option<Timestamp>,
    pub use_count: i64,
    /// When the store registered it.
    pub created_at: Timestamp,
}

impl RegObs {
    /// Neither revoked nor expired at `now`.
    pub fn active(&self, now: Timestamp) -> bool {
        !self.revoked && self.expires_at.is_none_or(|e| e > now)
    }
}

/// Why a token is issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueReason {
    /// No token yet.
    First,
    /// The `loop.dev/rotate` annotation changed.
    Rotation,
    /// `spec.rotation.every` has passed since the current token was issued.
    Scheduled,
    /// The current token is close to its expiry (`spec.expiry.renew`).
    Renewal,
    /// The current token expired (the operator was down when it was due).
    Expired,
    /// The Secret was deleted, or edited so that it no longer holds the registered token.
    SecretLost,
    /// The current token was revoked or expired in the store by someone else.
    RevokedElsewhere,
}

/// Why a registration is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    /// Its grace period or its expiry is over (or the grace period was zero).
    GraceOver,
    /// Not in the Secret and not in a grace period: left by an interrupted issue.
    Orphan,
    /// The ApiToken is being deleted.
    Deleted,
    /// The current token went unused since then for longer than `spec.unused.after`
    /// (`action: Revoke`).
    Unused { since: Timestamp },
    /// A previous token went unused since then for `spec.rotation.retireWhenIdle`, and the new
    /// token is in use: its grace period ends early.
    Idle { since: Timestamp },
    /// Every rollout target runs the current token (`spec.rollout.retire: AfterRollout`): the
    /// previous one is revoked before its grace period ends.
    RolledOut,
}

/// One step, in the order the shell must run them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Mint, register, write the Secret recording `previous`, the tokens that stay in their
    /// grace period (`retired`, `previous` included) and the rotate value the new token
    /// `answers`.
    Issue {
        previous: Option<String>,
        reason: IssueReason,
        retired: Vec<Retired>,
        answers: Option<String>,
    },
    /// The store lost the Secret's token: register it again (same token, same id).
    Reregister {
        id: String,
    },
    /// Write the Secret again with the token it holds and this issue time (labels, key or
    /// annotations were edited).
    RewriteSecret {
        issued_at: Timestamp,
    },
    /// Bring the current registration's name, scopes and expiry in line with the spec.
    /// `expiry`: `None` leaves it, `Some(None)` clears it, `Some(Some(t))` sets it.
    Update {
        id: String,
        name: String,
        scopes: Vec<String>,
        expiry: Option<Option<Timestamp>>,
    },
    /// Record in the Secret that its token `id` is revoked as unused, and remove the token from
    /// it (before the revocation, so that a crash between the two does not reissue).
    MarkUnused {
        id: String,
    },
    /// Start a previous token's grace period: it stops working at `at`.
    Expire {
        id: String,
        at: Timestamp,
    },
    Revoke {
        id: String,
        reason: RevokeReason,
    },
}

/// Why the resource cannot make progress without a human.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// A Secret of that name exists and is not ours.
    SecretConflict {
        secret: String,
    },
    /// The current token expired and `spec.expiry.renew` is off: a new rotate value issues one.
    Expired {
        fingerprint: String,
        at: Timestamp,
    },
    /// The current token was revoked as unused (`spec.unused.action: Revoke`): a new rotate
    /// value issues one.
    RevokedUnused {
        fingerprint: String,
        since: Timestamp,
    },
    Spec(SpecProblem),
}

/// A previous token in its grace period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grace {
    pub id: String,
    pub fingerprint: String,
    /// When its grace period ends.
    pub until: Timestamp,
    pub last_used_at: Option<Timestamp>,
    /// Used half-way through its grace period (see [`usage::still_in_use`]).
    pub in_use_half_way: bool,
}

/// The outcome of planning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub blocked: Option<Blocked>,
    /// The current token, when there is one and no issue is pending.
    pub current: Option<RegObs>,
    /// Tokens in their grace period, soonest end first.
    pub in_grace: Vec<Grace>,
    /// The current token is unused (`spec.unused.action: Warn`).
    pub unused: Option<Idle>,
    /// The rotation value the current token answered.
    pub handled_rotation: Option<String>,
    /// When the current token was issued.
    pub issued_at: Option<Timestamp>,
    /// When the current token expires (as it must be registered).
    pub expires_at: Option<Timestamp>,
    /// When the current token is due to be replaced, and why.
    pub next_rotation: Option<(Timestamp, Due)>,
    /// Come back then even if nothing changes (a rotation due, an expiry, a grace period
    /// ending).
    pub wake_at: Option<Timestamp>,
}

impl Plan {
    /// Come back at `at` at the latest.
    pub fn wake(&mut self, at: Timestamp) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}

/// What the token's consumers ask of the operator besides the token: the Secret's extra
/// labels, annotations and rendered keys, and the workloads to restart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Consumers {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Key → template text (placeholders `${token}`, `${tokenId}`, `${fingerprint}`,
    /// `${issuedAt}`).
    pub template: BTreeMap<String, String>,
    pub rollout: Option<RolloutPolicy>,
}

impl Consumers {
    /// From the spec (the schema has checked the keys and placeholders).
    pub fn of(t: &ApiToken) -> Consumers {
        let s = &t.spec.secret;
        Consumers {
            labels: s.labels.clone(),
            annotations: s.annotations.clone(),
            template: s.template.clone(),
            rollout: t.spec.rollout.clone(),
        }
    }

    /// The rollout targets (none without `spec.rollout`).
    pub fn targets(&self) -> &[RolloutTarget] {
        self.rollout.as_ref().map_or(&[], |r| r.targets.as_slice())
    }

    /// Whether the previous token is revoked once the targets have rolled out.
    pub fn retire_after_rollout(&self) -> bool {
        self.rollout
            .as_ref()
            .is_some_and(|r| r.retire == Retire::AfterRollout)
    }
}

/// `spec.unused`, with durations parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unused {
    pub after: SignedDuration,
    pub action: UnusedAction,
}

/// A token unused for longer than `spec.unused.after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idle {
    pub fingerprint: String,
    /// Its last use, or its issue when it was never used.
    pub since: Timestamp,
    /// `spec.unused.after`.
    pub after: SignedDuration,
}
