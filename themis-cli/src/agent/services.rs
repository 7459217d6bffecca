//! `/v1/services`: provide a service through the agent (sidecar), stop providing it, list what
//! this node provides, and discover a service's providers (paper §7 register and discover).

use std::sync::{Arc, Weak};
use std::time::Instant;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::{Value, json};
use themis_mesh::Bytes;

use super::check::{self, CheckKind, CheckState, HeartbeatError, MAX_CHECKS, Status};
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
        .route("/v1/services/{name}/pass", put(pass))
        .route("/v1/services/{name}/fail", put(fail))
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

    /// Refuses a new health check beyond [`MAX_CHECKS`] (replacing one is always allowed).
    fn check_check_room(&self, name: &str) -> Result<(), ApiError> {
        let checks = self
            .checks
            .lock()
            .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "agent state poisoned"))?;
        if !checks.contains_key(name) && checks.len() >= MAX_CHECKS {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "this agent already runs {MAX_CHECKS} health checks, its limit; deregister a checked service first"
                ),
            ));
        }
        Ok(())
    }

    /// The mesh handler of a service provided through `url`: calls are forwarded to it.
    fn sidecar_handler(&self, url: reqwest::Url) -> impl themis_mesh::ServiceHandler {
        Sidecar::new(
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

/// What a registration did.
pub(super) struct Provided {
    /// Replicas that stored the record now (0 while a check keeps the service back).
    pub(super) stored: u8,
    /// The service's check, if it has one (as `GET /v1/health/{name}` shows it).
    pub(super) check: Option<Value>,
}

/// Provides `name` as `def` says: checks the definition, the upstream URL and the room for one
/// more service; without a health check, registers it at once with a sidecar handler
/// forwarding to the upstream (paper §7 register). With a check, the service starts critical
/// (as in Consul) and is announced only once the check passes: an HTTP or TCP check is probed
/// once right here (so a healthy service is stored before the answer), a TTL check waits for
/// its first heartbeat; the check's runner then keeps the record in line with the check.
/// Then remembers (and saves) the definition. The one path of a registration through the API
/// and of the services registered at start.
pub(super) async fn provide(
    s: &Arc<AppState>,
    name: &str,
    mut def: ServiceDefinition,
) -> Result<Provided, ApiError> {
    check_name(name)?;
    def.check(name)?;
    check_delegation(s, name, &def)?;
    Sidecar::parse_upstream(&def.upstream)
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, m))?;
    s.check_room(name)?;
    let spec = def.check_spec()?;
    if spec.is_some() {
        s.check_check_room(name)?;
    }
    def.name = Some(name.to_owned());
    // A replaced registration's check ends first: its runner must not store or withdraw the
    // record behind this registration's back.
    let old = s.checks.lock().ok().and_then(|mut c| c.remove(name));
    drop(old);
    let Some(spec) = spec else {
        let stored = announce(s, name, &def).await?;
        remember(s, name, def);
        return Ok(Provided {
            stored,
            check: None,
        });
    };
    let mut state = CheckState::new(spec.thresholds, Instant::now());
    if let CheckKind::Probe { probe, timeout, .. } = &spec.kind {
        let (pass, output) = check::probe::run(&s.check_http, probe, *timeout).await;
        s.metrics.check_result(spec.kind.name(), pass);
        if state.record(pass, &output, Instant::now()).is_some() {
            s.metrics.check_transition(pass);
        }
    }
    let passing = state.status() == Status::Passing;
    let stored = if passing {
        announce(s, name, &def).await?
    } else {
        // Critical from the start: not announced; an earlier registration of the name goes.
        def.allowed()?;
        if s.node.provided_services().iter().any(|p| p == name) {
            s.node.withdraw(name).await?;
        }
        tracing::info!(service = %name, check = spec.kind.name(), output = %state.output(), "registered; not announced until its health check passes");
        0
    };
    remember(s, name, def);
    let handle = check::runner::spawn(
        name.to_owned(),
        spec,
        state,
        passing,
        Arc::new(AgentAnnouncer(Arc::downgrade(s))),
        s.check_http.clone(),
        s.metrics.clone(),
    );
    let shown = handle.to_json();
    if let Ok(mut c) = s.checks.lock() {
        c.insert(name.to_owned(), handle);
    }
    Ok(Provided {
        stored,
        check: Some(shown),
    })
}

/// An owned name's delegation must let this node provide it now (PROTOCOL.md §6.4), an
/// unowned name must come without one: checked before anything else, so that a service held
/// back by its health check is refused at once (403 naming the problem), not when its check
/// first passes. The node checks again before it signs each record.
fn check_delegation(s: &AppState, name: &str, def: &ServiceDefinition) -> Result<(), ApiError> {
    let delegation = def.delegation()?;
    let network = themis_mesh::NetworkId::new(&s.network)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    themis_mesh::dht::check_provider(&network, name, &s.node.id(), delegation.as_ref(), now)
        .map_err(|p| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                format!("cannot provide '{name}': {p}"),
            )
        })
}

/// Remembers (and saves) the definition of a provided service.
fn remember(s: &AppState, name: &str, def: ServiceDefinition) {
    if let Ok(mut defs) = s.definitions.lock() {
        defs.insert(name.to_owned(), def);
    }
    s.persist();
}

/// Announces `name` as `def` says: the access list first, then the registration with a
/// sidecar handler (its records stored on the replicas). Returns the replicas stored now.
async fn announce(s: &AppState, name: &str, def: &ServiceDefinition) -> Result<u8, ApiError> {
    let url = Sidecar::parse_upstream(&def.upstream)
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, m))?;
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
    let replicas = u32::from(s.node.replication()) + 1;
    if u32::from(stored) < replicas {
        tracing::warn!(service = %name, stored, replicas, allowed_callers = allowed.len(), "registered, but stored on fewer than all replicas; the node retries the others");
    } else {
        tracing::info!(service = %name, upstream = %url, stored, allowed_callers = allowed.len(), "registered");
    }
    Ok(stored)
}

/// What a check's runner does on a status change, for the agent: announce the service as its
/// definition says, or withdraw it. Holds the agent weakly (the agent holds the runner).
struct AgentAnnouncer(Weak<AppState>);

#[async_trait::async_trait]
impl check::Announce for AgentAnnouncer {
    async fn announce(&self, service: &str) -> Result<(), String> {
        let s = self.0.upgrade().ok_or("the agent is stopping")?;
        let def = s
            .definitions
            .lock()
            .ok()
            .and_then(|d| d.get(service).cloned())
            .ok_or_else(|| format!("'{service}' is no longer registered"))?;
        let stored = announce(&s, service, &def)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(service = %service, stored, "health check passing: announced again");
        Ok(())
    }

    async fn withdraw(&self, service: &str) -> Result<(), String> {
        let s = self.0.upgrade().ok_or("the agent is stopping")?;
        let w = s.node.withdraw(service).await.map_err(|e| e.to_string())?;
        tracing::info!(service = %service, withdrawn = w.replicas_withdrawn, replicas = w.replicas, "health check critical: withdrawn from discovery");
        Ok(())
    }
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
    let Provided { stored, check } = provide(&s, &name, def).await?;
    Ok(Json(json!({
        "announced": check
            .as_ref()
            .is_none_or(|c| c.get("announced") == Some(&Value::Bool(true))),
        "check": check,
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
    // The check first: its runner must not store the record again behind the withdrawal.
    let check = s.checks.lock().ok().and_then(|mut c| c.remove(&name));
    drop(check);
    let w = s.node.withdraw(&name).await?;
    s.node.restrict(&name, [])?;
    let defined = s
        .definitions
        .lock()
        .map(|mut defs| defs.remove(&name).is_some())
        .unwrap_or(false);
    // A service held back by a critical check is provided, though not announced.
    let had = w.provided || defined;
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

/// `GET /v1/services`: what this node provides, announced or held back by a critical check.
async fn list_services(State(s): State<Arc<AppState>>) -> Json<Value> {
    let defs = s.definitions.lock().map(|d| d.clone()).unwrap_or_default();
    let provided = s.node.provided_services();
    let mut names: Vec<String> = defs.keys().cloned().collect();
    names.extend(provided.iter().filter(|p| !defs.contains_key(*p)).cloned());
    names.sort();
    let list: Vec<Value> = names
        .into_iter()
        .map(|n| {
            let d = defs.get(&n);
            let health = s
                .checks
                .lock()
                .ok()
                .and_then(|c| c.get(&n).map(|h| h.view().state.status().as_str()));
            json!({
                "announced": provided.contains(&n),
                "health": health,
                "upstream": d.map(|d| d.upstream.clone()),
                "version": d.and_then(|d| d.version.clone()),
                "weight": d.and_then(|d| d.weight),
                "tags": d.map(|d| d.tags.clone()).unwrap_or_default(),
                "allow": d.map(|d| d.allow.clone()).unwrap_or_default(),
                "check": d.and_then(|d| d.check.clone()),
                "service": n,
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
    let providers: Vec<Value> = d.providers.iter().map(provider_json).collect();
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

/// One provider record as the API shows it.
pub(super) fn provider_json(r: &themis_mesh::ProviderRecord) -> Value {
    json!({
        "node": r.provider.id.to_string(),
        "address": r.provider.addr.to_string(),
        "version": r.provider.version,
        "weight": r.provider.weight,
        "tags": r.provider.tags,
        "sequence": r.sequence,
        "succeeds": r.succeeds.map(|id| id.to_string()),
    })
}

/// Longest a heartbeat waits for its check to take it (a status change stores or withdraws
/// the record first, bounded by the node's command timeout).
const HEARTBEAT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// `PUT /v1/services/{name}/pass`: a TTL check's heartbeat, passing (the body is a note).
async fn pass(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    heartbeat(&s, &name, true, body).await
}

/// `PUT /v1/services/{name}/fail`: a TTL check's heartbeat, failing (the body is a note).
async fn fail(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    heartbeat(&s, &name, false, body).await
}

async fn heartbeat(
    s: &AppState,
    name: &str,
    pass: bool,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    check_name(name)?;
    let body = body_or_error(body, s.config.max_body)?;
    let note = String::from_utf8_lossy(&body);
    let taken = {
        let checks = s
            .checks
            .lock()
            .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "agent state poisoned"))?;
        let h = checks.get(name).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "this node has no health check for '{name}': register it with a TTL check (themis register {name} --upstream URL --check-ttl 30s)"
                ),
            )
        })?;
        h.heartbeat(pass, note.trim()).map_err(|e| match e {
            HeartbeatError::NotTtl(kind) => ApiError::new(
                StatusCode::CONFLICT,
                format!("the check of '{name}' is an {kind} check, which the agent runs itself; only a TTL check takes heartbeats"),
            ),
            HeartbeatError::Busy => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("heartbeats for '{name}' arrive faster than the check takes them; send one per TTL or so"),
            ),
            HeartbeatError::Ended => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the check of '{name}' has ended (deregistered or replaced)"),
            ),
        })?
    };
    match tokio::time::timeout(HEARTBEAT_WAIT, taken).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the check of '{name}' ended before it took the heartbeat"),
            ));
        }
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "the check of '{name}' did not take the heartbeat within {HEARTBEAT_WAIT:?}"
                ),
            ));
        }
    }
    let shown = s
        .checks
        .lock()
        .ok()
        .and_then(|c| c.get(name).map(check::CheckHandle::to_json));
    Ok(Json(json!({ "service": name, "check": shown })))
}
