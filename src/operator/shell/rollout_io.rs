//! Rollout targets on the API server: read before planning (has every target rolled out the
//! current token?), restarted after a new token is in the Secret, and the Events that say so.
//! I/O module; every decision is in [`crate::operator::core::rollout`].
//!
//! Targets are read with a GET each time an ApiToken with `spec.rollout` is reconciled, and
//! not watched: while a rollout is pending or a target is missing, the ApiToken is looked at
//! again soon ([`rollout::Report::recheck_after`]). So an operator whose ApiTokens have no
//! rollout reads, caches and watches no workload at all, and needs no permission on them.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

use crate::operator::core::error::{Error, describe};
use crate::operator::core::rollout::{self, Found, Report, Restart, TargetObs, Unfollowable};
use crate::operator::core::vocabulary::{Desired, Plan};
use crate::operator::resource::crd::RolloutKind;
use crate::operator::resource::names::{FIELD_MANAGER, condition, reason};
use crate::operator::shell::context::Context;
use crate::operator::shell::kube_io::Target;

/// The rollout targets as read before planning.
pub enum Targets {
    /// No `spec.rollout`.
    None,
    Seen(Vec<TargetObs>),
    Unfollowable(Unfollowable),
}

impl Targets {
    /// The fingerprint every target has rolled out, for the plan.
    pub fn rolled_out(&self, name: &str) -> Option<String> {
        match self {
            Targets::Seen(seen) => rollout::rolled_out(name, seen),
            _ => None,
        }
    }
}

/// Read every rollout target of the ApiToken. A target the operator may not read makes the
/// whole rollout unfollowable (the chart's `rollout.enabled` is off), which the status says.
pub async fn observe(tg: &Target<'_>, ctx: &Context, d: &Desired) -> Result<Targets, Error> {
    let targets = d.consumers.targets();
    if targets.is_empty() {
        return Ok(Targets::None);
    }
    let Some(key) = rollout::annotation_key(&tg.name) else {
        return Ok(Targets::Unfollowable(Unfollowable::NameTooLong));
    };
    let mut seen = Vec::with_capacity(targets.len());
    for t in targets {
        match read(&ctx.client, &tg.ns, t.kind, &t.name, &key).await {
            Ok(found) => seen.push(TargetObs {
                target: t.clone(),
                found,
            }),
            Err(e) if forbidden(&e) => {
                return Ok(Targets::Unfollowable(Unfollowable::Forbidden(describe(&e))));
            }
            Err(source) => {
                return Err(Error::GetRolloutTarget {
                    kind: t.kind.as_str(),
                    name: t.name.clone(),
                    source,
                });
            }
        }
    }
    Ok(Targets::Seen(seen))
}

fn forbidden(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403)
}

async fn read(
    client: &Client,
    ns: &str,
    kind: RolloutKind,
    name: &str,
    key: &str,
) -> Result<Option<Found>, kube::Error> {
    Ok(match kind {
        RolloutKind::Deployment => api::<Deployment>(client, ns)
            .get_opt(name)
            .await?
            .map(|o| rollout::deployment(&o, key)),
        RolloutKind::StatefulSet => api::<StatefulSet>(client, ns)
            .get_opt(name)
            .await?
            .map(|o| rollout::stateful_set(&o, key)),
        RolloutKind::DaemonSet => api::<DaemonSet>(client, ns)
            .get_opt(name)
            .await?
            .map(|o| rollout::daemon_set(&o, key)),
    })
}

fn api<K>(client: &Client, ns: &str) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    Api::namespaced(client.clone(), ns)
}

/// After the plan converged: restart the targets that do not run the current token yet (not
/// for a first token), publish what happened, and return the report for the status (no
/// entries without `spec.rollout`).
pub async fn restart(
    tg: &Target<'_>,
    ctx: &Context,
    plan: &Plan,
    replaced: bool,
    targets: &Targets,
) -> Result<Report, Error> {
    let seen = match targets {
        Targets::None => return Ok(Report::Entries(Vec::new())),
        Targets::Unfollowable(u) => {
            return Ok(announce(tg, ctx, Report::Unfollowable(u.clone()), plan).await);
        }
        Targets::Seen(seen) => seen,
    };
    let Some(current) = plan.current.as_ref() else {
        return Ok(Report::Entries(Vec::new()));
    };
    let fingerprint = current.fingerprint.as_str();
    let restarts = rollout::restarts(&tg.name, fingerprint, replaced, seen);
    for r in &restarts {
        match patch(&ctx.client, &tg.ns, r).await {
            Ok(()) => {
                ctx.metrics.action("restart_rollout_target");
                tracing::info!(apitoken = %tg.name, namespace = %tg.ns, kind = r.target.kind.as_str(), target = %r.target.name, fingerprint, "rollout target restarted for the new token");
                tg.publish(&ctx.events, rollout::restarted_note(r)).await;
            }
            Err(e) if forbidden(&e) => {
                let report = Report::Unfollowable(Unfollowable::Forbidden(describe(&e)));
                return Ok(announce(tg, ctx, report, plan).await);
            }
            Err(source) => {
                return Err(Error::RestartRolloutTarget {
                    kind: r.target.kind.as_str(),
                    name: r.target.name.clone(),
                    source,
                });
            }
        }
    }
    let report = Report::Entries(rollout::entries(fingerprint, replaced, seen, &restarts));
    Ok(announce(tg, ctx, report, plan).await)
}

async fn patch(client: &Client, ns: &str, r: &Restart) -> Result<(), kube::Error> {
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    let body = Patch::Merge(rollout::patch(r));
    let name = r.target.name.as_str();
    match r.target.kind {
        RolloutKind::Deployment => api::<Deployment>(client, ns)
            .patch(name, &pp, &body)
            .await
            .map(drop),
        RolloutKind::StatefulSet => api::<StatefulSet>(client, ns)
            .patch(name, &pp, &body)
            .await
            .map(drop),
        RolloutKind::DaemonSet => api::<DaemonSet>(client, ns)
            .patch(name, &pp, &body)
            .await
            .map(drop),
    }
}

/// The Warnings a report calls for, each once (compared with the status the reconcile started
/// from): a target that went missing, a rollout that outlived the grace period, a rollout the
/// operator may not follow.
async fn announce(tg: &Target<'_>, ctx: &Context, report: Report, plan: &Plan) -> Report {
    let old = tg.status().cloned().unwrap_or_default();
    match &report {
        Report::Entries(entries) => {
            for e in rollout::newly_missing(&old, entries) {
                tg.publish(&ctx.events, rollout::missing_note(e)).await;
            }
            for e in rollout::overdue(&old, entries, !plan.in_grace.is_empty()) {
                tg.publish(&ctx.events, rollout::incomplete_note(e)).await;
            }
        }
        Report::Unfollowable(_) => {
            let said = old.has_reason(condition::RECONCILING, reason::ROLLOUT_FORBIDDEN);
            if let Some(note) = rollout::unfollowable_note(&report).filter(|_| !said) {
                tg.publish(&ctx.events, note).await;
            }
        }
    }
    report
}
