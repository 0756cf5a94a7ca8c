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
//! - a keep-alive connection with no request is closed after `header_read_timeout` too: hyper
//!   starts that timer as soon as it waits for the next request, so it is also the idle timeout;
//! - on shutdown: stop accepting, let in-flight requests finish and close idle connections;
//!   after `shutdown_deadline` close whatever is left. [`serve`] returns once every
//!   connection is gone, so the caller's drain of writes runs after the last request.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tower_http::timeout::DeadlineBody;

/// The transport's limits (each a `loop-store serve` flag).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
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

/// Largest request head (request line and headers) read into memory per connection. hyper's
/// default is about 400 KiB, which times `--max-connections` (1024) is far beyond the chart's
/// memory limit for a client that needs no credential; 32 KiB is ample for this API. A larger
/// head is answered 431 and the connection closed.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

/// Serve HTTP/1.1 on an established stream until the client leaves, the connection times out
/// waiting for a request head, or shutdown closes it once its request is answered.
async fn http1<S>(io: S, app: Router, limits: Limits, mut shutdown: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let body_timeout = limits.body_timeout;
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let req = req.map(|b| Body::new(DeadlineBody::new(body_timeout, b)));
        app.clone().oneshot(req)
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
    tokio::select! {
        done = conn.as_mut() => {
            if let Err(e) = done {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            return;
        }
        _ = shutdown.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
    }
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
