//! Tokens that age, on the real API server with a real store and a real operator: scheduled
//! rotation, expiry enforced by the store, renewal before expiry, `renew: false`, and the
//! ordering of `loop.dev/rotate` values.
//!
//! Hours pass in an instant: the store and the operator run on one fake clock (libfaketime, see
//! [`support::clock`]), which the test moves forward. Only the wall clock moves; the processes'
//! timers run in real time, so the operator is started with `--usage-interval 1s` to look at
//! the clock often.

use crate::operator_e2e::{Env, ready, start_store_with, token_yaml};
use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use jiff::{SignedDuration, Timestamp};
use loop_token_operator::operator::resource::crd::ApiToken;
use reqwest::Method;
use serde_json::Value;
use support::clock::FakeClock;
use support::operator::OperatorProcess;
use support::store::ADMIN;
use support::{ControlPlane, eventually, with_namespace};

pub(crate) fn mins(m: i64) -> SignedDuration {
    SignedDuration::from_mins(m)
}

pub(crate) fn hours(h: i64) -> SignedDuration {
    SignedDuration::from_hours(h)
}

/// An environment whose store and operator share a fake clock.
pub(crate) struct Aged {
    pub(crate) e: Env,
    pub(crate) clock: FakeClock,
}

pub(crate) async fn aged(cp: ControlPlane, ns: String) -> Aged {
    support::install_crd(&cp).await;
    let clock = FakeClock::new();
    let data = tempfile::tempdir().unwrap();
    let store = start_store_with(data.path(), None, &clock.envs());
    let operator = start_operator(&cp, &store, &ns, &clock);
    Aged {
        e: Env {
            cp,
            ns,
            store,
            operator,
            data,
        },
        clock,
    }
}

fn start_operator(
    cp: &ControlPlane,
    store: &support::store::StoreProcess,
    ns: &str,
    clock: &FakeClock,
) -> OperatorProcess {
    OperatorProcess::builder(cp, store, ns)
        .envs(&clock.envs())
        .usage_interval("1s")
        .start()
}

impl Aged {
    /// Reconciles done so far (all results).
    pub(crate) async fn reconciles(&self) -> f64 {
        counter_sum(
            &self.e.operator.metrics().await,
            "loop_operator_reconciles_total",
        )
    }

    /// Wait until the operator has reconciled `n` more times: it has looked at the clock since.
    pub(crate) async fn settle(&self, n: f64) {
        let before = self.reconciles().await;
        eventually(90, "the operator to reconcile again", || async {
            (self.reconciles().await >= before + n).then_some(())
        })
        .await;
    }

    /// Start a new operator (after `operator.terminate()`), on the same clock.
    pub(crate) fn restart_operator(&mut self) {
        self.e.operator = start_operator(&self.e.cp, &self.e.store, &self.e.ns, &self.clock);
    }

    /// Every registration of the ApiToken in the store, revoked ones included.
    pub(crate) async fn registrations(&self, t: &ApiToken) -> Vec<Value> {
        let uid = t.metadata.uid.clone().unwrap_or_default();
        let (_, v) = self
            .e
            .store
            .call(
                Method::GET,
                &format!("/v1/tokens?ownerUid={uid}"),
                Some(ADMIN),
                None,
            )
            .await;
        v["items"].as_array().cloned().unwrap_or_default()
    }

    /// The notes of this ApiToken's Events with `reason`.
    pub(crate) fn notes(&self, name: &str, reason: &str) -> Vec<String> {
        let v: Value = serde_json::from_str(&self.e.events()).unwrap_or(Value::Null);
        v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|ev| ev["involvedObject"]["name"] == name && ev["reason"] == reason)
            .filter_map(|ev| ev["message"].as_str().map(str::to_owned))
            .collect()
    }

    pub(crate) async fn fingerprint(&self, name: &str) -> String {
        fingerprint(&self.e.get(name).await)
    }

    /// Wait until the ApiToken is Ready with a fingerprint other than `old`.
    pub(crate) async fn wait_new_token(&self, name: &str, old: &str) -> ApiToken {
        let old = old.to_owned();
        self.e
            .wait_until(name, "a new token", move |t| {
                ready(t) && fingerprint(t) != old
            })
            .await
    }

    pub(crate) async fn active(&self, token: &str) -> bool {
        self.e.introspect(token).await["active"] == true
    }
}

fn counter_sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub(crate) fn fingerprint(t: &ApiToken) -> String {
    t.status
        .as_ref()
        .and_then(|s| s.fingerprint.clone())
        .unwrap_or_default()
}

pub(crate) fn time_of(v: Option<&String>) -> Timestamp {
    v.and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a time: {v:?}"))
}

pub(crate) fn spec(name: &str, extra: &str) -> String {
    format!("{}{extra}", token_yaml(name, ""))
}

/// A scheduled ApiToken rotates exactly once per period, the previous token works for its grace
/// period and then not, and an operator stopped across two periods rotates once when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_token_rotates_once_per_period_even_after_an_outage() {
    with_namespace("age-every", |cp, ns| async move {
        let mut a = aged(cp, ns).await;
        a.e.apply(&spec("sched", "  rotation: {every: 2h, gracePeriod: 1h}\n"));
        a.e.wait_ready("sched");
        let t = a.e.get("sched").await;
        let s = t.status.clone().unwrap_or_default();
        let issued = time_of(s.issued_at.as_ref());
        assert_eq!(time_of(s.next_rotation_at.as_ref()), issued + hours(2));
        assert_eq!(s.expires_at, None, "no expiry asked for");
        let (fp0, token0) = (fingerprint(&t), a.e.secret_token("sched").await);

        a.clock.advance(mins(119));
        a.settle(3.0).await;
        assert_eq!(a.fingerprint("sched").await, fp0, "not due yet");

        a.clock.advance(mins(2));
        let t = a.wait_new_token("sched", &fp0).await;
        let token1 = a.e.secret_token("sched").await;
        assert!(a.active(&token1).await);
        assert!(
            a.active(&token0).await,
            "the previous token keeps its grace period"
        );
        let s = t.status.clone().unwrap_or_default();
        assert_eq!(
            s.previous_tokens
                .iter()
                .map(|p| p.fingerprint.as_str())
                .collect::<Vec<_>>(),
            [fp0.as_str()]
        );
        let rotated = a.notes("sched", "Rotated");
        assert_eq!(rotated.len(), 1, "{rotated:?}");
        assert!(
            rotated[0].contains("on schedule (spec.rotation.every 2h)"),
            "{rotated:?}"
        );

        // The grace period ends: the store stops answering for the previous token.
        a.clock.advance(mins(61));
        eventually(60, "the previous token to stop working", || async {
            (!a.active(&token0).await).then_some(())
        })
        .await;
        a.settle(3.0).await;
        assert!(a.active(&token1).await);
        assert_eq!(a.registrations(&t).await.len(), 2, "exactly one rotation");

        // Stopped across two periods: exactly one rotation when it is back.
        a.e.operator.terminate();
        a.clock.advance(hours(5));
        a.restart_operator();
        let t = a.wait_new_token("sched", &fingerprint(&t)).await;
        a.settle(5.0).await;
        assert_eq!(
            a.registrations(&t).await.len(),
            3,
            "one rotation for two missed periods"
        );
        assert_eq!(a.notes("sched", "Rotated").len(), 2);
        let s = a.e.get("sched").await.status.unwrap_or_default();
        assert_eq!(
            time_of(s.next_rotation_at.as_ref()),
            time_of(s.issued_at.as_ref()) + hours(2),
            "the period starts again from the new token"
        );
    })
    .await;
}

/// With `expiry.after`, the store refuses a token at its expiry even while the operator is down;
/// with the operator running, the token is renewed before it, and at no moment does the Secret
/// hold a token the store refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_token_is_renewed_in_time_and_refused_by_the_store_once_expired() {
    with_namespace("age-renew", |cp, ns| async move {
        let mut a = aged(cp, ns).await;
        a.e.apply(&spec("renewed", "  expiry: {after: 3h}\n"));
        a.e.wait_ready("renewed");
        let t = a.e.get("renewed").await;
        let s = t.status.clone().unwrap_or_default();
        let issued = time_of(s.issued_at.as_ref());
        assert_eq!(time_of(s.expires_at.as_ref()), issued + hours(3));
        assert_eq!(time_of(s.next_rotation_at.as_ref()), issued + hours(2));
        let fp0 = fingerprint(&t);
        // The store has the expiry since the issue (RFC 7662's `exp`, in seconds).
        let token0 = a.e.secret_token("renewed").await;
        assert_eq!(
            a.e.introspect(&token0).await["exp"],
            (issued + hours(3)).as_second()
        );

        // Watch the Secret's token the whole time: every answer must be active.
        let watcher = SecretWatcher::start(&a, "renewed");
        a.clock.advance(hours(1));
        a.settle(3.0).await;
        watcher.wait_rounds(3).await;
        a.clock.advance(mins(61));
        let t = a.wait_new_token("renewed", &fp0).await;
        let renewed = a.notes("renewed", "Rotated");
        assert!(
            renewed
                .iter()
                .any(|n| n.contains("issued before the previous token expires")),
            "{renewed:?}"
        );
        watcher.wait_rounds(3).await;
        // Past the first token's expiry.
        a.clock.advance(mins(61));
        a.settle(3.0).await;
        watcher.wait_rounds(3).await;
        let refused = watcher.stop().await;
        assert_eq!(
            refused,
            Vec::<String>::new(),
            "the Secret held a refused token"
        );

        // The operator is down; the store enforces the expiry by itself.
        let token1 = a.e.secret_token("renewed").await;
        assert!(a.active(&token1).await);
        a.e.operator.terminate();
        a.clock.advance(hours(3));
        assert_eq!(
            a.e.introspect(&token1).await,
            serde_json::json!({"active": false})
        );

        // Back: a new token at once, and the Event says why.
        a.restart_operator();
        a.wait_new_token("renewed", &fingerprint(&t)).await;
        assert!(a.active(&a.e.secret_token("renewed").await).await);
        let reissued = a.notes("renewed", "Reissued");
        assert!(
            reissued.iter().any(|n| n.contains("had expired")),
            "{reissued:?}"
        );
    })
    .await;
}

/// A rotation that is due while the store is down: the ApiToken says it is overdue (once, with a
/// Warning), the current token keeps working, and the rotation happens once the store is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_due_during_a_store_outage_is_reported_overdue_then_done() {
    with_namespace("age-overdue", |cp, ns| async move {
        let mut a = aged(cp, ns).await;
        a.e.apply(&spec(
            "late",
            "  rotation: {every: 2h}
  expiry: {after: 6h}
",
        ));
        a.e.wait_ready("late");
        let fp0 = a.fingerprint("late").await;
        let token0 = a.e.secret_token("late").await;

        let listen = a.e.store.url.trim_start_matches("http://").to_owned();
        a.e.store.kill();
        a.clock.advance(mins(121));
        let t =
            a.e.wait_until("late", "RotationOverdue", |t| {
                crate::operator_e2e::reason(t, "Reconciling").as_deref() == Some("RotationOverdue")
            })
            .await;
        let msg = t
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.message.clone())
            .unwrap_or_default();
        assert!(
            msg.contains("has not happened: the Loop token store is unavailable")
                && msg.contains("the current token expires at"),
            "{msg}"
        );
        a.settle(5.0).await;
        assert_eq!(
            a.notes("late", "RotationOverdue").len(),
            1,
            "one Warning per episode"
        );

        // The store is back (same data, same address, same clock): the rotation happens.
        a.e.store = start_store_with(a.e.data.path(), Some(&listen), &a.clock.envs());
        let t = a.wait_new_token("late", &fp0).await;
        assert!(
            a.active(&token0).await,
            "the overdue token keeps its grace period"
        );
        a.settle(3.0).await;
        assert_eq!(a.registrations(&t).await.len(), 2, "one rotation");
    })
    .await;
}

/// Reads the Secret's token and asks the store about it, over and over, recording every refusal.
struct SecretWatcher {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl SecretWatcher {
    fn start(a: &Aged, secret: &str) -> SecretWatcher {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicUsize::new(0));
        let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
            kube::Api::namespaced(a.e.cp.client.clone(), &a.e.ns);
        let store_url = a.e.store.url.clone();
        let (name, stop2, rounds2) = (secret.to_owned(), stop.clone(), rounds.clone());
        let task = tokio::spawn(async move {
            let http = support::http_client();
            let mut refused = Vec::new();
            while !stop2.load(Ordering::SeqCst) {
                let s = secrets.get(&name).await.unwrap_or_else(|e| panic!("{e}"));
                let data = s.data.unwrap_or_default();
                let token = String::from_utf8_lossy(&data["token"].0).to_string();
                let answer: Value = http
                    .post(format!("{store_url}/v1/introspect"))
                    .bearer_auth(support::store::INTROSPECT)
                    .json(&serde_json::json!({"token": token}))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
                    .json()
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                if answer["active"] != true {
                    let fp = loop_token_operator::token::Token::parse(&token)
                        .map(|t| t.fingerprint())
                        .unwrap_or_default();
                    refused.push(format!("token {fp} refused: {answer}"));
                }
                rounds2.fetch_add(1, Ordering::SeqCst);
            }
            refused
        });
        SecretWatcher { stop, rounds, task }
    }

    /// Wait until `n` more whole rounds (read the Secret, then ask the store) have been done.
    async fn wait_rounds(&self, n: usize) {
        let target = self.rounds.load(Ordering::SeqCst) + n + 1;
        eventually(60, "the Secret watcher to go round", || async {
            (self.rounds.load(Ordering::SeqCst) >= target).then_some(())
        })
        .await;
    }

    async fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap_or_else(|e| panic!("{e}"))
    }
}

/// With `renew: false` the token expires and the ApiToken says so until a new rotate value
/// issues a fresh token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_renew_an_expired_token_says_so_until_a_new_rotate_value() {
    with_namespace("age-expire", |cp, ns| async move {
        let a = aged(cp, ns).await;
        a.e.apply(&spec("lapsing", "  expiry: {after: 2h, renew: false}\n"));
        a.e.wait_ready("lapsing");
        let t = a.e.get("lapsing").await;
        let s = t.status.clone().unwrap_or_default();
        assert_eq!(s.next_rotation_at, None, "nothing renews it");
        let token0 = a.e.secret_token("lapsing").await;

        a.clock.advance(mins(121));
        let (t, msg) = a.e.wait_stalled("lapsing", "Expired").await;
        assert!(!ready(&t));
        assert!(msg.contains("Set a new loop.dev/rotate value"), "{msg}");
        assert!(!a.active(&token0).await);
        a.settle(5.0).await;
        assert_eq!(
            a.notes("lapsing", "Expired").len(),
            1,
            "one Warning, not one per reconcile"
        );
        assert_eq!(a.registrations(&t).await.len(), 1, "no new token by itself");

        a.e.kubectl(&["annotate", "apitoken", "lapsing", "loop.dev/rotate=renew-1"]);
        let t = a.e.wait_rotated("lapsing", "renew-1").await;
        let token1 = a.e.secret_token("lapsing").await;
        assert!(a.active(&token1).await);
        let s = t.status.unwrap_or_default();
        assert_eq!(
            time_of(s.expires_at.as_ref()),
            time_of(s.issued_at.as_ref()) + hours(2)
        );
    })
    .await;
}

/// Rotate values that are RFC 3339 timestamps rotate only forward (a GitOps sync putting back an
/// older value does nothing); any other change of value rotates once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_values_rotate_forward_in_time_and_once_per_other_change() {
    with_namespace("age-order", |cp, ns| async move {
        let a = aged(cp, ns).await;
        a.e.apply(&token_yaml("ordered", ""));
        a.e.wait_ready("ordered");
        let annotate = |v: &str| {
            a.e.kubectl(&[
                "annotate",
                "--overwrite",
                "apitoken",
                "ordered",
                &format!("loop.dev/rotate={v}"),
            ]);
        };
        let (t2, t1) = ("2026-12-02T09:00:00Z", "2026-12-01T09:00:00Z");
        annotate(t2);
        let t = a.e.wait_rotated("ordered", t2).await;
        let fp = fingerprint(&t);
        annotate(t1);
        let t =
            a.e.wait_until(
                "ordered",
                "Ready to say the earlier value is ignored",
                |t| {
                    t.status.as_ref().is_some_and(|s| {
                        s.conditions.iter().any(|c| {
                            c.type_ == "Ready"
                                && c.status == "True"
                                && c.message.contains("is not later than")
                        })
                    })
                },
            )
            .await;
        assert_eq!(
            t.status
                .as_ref()
                .and_then(|s| s.last_rotation_request.as_deref()),
            Some(t2),
            "the handled value stays the later one"
        );
        assert_eq!(
            a.fingerprint("ordered").await,
            fp,
            "an earlier timestamp does not rotate"
        );
        assert_eq!(
            a.registrations(&t).await.len(),
            2,
            "t2 then t1: one rotation"
        );

        for v in ["a", "b", "a"] {
            annotate(v);
            a.e.wait_rotated("ordered", v).await;
        }
        assert_eq!(
            a.registrations(&t).await.len(),
            5,
            "a, b, a: three rotations"
        );
        assert_eq!(a.notes("ordered", "Rotated").len(), 4);
    })
    .await;
}

/// Converged ApiTokens with a schedule and an expiry make no write, to the API server or to the
/// store, between their rotations, however often the operator looks at them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converged_scheduled_tokens_are_quiet_between_rotations() {
    with_namespace("age-quiet", |cp, ns| async move {
        let a = aged(cp, ns).await;
        let names = ["q1", "q2", "q3"];
        for n in names {
            a.e.apply(&spec(
                n,
                "  rotation: {every: 24h}\n  expiry: {after: 72h}\n",
            ));
        }
        for n in names {
            a.e.wait_ready(n);
        }
        let writes = || writes_in(&a);
        let before = writes().await;
        a.settle(10.0).await;
        // Time passes (not yet due): still nothing to write.
        a.clock.advance(hours(12));
        a.settle(10.0).await;
        assert_eq!(writes().await, before, "writes while nothing was due");

        // Due: one rotation each, then quiet again.
        let mut fps = Vec::new();
        for n in names {
            fps.push(a.fingerprint(n).await);
        }
        a.clock.advance(hours(24) + mins(1));
        for (n, fp) in names.iter().zip(&fps) {
            a.wait_new_token(n, fp).await;
        }
        a.settle(10.0).await;
        let after_rotation = writes().await;
        a.settle(20.0).await;
        assert_eq!(
            writes().await,
            after_rotation,
            "writes after the rotations settled"
        );
        for n in names {
            let t = a.e.get(n).await;
            assert_eq!(a.registrations(&t).await.len(), 2, "{n}: one rotation");
        }
    })
    .await;
}

/// Writes so far: accepted API requests in the namespace (the audit log) and the store's write
/// requests.
async fn writes_in(a: &Aged) -> (usize, f64) {
    let audit = a.e.cp.state_dir.join("logs/audit.log");
    let text = std::fs::read_to_string(&audit).unwrap_or_default();
    let api = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["objectRef"]["namespace"] == a.e.ns.as_str()
                && v["stage"] == "ResponseComplete"
                && !matches!(v["verb"].as_str(), Some("get" | "list" | "watch"))
        })
        .count();
    let m = a.e.store.metrics().await;
    let store = m
        .lines()
        .filter(|l| {
            l.starts_with("loop_store_http_requests_total")
                && ["PUT", "PATCH", "DELETE"]
                    .iter()
                    .any(|v| l.contains(&format!("method=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    (api, store)
}
