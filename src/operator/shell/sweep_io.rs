//! The sweep on the store and the API server: list, decide ([`crate::operator::core::sweep`]),
//! revoke. I/O module; run by [`crate::operator::runtime::run`] while this operator leads.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use crate::api::ChangeReason;
use crate::operator::core::error::StoreError;
use crate::operator::core::sweep;
use crate::operator::resource::crd::ApiToken;
use crate::operator::resource::names::secret_annotations::TOKEN_ID;
use crate::operator::resource::names::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::operator::shell::context::Context;
use crate::operator::shell::store_client::Audit;

/// Why a sweep did not finish.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot list {what} on the API server")]
    Kube {
        what: &'static str,
        #[source]
        source: kube::Error,
    },
}

/// Sweep at once, then every `every`, for ever (the caller stops it). A failed sweep is logged
/// and tried again at the next interval.
pub async fn run(ctx: &Context, namespace: Option<&str>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match once(ctx, namespace).await {
            Ok(0) => {
                tracing::debug!("sweep: every active registration of this cluster is accounted for")
            }
            Ok(n) => tracing::warn!(
                revoked = n,
                "sweep: revoked registrations whose ApiToken no longer exists"
            ),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?every, "sweep failed; trying again at the next interval")
            }
        }
    }
}

/// One sweep; returns how many registrations it revoked.
pub async fn once(ctx: &Context, namespace: Option<&str>) -> Result<usize, SweepError> {
    // The store first, then the cluster (see the core module): a registration listed here was
    // made for an ApiToken that exists in the lists below unless it was deleted since.
    let registrations = ctx.store.list_cluster(&ctx.cluster, namespace).await?;
    if registrations.is_empty() {
        ctx.metrics.swept();
        return Ok(0);
    }
    let (tokens, secrets): (Api<ApiToken>, Api<Secret>) = match namespace {
        Some(ns) => (
            Api::namespaced(ctx.client.clone(), ns),
            Api::namespaced(ctx.client.clone(), ns),
        ),
        None => (Api::all(ctx.client.clone()), Api::all(ctx.client.clone())),
    };
    let live: BTreeSet<String> = list_uids(&tokens).await?;
    let held = held_token_ids(&secrets).await?;
    let stale = sweep::stale(&registrations, &live, &held);
    let mut revoked = 0;
    for r in stale {
        let audit = Audit {
            reason: ChangeReason::Deleted,
            generation: None,
        };
        ctx.store.revoke(&r.id, audit).await?;
        ctx.metrics.action("sweep_revoke");
        revoked += 1;
        tracing::warn!(token_id = %r.id, fingerprint = %r.fingerprint, namespace = %r.owner_namespace, apitoken = %r.owner_name, owner_uid = %r.owner_uid, "revoked a registration whose ApiToken no longer exists (a revocation that was lost, e.g. by a restore of the store's database)");
    }
    ctx.metrics.swept();
    Ok(revoked)
}

async fn list_uids(tokens: &Api<ApiToken>) -> Result<BTreeSet<String>, SweepError> {
    let list = tokens
        .list_metadata(&ListParams::default())
        .await
        .map_err(|source| SweepError::Kube {
            what: "ApiTokens",
            source,
        })?;
    Ok(list.items.iter().filter_map(|t| t.uid()).collect())
}

/// The token ids in the Secrets the operator manages (an orphan's among them).
async fn held_token_ids(secrets: &Api<Secret>) -> Result<BTreeSet<String>, SweepError> {
    let selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}");
    let list = secrets
        .list_metadata(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| SweepError::Kube {
            what: "the operator's Secrets",
            source,
        })?;
    Ok(list
        .items
        .iter()
        .filter_map(|s| s.annotations().get(TOKEN_ID).cloned())
        .collect())
}
