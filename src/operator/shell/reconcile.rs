//! The reconcile shell. I/O module: observes an ApiToken's Secret and its store registrations,
//! asks [`plan`] what to do and [`decide`] how to observe and report, has [`act`] do it, and
//! writes the status once, only when it changed.
//!
//! One reconcile runs up to [`MAX_PASSES`] passes of observe → plan → act. The first pass
//! plans from the watch cache, so a converged ApiToken costs no request to the API server; a
//! plan from the cache is acted on only when [`decide::trust_cached_plan`] allows it, and is
//! otherwise made again from a live read. After acting, the next pass sees the Secret as the API
//! server returned it: no read after the operator's own write.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::finalizer::{self, Event as Finalizer};
use kube::{Api, Resource, ResourceExt};

use crate::api::ChangeReason;
use crate::operator::core::decide::{self, AfterFailure, StatusWrite};
use crate::operator::core::deletion::{self, Deletion};
use crate::operator::core::error::Error;
use crate::operator::core::error::StoreError;
use crate::operator::core::events;
use crate::operator::core::plan::{self, Observed};
use crate::operator::core::policy::Verdict;
use crate::operator::core::rollout;
use crate::operator::core::secret;
use crate::operator::core::status::{self, Outcome};
use crate::operator::core::vocabulary::{Action, Blocked, Desired, Plan, RegObs};
use crate::operator::resource::crd::{ApiToken, ApiTokenStatus};
use crate::operator::resource::names::condition::STALLED;
use crate::operator::resource::names::{FINALIZER, ROTATE_ANNOTATION, reason};
use crate::operator::shell::act::{self, Scene};
use crate::operator::shell::cache::CachedToken;
use crate::operator::shell::context::Context;
use crate::operator::shell::crash;
use crate::operator::shell::handover;
use crate::operator::shell::kube_io::Target;
use crate::operator::shell::rollout_io;

/// How often a Secret name clash is checked again (other Secrets are not watched).
const CONFLICT_RECHECK: Duration = Duration::from_secs(30);

/// Passes of observe-plan-act within one reconcile before reporting `Progressing`.
pub const MAX_PASSES: usize = 5;

/// Entry point for the controller.
pub async fn reconcile(obj: Arc<CachedToken>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let start = Instant::now();
    let result = match obj.namespace() {
        None => Err(Error::Unnamed),
        Some(ns) => {
            let api: Api<ApiToken> = Api::namespaced(ctx.client.clone(), &ns);
            match cached_or_live(&obj, &api).await {
                Err(e) => Err(e),
                Ok(t) => finalizer::finalizer(&api, FINALIZER, Arc::new(t), |event| async {
                    match event {
                        Finalizer::Apply(t) => apply(&t, &ctx).await,
                        Finalizer::Cleanup(t) => cleanup(&t, &ctx).await,
                    }
                })
                .await
                .map_err(Error::from),
            }
        }
    };
    ctx.metrics.reconciled(
        result.as_ref().err().map(Error::kind),
        start.elapsed().as_secs_f64(),
    );
    result
}

/// The ApiToken from the watch cache, or from the API server if the cached copy cannot be read
/// back (not expected; see [`crate::operator::shell::cache`]): the next watch event would replace it, but none
/// may come.
async fn cached_or_live(obj: &CachedToken, api: &Api<ApiToken>) -> Result<ApiToken, Error> {
    match obj.decode() {
        Ok(t) => Ok(t),
        Err(e) => {
            tracing::warn!(apitoken = %obj.name_any(), namespace = obj.namespace().unwrap_or_default(), error = %e, "the cached ApiToken could not be read back; reading it from the API server");
            api.get(&obj.name_any())
                .await
                .map_err(|source| Error::GetApiToken { source })
        }
    }
}

/// Requeue after an error. Statuses were already written by the failing step.
pub fn error_policy(obj: Arc<CachedToken>, err: &Error, ctx: Arc<Context>) -> Requeue {
    tracing::warn!(apitoken = %obj.name_any(), namespace = obj.namespace().unwrap_or_default(), error = %err, kind = err.kind(), "reconcile failed; retrying");
    Requeue::requeue(ctx.retry_after)
}

/// How the passes of one reconcile ended.
enum Passes {
    Converged {
        plan: Box<Plan>,
        issued: bool,
        acted: bool,
        /// The current token replaced an earlier one (the Secret record names it).
        replaced: bool,
    },
    Blocked(Blocked),
    /// Still acting after [`MAX_PASSES`].
    Unfinished,
}

async fn apply(t: &ApiToken, ctx: &Context) -> Result<Requeue, Error> {
    let tg = Target::new(t, &ctx.client)?;
    let rotation = t.annotations().get(ROTATE_ANNOTATION).map(String::as_str);
    let d = match crate::operator::core::spec::desired(t, &tg.name, rotation) {
        Ok(d) => d,
        Err(problem) => {
            let blocked = Blocked::Spec(problem);
            write_status(&tg, ctx, &Outcome::Blocked(&blocked), None, None, false).await?;
            return Ok(Requeue::await_change());
        }
    };
    let verdict = match ctx.tenancy.check(&ctx.client, t, &tg.ns, &d).await {
        Ok(v) => v,
        Err(e) => return fail(&tg, ctx, &d, e).await,
    };
    if !verdict.complies() {
        return match hold(&tg, ctx, &d, &verdict).await {
            Ok(requeue) => Ok(requeue),
            Err(e) => fail(&tg, ctx, &d, e).await,
        };
    }
    let targets = match rollout_io::observe(&tg, ctx, &d).await {
        Ok(t) => t,
        Err(e) => return fail(&tg, ctx, &d, e).await,
    };
    let rolled_out = targets.rolled_out(&tg.name);
    let passes = match run_passes(&tg, ctx, &d, rolled_out.as_deref()).await {
        Ok(p) => p,
        Err(e) => return fail(&tg, ctx, &d, e).await,
    };
    match passes {
        Passes::Blocked(blocked) => {
            if decide::announce_stall(tg.status()) {
                let note = match &blocked {
                    Blocked::SecretConflict { secret } => Some(events::secret_conflict(secret)),
                    Blocked::Expired { fingerprint, at } => Some(events::expired(fingerprint, *at)),
                    // The revocation's own Event said it.
                    Blocked::RevokedUnused { .. } | Blocked::Spec(_) => None,
                };
                if let Some(note) = note {
                    tg.publish(&ctx.events, note).await;
                }
            }
            write_status(&tg, ctx, &Outcome::Blocked(&blocked), Some(&d), None, false).await?;
            // Other Secrets are not watched: a clash is looked at again soon. An expired token
            // waits for a change of the ApiToken (or its Secret), which wakes it anyway.
            Ok(Requeue::requeue(match blocked {
                Blocked::SecretConflict { .. } => ctx.usage_interval.min(CONFLICT_RECHECK),
                _ => ctx.usage_interval,
            }))
        }
        Passes::Unfinished => {
            write_status(&tg, ctx, &Outcome::Pending, Some(&d), None, false).await?;
            Ok(Requeue::requeue(Duration::from_secs(1)))
        }
        Passes::Converged {
            plan,
            issued,
            acted,
            replaced,
        } => {
            let done = Converged {
                plan: &plan,
                issued,
                acted,
                replaced,
            };
            converge(&tg, ctx, &d, &done, &targets).await
        }
    }
}

/// How the passes converged.
struct Converged<'p> {
    plan: &'p Plan,
    issued: bool,
    acted: bool,
    replaced: bool,
}

/// After the passes converged: tidy former Secrets, restart the rollout targets, write the
/// status, and say when to come back.
async fn converge(
    tg: &Target<'_>,
    ctx: &Context,
    d: &Desired,
    done: &Converged<'_>,
    targets: &rollout_io::Targets,
) -> Result<Requeue, Error> {
    let plan = done.plan;
    if decide::secret_may_have_moved(tg.status(), d) {
        tg.remove_secrets_except(&d.secret_name).await?;
    }
    if done.issued {
        crash::point(ctx.crash_at.as_deref(), "before-status");
    }
    let report = match rollout_io::restart(tg, ctx, plan, done.replaced, targets).await {
        Ok(r) => r,
        Err(e) => return fail(tg, ctx, d, e).await,
    };
    announce_usage(tg, ctx, d, plan).await;
    let converged = Outcome::Converged;
    write_status_with(
        tg,
        ctx,
        &converged,
        Some(d),
        Some(plan),
        done.acted,
        Some(&report),
    )
    .await?;
    let mut next = decide::next_reconcile(Timestamp::now(), plan.wake_at, ctx.usage_interval);
    if let Some(soon) = report.recheck_after() {
        next = next.min(soon);
    }
    Ok(Requeue::requeue(next))
}

/// Where a pass reads the Secret from.
enum Source {
    /// The controller's watch cache (may lag the API server).
    Cache,
    /// A GET.
    Live,
    /// What the previous pass wrote or read.
    Known(Option<Box<Secret>>),
}

/// One pass's observations.
struct Seen {
    secret: Option<Secret>,
    read: Option<secret::Read>,
    registrations: Vec<RegObs>,
}

async fn observe(
    tg: &Target<'_>,
    ctx: &Context,
    d: &Desired,
    source: Source,
) -> Result<Seen, Error> {
    let secret = match source {
        Source::Cache => match ctx.secrets.get(&tg.ns, &d.secret_name) {
            None => None,
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => {
                tracing::warn!(secret = %d.secret_name, namespace = %tg.ns, error = %e, "the cached Secret could not be read back; reading it from the API server");
                tg.get_secret(&d.secret_name).await?
            }
        },
        Source::Known(s) => s.map(|b| *b),
        Source::Live => tg.get_secret(&d.secret_name).await?,
    };
    let read = secret
        .as_ref()
        .map(|s| secret::read(s, &tg.name, &tg.uid, d));
    let registrations = ctx.store.list_owned(&tg.uid).await?;
    Ok(Seen {
        secret,
        read,
        registrations,
    })
}

async fn run_passes(
    tg: &Target<'_>,
    ctx: &Context,
    d: &Desired,
    rolled_out: Option<&str>,
) -> Result<Passes, Error> {
    let (mut issued, mut acted) = (false, false);
    // The Secret as the previous pass left it (as written, or as read live), if known.
    let mut known: Option<Option<Box<Secret>>> = None;
    for pass in 0..MAX_PASSES {
        let source = match known.take() {
            Some(s) => Source::Known(s),
            None if pass == 0 => Source::Cache,
            None => Source::Live,
        };
        let from_cache = matches!(source, Source::Cache);
        let seen = observe(tg, ctx, d, source).await?;
        // A Secret left by an earlier ApiToken of this name: adopt it (read live) before planning.
        if let Some(s) = seen.secret.as_ref().filter(|_| !from_cache)
            && let Some(o) = deletion::orphaned_for(&s.metadata, &tg.name)
            && let Some(written) = handover::adopt(tg, ctx, d, s, &o).await?
        {
            acted = true;
            known = Some(Some(Box::new(written)));
            continue;
        }
        let status = tg.status();
        let in_grace: Vec<String> = status
            .map(|s| {
                s.previous_tokens
                    .iter()
                    .map(|p| p.token_id.clone())
                    .collect()
            })
            .unwrap_or_default();
        let p = plan::plan(&Observed {
            desired: d,
            secret: seen.read.as_ref().map(|r| &r.obs),
            registrations: &seen.registrations,
            status_token_id: status.and_then(|s| s.token_id.as_deref()),
            status_handled: status.and_then(|s| s.last_rotation_request.as_deref()),
            status_in_grace: &in_grace,
            status_revoked_unused: status.is_some_and(decide::says_revoked_unused),
            rolled_out,
            now: Timestamp::now(),
        });
        if from_cache && !decide::trust_cached_plan(&p, seen.secret.is_some(), &seen.registrations)
        {
            continue;
        }
        if let Some(blocked) = p.blocked {
            return Ok(Passes::Blocked(blocked));
        }
        if p.actions.is_empty() {
            let replaced = seen
                .read
                .as_ref()
                .is_some_and(|r| r.obs.previous_token_id.is_some());
            return Ok(Passes::Converged {
                plan: Box::new(p),
                issued,
                acted,
                replaced,
            });
        }
        let written = act_all(tg, ctx, d, &seen, &p.actions).await?;
        issued |= p.actions.iter().any(|a| matches!(a, Action::Issue { .. }));
        acted = true;
        // The next pass sees the Secret as the API server returned it after the write, or as
        // read live in this pass.
        known = match written {
            Some(s) => Some(Some(Box::new(s))),
            None if !from_cache => Some(seen.secret.map(Box::new)),
            None => None,
        };
    }
    Ok(Passes::Unfinished)
}

/// Run a plan's actions in order; returns the last Secret written, if any.
async fn act_all(
    tg: &Target<'_>,
    ctx: &Context,
    d: &Desired,
    seen: &Seen,
    actions: &[Action],
) -> Result<Option<Secret>, Error> {
    let scene = Scene {
        d,
        secret: seen.secret.as_ref(),
        held: seen.read.as_ref().and_then(|r| r.token.as_ref()),
        registrations: &seen.registrations,
    };
    let mut written = None;
    for action in actions {
        if let Some(s) = act::execute(action, tg, ctx, &scene).await? {
            written = Some(s);
        }
    }
    Ok(written)
}

/// What usage says that the last status did not: the current token became unused, or a
/// previous token is still in use half-way through its grace period (one Event each). The watch
/// cache can lag the status this operator wrote a moment ago, so a finding the cache does not
/// show yet is checked against the live object before it is announced (a read only then).
async fn announce_usage(tg: &Target<'_>, ctx: &Context, d: &Desired, p: &Plan) {
    let cached = tg.status();
    let news = p.unused.is_some() && decide::announce_unused(cached)
        || !decide::announce_still_in_use(cached, p).is_empty();
    if !news {
        return;
    }
    let live = match tg.live().await {
        Ok(live) => live.status,
        Err(e) => {
            tracing::warn!(apitoken = %tg.name, namespace = %tg.ns, error = %e, "could not read the ApiToken to announce its usage; next time");
            return;
        }
    };
    if let Some(idle) = p
        .unused
        .as_ref()
        .filter(|_| decide::announce_unused(live.as_ref()))
    {
        tg.publish(&ctx.events, events::unused(idle)).await;
    }
    for g in decide::announce_still_in_use(live.as_ref(), p) {
        let note =
            events::previous_still_in_use(&g.fingerprint, g.last_used_at, g.until, &d.secret_name);
        tg.publish(&ctx.events, note).await;
    }
}

/// Record a failure in the status, then wait for a human or hand it to the error policy.
async fn fail(tg: &Target<'_>, ctx: &Context, d: &Desired, e: Error) -> Result<Requeue, Error> {
    let message = e.to_string();
    let outcome = match &e {
        Error::Store(s) => Outcome::Store(s),
        _ => Outcome::Kubernetes(&message),
    };
    if let Error::Store(StoreError::Rejected { code, message, .. }) = &e
        && decide::announce_stall(tg.status())
    {
        tg.publish(&ctx.events, events::store_rejected(code, message))
            .await;
    }
    if let Some(failure) = status::passing_failure(&outcome)
        && let Some(o) = decide::announce_overdue(tg.status(), Timestamp::now())
    {
        let note = events::rotation_overdue(o.due, o.expires, &failure);
        tg.publish(&ctx.events, note).await;
    }
    write_status(tg, ctx, &outcome, Some(d), None, false).await?;
    match decide::after_failure(&e) {
        AfterFailure::WaitForHuman => Ok(Requeue::requeue(ctx.usage_interval)),
        AfterFailure::Retry => Err(e),
    }
}

/// Revoke, orphan or abandon the tokens of a deleted ApiToken (see [`deletion`]), then let the
/// finalizer go; while the store cannot be reached, wait and say why.
async fn cleanup(t: &ApiToken, ctx: &Context) -> Result<Requeue, Error> {
    let tg = Target::new(t, &ctx.client)?;
    let terminating = deletion::depends_on_namespace(t)
        && ctx
            .tenancy
            .namespace_terminating_now(&ctx.client, &tg.ns)
            .await?;
    let result = match deletion::decide(t, terminating) {
        Deletion::Abandon { reason } => {
            handover::abandon(&tg, ctx, &reason, terminating).await;
            Ok(())
        }
        Deletion::Orphan => handover::orphan(&tg, ctx).await,
        Deletion::Revoke => revoke_all(&tg, ctx).await.map_err(Error::Store),
    };
    match result {
        Ok(()) => {
            ctx.metrics.forget(&tg.uid);
            Ok(Requeue::await_change())
        }
        Err(Error::Store(e)) => {
            write_status(&tg, ctx, &Outcome::Deleting(&e), None, None, false).await?;
            Err(Error::Store(e))
        }
        Err(e) => Err(e),
    }
}

/// Revoke every token of a deleted ApiToken; one Event names them.
async fn revoke_all(tg: &Target<'_>, ctx: &Context) -> Result<(), StoreError> {
    let (revoked, result) = act::revoke_all_owned(tg, ctx, act::revoke_reason).await;
    // One Event for all the tokens revoked (the current one and any still in grace).
    if let Some(note) = events::revoked_on_deletion(&revoked) {
        tg.publish(&ctx.events, note).await;
    }
    result
}

/// Hold an ApiToken outside its policies: announce it, revoke its tokens when the policy says
/// so, and report it. Nothing is issued, rotated or updated.
async fn hold(
    tg: &Target<'_>,
    ctx: &Context,
    d: &Desired,
    verdict: &Verdict,
) -> Result<Requeue, Error> {
    let already = tg.status().is_some_and(|s| {
        s.true_condition(STALLED)
            .is_some_and(|c| c.reason == reason::POLICY_VIOLATION)
    });
    if !already {
        tg.publish(&ctx.events, events::policy_violation(&verdict.message()))
            .await;
    }
    let (revoked, result) = if verdict.revoke {
        act::revoke_all_owned(tg, ctx, |_| ChangeReason::Policy).await
    } else {
        (Vec::new(), Ok(()))
    };
    // One Event for all the tokens revoked (the current one and any still in grace).
    if let Some(note) = events::revoked_by_policy(&revoked) {
        tg.publish(&ctx.events, note).await;
    }
    result?;
    let acted = !revoked.is_empty();
    write_status(tg, ctx, &Outcome::Policy(verdict), Some(d), None, acted).await?;
    Ok(Requeue::requeue(ctx.usage_interval))
}

/// Compute the status from an outcome and write it if it changed (see
/// [`decide::status_write`]).
async fn write_status(
    tg: &Target<'_>,
    ctx: &Context,
    outcome: &Outcome<'_>,
    d: Option<&Desired>,
    p: Option<&Plan>,
    acted: bool,
) -> Result<(), Error> {
    write_status_with(tg, ctx, outcome, d, p, acted, None).await
}

/// [`write_status`], with the rollout's report (see [`rollout::apply_to_status`]); without one,
/// `status.rollout` stays as it was.
async fn write_status_with(
    tg: &Target<'_>,
    ctx: &Context,
    outcome: &Outcome<'_>,
    d: Option<&Desired>,
    p: Option<&Plan>,
    acted: bool,
    report: Option<&rollout::Report>,
) -> Result<(), Error> {
    let now = Timestamp::now();
    let generation = tg.t.meta().generation;
    let cached = tg.status().cloned().unwrap_or_default();
    let compute = |old: &ApiTokenStatus, generation| {
        let mut new = status::compute(old, outcome, d, p, generation, now);
        if let Some(r) = report {
            rollout::apply_to_status(old, &mut new, r, &now.to_string());
        }
        new
    };
    let new = compute(&cached, generation);
    ctx.metrics.set_state(&tg.uid, status::readiness(&new));
    let seconds = |t: &Option<String>| {
        t.as_deref()
            .and_then(|v| v.parse::<Timestamp>().ok())
            .map(|t| t.as_second())
    };
    ctx.metrics.set_times(
        &tg.uid,
        &tg.ns,
        &tg.name,
        seconds(&new.expires_at),
        seconds(&new.next_rotation_at),
    );
    match decide::status_write(tg.status(), &new, acted) {
        StatusWrite::Unchanged => Ok(()),
        StatusWrite::Write => tg.patch_status(&new).await,
        StatusWrite::CompareLive => {
            let live = tg.live().await?;
            let current = live.status.clone().unwrap_or_default();
            let generation = live.meta().generation.or(generation);
            let new = compute(&current, generation);
            ctx.metrics.set_state(&tg.uid, status::readiness(&new));
            if live.status.as_ref() == Some(&new) {
                Ok(())
            } else {
                tg.patch_status(&new).await
            }
        }
    }
}
