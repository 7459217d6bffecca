//! The sidecar's HTTP/1.1 client of one upstream: keep-alive connections of hyper's client,
//! pooled here.
//!
//! A general client (reqwest) re-parsed the URL of every request (IDNA included), ran a
//! redirect policy that parsed it once more, and went through a pool keyed by scheme and host:
//! about 45 % of a provider's instructions per call on the sidecar path. An upstream is one
//! fixed `http://HOST:PORT` that the agent's operator gave, so this client resolves it once per
//! connection, sends origin-form requests with the upstream's `Host`, and keeps at most as
//! many idle connections as calls may run at the upstream at once.
//!
//! A pooled connection the upstream closed while it idled is detected before the request is
//! written (hyper gives the request back): the request then goes on a fresh connection, so a
//! keep-alive race never fails a call that surely did not run.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use reqwest::Url;
use themis_mesh::Bytes;
use tokio::net::TcpStream;

/// Idle connections older than this are closed rather than reused (reqwest's default): an
/// upstream that closes idle connections sooner is caught by the not-sent retry.
const IDLE_FOR: Duration = Duration::from_secs(90);

/// How a request to the upstream failed.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be made: the request did not reach the upstream.
    Connect(std::io::Error),
    /// The connection failed before the request was written: it did not reach the upstream.
    NotSent(hyper::Error),
    /// The request was sent, and then the exchange failed.
    Failed(hyper::Error),
}

/// One upstream's connections.
#[derive(Debug)]
pub(crate) struct UpstreamClient {
    /// `HOST:PORT` to connect to (resolved at each connect).
    connect_to: String,
    /// The `Host` header: the URL's host, and its port unless it is 80.
    host: axum::http::HeaderValue,
    /// Idle connections, the most recently used last.
    idle: Mutex<Vec<(SendRequest<Full<Bytes>>, Instant)>>,
    /// Bound on [`Self::idle`].
    max_idle: usize,
}

impl UpstreamClient {
    /// The client of the `http://` upstream `url` (checked by `Sidecar::parse_upstream`),
    /// keeping at most `max_idle` idle connections.
    pub(crate) fn new(url: &Url, max_idle: usize) -> Self {
        let host = url.host_str().unwrap_or("localhost");
        let port = url.port_or_known_default().unwrap_or(80);
        let host_header = match url.port() {
            Some(p) if p != 80 => format!("{host}:{p}"),
            _ => host.to_owned(),
        };
        // `host_str` keeps an IPv6 address in brackets, as `HOST:PORT` needs it.
        let connect_to = format!("{host}:{port}");
        Self {
            connect_to,
            host: axum::http::HeaderValue::from_str(&host_header)
                .unwrap_or_else(|_| axum::http::HeaderValue::from_static("localhost")),
            idle: Mutex::new(Vec::new()),
            max_idle: max_idle.max(1),
        }
    }

    /// A fresh connection.
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, SendError> {
        let stream = TcpStream::connect(&self.connect_to)
            .await
            .map_err(SendError::Connect)?;
        let _ = stream.set_nodelay(true);
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::NotSent)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "an upstream connection ended");
            }
        });
        Ok(send)
    }

    /// An idle connection that is still open, if there is one.
    fn take_idle(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((send, since)) = idle.pop() {
            if send.is_ready() && since.elapsed() < IDLE_FOR {
                return Some(send);
            }
        }
        None
    }

    /// Keeps `send` for the next request, if there is room and it can take one.
    fn put_idle(&self, send: SendRequest<Full<Bytes>>) {
        if !send.is_ready() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push((send, Instant::now()));
        }
    }

    /// Sends `req` (origin-form URI; the `Host` header is set here) and reads the answer's body
    /// within `max_body` bytes. `Ok(Err(len))` is an answer whose body exceeded the limit
    /// (`len` bytes read when it did). The caller bounds the whole exchange in time.
    pub(crate) async fn send(
        &self,
        mut req: Request<Full<Bytes>>,
        max_body: usize,
    ) -> Result<(Response<()>, Result<Bytes, usize>), SendError> {
        req.headers_mut()
            .insert(axum::http::header::HOST, self.host.clone());
        let resp = match self.take_idle() {
            Some(mut send) => match send.try_send_request(req).await {
                Ok(resp) => (resp, send),
                Err(mut e) => match e.take_message() {
                    // The upstream closed it while it idled: a fresh connection.
                    Some(req) => self.send_fresh(req).await?,
                    None => return Err(SendError::Failed(e.into_error())),
                },
            },
            None => self.send_fresh(req).await?,
        };
        let (resp, send) = resp;
        let (head, body) = resp.into_parts();
        let body = read_limited(body, max_body)
            .await
            .map_err(SendError::Failed)?;
        if body.is_ok() {
            self.put_idle(send);
        }
        Ok((Response::from_parts(head, ()), body))
    }

    async fn send_fresh(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, SendRequest<Full<Bytes>>), SendError> {
        let mut send = self.connect().await?;
        match send.try_send_request(req).await {
            Ok(resp) => Ok((resp, send)),
            Err(mut e) => Err(if e.take_message().is_some() {
                SendError::NotSent(e.into_error())
            } else {
                SendError::Failed(e.into_error())
            }),
        }
    }
}

/// Reads `body` to its end, or up to the first chunk past `max` bytes (`Err(bytes read)`).
async fn read_limited(
    mut body: Incoming,
    max: usize,
) -> Result<Result<Bytes, usize>, hyper::Error> {
    let mut buf: Vec<u8> = Vec::new();
    let mut single: Option<Bytes> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        let len = single.as_ref().map_or(buf.len(), Bytes::len);
        if len.saturating_add(data.len()) > max {
            return Ok(Err(len.saturating_add(data.len())));
        }
        // Most answers come in one chunk: keep it without a copy.
        match single.take() {
            None if buf.is_empty() => single = Some(data),
            None => buf.extend_from_slice(&data),
            Some(first) => {
                buf.extend_from_slice(&first);
                buf.extend_from_slice(&data);
            }
        }
    }
    Ok(Ok(single.unwrap_or_else(|| Bytes::from(buf))))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;

    /// An upstream that answers each connection's first request `200 hi` and then closes that
    /// connection without saying so (a keep-alive timeout): it returns the connections seen.
    async fn one_per_connection() -> (Url, tokio::sync::mpsc::UnboundedReceiver<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = tx.send(());
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    seen.extend_from_slice(&buf[..n]);
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi")
                    .await;
                drop(s);
            }
        });
        (url, rx)
    }

    fn get() -> Request<Full<Bytes>> {
        let mut r = Request::new(Full::new(Bytes::new()));
        *r.uri_mut() = axum::http::Uri::from_static("/x");
        r
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_replaced_without_failing_the_call() {
        let (url, mut conns) = one_per_connection().await;
        let client = UpstreamClient::new(&url, 4);
        for _ in 0..3 {
            let (head, body) = client.send(get(), 1024).await.expect("answered");
            assert_eq!(head.status(), 200);
            assert_eq!(body.expect("within the limit"), &b"hi"[..]);
            conns.recv().await.expect("a connection per call");
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error_and_a_large_body_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        drop(listener);
        let client = UpstreamClient::new(&url, 4);
        assert!(matches!(
            client.send(get(), 1024).await,
            Err(SendError::Connect(_))
        ));
        let (url, _conns) = one_per_connection().await;
        let client = UpstreamClient::new(&url, 4);
        let (_, body) = client.send(get(), 1).await.expect("answered");
        assert_eq!(body, Err(2));
    }

    #[test]
    fn host_and_address_come_from_the_url() {
        let c = UpstreamClient::new(&Url::parse("http://127.0.0.1:8080/x").unwrap(), 4);
        assert_eq!(c.connect_to, "127.0.0.1:8080");
        assert_eq!(c.host, "127.0.0.1:8080");
        let c = UpstreamClient::new(&Url::parse("http://svc.local/").unwrap(), 4);
        assert_eq!(c.connect_to, "svc.local:80");
        assert_eq!(c.host, "svc.local");
        let c = UpstreamClient::new(&Url::parse("http://[::1]:9000").unwrap(), 4);
        assert_eq!(c.connect_to, "[::1]:9000");
        assert_eq!(c.host, "[::1]:9000");
    }
}
