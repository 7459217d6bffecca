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

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::Url;
use themis_mesh::{Bytes, CallContext, HandlerError, NodeId, ServiceHandler};
use tokio::sync::Semaphore;

use super::metrics::AgentMetrics;
use super::{CALLER_HEADER, HOPS_HEADER, TIMEOUT_HEADER};

/// Bytes of an upstream's error body quoted in the error sent to the caller.
const QUOTED: usize = 200;

/// Forwards calls of one service to its upstream.
#[derive(Debug)]
pub(crate) struct Sidecar {
    http: reqwest::Client,
    url: Url,
    max_body: usize,
    timeout: Duration,
    metrics: AgentMetrics,
    /// Calls allowed at the upstream at once.
    slots: Arc<Semaphore>,
    concurrency: usize,
}

/// The error and its causes, `: ` separated (reqwest's own message is terse).
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
        http: reqwest::Client,
        url: Url,
        max_body: usize,
        timeout: Duration,
        concurrency: usize,
        metrics: AgentMetrics,
    ) -> Self {
        let concurrency = concurrency.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            http,
            url,
            max_body,
            timeout,
            metrics,
            slots: Arc::new(Semaphore::new(concurrency)),
            concurrency,
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
        let Ok(_slot) = self.slots.try_acquire() else {
            return Err(HandlerError::Busy(format!(
                "upstream {} already runs {} calls, the agent's limit (themis node --upstream-concurrency)",
                self.url, self.concurrency
            )));
        };
        let started = Instant::now();
        let r = self.try_forward(context, body).await;
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

    async fn try_forward(&self, context: CallContext, body: Bytes) -> Result<Bytes, HandlerError> {
        let url = &self.url;
        // The caller's remaining time cuts the upstream too (issue 12, deadlines), and goes on
        // to it, for the calls it makes in turn.
        let timeout = context.budget.map_or(self.timeout, |b| b.min(self.timeout));
        let mut req = self
            .http
            .post(url.clone())
            .header(CALLER_HEADER, context.caller.to_string())
            .header(HOPS_HEADER, u16::from(context.hops) + 1)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream");
        if let Some(b) = context.budget {
            req = req.header(TIMEOUT_HEADER, b.as_millis().to_string());
        }
        let mut resp = req.body(body).timeout(timeout).send().await.map_err(|e| {
            if e.is_timeout() {
                HandlerError::TimedOut(format!("upstream {url} did not answer within {timeout:?}"))
            } else if e.is_connect() {
                // Nothing reached the upstream: the call did not run.
                HandlerError::Unreachable(format!("upstream {url} unreachable: {}", chain(&e)))
            } else {
                HandlerError::Failed(format!("upstream {url} failed: {}", chain(&e)))
            }
        })?;
        let status = resp.status();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| {
            HandlerError::Failed(format!(
                "reading the answer of upstream {url}: {}",
                chain(&e)
            ))
        })? {
            if buf.len().saturating_add(chunk.len()) > self.max_body {
                return Err(HandlerError::Failed(format!(
                    "upstream {url} answered more than the {} bytes allowed (themis node --max-body)",
                    self.max_body
                )));
            }
            buf.extend_from_slice(&chunk);
        }
        if status.is_client_error() || status == reqwest::StatusCode::LOOP_DETECTED {
            // The caller's mistake (or the hop limit of a call the upstream made through the
            // mesh, 508): the provider is healthy; the status and body go back as they are.
            return Err(HandlerError::Rejected {
                code: status.as_u16(),
                body: Bytes::from(buf),
            });
        }
        if !status.is_success() {
            let shown: String = String::from_utf8_lossy(&buf).chars().take(QUOTED).collect();
            return Err(HandlerError::Failed(format!(
                "upstream {url} answered HTTP {status}: {shown}"
            )));
        }
        Ok(Bytes::from(buf))
    }
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
    fn only_http_urls_are_upstreams() {
        assert!(Sidecar::parse_upstream("http://127.0.0.1:8080/check").is_ok());
        for bad in ["https://x/", "ftp://x", "127.0.0.1:80", "", "http://"] {
            assert!(Sidecar::parse_upstream(bad).is_err(), "{bad}");
        }
    }
}
