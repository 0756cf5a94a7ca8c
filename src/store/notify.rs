//! The change listener and its heartbeat (PostgreSQL): how a store process hears of changes
//! made through the others, and proves that it still hears them.
//!
//! I/O module. Two tasks, each on connections of its own (never the shared pool's, which busy
//! requests could hold, and whose slots a connection frozen by a silent link would keep):
//!
//! - the **listener** `LISTEN`s on [`NOTIFY_CHANNEL`] (each payload is the hash of a changed
//!   token, whose cache entry it drops) and on this process's own heartbeat channel (each
//!   payload a send time, which extends the cache's trust: see [`super::trust`]);
//! - the **heartbeat** sends `pg_notify(<own channel>, <send time>)` every quarter of the trust
//!   bound, each call bounded by the bound itself.
//!
//! The listener replaces its connection when it is lost, and also when no heartbeat has arrived
//! for [`super::trust::Trust::silence_limit`]: a link that silently stopped delivering never reports an error.
//! Whenever its connection goes or is replaced the cache is emptied and stops answering until a
//! heartbeat arrives on the new one, since notifications sent in between are lost. sqlx's
//! `PgListener` would reconnect inside `try_recv` before reporting the loss; here it reports at
//! once (`eager_reconnect(false)`) and is dropped, so no notification is missed unseen.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPoolOptions};
use tokio::sync::{Notify, watch};

use super::cache::Cache;
use super::metrics::{ListenerRestart, Metrics};
use super::repo::{NOTIFY_CHANNEL, tune_session};
use crate::clock::{Clock, Skew};
use crate::token::TokenHash;

/// Start both tasks. The returned future resolves once the cache is first trusted (a heartbeat
/// made the round trip), so that the store can wait for it before it serves.
pub fn spawn(
    options: PgConnectOptions,
    cache: Arc<Cache>,
    metrics: Arc<Metrics>,
    clock: (Clock, Arc<Skew>),
    shutdown: watch::Receiver<bool>,
) -> Result<impl std::future::Future<Output = ()>, NoRandomness> {
    let channel = heartbeat_channel()?;
    let (trusted_tx, mut trusted_rx) = watch::channel(false);
    let beat_now = Arc::new(Notify::new());
    tokio::spawn(heartbeat(
        options.clone(),
        channel.clone(),
        Arc::clone(&cache),
        Arc::clone(&beat_now),
        clock,
        shutdown.clone(),
    ));
    let listener = Listener {
        options,
        channel,
        cache,
        metrics,
        trusted: trusted_tx,
        beat_now,
    };
    tokio::spawn(listener.run(shutdown));
    Ok(async move {
        let _ = trusted_rx.wait_for(|t| *t).await;
    })
}

/// The OS gave no randomness for the heartbeat channel's name.
#[derive(Debug, thiserror::Error)]
#[error(
    "the operating system gave no randomness for this process's heartbeat channel (getrandom failed)"
)]
pub struct NoRandomness;

/// This process's heartbeat channel: a random name, so that each process hears only its own.
/// Another process's stamps, read against this one's clock, would prove nothing: without
/// randomness there is no name that is surely this process's alone (a process id is 1 in every
/// container), and the store does not start.
fn heartbeat_channel() -> Result<String, NoRandomness> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|_| NoRandomness)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("loop_store_heartbeat_{hex}"))
}

async fn heartbeat(
    options: PgConnectOptions,
    channel: String,
    cache: Arc<Cache>,
    beat_now: Arc<Notify>,
    (clock, skew): (Clock, Arc<Skew>),
    mut shutdown: watch::Receiver<bool>,
) {
    let trust = cache.trust();
    let deadline = trust.bound();
    let mut tick = tokio::time::interval(trust.heartbeat_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn: Option<PgConnection> = None;
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // A new listener connection: prove it now rather than at the next tick.
            _ = beat_now.notified() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        // Stamped before anything is sent: the heartbeat commits later than this, never
        // earlier, so the proof it carries is on the safe side.
        let sent = Instant::now();
        let before_ms = clock();
        let outcome = tokio::time::timeout(deadline, async {
            if conn.is_none() {
                let mut c = PgConnection::connect_with(&options).await?;
                tune_session(&mut c).await;
                conn = Some(c);
            }
            let Some(c) = conn.as_mut() else {
                return Ok::<(), sqlx::Error>(());
            };
            // The database's clock, read in the same round trip (see `crate::clock::Skew`).
            let (db_ms,): (i64,) = sqlx::query_as(
                "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint \
                 FROM pg_notify($1, $2)",
            )
            .bind(&channel)
            .bind(trust.stamp(sent))
            .fetch_one(c)
            .await?;
            skew.observe(before_ms, db_ms, clock());
            Ok(())
        })
        .await;
        match outcome {
            Ok(Ok(())) => {
                if failing {
                    tracing::info!("heartbeats reach the database again");
                }
                failing = false;
            }
            failed => {
                // A connection that failed or did not answer is not used again: dropping it
                // closes the socket without waiting on the link.
                conn = None;
                if !failing {
                    let error = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer within {deadline:?}"),
                    };
                    tracing::warn!(%error, "cannot send a heartbeat through the database; the introspection cache stops answering within the trust bound");
                }
                failing = true;
            }
        }
    }
}

/// Why a listener connection ended.
enum Ended {
    Shutdown,
    Restart(ListenerRestart),
}

/// The listener task's parts.
struct Listener {
    options: PgConnectOptions,
    channel: String,
    cache: Arc<Cache>,
    metrics: Arc<Metrics>,
    trusted: watch::Sender<bool>,
    beat_now: Arc<Notify>,
}

impl Listener {
    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let cache = &self.cache;
        let silence = cache.trust().silence_limit();
        let mut backoff = Duration::from_millis(100);
        loop {
            let subscribed = tokio::select! {
                s = tokio::time::timeout(silence, subscribe(&self.options, &self.channel)) => s,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            match subscribed {
                Ok(Ok(listener)) => {
                    // Changes made while nobody listened are unknown: start afresh. This must
                    // come after `listen_all`: changes committed before the LISTEN took effect
                    // never reach this connection, and a heartbeat on it proves nothing about
                    // them; only reads made after this clear do. The cache answers again with
                    // the first heartbeat heard on this connection, asked for at once.
                    cache.untrust();
                    self.beat_now.notify_one();
                    backoff = Duration::from_millis(100);
                    tracing::info!(
                        channel = NOTIFY_CHANNEL,
                        "listening for token changes by other store processes"
                    );
                    let ended =
                        receive(listener, &self.channel, cache, &self.trusted, &mut shutdown).await;
                    cache.untrust();
                    match ended {
                        Ended::Shutdown => return,
                        Ended::Restart(why) => self.metrics.listener_restart(why),
                    }
                }
                failed => {
                    cache.untrust();
                    self.metrics.listener_restart(ListenerRestart::Error);
                    let error = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer within {silence:?}"),
                    };
                    tracing::warn!(%error, retry_in = ?backoff, "cannot listen for token changes; introspection reads the database");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {},
                _ = shutdown.wait_for(|s| *s) => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

/// A listener on a connection of its own (a pool of one, new for each attempt: a connection
/// frozen by a silent link may keep its slot, and must not keep the next attempt waiting).
async fn subscribe(options: &PgConnectOptions, channel: &str) -> Result<PgListener, sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                tune_session(conn).await;
                Ok(())
            })
        })
        .connect_lazy_with(options.clone());
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.eager_reconnect(false);
    listener.ignore_pool_close_event(true);
    listener.listen_all([NOTIFY_CHANNEL, channel]).await?;
    Ok(listener)
}

/// Apply notifications until the connection is lost, goes silent, or the store stops.
async fn receive(
    mut listener: PgListener,
    channel: &str,
    cache: &Cache,
    trusted: &watch::Sender<bool>,
    shutdown: &mut watch::Receiver<bool>,
) -> Ended {
    let silence = cache.trust().silence_limit();
    let mut last_heard = tokio::time::Instant::now();
    loop {
        let next = tokio::select! {
            n = listener.try_recv() => n,
            _ = tokio::time::sleep_until(last_heard + silence) => {
                tracing::warn!(?silence, "no heartbeat came back through the change listener; replacing its connection (introspection reads the database meanwhile)");
                return Ended::Restart(ListenerRestart::Silent);
            }
            _ = shutdown.wait_for(|s| *s) => return Ended::Shutdown,
        };
        match next {
            Ok(Some(n)) if n.channel() == channel => {
                let now = Instant::now();
                if let Some(sent) = cache.trust().parse_stamp(n.payload(), now) {
                    cache.trust().proven(sent);
                    last_heard = tokio::time::Instant::now();
                    let _ = trusted.send(true);
                }
            }
            Ok(Some(n)) => match n.payload().parse::<TokenHash>() {
                Ok(h) => cache.invalidate(&h),
                Err(_) => cache.clear(),
            },
            Ok(None) => {
                tracing::warn!(
                    "lost the change listener connection; introspection reads the database until it is back"
                );
                return Ended::Restart(ListenerRestart::Lost);
            }
            Err(e) => {
                tracing::warn!(error = %e, "the change listener failed; introspection reads the database until it is back");
                return Ended::Restart(ListenerRestart::Lost);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_channels_are_distinct_lowercase_identifiers() {
        let (a, b) = (
            heartbeat_channel().unwrap_or_default(),
            heartbeat_channel().unwrap_or_default(),
        );
        assert!(!a.is_empty());
        assert_ne!(a, b);
        for c in [&a, &b] {
            assert!(c.len() < 64, "{c}");
            assert!(
                c.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_'),
                "{c}"
            );
        }
    }
}
