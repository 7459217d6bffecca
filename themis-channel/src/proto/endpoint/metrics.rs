//! The endpoint's counters: plain numbers in the core, read as a snapshot ([`EndpointMetrics`]).

use crate::TransportStats;

macro_rules! metrics {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// A snapshot of an endpoint's counters (monotonic unless marked as a gauge), with its
        /// transport's counters in [`EndpointMetrics::transport`].
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct EndpointMetrics {
            $( $(#[$doc])* pub $name: u64, )*
            /// The transport's counters.
            pub transport: TransportStats,
        }

        /// The core's counters; the gauges are filled in by [`Counters::snapshot`]'s caller.
        #[derive(Debug, Default, Clone)]
        pub(crate) struct Counters {
            $( pub(crate) $name: u64, )*
        }

        impl Counters {
            pub(crate) fn snapshot(&self) -> EndpointMetrics {
                EndpointMetrics {
                    $( $name: self.$name, )*
                    transport: TransportStats::default(),
                }
            }
        }
    };
}

metrics! {
    /// Handshakes completed as initiator.
    handshakes_initiated_ok,
    /// Handshakes completed as responder.
    handshakes_accepted_ok,
    /// Handshakes we started that timed out.
    handshakes_failed_timeout,
    /// Handshakes we started that met another identity at the address.
    handshakes_failed_identity,
    /// Handshakes we started that met a peer in the other mode.
    handshakes_failed_mode,
    /// Handshake messages refused as malformed, mis-addressed, of another network, or with a
    /// bad signature / key confirmation.
    handshakes_rejected_invalid,
    /// Messages 1 refused because the pending table was full (a handshake flood).
    handshakes_rejected_busy,
    /// Messages 2 and 3 for no handshake in progress here (late duplicates, forgeries).
    handshakes_rejected_unknown,
    /// Messages 1 refused because their source prefix (/32, /64) already had
    /// `pending_per_source` handshakes pending here (a flood from one host).
    handshakes_rejected_source,
    /// Cookie replies sent: messages 1 answered with a cookie because we were under load.
    cookies_sent,
    /// Cookie replies believed (for a handshake of ours, from its address) and echoed.
    cookies_received,
    /// Cookie echoes whose cookie verified; their message 1 was then processed.
    cookie_echoes_accepted,
    /// Cookie echoes refused: malformed, or a cookie that does not verify for the source
    /// address and `N_A` under the current or previous secret.
    cookie_echoes_rejected,
    /// Gauge: responder handshakes pending (waiting for message 3, expired ones until purged).
    pending_handshakes,
    /// Gauge: source prefixes holding a pending responder handshake.
    pending_sources,
    /// Frames refused as garbage: unknown type, truncated, bad version, malformed control.
    frames_rejected_malformed,
    /// Channel frames that failed authentication.
    frames_rejected_auth,
    /// Channel frames refused as replays, duplicates or too old (retransmissions included).
    frames_rejected_replay,
    /// Channel frames naming a session (or insecure sender) we do not have.
    frames_rejected_unknown_session,
    /// Frames of the other mode.
    frames_rejected_mode,
    /// Other channel rejections (unsolicited response, expired session, ...).
    frames_rejected_other,
    /// Commands dropped because `max_handlers` handlers were already running (over a reliable
    /// transport: authenticated, then refused with a busy control message).
    commands_dropped_busy,
    /// Requests that failed fast because the peer answered busy ([`Error::PeerBusy`]).
    ///
    /// [`Error::PeerBusy`]: crate::Error::PeerBusy
    requests_refused_busy,
    /// Unauthenticated replies not sent because of the rate limit.
    control_rate_limited,
    /// Control messages sent.
    control_sent,
    /// Control messages received and acted upon.
    control_received,
    /// Requests started by `request`.
    requests_sent,
    /// Requests answered.
    requests_ok,
    /// Requests that failed (timeouts included).
    requests_failed,
    /// Requests that timed out.
    requests_timed_out,
    /// Frames sent again after a retransmission timeout (requests and handshake messages).
    retransmissions,
    /// Responses re-sent from the response cache for a retransmitted command.
    responses_resent,
    /// Commands received and handed to the handler.
    commands_received,
    /// Frame bytes sent.
    bytes_out,
    /// Frames dropped unsent because their destination's send backlog (frames waiting, in
    /// order, for room in a full transport queue) was full; the requests or responses they
    /// carried are lost to their timeouts.
    frames_dropped_backlog,
    /// Frame bytes received.
    bytes_in,
    /// Gauge: requests awaiting their response.
    in_flight,
    /// Gauge: handlers running.
    handlers_running,
    /// Gauge: peers with a live session (secure) or channel (insecure).
    sessions,
    /// Sessions dropped: peer reported it lost the session, eviction, expiry.
    sessions_dropped,
}
