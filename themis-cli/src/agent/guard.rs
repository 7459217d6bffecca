//! What every request to the agent goes through before its handler, outermost first, in one
//! middleware ([`guard`]):
//!
//! 1. [`json_errors`]: every error leaves as `{"error": "..."}` with its status and headers
//!    (axum's own answers, such as 405 with its `Allow` header, have plain or empty bodies).
//! 2. [`browsers`]: a browser's cross-origin request is refused with 403: an `Origin` header
//!    that is not the agent's own origin, or `Sec-Fetch-Site: cross-site` / `same-site`. On a
//!    loopback agent without a token, a `Host` that does not name the loopback is refused too
//!    (DNS rebinding: a page whose name resolves to 127.0.0.1 is same-origin to the browser).
//!    No CORS header is ever sent, so a browser never lets a page read an answer either.
//! 3. [`authenticate`]: with a token (`--api-token-file`), `Authorization: Bearer TOKEN`,
//!    compared in constant time; 401 otherwise. The probes and the metrics
//!    ([`UNAUTHENTICATED`]) need none.
//! 4. [`read_body`]: the whole body within [`AgentConfig::body_timeout`] and
//!    [`AgentConfig::max_body`]: 408 or 413. (tower-http's `RequestBodyTimeout` restarts its
//!    clock at every chunk, so a body sent a byte at a time would never end; this is a deadline.)

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};

use super::{ApiError, AppState};

/// Routes answered without a token: the orchestrator's probes (which cannot easily hold a
/// secret) and the metrics (counts and latencies only, no service names or node ids), so that
/// Kubernetes probes and a Prometheus scrape work without a credential.
pub(crate) const UNAUTHENTICATED: [&str; 4] = [
    "/v1/health",
    "/v1/health/live",
    "/v1/health/ready",
    "/metrics",
];

/// Largest error body of axum's own that is turned into JSON (its rejections are short).
const MAX_PLAIN_ERROR: usize = 4096;

/// The connection a request came on (set by [`super::server`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnInfo {
    /// The agent's address this connection was made to.
    pub(crate) local: SocketAddr,
}

/// Marks a response (an extension) that is not the agent's own error but an upstream's answer
/// passed through as it is (a 4xx of a provider's upstream, issue 12): [`json_errors`] leaves
/// it alone.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UpstreamAnswer;

/// Turns every error answer without a JSON body into `{"error": ...}`, keeping its status and
/// headers (a 405 keeps its `Allow`). An [`UpstreamAnswer`] keeps its own body. On the
/// transparent sidecar's routes (`/v1/call/{name}/…`) every answer that is not the upstream's
/// carries `x-themis-error` (`agent` when nothing more specific was said: a missing token, a
/// body too large or too slow).
async fn json_errors(sidecar: bool, mut resp: Response) -> Response {
    if resp.extensions().get::<UpstreamAnswer>().is_some() {
        return resp;
    }
    if sidecar && !resp.headers().contains_key(super::ERROR_HEADER) {
        resp.headers_mut()
            .insert(super::ERROR_HEADER, HeaderValue::from_static("agent"));
    }
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = Limited::new(body, MAX_PLAIN_ERROR)
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_owned())
        .unwrap_or_default();
    let mut message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
    } else {
        text
    };
    if status == StatusCode::METHOD_NOT_ALLOWED
        && let Some(allow) = parts
            .headers
            .get(header::ALLOW)
            .and_then(|v| v.to_str().ok())
    {
        message = format!("method not allowed on this route; allowed: {allow}");
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    let json = ApiError::new(status, message).into_response();
    let (json_parts, json_body) = json.into_parts();
    for (k, v) in &json_parts.headers {
        parts.headers.insert(k, v.clone());
    }
    Response::from_parts(parts, json_body)
}

/// Why a request looks like a browser's cross-origin request (or DNS rebinding), if it does.
fn cross_origin(headers: &HeaderMap, conn: Option<ConnInfo>, has_token: bool) -> Option<String> {
    if let Some(site) = headers.get("sec-fetch-site")
        && matches!(site.as_bytes(), b"cross-site" | b"same-site")
    {
        return Some(format!(
            "cross-origin requests are refused (Sec-Fetch-Site: {})",
            String::from_utf8_lossy(site.as_bytes())
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN)
        && !conn.is_some_and(|c| is_own_origin(origin.as_bytes(), c.local))
    {
        return Some(format!(
            "cross-origin requests are refused (Origin: {}); the agent API is not for browsers",
            String::from_utf8_lossy(origin.as_bytes())
                .chars()
                .take(100)
                .collect::<String>()
        ));
    }
    // On the loopback without a token, the loopback is the only boundary: a page whose name
    // resolves to 127.0.0.1 (DNS rebinding) would otherwise be "same origin".
    if !has_token
        && let Some(c) = conn
        && c.local.ip().is_loopback()
        && let Some(host) = headers.get(header::HOST)
        && !names_the_loopback(host.as_bytes())
    {
        return Some(format!(
            "Host '{}' does not name the loopback this agent listens on; use http://{} (or http://localhost:{})",
            String::from_utf8_lossy(host.as_bytes())
                .chars()
                .take(100)
                .collect::<String>(),
            c.local,
            c.local.port()
        ));
    }
    None
}

/// Splits `host[:port]` (IPv6 in brackets).
fn split_host(authority: &str) -> (&str, Option<&str>) {
    if let Some(rest) = authority.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((h, tail)) => (h, tail.strip_prefix(':')),
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    }
}

fn is_loopback_name(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn names_the_loopback(host: &[u8]) -> bool {
    std::str::from_utf8(host).is_ok_and(|h| is_loopback_name(split_host(h).0))
}

/// `true` if `origin` is `http://` the address the connection was made to (or, on the
/// loopback, `localhost` or a loopback address on the same port).
fn is_own_origin(origin: &[u8], local: SocketAddr) -> bool {
    let Some(authority) = std::str::from_utf8(origin)
        .ok()
        .and_then(|o| o.strip_prefix("http://"))
    else {
        return false;
    };
    let (host, port) = split_host(authority);
    let port_ok = match port {
        Some(p) => p.parse::<u16>() == Ok(local.port()),
        None => local.port() == 80,
    };
    let host_ok = host.parse::<IpAddr>().is_ok_and(|ip| ip == local.ip())
        || (local.ip().is_loopback() && is_loopback_name(host));
    port_ok && host_ok
}

/// Refuses a browser's cross-origin request with 403 (see the module docs).
fn browsers(s: &AppState, req: &Request) -> Option<Response> {
    let conn = req.extensions().get::<ConnInfo>().copied();
    let why = cross_origin(req.headers(), conn, s.config.token.is_some())?;
    tracing::debug!(path = %req.uri().path(), reason = %why, "refused a cross-origin request");
    Some(ApiError::new(StatusCode::FORBIDDEN, why).into_response())
}

/// The token presented in `Authorization: Bearer TOKEN`, if any.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let v = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = v.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
}

/// With a token configured, refuses (401) a request without it, except on the
/// [`UNAUTHENTICATED`] routes.
fn authenticate(s: &AppState, req: &Request) -> Option<Response> {
    let token = s.config.token.as_ref()?;
    if UNAUTHENTICATED.contains(&req.uri().path()) {
        return None;
    }
    let message = match bearer(req.headers()) {
        Some(t) if token.matches(t) => return None,
        Some(_) => {
            "the API token is not this agent's (themis commands: --api-token-file FILE or THEMIS_API_TOKEN_FILE, the file the agent was started with)"
        }
        None => {
            "this agent requires an API token: send `Authorization: Bearer TOKEN` (themis commands: --api-token-file FILE or THEMIS_API_TOKEN_FILE)"
        }
    };
    tracing::debug!(path = %req.uri().path(), "refused a request without the API token");
    let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"themis agent\""),
    );
    Some(resp)
}

/// Reads the whole body within the deadline and the size limit, then hands it on.
async fn read_body(s: &AppState, req: Request) -> Result<Request, Response> {
    let (parts, body) = req.into_parts();
    let (max, deadline) = (s.config.max_body, s.config.body_timeout);
    let read = tokio::time::timeout(deadline, Limited::new(body, max).collect()).await;
    let bytes = match read {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body larger than the agent's limit of {max} bytes (themis node --max-body)"
                ),
            )
            .into_response());
        }
        Ok(Err(e)) => {
            return Err(
                ApiError::new(StatusCode::BAD_REQUEST, format!("request body: {e}"))
                    .into_response(),
            );
        }
        Err(_) => {
            tracing::debug!(path = %parts.uri.path(), "a request body did not arrive in time");
            let mut resp = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body did not arrive within {deadline:?}"),
            )
            .into_response();
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return Err(resp);
        }
    };
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// The agent's one middleware: the four steps of the module documentation, in that order, in
/// one layer (four `from_fn` layers cost a boxed future and a clone of the router's service
/// each, per request).
pub(crate) async fn guard(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let sidecar = req
        .uri()
        .path()
        .strip_prefix("/v1/call/")
        .is_some_and(|rest| rest.contains('/'));
    let resp = match browsers(&s, &req).or_else(|| authenticate(&s, &req)) {
        Some(refused) => refused,
        None => match read_body(&s, req).await {
            Ok(req) => next.run(req).await,
            Err(refused) => refused,
        },
    };
    json_errors(sidecar, resp).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn conn(s: &str) -> Option<ConnInfo> {
        Some(ConnInfo {
            local: s.parse().unwrap(),
        })
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_the_agents_own_origin_passes() {
        let lo = conn("127.0.0.1:7070");
        let ok = |h: &[(&'static str, &str)], c, t| cross_origin(&headers(h), c, t).is_none();
        assert!(ok(&[], lo, false));
        assert!(ok(&[("origin", "http://127.0.0.1:7070")], lo, false));
        assert!(ok(&[("origin", "http://localhost:7070")], lo, false));
        assert!(ok(&[("sec-fetch-site", "same-origin")], lo, false));
        assert!(ok(&[("sec-fetch-site", "none")], lo, false));
        assert!(!ok(&[("origin", "http://evil.example")], lo, false));
        assert!(!ok(&[("origin", "http://127.0.0.1:7071")], lo, false));
        assert!(!ok(&[("origin", "https://127.0.0.1:7070")], lo, false));
        assert!(!ok(&[("origin", "null")], lo, false));
        assert!(!ok(&[("sec-fetch-site", "cross-site")], lo, false));
        assert!(!ok(&[("sec-fetch-site", "same-site")], lo, true));
        // without a connection address, no origin is ours
        assert!(!ok(&[("origin", "http://127.0.0.1:7070")], None, false));
        let v6 = conn("[::1]:80");
        assert!(ok(&[("origin", "http://[::1]")], v6, false));
        let public = conn("10.0.0.5:7070");
        assert!(ok(&[("origin", "http://10.0.0.5:7070")], public, true));
        assert!(!ok(&[("origin", "http://localhost:7070")], public, true));
    }

    #[test]
    fn a_tokenless_loopback_agent_refuses_other_host_names() {
        let lo = conn("127.0.0.1:7070");
        let ok = |h: &[(&'static str, &str)], t| cross_origin(&headers(h), lo, t).is_none();
        assert!(ok(&[("host", "127.0.0.1:7070")], false));
        assert!(ok(&[("host", "localhost:7070")], false));
        assert!(ok(&[("host", "[::1]:7070")], false));
        assert!(!ok(&[("host", "rebind.example:7070")], false));
        // with a token the page cannot authenticate anyway
        assert!(ok(&[("host", "themis-1:7070")], true));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let h = headers(&[("authorization", "bearer abc")]);
        assert_eq!(bearer(&h), Some(&b"abc"[..]));
        let h = headers(&[("authorization", "Basic abc")]);
        assert_eq!(bearer(&h), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
