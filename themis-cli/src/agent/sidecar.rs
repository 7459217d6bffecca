//! The sidecar: a call that reaches this node for a service registered with an upstream is
//! POSTed to the upstream, and the upstream's answer goes back to the caller.

use std::time::{Duration, Instant};

use reqwest::Url;
use themis_mesh::{Bytes, NodeId};

use super::CALLER_HEADER;
use super::metrics::AgentMetrics;

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
        metrics: AgentMetrics,
    ) -> Self {
        Self {
            http,
            url,
            max_body,
            timeout,
            metrics,
        }
    }

    /// POSTs `body` to the upstream with the caller's id in `x-themis-caller`; returns the
    /// upstream's body when it answers 2xx within the timeout and the size limit, else a
    /// message (sent to the caller as a handler error).
    pub(crate) async fn forward(&self, caller: NodeId, body: Bytes) -> Result<Bytes, String> {
        let started = Instant::now();
        let r = self.try_forward(caller, body).await;
        self.metrics.forward(r.is_ok(), started.elapsed());
        if let Err(e) = &r {
            tracing::warn!(upstream = %self.url, error = %e, "forwarding a call failed");
        }
        r
    }

    async fn try_forward(&self, caller: NodeId, body: Bytes) -> Result<Bytes, String> {
        let url = &self.url;
        let mut resp = self
            .http
            .post(url.clone())
            .header(CALLER_HEADER, caller.to_string())
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    format!("upstream {url} did not answer within {:?}", self.timeout)
                } else {
                    format!("upstream {url} unreachable: {}", chain(&e))
                }
            })?;
        let status = resp.status();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("reading the answer of upstream {url}: {}", chain(&e)))?
        {
            if buf.len().saturating_add(chunk.len()) > self.max_body {
                return Err(format!(
                    "upstream {url} answered more than the {} bytes allowed (themis node --max-body)",
                    self.max_body
                ));
            }
            buf.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let shown: String = String::from_utf8_lossy(&buf).chars().take(QUOTED).collect();
            return Err(format!("upstream {url} answered HTTP {status}: {shown}"));
        }
        Ok(Bytes::from(buf))
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
