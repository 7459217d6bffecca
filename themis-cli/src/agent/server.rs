//! The agent's HTTP/1.1 server: hyper under the axum router, with the bounds `axum::serve`
//! does not set.
//!
//! - **Header read timeout** ([`ServerLimits::header_timeout`]): hyper's own, which needs a
//!   timer (`axum::serve` sets none, so a client sending its headers a byte at a time was never
//!   cut off). It also bounds an idle keep-alive connection (the clock runs while hyper waits
//!   for the next request's head).
//! - **Connection cap** ([`ServerLimits::max_connections`]): a connection is accepted only with
//!   a permit; at the cap, new connections wait in the listen backlog.
//! - **Requests per connection** ([`ServerLimits::max_requests_per_connection`]): the answer to
//!   the last one carries `Connection: close`, and hyper closes the connection after it.
//! - Graceful shutdown with hyper-util's `GracefulShutdown`: requests in flight finish.
//!
//! The body read deadline and size limit are the router's ([`super::guard::read_body`], in [`super::guard::guard`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

use super::guard::ConnInfo;

/// How long connections still open at shutdown may take to finish their requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Largest buffer hyper keeps for a connection's request head (headers beyond it: 431).
const MAX_HEAD: usize = 64 * 1024;

/// The bounds of the agent's HTTP server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerLimits {
    /// Connections served at once.
    pub(crate) max_connections: usize,
    /// Longest a request's head (request line and headers) may take to arrive, from the moment
    /// the server waits for it.
    pub(crate) header_timeout: Duration,
    /// Requests served on one connection before it is closed.
    pub(crate) max_requests_per_connection: u64,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
            max_requests_per_connection: 1000,
        }
    }
}

/// Serves `app` on `listener` within `limits` until `stop` resolves, then lets the requests in
/// flight finish (at most [`SHUTDOWN_GRACE`]).
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    stop: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            () = &mut stop => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, remote) = tokio::select! {
            () = &mut stop => break,
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    // Usually EMFILE/ENFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "the agent API could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        // Answers go out when written, not held back by Nagle's algorithm for the client's
        // acknowledgement of the previous segment.
        let _ = stream.set_nodelay(true);
        let service = connection_service(app.clone(), local, limits.max_requests_per_connection);
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(MAX_HEAD)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%remote, error = %e, "an agent API connection ended");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("agent API connections still open after {SHUTDOWN_GRACE:?}; closing them");
    }
}

/// The service of one connection: the router, with the connection's address in each request
/// and `Connection: close` on the answer to its last allowed request.
fn connection_service(
    app: Router,
    local: SocketAddr,
    max_requests: u64,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = axum::response::Response,
    Error = Infallible,
    Future = impl Future<Output = Result<axum::response::Response, Infallible>> + Send,
> + Clone {
    let served = Arc::new(AtomicU64::new(0));
    hyper::service::service_fn(move |req: Request<Incoming>| {
        let n = served.fetch_add(1, Ordering::Relaxed) + 1;
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnInfo { local });
        let app = app.clone();
        async move {
            let mut resp = app.oneshot(req).await?;
            if n >= max_requests {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(resp)
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

    /// Reads one answer's first bytes (at most `wait`); `None` if nothing came.
    async fn answer(s: &mut TcpStream, wait: Duration) -> Option<String> {
        let mut buf = [0u8; 256];
        match tokio::time::timeout(wait, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_wait_until_one_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", get(|| async { "ok" }));
        let limits = ServerLimits {
            max_connections: 2,
            ..ServerLimits::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app, limits, async {
            let _ = stopped.await;
        }));
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(GET).await.unwrap();
            assert!(answer(&mut s, Duration::from_secs(5)).await.is_some());
            held.push(s);
        }
        // a third connection is made (the backlog) but not served while two are open
        let mut third = TcpStream::connect(addr).await.unwrap();
        third.write_all(GET).await.unwrap();
        assert_eq!(answer(&mut third, Duration::from_millis(500)).await, None);
        drop(held.pop());
        let got = answer(&mut third, Duration::from_secs(5)).await.unwrap();
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        drop((held, third));
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap();
    }
}
