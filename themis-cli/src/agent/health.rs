//! `GET /v1/health`: liveness and readiness for an orchestrator's probes (Kubernetes,
//! Docker, systemd watchdogs, load balancers).
//!
//! - **live**: the node's DHT driver answers within [`LIVE_WITHIN`] (a process whose node task
//!   died or hangs is restarted by the orchestrator). `GET /v1/health/live`.
//! - **ready**: live, a ring member that has joined its ring (or started a new one on
//!   purpose), the configured services registered, and not leaving. `GET /v1/health/ready`.
//!
//! Each answers `200` when it holds and `503` when not; `GET /v1/health` answers both (its
//! status is readiness's) with the reason of each step.
//!
//! And the health of one service (issue 12): `GET /v1/health/service/{name}` (Consul's path)
//! reports this node's check of `name` (status, last output, since when, counts, whether the
//! record is stored) and the providers a fresh discovery finds across the mesh.
//! `GET /v1/health/{name}` is the same for any name but `live` and `ready`, which stay the
//! probes above: a service named `live` or `ready` is reached through `/v1/health/service/`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::services::provider_json;
use super::{ApiError, AppState, Readiness, check_name};

/// How long the node may take to answer before it counts as not live.
const LIVE_WITHIN: Duration = Duration::from_secs(2);

/// The routes of this module.
pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/health/live", get(live))
        .route("/v1/health/ready", get(ready))
        .route("/v1/health/service/{name}", get(service))
        .route("/v1/health/{name}", get(service))
}

/// The probes' findings.
struct Health {
    live: Result<&'static str, String>,
    ready: Result<(), String>,
}

async fn probe(s: &AppState) -> Health {
    let state = tokio::time::timeout(LIVE_WITHIN, s.node.dht().status()).await;
    let live = match state {
        Ok(Ok(st)) => Ok(st.state.as_str()),
        Ok(Err(e)) => Err(format!("the node does not answer: {e}")),
        Err(_) => Err(format!("the node did not answer within {LIVE_WITHIN:?}")),
    };
    let r = &s.readiness;
    let ready = match &live {
        Err(e) => Err(e.clone()),
        Ok(_) if Readiness::get(&r.leaving) => Err("the node is leaving the ring".to_owned()),
        Ok(_) if !Readiness::get(&r.joined) => Err("the node has not joined its ring yet".into()),
        Ok(state) if *state != "member" => Err(format!("the node is {state}, not a ring member")),
        Ok(_) if !Readiness::get(&r.services_registered) => {
            Err("the configured services are not registered yet".to_owned())
        }
        Ok(_) => Ok(()),
    };
    Health { live, ready }
}

fn status_of(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

fn reason<T>(r: &Result<T, String>) -> Value {
    r.as_ref().err().map_or(Value::Null, |e| json!(e))
}

async fn health(State(s): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    let h = probe(&s).await;
    let body = json!({
        "live": h.live.is_ok(),
        "ready": h.ready.is_ok(),
        "state": h.live.as_ref().ok(),
        "live_reason": reason(&h.live),
        "ready_reason": reason(&h.ready),
    });
    (status_of(h.ready.is_ok()), Json(body))
}

async fn live(State(s): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    let h = probe(&s).await;
    let body = json!({ "live": h.live.is_ok(), "reason": reason(&h.live) });
    (status_of(h.live.is_ok()), Json(body))
}

async fn ready(State(s): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    let h = probe(&s).await;
    let body = json!({ "ready": h.ready.is_ok(), "reason": reason(&h.ready) });
    (status_of(h.ready.is_ok()), Json(body))
}

/// `GET /v1/health/service/{name}` and `GET /v1/health/{name}`: this node's check of `name`
/// and what discovery finds for it. `200` when the service is provided here or found on the
/// mesh, `404` when neither.
async fn service(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_name(&name)?;
    let check = s
        .checks
        .lock()
        .ok()
        .and_then(|c| c.get(&name).map(super::check::CheckHandle::to_json));
    let defined = s
        .definitions
        .lock()
        .map(|d| d.contains_key(&name))
        .unwrap_or(false);
    let announced = s.node.provided_services().contains(&name);
    let found = s.node.discover_detailed(&name).await;
    let (providers, discovery_error) = match &found {
        Ok(d) => (d.providers.iter().map(provider_json).collect(), None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let provided_here = defined || announced;
    if !provided_here && providers.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "'{name}' is neither provided by this node nor found by discovery ({})",
                discovery_error.unwrap_or_default()
            ),
        ));
    }
    // This node's own view: its check's status; a service without a check passes while it
    // is provided.
    let status = match &check {
        Some(c) => c.get("status").cloned().unwrap_or_default(),
        None if provided_here => json!("passing"),
        None => Value::Null,
    };
    Ok(Json(json!({
        "service": name,
        "provided_here": provided_here,
        "announced_here": announced,
        "status": status,
        "check": check,
        "providers_found": providers.len(),
        "providers": providers,
        "discovery_error": discovery_error,
    })))
}
