//! What a call carries and what an attempt's outcome means (issue 12): the caller's options
//! (idempotent, hops), the provider handler's context and its kinds of failure, and the
//! classification of each attempt's outcome into "answer", "failover" or "give up".

use std::time::Duration;

use bytes::Bytes;
use themis_channel::Error as ChannelError;
use themis_crypto::NodeId;

use super::wire::{CallResponse, MAX_HOPS};
use crate::RemoteErrorKind;

/// Options of one call ([`MeshNode::call_with`](super::MeshNode::call_with)). Start from
/// `CallOptions::default()` (not idempotent, not nested).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallOptions {
    /// The call may run twice without harm (a read, or a write of a whole value): it is failed
    /// over to another provider after any failure. A call that is not idempotent is failed
    /// over only when it surely did not run (never sent, refused before dispatch, busy,
    /// connection refused); after a timeout or a handler failure it ends with that error.
    pub idempotent: bool,
    /// Calls this one is nested in: a handler that calls another service passes its own
    /// [`CallContext::hops`] `+ 1`. Above [`MAX_HOPS`] the call is refused with
    /// [`Error::HopLimit`](crate::Error::HopLimit) (loop protection).
    pub hops: u8,
    /// The longest the whole call may take, discovery and failover included (none: the
    /// bounds of [`MeshNode::call`](super::MeshNode::call)). Each attempt carries the time left
    /// to the provider, which cuts its handler there; at the end the call fails with
    /// [`Error::DeadlineExceeded`](crate::Error::DeadlineExceeded). An idempotent call that
    /// could still go to another provider gives each attempt half the time left, so a provider
    /// that went silent (a black hole) cannot use up the whole deadline.
    pub timeout: Option<Duration>,
    /// The request is an HTTP request envelope and the answer will be an HTTP response
    /// envelope (PROTOCOL.md §7.8; the agent's transparent sidecar). A provider whose handler
    /// does not take HTTP envelopes refuses the call unrun.
    pub http: bool,
}

impl CallOptions {
    /// Marks the call idempotent (see [`CallOptions::idempotent`]).
    pub fn idempotent(mut self, yes: bool) -> Self {
        self.idempotent = yes;
        self
    }

    /// Sets the hop count (see [`CallOptions::hops`]).
    pub fn hops(mut self, hops: u8) -> Self {
        self.hops = hops;
        self
    }

    /// Marks the request an HTTP envelope (see [`CallOptions::http`]).
    pub fn http(mut self, yes: bool) -> Self {
        self.http = yes;
        self
    }

    /// Sets the call's deadline (see [`CallOptions::timeout`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// What a provider's handler knows about the call it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallContext {
    /// The caller: the id the endpoint authenticated (secure mode; a claim in insecure mode).
    pub caller: NodeId,
    /// Calls this one is nested in (0: the caller was not serving a call). A handler that calls
    /// another service passes `hops + 1` in its [`CallOptions`].
    pub hops: u8,
    /// The time the caller still waited for the call when it sent it (none: it did not say).
    /// The provider cuts the handler there; a handler passes on what is left of it (to its
    /// upstream, or as the [`CallOptions::timeout`] of its own calls).
    pub budget: Option<Duration>,
    /// The request is an HTTP request envelope (PROTOCOL.md §7.8): the handler answers with an
    /// HTTP response envelope, or refuses with [`HandlerError::Unsupported`].
    pub http: bool,
}

impl CallContext {
    /// The context of a call from `caller` nested in `hops` calls, with no budget, not HTTP.
    pub fn new(caller: NodeId, hops: u8) -> Self {
        Self {
            caller,
            hops,
            budget: None,
            http: false,
        }
    }

    /// The same context, with the request an HTTP envelope or not.
    pub fn with_http(mut self, http: bool) -> Self {
        self.http = http;
        self
    }

    /// The same context with the caller's `budget`.
    pub fn with_budget(mut self, budget: Option<Duration>) -> Self {
        self.budget = budget;
        self
    }
}

/// How a handler's call went wrong; the caller tells a provider-side failure (it counts against
/// the provider and may fail over) from a caller error (the provider is healthy).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandlerError {
    /// The handler failed after it started (it ran, or may have): kind `handler failure`.
    Failed(String),
    /// The handler could not reach the application behind it (its upstream refused the
    /// connection): the call did not run, and the caller may send it elsewhere.
    Unreachable(String),
    /// The application did not answer in time: the call may have run.
    TimedOut(String),
    /// The service is at its concurrency limit: the call did not run.
    Busy(String),
    /// The application refused the request (a caller error, such as an HTTP 4xx): the
    /// provider is healthy; `code` and `body` go back to the caller as they are.
    Rejected {
        /// The application's code (a sidecar's: the upstream's HTTP status).
        code: u16,
        /// The application's answer.
        body: Bytes,
    },
    /// The application failed and answered (an HTTP 5xx of a sidecar's upstream, to an HTTP
    /// call): a provider failure like [`HandlerError::Failed`], whose `code` and `body` reach
    /// the caller if it does not fail over.
    FailedWith {
        /// The application's code (a sidecar's: the upstream's HTTP status).
        code: u16,
        /// The application's answer (an HTTP response envelope).
        body: Bytes,
    },
    /// The handler does not take this kind of call (an HTTP envelope to a handler that is not
    /// an HTTP sidecar): refused unrun, as a malformed call.
    Unsupported(String),
}

impl From<String> for HandlerError {
    fn from(message: String) -> Self {
        Self::Failed(message)
    }
}

impl HandlerError {
    /// The response that carries it (PROTOCOL.md §7.3).
    pub(crate) fn into_response(self) -> CallResponse {
        let error = |kind, message| CallResponse::Error { kind, message };
        match self {
            Self::Failed(m) => error(RemoteErrorKind::Handler, m),
            Self::Unreachable(m) => error(RemoteErrorKind::Unreachable, m),
            Self::TimedOut(m) => error(RemoteErrorKind::Timeout, m),
            Self::Busy(m) => error(RemoteErrorKind::Busy, m),
            Self::Rejected { code, body } => CallResponse::Rejected { code, body },
            Self::FailedWith { code, body } => CallResponse::Failed { code, body },
            Self::Unsupported(m) => error(RemoteErrorKind::Malformed, m),
        }
    }
}

/// What one attempt's outcome means for the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A definite answer from a healthy provider (success, access denied, rejected, hop
    /// limit): report a success sample, end the call.
    Answer,
    /// The provider failed and the call surely did not run: report a failure, fail over.
    FailoverSafe,
    /// The provider failed and the call may have run: report a failure; fail over only if the
    /// call is idempotent.
    FailoverIfIdempotent,
}

/// The verdict on a provider's decoded answer.
pub(crate) fn judge_response(r: &CallResponse) -> Verdict {
    match r {
        CallResponse::Ok(_) | CallResponse::Rejected { .. } => Verdict::Answer,
        // The application failed (with an answer): it ran.
        CallResponse::Failed { .. } => Verdict::FailoverIfIdempotent,
        CallResponse::Error { kind, .. } => match kind {
            RemoteErrorKind::AccessDenied | RemoteErrorKind::HopLimit => Verdict::Answer,
            // The provider does not serve it (any more), could not parse it, could not reach
            // its application, or was busy: the call did not run.
            RemoteErrorKind::UnknownService
            | RemoteErrorKind::Malformed
            | RemoteErrorKind::Unreachable
            | RemoteErrorKind::Busy => Verdict::FailoverSafe,
            _ => Verdict::FailoverIfIdempotent,
        },
    }
}

/// The verdict on an attempt that got no answer.
pub(crate) fn judge_channel_error(e: &ChannelError) -> Verdict {
    use ChannelError as E;
    match e {
        // The command was never sent, or the peer refused it unexecuted.
        E::PeerUnreachable { .. }
        | E::PeerBusy { .. }
        | E::HandshakeTimeout { .. }
        | E::Handshake { .. }
        | E::IdentityMismatch { .. }
        | E::NotAdmitted { .. }
        | E::ModeMismatch { .. }
        | E::TooManySessions { .. }
        | E::Overloaded { .. }
        | E::SelfRequest(_)
        | E::Transport(_)
        | E::PayloadTooLarge { .. }
        | E::SessionExhausted { .. }
        | E::SessionExpired { .. }
        // The peer answered UNKNOWN_SESSION: it did not open the command.
        | E::SessionLost { .. } => Verdict::FailoverSafe,
        // Sent, and no answer (a timeout, the connection lost): it may have run.
        _ => Verdict::FailoverIfIdempotent,
    }
}

/// How long one attempt of a call with `left` before its deadline may take (issue 12,
/// deadlines): all of `left` when the call could not be sent elsewhere after a timeout (it is
/// not idempotent, or no other provider and attempt is left); otherwise half of it, so that a
/// provider that went silent (a black hole: no refusal, no reset, no answer) leaves the other
/// half to another provider instead of using up the whole deadline.
pub(crate) fn attempt_limit(left: Duration, idempotent: bool, another: bool) -> Duration {
    if idempotent && another {
        left / 2
    } else {
        left
    }
}

/// The hop limit, checked by the caller before it sends and by the provider before it runs.
pub(crate) fn over_hop_limit(hops: u8) -> bool {
    hops > MAX_HOPS
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn err(kind: RemoteErrorKind) -> CallResponse {
        CallResponse::Error {
            kind,
            message: String::new(),
        }
    }

    #[test]
    fn only_calls_that_surely_did_not_run_fail_over_unconditionally() {
        use RemoteErrorKind as K;
        assert_eq!(
            judge_response(&CallResponse::Ok(Bytes::new())),
            Verdict::Answer
        );
        let rejected = CallResponse::Rejected {
            code: 404,
            body: Bytes::new(),
        };
        assert_eq!(judge_response(&rejected), Verdict::Answer);
        let failed = CallResponse::Failed {
            code: 503,
            body: Bytes::new(),
        };
        assert_eq!(judge_response(&failed), Verdict::FailoverIfIdempotent);
        for k in [K::AccessDenied, K::HopLimit] {
            assert_eq!(judge_response(&err(k)), Verdict::Answer, "{k}");
        }
        for k in [K::UnknownService, K::Malformed, K::Unreachable, K::Busy] {
            assert_eq!(judge_response(&err(k)), Verdict::FailoverSafe, "{k}");
        }
        for k in [K::Handler, K::Timeout, K::Other(0x42)] {
            assert_eq!(
                judge_response(&err(k)),
                Verdict::FailoverIfIdempotent,
                "{k}"
            );
        }
        let id = NodeId::from_bytes([1; 32]);
        let addr = "127.0.0.1:1".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(
            judge_channel_error(&ChannelError::PeerUnreachable { peer: id, addr }),
            Verdict::FailoverSafe
        );
        assert_eq!(
            judge_channel_error(&ChannelError::PeerBusy { peer: id, addr }),
            Verdict::FailoverSafe
        );
        for e in [
            ChannelError::RequestTimeout {
                peer: id,
                addr,
                after: Duration::from_secs(5),
            },
            ChannelError::ConnectionLost { peer: id, addr },
        ] {
            assert_eq!(
                judge_channel_error(&e),
                Verdict::FailoverIfIdempotent,
                "{e}"
            );
        }
    }

    #[test]
    fn an_attempt_leaves_half_the_deadline_only_to_a_call_that_can_fail_over() {
        let left = Duration::from_millis(800);
        assert_eq!(attempt_limit(left, true, true), Duration::from_millis(400));
        assert_eq!(attempt_limit(left, false, true), left);
        assert_eq!(attempt_limit(left, true, false), left);
        assert_eq!(attempt_limit(left, false, false), left);
    }

    #[test]
    fn handler_errors_travel_as_their_kinds() {
        use RemoteErrorKind as K;
        let kind = |e: HandlerError| match e.into_response() {
            CallResponse::Error { kind, .. } => Some(kind),
            _ => None,
        };
        assert_eq!(kind("x".to_owned().into()), Some(K::Handler));
        assert_eq!(
            kind(HandlerError::Unreachable("x".into())),
            Some(K::Unreachable)
        );
        assert_eq!(kind(HandlerError::TimedOut("x".into())), Some(K::Timeout));
        assert_eq!(kind(HandlerError::Busy("x".into())), Some(K::Busy));
        assert_eq!(
            kind(HandlerError::Unsupported("x".into())),
            Some(K::Malformed)
        );
        assert_eq!(
            HandlerError::Rejected {
                code: 401,
                body: Bytes::from_static(b"who?")
            }
            .into_response(),
            CallResponse::Rejected {
                code: 401,
                body: Bytes::from_static(b"who?")
            }
        );
        assert!(!over_hop_limit(MAX_HOPS) && over_hop_limit(MAX_HOPS + 1));
    }
}
