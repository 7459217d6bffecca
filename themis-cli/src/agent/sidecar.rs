//! The sidecar: a call that reaches this node for a service registered with an upstream is
//! POSTed to the upstream, and the upstream's answer goes back to the caller.
//!
//! The outcome tells the caller what happened (issue 12): a 2xx answer is the call's answer;
//! a 4xx is the caller's mistake, passed through with its status (the provider is healthy), as
//! is a 508 (the hop limit, answered by an agent the upstream called the mesh through); an
//! upstream that refuses the connection did not run the call (the caller may send it
//! elsewhere); a timeout may have run it; a 5xx or a broken answer is a failure of this
//! provider. At most `concurrency` calls run at the upstream at once; more are answered busy,
//! unrun. The upstream request carries the call's hop count plus one in `x-themis-hops`, which
//! the agent reads back if the upstream calls the mesh (loop protection).
//!
//! An HTTP call (the transparent sidecar, `/v1/call/{name}/{path…}` on the caller's agent,
//! call option `0x80`) carries an HTTP request envelope ([`super::envelope`]): its method,
//! target (appended to the upstream URL's path), headers (hop-by-hop ones removed, RFC 9110
//! §7.6.1) and body go to the upstream as they are, redirects are not followed, and the
//! upstream's status, headers and body go back in a response envelope: as the answer (1xx-3xx),
//! as a rejection (4xx, 508: the provider is healthy) or as a failure with an answer (5xx: it
//! counts against the provider and may fail over under the retry rules).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, header,
};
use http_body_util::Full;
use reqwest::Url;
use themis_mesh::{Bytes, CallContext, HandlerError, NodeId, ServiceHandler};
use tokio::sync::Semaphore;

use super::envelope::{Headers, HttpRequest, HttpResponse};
use super::metrics::AgentMetrics;
use super::upstream::{SendError, UpstreamClient};
use super::{CALLER_HEADER, ERROR_HEADER, HOPS_HEADER, IDEMPOTENT_HEADER, TIMEOUT_HEADER};

/// Bytes of an upstream's error body quoted in the error sent to the caller.
const QUOTED: usize = 200;
/// Most idle connections kept to one upstream.
const MAX_IDLE: usize = 256;

/// Forwards calls of one service to its upstream.
#[derive(Debug)]
pub(crate) struct Sidecar {
    client: UpstreamClient,
    url: Url,
    /// The origin-form target of a plain call: the upstream URL's path and query.
    target: Uri,
    /// The upstream URL's path without a trailing `/`: an HTTP call's target is appended to
    /// it.
    base_path: String,
    max_body: usize,
    timeout: Duration,
    metrics: AgentMetrics,
    /// Calls allowed at the upstream at once.
    slots: Arc<Semaphore>,
    concurrency: usize,
}

/// The error and its causes, `: ` separated (hyper's own message is terse).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl Sidecar {
    /// Accepts `http://HOST[:PORT][/PATH]` (the agent forwards to a local service; no TLS).
    pub(crate) fn parse_upstream(s: &str) -> Result<Url, String> {
        let url = Url::parse(s).map_err(|e| {
            format!("upstream '{s}' is not a URL ({e}); give http://HOST:PORT/PATH")
        })?;
        if url.scheme() != "http" {
            return Err(format!(
                "upstream '{s}' must be an http:// URL (the agent forwards calls to a local service in plain HTTP)"
            ));
        }
        if url.host_str().is_none() {
            return Err(format!("upstream '{s}' has no host"));
        }
        Ok(url)
    }

    pub(crate) fn new(
        url: Url,
        max_body: usize,
        timeout: Duration,
        concurrency: usize,
        metrics: AgentMetrics,
    ) -> Self {
        let concurrency = concurrency.clamp(1, Semaphore::MAX_PERMITS);
        let base_path = url.path().trim_end_matches('/').to_owned();
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        // From a URL that parsed: always a valid origin-form URI.
        let target = Uri::try_from(target).unwrap_or_else(|_| Uri::from_static("/"));
        // At most as many idle connections as calls may run at once, and never many.
        let client = UpstreamClient::new(&url, concurrency.min(MAX_IDLE));
        Self {
            client,
            url,
            target,
            base_path,
            max_body,
            timeout,
            metrics,
            slots: Arc::new(Semaphore::new(concurrency)),
            concurrency,
        }
    }

    /// Takes a slot at the upstream, runs `f`, counts the outcome.
    async fn limited<F: Future<Output = Result<Bytes, HandlerError>>>(
        &self,
        f: F,
    ) -> Result<Bytes, HandlerError> {
        let Ok(_slot) = self.slots.try_acquire() else {
            return Err(HandlerError::Busy(format!(
                "upstream {} already runs {} calls, the agent's limit (themis node --upstream-concurrency)",
                self.url, self.concurrency
            )));
        };
        let started = Instant::now();
        let r = f.await;
        self.metrics.forward(
            matches!(r, Ok(_) | Err(HandlerError::Rejected { .. })),
            started.elapsed(),
        );
        if let Err(e) = &r
            && !matches!(e, HandlerError::Rejected { .. })
        {
            tracing::warn!(upstream = %self.url, error = ?e, "forwarding a call failed");
        }
        r
    }

    /// The headers every upstream request carries: the caller's id, the hop count plus one
    /// (loop protection) and, when the caller set a deadline, its remaining time.
    fn context_headers(&self, headers: &mut HeaderMap, context: &CallContext) {
        headers.insert(CALLER_HEADER, header_value(&context.caller.to_string()));
        headers.insert(HOPS_HEADER, HeaderValue::from(u16::from(context.hops) + 1));
        if let Some(b) = context.budget {
            headers.insert(TIMEOUT_HEADER, header_value(&b.as_millis().to_string()));
        }
    }

    /// Sends `req` to the upstream within `timeout`: the answer's head and body, or the kind
    /// of failure (see the module documentation).
    async fn exchange(
        &self,
        req: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<(Response<()>, Bytes), HandlerError> {
        let url = &self.url;
        // Boxed: the exchange's state is large, and the futures around it move it otherwise.
        let sent =
            tokio::time::timeout(timeout, Box::pin(self.client.send(req, self.max_body))).await;
        match sent {
            Err(_) => Err(HandlerError::TimedOut(format!(
                "upstream {url} did not answer within {timeout:?}"
            ))),
            // Nothing reached the upstream: the call did not run.
            Ok(Err(SendError::Connect(e))) => Err(HandlerError::Unreachable(format!(
                "upstream {url} unreachable: {}",
                chain(&e)
            ))),
            Ok(Err(SendError::NotSent(e))) => Err(HandlerError::Unreachable(format!(
                "upstream {url} closed the connection before the request: {}",
                chain(&e)
            ))),
            Ok(Err(SendError::Failed(e))) => Err(HandlerError::Failed(format!(
                "upstream {url} failed: {}",
                chain(&e)
            ))),
            Ok(Ok((_, Err(_)))) => Err(HandlerError::Failed(format!(
                "upstream {url} answered more than the {} bytes allowed (themis node --max-body)",
                self.max_body
            ))),
            Ok(Ok((head, Ok(body)))) => Ok((head, body)),
        }
    }

    /// Forwards an HTTP call (an envelope, see the module documentation) to the upstream.
    async fn forward_http(
        &self,
        context: CallContext,
        envelope: Bytes,
    ) -> Result<Bytes, HandlerError> {
        let req = match HttpRequest::decode(&envelope, self.max_body) {
            Ok(r) => r,
            Err(e) => return Err(refusal(StatusCode::BAD_REQUEST, &e.to_string())),
        };
        if has_dot_segment(&req.target) {
            return Err(refusal(
                StatusCode::BAD_REQUEST,
                "the path has a . or .. segment (the sidecar does not resolve paths above the upstream's)",
            ));
        }
        // Visible ASCII starting with `/` (the envelope checked it): a valid origin-form URI
        // unless it holds a character a URI may not (`"`, `<`, …).
        let uri = Uri::try_from(format!("{}{}", self.base_path, req.target))
            .map_err(|e| refusal(StatusCode::BAD_REQUEST, &format!("bad target: {e}")))?;
        let timeout = context.budget.map_or(self.timeout, |b| b.min(self.timeout));
        let head = req.method == Method::HEAD;
        let mut upstream = Request::new(Full::new(req.body));
        *upstream.method_mut() = req.method;
        *upstream.uri_mut() = uri;
        let headers = upstream.headers_mut();
        headers.reserve(req.headers.len() + 3);
        let mut lines = req.headers;
        strip_hop_by_hop(&mut lines);
        for (k, v) in lines {
            if !is_ours(&k) && k != header::HOST && k != header::CONTENT_LENGTH {
                headers.append(k, v);
            }
        }
        self.context_headers(headers, &context);
        let (resp, body) = self.exchange(upstream, timeout).await?;
        let status = resp.status();
        let mut lines = super::envelope::lines(resp.headers());
        strip_hop_by_hop(&mut lines);
        // The length is the body's, set again where the answer leaves the caller's agent
        // (except for HEAD, whose length is that of the body it does not carry).
        // The agents' own headers are never the upstream's to set (`x-themis-error` would
        // pass an upstream answer off as the mesh's).
        lines.retain(|(k, _)| (head || *k != header::CONTENT_LENGTH) && !is_ours(k));
        let answer = HttpResponse {
            status,
            headers: lines,
            body,
        }
        .encode()
        .map_err(|e| {
            HandlerError::Failed(format!(
                "the answer of upstream {} cannot be carried: {e}",
                self.url
            ))
        })?;
        let code = status.as_u16();
        if status.is_client_error() || status == StatusCode::LOOP_DETECTED {
            Err(HandlerError::Rejected { code, body: answer })
        } else if status.is_server_error() {
            Err(HandlerError::FailedWith { code, body: answer })
        } else {
            Ok(answer)
        }
    }

    /// POSTs `body` to the upstream with the caller's id in `x-themis-caller` and the hop
    /// count in `x-themis-hops`; returns the upstream's body when it answers 2xx within the
    /// timeout and the size limit, else the kind of failure (see the module documentation).
    pub(crate) async fn forward(
        &self,
        context: CallContext,
        body: Bytes,
    ) -> Result<Bytes, HandlerError> {
        if context.http {
            self.limited(self.forward_http(context, body)).await
        } else {
            self.limited(self.try_forward(context, body)).await
        }
    }

    async fn try_forward(&self, context: CallContext, body: Bytes) -> Result<Bytes, HandlerError> {
        let url = &self.url;
        // The caller's remaining time cuts the upstream too (issue 12, deadlines), and goes on
        // to it, for the calls it makes in turn.
        let timeout = context.budget.map_or(self.timeout, |b| b.min(self.timeout));
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.target.clone();
        let headers = req.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        self.context_headers(headers, &context);
        let (resp, buf) = self.exchange(req, timeout).await?;
        let status = resp.status();
        if status.is_client_error() || status == StatusCode::LOOP_DETECTED {
            // The caller's mistake (or the hop limit of a call the upstream made through the
            // mesh, 508): the provider is healthy; the status and body go back as they are.
            return Err(HandlerError::Rejected {
                code: status.as_u16(),
                body: buf,
            });
        }
        if !status.is_success() {
            let shown: String = String::from_utf8_lossy(&buf).chars().take(QUOTED).collect();
            return Err(HandlerError::Failed(format!(
                "upstream {url} answered HTTP {status}: {shown}"
            )));
        }
        Ok(buf)
    }
}

/// A header value from text this agent makes (ids, numbers): always valid.
fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A refusal of an HTTP call by this agent (not its upstream): status `status`, header
/// `x-themis-error: bad-request`, the JSON error body.
fn refusal(status: StatusCode, message: &str) -> HandlerError {
    let body = serde_json::json!({ "error": message }).to_string();
    let answer = HttpResponse {
        status,
        headers: vec![
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (ERROR_HEADER, HeaderValue::from_static("bad-request")),
        ],
        body: Bytes::from(body),
    };
    match answer.encode() {
        Ok(body) => HandlerError::Rejected {
            code: status.as_u16(),
            body,
        },
        Err(e) => HandlerError::Failed(e.to_string()),
    }
}

/// `x-themis-*` headers: the agents' own, set by them and never taken from a client.
fn is_ours(name: &HeaderName) -> bool {
    name.as_str().starts_with("x-themis-")
}

/// `true` if a path segment of `target` is `.` or `..` (also percent-encoded): a URL parser
/// would resolve it, reaching above the upstream URL's own path.
pub(crate) fn has_dot_segment(target: &str) -> bool {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    path.split('/').any(|seg| {
        let seg = seg.to_ascii_lowercase().replace("%2e", ".");
        seg == "." || seg == ".."
    })
}

/// Removes the hop-by-hop headers (RFC 9110 §7.6.1): `Connection` and every header it names,
/// and `Proxy-Connection`, `Keep-Alive`, `TE`, `Transfer-Encoding`, `Upgrade`, `Trailer`.
pub(crate) fn strip_hop_by_hop(lines: &mut Headers) {
    let named: Vec<String> = lines
        .iter()
        .filter(|(k, _)| *k == header::CONNECTION)
        .filter_map(|(_, v)| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    lines.retain(|(k, _)| {
        !matches!(
            k.as_str(),
            "connection"
                | "proxy-connection"
                | "keep-alive"
                | "te"
                | "transfer-encoding"
                | "upgrade"
                | "trailer"
        ) && !named.iter().any(|n| n == k.as_str())
    });
}

/// Whether a sidecar call with `method` may be failed over after it may have run: the
/// caller's `x-themis-idempotent` when given, else `true` for the methods RFC 9110 §9.2.2
/// calls idempotent (GET, HEAD, PUT, DELETE, OPTIONS, TRACE).
pub(crate) fn idempotent_method(method: &Method, headers: &HeaderMap) -> Option<bool> {
    if headers.contains_key(IDEMPOTENT_HEADER) {
        return None;
    }
    Some(matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    ))
}

#[async_trait]
impl ServiceHandler for Sidecar {
    async fn call(&self, caller: NodeId, request: Bytes) -> Result<Bytes, String> {
        self.forward(CallContext::new(caller, 0), request)
            .await
            .map_err(|e| format!("{e:?}"))
    }

    async fn serve(&self, context: CallContext, request: Bytes) -> Result<Bytes, HandlerError> {
        self.forward(context, request).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go() {
        let mut lines: Headers = [
            ("connection", "keep-alive, X-Private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "secret"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("proxy-connection", "close"),
            ("accept", "*/*"),
            ("x-kept", "1"),
            ("x-kept", "2"),
        ]
        .iter()
        .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
        .collect();
        strip_hop_by_hop(&mut lines);
        let left: Vec<(&str, &str)> = lines
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(left, [("accept", "*/*"), ("x-kept", "1"), ("x-kept", "2")]);
    }

    #[test]
    fn dot_segments_are_found() {
        for bad in ["/..", "/a/../b", "/./a", "/a/%2E%2e/b", "/%2e"] {
            assert!(has_dot_segment(bad), "{bad}");
        }
        for ok in ["/", "/a/b", "/a..b/", "/.well-known/x", "/a?x=/../"] {
            assert!(!has_dot_segment(ok), "{ok}");
        }
    }

    #[test]
    fn reads_are_idempotent_unless_the_caller_says() {
        let none = HeaderMap::new();
        for m in [
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ] {
            assert_eq!(idempotent_method(&m, &none), Some(true), "{m}");
        }
        for m in [Method::POST, Method::PATCH] {
            assert_eq!(idempotent_method(&m, &none), Some(false), "{m}");
        }
        let mut said = HeaderMap::new();
        said.insert(IDEMPOTENT_HEADER, HeaderValue::from_static("true"));
        assert_eq!(idempotent_method(&Method::POST, &said), None);
    }

    #[test]
    fn only_http_urls_are_upstreams() {
        assert!(Sidecar::parse_upstream("http://127.0.0.1:8080/check").is_ok());
        for bad in ["https://x/", "ftp://x", "127.0.0.1:80", "", "http://"] {
            assert!(Sidecar::parse_upstream(bad).is_err(), "{bad}");
        }
    }
}
