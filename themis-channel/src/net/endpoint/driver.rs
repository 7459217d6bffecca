//! The driver task: owns the sans-I/O [`EndpointCore`] and feeds it frames, requests, answers
//! and timeouts, each with `now` from tokio's clock; carries out its transmits and events.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use themis_crypto::{NodeId, PublicKey};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::outbox::Outbox;
use super::{CommandResponder, Handler, IncomingCommand, PeerAddr, Shared};
use crate::proto::endpoint::{CommandToken, EndpointCore, Event, RequestId};
use crate::{Error, TransportError};

/// Inputs handled in one step after the one that woke the task, per source: each source gets
/// its turn every step (no starvation), and the transmits of a step go out together.
const BATCH: usize = 64;

/// The time the core sees: tokio's clock, so that tests with a paused clock are deterministic.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// A call from a handle, on the bounded queue (the callers wait when it is full).
pub(crate) enum Command {
    Request {
        peer: PeerAddr,
        payload: Bytes,
        reply: oneshot::Sender<Result<Bytes, Error>>,
        ticket: u64,
    },
    Identify {
        addr: std::net::SocketAddr,
        reply: oneshot::Sender<Result<(NodeId, PublicKey), Error>>,
        ticket: u64,
    },
}

/// A message that must not wait: answers to commands, a caller giving up, shutdown. Each is
/// bounded by what it refers to (a responder, a request, the endpoint).
pub(crate) enum Ctl {
    Respond(CommandToken, Bytes),
    Abandon(CommandToken),
    Cancel(u64),
    Close,
}

/// Someone waiting for an outcome.
enum Reply {
    Request(oneshot::Sender<Result<Bytes, Error>>),
    Identify(oneshot::Sender<Result<(NodeId, PublicKey), Error>>),
}

pub(crate) struct Driver {
    core: EndpointCore,
    shared: Arc<Shared>,
    handler: Arc<dyn Handler>,
    commands: mpsc::Receiver<Command>,
    ctl: mpsc::UnboundedReceiver<Ctl>,
    waiters: HashMap<RequestId, (u64, Reply)>,
    tickets: HashMap<u64, RequestId>,
    outbox: Outbox,
    transport_closed: bool,
}

impl Driver {
    pub(crate) fn new(
        core: EndpointCore,
        shared: Arc<Shared>,
        handler: Arc<dyn Handler>,
        commands: mpsc::Receiver<Command>,
        ctl: mpsc::UnboundedReceiver<Ctl>,
    ) -> Self {
        Self {
            core,
            outbox: Outbox::new(shared.transport.clone()),
            shared,
            handler,
            commands,
            ctl,
            waiters: HashMap::new(),
            tickets: HashMap::new(),
            transport_closed: false,
        }
    }

    /// Runs until the endpoint is shut down or its last handle dropped; then fails whatever
    /// still waits.
    pub(crate) async fn run(mut self) {
        let cancel = self.shared.cancel.clone();
        let cancelled = cancel.cancelled();
        tokio::pin!(cancelled);
        let transport = self.shared.transport.clone();
        let sleep = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        while !self.transport_closed {
            let next = self.core.poll_timeout();
            if next != armed {
                if let Some(t) = next {
                    sleep.as_mut().reset(t.into());
                }
                armed = next;
            }
            let accept = self.core.can_accept_request();
            // Biased: the same inputs in the same order give the same run (seeded simulations).
            tokio::select! {
                biased;
                () = &mut cancelled => break,
                Some(c) = self.ctl.recv() => self.on_ctl(c),
                r = transport.recv() => self.on_recv(r),
                Some(n) = self.outbox.next(), if !self.outbox.is_idle() => self.outbox.done(n),
                () = &mut sleep, if armed.is_some() => {
                    armed = None;
                    self.core.handle_timeout(now());
                }
                Some(c) = self.commands.recv(), if accept => self.on_command(c),
            }
            self.drain_ready();
            self.flush();
        }
        self.core.abort();
        self.flush();
    }

    /// Takes what else is ready without waiting, a bounded number from each source in turn.
    fn drain_ready(&mut self) {
        for _ in 0..BATCH {
            let mut progressed = false;
            if let Ok(c) = self.ctl.try_recv() {
                self.on_ctl(c);
                progressed = true;
            }
            if !self.transport_closed
                && let Some(r) = self.shared.transport.recv().now_or_never()
            {
                self.on_recv(r);
                progressed = true;
            }
            if self.core.can_accept_request()
                && let Ok(c) = self.commands.try_recv()
            {
                self.on_command(c);
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        if self.core.poll_timeout().is_some_and(|t| t <= now()) {
            self.core.handle_timeout(now());
        }
    }

    fn on_recv(&mut self, r: Result<(std::net::SocketAddr, BytesMut), TransportError>) {
        match r {
            Ok((from, frame)) => self.core.handle(now(), from, frame),
            Err(TransportError::Closed) => self.transport_closed = true,
            Err(e) => tracing::debug!(error = %e, "receive failed"),
        }
    }

    fn on_command(&mut self, c: Command) {
        let t = now();
        let (id, ticket, reply) = match c {
            // A caller that gave up while its request was queued: nothing to start.
            Command::Request { reply, .. } if reply.is_closed() => return,
            Command::Identify { reply, .. } if reply.is_closed() => return,
            Command::Request {
                peer,
                payload,
                reply,
                ticket,
            } => (
                self.core.request(t, peer, payload),
                ticket,
                Reply::Request(reply),
            ),
            Command::Identify {
                addr,
                reply,
                ticket,
            } => (self.core.identify(t, addr), ticket, Reply::Identify(reply)),
        };
        self.tickets.insert(ticket, id);
        self.waiters.insert(id, (ticket, reply));
    }

    fn on_ctl(&mut self, c: Ctl) {
        match c {
            Ctl::Respond(token, response) => self.core.respond(now(), token, &response),
            Ctl::Abandon(token) => self.core.abandon(token),
            Ctl::Cancel(ticket) => {
                if let Some(id) = self.tickets.remove(&ticket) {
                    self.waiters.remove(&id);
                    self.core.cancel(now(), id);
                }
            }
            Ctl::Close => self.core.close(),
        }
    }

    /// Publishes the counters, then sends the core's frames and hands out its events: whatever
    /// leaves the task is seen with the counters of the state that produced it.
    fn flush(&mut self) {
        let mut m = self.core.metrics();
        m.bytes_out = self.outbox.bytes_out();
        self.shared.publish(m);
        while let Some(t) = self.core.poll_transmit() {
            self.outbox.send(t);
        }
        while let Some(e) = self.core.poll_event() {
            self.deliver(e);
        }
    }

    fn deliver(&mut self, e: Event) {
        match e {
            Event::Response { id, result } => {
                if let Some((ticket, Reply::Request(tx))) = self.waiters.remove(&id) {
                    self.tickets.remove(&ticket);
                    let _ = tx.send(result);
                }
            }
            Event::Identity { id, result } => {
                if let Some((ticket, Reply::Identify(tx))) = self.waiters.remove(&id) {
                    self.tickets.remove(&ticket);
                    let _ = tx.send(result);
                }
            }
            Event::Command {
                token,
                from,
                request,
            } => {
                let responder = CommandResponder::new(from, token, self.shared.ctl.clone());
                let command = IncomingCommand { request, responder };
                self.dispatch(command);
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
        tokio::spawn(
            async move {
                let response = handler.handle(from, request).await;
                responder.respond(response);
            }
            .instrument(span),
        );
    }
}
