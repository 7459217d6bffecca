//! `GET /v1/status` (the node's view of the ring) and `GET /v1/agent/self` (the agent's
//! settings, as Consul's agent answers them: what a client needs to know about this agent, such
//! as the largest body it accepts).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{ApiError, AppState, mode_name};

/// The routes of this module.
pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/agent/self", get(agent_self))
}

async fn status(State(s): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let st = s.node.status().await?;
    let peer = |p: &themis_mesh::dht::Peer| json!({ "id": p.id.to_string(), "address": p.addr.to_string() });
    Ok(Json(json!({
        "id": st.id.to_string(),
        "network": s.network,
        "mode": mode_name(s.mode),
        "listen": st.listen.to_string(),
        "contact": s.node.contact().to_string(),
        "state": st.ring.state.as_str(),
        "predecessor": st.ring.predecessor.as_ref().map(peer),
        "successors": st.ring.successors.iter().map(peer).collect::<Vec<_>>(),
        "fingers": st.ring.fingers,
        "sessions": st.sessions,
        "stored_records": st.ring.stored_records,
        "services": st.services,
        "replicas": u32::from(st.k) + 1,
        "uptime_secs": s.started.elapsed().as_secs(),
    })))
}

async fn agent_self(State(s): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({
        "id": s.node.id().to_string(),
        "network": s.network,
        "mode": mode_name(s.mode),
        "contact": s.node.contact().to_string(),
        "version": env!("CARGO_PKG_VERSION"),
        "max_body": s.config.max_body,
        "upstream_timeout_secs": s.config.upstream_timeout.as_secs(),
        "dns": s.config.dns.map(|a| a.to_string()),
        "data_dir": s.config.data_dir.as_ref().map(|d| d.path().display().to_string()),
        "key_file": s.config.key_file.as_ref().map(|k| k.display().to_string()),
        "uptime_secs": s.started.elapsed().as_secs(),
    }))
}
