//! Handing a token over: leaving it behind when its ApiToken is deleted with
//! `deletionPolicy: Orphan`, adopting it into a later ApiToken of the same name, and letting an
//! ApiToken go without the store (`loop.dev/abandon-revocation`). I/O module; what to do is
//! [`crate::operator::core::deletion`]'s decision.
//!
//! Orphaning and adopting change only the Secret's owner reference and orphan mark (a strategic
//! merge patch) and the registration's owner in the store: the token itself is never read
//! into a new place, and no new token is minted.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::{Resource, ResourceExt};

use crate::api::ChangeReason;
use crate::operator::core::decide;
use crate::operator::core::deletion::{self, Orphaned};
use crate::operator::core::error::Error;
use crate::operator::core::events;
use crate::operator::core::secret;
use crate::operator::core::vocabulary::Desired;
use crate::operator::resource::names::{ROTATE_ANNOTATION, secret_annotations as ann};
use crate::operator::shell::act;
use crate::operator::shell::context::Context;
use crate::operator::shell::kube_io::{Target, publish_on};

/// Let the ApiToken go without reaching the store: a Warning names the tokens that stay active
/// (from its status and its cached Secret). In a namespace being deleted, where no Event can
/// be created, the Warning is about the namespace (in `default`).
pub async fn abandon(tg: &Target<'_>, ctx: &Context, reason: &str, terminating: bool) {
    let secret_name = tg
        .status()
        .and_then(|s| s.secret_name.clone())
        .unwrap_or_else(|| tg.name.clone());
    let cached = ctx.secrets.get(&tg.ns, &secret_name);
    let cached_fp = cached
        .and_then(|read| {
            read.inspect_err(|e| tracing::warn!(secret = %secret_name, namespace = %tg.ns, error = %e, "the cached Secret could not be read back"))
                .ok()
        })
        .and_then(|s| s.annotations().get(ann::FINGERPRINT).cloned());
    let fps = deletion::known_fingerprints(tg.status(), cached_fp.as_deref());
    tracing::warn!(apitoken = %tg.name, namespace = %tg.ns, fingerprints = %fps.join(","), reason, "released without revoking its tokens (loop.dev/abandon-revocation)");
    let what = format!("ApiToken {}/{}", tg.ns, tg.name);
    let note = events::revocation_abandoned(&what, reason, &fps);
    if terminating {
        let namespace = ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Namespace".to_owned()),
            name: Some(tg.ns.clone()),
            uid: ctx.tenancy.namespace_uid(&tg.ns),
            ..ObjectReference::default()
        };
        // The ApiToken as the related object: one Event per ApiToken, not one series.
        let related = Some(tg.t.object_ref(&()));
        publish_on(&ctx.events, &namespace, related, note).await;
    } else {
        tg.publish(&ctx.events, note).await;
    }
}

/// Leave the token in the Secret registered and the Secret in place, without its owner
/// reference; revoke the rest (see [`deletion::orphan_plan`]). With no usable token in the
/// Secret, everything is revoked, as for `Revoke`.
pub async fn orphan(tg: &Target<'_>, ctx: &Context) -> Result<(), Error> {
    let rotation =
        tg.t.annotations()
            .get(ROTATE_ANNOTATION)
            .map(String::as_str);
    let d = crate::operator::core::spec::desired(tg.t, &tg.name, rotation).ok();
    let live = match &d {
        Some(d) => tg.get_secret(&d.secret_name).await?,
        None => None,
    };
    let obs = live.as_ref().zip(d.as_ref()).map(|(s, d)| {
        let mut obs = secret::read(s, &tg.name, &tg.uid, d).obs;
        // Already left behind by this ApiToken (a retry after the patch): still its token.
        obs.owned |=
            deletion::orphaned_for(&s.metadata, &tg.name).is_some_and(|o| o.from_uid == tg.uid);
        obs
    });
    let regs = ctx.store.list_owned(&tg.uid).await?;
    let p = deletion::orphan_plan(obs.as_ref(), &regs, Timestamp::now());
    let ids = p
        .revoke
        .iter()
        .map(|id| (id.clone(), ChangeReason::Deleted));
    let (revoked, result) = act::revoke_each(tg, ctx, &regs, ids.collect::<Vec<_>>()).await;
    result?;
    match (&p.keep, &live) {
        (Some(_), Some(s)) => {
            tg.release_secret(&s.name_any()).await?;
            ctx.metrics.action("orphan");
            let fp = obs.and_then(|o| o.fingerprint).unwrap_or_default();
            tg.publish(&ctx.events, events::orphaned(&fp, &s.name_any(), &tg.name))
                .await;
        }
        _ => {
            if let Some(note) = events::revoked_on_deletion(&revoked) {
                tg.publish(&ctx.events, note).await;
            }
        }
    }
    Ok(())
}

/// Adopt the Secret `s`, left behind by an earlier ApiToken of this name, with the token in it:
/// hand its registration to this ApiToken, then take the Secret over. Returns the Secret as
/// written, or `None` when it may not be adopted (the Secret is then a conflict, and a Warning
/// says why when the ApiToken becomes stalled).
pub async fn adopt(
    tg: &Target<'_>,
    ctx: &Context,
    d: &Desired,
    s: &Secret,
    o: &Orphaned,
) -> Result<Option<Secret>, Error> {
    let fp = secret::read(s, &tg.name, &tg.uid, d).obs.fingerprint;
    let owner = tg.owner(&ctx.cluster);
    let view = ctx.store.get(&o.token_id).await?;
    if let Err(why) = deletion::may_adopt(view.as_ref(), o, &owner, fp.as_deref()) {
        tracing::warn!(apitoken = %tg.name, namespace = %tg.ns, secret = %d.secret_name, reason = %why, "an orphaned Secret of this name cannot be adopted");
        if decide::announce_stall(tg.status()) {
            tg.publish(
                &ctx.events,
                events::not_adoptable(&d.secret_name, &why.to_string()),
            )
            .await;
        }
        return Ok(None);
    }
    ctx.store
        .hand_over(&o.token_id, &owner, act::audit(tg, ChangeReason::Orphan))
        .await?;
    let written = tg.adopt_secret(s).await?;
    ctx.metrics.action("adopt");
    let fp = fp.unwrap_or_default();
    tg.publish(&ctx.events, events::adopted(&fp, &d.secret_name))
        .await;
    tracing::info!(apitoken = %tg.name, namespace = %tg.ns, fingerprint = %fp, secret = %d.secret_name, "adopted an orphaned token");
    Ok(Some(written))
}
