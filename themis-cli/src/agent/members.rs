//! `GET /v1/members[?max=N]`: the ring walked from this node along the successor lists
//! (`MeshNode::members`): every member's id, address, state (`alive`, `left`, `failed`), the
//! number of services it provides, its version and its clock offset from this node.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use themis_mesh::{Member, Members};

use super::{ApiError, AppState};

/// Members walked when the query does not say (and the most it may ask for).
const DEFAULT_MAX: usize = 1000;
const LIMIT: usize = 10_000;

/// The routes of this module.
pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/v1/members", get(members))
}

#[derive(Debug, serde::Deserialize)]
struct Params {
    max: Option<usize>,
}

/// One member as JSON.
pub(crate) fn member_json(m: &Member) -> Value {
    let info = m.info.as_ref();
    json!({
        "id": m.peer.id.to_string(),
        "address": m.peer.addr.to_string(),
        "state": m.state.as_str(),
        "services": info.map(|i| i.services),
        "version": info.map(|i| i.version.clone()),
        "uptime_secs": info.map(|i| i.uptime.as_secs()),
        "clock_offset_ms": info.map(|i| i.clock_offset_ms()),
        "rtt_ms": info.map(|i| i.rtt.as_secs_f64() * 1000.0),
        "error": m.error,
    })
}

/// The walk as JSON.
pub(crate) fn members_json(m: &Members) -> Value {
    json!({
        "members": m.members.iter().map(member_json).collect::<Vec<_>>(),
        "complete": m.complete,
        "limited": m.limited,
    })
}

async fn members(
    State(s): State<Arc<AppState>>,
    Query(p): Query<Params>,
) -> Result<Json<Value>, ApiError> {
    let max = p.max.unwrap_or(DEFAULT_MAX).clamp(1, LIMIT);
    let m = s.node.members(max).await?;
    Ok(Json(members_json(&m)))
}
