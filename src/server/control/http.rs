//! The control API's HTTP server: an accept loop and its connections, with a stop that
//! answers every request it accepted.
//!
//! Stopping (a SIGTERM, or an upgrade that hands the control socket to a new process) first
//! stops accepting, so that new connections wait in the socket's queue for whoever polls it
//! next, then lets each open connection finish the request it is on and closes it. A
//! connection accepted just before the stop has not sent its request yet, as far as this
//! process knows: it gets a second to send one, which is served, rather than being closed
//! with its request unread (the client would see a reset). The connections' header timeout
//! drops clients that never finish a request (slowloris).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

/// How long a client may take to send a request's headers, the first one included.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection accepted just before a stop may take to send its request.
const LAST_CALL: Duration = Duration::from_secs(1);

/// Serves `app` on `listener` until `stop` is cancelled, then lets open connections finish
/// their requests for up to `grace`. `listener` is this server's own descriptor: closing it
/// leaves the socket open for the other descriptors of it (an upgrade keeps one).
pub async fn serve(
    listener: std::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    stop: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let connections = TaskTracker::new();
    let closing = CancellationToken::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                connections.spawn(connection(stream, peer, tls.clone(), app.clone(), closing.clone()));
            }
            Err(err) => {
                debug!(error = %err, "the control API could not accept a connection");
                // Out of descriptors: let connections end rather than spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    closing.cancel();
    connections.close();
    let _ = tokio::time::timeout(grace, connections.wait()).await;
    Ok(())
}

/// Serves one connection until it ends, or until `closing` and its request is answered.
async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    closing: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let requests = Arc::new(AtomicU64::new(0));
    let counted = requests.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        counted.fetch_add(1, Ordering::Relaxed);
        request.extensions_mut().insert(ConnectInfo(peer));
        tower::ServiceExt::oneshot(app.clone(), request)
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
    let io = match tls {
        Some(acceptor) => match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => Either::Right(stream),
            _ => return debug!(%peer, "TLS handshake failed or timed out"),
        },
        None => Either::Left(stream),
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = closing.cancelled() => {}
    }
    if requests.load(Ordering::Relaxed) == 0 {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = tokio::time::sleep(LAST_CALL) => {}
        }
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// The control API of a process whose upgrade's new process is not ready yet: reads (GET,
/// HEAD, OPTIONS) are answered as usual, from this node's copy; every change answers 503
/// (5032) at once, since the new process may already have loaded the store and would not
/// see it.
pub fn reads_only(app: Router) -> Router {
    app.layer(axum::middleware::from_fn(refuse_changes))
}

async fn refuse_changes(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::Method;
    use axum::response::IntoResponse;
    if matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        next.run(request).await
    } else {
        super::error::Error::handing_over().into_response()
    }
}
