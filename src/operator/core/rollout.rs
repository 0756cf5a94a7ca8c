//! Restarting the apps that read the token: which rollout targets to patch and with what value,
//! whether a target's rollout is complete (as `kubectl rollout status` judges it), and the
//! status entries and condition that say so. Pure, no I/O: the shell's `rollout_io` reads the
//! targets, patches them and writes what these functions return.
//!
//! A target is restarted by setting its pod template annotation
//! `loop.dev/restarted-for.<ApiToken name>` to the current token's fingerprint. The value is a
//! function of the token alone, so a crash, an operator restart or a second reconcile writes
//! nothing new: exactly one restart per rotation. A first token restarts nothing (the app
//! starts with it); any later token (a rotation, a reissue) restarts each target whose
//! annotation differs.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::operator::resource::crd::{
    ApiTokenStatus, Condition, RolloutState, RolloutTarget, RolloutTargetStatus,
};
use kube::runtime::events::EventType;

use crate::operator::core::events::Note;
use crate::operator::resource::names::{RESTARTED_FOR_PREFIX, condition, event, reason};

/// How soon an ApiToken whose rollout is pending, or whose target is missing, is looked at
/// again.
pub const RECHECK_PENDING: Duration = Duration::from_secs(5);
/// How soon an ApiToken whose rollout targets the operator may not read is looked at again.
pub const RECHECK_FORBIDDEN: Duration = Duration::from_secs(60);

/// The longest ApiToken name whose restart annotation is a valid key (`restarted-for.` plus
/// the name must fit the 63 characters of an annotation name).
pub const MAX_NAME_FOR_ROLLOUT: usize = 63 - "restarted-for.".len();

/// The pod template annotation that restarts a target for the ApiToken `name`; `None` when the
/// name is too long to make a valid annotation key.
pub fn annotation_key(name: &str) -> Option<String> {
    (name.len() <= MAX_NAME_FOR_ROLLOUT).then(|| format!("{RESTARTED_FOR_PREFIX}{name}"))
}

/// How far a workload's rollout is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Complete,
    /// Not complete, and what it waits for.
    Waiting(String),
}

/// A rollout target as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetObs {
    pub target: RolloutTarget,
    /// `None`: not found.
    pub found: Option<Found>,
}

/// A target that exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The value of this ApiToken's restart annotation on the pod template.
    pub restarted_for: Option<String>,
    pub progress: Progress,
}

/// What to do with one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restart {
    pub target: RolloutTarget,
    /// The annotation's key and value (the current fingerprint).
    pub key: String,
    pub value: String,
}

/// Which targets to restart for the token `fingerprint`. `replaced`: the token replaced an
/// earlier one (a first token restarts nothing). Missing targets are skipped (they start with
/// the current token when created).
pub fn restarts(name: &str, fingerprint: &str, replaced: bool, seen: &[TargetObs]) -> Vec<Restart> {
    let Some(key) = annotation_key(name).filter(|_| replaced) else {
        return Vec::new();
    };
    seen.iter()
        .filter(|o| {
            o.found
                .as_ref()
                .is_some_and(|f| f.restarted_for.as_deref() != Some(fingerprint))
        })
        .map(|o| Restart {
            target: o.target.clone(),
            key: key.clone(),
            value: fingerprint.to_owned(),
        })
        .collect()
}

/// The status entry of each target, after the restarts were made. A target restarted in this
/// reconcile is pending whatever it said before (its controller has not seen the change yet).
pub fn entries(
    fingerprint: &str,
    replaced: bool,
    seen: &[TargetObs],
    restarted: &[Restart],
) -> Vec<RolloutTargetStatus> {
    seen.iter()
        .map(|o| {
            let (state, message) = match &o.found {
                None => (
                    RolloutState::Missing,
                    Some(format!(
                        "{} {} not found",
                        o.target.kind.as_str(),
                        o.target.name
                    )),
                ),
                Some(_) if restarted.iter().any(|r| r.target == o.target) => (
                    RolloutState::Pending,
                    Some("restarted for the new token".to_owned()),
                ),
                Some(f) if replaced && f.restarted_for.as_deref() != Some(fingerprint) => (
                    RolloutState::Pending,
                    Some("not restarted for the current token yet".to_owned()),
                ),
                Some(f) => match &f.progress {
                    Progress::Complete => (RolloutState::Complete, None),
                    Progress::Waiting(why) => (RolloutState::Pending, Some(why.clone())),
                },
            };
            RolloutTargetStatus {
                kind: o.target.kind.as_str().to_owned(),
                name: o.target.name.clone(),
                fingerprint: fingerprint.to_owned(),
                state,
                message,
            }
        })
        .collect()
}

/// The fingerprint every target has completely rolled out, if they all have: the one the
/// plan may retire the previous token for (`spec.rollout.retire: AfterRollout`).
pub fn rolled_out(name: &str, seen: &[TargetObs]) -> Option<String> {
    annotation_key(name)?;
    let mut fps = seen.iter().map(|o| match &o.found {
        Some(Found {
            restarted_for: Some(fp),
            progress: Progress::Complete,
        }) => Some(fp.as_str()),
        _ => None,
    });
    let first = fps.next()??;
    fps.all(|fp| fp == Some(first)).then(|| first.to_owned())
}

/// Why the rollout cannot be followed at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unfollowable {
    /// The ApiToken's name is too long for the restart annotation.
    NameTooLong,
    /// The operator may not read or patch the targets (the chart's `rollout.enabled` is off).
    Forbidden(String),
}

/// The rollout as a reconcile saw it, for the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Entries(Vec<RolloutTargetStatus>),
    Unfollowable(Unfollowable),
}

impl Report {
    /// The `Reconciling` condition it calls for (reason, message), if any: a rollout in
    /// progress, a missing target, or a rollout the operator cannot follow.
    pub fn reconciling(&self) -> Option<(&'static str, String)> {
        let entries = match self {
            Report::Unfollowable(Unfollowable::NameTooLong) => {
                return Some((
                    reason::ROLLOUT_FORBIDDEN,
                    format!(
                        "the ApiToken's name is longer than {MAX_NAME_FOR_ROLLOUT} characters, too long for the pod template annotation loop.dev/restarted-for.<name>; its rollout targets are not restarted"
                    ),
                ));
            }
            Report::Unfollowable(Unfollowable::Forbidden(e)) => {
                return Some((
                    reason::ROLLOUT_FORBIDDEN,
                    format!(
                        "the operator may not read or patch the rollout targets ({e}); install the chart with rollout.enabled=true, or remove spec.rollout. The token itself is issued and rotated"
                    ),
                ));
            }
            Report::Entries(e) => e,
        };
        let missing: Vec<String> = entries
            .iter()
            .filter(|e| e.state == RolloutState::Missing)
            .map(|e| format!("{} {}", e.kind, e.name))
            .collect();
        if !missing.is_empty() {
            return Some((
                reason::ROLLOUT_TARGET_MISSING,
                format!(
                    "rollout target not found: {}; it is restarted for the current token once it exists",
                    missing.join(", ")
                ),
            ));
        }
        let pending: Vec<String> = entries
            .iter()
            .filter(|e| e.state == RolloutState::Pending)
            .map(|e| {
                format!(
                    "{} {} ({})",
                    e.kind,
                    e.name,
                    e.message.as_deref().unwrap_or("")
                )
            })
            .collect();
        (!pending.is_empty()).then(|| {
            (
                reason::ROLLOUT_IN_PROGRESS,
                format!("rolling out token to {}", pending.join(", ")),
            )
        })
    }

    /// How soon the operator should look again (targets are not watched): soon while a target
    /// is pending or missing, now and then while it may not read them (the chart may be
    /// upgraded), not for a name that will stay too long.
    pub fn recheck_after(&self) -> Option<Duration> {
        match self {
            Report::Entries(e) if e.iter().any(|e| e.state != RolloutState::Complete) => {
                Some(RECHECK_PENDING)
            }
            Report::Unfollowable(Unfollowable::Forbidden(_)) => Some(RECHECK_FORBIDDEN),
            _ => None,
        }
    }
}

/// Put the report into a status computed for a converged ApiToken: `status.rollout`, and a
/// `Reconciling` condition while the rollout is not done (keeping its `lastTransitionTime`
/// from `old`). Ready stays as computed: the token in the Secret works either way.
pub fn apply_to_status(old: &ApiTokenStatus, new: &mut ApiTokenStatus, report: &Report, now: &str) {
    new.rollout = match report {
        Report::Entries(e) => e.clone(),
        Report::Unfollowable(_) => Vec::new(),
    };
    new.conditions.retain(|c| c.type_ != condition::RECONCILING);
    if let Some((why, message)) = report.reconciling() {
        let since = old
            .true_condition(condition::RECONCILING)
            .map_or_else(|| now.to_owned(), |c| c.last_transition_time.clone());
        new.conditions.push(Condition {
            type_: condition::RECONCILING.to_owned(),
            status: "True".to_owned(),
            reason: why.to_owned(),
            message,
            last_transition_time: since,
            observed_generation: new.observed_generation,
        });
    }
}

/// The targets whose state became `Missing`, or whose rollout has not completed although the
/// previous token's grace period is over: each deserves one Warning. Compared with the last
/// status, so that a lasting situation is announced once.
pub fn newly_missing<'a>(
    old: &ApiTokenStatus,
    entries: &'a [RolloutTargetStatus],
) -> Vec<&'a RolloutTargetStatus> {
    entries
        .iter()
        .filter(|e| e.state == RolloutState::Missing)
        .filter(|e| {
            !old.rollout
                .iter()
                .any(|o| o.kind == e.kind && o.name == e.name && o.state == RolloutState::Missing)
        })
        .collect()
}

/// The targets still pending when the previous token's grace period has just ended (the last
/// status listed a previous token, `in_grace_now` says none is left): the rollout did not
/// complete within the grace period. Announced once, at that transition.
pub fn overdue<'a>(
    old: &ApiTokenStatus,
    entries: &'a [RolloutTargetStatus],
    in_grace_now: bool,
) -> Vec<&'a RolloutTargetStatus> {
    if old.previous_tokens.is_empty() || in_grace_now {
        return Vec::new();
    }
    entries
        .iter()
        .filter(|e| e.state == RolloutState::Pending)
        .collect()
}

fn restarted_for(meta: Option<&ObjectMeta>, key: &str) -> Option<String> {
    meta?.annotations.as_ref()?.get(key).cloned()
}

fn waiting(why: String) -> Progress {
    Progress::Waiting(why)
}

/// A Deployment's rollout, by `kubectl rollout status`'s rules.
pub fn deployment(d: &Deployment, key: &str) -> Found {
    let spec = Some(&d.spec);
    let st = d.status.clone().unwrap_or_default();
    let generation = d.metadata.generation.unwrap_or(0);
    let want = spec.and_then(|s| s.replicas).unwrap_or(1);
    let updated = st.updated_replicas.unwrap_or(0);
    let progress = if generation > st.observed_generation.unwrap_or(0) {
        waiting("waiting for the deployment controller to see the change".into())
    } else if st.conditions.iter().flatten().any(|c| {
        c.type_.as_deref() == Some("Progressing")
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    }) {
        waiting("its progress deadline was exceeded".into())
    } else if updated < want {
        waiting(format!("{updated} of {want} replicas updated"))
    } else if st.replicas.unwrap_or(0) > updated {
        waiting(format!(
            "{} old replicas pending termination",
            st.replicas.unwrap_or(0) - updated
        ))
    } else if st.available_replicas.unwrap_or(0) < updated {
        waiting(format!(
            "{} of {updated} updated replicas available",
            st.available_replicas.unwrap_or(0)
        ))
    } else {
        Progress::Complete
    };
    Found {
        restarted_for: restarted_for(spec.and_then(|s| s.template.metadata.as_ref()), key),
        progress,
    }
}

/// A StatefulSet's rollout, by `kubectl rollout status`'s rules (only `RollingUpdate` can be
/// followed: with `OnDelete` it never counts as complete), except for a partition: `kubectl`
/// calls a partitioned rollout done once the pods above the partition are updated, but the pods
/// below it keep the previous token, so it never counts as complete here (`AfterRollout` must
/// not revoke a token pods still hold).
pub fn stateful_set(s: &StatefulSet, key: &str) -> Found {
    let spec = Some(&s.spec);
    let st = s.status.clone().unwrap_or_default();
    let generation = s.metadata.generation.unwrap_or(0);
    let strategy = spec.and_then(|s| s.update_strategy.as_ref());
    let on_delete = strategy.and_then(|u| u.type_.as_deref()) == Some("OnDelete");
    let partition = strategy
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0);
    let want = spec.and_then(|s| s.replicas).unwrap_or(1);
    let observed = st.observed_generation.unwrap_or(0);
    let progress = if on_delete {
        waiting("updateStrategy OnDelete: its pods change only when deleted".into())
    } else if observed == 0 || generation > observed {
        waiting("waiting for the statefulset controller to see the change".into())
    } else if st.ready_replicas.unwrap_or(0) < want {
        waiting(format!(
            "{} of {want} replicas ready",
            st.ready_replicas.unwrap_or(0)
        ))
    } else if partition > 0 {
        waiting(format!(
            "rollingUpdate.partition {partition}: the pods below it keep the previous token until the partition is 0"
        ))
    } else if st.update_revision != Some(st.current_revision.clone().unwrap_or_default()) {
        waiting(format!(
            "{} of {want} replicas updated",
            st.updated_replicas.unwrap_or(0)
        ))
    } else {
        Progress::Complete
    };
    Found {
        restarted_for: restarted_for(spec.and_then(|s| s.template.metadata.as_ref()), key),
        progress,
    }
}

/// A DaemonSet's rollout, by `kubectl rollout status`'s rules (`OnDelete` never completes).
pub fn daemon_set(d: &DaemonSet, key: &str) -> Found {
    let spec = Some(&d.spec);
    let st = d.status.clone().unwrap_or_default();
    let generation = d.metadata.generation.unwrap_or(0);
    let on_delete = spec
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        == Some("OnDelete");
    let want = st.desired_number_scheduled;
    let progress = if on_delete {
        waiting("updateStrategy OnDelete: its pods change only when deleted".into())
    } else if generation > st.observed_generation.unwrap_or(0) {
        waiting("waiting for the daemonset controller to see the change".into())
    } else if st.updated_number_scheduled.unwrap_or(0) < want {
        waiting(format!(
            "{} of {want} pods updated",
            st.updated_number_scheduled.unwrap_or(0)
        ))
    } else if st.number_available.unwrap_or(0) < want {
        waiting(format!(
            "{} of {want} updated pods available",
            st.number_available.unwrap_or(0)
        ))
    } else {
        Progress::Complete
    };
    Found {
        restarted_for: restarted_for(spec.and_then(|s| s.template.metadata.as_ref()), key),
        progress,
    }
}

/// The merge patch that restarts a target: only its pod template annotation.
pub fn patch(r: &Restart) -> serde_json::Value {
    serde_json::json!({"spec": {"template": {"metadata": {"annotations": {r.key.as_str(): r.value}}}}})
}

/// The Event for a target restarted for a new token.
pub fn restarted_note(r: &Restart) -> Note {
    Note {
        type_: EventType::Normal,
        reason: event::RESTARTED,
        note: format!(
            "{} {} restarted for token {} (pod template annotation {})",
            r.target.kind.as_str(),
            r.target.name,
            r.value,
            r.key
        ),
    }
}

/// The Warning for a target that does not exist.
pub fn missing_note(e: &RolloutTargetStatus) -> Note {
    Note {
        type_: EventType::Warning,
        reason: event::ROLLOUT_TARGET_MISSING,
        note: format!(
            "rollout target {} {} not found in this namespace; it is restarted for the current token once it exists",
            e.kind, e.name
        ),
    }
}

/// The Warning for a target whose rollout did not complete within the grace period.
pub fn incomplete_note(e: &RolloutTargetStatus) -> Note {
    Note {
        type_: EventType::Warning,
        reason: event::ROLLOUT_INCOMPLETE,
        note: format!(
            "{} {} has not finished rolling out token {} ({}), and the previous token's grace period is over: pods still running the previous token are refused",
            e.kind,
            e.name,
            e.fingerprint,
            e.message.as_deref().unwrap_or("pending")
        ),
    }
}

/// The Warning for a rollout the operator may not follow (announced on the way in).
pub fn unfollowable_note(report: &Report) -> Option<Note> {
    let (_, message) = report.reconciling()?;
    matches!(report, Report::Unfollowable(_)).then(|| Note {
        type_: EventType::Warning,
        reason: event::ROLLOUT_FORBIDDEN,
        note: message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::resource::crd::RolloutKind;
    use serde_json::json;

    const KEY: &str = "loop.dev/restarted-for.shop-token";

    fn target(kind: RolloutKind, name: &str) -> RolloutTarget {
        RolloutTarget {
            kind,
            name: name.into(),
        }
    }

    fn obs(name: &str, restarted_for: Option<&str>, progress: Progress) -> TargetObs {
        TargetObs {
            target: target(RolloutKind::Deployment, name),
            found: Some(Found {
                restarted_for: restarted_for.map(str::to_owned),
                progress,
            }),
        }
    }

    fn missing(name: &str) -> TargetObs {
        TargetObs {
            target: target(RolloutKind::Deployment, name),
            found: None,
        }
    }

    fn deploy(v: serde_json::Value) -> Deployment {
        serde_json::from_value(v).expect("a Deployment")
    }

    /// A Deployment at `generation` whose controller reports this status.
    fn dep(generation: i64, replicas: i32, status: serde_json::Value) -> Deployment {
        deploy(json!({
            "metadata": {"name": "shop", "generation": generation},
            "spec": {"replicas": replicas, "selector": {}, "template": {
                "metadata": {"annotations": {KEY: "fp-b"}}}},
            "status": status,
        }))
    }

    #[test]
    fn a_first_token_restarts_nothing() {
        let seen = [obs("shop", None, Progress::Complete)];
        assert_eq!(restarts("shop-token", "fp-a", false, &seen), vec![]);
        let e = entries("fp-a", false, &seen, &[]);
        assert_eq!(e[0].state, RolloutState::Complete);
    }

    #[test]
    fn a_new_token_restarts_each_target_once() {
        let seen = [
            obs("shop", Some("fp-a"), Progress::Complete),
            obs("worker", None, Progress::Complete),
            missing("gone"),
        ];
        let r = restarts("shop-token", "fp-b", true, &seen);
        assert_eq!(
            r.iter().map(|r| r.target.name.as_str()).collect::<Vec<_>>(),
            ["shop", "worker"]
        );
        assert_eq!((r[0].key.as_str(), r[0].value.as_str()), (KEY, "fp-b"));
        assert_eq!(
            patch(&r[0]),
            json!({"spec": {"template": {"metadata": {"annotations": {KEY: "fp-b"}}}}})
        );
        // Once patched, the same value is never written again (a crash, a restart, an edit).
        let seen = [obs(
            "shop",
            Some("fp-b"),
            Progress::Waiting("0 of 1".into()),
        )];
        assert_eq!(restarts("shop-token", "fp-b", true, &seen), vec![]);
    }

    #[test]
    fn states_say_how_far_each_target_is() {
        let seen = [
            obs("done", Some("fp-b"), Progress::Complete),
            obs(
                "rolling",
                Some("fp-b"),
                Progress::Waiting("0 of 2 available".into()),
            ),
            obs("now", Some("fp-a"), Progress::Complete),
            missing("gone"),
        ];
        let restarted = restarts("shop-token", "fp-b", true, &seen);
        let e = entries("fp-b", true, &seen, &restarted);
        let states: Vec<RolloutState> = e.iter().map(|e| e.state).collect();
        assert_eq!(
            states,
            [
                RolloutState::Complete,
                RolloutState::Pending,
                RolloutState::Pending,
                RolloutState::Missing
            ]
        );
        assert!(e.iter().all(|e| e.fingerprint == "fp-b"));
        let report = Report::Entries(e);
        let (why, msg) = report.reconciling().expect("a condition");
        assert_eq!(why, reason::ROLLOUT_TARGET_MISSING);
        assert!(msg.contains("Deployment gone"), "{msg}");
        assert_eq!(report.recheck_after(), Some(RECHECK_PENDING));
        let done = Report::Entries(entries("fp-b", true, &seen[..1], &[]));
        assert_eq!(done.recheck_after(), None);
    }

    #[test]
    fn rolled_out_only_when_every_target_completed_the_same_token() {
        let done = |n| obs(n, Some("fp-b"), Progress::Complete);
        assert_eq!(
            rolled_out("shop-token", &[done("a"), done("b")]),
            Some("fp-b".into())
        );
        let pending = obs("b", Some("fp-b"), Progress::Waiting("x".into()));
        assert_eq!(rolled_out("shop-token", &[done("a"), pending]), None);
        assert_eq!(rolled_out("shop-token", &[done("a"), missing("b")]), None);
        let older = obs("b", Some("fp-a"), Progress::Complete);
        assert_eq!(rolled_out("shop-token", &[done("a"), older]), None);
        assert_eq!(rolled_out("shop-token", &[]), None);
        let long = "x".repeat(MAX_NAME_FOR_ROLLOUT + 1);
        assert_eq!(rolled_out(&long, &[done("a")]), None);
    }

    #[test]
    fn names_too_long_for_the_annotation_are_refused() {
        assert!(annotation_key(&"x".repeat(MAX_NAME_FOR_ROLLOUT)).is_some());
        assert_eq!(annotation_key(&"x".repeat(MAX_NAME_FOR_ROLLOUT + 1)), None);
        let (why, _) = Report::Unfollowable(Unfollowable::NameTooLong)
            .reconciling()
            .expect("a condition");
        assert_eq!(why, reason::ROLLOUT_FORBIDDEN);
    }

    #[test]
    fn deployments_complete_as_kubectl_rollout_status_says() {
        let complete = json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2});
        assert_eq!(
            deployment(&dep(2, 2, complete), KEY),
            Found {
                restarted_for: Some("fp-b".into()),
                progress: Progress::Complete
            }
        );
        // replicas: 0 completes as soon as the controller has seen the change.
        let zero = json!({"observedGeneration": 3});
        assert_eq!(
            deployment(&dep(3, 0, zero), KEY).progress,
            Progress::Complete
        );
        for status in [
            json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}),
            json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 2}),
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2}),
            // Pods that never start (no kubelet, a bad image): never available.
            json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 0}),
            json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2,
                   "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}),
        ] {
            assert!(
                matches!(
                    deployment(&dep(2, 2, status.clone()), KEY).progress,
                    Progress::Waiting(_)
                ),
                "{status}"
            );
        }
    }

    #[test]
    fn stateful_sets_and_daemon_sets_complete_as_kubectl_rollout_status_says() {
        let sts = |status: serde_json::Value, strategy: serde_json::Value| -> StatefulSet {
            serde_json::from_value(json!({
                "metadata": {"name": "db", "generation": 2},
                "spec": {"replicas": 2, "selector": {}, "serviceName": "db", "updateStrategy": strategy,
                         "template": {"metadata": {"annotations": {KEY: "fp-b"}}}},
                "status": status,
            }))
            .expect("a StatefulSet")
        };
        let rolling = json!({"type": "RollingUpdate"});
        let done = json!({"observedGeneration": 2, "replicas": 2, "readyReplicas": 2, "updatedReplicas": 2,
                          "currentRevision": "r2", "updateRevision": "r2"});
        assert_eq!(
            stateful_set(&sts(done.clone(), rolling.clone()), KEY).progress,
            Progress::Complete
        );
        let mid = json!({"observedGeneration": 2, "replicas": 2, "readyReplicas": 2, "updatedReplicas": 1,
                         "currentRevision": "r1", "updateRevision": "r2"});
        assert!(matches!(
            stateful_set(&sts(mid, rolling), KEY).progress,
            Progress::Waiting(_)
        ));
        let on_delete = json!({"type": "OnDelete"});
        assert!(matches!(
            stateful_set(&sts(done.clone(), on_delete), KEY).progress,
            Progress::Waiting(_)
        ));
        // Partitioned: however far it got, pods below the partition hold the previous token.
        for partition in [1, 2] {
            let held = json!({"type": "RollingUpdate", "rollingUpdate": {"partition": partition}});
            assert!(matches!(
                stateful_set(&sts(done.clone(), held), KEY).progress,
                Progress::Waiting(_)
            ));
        }

        let ds = |status: serde_json::Value| -> DaemonSet {
            serde_json::from_value(json!({
                "metadata": {"name": "agent", "generation": 4},
                "spec": {"selector": {}, "template": {"metadata": {"annotations": {KEY: "fp-b"}}}},
                "status": status,
            }))
            .expect("a DaemonSet")
        };
        let base = json!({"currentNumberScheduled": 3, "numberMisscheduled": 0, "numberReady": 3});
        let with = |extra: serde_json::Value| {
            let mut v = base.clone();
            if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
                o.extend(e.clone());
            }
            v
        };
        let done = with(
            json!({"observedGeneration": 4, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 3}),
        );
        assert_eq!(daemon_set(&ds(done), KEY).progress, Progress::Complete);
        let mid = with(
            json!({"observedGeneration": 4, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 1}),
        );
        assert!(matches!(
            daemon_set(&ds(mid), KEY).progress,
            Progress::Waiting(_)
        ));
        let unseen = with(
            json!({"observedGeneration": 3, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 3}),
        );
        assert!(matches!(
            daemon_set(&ds(unseen), KEY).progress,
            Progress::Waiting(_)
        ));
    }

    #[test]
    fn the_status_gets_entries_and_a_reconciling_condition_while_unsettled() {
        let old = ApiTokenStatus::default();
        let mut new = ApiTokenStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: "Issued".into(),
                message: "m".into(),
                last_transition_time: "t0".into(),
                observed_generation: Some(1),
            }],
            ..ApiTokenStatus::default()
        };
        let pending = [obs(
            "shop",
            Some("fp-b"),
            Progress::Waiting("0 of 1 available".into()),
        )];
        let report = Report::Entries(entries("fp-b", true, &pending, &[]));
        apply_to_status(&old, &mut new, &report, "t1");
        let rec = new
            .conditions
            .iter()
            .find(|c| c.type_ == "Reconciling")
            .expect("Reconciling");
        assert_eq!(
            (rec.reason.as_str(), rec.last_transition_time.as_str()),
            (reason::ROLLOUT_IN_PROGRESS, "t1")
        );
        assert!(
            new.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        );
        assert_eq!(new.rollout.len(), 1);
        // Still in progress later: the transition time is kept (no needless status write).
        let mut again = new.clone();
        apply_to_status(&new, &mut again, &report, "t2");
        assert_eq!(again, new);
        // Complete: the condition goes.
        let done = [obs("shop", Some("fp-b"), Progress::Complete)];
        let mut settled = new.clone();
        apply_to_status(
            &new,
            &mut settled,
            &Report::Entries(entries("fp-b", true, &done, &[])),
            "t3",
        );
        assert!(settled.conditions.iter().all(|c| c.type_ != "Reconciling"));
        assert_eq!(settled.rollout[0].state, RolloutState::Complete);
    }

    #[test]
    fn missing_targets_are_announced_once() {
        let e = entries("fp", true, &[missing("gone")], &[]);
        let old = ApiTokenStatus::default();
        assert_eq!(newly_missing(&old, &e).len(), 1);
        let old = ApiTokenStatus {
            rollout: e.clone(),
            ..ApiTokenStatus::default()
        };
        assert!(newly_missing(&old, &e).is_empty());
    }
}
