//! The driver: the sans-I/O [`EndpointCore`] behind a short-held lock, as quinn holds its
//! `quinn_proto::Connection` (see the module documentation of `super` for why not a task).
//!
//! Every input — a frame from the transport (on the transport's reader task, through its
//! sink, or on the receive task), a request or an answer from the application, a timeout on the
//! timer task — locks the core, hands it the input with `now`, and takes what it produced
//! (frames, outcomes, commands) out of it, queueing the frames in the order the core made them;
//! the lock is then released, and only then are the frames sent (by one thread at a time, in
//! that order), the outcomes handed to the waiting callers and the commands to the handler. No
//! protocol rule lives here, and nothing waits while holding the lock.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use foldhash::{HashMap, HashMapExt as _};
use smallvec::SmallVec;
use themis_crypto::{NodeId, PublicKey};
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{CommandResponder, EndpointConfig, Handler, IncomingCommand, PeerAddr};
use crate::proto::endpoint::{CommandToken, EndpointCore, EndpointMetrics, Event, Transmit};
use crate::{Error, Mode, Transport, TransportError};

/// The time the core sees: tokio's clock, so that tests with a paused clock are deterministic.
pub(super) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Someone waiting for an outcome.
pub(super) enum Reply {
    Request(oneshot::Sender<Result<Bytes, Error>>),
    Identify(oneshot::Sender<Result<(NodeId, PublicKey), Error>>),
}

/// What the lock protects: the core, and who waits for its outcomes.
pub(super) struct State {
    pub(super) core: EndpointCore,
    pub(super) waiters: HashMap<crate::proto::endpoint::RequestId, Reply>,
    /// The instant the timer task sleeps until.
    armed: Option<Instant>,
}

/// What one call into the core produced, carried out once the lock is released. Nearly every
/// call produces one frame and one outcome or command: held inline, they cost no allocation.
#[derive(Default)]
struct Output {
    transmits: SmallVec<[Transmit; 2]>,
    replies: SmallVec<[(Reply, Event); 1]>,
    commands: SmallVec<[(CommandToken, PeerAddr, Bytes); 1]>,
    wake_timer: bool,
    room: bool,
    /// Frames were queued: send them.
    flush: bool,
}

/// The endpoint's shared part: the handles, the responders, the transport's sink and the
/// tasks all reach the core through it.
pub(crate) struct Shared {
    pub(super) local_id: NodeId,
    pub(super) mode: Mode,
    pub(super) config: EndpointConfig,
    pub(super) transport: Arc<dyn Transport>,
    handler: Arc<dyn Handler>,
    state: Mutex<State>,
    /// Wakes the timer task when the core's next timeout comes earlier than it sleeps.
    timer: Notify,
    /// Wakes requests waiting for the core to take more.
    pub(super) room: Notify,
    bytes_out: AtomicU64,
    backlog_dropped: AtomicU64,
    /// Frames on their way out, in the order the core produced them: see [`Shared::flush`].
    out: Mutex<Outgoing>,
    pub(super) closing: AtomicBool,
    /// The endpoint stopped: the transport's sink hands nothing over any more.
    stopped: AtomicBool,
    pub(super) cancel: CancellationToken,
}

impl Shared {
    pub(super) fn new(
        core: EndpointCore,
        config: EndpointConfig,
        transport: Arc<dyn Transport>,
        handler: Arc<dyn Handler>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            local_id: core.local_id(),
            mode: config.mode,
            config,
            transport,
            handler,
            state: Mutex::new(State {
                core,
                waiters: HashMap::new(),
                armed: None,
            }),
            timer: Notify::new(),
            room: Notify::new(),
            bytes_out: AtomicU64::new(0),
            backlog_dropped: AtomicU64::new(0),
            out: Mutex::new(Outgoing::default()),
            closing: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            cancel,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The core is never left half-updated by a panic in the driver (it only calls the
        // core's methods under the lock); keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the core under the lock, takes out what it produced, releases the lock, then
    /// sends the frames, hands out the outcomes and dispatches the commands.
    pub(super) fn with_core<R>(self: &Arc<Self>, f: impl FnOnce(&mut State) -> R) -> R {
        let (r, out) = {
            let mut st = self.lock();
            let could_accept = st.core.can_accept_request();
            let r = f(&mut st);
            let mut out = drain(&mut st, could_accept);
            // Queued before the core is released, so frames leave in the order the core made
            // them, whichever thread sends them.
            if !out.transmits.is_empty() {
                self.outgoing().queue.extend(out.transmits.drain(..));
                out.flush = true;
            }
            (r, out)
        };
        self.carry_out(out);
        r
    }

    /// A snapshot of the counters.
    pub(super) fn metrics(&self) -> EndpointMetrics {
        let mut m = self.lock().core.metrics();
        m.bytes_out = self.bytes_out.load(Ordering::Relaxed);
        m.frames_dropped_backlog = self.backlog_dropped.load(Ordering::Relaxed);
        m.transport = self.transport.stats();
        m
    }

    /// One frame from the peer listening at `from`.
    pub(super) fn on_frame(self: &Arc<Self>, from: SocketAddr, frame: BytesMut) {
        let loaded = self.transport.under_load();
        self.with_core(|st| {
            st.core.set_transport_loaded(loaded);
            st.core.handle(now(), from, frame);
        });
    }

    /// Stops: fails whatever still waits, and takes no more frames from the transport.
    fn stop(self: &Arc<Self>) {
        self.stopped.store(true, Ordering::Release);
        self.with_core(|st| st.core.abort());
    }

    fn carry_out(self: &Arc<Self>, out: Output) {
        if out.flush {
            self.flush();
        }
        for (reply, event) in out.replies {
            match (reply, event) {
                (Reply::Request(tx), Event::Response { result, .. }) => {
                    let _ = tx.send(result);
                }
                (Reply::Identify(tx), Event::Identity { result, .. }) => {
                    let _ = tx.send(result);
                }
                _ => {}
            }
        }
        for (token, from, request) in out.commands {
            let responder = CommandResponder::new(self.clone(), from, token);
            self.dispatch(IncomingCommand { request, responder });
        }
        if out.wake_timer {
            self.timer.notify_one();
        }
        if out.room {
            self.room.notify_waiters();
        }
    }

    fn outgoing(&self) -> MutexGuard<'_, Outgoing> {
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends the queued frames, in the order the core produced them, unless another thread is
    /// already doing so (it sends ours too). The core relies on that order: message 3 goes
    /// before the command it precedes, and a command overtaken by more than the peer's replay
    /// window (2,048 later commands) is refused as too old, its request lost. Sending straight
    /// after releasing the core's lock did not keep it: a thread preempted between the two for
    /// a few milliseconds let thousands of commands of other threads overtake its own.
    ///
    /// A frame goes to the transport at once while it takes frames without waiting; once it
    /// cannot take one, that frame and every later one for the same destination wait in the
    /// destination's backlog, which one task sends in order, waiting for room, until it is
    /// empty. A backlog holds at most [`BACKLOG_MAX`] frames; beyond, frames are dropped and
    /// counted (what they carry is lost to its timeout).
    fn flush(self: &Arc<Self>) {
        let mut out = self.outgoing();
        if out.flushing {
            return;
        }
        out.flushing = true;
        while let Some(t) = out.queue.pop_front() {
            if let Some(waiting) = out.backlog.get_mut(&t.to) {
                if waiting.len() < BACKLOG_MAX {
                    waiting.push_back(t.frame);
                } else {
                    self.backlog_dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(to = %t.to, "send backlog full: frame dropped");
                }
                continue;
            }
            // Only the flusher adds backlogs, so none appears for `t.to` meanwhile.
            drop(out);
            let len = t.frame.len() as u64;
            let sent = self.transport.try_send(t.to, t.frame);
            out = self.outgoing();
            match sent {
                Ok(()) => {
                    self.bytes_out.fetch_add(len, Ordering::Relaxed);
                }
                Err(frame) => {
                    out.backlog.insert(t.to, VecDeque::from([frame]));
                    if !spawn(self.clone().drain_backlog(t.to)) {
                        // No runtime left to wait on: the endpoint is gone with it.
                        out.backlog.remove(&t.to);
                    }
                }
            }
        }
        out.flushing = false;
    }

    /// Sends `to`'s backlog in order, waiting for room in the transport, and removes it once
    /// empty (from then on frames for `to` go straight to the transport again).
    async fn drain_backlog(self: Arc<Self>, to: SocketAddr) {
        loop {
            let frame = {
                let mut out = self.outgoing();
                match out.backlog.get_mut(&to).and_then(VecDeque::pop_front) {
                    Some(f) => f,
                    None => {
                        out.backlog.remove(&to);
                        return;
                    }
                }
            };
            let len = frame.len() as u64;
            match self.transport.send(to, frame).await {
                Ok(()) => {
                    self.bytes_out.fetch_add(len, Ordering::Relaxed);
                }
                Err(e) => tracing::debug!(%to, error = %e, "send failed"),
            }
        }
    }

    /// Hands a command to the handler's fast path, or runs [`Handler::handle`] for it on a
    /// task of its own and answers with its return value.
    fn dispatch(&self, command: IncomingCommand) {
        let Err(command) = self.handler.try_dispatch(command) else {
            return;
        };
        let (from, request, responder) = command.into_parts();
        let handler = self.handler.clone();
        let span = tracing::debug_span!("handle", peer = %from.id.short());
        spawn(
            async move {
                let response = handler.handle(from, request).await;
                responder.respond(response);
            }
            .instrument(span),
        );
    }
}

/// Most frames waiting for one destination (see [`Shared::flush`]). The core produces at
/// most a few per request in flight and per handler running, so this is a bound against a bug
/// or a stuck transport, not a limit reached in service.
const BACKLOG_MAX: usize = 8192;

/// Frames on their way out (see [`Shared::flush`]).
#[derive(Default)]
struct Outgoing {
    /// Made by the core, not yet handed to the transport or a backlog.
    queue: VecDeque<Transmit>,
    /// A thread is sending the queue.
    flushing: bool,
    /// Per destination, frames waiting for room in its full transport queue.
    backlog: HashMap<SocketAddr, VecDeque<Bytes>>,
}

/// Takes out of the core what it produced: frames, outcomes (with their waiters), commands,
/// whether the timer must wake earlier and whether requests may be taken again.
fn drain(st: &mut State, could_accept: bool) -> Output {
    let mut out = Output::default();
    while let Some(t) = st.core.poll_transmit() {
        out.transmits.push(t);
    }
    while let Some(e) = st.core.poll_event() {
        match e {
            Event::Response { id, .. } | Event::Identity { id, .. } => {
                if let Some(reply) = st.waiters.remove(&id) {
                    out.replies.push((reply, e));
                }
            }
            Event::Command {
                token,
                from,
                request,
            } => out.commands.push((token, from, request)),
        }
    }
    let next = st.core.poll_timeout();
    if next.is_some() && st.armed.is_none_or(|a| next < Some(a)) {
        st.armed = next;
        out.wake_timer = true;
    }
    out.room = !could_accept && st.core.can_accept_request();
    out
}

/// Spawns on the current runtime, if there is one (a responder or a request dropped after the
/// runtime ended has nothing left to send); whether it did.
fn spawn<F>(f: F) -> bool
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(f);
            true
        }
        Err(_) => false,
    }
}

/// Runs the core's timers.
pub(super) async fn timer_loop(shared: Arc<Shared>) {
    let cancelled = shared.cancel.cancelled();
    tokio::pin!(cancelled);
    loop {
        let next = shared.lock().armed;
        tokio::select! {
            biased;
            () = &mut cancelled => break,
            () = shared.timer.notified() => {}
            () = sleep_until(next) => {
                shared.with_core(|st| {
                    st.armed = None;
                    st.core.handle_timeout(now());
                });
            }
        }
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// Reads the frames the transport does not hand to its sink, until the endpoint stops; then
/// stops it.
pub(super) async fn recv_loop(shared: Arc<Shared>) {
    // Made once, not per frame: each `cancelled()` registers with the token's waiter list.
    let cancelled = shared.cancel.cancelled();
    tokio::pin!(cancelled);
    loop {
        let r = tokio::select! {
            () = &mut cancelled => break,
            r = shared.transport.recv() => r,
        };
        match r {
            Ok((from, frame)) => shared.on_frame(from, frame),
            Err(TransportError::Closed) => break,
            Err(e) => tracing::debug!(error = %e, "receive failed"),
        }
    }
    shared.stop();
}

/// Hands the frames of the transport's reader tasks straight to the core (one task hop less per
/// frame, see `Transport::set_sink`). Weak: the transport belongs to the endpoint.
pub(super) fn install_sink(shared: &Arc<Shared>) {
    let weak = Arc::downgrade(shared);
    shared.transport.set_sink(Arc::new(move |from, frame| {
        if let Some(s) = weak.upgrade()
            && !s.stopped.load(Ordering::Acquire)
        {
            s.on_frame(from, frame);
        }
    }));
}

/// Tells the core about peers whose address refused a connection (see
/// `Transport::set_refused_sink`), so that what waits for them fails at once. Weak, as
/// [`install_sink`].
pub(super) fn install_refused_sink(shared: &Arc<Shared>) {
    let weak = Arc::downgrade(shared);
    shared
        .transport
        .set_refused_sink(Arc::new(move |addr, dropped| {
            if let Some(s) = weak.upgrade()
                && !s.stopped.load(Ordering::Acquire)
            {
                s.with_core(|st| st.core.handle_refused(now(), addr, &dropped));
            }
        }));
}
