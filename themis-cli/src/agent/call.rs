//! `POST /v1/call/{name}`: a call through the mesh (paper §7 call): the chosen provider's answer
//! with the header `x-themis-provider`.
//!
//! Headers: `x-themis-idempotent: true` lets the call fail over after a timeout or a provider
//! failure (otherwise only when it surely did not run); `x-themis-hops` is the hop count a
//! sidecar gave its upstream, so a call re-entering the mesh is counted and refused past the
//! bound (508); `x-themis-timeout-ms` (or the query `?timeout_ms=`) is the call's deadline
//! (504 after it), which travels to the provider and cuts its upstream. An upstream's 4xx
//! comes back with its status and body.
//!
//! `/v1/call/{name}/{path…}` with any method is the transparent sidecar (issue 12): the request
//! travels as an HTTP envelope (PROTOCOL.md §7.8) to a provider, whose agent sends it to its
//! upstream with the path appended to the upstream URL's path; the upstream's status, headers
//! and body come back (header `x-themis-provider` added). Hop-by-hop headers (RFC 9110
//! §7.6.1), `Host`, `Content-Length`, the agents' own `x-themis-*` headers and, when the agent
//! has an API token, the `Authorization` that carries it, are not forwarded. GET, HEAD, PUT,
//! DELETE, OPTIONS and TRACE are idempotent unless `x-themis-idempotent: false` says
//! otherwise; POST and PATCH only with `x-themis-idempotent: true`. The deadline is the header
//! `x-themis-timeout-ms` only (the query is the upstream's). An answer that is not the
//! upstream's (no provider, a timeout, the hop limit, a bad request to the agent) carries
//! `x-themis-error: KIND` and the JSON error body.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use themis_mesh::Bytes;

use themis_mesh::{CallOptions, Error as MeshError};

use super::envelope::{HttpRequest, HttpResponse, lines};
use super::sidecar::{idempotent_method, strip_hop_by_hop};
use super::{
    ApiError, AppState, ERROR_HEADER, HOPS_HEADER, IDEMPOTENT_HEADER, MAX_CALL_TIMEOUT_MS,
    PROVIDER_HEADER, TIMEOUT_HEADER, body_or_error, check_name,
};

/// The call's deadline from the header or the query parameter `timeout_ms` (the header wins).
fn deadline(headers: &HeaderMap, query: Option<&str>) -> Result<Option<Duration>, ApiError> {
    let from_query = query.and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "timeout_ms")
            .map(|(_, v)| v)
    });
    let from_header = headers
        .get(TIMEOUT_HEADER)
        .map(|v| v.to_str().unwrap_or(""));
    let Some(text) = from_header.or(from_query) else {
        return Ok(None);
    };
    match text.trim().parse::<u64>() {
        Ok(ms) if (1..=MAX_CALL_TIMEOUT_MS).contains(&ms) => Ok(Some(Duration::from_millis(ms))),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "the call's timeout ({TIMEOUT_HEADER} or ?timeout_ms=) must be 1..={MAX_CALL_TIMEOUT_MS} milliseconds, got '{text}'"
            ),
        )),
    }
}

/// The call options the request's headers ask for.
fn options(headers: &HeaderMap) -> Result<CallOptions, ApiError> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let idempotent = match text(IDEMPOTENT_HEADER) {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        Some(v) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("{IDEMPOTENT_HEADER} must be true or false, got '{v}'"),
            ));
        }
    };
    let hops = match headers.get(HOPS_HEADER) {
        None => 0,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u16>().ok())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("{HOPS_HEADER} must be a number (the hop count a sidecar sent)"),
                )
            })?,
    };
    // Past the bound either way: the mesh refuses it with the hop-limit error.
    let hops = u8::try_from(hops).unwrap_or(u8::MAX);
    Ok(CallOptions::default().idempotent(idempotent).hops(hops))
}

/// The routes of this module.
pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/call/{name}", post(call))
        .route("/v1/call/{name}/", any(sidecar_root))
        .route("/v1/call/{name}/{*path}", any(sidecar))
}

/// What `x-themis-error` says of a mesh error.
fn error_kind(e: &MeshError) -> &'static str {
    use themis_mesh::{RemoteErrorKind as K, channel::Error as C};
    match e {
        MeshError::NotFound { .. } | MeshError::NoProviders { .. } => "no-provider",
        MeshError::AccessDenied { .. } => "access-denied",
        MeshError::HopLimit { .. }
        | MeshError::Remote {
            kind: K::HopLimit, ..
        } => "hop-limit",
        MeshError::DeadlineExceeded { .. }
        | MeshError::Remote {
            kind: K::Timeout, ..
        } => "timeout",
        MeshError::Remote {
            kind: K::Unreachable,
            ..
        } => "upstream-unreachable",
        MeshError::Remote { kind: K::Busy, .. } => "busy",
        MeshError::Remote { .. } | MeshError::Failed { .. } => "provider-failure",
        MeshError::Call { source, .. }
            if matches!(
                **source,
                C::RequestTimeout { .. } | C::HandshakeTimeout { .. }
            ) =>
        {
            "timeout"
        }
        MeshError::Call { .. } | MeshError::AttemptsExhausted { .. } => "provider-unreachable",
        MeshError::InvalidConfig { .. } => "bad-request",
        _ => "mesh",
    }
}

/// The agent's own answer to a sidecar request: the JSON error with `x-themis-error: kind`.
fn tagged(e: ApiError, kind: &'static str) -> Response {
    let mut resp = e.into_response();
    resp.headers_mut()
        .insert(ERROR_HEADER, HeaderValue::from_static(kind));
    resp
}

/// `/v1/call/{name}/` (the upstream's root).
async fn sidecar_root(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    forward(&s, &name, method, &uri, headers, body).await
}

/// `/v1/call/{name}/{path…}`.
async fn sidecar(
    State(s): State<Arc<AppState>>,
    Path((name, _)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    forward(&s, &name, method, &uri, headers, body).await
}

/// The target to send on: the request's raw path after `/v1/call/{name}` (percent-encoding
/// kept) and its query.
fn target(uri: &Uri) -> Option<String> {
    let rest = uri.path().strip_prefix("/v1/call/")?;
    let path = &rest[rest.find('/')?..];
    Some(match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    })
}

/// The request headers that go on to the upstream (see the module documentation).
fn forwarded_headers(s: &AppState, headers: &HeaderMap) -> super::envelope::Headers {
    let mut out = lines(headers);
    strip_hop_by_hop(&mut out);
    out.retain(|(k, v)| {
        !(k.as_str().starts_with("x-themis-")
            || *k == header::HOST
            || *k == header::CONTENT_LENGTH
            || *k == header::EXPECT
            || (*k == header::AUTHORIZATION
                && s.config.token.as_ref().is_some_and(|t| {
                    v.as_bytes()
                        .get(7..)
                        .is_some_and(|b| t.matches(b.trim_ascii()))
                })))
    });
    out
}

async fn forward(
    s: &AppState,
    name: &str,
    method: Method,
    uri: &Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let bad = |e: ApiError| tagged(e, "bad-request");
    if let Err(e) = check_name(name) {
        return bad(e);
    }
    let mut options = match options(&headers) {
        Ok(o) => o.http(true),
        Err(e) => return bad(e),
    };
    if let Some(yes) = idempotent_method(&method, &headers) {
        options = options.idempotent(yes);
    }
    match deadline(&headers, None) {
        Ok(Some(t)) => options = options.timeout(t),
        Ok(None) => {}
        Err(e) => return bad(e),
    }
    let body = match body_or_error(body, s.config.max_body) {
        Ok(b) => b,
        Err(e) => return tagged(e, "payload-too-large"),
    };
    let Some(target) = target(uri) else {
        return bad(ApiError::new(StatusCode::BAD_REQUEST, "no path to forward"));
    };
    let head = method == Method::HEAD;
    let request = HttpRequest {
        method,
        target,
        headers: forwarded_headers(s, &headers),
        body,
    };
    let envelope = match request.encode() {
        Ok(e) => e,
        Err(e) => return bad(ApiError::new(StatusCode::BAD_REQUEST, e.to_string())),
    };
    let started = Instant::now();
    let result = s.node.call_with(name, envelope, options).await;
    s.metrics.call(
        matches!(result, Ok(_) | Err(MeshError::Rejected { .. })),
        started.elapsed(),
    );
    let (answer, provider) = match result {
        Ok((answer, provider))
        | Err(
            MeshError::Rejected {
                provider,
                body: answer,
                ..
            }
            | MeshError::Failed {
                provider,
                body: answer,
                ..
            },
        ) => (answer, provider),
        Err(e) => {
            tracing::info!(service = %name, error = %e, "call failed");
            let kind = error_kind(&e);
            return tagged(e.into(), kind);
        }
    };
    let answer = match HttpResponse::decode(&answer, s.config.max_body) {
        Ok(a) => a,
        Err(e) => {
            return tagged(
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    format!("provider {provider} of '{name}' answered: {e}"),
                ),
                "bad-answer",
            );
        }
    };
    let mut resp = Response::new(axum::body::Body::from(answer.body));
    *resp.status_mut() = answer.status;
    resp.extensions_mut().insert(super::guard::UpstreamAnswer);
    let h = resp.headers_mut();
    let mut lines = answer.headers;
    strip_hop_by_hop(&mut lines);
    for (k, v) in lines {
        if head || k != header::CONTENT_LENGTH {
            h.append(k, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&provider.to_string()) {
        h.insert(PROVIDER_HEADER, v);
    }
    resp
}

async fn call(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    let mut options = options(&headers)?;
    if let Some(t) = deadline(&headers, query.as_deref())? {
        options = options.timeout(t);
    }
    let body = body_or_error(body, s.config.max_body)?;
    let started = Instant::now();
    let result = s.node.call_with(&name, body, options).await;
    s.metrics.call(
        matches!(result, Ok(_) | Err(MeshError::Rejected { .. })),
        started.elapsed(),
    );
    match result {
        Ok((answer, provider)) => {
            let mut resp = answer.into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            if let Ok(v) = HeaderValue::from_str(&provider.to_string()) {
                h.insert(PROVIDER_HEADER, v);
            }
            Ok(resp)
        }
        Err(MeshError::Rejected {
            provider,
            code,
            body,
            ..
        }) => {
            // The upstream's own answer to a bad request: its status and body, as they are.
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
            let mut resp = (status, body).into_response();
            resp.extensions_mut().insert(super::guard::UpstreamAnswer);
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            if let Ok(v) = HeaderValue::from_str(&provider.to_string()) {
                h.insert(PROVIDER_HEADER, v);
            }
            Ok(resp)
        }
        Err(e) => {
            tracing::info!(service = %name, error = %e, "call failed");
            Err(e.into())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_headers_set_the_call_options() {
        assert_eq!(options(&headers(&[])).unwrap(), CallOptions::default());
        let o = options(&headers(&[(IDEMPOTENT_HEADER, "TRUE"), (HOPS_HEADER, "3")])).unwrap();
        assert_eq!(o, CallOptions::default().idempotent(true).hops(3));
        // A hop count past a byte is past the bound all the same.
        let o = options(&headers(&[(HOPS_HEADER, "4000")])).unwrap();
        assert_eq!(o.hops, u8::MAX);
        for bad in [
            headers(&[(IDEMPOTENT_HEADER, "yes")]),
            headers(&[(HOPS_HEADER, "-1")]),
            headers(&[(HOPS_HEADER, "many")]),
        ] {
            assert_eq!(
                options(&bad).unwrap_err().parts().0,
                StatusCode::BAD_REQUEST
            );
        }
    }

    #[test]
    fn the_target_is_the_raw_path_after_the_name() {
        let t = |u: &'static str| target(&Uri::from_static(u));
        assert_eq!(
            t("/v1/call/svc/a%20b/c?x=1&y"),
            Some("/a%20b/c?x=1&y".into())
        );
        assert_eq!(t("/v1/call/s%2Fv/"), Some("/".into()));
        assert_eq!(t("/v1/call/svc"), None);
    }

    #[test]
    fn mesh_errors_are_named() {
        let id = themis_mesh::NodeId::from_bytes([1; 32]);
        assert_eq!(
            error_kind(&MeshError::NoProviders {
                service: "s".into()
            }),
            "no-provider"
        );
        assert_eq!(
            error_kind(&MeshError::Remote {
                service: "s".into(),
                provider: id,
                kind: themis_mesh::RemoteErrorKind::HopLimit,
                message: String::new()
            }),
            "hop-limit"
        );
        assert_eq!(
            error_kind(&MeshError::DeadlineExceeded {
                service: "s".into(),
                after: Duration::from_secs(1)
            }),
            "timeout"
        );
    }

    #[test]
    fn the_deadline_comes_from_the_header_or_the_query() {
        assert_eq!(deadline(&headers(&[]), None).unwrap(), None);
        let ms = Duration::from_millis;
        assert_eq!(
            deadline(&headers(&[]), Some("a=b&timeout_ms=250")).unwrap(),
            Some(ms(250))
        );
        assert_eq!(
            deadline(&headers(&[(TIMEOUT_HEADER, "100")]), Some("timeout_ms=250")).unwrap(),
            Some(ms(100))
        );
        for bad in ["0", "-5", "soon", "3600001"] {
            assert!(deadline(&headers(&[]), Some(&format!("timeout_ms={bad}"))).is_err());
        }
    }
}
