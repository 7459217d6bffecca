//! `POST /v1/call/{name}`: a call through the mesh (paper §7 call): the chosen provider's answer
//! with the header `x-themis-provider`.
//!
//! Headers: `x-themis-idempotent: true` lets the call fail over after a timeout or a provider
//! failure (otherwise only when it surely did not run); `x-themis-hops` is the hop count a
//! sidecar gave its upstream, so a call re-entering the mesh is counted and refused past the
//! bound (508). An upstream's 4xx comes back with its status and body.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use themis_mesh::Bytes;

use themis_mesh::{CallOptions, Error as MeshError};

use super::{
    ApiError, AppState, HOPS_HEADER, IDEMPOTENT_HEADER, PROVIDER_HEADER, body_or_error, check_name,
};

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
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    let options = options(&headers)?;
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
            if let Ok(v) = HeaderValue::from_str(&provider.to_string()) {
                resp.headers_mut().insert(PROVIDER_HEADER, v);
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
}
