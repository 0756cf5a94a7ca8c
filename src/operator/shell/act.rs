//! Carrying out one [`Action`] of a plan: calls to the store and the Kubernetes API, a metric,
//! and the Event [`crate::operator::core::events`] words for it. I/O module.
//!
//! An issue runs in the crash-safe order of [`crate::operator::core::plan`]: mint → register the hash → write
//! the Secret. If the Secret cannot be written, nobody holds the new token, so it is withdrawn
//! at once (and, should that fail too, revoked as an orphan by the next reconcile).
//!
//! Every store call carries an [`Audit`]: the reason of [`issue_reason`] or [`revoke_reason`]
//! and the ApiToken's `metadata.generation`, for the store's audit trail.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;

use crate::api::ChangeReason;
use crate::operator::core::error::{Error, StoreError};
use crate::operator::core::events;
use crate::operator::core::plan;
use crate::operator::core::secret::{self, Record};
use crate::operator::core::usage;
use crate::operator::core::vocabulary::{
    Action, Desired, IssueReason, RegObs, Retired, RevokeReason,
};
use crate::operator::shell::context::Context;
use crate::operator::shell::crash;
use crate::operator::shell::kube_io::Target;
use crate::operator::shell::store_client::Audit;
use crate::token::Token;

/// What an action works on: the Secret as observed in this pass and the token it holds (only
/// when read live and owned).
pub struct Scene<'s> {
    pub d: &'s Desired,
    pub secret: Option<&'s Secret>,
    pub held: Option<&'s Token>,
    /// The registrations observed in this pass (to name a token by fingerprint).
    pub registrations: &'s [RegObs],
}

/// Carry out one action. Returns the Secret as the API server returned it, when it was written.
pub async fn execute(
    action: &Action,
    tg: &Target<'_>,
    ctx: &Context,
    scene: &Scene<'_>,
) -> Result<Option<Secret>, Error> {
    match action {
        Action::Issue {
            previous,
            reason,
            retired,
            answers,
        } => {
            let chain = Chain {
                previous: previous.as_deref(),
                retired,
                answers: answers.as_deref(),
            };
            issue(tg, ctx, scene, &chain, *reason).await.map(Some)
        }
        Action::Reregister { id } => reregister(tg, ctx, scene, id).await.map(|()| None),
        Action::RewriteSecret { issued_at } => rewrite_secret(tg, ctx, scene, *issued_at).await,
        Action::Update {
            id,
            name,
            scopes,
            expiry,
        } => {
            let audit = audit(tg, ChangeReason::Manual);
            ctx.store
                .update(id, Some(name), Some(scopes), *expiry, audit)
                .await?;
            ctx.metrics.action("update");
            tg.publish(&ctx.events, events::updated(name, scopes)).await;
            Ok(None)
        }
        Action::Expire { id, at } => {
            let audit = audit(tg, ChangeReason::Rotation);
            ctx.store
                .update(id, None, None, Some(Some(*at)), audit)
                .await?;
            ctx.metrics.action("expire");
            // The Rotated event already says so, and status.previousTokens shows the time.
            tracing::info!(apitoken = %tg.name, namespace = %tg.ns, token_id = %id, until = %at, "previous token stays active until the end of its grace period");
            Ok(None)
        }
        Action::Revoke { id, reason } => {
            revoke(tg, ctx, scene, id, *reason).await?;
            Ok(None)
        }
        Action::MarkUnused { id } => mark_unused(tg, ctx, scene, id).await,
    }
}

/// What a new token's Secret records besides the token: the token it replaces, the tokens left
/// in their grace period, the rotate value it answers.
struct Chain<'a> {
    previous: Option<&'a str>,
    retired: &'a [Retired],
    answers: Option<&'a str>,
}

/// Mint, register, write the Secret; the Event names the new token by fingerprint.
async fn issue(
    tg: &Target<'_>,
    ctx: &Context,
    scene: &Scene<'_>,
    chain: &Chain<'_>,
    reason: IssueReason,
) -> Result<Secret, Error> {
    let previous = chain.previous;
    let d = scene.d;
    let token = Token::mint()?;
    let id = new_token_id(&tg.uid)?;
    crash::point(ctx.crash_at.as_deref(), "after-mint");
    let owner = tg.owner(&ctx.cluster);
    // Whole seconds: the issue time is written in the Secret and its expiry in the store, and
    // both must give the same expiry when read back.
    let now = Timestamp::now();
    let issued_at = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let expires_at = d.aging.expiry_of(issued_at);
    ctx.store
        .register(
            &id,
            &token.hash(),
            &d.display_name,
            &d.scopes,
            &owner,
            expires_at,
            audit(tg, issue_reason(reason)),
        )
        .await?;
    crash::point(ctx.crash_at.as_deref(), "after-register");
    let record = Record {
        token_id: id.clone(),
        previous: previous.map(str::to_owned),
        issued_at,
        rotation: chain.answers.map(str::to_owned),
        retired: chain.retired.to_vec(),
        usage_from: Some(usage_from_at_issue(scene.secret, issued_at)),
    };
    let desired = secret::desired(tg.t, d, &token, &record);
    let written = match write(tg, scene, &desired).await {
        Ok(w) => w,
        Err(e) => {
            let orphan = audit(tg, ChangeReason::Orphan);
            if let Err(revoke) = ctx.store.revoke(&id, orphan).await {
                tracing::warn!(apitoken = %tg.name, namespace = %tg.ns, error = %revoke, "could not revoke a token that did not reach its Secret; it is revoked as an orphan later");
            }
            return Err(e);
        }
    };
    crash::point(ctx.crash_at.as_deref(), "after-secret");
    let fp = token.fingerprint();
    ctx.metrics.action(if previous.is_some() {
        "rotate"
    } else {
        "issue"
    });
    let grace = previous.map(|_| d.grace);
    match events::issued(reason, &fp, grace, &d.aging, &d.secret_name) {
        Some(note) => tg.publish(&ctx.events, note).await,
        None => {
            tracing::info!(apitoken = %tg.name, namespace = %tg.ns, fingerprint = %fp, secret = %d.secret_name, "token issued");
        }
    }
    Ok(clear_unused_mark(tg, scene, written).await)
}

/// The count of non-use (`spec.unused`) goes on through a new token, and starts again with a
/// first token or after a token was revoked as unused.
fn usage_from_at_issue(existing: Option<&Secret>, issued_at: Timestamp) -> Timestamp {
    let a = existing.map(secret::Annotations::of).unwrap_or_default();
    usage::counting_from_at_issue(a.usage_from, a.revoked_unused.is_some(), issued_at)
}

/// After a new token replaced one revoked as unused, remove the mark from the Secret. Best
/// effort: a mark left behind names another token than the Secret's, so it is ignored.
async fn clear_unused_mark(tg: &Target<'_>, scene: &Scene<'_>, written: Secret) -> Secret {
    let marked = scene
        .secret
        .is_some_and(|s| secret::Annotations::of(s).revoked_unused.is_some());
    if !marked {
        return written;
    }
    match tg.clear_unused_mark(&scene.d.secret_name).await {
        Ok(cleared) => cleared,
        Err(e) => {
            tracing::warn!(apitoken = %tg.name, namespace = %tg.ns, error = %e, "could not remove the loop.dev/revoked-unused mark from the Secret; it names the previous token and is ignored");
            written
        }
    }
}

/// The store lost the Secret's token: register the same token under the same id.
async fn reregister(
    tg: &Target<'_>,
    ctx: &Context,
    scene: &Scene<'_>,
    id: &str,
) -> Result<(), Error> {
    let Some(token) = scene.held else {
        return Ok(());
    };
    let d = scene.d;
    // The expiry counts from the issue time the Secret records: losing the store's data must
    // not extend the token's life.
    let issued_at = scene
        .secret
        .and_then(|s| secret::Annotations::of(s).issued_at);
    let expires_at = issued_at.and_then(|t| d.aging.expiry_of(t));
    ctx.store
        .register(
            id,
            &token.hash(),
            &d.display_name,
            &d.scopes,
            &tg.owner(&ctx.cluster),
            expires_at,
            audit(tg, ChangeReason::Policy),
        )
        .await?;
    ctx.metrics.action("reregister");
    tg.publish(&ctx.events, events::reregistered(&token.fingerprint()))
        .await;
    Ok(())
}

/// Write the Secret again with the token and record it holds (it was edited by hand), and the
/// issue time the plan decided.
async fn rewrite_secret(
    tg: &Target<'_>,
    ctx: &Context,
    scene: &Scene<'_>,
    issued_at: Timestamp,
) -> Result<Option<Secret>, Error> {
    let (Some(token), Some(existing)) = (scene.held, scene.secret) else {
        return Ok(None);
    };
    let Some(record) = Record::of(existing, issued_at) else {
        return Ok(None);
    };
    let desired = secret::desired(tg.t, scene.d, token, &record);
    let written = write(tg, scene, &desired).await?;
    ctx.metrics.action("repair_secret");
    tg.publish(&ctx.events, events::secret_repaired(&scene.d.secret_name))
        .await;
    Ok(Some(written))
}

/// Write the Secret: first remove the extras the spec dropped (recorded by the Secret as it
/// was), then create or apply it.
async fn write(tg: &Target<'_>, scene: &Scene<'_>, desired: &Secret) -> Result<Secret, Error> {
    if let Some(existing) = scene.secret
        && let Some(patch) = secret::removal_patch(existing, scene.d)
    {
        tg.remove_from_secret(&scene.d.secret_name, &patch).await?;
    }
    tg.write_secret(desired, scene.secret.is_some()).await
}

async fn revoke(
    tg: &Target<'_>,
    ctx: &Context,
    scene: &Scene<'_>,
    id: &str,
    reason: RevokeReason,
) -> Result<(), Error> {
    ctx.store
        .revoke(id, audit(tg, revoke_reason(reason)))
        .await?;
    ctx.metrics.action("revoke");
    let fingerprint = scene
        .registrations
        .iter()
        .find(|r| r.id == id)
        .map_or(id, |r| r.fingerprint.as_str());
    let d = scene.d;
    let note = match reason {
        RevokeReason::Unused { since } => {
            events::revoked_unused(fingerprint, since, d.unused.map(|u| u.after))
        }
        RevokeReason::Idle { since } => events::retired(fingerprint, since, d.retire_when_idle),
        _ => events::revoked(id, reason),
    };
    tg.publish(&ctx.events, note).await;
    Ok(())
}

/// Record in the Secret that its token is revoked as unused, and take the token out of it.
async fn mark_unused(
    tg: &Target<'_>,
    ctx: &Context,
    scene: &Scene<'_>,
    id: &str,
) -> Result<Option<Secret>, Error> {
    // The plan asks for this only with the Secret read live holding `id`; anything else must
    // stop the revocation that follows, or the next pass would read it as revoked elsewhere.
    let changed = || Error::SecretChanged {
        name: scene.d.secret_name.clone(),
        id: id.to_owned(),
    };
    let existing = scene.secret.ok_or_else(changed)?;
    let a = secret::Annotations::of(existing);
    if a.token_id.as_deref() != Some(id) {
        return Err(changed());
    }
    let key = a.token_key.as_deref().unwrap_or(&scene.d.secret_key);
    let mut keys = secret::rendered_keys(existing);
    keys.push(key.to_owned());
    let written = tg.mark_unused(existing, &keys, id).await?;
    crash::point(ctx.crash_at.as_deref(), "after-mark-unused");
    tracing::info!(apitoken = %tg.name, namespace = %tg.ns, token_id = %id, "token removed from its Secret: unused (spec.unused.action Revoke)");
    Ok(Some(written))
}

/// Revoke the registrations `ids` (of `regs`, as listed for this ApiToken), each with its
/// audit reason. Returns the fingerprints revoked, and the first failure (nothing after it is
/// tried): the caller announces what was revoked either way.
pub async fn revoke_each(
    tg: &Target<'_>,
    ctx: &Context,
    regs: &[RegObs],
    ids: impl IntoIterator<Item = (String, ChangeReason)>,
) -> (Vec<String>, Result<(), StoreError>) {
    let mut revoked = Vec::new();
    for (id, reason) in ids {
        if let Err(e) = ctx.store.revoke(&id, audit(tg, reason)).await {
            return (revoked, Err(e));
        }
        ctx.metrics.action("revoke");
        revoked.extend(
            regs.iter()
                .filter(|r| r.id == id)
                .map(|r| r.fingerprint.clone()),
        );
    }
    (revoked, Ok(()))
}

/// Revoke every active registration of this ApiToken ([`plan::plan_cleanup`]), each with the
/// audit reason `reason` gives its plan's reason.
pub async fn revoke_all_owned(
    tg: &Target<'_>,
    ctx: &Context,
    reason: impl Fn(RevokeReason) -> ChangeReason,
) -> (Vec<String>, Result<(), StoreError>) {
    let regs = match ctx.store.list_owned(&tg.uid).await {
        Ok(regs) => regs,
        Err(e) => return (Vec::new(), Err(e)),
    };
    let ids = plan::plan_cleanup(&regs)
        .into_iter()
        .filter_map(|action| match action {
            Action::Revoke { id, reason: why } => Some((id, reason(why))),
            _ => None,
        });
    revoke_each(tg, ctx, &regs, ids.collect::<Vec<_>>()).await
}

/// What the store's audit trail records for a call about `tg`.
pub fn audit(tg: &Target<'_>, reason: ChangeReason) -> Audit {
    Audit {
        reason,
        generation: tg.t.metadata.generation,
    }
}

/// The audit reason of an issue. A first token, like an edit of the spec, is `manual` (someone
/// applied the ApiToken); a lost Secret or registration is the operator keeping its promises
/// (`policy`).
pub fn issue_reason(r: IssueReason) -> ChangeReason {
    match r {
        IssueReason::First => ChangeReason::Manual,
        IssueReason::Rotation => ChangeReason::Rotation,
        IssueReason::Scheduled => ChangeReason::Scheduled,
        IssueReason::Renewal | IssueReason::Expired => ChangeReason::Expiry,
        IssueReason::SecretLost | IssueReason::RevokedElsewhere => ChangeReason::Policy,
    }
}

/// The audit reason of a revocation: the end of a grace period closes a rotation.
pub fn revoke_reason(r: RevokeReason) -> ChangeReason {
    match r {
        RevokeReason::GraceOver | RevokeReason::RolledOut => ChangeReason::Rotation,
        RevokeReason::Orphan => ChangeReason::Orphan,
        RevokeReason::Deleted => ChangeReason::Deleted,
        RevokeReason::Unused { .. } => ChangeReason::Unused,
        RevokeReason::Idle { .. } => ChangeReason::Idle,
    }
}

/// A fresh store id: `<owner uid>.<10 random base62 characters>`.
fn new_token_id(uid: &str) -> Result<String, crate::token::MintError> {
    let random = Token::mint()?;
    let suffix = &random.expose()[crate::token::PREFIX.len()..crate::token::PREFIX.len() + 10];
    Ok(format!("{uid}.{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reasons the store's audit trail shows for what the operator does.
    #[test]
    fn audit_reasons() {
        let issues = [
            (IssueReason::First, ChangeReason::Manual),
            (IssueReason::Rotation, ChangeReason::Rotation),
            (IssueReason::Scheduled, ChangeReason::Scheduled),
            (IssueReason::Renewal, ChangeReason::Expiry),
            (IssueReason::Expired, ChangeReason::Expiry),
            (IssueReason::SecretLost, ChangeReason::Policy),
            (IssueReason::RevokedElsewhere, ChangeReason::Policy),
        ];
        for (issue, reason) in issues {
            assert_eq!(issue_reason(issue), reason, "{issue:?}");
        }
        let revokes = [
            (RevokeReason::GraceOver, ChangeReason::Rotation),
            (RevokeReason::RolledOut, ChangeReason::Rotation),
            (RevokeReason::Orphan, ChangeReason::Orphan),
            (RevokeReason::Deleted, ChangeReason::Deleted),
            (
                RevokeReason::Unused {
                    since: Timestamp::UNIX_EPOCH,
                },
                ChangeReason::Unused,
            ),
            (
                RevokeReason::Idle {
                    since: Timestamp::UNIX_EPOCH,
                },
                ChangeReason::Idle,
            ),
        ];
        for (revoke, reason) in revokes {
            assert_eq!(revoke_reason(revoke), reason, "{revoke:?}");
        }
    }
}
