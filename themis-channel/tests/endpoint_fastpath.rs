//! The handler's fast path (`Handler::try_dispatch` + `CommandResponder`): commands queued to an
//! application task and answered from there, over TCP, UDP and the lossy in-memory network;
//! the fallback to `handle`; responders dropped unanswered; shutdown waiting for them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use themis_channel::{
    CommandResponder, Endpoint, EndpointConfig, Error, Handler, IncomingCommand, PeerAddr,
};
use themis_testkit::channel::endpoint::*;
use themis_testkit::{
    LinkConfig, MemConfig, MemNetwork, eventually, eventually_ok, paused_runtime, within,
};
use tokio::sync::mpsc;

/// Takes commands into a bounded queue while `accept` is set; gives them back otherwise (or
/// when the queue is full), and then `handle` answers `"slow:" ‖ request`.
struct Queued {
    accept: AtomicBool,
    tx: mpsc::Sender<(PeerAddr, Bytes, CommandResponder)>,
    taken: AtomicU64,
}

#[async_trait]
impl Handler for Queued {
    async fn handle(&self, _from: PeerAddr, request: Bytes) -> Bytes {
        Bytes::from([b"slow:".as_slice(), &request].concat())
    }

    fn try_dispatch(&self, command: IncomingCommand) -> Result<(), IncomingCommand> {
        if !self.accept.load(Ordering::Relaxed) {
            return Err(command);
        }
        let Ok(slot) = self.tx.try_reserve() else {
            return Err(command);
        };
        let claimed = command.from();
        assert!(!command.request().is_empty());
        let (from, request, responder) = command.into_parts();
        assert_eq!(claimed, from);
        assert_eq!(responder.peer(), from);
        self.taken.fetch_add(1, Ordering::Relaxed);
        slot.send((from, request, responder));
        Ok(())
    }
}

type Queue = mpsc::Receiver<(PeerAddr, Bytes, CommandResponder)>;

fn queued(cap: usize) -> (Arc<Queued>, Queue) {
    let (tx, rx) = mpsc::channel(cap);
    let h = Arc::new(Queued {
        accept: AtomicBool::new(true),
        tx,
        taken: AtomicU64::new(0),
    });
    (h, rx)
}

type Seen = Arc<std::sync::Mutex<std::collections::HashMap<Vec<u8>, u32>>>;

/// The application task: answers `"q:" ‖ request`, counting executions per request.
fn serve(rx: Queue) -> tokio::task::JoinHandle<()> {
    serve_counting(rx, Seen::default())
}

fn serve_counting(mut rx: Queue, seen: Seen) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some((_, req, responder)) = rx.recv().await {
            *seen.lock().unwrap().entry(req.to_vec()).or_insert(0) += 1;
            responder.respond(Bytes::from([b"q:".as_slice(), &req].concat()));
        }
    })
}

async fn many(client: &Endpoint, server: PeerAddr, n: usize) -> Vec<Result<Bytes, Error>> {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let c = client.clone();
        set.spawn(async move { (i, c.request(&server, Bytes::from(format!("r{i}"))).await) });
    }
    let mut out: Vec<_> = set.join_all().await;
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

async fn check_fast_path(client: Endpoint, server: Endpoint, h: Arc<Queued>, rx: Queue) {
    let app = serve(rx);
    let rs = many(&client, server.local_peer(), 64).await;
    for (i, r) in rs.into_iter().enumerate() {
        assert_eq!(&r.unwrap()[..], format!("q:r{i}").as_bytes());
    }
    assert_eq!(h.taken.load(Ordering::Relaxed), 64);
    let m = server.metrics();
    assert_eq!(m.commands_received, 64);
    assert_eq!(m.handlers_running, 0, "every responder released its slot");
    client.shutdown().await;
    server.shutdown().await;
    drop(server);
    drop(h);
    app.abort();
}

#[tokio::test]
async fn tcp_commands_are_answered_from_the_application_task() {
    within(60, "tcp fast path", async {
        let (h, rx) = queued(1024);
        let server = tcp(1, quick(), h.clone()).await;
        let client = tcp(2, quick(), Arc::new(Echo::default())).await;
        check_fast_path(client, server, h, rx).await;
    })
    .await;
}

#[tokio::test]
async fn udp_commands_are_answered_from_the_application_task() {
    within(60, "udp fast path", async {
        let (h, rx) = queued(1024);
        let server = udp(3, quick(), h.clone()).await;
        let client = udp(4, quick(), Arc::new(Echo::default())).await;
        check_fast_path(client, server, h, rx).await;
    })
    .await;
}

#[tokio::test]
async fn a_handler_that_gives_commands_back_runs_handle() {
    within(60, "fallback", async {
        let (h, rx) = queued(1);
        h.accept.store(false, Ordering::Relaxed);
        let server = tcp(5, quick(), h.clone()).await;
        let client = tcp(6, quick(), Arc::new(Echo::default())).await;
        let peer = server.local_peer();
        let r = client
            .request(&peer, Bytes::from_static(b"a"))
            .await
            .unwrap();
        assert_eq!(&r[..], b"slow:a");
        // A full queue gives commands back too: none is lost, each is answered one way.
        h.accept.store(true, Ordering::Relaxed);
        let c = client.clone();
        let rs = tokio::spawn(async move { many(&c, peer, 20).await });
        // The queue (one slot) fills and stays full until the application starts.
        eventually(10, "a command waits in the queue", || {
            h.taken.load(Ordering::Relaxed) >= 1
        })
        .await;
        let app = serve(rx);
        let rs = rs.await.unwrap();
        for (i, r) in rs.into_iter().enumerate() {
            let r = r.unwrap();
            let (q, s) = (format!("q:r{i}"), format!("slow:r{i}"));
            assert!(r[..] == *q.as_bytes() || r[..] == *s.as_bytes(), "{r:?}");
        }
        assert!(h.taken.load(Ordering::Relaxed) >= 1);
        assert_eq!(server.metrics().handlers_running, 0);
        app.abort();
    })
    .await;
}

#[tokio::test]
async fn a_responder_dropped_unanswered_frees_its_slot_and_the_caller_times_out() {
    within(60, "dropped responder", async {
        let (h, mut rx) = queued(16);
        let mut cfg = quick();
        cfg.max_handlers = 1;
        let server = tcp(7, cfg, h.clone()).await;
        let client = tcp(8, quick(), Arc::new(Echo::default())).await;
        let peer = server.local_peer();
        let dropper = tokio::spawn(async move {
            let (_, _, responder) = rx.recv().await.unwrap();
            drop(responder);
            rx
        });
        let r = client.request(&peer, Bytes::from_static(b"x")).await;
        assert!(matches!(r, Err(Error::RequestTimeout { .. })), "{r:?}");
        let rx = dropper.await.unwrap();
        assert_eq!(server.metrics().handlers_running, 0);
        // The one handler slot is free again.
        let app = serve(rx);
        let r = client
            .request(&peer, Bytes::from_static(b"y"))
            .await
            .unwrap();
        assert_eq!(&r[..], b"q:y");
        app.abort();
    })
    .await;
}

#[tokio::test]
async fn shutdown_waits_for_a_taken_command_to_be_answered() {
    within(60, "shutdown", async {
        let (h, mut rx) = queued(16);
        let server = tcp(9, quick(), h.clone()).await;
        let client = tcp(10, quick(), Arc::new(Echo::default())).await;
        let peer = server.local_peer();
        let req = {
            let c = client.clone();
            tokio::spawn(async move { c.request(&peer, Bytes::from_static(b"late")).await })
        };
        let (_, req_bytes, responder) = rx.recv().await.unwrap();
        let s = server.clone();
        let stopping = tokio::spawn(async move { s.shutdown().await });
        eventually_ok(10, "the shutdown has begun", || async {
            match server.request(&client.local_peer(), Bytes::new()).await {
                Err(Error::ShuttingDown) => Ok(()),
                r => Err(format!("{r:?}")),
            }
        })
        .await;
        // A grace for a shutdown that would not wait to finish (it checks every 2 ms).
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!stopping.is_finished(), "shutdown waits for the responder");
        responder.respond(Bytes::from([b"q:".as_slice(), &req_bytes].concat()));
        stopping.await.unwrap();
        assert_eq!(&req.await.unwrap().unwrap()[..], b"q:late");
    })
    .await;
}

/// Lossy, duplicating links: retransmitted commands are answered from the response cache
/// that `CommandResponder::respond` fills, and every command runs exactly once; on every
/// network seed, no request fails (the endpoint core's `tests/lossy.rs` runs more seeds).
#[test]
fn over_a_lossy_network_each_command_runs_once_and_every_request_is_answered() {
    for seed in 1..=20 {
        paused_runtime().block_on(lossy_round(seed));
    }
}

/// 100 concurrent requests over a network of seed `seed` losing 20 % and duplicating 10 % of
/// the frames, 2–5 ms apart.
async fn lossy_round(seed: u64) {
    let net = MemNetwork::new(MemConfig {
        seed,
        default_link: LinkConfig {
            latency: Duration::from_millis(2),
            jitter: Duration::from_millis(3),
            loss: 0.2,
            duplicate: 0.1,
        },
        ..MemConfig::default()
    });
    let mut cfg = EndpointConfig::default();
    cfg.initial_rto = Duration::from_millis(20);
    cfg.request_timeout = Duration::from_secs(10);
    cfg.handshake_timeout = Duration::from_secs(10);
    cfg.rng_seed = Some(1);
    let (h, rx) = queued(1024);
    let server = mem(net.bind(), 12, cfg.clone(), h.clone());
    cfg.rng_seed = Some(2);
    let client = mem(net.bind(), 13, cfg, Arc::new(Echo::default()));
    let seen = Seen::default();
    let app = serve_counting(rx, seen.clone());
    let rs = many(&client, server.local_peer(), 100).await;
    for (i, r) in rs.into_iter().enumerate() {
        match r {
            Ok(r) => assert_eq!(&r[..], format!("q:r{i}").as_bytes(), "seed {seed}"),
            Err(e) => panic!("seed {seed}: request {i}: {e:?}"),
        }
    }
    assert!(
        client.metrics().retransmissions > 0,
        "seed {seed}: the links lost frames"
    );
    assert_eq!(client.metrics().sessions_dropped, 0, "seed {seed}");
    client.shutdown().await;
    server.shutdown().await;
    app.abort();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 100, "seed {seed}");
    assert!(seen.values().all(|&n| n == 1), "seed {seed}: {seen:?}");
}
