//! `GET /metrics`: the node's counters in the Prometheus text exposition format (version
//! 0.0.4): every family has `# HELP` and `# TYPE` lines and a `themis_` name.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};

/// A Prometheus text exposition being written.
#[derive(Default)]
pub(crate) struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One unlabelled counter.
    pub(crate) fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help);
        let _ = writeln!(self.out, "{name} {value}");
    }

    /// One unlabelled gauge.
    pub(crate) fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "gauge", help);
        let _ = writeln!(self.out, "{name} {value}");
    }

    /// A counter family with one label.
    pub(crate) fn labelled(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        series: &[(String, u64)],
    ) {
        self.family(name, "counter", help);
        for (v, n) in series {
            let _ = writeln!(self.out, "{name}{{{label}=\"{v}\"}} {n}");
        }
    }

    /// The text.
    pub(crate) fn finish(self) -> String {
        self.out
    }
}

fn outcome(ok: u64, failed: u64) -> [(String, u64); 2] {
    [("ok".to_owned(), ok), ("error".to_owned(), failed)]
}

pub(super) async fn render(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let m = s.node.metrics().await?;
    let mut e = Exposition::default();
    e.gauge(
        "themis_uptime_seconds",
        "Seconds since this agent started.",
        s.started.elapsed().as_secs(),
    );
    // The mesh (this agent's own counters).
    let c = &s.counters;
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    e.labelled(
        "themis_mesh_calls_total",
        "Service calls made through this agent's API, by outcome.",
        "outcome",
        &outcome(get(&c.calls_ok), get(&c.calls_failed)),
    );
    e.labelled(
        "themis_mesh_discoveries_total",
        "Discoveries made through this agent's API, by outcome.",
        "outcome",
        &outcome(get(&c.discoveries_ok), get(&c.discoveries_failed)),
    );
    e.labelled(
        "themis_mesh_upstream_forwards_total",
        "Calls received for a provided service and forwarded to its upstream, by outcome.",
        "outcome",
        &outcome(get(&c.forwards_ok), get(&c.forwards_failed)),
    );
    e.gauge(
        "themis_mesh_services_provided",
        "Services this node provides.",
        s.node.provided_services().len() as u64,
    );
    // The DHT core.
    let d = &m.dht;
    e.counter(
        "themis_dht_lookups_started_total",
        "Lookups started.",
        d.lookups_started,
    );
    e.counter(
        "themis_dht_lookups_succeeded_total",
        "Lookups that found the target's successor.",
        d.lookups_succeeded,
    );
    e.counter(
        "themis_dht_lookups_failed_total",
        "Lookups that ran out of peers or budget.",
        d.lookups_failed,
    );
    let hops: Vec<(String, u64)> = d
        .hops
        .iter()
        .enumerate()
        .map(|(i, n)| (i.to_string(), *n))
        .collect();
    e.labelled(
        "themis_dht_lookup_hops_total",
        "Successful lookups by hop count (the last bucket counts that many hops or more).",
        "hops",
        &hops,
    );
    e.counter(
        "themis_dht_lookup_bad_answers_total",
        "Lookup answers rejected for making no progress (paper §6.2).",
        d.lookup_bad_answers,
    );
    e.gauge(
        "themis_dht_stored_records",
        "Provider records this node stores now.",
        d.stored_records,
    );
    e.counter(
        "themis_dht_records_accepted_total",
        "Records accepted by store.",
        d.records_accepted,
    );
    e.counter(
        "themis_dht_record_expirations_total",
        "Records dropped at expiry.",
        d.expirations,
    );
    e.counter(
        "themis_dht_handoff_records_sent_total",
        "Records handed to another node (handoff or leave).",
        d.handoff_records_sent,
    );
    e.counter(
        "themis_dht_handoff_records_received_total",
        "Records received through handoff or leave.",
        d.handoff_records_received,
    );
    e.counter(
        "themis_dht_stabilization_repairs_total",
        "Ring repairs: dead successor skipped, dead predecessor cleared.",
        d.stabilization_repairs,
    );
    e.counter(
        "themis_dht_successor_changes_total",
        "Successor changes.",
        d.successor_changes,
    );
    e.counter(
        "themis_dht_predecessor_changes_total",
        "Predecessor changes.",
        d.predecessor_changes,
    );
    e.counter(
        "themis_dht_rejected_total",
        "Requests refused or records rejected (all reasons).",
        d.rejected.iter().sum(),
    );
    e.counter(
        "themis_dht_records_rejected_by_reader_total",
        "Records from a responder that failed verification.",
        d.records_rejected_by_reader,
    );
    e.counter(
        "themis_dht_malformed_messages_total",
        "DHT messages that did not decode.",
        d.malformed_messages,
    );
    e.counter(
        "themis_dht_requests_sent_total",
        "DHT requests handed to the endpoint.",
        m.requests_sent,
    );
    e.counter(
        "themis_dht_requests_failed_total",
        "DHT requests that failed on the network.",
        m.requests_failed,
    );
    e.gauge(
        "themis_dht_requests_in_flight",
        "DHT requests on the network now.",
        m.requests_in_flight,
    );
    e.counter(
        "themis_dht_incoming_requests_total",
        "Incoming DHT requests passed to the core.",
        m.incoming_requests,
    );
    e.counter(
        "themis_dht_incoming_refused_busy_total",
        "Incoming DHT requests refused because too many waited.",
        m.incoming_refused_busy,
    );
    // The endpoint (secure channel, paper Fig. 2/3).
    let p = &m.endpoint;
    e.counter(
        "themis_endpoint_handshakes_initiated_total",
        "Handshakes completed as initiator.",
        p.handshakes_initiated_ok,
    );
    e.counter(
        "themis_endpoint_handshakes_accepted_total",
        "Handshakes completed as responder.",
        p.handshakes_accepted_ok,
    );
    e.counter(
        "themis_endpoint_handshakes_failed_total",
        "Handshakes we started that failed (timeout, identity, mode).",
        p.handshakes_failed_timeout + p.handshakes_failed_identity + p.handshakes_failed_mode,
    );
    e.counter(
        "themis_endpoint_handshakes_rejected_total",
        "Handshake messages refused (invalid, busy, unknown).",
        p.handshakes_rejected_invalid + p.handshakes_rejected_busy + p.handshakes_rejected_unknown,
    );
    e.counter(
        "themis_endpoint_frames_rejected_total",
        "Frames refused (malformed, authentication, replay, unknown session, mode, other).",
        p.frames_rejected_malformed
            + p.frames_rejected_auth
            + p.frames_rejected_replay
            + p.frames_rejected_unknown_session
            + p.frames_rejected_mode
            + p.frames_rejected_other,
    );
    e.counter(
        "themis_endpoint_frames_rejected_auth_total",
        "Channel frames that failed authentication.",
        p.frames_rejected_auth,
    );
    e.counter(
        "themis_endpoint_requests_sent_total",
        "Requests sent.",
        p.requests_sent,
    );
    e.counter(
        "themis_endpoint_requests_ok_total",
        "Requests answered.",
        p.requests_ok,
    );
    e.counter(
        "themis_endpoint_requests_failed_total",
        "Requests that failed (timeouts included).",
        p.requests_failed,
    );
    e.counter(
        "themis_endpoint_requests_timed_out_total",
        "Requests that timed out.",
        p.requests_timed_out,
    );
    e.counter(
        "themis_endpoint_retransmissions_total",
        "Frames sent again after a retransmission timeout.",
        p.retransmissions,
    );
    e.counter(
        "themis_endpoint_commands_received_total",
        "Commands received and handed to the handler.",
        p.commands_received,
    );
    e.counter(
        "themis_endpoint_commands_dropped_busy_total",
        "Commands dropped because all handlers were busy.",
        p.commands_dropped_busy,
    );
    e.counter(
        "themis_endpoint_bytes_out_total",
        "Frame bytes sent.",
        p.bytes_out,
    );
    e.counter(
        "themis_endpoint_bytes_in_total",
        "Frame bytes received.",
        p.bytes_in,
    );
    e.gauge(
        "themis_endpoint_in_flight",
        "Requests awaiting their response.",
        p.in_flight,
    );
    e.gauge(
        "themis_endpoint_sessions",
        "Peers with a live session (secure) or channel (insecure).",
        p.sessions,
    );
    e.counter(
        "themis_endpoint_sessions_dropped_total",
        "Sessions dropped (peer lost it, eviction, expiry).",
        p.sessions_dropped,
    );
    e.gauge(
        "themis_transport_connections_open",
        "Peer connections open now (TCP).",
        p.transport.connections_open,
    );
    e.counter(
        "themis_transport_connections_opened_total",
        "Connections established, dialed and accepted (TCP).",
        p.transport.connections_opened,
    );
    e.counter(
        "themis_transport_connect_failed_total",
        "Dial attempts that failed or timed out (TCP).",
        p.transport.connect_failed,
    );
    let mut resp = e.finish().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_help_and_type_lines_before_its_samples() {
        let mut e = Exposition::default();
        e.counter("themis_a_total", "A.", 3);
        e.gauge("themis_b", "B.", 4);
        e.labelled("themis_c_total", "C.", "outcome", &outcome(1, 2));
        let text = e.finish();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "# HELP themis_a_total A.",
                "# TYPE themis_a_total counter",
                "themis_a_total 3",
                "# HELP themis_b B.",
                "# TYPE themis_b gauge",
                "themis_b 4",
                "# HELP themis_c_total C.",
                "# TYPE themis_c_total counter",
                "themis_c_total{outcome=\"ok\"} 1",
                "themis_c_total{outcome=\"error\"} 2",
            ]
        );
    }
}
