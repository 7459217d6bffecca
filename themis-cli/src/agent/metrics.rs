//! `GET /metrics`: the node's metrics in the OpenMetrics text format, written by
//! `prometheus-client` (Prometheus scrapes it): every family has `# HELP` and `# TYPE` lines
//! and a `themis_` name, counters end in `_total`.
//!
//! Two sources: the agent's own counters and latency histograms ([`AgentMetrics`], updated as
//! calls, discoveries and upstream forwards end), and a snapshot of the DHT core's, the
//! endpoint's and the transport's counters, read from the node at each scrape
//! ([`NodeSnapshot`]).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use themis_mesh::dht::{HOP_BUCKETS, NodeMetrics};

use super::{ApiError, AppState};

/// The media type of the OpenMetrics text format.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The label of the agent's families: `outcome="ok"` or `outcome="error"`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

impl Outcome {
    fn of(ok: bool) -> Self {
        Self {
            outcome: if ok { "ok" } else { "error" },
        }
    }
}

/// A histogram of durations in seconds: 0.5 ms to about 16 s, doubling.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_5, 2.0, 16))
}

type Durations = Family<Outcome, Histogram, fn() -> Histogram>;

/// The label of a health check's results: its kind and whether it passed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckResult {
    check: &'static str,
    result: &'static str,
}

/// The label of a health check's status changes: the new status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckChange {
    to: &'static str,
}

/// One kind of work the agent does: how many ended, by outcome, and how long each took.
#[derive(Debug, Clone)]
struct Work {
    done: Family<Outcome, Counter>,
    seconds: Durations,
}

impl Work {
    fn new() -> Self {
        Self {
            done: Family::default(),
            seconds: Family::new_with_constructor(duration_histogram),
        }
    }

    fn record(&self, ok: bool, took: Duration) {
        let outcome = Outcome::of(ok);
        self.seconds
            .get_or_create(&outcome)
            .observe(took.as_secs_f64());
        self.done.get_or_create(&outcome).inc();
    }

    /// Registers `{name}_total` (counter) and `{name_seconds}` (histogram).
    fn register(&self, r: &mut Registry, name: &str, help: &str, duration: (&str, &str)) {
        r.register(name, help, self.done.clone());
        let (seconds_name, seconds_help) = duration;
        r.register_with_unit(
            seconds_name,
            seconds_help,
            Unit::Seconds,
            self.seconds.clone(),
        );
    }
}

/// The agent's own metrics (the mesh families of `/metrics`). Cheap to clone: clones share
/// the series.
#[derive(Debug, Clone)]
pub(crate) struct AgentMetrics {
    calls: Work,
    discoveries: Work,
    forwards: Work,
    check_results: Family<CheckResult, Counter>,
    check_changes: Family<CheckChange, Counter>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self {
            calls: Work::new(),
            discoveries: Work::new(),
            forwards: Work::new(),
            check_results: Family::default(),
            check_changes: Family::default(),
        }
    }
}

impl AgentMetrics {
    /// A service call made through the API ended.
    pub(crate) fn call(&self, ok: bool, took: Duration) {
        self.calls.record(ok, took);
    }

    /// A discovery made through the API ended.
    pub(crate) fn discovery(&self, ok: bool, took: Duration) {
        self.discoveries.record(ok, took);
    }

    /// A call received for a provided service was forwarded to its upstream.
    pub(crate) fn forward(&self, ok: bool, took: Duration) {
        self.forwards.record(ok, took);
    }

    /// A health check of kind `check` (`http`, `tcp`, `ttl`) had a result.
    pub(crate) fn check_result(&self, check: &'static str, passed: bool) {
        let result = if passed { "pass" } else { "fail" };
        self.check_results
            .get_or_create(&CheckResult { check, result })
            .inc();
    }

    /// A health check's status changed (to passing, or to critical).
    pub(crate) fn check_transition(&self, passing: bool) {
        let to = if passing { "passing" } else { "critical" };
        self.check_changes.get_or_create(&CheckChange { to }).inc();
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            "themis_health_check_results",
            "Results of the health checks of the services provided through this agent, by kind (http, tcp, ttl) and result (pass, fail).",
            self.check_results.clone(),
        );
        r.register(
            "themis_health_check_changes",
            "Status changes of the health checks of this agent's services, by new status (passing: the record is stored again; critical: it is withdrawn).",
            self.check_changes.clone(),
        );
        self.calls.register(
            r,
            "themis_mesh_calls",
            "Service calls made through this agent's API, by outcome.",
            (
                "themis_mesh_call_duration",
                "Duration of the service calls made through this agent's API (discovery, every attempt and failover included), by outcome.",
            ),
        );
        self.discoveries.register(
            r,
            "themis_mesh_discoveries",
            "Discoveries made through this agent's API, by outcome.",
            (
                "themis_mesh_discovery_duration",
                "Duration of the discoveries made through this agent's API, by outcome.",
            ),
        );
        self.forwards.register(
            r,
            "themis_mesh_upstream_forwards",
            "Calls received for a provided service and forwarded to its upstream, by outcome.",
            (
                "themis_mesh_upstream_forward_duration",
                "Duration of the forwards of received calls to their upstream, by outcome.",
            ),
        );
    }
}

/// What a series of the node snapshot is.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// One series of the snapshot: kind, name (without `_total`), help, value.
type Series = (Kind, &'static str, &'static str, u64);

/// The node's counters read at one scrape: the DHT core's, its driver's, the endpoint's and
/// the transport's, with the agent's uptime and the services provided.
#[derive(Debug)]
struct NodeSnapshot {
    uptime_secs: u64,
    series: Vec<Series>,
    hops: [u64; HOP_BUCKETS],
}

impl NodeSnapshot {
    fn new(m: &NodeMetrics, uptime_secs: u64, services_provided: u64) -> Self {
        let services = (
            Kind::Gauge,
            "themis_mesh_services_provided",
            "Services this node provides.",
            services_provided,
        );
        let series = std::iter::once(services)
            .chain(dht_series(m))
            .chain(endpoint_series(m))
            .collect();
        Self {
            uptime_secs,
            series,
            hops: m.dht.hops,
        }
    }
}

impl Collector for NodeSnapshot {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let uptime = ConstGauge::new(self.uptime_secs);
        uptime.encode(e.encode_descriptor(
            "themis_uptime",
            "Seconds since this agent started.",
            Some(&Unit::Seconds),
            uptime.metric_type(),
        )?)?;
        for &(kind, name, help, value) in &self.series {
            match kind {
                Kind::Counter => {
                    let c = ConstCounter::new(value);
                    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)?;
                }
                Kind::Gauge => {
                    let g = ConstGauge::new(value);
                    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)?;
                }
            }
        }
        let (sum, count, buckets) = hop_histogram(&self.hops);
        e.encode_descriptor(
            "themis_dht_lookup_hops",
            "Hops of the successful lookups (the +Inf bucket holds the longest ones, counted in the sum as one hop more than the last finite bucket).",
            None,
            MetricType::Histogram,
        )?
        .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }
}

/// The DHT core's per-hop-count counts as a histogram: `(sum, count, buckets)`, buckets
/// `le = 0, 1, ..., HOP_BUCKETS - 2` and `+Inf` (not cumulative: the encoder adds them up).
fn hop_histogram(hops: &[u64; HOP_BUCKETS]) -> (f64, u64, Vec<(f64, u64)>) {
    let mut buckets: Vec<(f64, u64)> = hops
        .iter()
        .zip(0u32..)
        .map(|(n, i)| (f64::from(i), *n))
        .collect();
    // The core's last count is of that many hops or more: the `+Inf` bucket.
    if let Some(last) = buckets.last_mut() {
        last.0 = f64::MAX;
    }
    let count = hops.iter().sum();
    let sum = hops
        .iter()
        .zip(0u32..)
        .map(|(n, i)| f64::from(i) * *n as f64)
        .sum();
    (sum, count, buckets)
}

/// The DHT core's and its driver's series.
#[rustfmt::skip] // a table: one series per line
fn dht_series(m: &NodeMetrics) -> Vec<Series> {
    use Kind::{Counter as C, Gauge as G};
    let d = &m.dht;
    vec![
        (C, "themis_dht_lookups_started", "Lookups started.", d.lookups_started),
        (C, "themis_dht_lookups_succeeded", "Lookups that found the target's successor.", d.lookups_succeeded),
        (C, "themis_dht_lookups_failed", "Lookups that ran out of peers or budget.", d.lookups_failed),
        (C, "themis_dht_lookup_bad_answers", "Lookup answers rejected for making no progress (paper §6.2).", d.lookup_bad_answers),
        (G, "themis_dht_stored_records", "Provider records this node stores now.", d.stored_records),
        (C, "themis_dht_records_accepted", "Records accepted by store.", d.records_accepted),
        (C, "themis_dht_record_expirations", "Records dropped at expiry.", d.expirations),
        (C, "themis_dht_handoff_records_sent", "Records handed to another node (handoff or leave).", d.handoff_records_sent),
        (C, "themis_dht_handoff_records_received", "Records received through handoff or leave.", d.handoff_records_received),
        (C, "themis_dht_records_taken_back", "Copies of handed records taken back after the predecessor that took them failed.", d.records_taken_back),
        (C, "themis_dht_stabilization_repairs", "Ring repairs: dead successor skipped, dead predecessor cleared.", d.stabilization_repairs),
        (C, "themis_dht_successor_changes", "Successor changes.", d.successor_changes),
        (C, "themis_dht_predecessor_changes", "Predecessor changes.", d.predecessor_changes),
        (C, "themis_dht_address_checks", "Known ids seen at a new address whose old address was asked who listens there (PROTOCOL.md §6.15).", d.address_checks),
        (C, "themis_dht_address_conflicts", "Address checks whose old address still answered with the id (a second instance with the same key?).", d.address_conflicts),
        (C, "themis_dht_peers_readdressed", "Peers moved to their new address after an address check (a node restarted elsewhere).", d.peers_readdressed),
        (C, "themis_dht_unify_probes", "Probes of lost peers and bootstraps (ring unification, PROTOCOL.md §6.14).", d.unify_probes),
        (C, "themis_dht_unify_foreign", "Probed peers that answered from another ring.", d.unify_foreign),
        (C, "themis_dht_unify_merges", "Successors adopted from another ring (merge steps).", d.unify_merges),
        (C, "themis_dht_successor_checks", "Lookups of the node's own successor, after a walk back toward it reached its bound.", d.successor_checks),
        (C, "themis_dht_rejected", "Requests refused or records rejected (all reasons).", d.rejected.iter().sum()),
        (C, "themis_dht_records_rejected_by_reader", "Records from a responder that failed verification.", d.records_rejected_by_reader),
        (C, "themis_dht_malformed_messages", "DHT messages that did not decode.", d.malformed_messages),
        (C, "themis_dht_requests_sent", "DHT requests handed to the endpoint.", m.requests_sent),
        (C, "themis_dht_requests_failed", "DHT requests that failed on the network.", m.requests_failed),
        (G, "themis_dht_requests_in_flight", "DHT requests on the network now.", m.requests_in_flight),
        (C, "themis_dht_incoming_requests", "Incoming DHT requests passed to the core.", m.incoming_requests),
        (C, "themis_dht_incoming_refused_busy", "Incoming DHT requests refused because too many waited.", m.incoming_refused_busy),
    ]
}

/// The endpoint's (secure channel, paper Fig. 2/3) and its transport's series.
#[rustfmt::skip] // a table: one series per line
fn endpoint_series(m: &NodeMetrics) -> Vec<Series> {
    use Kind::{Counter as C, Gauge as G};
    let p = &m.endpoint;
    let t = &p.transport;
    let handshakes_failed =
        p.handshakes_failed_timeout + p.handshakes_failed_identity + p.handshakes_failed_mode;
    let handshakes_rejected =
        p.handshakes_rejected_invalid + p.handshakes_rejected_busy + p.handshakes_rejected_unknown;
    let frames_rejected = p.frames_rejected_malformed
        + p.frames_rejected_auth
        + p.frames_rejected_replay
        + p.frames_rejected_unknown_session
        + p.frames_rejected_mode
        + p.frames_rejected_other;
    vec![
        (C, "themis_endpoint_handshakes_initiated", "Handshakes completed as initiator.", p.handshakes_initiated_ok),
        (C, "themis_endpoint_handshakes_accepted", "Handshakes completed as responder.", p.handshakes_accepted_ok),
        (C, "themis_endpoint_handshakes_failed", "Handshakes we started that failed (timeout, identity, mode).", handshakes_failed),
        (C, "themis_endpoint_handshakes_rejected", "Handshake messages refused (invalid, busy, unknown).", handshakes_rejected),
        (C, "themis_endpoint_frames_rejected", "Frames refused (malformed, authentication, replay, unknown session, mode, other).", frames_rejected),
        (C, "themis_endpoint_frames_rejected_auth", "Channel frames that failed authentication.", p.frames_rejected_auth),
        (C, "themis_endpoint_requests_sent", "Requests sent.", p.requests_sent),
        (C, "themis_endpoint_requests_ok", "Requests answered.", p.requests_ok),
        (C, "themis_endpoint_requests_failed", "Requests that failed (timeouts included).", p.requests_failed),
        (C, "themis_endpoint_requests_timed_out", "Requests that timed out.", p.requests_timed_out),
        (C, "themis_endpoint_retransmissions", "Frames sent again after a retransmission timeout.", p.retransmissions),
        (C, "themis_endpoint_commands_received", "Commands received and handed to the handler.", p.commands_received),
        (C, "themis_endpoint_commands_dropped_busy", "Commands dropped because all handlers were busy.", p.commands_dropped_busy),
        (C, "themis_endpoint_bytes_out", "Frame bytes sent.", p.bytes_out),
        (C, "themis_endpoint_bytes_in", "Frame bytes received.", p.bytes_in),
        (C, "themis_endpoint_frames_dropped_backlog", "Frames dropped unsent: their destination's send backlog was full.", p.frames_dropped_backlog),
        (G, "themis_endpoint_in_flight", "Requests awaiting their response.", p.in_flight),
        (G, "themis_endpoint_sessions", "Peers with a live session (secure) or channel (insecure).", p.sessions),
        (C, "themis_endpoint_sessions_dropped", "Sessions dropped (peer lost it, eviction, expiry).", p.sessions_dropped),
        (G, "themis_transport_connections_open", "Peer connections open now (TCP).", t.connections_open),
        (C, "themis_transport_connections_opened", "Connections established, dialed and accepted (TCP).", t.connections_opened),
        (C, "themis_transport_connect_failed", "Dial attempts that failed or timed out (TCP).", t.connect_failed),
        (C, "themis_transport_connections_lost", "Connections a peer ended without a goodbye (its process ended, or it reset them); what waited on them failed at once (TCP).", t.connections_lost),
        (C, "themis_transport_send_errors", "Frames the kernel refused to send (UDP: often a full connection-tracking table, see dmesg).", t.send_errors),
        (C, "themis_transport_connections_refused_source", "Connections refused at accept: their source prefix (/32, /64) held its share of sockets (TCP).", t.connections_refused_source),
        (G, "themis_transport_connections_handshaking", "Accepted sockets still waiting for their hello (TCP).", t.connections_handshaking),
        (C, "themis_endpoint_handshakes_rejected_source", "Messages 1 refused: their source prefix held its share of pending handshakes.", p.handshakes_rejected_source),
        (G, "themis_endpoint_pending_handshakes", "Responder handshakes awaiting message 3.", p.pending_handshakes),
        (G, "themis_endpoint_pending_sources", "Source prefixes with a pending handshake.", p.pending_sources),
        (C, "themis_endpoint_cookies_sent", "COOKIE replies sent while under load (PROTOCOL.md §5.2).", p.cookies_sent),
        (C, "themis_endpoint_cookies_received", "COOKIE replies accepted by our handshakes.", p.cookies_received),
        (C, "themis_endpoint_cookie_echoes_accepted", "COOKIE ECHOs whose cookie verified.", p.cookie_echoes_accepted),
        (C, "themis_endpoint_cookie_echoes_rejected", "COOKIE ECHOs refused (bad or stale cookie, malformed).", p.cookie_echoes_rejected),
    ]
}

/// The exposition of `agent` and `snapshot`.
fn exposition(agent: &AgentMetrics, snapshot: NodeSnapshot) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    agent.register(&mut registry);
    registry.register_collector(Box::new(snapshot));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

/// The routes of this module.
pub(super) fn routes() -> axum::Router<Arc<AppState>> {
    axum::Router::new().route("/metrics", axum::routing::get(render))
}

async fn render(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let snapshot = NodeSnapshot::new(
        &s.node.metrics().await?,
        s.started.elapsed().as_secs(),
        s.node.provided_services().len() as u64,
    );
    let text = exposition(&s.metrics, snapshot).map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be encoded",
        )
    })?;
    let mut resp = text.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Ok(resp)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// An exposition of a few made-up values.
    fn text() -> String {
        let agent = AgentMetrics::default();
        agent.call(true, Duration::from_millis(3));
        agent.call(true, Duration::from_millis(700));
        agent.call(false, Duration::from_secs(2));
        agent.forward(true, Duration::from_millis(1));
        agent.check_result("http", true);
        agent.check_result("http", false);
        agent.check_result("http", false);
        agent.check_transition(false);
        let mut hops = [0; HOP_BUCKETS];
        hops[1] = 4;
        hops[3] = 2;
        hops[HOP_BUCKETS - 1] = 1;
        let snapshot = NodeSnapshot {
            uptime_secs: 5,
            series: vec![
                (
                    Kind::Counter,
                    "themis_dht_lookups_started",
                    "Lookups started.",
                    7,
                ),
                (Kind::Gauge, "themis_endpoint_sessions", "Sessions.", 2),
            ],
            hops,
        };
        exposition(&agent, snapshot).unwrap()
    }

    #[test]
    fn every_family_has_help_and_type_lines_before_its_samples() {
        let text = text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.last(), Some(&"# EOF"), "{text}");
        let mut typed: Vec<String> = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let family = rest.split(' ').next().unwrap();
                assert!(
                    lines[i - 1].starts_with(&format!("# HELP {family} ")),
                    "{text}"
                );
                typed.push(family.to_owned());
            } else if !line.starts_with('#') {
                assert!(
                    line.starts_with("themis_")
                        && typed.iter().any(|f| line.starts_with(f.as_str())),
                    "sample before its family: {line}\n{text}"
                );
            }
        }
        // The uptime is a gauge (no `_total`), in seconds.
        assert!(
            text.contains("# UNIT themis_uptime_seconds seconds"),
            "{text}"
        );
        assert!(text.contains("\nthemis_uptime_seconds 5\n"), "{text}");
        for want in [
            "themis_mesh_calls_total{outcome=\"ok\"} 2",
            "themis_mesh_calls_total{outcome=\"error\"} 1",
            "themis_mesh_upstream_forwards_total{outcome=\"ok\"} 1",
            "themis_dht_lookups_started_total 7",
            "themis_endpoint_sessions 2",
            "# TYPE themis_mesh_call_duration_seconds histogram",
            "themis_mesh_call_duration_seconds_count{outcome=\"ok\"} 2",
            "themis_health_check_results_total{check=\"http\",result=\"fail\"} 2",
            "themis_health_check_results_total{check=\"http\",result=\"pass\"} 1",
            "themis_health_check_changes_total{to=\"critical\"} 1",
        ] {
            assert!(text.contains(want), "missing {want}: {text}");
        }
    }

    #[test]
    fn the_hop_counts_are_a_histogram() {
        let text = text();
        let last = HOP_BUCKETS - 1;
        for want in [
            "themis_dht_lookup_hops_count 7".to_owned(),
            format!("themis_dht_lookup_hops_sum {}", 4 + 3 * 2 + last),
            "themis_dht_lookup_hops_bucket{le=\"0.0\"} 0".to_owned(),
            "themis_dht_lookup_hops_bucket{le=\"1.0\"} 4".to_owned(),
            "themis_dht_lookup_hops_bucket{le=\"3.0\"} 6".to_owned(),
            "themis_dht_lookup_hops_bucket{le=\"+Inf\"} 7".to_owned(),
        ] {
            assert!(text.contains(&want), "missing {want}: {text}");
        }
    }
}
