//! The reconcile shell. I/O module: observes an ApiToken's Secret and its store registrations,
//! asks [`plan`] what to do, does it, and writes the status once, only when it changed.
//!
//! Order of an issue (crash-safe, see `plan`): mint → register the hash → write the Secret.
//! The Secret is created with a plain create (which fails if someone else created a Secret of
//! that name in the meantime) and later updated by server-side apply, only while this ApiToken
//! controls it: the operator never writes into a Secret it does not own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{self, Event as Finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};

use super::crd::ApiToken;
use super::metrics::Metrics;
use super::names::{
    API_TOKEN_LABEL, FIELD_MANAGER, FINALIZER, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
    ROTATE_ANNOTATION,
};
use super::plan::{self, Action, Blocked, Desired, IssueReason, Observed, Plan, SecretObs};
use super::status::{self, Outcome};
use super::store_client::{StoreClient, StoreError};
use crate::store::model::Owner;
use crate::token::Token;

/// Secret annotations: the durable record of the token chain (see `plan`).
pub mod annotations {
    pub const TOKEN_ID: &str = "loop.dev/token-id";
    pub const PREVIOUS_TOKEN_ID: &str = "loop.dev/previous-token-id";
    pub const ISSUED_AT: &str = "loop.dev/issued-at";
    pub const ROTATION_REQUEST: &str = "loop.dev/rotation-request";
    pub const FINGERPRINT: &str = "loop.dev/fingerprint";
    pub const TOKEN_KEY: &str = "loop.dev/token-key";
}

/// How often a Secret name clash is checked again.
const CONFLICT_RECHECK: Duration = Duration::from_secs(30);

/// Passes of observe-plan-act within one reconcile before reporting `Progressing` (the first
/// pass looks at the cache only).
const MAX_PASSES: usize = 5;

/// What the Secret cache keeps in place of a token: this prefix and the token's fingerprint.
const CACHED_FINGERPRINT: &str = "loop.dev/fingerprint:";

/// Prepare an owned Secret for the watch cache: no managedFields (never read), and no token.
/// Each value that is a token becomes its fingerprint, which is all a plan made from the cache
/// needs: anything that uses the token itself is planned again from a live read. So the
/// operator's memory does not hold thousands of tokens for as long as it runs.
pub fn secret_for_cache(s: &mut Secret) {
    s.managed_fields_mut().clear();
    for v in s.data.iter_mut().flat_map(|d| d.values_mut()) {
        let fingerprint = std::str::from_utf8(&v.0)
            .ok()
            .and_then(|t| Token::parse(t).ok())
            .map(|t| t.fingerprint());
        if let Some(fp) = fingerprint {
            v.0 = format!("{CACHED_FINGERPRINT}{fp}").into_bytes();
        }
    }
}

/// Prepare an ApiToken for the watch cache: no managedFields, no client-side-apply copy of the
/// object (`kubectl.kubernetes.io/last-applied-configuration`, which changes only with the
/// spec), neither of which the operator reads.
pub fn token_for_cache(t: &mut ApiToken) {
    t.managed_fields_mut().clear();
    t.annotations_mut()
        .remove("kubectl.kubernetes.io/last-applied-configuration");
}

/// The changes to an ApiToken that wake the controller: its spec (generation), its annotations
/// (`loop.dev/rotate`, and any other, so that annotating an ApiToken asks for a reconcile, as
/// GitOps tools do), its finalizers and its deletion. Status-only changes, most of them the
/// operator's own status writes, do not: a status edited by someone else is put right at the
/// next periodic reconcile (`--usage-interval`).
pub fn triggers(t: &ApiToken) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    t.metadata.generation.hash(&mut h);
    t.annotations().hash(&mut h);
    t.finalizers().hash(&mut h);
    t.metadata.deletion_timestamp.is_some().hash(&mut h);
    Some(h.finish())
}

/// A reconcile failure. Never carries a token.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading or writing Kubernetes objects failed: {0}")]
    Kube(#[source] kube::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the ApiToken has no namespace")]
    NoNamespace,
    #[error("cannot mint a token: {0}")]
    Mint(#[from] crate::token::MintError),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

impl Error {
    /// Bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kubernetes",
            Error::Store(e) => e.kind(),
            Error::NoNamespace => "no_namespace",
            Error::Mint(_) => "mint",
            Error::Finalizer(_) => "finalizer",
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    /// The owned Secrets (label-selected), as last seen by the controller's watch.
    pub secrets: Store<Secret>,
    pub store: StoreClient,
    pub cluster: String,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// How often usage figures are refreshed from the store.
    pub usage_interval: Duration,
    /// How long to wait before retrying after an error.
    pub retry_after: Duration,
    /// Test hook: die by SIGKILL (no cleanup, no flush) at this step of an issue.
    pub crash_at: Option<String>,
}

impl Context {
    fn crash_point(&self, step: &str) {
        if self.crash_at.as_deref() == Some(step) {
            tracing::error!(
                step,
                "crash point reached (LOOP_OPERATOR_CRASH_AT); killing this process"
            );
            // SIGKILL reaches a multi-threaded process asynchronously: wait for it here.
            if rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::KILL,
            )
            .is_ok()
            {
                loop {
                    std::thread::park();
                }
            }
            std::process::abort();
        }
    }
}

/// Entry point for the controller.
pub async fn reconcile(obj: Arc<ApiToken>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let start = Instant::now();
    let ns = obj.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<ApiToken> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer::finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(t) => apply(&t, &ctx).await,
            Finalizer::Cleanup(t) => cleanup(&t, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.reconciled(
        result.as_ref().err().map(Error::kind),
        start.elapsed().as_secs_f64(),
    );
    result
}

/// Requeue after an error. Statuses were already written by the failing step.
pub fn error_policy(obj: Arc<ApiToken>, err: &Error, ctx: Arc<Context>) -> Requeue {
    tracing::warn!(apitoken = %obj.name_any(), namespace = obj.namespace().unwrap_or_default(), error = %err, "reconcile failed; retrying");
    Requeue::requeue(ctx.retry_after)
}

struct Target<'a> {
    t: &'a ApiToken,
    name: String,
    ns: String,
    uid: String,
    secrets: Api<Secret>,
    tokens: Api<ApiToken>,
}

impl Target<'_> {
    fn owner(&self, cluster: &str) -> Owner {
        Owner {
            cluster: cluster.to_owned(),
            namespace: self.ns.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
        }
    }
}

fn target<'a>(t: &'a ApiToken, client: &Client) -> Result<Target<'a>, Error> {
    let ns = t.namespace().ok_or(Error::NoNamespace)?;
    Ok(Target {
        t,
        name: t.name_any(),
        uid: t.uid().unwrap_or_default(),
        secrets: Api::namespaced(client.clone(), &ns),
        tokens: Api::namespaced(client.clone(), &ns),
        ns,
    })
}

async fn apply(t: &ApiToken, ctx: &Context) -> Result<Requeue, Error> {
    let tg = target(t, &ctx.client)?;
    let rotation = t.annotations().get(ROTATE_ANNOTATION).map(String::as_str);
    let d = match plan::desired(t, &tg.name, rotation) {
        Ok(d) => d,
        Err(problem) => {
            let blocked = Blocked::Spec(problem);
            write_status(&tg, ctx, &Outcome::Blocked(&blocked), None, None, false).await?;
            return Ok(Requeue::await_change());
        }
    };
    let mut converged: Option<Plan> = None;
    let (mut issued, mut acted) = (false, false);
    // The Secret as the previous pass left it (as written, or as read live), if known.
    let mut known: Option<Option<Box<Secret>>> = None;
    for pass in 0..MAX_PASSES {
        // The first pass plans from the watch cache: a converged token costs no API request.
        let source = match known.take() {
            Some(s) => Source::Known(s),
            None if pass == 0 => Source::Cache(&ctx.secrets),
            None => Source::Live,
        };
        let from_cache = matches!(source, Source::Cache(_));
        let (secret, sobs, held) = match observe_secret(&tg, &d, source).await {
            Ok(o) => o,
            Err(e) => return fail(&tg, ctx, &d, e).await,
        };
        let regs = match ctx.store.list_owned(&tg.uid).await {
            Ok(r) => r,
            Err(e) => return fail(&tg, ctx, &d, Error::Store(e)).await,
        };
        let now = Timestamp::now();
        let status_token_id = t.status.as_ref().and_then(|s| s.token_id.as_deref());
        let p = plan::plan(&Observed {
            desired: &d,
            secret: sobs.as_ref(),
            registrations: &regs,
            status_token_id,
            now,
        });
        // From the cache, only a first issue (no Secret cached, nothing registered) is acted
        // upon: the Secret's create fails if one exists after all, and the registration it
        // leaves is then revoked as an orphan. Anything else is planned again from a live read.
        let first_issue = secret.is_none() && regs.is_empty();
        if from_cache && (p.blocked.is_some() || (!p.actions.is_empty() && !first_issue)) {
            continue;
        }
        if let Some(blocked) = &p.blocked {
            let was_blocked = t
                .status
                .as_ref()
                .is_some_and(|s| status::ready_state(s) == "stalled");
            if !was_blocked && let Blocked::SecretConflict { secret } = blocked {
                publish(ctx, t, EventType::Warning, "SecretConflict", format!("Secret {secret} exists and is not managed by this ApiToken; it was left untouched")).await;
            }
            write_status(&tg, ctx, &Outcome::Blocked(blocked), Some(&d), None, false).await?;
            // Other Secrets are not watched: look again soon for the name to become free.
            return Ok(Requeue::requeue(ctx.usage_interval.min(CONFLICT_RECHECK)));
        }
        if p.actions.is_empty() {
            converged = Some(p);
            break;
        }
        let mut written = None;
        for action in &p.actions {
            match execute(action, &tg, ctx, &d, secret.as_ref(), held.as_ref()).await {
                Ok(Some(s)) => written = Some(s),
                Ok(None) => {}
                Err(e) => return fail(&tg, ctx, &d, e).await,
            }
            issued |= matches!(action, Action::Issue { .. });
            acted = true;
        }
        // The next pass sees the Secret as the API server returned it after the write, or as
        // read live in this pass: no read after the operator's own write.
        known = match written {
            Some(s) => Some(Some(Box::new(s))),
            None if !from_cache => Some(secret.map(Box::new)),
            None => None,
        };
    }
    let Some(p) = converged else {
        write_status(&tg, ctx, &Outcome::Pending, Some(&d), None, false).await?;
        return Ok(Requeue::requeue(Duration::from_secs(1)));
    };
    // Only after spec.secret.name changed (status still names the old Secret) can an owned
    // Secret under another name exist: no listing on ordinary reconciles.
    let moved = t
        .status
        .as_ref()
        .and_then(|s| s.secret_name.as_deref())
        .is_some_and(|n| n != d.secret_name);
    if moved {
        remove_stale_secrets(&tg, &d).await.map_err(Error::Kube)?;
    }
    if issued {
        ctx.crash_point("before-status");
    }
    write_status(&tg, ctx, &Outcome::Converged, Some(&d), Some(&p), acted).await?;
    let now = Timestamp::now();
    let next = p.wake_at.map_or(ctx.usage_interval, |at| {
        plan::until(now, at).min(ctx.usage_interval)
    });
    Ok(Requeue::requeue(next.max(Duration::from_millis(100))))
}

/// Record a failure in the status, then hand it to the error policy.
async fn fail(tg: &Target<'_>, ctx: &Context, d: &Desired, e: Error) -> Result<Requeue, Error> {
    let message = e.to_string();
    let outcome = match &e {
        Error::Store(s) => Outcome::Store(s),
        _ => Outcome::Kubernetes(&message),
    };
    if let Error::Store(StoreError::Rejected { code, message, .. }) = &e {
        let was =
            tg.t.status
                .as_ref()
                .is_some_and(|s| status::ready_state(s) == "stalled");
        if !was {
            publish(
                ctx,
                tg.t,
                EventType::Warning,
                "StoreRejected",
                format!("{code}: {message}"),
            )
            .await;
        }
    }
    write_status(tg, ctx, &outcome, Some(d), None, false).await?;
    // Problems a human must fix are not retried in a tight loop.
    if matches!(
        e,
        Error::Store(StoreError::Rejected { .. } | StoreError::Unauthorized { .. })
    ) {
        return Ok(Requeue::requeue(ctx.usage_interval));
    }
    Err(e)
}

async fn cleanup(t: &ApiToken, ctx: &Context) -> Result<Requeue, Error> {
    let tg = target(t, &ctx.client)?;
    let mut revoked = Vec::new();
    let result = async {
        let regs = ctx.store.list_owned(&tg.uid).await?;
        for action in plan::plan_cleanup(&regs) {
            if let Action::Revoke { id, .. } = &action {
                ctx.store.revoke(id).await?;
                ctx.metrics.action("revoke");
                if let Some(r) = regs.iter().find(|r| &r.id == id) {
                    revoked.push(r.fingerprint.clone());
                }
            }
        }
        Ok::<(), StoreError>(())
    }
    .await;
    // One Event for all the tokens revoked (the current one and any still in grace).
    if !revoked.is_empty() {
        let which = match revoked.as_slice() {
            [one] => format!("token {one}"),
            many => format!("tokens {}", many.join(", ")),
        };
        publish(
            ctx,
            t,
            EventType::Normal,
            "Revoked",
            format!("{which} revoked: the ApiToken is being deleted"),
        )
        .await;
    }
    match result {
        Ok(()) => {
            ctx.metrics.forget(&tg.uid);
            Ok(Requeue::await_change())
        }
        Err(e) => {
            write_status(&tg, ctx, &Outcome::Deleting(&e), None, None, false).await?;
            Err(Error::Store(e))
        }
    }
}

/// Where a pass reads the Secret from.
enum Source<'a> {
    /// The controller's watch cache (may lag the API server).
    Cache(&'a Store<Secret>),
    /// A GET.
    Live,
    /// What the previous pass wrote or read.
    Known(Option<Box<Secret>>),
}

/// The Secret, what the plan may see of it, and the token it holds (for re-registering or
/// rewriting it; never logged; `None` when read from the cache, which keeps only fingerprints).
async fn observe_secret(
    tg: &Target<'_>,
    d: &Desired,
    source: Source<'_>,
) -> Result<(Option<Secret>, Option<SecretObs>, Option<Token>), Error> {
    let secret = match source {
        Source::Cache(store) => store
            .get(&ObjectRef::new(&d.secret_name).within(&tg.ns))
            .map(|s| Secret::clone(&s)),
        Source::Known(s) => s.map(|b| *b),
        Source::Live => tg
            .secrets
            .get_opt(&d.secret_name)
            .await
            .map_err(Error::Kube)?,
    };
    let Some(s) = secret else {
        return Ok((None, None, None));
    };
    let owned = s.metadata.owner_references.as_ref().is_some_and(|refs| {
        refs.iter()
            .any(|r| r.uid == tg.uid && r.controller == Some(true))
    });
    let ann = s.metadata.annotations.clone().unwrap_or_default();
    let labels = s.metadata.labels.clone().unwrap_or_default();
    let data = s.data.clone().unwrap_or_default();
    // A token (live read), or only its fingerprint (from the cache, see `secret_for_cache`).
    let read = |key: &str| {
        let v = data.get(key).and_then(|b| std::str::from_utf8(&b.0).ok())?;
        match v.strip_prefix(CACHED_FINGERPRINT) {
            Some(fp) => Some((None, fp.to_owned())),
            None => Token::parse(v).ok().map(|t| {
                let fp = t.fingerprint();
                (Some(t), fp)
            }),
        }
    };
    let (found, at_desired_key) = match read(&d.secret_key) {
        Some(f) => (Some(f), true),
        None => (ann.get(annotations::TOKEN_KEY).and_then(|k| read(k)), false),
    };
    let (held, fingerprint) = match found {
        Some((token, fp)) => (token, Some(fp)),
        None => (None, None),
    };
    // Only what the operator writes is checked: keys, labels or annotations others add belong
    // to them, and server-side apply could not remove them anyway.
    let shape_ok = at_desired_key
        && labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY_VALUE)
        && labels.get(API_TOKEN_LABEL) == Some(&tg.name)
        && ann.get(annotations::FINGERPRINT) == fingerprint.as_ref()
        && ann.get(annotations::TOKEN_KEY) == Some(&d.secret_key);
    let obs = SecretObs {
        owned,
        token_id: ann.get(annotations::TOKEN_ID).cloned(),
        previous_token_id: ann.get(annotations::PREVIOUS_TOKEN_ID).cloned(),
        issued_at: ann.get(annotations::ISSUED_AT).and_then(|v| v.parse().ok()),
        rotation_request: ann.get(annotations::ROTATION_REQUEST).cloned(),
        fingerprint,
        shape_ok,
    };
    Ok((Some(s), Some(obs), if owned { held } else { None }))
}

async fn execute(
    action: &Action,
    tg: &Target<'_>,
    ctx: &Context,
    d: &Desired,
    secret: Option<&Secret>,
    held: Option<&Token>,
) -> Result<Option<Secret>, Error> {
    let ann = |k: &str| {
        secret
            .and_then(|s| s.metadata.annotations.as_ref())
            .and_then(|a| a.get(k))
            .cloned()
    };
    match action {
        Action::Issue { previous, reason } => {
            let token = Token::mint()?;
            let id = new_token_id(&tg.uid)?;
            ctx.crash_point("after-mint");
            ctx.store
                .register(
                    &id,
                    &token.hash(),
                    &d.display_name,
                    &d.scopes,
                    &tg.owner(&ctx.cluster),
                )
                .await?;
            ctx.crash_point("after-register");
            let record = Record {
                token_id: &id,
                previous: previous.as_deref(),
                issued_at: Timestamp::now(),
                rotation: d.rotation_request.as_deref(),
            };
            let written = match write_secret(tg, d, secret, &token, &record).await {
                Ok(w) => w,
                Err(e) => {
                    // Nobody holds the token: withdraw it now (if this fails too, the next
                    // reconcile revokes it as an orphan).
                    if let Err(revoke) = ctx.store.revoke(&id).await {
                        tracing::warn!(apitoken = %tg.name, namespace = %tg.ns, error = %revoke, "could not revoke a token that did not reach its Secret; it is revoked as an orphan later");
                    }
                    return Err(e);
                }
            };
            ctx.crash_point("after-secret");
            let fp = token.fingerprint();
            ctx.metrics.action(if *reason == IssueReason::Rotation {
                "rotate"
            } else {
                "issue"
            });
            let (reason_str, what) = match reason {
                // The first issue is recorded by the status (Ready, reason Issued, with the
                // fingerprint) without an Event: one API write less per token, which counts
                // when thousands are applied at once. Events mark changes to an existing token.
                IssueReason::First => {
                    tracing::info!(apitoken = %tg.name, namespace = %tg.ns, fingerprint = %fp, secret = %d.secret_name, "token issued");
                    return Ok(Some(written));
                }
                IssueReason::Rotation if d.grace.is_zero() => (
                    "Rotated",
                    "issued by rotation (no grace period: the previous token is revoked now)"
                        .to_owned(),
                ),
                IssueReason::Rotation => (
                    "Rotated",
                    format!(
                        "issued by rotation (the previous token stays active for its grace period, {:#})",
                        d.grace
                    ),
                ),
                IssueReason::SecretLost => (
                    "Reissued",
                    "issued because the Secret was deleted or edited".to_owned(),
                ),
                IssueReason::RevokedElsewhere => (
                    "Reissued",
                    "issued because the previous token was revoked outside the operator".to_owned(),
                ),
            };
            let note = format!("token {fp} {what}; written to Secret {}", d.secret_name);
            publish(ctx, tg.t, EventType::Normal, reason_str, note).await;
            return Ok(Some(written));
        }
        Action::Reregister { id } => {
            let Some(token) = held else { return Ok(None) };
            ctx.store
                .register(
                    id,
                    &token.hash(),
                    &d.display_name,
                    &d.scopes,
                    &tg.owner(&ctx.cluster),
                )
                .await?;
            ctx.metrics.action("reregister");
            let note = format!(
                "token {} was unknown to the Loop token store and was registered again",
                token.fingerprint()
            );
            publish(ctx, tg.t, EventType::Warning, "Reregistered", note).await;
        }
        Action::RewriteSecret => {
            let Some(token) = held else { return Ok(None) };
            let (Some(id), issued) = (ann(annotations::TOKEN_ID), ann(annotations::ISSUED_AT))
            else {
                return Ok(None);
            };
            let previous = ann(annotations::PREVIOUS_TOKEN_ID);
            let rotation = ann(annotations::ROTATION_REQUEST);
            let record = Record {
                token_id: &id,
                previous: previous.as_deref(),
                issued_at: issued
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(Timestamp::now),
                rotation: rotation.as_deref(),
            };
            let written = write_secret(tg, d, secret, token, &record).await?;
            ctx.metrics.action("repair_secret");
            publish(
                ctx,
                tg.t,
                EventType::Normal,
                "SecretRepaired",
                format!("Secret {} was edited; restored", d.secret_name),
            )
            .await;
            return Ok(Some(written));
        }
        Action::Update {
            id,
            name,
            scopes,
            clear_expiry,
        } => {
            ctx.store
                .update(id, Some(name), Some(scopes), clear_expiry.then_some(None))
                .await?;
            ctx.metrics.action("update");
            publish(
                ctx,
                tg.t,
                EventType::Normal,
                "Updated",
                format!(
                    "name {name:?} and scopes {} applied in place; the token is unchanged",
                    scopes.join(" ")
                ),
            )
            .await;
        }
        Action::Expire { id, at } => {
            ctx.store.update(id, None, None, Some(Some(*at))).await?;
            ctx.metrics.action("expire");
            // The Rotated event already says so, and status.previousTokens shows the time.
            tracing::info!(apitoken = %tg.name, namespace = %tg.ns, token_id = %id, until = %at, "previous token stays active until the end of its grace period");
        }
        Action::Revoke { id, reason } => {
            ctx.store.revoke(id).await?;
            ctx.metrics.action("revoke");
            let why = match reason {
                plan::RevokeReason::GraceOver => "its grace period is over",
                plan::RevokeReason::Orphan => {
                    "it was registered but never reached the Secret (an interrupted issue)"
                }
                plan::RevokeReason::Deleted => "the ApiToken is being deleted",
            };
            publish(
                ctx,
                tg.t,
                EventType::Normal,
                "Revoked",
                format!("token {id} revoked: {why}"),
            )
            .await;
        }
    }
    Ok(None)
}

/// A fresh store id: `<owner uid>.<10 random base62 characters>`.
fn new_token_id(uid: &str) -> Result<String, crate::token::MintError> {
    let random = Token::mint()?;
    let suffix = &random.expose()[crate::token::PREFIX.len()..crate::token::PREFIX.len() + 10];
    Ok(format!("{uid}.{suffix}"))
}

struct Record<'a> {
    token_id: &'a str,
    previous: Option<&'a str>,
    issued_at: Timestamp,
    rotation: Option<&'a str>,
}

fn desired_secret(tg: &Target<'_>, d: &Desired, token: &Token, r: &Record<'_>) -> Secret {
    let mut annotations = BTreeMap::from([
        (annotations::TOKEN_ID.to_owned(), r.token_id.to_owned()),
        (annotations::ISSUED_AT.to_owned(), r.issued_at.to_string()),
        (annotations::FINGERPRINT.to_owned(), token.fingerprint()),
        (annotations::TOKEN_KEY.to_owned(), d.secret_key.clone()),
    ]);
    if let Some(p) = r.previous {
        annotations.insert(annotations::PREVIOUS_TOKEN_ID.to_owned(), p.to_owned());
    }
    if let Some(v) = r.rotation {
        annotations.insert(annotations::ROTATION_REQUEST.to_owned(), v.to_owned());
    }
    let mut s = Secret {
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            d.secret_key.clone(),
            ByteString(token.expose().as_bytes().to_vec()),
        )])),
        ..Secret::default()
    };
    s.metadata.name = Some(d.secret_name.clone());
    s.metadata.namespace = Some(tg.ns.clone());
    s.metadata.labels = Some(BTreeMap::from([
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned()),
        (API_TOKEN_LABEL.to_owned(), tg.name.clone()),
    ]));
    s.metadata.annotations = Some(annotations);
    s.metadata.owner_references = tg.t.controller_owner_ref(&()).map(|r| vec![r]);
    s
}

async fn write_secret(
    tg: &Target<'_>,
    d: &Desired,
    existing: Option<&Secret>,
    token: &Token,
    r: &Record<'_>,
) -> Result<Secret, Error> {
    let mut s = desired_secret(tg, d, token, r);
    match existing {
        // Create, never apply, a Secret that does not exist yet: if another party created one of
        // that name in the meantime, the create fails instead of taking it over.
        None => {
            let pp = PostParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PostParams::default()
            };
            tg.secrets.create(&pp, &s).await.map_err(Error::Kube)
        }
        Some(_) => {
            s.metadata.managed_fields = None;
            let patch =
                serde_json::to_value(&s).map_err(|e| Error::Kube(kube::Error::SerdeError(e)))?;
            let mut patch = patch;
            patch["apiVersion"] = serde_json::json!("v1");
            patch["kind"] = serde_json::json!("Secret");
            tg.secrets
                .patch(
                    &d.secret_name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(patch),
                )
                .await
                .map_err(Error::Kube)
        }
    }
}

/// Secrets this ApiToken owns under another name (after `spec.secret.name` changed).
async fn remove_stale_secrets(tg: &Target<'_>, d: &Desired) -> Result<(), kube::Error> {
    let lp = ListParams::default().labels(&format!("{API_TOKEN_LABEL}={}", tg.name));
    for s in tg.secrets.list_metadata(&lp).await? {
        let ours = s.metadata.owner_references.as_ref().is_some_and(|refs| {
            refs.iter()
                .any(|r| r.uid == tg.uid && r.controller == Some(true))
        });
        if ours && s.name_any() != d.secret_name {
            tg.secrets
                .delete(&s.name_any(), &DeleteParams::default())
                .await?;
        }
    }
    Ok(())
}

async fn write_status(
    tg: &Target<'_>,
    ctx: &Context,
    outcome: &Outcome<'_>,
    d: Option<&Desired>,
    p: Option<&Plan>,
    acted: bool,
) -> Result<(), Error> {
    let now = Timestamp::now();
    let generation = tg.t.meta().generation;
    let cached = tg.t.status.clone().unwrap_or_default();
    let mut new = status::compute(&cached, outcome, d, p, generation, now);
    if tg.t.status.as_ref() == Some(&new) {
        ctx.metrics.set_state(&tg.uid, status::ready_state(&new));
        return Ok(());
    }
    // After this reconcile changed the token, the status must change too: write it.
    if acted {
        ctx.metrics.set_state(&tg.uid, status::ready_state(&new));
        return apply_status(tg, &new).await;
    }
    // Otherwise the watch cache can lag the operator's own last status write (a reconcile woken
    // by its own Secret write): decide against the live status, so that nothing is written
    // twice and no lastTransitionTime is reset.
    // The object itself (RBAC grants get on apitokens, not on apitokens/status).
    let live = tg.tokens.get(&tg.name).await.map_err(Error::Kube)?;
    let current = live.status.clone().unwrap_or_default();
    new = status::compute(
        &current,
        outcome,
        d,
        p,
        live.meta().generation.or(generation),
        now,
    );
    ctx.metrics.set_state(&tg.uid, status::ready_state(&new));
    if live.status.as_ref() == Some(&new) {
        return Ok(());
    }
    apply_status(tg, &new).await
}

async fn apply_status(
    tg: &Target<'_>,
    new: &crate::operator::crd::ApiTokenStatus,
) -> Result<(), Error> {
    // Server-side apply: fields the operator set before and leaves out now are removed.
    let patch =
        serde_json::json!({ "apiVersion": "loop.dev/v1alpha1", "kind": "ApiToken", "status": new });
    tg.tokens
        .patch_status(
            &tg.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(Error::Kube)?;
    Ok(())
}

async fn publish(ctx: &Context, t: &ApiToken, type_: EventType, reason: &str, note: String) {
    let ev = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: reason.to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &t.object_ref(&())).await {
        tracing::warn!(error = %e, reason, "could not publish an event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::crd::{ApiTokenStatus, Condition};

    fn token() -> ApiToken {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "loop.dev/v1alpha1", "kind": "ApiToken",
            "metadata": {"name": "a", "namespace": "n", "uid": "u", "generation": 1},
            "spec": {"scopes": ["orders:read"]}
        }))
        .expect("a valid ApiToken")
    }

    #[test]
    fn the_secret_cache_keeps_fingerprints_not_tokens() {
        let token = Token::mint().expect("a token");
        let mut s = Secret {
            data: Some(BTreeMap::from([
                (
                    "token".to_owned(),
                    ByteString(token.expose().as_bytes().to_vec()),
                ),
                ("other".to_owned(), ByteString(b"not a token".to_vec())),
            ])),
            ..Secret::default()
        };
        s.metadata.managed_fields = Some(vec![Default::default()]);
        secret_for_cache(&mut s);
        let data = s.data.clone().unwrap_or_default();
        let cached = String::from_utf8(data["token"].0.clone()).expect("utf-8");
        assert_eq!(
            cached,
            format!("{CACHED_FINGERPRINT}{}", token.fingerprint())
        );
        assert!(!format!("{s:?}").contains(token.expose()));
        assert_eq!(data["other"].0, b"not a token");
        assert_eq!(s.metadata.managed_fields, Some(vec![]));
    }

    #[test]
    fn status_only_changes_do_not_wake_the_controller() {
        let t = token();
        let mut with_status = t.clone();
        with_status.status = Some(ApiTokenStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: "Issued".into(),
                message: "issued".into(),
                last_transition_time: "2026-11-29T12:00:00Z".into(),
                observed_generation: Some(1),
            }],
            ..ApiTokenStatus::default()
        });
        with_status.metadata.resource_version = Some("42".into());
        with_status
            .labels_mut()
            .insert("team".into(), "payments".into());
        assert_eq!(triggers(&t), triggers(&with_status));
    }

    #[test]
    fn spec_rotation_finalizer_and_deletion_changes_wake_the_controller() {
        let t = token();
        let mut spec = t.clone();
        spec.metadata.generation = Some(2);
        let mut rotate = t.clone();
        rotate
            .annotations_mut()
            .insert(ROTATE_ANNOTATION.into(), "2026-11-29T12:00:00Z".into());
        let mut finalized = t.clone();
        finalized.finalizers_mut().push(FINALIZER.into());
        let mut deleting = finalized.clone();
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::UNIX_EPOCH),
        );
        let mut nudged = t.clone();
        nudged
            .annotations_mut()
            .insert("reconcile.fluxcd.io/requestedAt".into(), "now".into());
        let all = [&t, &spec, &rotate, &finalized, &deleting, &nudged].map(triggers);
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
