//! The node agent: a local HTTP JSON API in front of one [`MeshNode`], modelled on Consul's
//! agent API, so that a service in any language can provide and call services on the mesh.
//!
//! | route | module | what |
//! |---|---|---|
//! | `PUT /v1/services/{name}` | [`services`] | provide `name`: calls reaching this node are POSTed to the JSON body's `upstream` (sidecar); an optional `check` ([`check`]) announces it only while it passes |
//! | `DELETE /v1/services/{name}` | [`services`] | stop providing `name` |
//! | `GET /v1/services/{name}` | [`services`] | discover `name`: providers and the replica object ids |
//! | `GET /v1/services` | [`services`] | the services this node provides, with their definitions |
//! | `POST /v1/call/{name}` | [`call`] | call `name` with the body; answer = the provider's body, header `x-themis-provider`; headers `x-themis-idempotent: true`, `x-themis-hops`, `x-themis-timeout-ms` (or `?timeout_ms=`) |
//! | any method `/v1/call/{name}/{path…}` | [`call`] | transparent sidecar: the request (method, path, query, headers, body) reaches the upstream of `name`'s provider, its status, headers and body come back; a mesh error carries `x-themis-error` |
//! | `GET /v1/status` | [`status`] | node id, network, ring neighbours, sessions, stored records, uptime |
//! | `GET /v1/agent/self` | [`status`] | the agent's settings (version, limits, DNS, data dir) |
//! | `PUT /v1/services/{name}/pass`, `/fail` | [`services`] | a TTL check's heartbeat (optional note in the body) |
//! | `GET /v1/health`, `/v1/health/live`, `/v1/health/ready` | [`health`] | liveness and readiness for an orchestrator's probes |
//! | `GET /v1/health/service/{name}` (or `/v1/health/{name}`) | [`health`] | the local check of `name` and the providers discovery finds |
//! | `GET /v1/members` | [`members`] | the ring walked from this node: every member's id, address, state, services |
//! | `GET /v1/doctor` | [`doctor`] | the checks of `themis check` |
//! | `GET /metrics` | [`metrics`] | OpenMetrics text (Prometheus scrapes it) |
//!
//! Each area keeps its routes in its own module (`routes()`), merged here: a new area is a new
//! module and one line in [`router`]. Every request first goes through [`guard`] (JSON errors,
//! browsers refused, the token, the body's deadline and limit); [`server`] serves the router
//! within its connection bounds. Errors are `{"error": "..."}` with a fitting status (400, 401,
//! 403, 404, 405 with `Allow`, 408, 413, 502, 503, 504).

mod call;
mod check;
mod definition;
mod doctor;
mod envelope;
mod guard;
mod health;
mod members;
mod metrics;
mod server;
mod services;
mod sidecar;
mod status;
mod token;
mod upstream;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use themis_mesh::{Bytes, MeshNode, Mode};

pub(crate) use check::CheckDefinition;
pub(crate) use definition::ServiceDefinition;
use metrics::AgentMetrics;
pub(crate) use server::{ServerLimits, serve};
pub(crate) use sidecar::Sidecar;
pub(crate) use token::ApiToken;

use crate::datadir::DataDir;

/// Header of a call's answer naming the provider node that served it (hex node id).
pub(crate) const PROVIDER_HEADER: &str = "x-themis-provider";
/// Header of a forwarded call naming the caller node (hex node id; authenticated in secure
/// mode, a claim in insecure mode).
pub(crate) const CALLER_HEADER: &str = "x-themis-caller";
/// Header of an answer of the transparent sidecar (`/v1/call/{name}/{path…}`) that is the
/// mesh's or the agent's error, not the upstream's answer: its value names the kind
/// (`no-provider`, `timeout`, `hop-limit`, …) and the body is the JSON error.
pub(crate) const ERROR_HEADER: axum::http::HeaderName =
    axum::http::HeaderName::from_static("x-themis-error");
/// Header of a call's hop count: on the request the sidecar sends its upstream (the hops of
/// the call it serves, plus one) and on a `/v1/call` request (an upstream calling the mesh in
/// turn). A call past [`themis_mesh::MAX_HOPS`] is refused with 508 (loop protection).
pub(crate) const HOPS_HEADER: &str = "x-themis-hops";
/// Header of a `/v1/call` request that marks the call idempotent (`true`): it may then be
/// failed over after a timeout or a provider failure, not only when it surely did not run.
pub(crate) const IDEMPOTENT_HEADER: &str = "x-themis-idempotent";
/// Header of a `/v1/call` request giving the call's deadline in milliseconds (also the query
/// parameter `timeout_ms`); the sidecar sends its upstream the time the caller has left.
pub(crate) const TIMEOUT_HEADER: &str = "x-themis-timeout-ms";
/// Longest per-call deadline the agent takes (1 hour).
pub(crate) const MAX_CALL_TIMEOUT_MS: u64 = 3_600_000;
/// Default of `--upstream-concurrency`: calls that may run at one upstream at once.
pub(crate) const DEFAULT_UPSTREAM_CONCURRENCY: usize = 256;
/// Longest service name (the DHT's limit).
const MAX_NAME: usize = themis_mesh::dht::MAX_NAME_LEN;
/// Services this agent keeps an upstream for (the mesh node's own limit is 64 by default).
pub(crate) const MAX_UPSTREAMS: usize = 64;

/// Settings of the agent.
#[derive(Debug, Clone)]
pub(crate) struct AgentConfig {
    /// Largest request body (API calls, registrations) and largest upstream answer, in bytes.
    pub(crate) max_body: usize,
    /// How long the sidecar waits for an upstream's answer (below the mesh's 5 s request
    /// timeout, so that the caller gets the provider's error rather than a timeout).
    pub(crate) upstream_timeout: Duration,
    /// Calls that may run at one upstream at once; more are answered busy, unrun.
    pub(crate) upstream_concurrency: usize,
    /// The node's key file, if it has one (the doctor checks its mode).
    pub(crate) key_file: Option<PathBuf>,
    /// The DNS interface's address, if it serves one.
    pub(crate) dns: Option<std::net::SocketAddr>,
    /// Where registrations and remembered peers are kept, if anywhere.
    pub(crate) data_dir: Option<DataDir>,
    /// The token requests must carry (`--api-token-file`), if any.
    pub(crate) token: Option<Arc<ApiToken>>,
    /// Longest a request body may take to arrive, in whole.
    pub(crate) body_timeout: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            max_body: 1 << 20,
            upstream_timeout: Duration::from_secs(4),
            upstream_concurrency: DEFAULT_UPSTREAM_CONCURRENCY,
            key_file: None,
            dns: None,
            data_dir: None,
            token: None,
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// What the agent tells a readiness probe: set by the node's start-up as it gets there.
#[derive(Debug, Default)]
pub(crate) struct Readiness {
    /// The node has joined its ring (or started a new one on purpose).
    pub(crate) joined: AtomicBool,
    /// The services of the configuration file and the data directory are registered.
    pub(crate) services_registered: AtomicBool,
    /// The node is leaving: not ready any more, so that traffic goes elsewhere.
    pub(crate) leaving: AtomicBool,
}

impl Readiness {
    /// Marks a step done (or the node leaving).
    pub(crate) fn set(flag: &AtomicBool) {
        flag.store(true, Ordering::Release);
    }

    fn get(flag: &AtomicBool) -> bool {
        flag.load(Ordering::Acquire)
    }
}

/// The state shared by the handlers.
pub(crate) struct AppState {
    node: MeshNode,
    network: String,
    mode: Mode,
    started: Instant,
    config: AgentConfig,
    /// The services provided through this agent, by name, as they were defined.
    definitions: Mutex<BTreeMap<String, ServiceDefinition>>,
    /// The running health checks, by service (see [`check`]).
    checks: Mutex<BTreeMap<String, check::CheckHandle>>,
    /// The client of the HTTP health checks (no redirects, no proxy).
    check_http: reqwest::Client,
    metrics: AgentMetrics,
    readiness: Arc<Readiness>,
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
            definitions: Mutex::new(BTreeMap::new()),
            checks: Mutex::new(BTreeMap::new()),
            check_http: check::probe::client(),
            metrics: AgentMetrics::default(),
            readiness: Arc::default(),
        }
    }

    /// The readiness flags the node's start-up sets.
    pub(crate) fn readiness(&self) -> Arc<Readiness> {
        self.readiness.clone()
    }

    /// Marks the node joined and its services registered (a start-up that is done at once).
    pub(crate) fn mark_ready(state: &Self) {
        Readiness::set(&state.readiness.joined);
        Readiness::set(&state.readiness.services_registered);
    }
}

/// An API error: a status and a message, sent as `{"error": message}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// The status and the message (for a caller inside the process, such as the start-up
    /// registration of the configured services).
    pub(crate) fn parts(&self) -> (StatusCode, &str) {
        (self.status, &self.message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<themis_mesh::Error> for ApiError {
    fn from(e: themis_mesh::Error) -> Self {
        use themis_mesh::{Error as E, RemoteErrorKind, channel::Error as ChannelError};
        let status = match &e {
            E::NotFound { .. } | E::NoProviders { .. } => StatusCode::NOT_FOUND,
            E::AccessDenied { .. } => StatusCode::FORBIDDEN,
            E::InvalidConfig { .. } => StatusCode::BAD_REQUEST,
            E::Rejected { code, .. } => {
                StatusCode::from_u16(*code).unwrap_or(StatusCode::BAD_REQUEST)
            }
            E::HopLimit { .. }
            | E::Remote {
                kind: RemoteErrorKind::HopLimit,
                ..
            } => StatusCode::LOOP_DETECTED,
            E::Remote {
                kind: RemoteErrorKind::Timeout,
                ..
            }
            | E::DeadlineExceeded { .. } => StatusCode::GATEWAY_TIMEOUT,
            // A record this node itself refuses to build: the request is wrong, a retry fails
            // the same way.
            // An owned name without a delegation that lets this node provide it.
            E::Dht(d) if matches!(**d, themis_mesh::dht::Error::Delegation { .. }) => {
                StatusCode::FORBIDDEN
            }
            E::Dht(d)
                if matches!(
                    **d,
                    themis_mesh::dht::Error::InvalidRecord(_)
                        | themis_mesh::dht::Error::ReplicationTooHigh { .. }
                        | themis_mesh::dht::Error::MessageTooLarge { .. }
                ) =>
            {
                StatusCode::BAD_REQUEST
            }
            E::Remote { .. }
            | E::Failed { .. }
            | E::AttemptsExhausted { .. }
            | E::VersionUnavailable { .. } => StatusCode::BAD_GATEWAY,
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

/// `secure` or `insecure`.
fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Insecure => "insecure",
        _ => "secure",
    }
}

/// The API's routes on `state`: every area's routes, merged.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let limit = state.config.max_body;
    Router::new()
        .merge(services::routes())
        .merge(call::routes())
        .merge(status::routes())
        .merge(health::routes())
        .merge(members::routes())
        .merge(doctor::routes())
        .merge(metrics::routes())
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such API route (routes: /v1/services/{name}, /v1/services/{name}/pass|fail, /v1/call/{name}, /v1/status, /v1/agent/self, /v1/health, /v1/health/service/{name}, /v1/members, /v1/doctor, /metrics)",
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        // browsers, the token, the body, then JSON errors around everything (guard.rs)
        .layer(from_fn_with_state(state.clone(), guard::guard))
        .with_state(state)
}

/// Registers `definitions` (from the configuration file and the data directory) through the
/// same path as `PUT /v1/services/{name}`; returns the names that failed, with why.
pub(crate) async fn register_all(
    state: &Arc<AppState>,
    definitions: Vec<ServiceDefinition>,
) -> Vec<(String, ApiError)> {
    let mut failed = Vec::new();
    for d in definitions {
        let name = d.name.clone().unwrap_or_default();
        if let Err(e) = services::provide(state, &name, d).await.map(|_| ()) {
            failed.push((name, e));
        }
    }
    failed
}

/// The definitions of the services this agent provides now (to save at shutdown).
pub(crate) fn definitions(state: &AppState) -> Vec<ServiceDefinition> {
    state
        .definitions
        .lock()
        .map(|d| d.values().cloned().collect())
        .unwrap_or_default()
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
        // Issue 12: an upstream's timeout is a timeout, its 4xx keeps its status, a loop is 508.
        assert_eq!(
            status(E::Remote {
                service: s(),
                provider: id,
                kind: RemoteErrorKind::Timeout,
                message: "slow".into(),
            }),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            status(E::Rejected {
                service: s(),
                provider: id,
                code: 409,
                body: Bytes::new(),
            }),
            StatusCode::CONFLICT
        );
        assert_eq!(
            status(E::HopLimit {
                service: s(),
                hops: 9,
                limit: 8
            }),
            StatusCode::LOOP_DETECTED
        );
        assert_eq!(
            status(call(ChannelError::PeerUnreachable { peer: id, addr })),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            status(themis_mesh::dht::Error::InvalidRecord("9 tags".into()).into()),
            StatusCode::BAD_REQUEST
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
