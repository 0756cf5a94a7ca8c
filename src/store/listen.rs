//! The store's HTTP transport: accept loop, optional TLS, limits and a bounded graceful shutdown.
//!
//! I/O module: accepts TCP connections and serves HTTP/1.1 on them (over TLS when an acceptor is
//! given) with hyper, in place of `axum::serve`, which has none of these limits:
//!
//! - at most `max_connections` at once: above it, accepting waits until one closes (the kernel's
//!   backlog holds the newcomers; nothing is refused);
//! - a TLS handshake and each request's head must arrive within `header_read_timeout`;
//! - each request body must arrive within `body_timeout` (total, not per chunk, so a client
//!   dribbling a byte a second is cut too);
//! - a keep-alive connection with no request for `idle_timeout` is closed;
//! - on shutdown: stop accepting, let in-flight requests finish and close idle connections;
//!   after `shutdown_deadline` close whatever is left. [`serve`] returns once every
//!   connection is gone, so the caller's drain of writes runs after the last request.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tower_http::timeout::DeadlineBody;

/// The transport's limits (each a `loop-store serve` flag).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            shutdown_deadline: Duration::from_secs(20),
        }
    }
}

/// Serve `app` on `listener` until `shutdown` turns true, then shut down within the deadline.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let slot = tokio::select! {
            s = Arc::clone(&slots).acquire_owned() => s,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Out of file descriptors, or a connection reset before it was accepted.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let conn = connection(stream, tls.clone(), app.clone(), limits, shutdown.clone());
        conns.spawn(async move {
            conn.await;
            drop(slot);
        });
    }
    drop(listener);
    wind_down(conns, limits.shutdown_deadline).await;
}

/// Wait for the connections to finish, at most `deadline`; then close the rest.
async fn wind_down(mut conns: JoinSet<()>, deadline: Duration) {
    let open = conns.len();
    let all_done = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(deadline, all_done).await.is_err() {
        tracing::warn!(
            open,
            left = conns.len(),
            ?deadline,
            "shutdown deadline reached: closing the connections still open"
        );
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
}

/// One connection: the TLS handshake (bounded by the header timeout), then HTTP/1.1.
async fn connection(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    match tls {
        None => http1(stream, app, limits, shutdown).await,
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream));
            match handshake.await {
                Ok(Ok(tls_stream)) => http1(tls_stream, app, limits, shutdown).await,
                Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        }
    }
}

/// Requests in flight on one connection and when the last one ended.
struct Activity {
    in_flight: AtomicUsize,
    last: std::sync::Mutex<Instant>,
}

impl Activity {
    fn touch(&self) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// When the connection counts as idle for good, if no request is running.
    fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        (self.in_flight.load(Ordering::SeqCst) == 0)
            .then(|| *self.last.lock().unwrap_or_else(|e| e.into_inner()) + idle)
    }
}

/// Largest request head (request line and headers) read into memory per connection. hyper's
/// default is about 400 KiB, which times `--max-connections` (1024) is far beyond the chart's
/// memory limit for a client that needs no credential; 32 KiB is ample for this API. A larger
/// head is answered 431 and the connection closed.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

/// Serve HTTP/1.1 on an established stream until the client leaves, the connection idles out,
/// or shutdown closes it once its request is answered.
async fn http1<S>(io: S, app: Router, limits: Limits, mut shutdown: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity {
        in_flight: AtomicUsize::new(0),
        last: std::sync::Mutex::new(Instant::now()),
    });
    let seen = Arc::clone(&activity);
    let body_timeout = limits.body_timeout;
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let seen = Arc::clone(&seen);
        let app = app.clone();
        seen.in_flight.fetch_add(1, Ordering::SeqCst);
        async move {
            let req = req.map(|b| Body::new(DeadlineBody::new(body_timeout, b)));
            let answer = app.oneshot(req).await;
            seen.touch();
            seen.in_flight.fetch_sub(1, Ordering::SeqCst);
            answer
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_header_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        let idle_at = activity
            .idle_deadline(limits.idle_timeout)
            .unwrap_or_else(|| Instant::now() + limits.idle_timeout);
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = shutdown.wait_for(|s| *s), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(idle_at), if !closing => {
                if activity.idle_deadline(limits.idle_timeout).is_some_and(|at| at <= Instant::now()) {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
