//! `POST /v1/call/{name}`: a call through the mesh (paper §7 call): the chosen provider's answer
//! with the header `x-themis-provider`.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use themis_mesh::Bytes;

use super::{ApiError, AppState, PROVIDER_HEADER, body_or_error, check_name};

/// The routes of this module.
pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/v1/call/{name}", post(call))
}

async fn call(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    let body = body_or_error(body, s.config.max_body)?;
    let started = Instant::now();
    let result = s.node.call_traced(&name, body).await;
    s.metrics.call(result.is_ok(), started.elapsed());
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
        Err(e) => {
            tracing::info!(service = %name, error = %e, "call failed");
            Err(e.into())
        }
    }
}
