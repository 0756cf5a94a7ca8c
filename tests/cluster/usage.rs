//! Usage that acts, on the real API server with a real store and a real operator sharing a fake
//! clock (see [`crate::aging`]): `spec.unused` with `Warn` and `Revoke`, and
//! `spec.rotation.retireWhenIdle` with the previous token's use seen half-way through its grace
//! period.
//!
//! Usage is what the store records on each introspection (flushed every 100 ms here). Where a
//! test moves the clock past a usage rule while an app keeps using a token, the operator is
//! stopped across the move, so that it never judges the new time before the store has recorded
//! the app's next call.

use crate::aging::{Aged, aged, fingerprint, hours, mins, spec, time_of};
use crate::operator_e2e::reason;
use crate::support::operator::OperatorProcess;
use crate::support::store::ADMIN;
use crate::support::{eventually, with_namespace};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use reqwest::Method;
use serde_json::Value;

impl Aged {
    /// The store's view of one registration.
    async fn registration(&self, id: &str) -> Value {
        let (status, v) = self
            .e
            .store
            .call(Method::GET, &format!("/v1/tokens/{id}"), Some(ADMIN), None)
            .await;
        assert_eq!(status, 200, "{v}");
        v
    }

    /// Use `token` now (on the fake clock) and wait until the store has recorded that use.
    async fn use_now(&self, token: &str, id: &str) {
        let at = self.clock.now();
        assert!(self.active(token).await, "token {id} is not active");
        eventually(60, "the store to record the use", || async {
            let v = self.registration(id).await;
            let last = v["lastUsedAt"].as_str().and_then(|t| t.parse().ok());
            last.filter(|l: &jiff::Timestamp| *l >= at - jiff::SignedDuration::from_secs(1))
                .map(|_| ())
        })
        .await;
    }

    /// The id of the ApiToken's current token.
    async fn token_id(&self, name: &str) -> String {
        let t = self.e.get(name).await;
        t.status
            .and_then(|s| s.token_id)
            .unwrap_or_else(|| panic!("{name} has no token id"))
    }

    /// The revocations in the store's audit trail of this ApiToken: (token id, reason).
    async fn revocations(
        &self,
        t: &loop_token_operator::operator::resource::crd::ApiToken,
    ) -> Vec<(String, String)> {
        let uid = t.metadata.uid.clone().unwrap_or_default();
        let uri = format!("/v1/events?ownerUid={uid}");
        let (_, trail) = self
            .e
            .store
            .call(Method::GET, &uri, Some(ADMIN), None)
            .await;
        let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
        trail["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["kind"] == "revoked")
            .map(|e| (s(&e["tokenId"]), s(&e["reason"])))
            .collect()
    }

    /// Rotate each of `names` (ApiTokens just applied) with `loop.dev/rotate=r1`; returns their
    /// previous tokens (token, id, fingerprint) and their new ones (token, id).
    async fn rotate_all(
        &self,
        names: &[&str],
    ) -> (Vec<(String, String, String)>, Vec<(String, String)>) {
        let mut old = Vec::new();
        for name in names {
            self.e.wait_ready(name);
            let token = self.e.secret_token(name).await;
            old.push((
                token,
                self.token_id(name).await,
                self.fingerprint(name).await,
            ));
            self.e
                .kubectl(&["annotate", "apitoken", name, "loop.dev/rotate=r1"]);
        }
        let mut new = Vec::new();
        for name in names {
            self.e.wait_rotated(name, "r1").await;
            new.push((self.e.secret_token(name).await, self.token_id(name).await));
        }
        (old, new)
    }

    /// Move the clock forward by `by` in steps of 40 s, shorter than `retireWhenIdle` (1m), each
    /// followed by a recorded use of every token of `in_use` (token, id, ..): with the operator
    /// running, a token an app keeps using never looks idle for a minute.
    async fn step(&self, by: jiff::SignedDuration, in_use: &[&(String, String, String)]) {
        let step = jiff::SignedDuration::from_secs(40);
        let mut left = by;
        while left.is_positive() {
            let now = if left < step { left } else { step };
            self.clock.advance(now);
            left -= now;
            for (token, id, _) in in_use {
                self.use_now(token, id).await;
            }
        }
    }

    async fn secret(&self, name: &str) -> Secret {
        let api: Api<Secret> = Api::namespaced(self.e.cp.client.clone(), &self.e.ns);
        api.get(name).await.unwrap()
    }
}

/// An app that keeps calling with a token, every 2 s, until stopped: what makes a token "in
/// use" however slowly the test itself goes.
struct App {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl App {
    fn start(a: &Aged, token: &str) -> App {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (url, token, flag) = (a.e.store.url.clone(), token.to_owned(), stop.clone());
        let task = tokio::spawn(async move {
            let http = crate::support::http_client();
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
            while !flag.load(Ordering::SeqCst) {
                tick.tick().await;
                let _ = http
                    .post(format!("{url}/v1/introspect"))
                    .bearer_auth(crate::support::store::INTROSPECT)
                    .json(&serde_json::json!({"token": token}))
                    .send()
                    .await;
            }
        });
        App { stop, task }
    }

    async fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.task.await;
    }
}

fn condition<'t>(
    t: &'t loop_token_operator::operator::resource::crd::ApiToken,
    type_: &str,
) -> Option<&'t loop_token_operator::operator::resource::crd::Condition> {
    t.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

/// `Warn`: a token used once and then idle past `unused.after` gets `Unused=True` with the time
/// of its last use and one Warning, however many reconciles follow; a new use clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_token_is_reported_once_with_warn() {
    with_namespace("usage-warn", |cp, ns| async move {
        let a = aged(cp, ns).await;
        a.e.apply(&spec("idle", "  unused: {after: 24h, action: Warn}\n"));
        a.e.wait_ready("idle");
        let (token, id) = (a.e.secret_token("idle").await, a.token_id("idle").await);
        a.clock.advance(hours(1));
        a.use_now(&token, &id).await;
        let used_at = a.registration(&id).await["lastUsedAt"]
            .as_str()
            .unwrap_or_default()
            .to_owned();

        a.clock.advance(hours(24) - mins(1));
        a.settle(3.0).await;
        assert!(
            condition(&a.e.get("idle").await, "Unused").is_none(),
            "not yet"
        );

        a.clock.advance(mins(2));
        let t =
            a.e.wait_until("idle", "Unused=True", |t| condition(t, "Unused").is_some())
                .await;
        let c = condition(&t, "Unused").cloned().unwrap();
        assert_eq!(c.reason, "Idle");
        let since = time_of(Some(&used_at));
        assert!(
            c.message.contains(&format!("not been used since {since}"))
                && c.message.contains("spec.unused.after (24h)"),
            "{}",
            c.message
        );
        assert!(
            crate::operator_e2e::ready(&t),
            "Warn keeps the token working"
        );
        a.settle(10.0).await;
        a.clock.advance(hours(30));
        a.settle(5.0).await;
        let warned = a.notes("idle", "Unused");
        assert_eq!(
            warned.len(),
            1,
            "one Warning, not one per reconcile: {warned:?}"
        );
        assert!(warned[0].contains(&fingerprint(&t)), "{warned:?}");
        assert!(a.active(&token).await);

        // Used again (the introspection above counts): the condition goes.
        a.e.wait_until("idle", "Unused to clear", |t| {
            condition(t, "Unused").is_none()
        })
        .await;
        assert_eq!(a.notes("idle", "Unused").len(), 1);
    })
    .await;
}

/// `Revoke`: the idle token is revoked and removed from its Secret, the ApiToken says why, a
/// restarted operator does not mint a new one, and a new rotate value does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_token_is_revoked_and_stays_so_until_a_new_rotate_value() {
    with_namespace("usage-revoke", |cp, ns| async move {
        let mut a = aged(cp, ns).await;
        let extra = "  unused: {after: 48h, action: Revoke}\n  secret: {template: {.env: \"T=${token}\"}}\n";
        a.e.apply(&spec("idle", extra));
        a.e.wait_ready("idle");
        let (token, id) = (a.e.secret_token("idle").await, a.token_id("idle").await);
        let fp = a.fingerprint("idle").await;
        a.use_now(&token, &id).await;

        // Killed between taking the token out of the Secret and revoking it: the next operator
        // finishes the revocation and does not take the empty Secret for a lost one.
        a.e.operator.terminate();
        let mut crashing = OperatorProcess::builder(&a.e.cp, &a.e.store, &a.e.ns)
            .envs(&a.clock.envs())
            .usage_interval("1s")
            .crash_at("after-mark-unused")
            .start();
        a.clock.advance(hours(49));
        crashing
            .wait_exit(90)
            .unwrap_or_else(|| panic!("the operator did not reach after-mark-unused"));
        let marked = a.secret("idle").await;
        assert!(!marked.data.unwrap_or_default().contains_key("token"));
        assert_eq!(a.registration(&id).await["active"], true, "not revoked yet");
        a.restart_operator();
        let (t, msg) = a.e.wait_stalled("idle", "RevokedUnused").await;
        assert_eq!(reason(&t, "Stalled").as_deref(), Some("RevokedUnused"));
        assert!(
            msg.contains(&fp) && msg.contains("Set a new loop.dev/rotate value"),
            "{msg}"
        );
        assert_eq!(
            a.e.introspect(&token).await,
            serde_json::json!({"active": false})
        );
        let s = a.secret("idle").await;
        let keys = s.data.unwrap_or_default();
        assert!(
            !keys.contains_key("token") && !keys.contains_key(".env"),
            "the token's key and the key rendered with it are gone from the Secret: {:?}",
            keys.keys().collect::<Vec<_>>()
        );
        let marks = s.metadata.annotations.unwrap_or_default();
        assert_eq!(marks.get("loop.dev/revoked-unused"), Some(&id));
        let revoked = a.notes("idle", "RevokedUnused");
        assert_eq!(revoked.len(), 1, "{revoked:?}");
        assert!(revoked[0].contains(&fp), "{revoked:?}");
        let audit = a.registration(&id).await;
        assert_eq!(audit["active"], false);

        // A restart does not take it for "revoked elsewhere" and mint a new token.
        a.e.operator.terminate();
        a.restart_operator();
        a.settle(5.0).await;
        let t = a.e.get("idle").await;
        assert_eq!(reason(&t, "Stalled").as_deref(), Some("RevokedUnused"));
        assert_eq!(a.registrations(&t).await.len(), 1, "no new token");
        assert!(a.notes("idle", "Reissued").is_empty());

        // A new rotate value issues a new token, and the Secret loses the mark.
        a.e.kubectl(&[
            "annotate",
            "apitoken",
            "idle",
            "loop.dev/rotate=2026-12-01T09:00:00Z",
        ]);
        let t = a.e.wait_rotated("idle", "2026-12-01T09:00:00Z").await;
        assert_ne!(fingerprint(&t), fp);
        let fresh = a.e.secret_token("idle").await;
        assert!(a.active(&fresh).await);
        let marks = a
            .secret("idle")
            .await
            .metadata
            .annotations
            .unwrap_or_default();
        assert!(!marks.contains_key("loop.dev/revoked-unused"), "{marks:?}");

        // The store's audit trail says why.
        assert_eq!(a.revocations(&t).await, vec![(id, "unused".to_owned())]);
    })
    .await;
}

/// `retireWhenIdle: 1m` with a 1h grace period. Twins rotate together: the previous token of
/// `quiet` is not used after the rotation and goes inactive a minute later, once the new token
/// is used; `busy`'s previous token keeps being used, so it is reported half-way through its
/// grace period (one Warning naming it) and works until the grace period ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_previous_token_retires_early_and_a_busy_one_is_reported() {
    with_namespace("usage-retire", |cp, ns| async move {
        let mut a = aged(cp, ns).await;
        let rotation = "  rotation: {gracePeriod: 1h, retireWhenIdle: 1m}\n";
        for name in ["quiet", "busy"] {
            a.e.apply(&spec(name, rotation));
        }
        let (old, new) = a.rotate_all(&["quiet", "busy"]).await;
        let (quiet_old, busy_old) = (&old[0], &old[1]);

        // Both new tokens are used, and busy's old one keeps being used; a minute and a bit
        // later quiet's old one, unused since the rotation, goes.
        for (token, id) in &new {
            a.use_now(token, id).await;
        }
        let app = App::start(&a, &busy_old.0);
        a.step(mins(1) + jiff::SignedDuration::from_secs(20), &[busy_old])
            .await;
        // Asked of the management API: an introspection would be a use.
        eventually(180, "quiet's previous token to be revoked", || async {
            (a.registration(&quiet_old.1).await["active"] == false).then_some(())
        })
        .await;
        assert!(!a.active(&quiet_old.0).await);
        let quiet = a.e.get("quiet").await;
        assert_eq!(
            a.revocations(&quiet).await,
            vec![(quiet_old.1.clone(), "idle".to_owned())]
        );
        let retired = eventually(120, "the Retired Event", || async {
            let n = a.notes("quiet", "Retired");
            (!n.is_empty()).then_some(n)
        })
        .await;
        assert_eq!(retired.len(), 1, "{retired:?}");
        assert!(retired[0].contains(&quiet_old.2), "{retired:?}");
        a.settle(5.0).await;
        assert!(
            a.active(&busy_old.0).await,
            "busy's previous token is in use"
        );
        assert!(a.notes("busy", "Retired").is_empty());

        // Half-way through the grace period, busy's old token is still used: one Warning.
        a.step(mins(30), &[busy_old]).await;
        let t =
            a.e.wait_until("busy", "the previous token marked still in use", |t| {
                t.status
                    .as_ref()
                    .is_some_and(|s| s.previous_tokens.iter().any(|p| p.still_in_use))
            })
            .await;
        let prev = &t.status.as_ref().unwrap().previous_tokens[0];
        assert_eq!(prev.fingerprint, busy_old.2);
        assert!(prev.last_used_at.is_some());
        a.settle(5.0).await;
        let warned = a.notes("busy", "PreviousTokenStillInUse");
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(warned[0].contains(&busy_old.2), "{warned:?}");
        assert!(a.notes("quiet", "PreviousTokenStillInUse").is_empty());

        // The grace period is the cap, kept by the store itself: the old token works until it
        // ends (the operator is stopped, so nothing retires it early while the test looks).
        a.e.operator.terminate();
        app.stop().await;
        assert!(a.active(&busy_old.0).await, "still in its grace period");
        a.clock.advance(mins(30));
        eventually(
            90,
            "busy's previous token to stop at the end of its grace",
            || async { (!a.active(&busy_old.0).await).then_some(()) },
        )
        .await;
        assert!(a.active(&new[1].0).await);
    })
    .await;
}
