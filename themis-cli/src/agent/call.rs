//! `POST /v1/call/{name}`: a call through the mesh (paper §7 call): the chosen provider's answer
//! with the header `x-themis-provider`.
//!
//! Headers: `x-themis-idempotent: true` lets the call fail over after a timeout or a provider
//! failure (otherwise only when it surely did not run); `x-themis-hops` is the hop count a
//! sidecar gave its upstream, so a call re-entering the mesh is counted and refused past the
//! bound (508); `x-themis-timeout-ms` (or the query `?timeout_ms=`) is the call's deadline
//! (504 after it), which travels to the provider and cuts its upstream. An upstream's 4xx
//! comes back with its status and body.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use themis_mesh::Bytes;

use themis_mesh::{CallOptions, Error as MeshError};

use super::{
    ApiError, AppState, HOPS_HEADER, IDEMPOTENT_HEADER, MAX_CALL_TIMEOUT_MS, PROVIDER_HEADER,
    TIMEOUT_HEADER, body_or_error, check_name,
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
    Router::new().route("/v1/call/{name}", post(call))
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
