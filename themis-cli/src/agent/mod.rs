//! The node agent: a local HTTP JSON API in front of one [`MeshNode`], modelled on Consul's
//! agent API, so that a service in any language can provide and call services on the mesh.
//!
//! | route | what |
//! |---|---|
//! | `PUT /v1/services/{name}` | provide `name`: calls reaching this node are POSTed to the JSON body's `upstream` (sidecar) |
//! | `DELETE /v1/services/{name}` | stop providing `name` |
//! | `GET /v1/services/{name}` | discover `name`: providers and the replica object ids |
//! | `GET /v1/services` | the services this node provides, with their upstreams |
//! | `POST /v1/call/{name}` | call `name` with the body; answer = the provider's body, header `x-themis-provider` |
//! | `GET /v1/status` | node id, network, ring neighbours, sessions, stored records, uptime |
//! | `GET /metrics` | OpenMetrics text (Prometheus scrapes it): the endpoint, DHT and mesh counters, call and discovery latency histograms |
//!
//! Errors are `{"error": "..."}` with a fitting status (400, 403, 404, 413, 502, 503, 504).

mod metrics;
mod sidecar;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use themis_mesh::{Bytes, MeshNode, Mode, ServiceSpec};

use metrics::AgentMetrics;
pub(crate) use sidecar::Sidecar;

/// Header of a call's answer naming the provider node that served it (hex node id).
pub(crate) const PROVIDER_HEADER: &str = "x-themis-provider";
/// Header of a forwarded call naming the caller node (hex node id; authenticated in secure
/// mode, a claim in insecure mode).
pub(crate) const CALLER_HEADER: &str = "x-themis-caller";
/// Longest service name (the DHT's limit).
const MAX_NAME: usize = themis_mesh::dht::MAX_NAME_LEN;
/// Services this agent keeps an upstream for (the mesh node's own limit is 64 by default).
const MAX_UPSTREAMS: usize = 64;

/// Settings of the agent.
#[derive(Debug, Clone)]
pub(crate) struct AgentConfig {
    /// Largest request body (API calls, registrations) and largest upstream answer, in bytes.
    pub(crate) max_body: usize,
    /// How long the sidecar waits for an upstream's answer (below the mesh's 5 s request
    /// timeout, so that the caller gets the provider's error rather than a timeout).
    pub(crate) upstream_timeout: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            max_body: 1 << 20,
            upstream_timeout: Duration::from_secs(4),
        }
    }
}

/// The state shared by the handlers.
pub(crate) struct AppState {
    node: MeshNode,
    network: String,
    mode: Mode,
    started: Instant,
    config: AgentConfig,
    http: reqwest::Client,
    upstreams: Mutex<BTreeMap<String, String>>,
    metrics: AgentMetrics,
}

impl AppState {
    /// The state of an agent for `node` on `network`.
    pub(crate) fn new(node: MeshNode, network: &str, mode: Mode, config: AgentConfig) -> Self {
        Self {
            node,
            network: network.to_owned(),
            mode,
            started: Instant::now(),
            config,
            // No proxy: upstreams are local services.
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap_or_default(),
            upstreams: Mutex::new(BTreeMap::new()),
            metrics: AgentMetrics::default(),
        }
    }
}

/// An API error: a status and a message, sent as `{"error": message}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<themis_mesh::Error> for ApiError {
    fn from(e: themis_mesh::Error) -> Self {
        use themis_mesh::{Error as E, channel::Error as ChannelError};
        let status = match &e {
            E::NotFound { .. } | E::NoProviders { .. } => StatusCode::NOT_FOUND,
            E::AccessDenied { .. } => StatusCode::FORBIDDEN,
            E::InvalidConfig { .. } => StatusCode::BAD_REQUEST,
            E::Remote { .. } | E::AttemptsExhausted { .. } | E::VersionUnavailable { .. } => {
                StatusCode::BAD_GATEWAY
            }
            E::Call { source, .. }
                if matches!(
                    **source,
                    ChannelError::RequestTimeout { .. } | ChannelError::HandshakeTimeout { .. }
                ) =>
            {
                StatusCode::GATEWAY_TIMEOUT
            }
            E::Call { .. } => StatusCode::BAD_GATEWAY,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, e.to_string())
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "a service name is 1 to {MAX_NAME} bytes, got {}",
                name.len()
            ),
        ));
    }
    Ok(())
}

fn body_or_error(body: Result<Bytes, BytesRejection>, max: usize) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body larger than the agent's limit of {max} bytes (themis node --max-body)"
                ),
            )
        } else {
            ApiError::new(r.status(), format!("request body: {}", r.body_text()))
        }
    })
}

/// The API's routes on `state`.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let limit = state.config.max_body;
    Router::new()
        .route(
            "/v1/services/{name}",
            get(discover).put(register).delete(deregister),
        )
        .route("/v1/services", get(list_services))
        .route("/v1/call/{name}", post(call))
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics::render))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such API route (routes: /v1/services/{name}, /v1/call/{name}, /v1/status, /metrics)",
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// The JSON body of `PUT /v1/services/{name}`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    upstream: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    weight: Option<u16>,
    #[serde(default)]
    tags: Vec<String>,
}

/// What `PUT /v1/services/{name}` must look like (in the error for a body that does not parse).
const REGISTER_BODY_SHAPE: &str =
    r#"{"upstream": "http://127.0.0.1:PORT/PATH", "version": "1.0", "weight": 100, "tags": []}"#;

impl RegisterBody {
    /// Parses the body of a registration.
    fn parse(body: &[u8]) -> Result<Self, ApiError> {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the body must be JSON {REGISTER_BODY_SHAPE}: {e}"),
            )
        })
    }

    /// The announced service spec: the defaults, overridden by what the body gives.
    fn spec(&self) -> ServiceSpec {
        let mut spec = ServiceSpec::default();
        if let Some(v) = &self.version {
            spec.version.clone_from(v);
        }
        if let Some(w) = self.weight {
            spec.weight = w;
        }
        spec.tags.clone_from(&self.tags);
        spec
    }
}

impl AppState {
    /// Refuses a new upstream beyond [`MAX_UPSTREAMS`] (replacing one is always allowed).
    fn check_room(&self, name: &str) -> Result<(), ApiError> {
        let ups = self
            .upstreams
            .lock()
            .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "agent state poisoned"))?;
        if !ups.contains_key(name) && ups.len() >= MAX_UPSTREAMS {
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
        let sidecar = Arc::new(Sidecar::new(
            self.http.clone(),
            url,
            self.config.max_body,
            self.config.upstream_timeout,
            self.metrics.clone(),
        ));
        move |caller, request| {
            let sc = sidecar.clone();
            async move { sc.forward(caller, request).await }
        }
    }
}

/// `PUT /v1/services/{name}`: checks the name, the body and the room for one more upstream,
/// registers the service with a sidecar handler forwarding to the upstream (paper §7
/// register), then remembers the upstream.
async fn register(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    check_name(&name)?;
    let req = RegisterBody::parse(&body_or_error(body, s.config.max_body)?)?;
    let url = Sidecar::parse_upstream(&req.upstream)
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, m))?;
    s.check_room(&name)?;
    let spec = req.spec();
    let (version, weight) = (spec.version.clone(), spec.weight);
    let stored = s
        .node
        .register(&name, spec, s.sidecar_handler(url.clone()))
        .await?;
    if let Ok(mut ups) = s.upstreams.lock() {
        ups.insert(name.clone(), url.to_string());
    }
    tracing::info!(service = %name, upstream = %url, stored, "registered");
    Ok(Json(json!({
        "service": name,
        "upstream": url.to_string(),
        "version": version,
        "weight": weight,
        "provider": s.node.id().to_string(),
        "replicas_stored": stored,
        "replicas": u32::from(s.node.replication()) + 1,
    })))
}

async fn deregister(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_name(&name)?;
    let had = s.node.deregister(&name).await?;
    if let Ok(mut ups) = s.upstreams.lock() {
        ups.remove(&name);
    }
    if !had {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("this node does not provide '{name}'"),
        ));
    }
    Ok(Json(json!({ "service": name, "deregistered": true })))
}

async fn list_services(State(s): State<Arc<AppState>>) -> Json<Value> {
    let ups = s.upstreams.lock().map(|u| u.clone()).unwrap_or_default();
    let list: Vec<Value> = s
        .node
        .provided_services()
        .into_iter()
        .map(|n| json!({ "service": n, "upstream": ups.get(&n) }))
        .collect();
    Json(json!({ "services": list }))
}

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

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Insecure => "insecure",
        _ => "secure",
    }
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
        "state": st.ring.state,
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use themis_mesh::{Error as E, NodeId, RemoteErrorKind, channel::Error as ChannelError};

    fn status(e: E) -> StatusCode {
        ApiError::from(e).status
    }

    #[test]
    fn mesh_errors_map_to_fitting_statuses() {
        let id = NodeId::from_bytes([1; 32]);
        let s = || "svc".to_owned();
        assert_eq!(
            status(E::NotFound {
                service: s(),
                replicas: 3
            }),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(E::AccessDenied {
                caller: id,
                service: s()
            }),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            status(E::Remote {
                service: s(),
                provider: id,
                kind: RemoteErrorKind::Handler,
                message: "upstream down".into(),
            }),
            StatusCode::BAD_GATEWAY
        );
        let addr: std::net::SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let call = |source| E::Call {
            service: s(),
            provider: id,
            addr,
            source: Box::new(source),
        };
        assert_eq!(
            status(call(ChannelError::RequestTimeout {
                peer: id,
                addr,
                after: Duration::from_secs(5)
            })),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            status(call(ChannelError::PeerBusy { peer: id, addr })),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            status(themis_mesh::dht::Error::Stopped.into()),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(E::InvalidConfig {
                what: "service name",
                reason: "too long"
            }),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn names_are_checked_before_any_work() {
        assert!(check_name("").is_err());
        assert!(check_name(&"n".repeat(MAX_NAME + 1)).is_err());
        assert!(check_name("check").is_ok());
    }
}
