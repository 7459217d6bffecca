//! `/v1/services`: provide a service through the agent (sidecar), stop providing it, list what
//! this node provides, and discover a service's providers (paper §7 register and discover).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use themis_mesh::Bytes;

use super::{
    ApiError, AppState, MAX_UPSTREAMS, ServiceDefinition, Sidecar, body_or_error, check_name,
};

/// The routes of this module.
pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/v1/services/{name}",
            get(discover).put(register).delete(deregister),
        )
        .route("/v1/services", get(list_services))
}

impl AppState {
    /// Refuses a new service beyond [`MAX_UPSTREAMS`] (replacing one is always allowed).
    fn check_room(&self, name: &str) -> Result<(), ApiError> {
        let defs = self
            .definitions
            .lock()
            .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "agent state poisoned"))?;
        if !defs.contains_key(name) && defs.len() >= MAX_UPSTREAMS {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "this agent already provides {MAX_UPSTREAMS} services, its limit; deregister one first"
                ),
            ));
        }
        Ok(())
    }

    /// The mesh handler of a service provided through `url`: calls are forwarded to it.
    fn sidecar_handler(&self, url: reqwest::Url) -> impl themis_mesh::ServiceHandler {
        Sidecar::new(
            self.http.clone(),
            url,
            self.config.max_body,
            self.config.upstream_timeout,
            self.config.upstream_concurrency,
            self.metrics.clone(),
        )
    }

    /// Saves the definitions in the data directory, if there is one (a failure is logged:
    /// the registration itself holds).
    fn persist(&self) {
        let Some(dir) = &self.config.data_dir else {
            return;
        };
        let defs: Vec<ServiceDefinition> = super::definitions(self);
        if let Err(e) = dir.save_services(&defs) {
            tracing::warn!(error = %e, "the services could not be saved in the data directory");
        }
    }
}

/// Provides `name` as `def` says: checks the definition, the upstream URL and the room for one
/// more service, registers it with a sidecar handler forwarding to the upstream (paper §7
/// register), then remembers (and saves) the definition. The one path of a registration through
/// the API and of the services registered at start.
pub(super) async fn provide(
    s: &AppState,
    name: &str,
    mut def: ServiceDefinition,
) -> Result<u8, ApiError> {
    check_name(name)?;
    def.check(name)?;
    let url = Sidecar::parse_upstream(&def.upstream)
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, m))?;
    s.check_room(name)?;
    // The access list first, so that no call gets through between the registration and it
    // (an empty list opens the service, also replacing an earlier list).
    let allowed = def.allowed()?;
    let previous: Option<Vec<themis_mesh::NodeId>> = s
        .definitions
        .lock()
        .ok()
        .and_then(|d| d.get(name).map(|d| d.allowed().unwrap_or_default()));
    s.node.restrict(name, allowed.iter().copied())?;
    let stored = match s
        .node
        .register(name, def.spec(), s.sidecar_handler(url.clone()))
        .await
    {
        Ok(n) => n,
        Err(e) => {
            // The registration did not change: neither does the list (the earlier one if the
            // service is still provided, none if not).
            let still = s.node.provided_services().iter().any(|p| p == name);
            let _ = s
                .node
                .restrict(name, previous.filter(|_| still).unwrap_or_default());
            return Err(e.into());
        }
    };
    def.name = Some(name.to_owned());
    if let Ok(mut defs) = s.definitions.lock() {
        defs.insert(name.to_owned(), def);
    }
    s.persist();
    let replicas = u32::from(s.node.replication()) + 1;
    if u32::from(stored) < replicas {
        tracing::warn!(service = %name, stored, replicas, allowed_callers = allowed.len(), "registered, but stored on fewer than all replicas; the node retries the others");
    } else {
        tracing::info!(service = %name, upstream = %url, stored, allowed_callers = allowed.len(), "registered");
    }
    Ok(stored)
}

/// `PUT /v1/services/{name}`.
async fn register(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let def = ServiceDefinition::parse_json(&body_or_error(body, s.config.max_body)?)?;
    let spec = def.spec();
    let upstream = Sidecar::parse_upstream(&def.upstream).map(|u| u.to_string());
    let allow = def.allow.clone();
    let stored = provide(&s, &name, def).await?;
    Ok(Json(json!({
        "service": name,
        "upstream": upstream.unwrap_or_default(),
        "version": spec.version,
        "weight": spec.weight,
        "provider": s.node.id().to_string(),
        "replicas_stored": stored,
        "replicas": u32::from(s.node.replication()) + 1,
        "allow": allow,
    })))
}

/// `DELETE /v1/services/{name}`.
async fn deregister(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_name(&name)?;
    let w = s.node.withdraw(&name).await?;
    let had = w.provided;
    s.node.restrict(&name, [])?;
    if let Ok(mut defs) = s.definitions.lock() {
        defs.remove(&name);
    }
    s.persist();
    if !had {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("this node does not provide '{name}'"),
        ));
    }
    tracing::info!(service = %name, withdrawn = w.replicas_withdrawn, replicas = w.replicas, "deregistered");
    Ok(Json(json!({
        "service": name,
        "deregistered": true,
        "replicas_withdrawn": w.replicas_withdrawn,
        "replicas": w.replicas,
    })))
}

/// `GET /v1/services`.
async fn list_services(State(s): State<Arc<AppState>>) -> Json<Value> {
    let defs = s.definitions.lock().map(|d| d.clone()).unwrap_or_default();
    let list: Vec<Value> = s
        .node
        .provided_services()
        .into_iter()
        .map(|n| {
            let d = defs.get(&n);
            json!({
                "service": n,
                "upstream": d.map(|d| d.upstream.clone()),
                "version": d.and_then(|d| d.version.clone()),
                "weight": d.and_then(|d| d.weight),
                "tags": d.map(|d| d.tags.clone()).unwrap_or_default(),
                "allow": d.map(|d| d.allow.clone()).unwrap_or_default(),
            })
        })
        .collect();
    Json(json!({ "services": list }))
}

/// `GET /v1/services/{name}`: discovery, fresh from the DHT.
async fn discover(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_name(&name)?;
    let started = Instant::now();
    let found = s.node.discover_detailed(&name).await;
    s.metrics.discovery(found.is_ok(), started.elapsed());
    let d = found?;
    let providers: Vec<Value> = d
        .providers
        .iter()
        .map(|r| {
            json!({
                "node": r.provider.id.to_string(),
                "address": r.provider.addr.to_string(),
                "version": r.provider.version,
                "weight": r.provider.weight,
                "tags": r.provider.tags,
                "sequence": r.sequence,
                "succeeds": r.succeeds.map(|id| id.to_string()),
            })
        })
        .collect();
    let replicas: Vec<Value> = d
        .object_ids
        .iter()
        .enumerate()
        .map(|(r, id)| json!({ "replica": r, "object_id": id.to_string() }))
        .collect();
    Ok(Json(json!({
        "service": d.service,
        "providers": providers,
        "replicas": replicas,
        "found_on_replica": d.replica,
        "hops": d.hops,
    })))
}
