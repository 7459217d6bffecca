//! Many pipelined requests over one TCP connection, secure and insecure, on a multi-thread
//! runtime (the shape of the `rpc_64_in_flight` bench): none may be lost.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use themis_channel::{EndpointConfig, Mode};
use themis_testkit::channel::endpoint::*;
use themis_testkit::{eventually, within};

/// How long a request may take before the tests call it lost.
const LOSS_TIMEOUT: Duration = Duration::from_secs(20);

async fn pipelined(mode: Mode) {
    let mut cfg = EndpointConfig::default();
    cfg.mode = mode;
    // A lost request shows up as a timeout. Not shorter: on a saturated 2-core CI machine,
    // with the other tests of this file running beside it, a round trip has been seen to
    // take seconds, and a timeout there would be a false loss.
    cfg.request_timeout = LOSS_TIMEOUT;
    let echo = Arc::new(Echo::default());
    let b = tcp(2, cfg.clone(), echo.clone()).await;
    let a = tcp(1, cfg, Arc::new(Echo::default())).await;
    let peer = b.local_peer();
    let (tasks, per_task) = (64u32, 500u32);
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let (a, payload) = (a.clone(), Bytes::from(vec![0x5a; 64]));
        set.spawn(async move {
            for i in 0..per_task {
                let mut req = payload.to_vec();
                req[..8].copy_from_slice(&(u64::from(t) << 32 | u64::from(i)).to_be_bytes());
                let r = a.request(&peer, Bytes::from(req.clone())).await;
                match r {
                    Ok(r) => assert_eq!(&r[..], &echoed(&req)[..]),
                    Err(e) => panic!("task {t} request {i}: {e}"),
                }
            }
        });
    }
    let mut failed = None;
    while let Some(r) = set.join_next().await {
        if let Err(e) = r {
            failed.get_or_insert(e);
        }
    }
    let (ma, mb) = (a.metrics(), b.metrics());
    assert!(
        failed.is_none(),
        "{failed:?}\nclient {ma:#?}\nserver {mb:#?}"
    );
    let n = u64::from(tasks * per_task);
    assert_eq!(ma.requests_ok, n);
    assert_eq!(mb.commands_received, n);
    assert_eq!(
        mb.frames_rejected_replay, 0,
        "no command was delivered twice"
    );
    assert_eq!(mb.commands_dropped_busy, 0);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_pipelined_requests_are_never_lost() {
    within(180, "insecure_pipelined_requests_are_never_lost", async {
        pipelined(Mode::Insecure).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_pipelined_requests_are_never_lost() {
    within(180, "secure_pipelined_requests_are_never_lost", async {
        pipelined(Mode::Secure).await;
    })
    .await;
}

/// The bench's exact shape: a runtime driven by `block_on` from outside, rounds of 64 tasks.
#[test]
fn bench_shape_insecure() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (a, b) = rt.block_on(async {
        let mut cfg = EndpointConfig::insecure();
        cfg.request_timeout = LOSS_TIMEOUT;
        (
            tcp(1, cfg.clone(), Arc::new(Echo::default())).await,
            tcp(2, cfg, Arc::new(Echo::default())).await,
        )
    });
    let peer = b.local_peer();
    let payload = Bytes::from(vec![0x5a; 64]);
    rt.block_on(a.request(&peer, payload.clone())).unwrap();
    let mut iters = 1u64;
    while iters < 4000 {
        rt.block_on(within(180, "a round of 64 tasks", async {
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..64 {
                let (a, payload) = (a.clone(), payload.clone());
                set.spawn(async move {
                    for _ in 0..iters {
                        a.request(&peer, payload.clone()).await.unwrap();
                    }
                });
            }
            while let Some(r) = set.join_next().await {
                if let Err(e) = r {
                    panic!("{e}\nclient {:#?}\nserver {:#?}", a.metrics(), b.metrics());
                }
            }
        }));
        iters = iters * 3 / 2 + 1;
    }
}

/// Echoes after a delay named by the request's first byte (tenths of a second).
struct Slow;

#[async_trait::async_trait]
impl themis_channel::Handler for Slow {
    async fn handle(&self, _from: themis_channel::PeerAddr, request: Bytes) -> Bytes {
        let tenths = request.first().copied().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(100 * u64::from(tenths))).await;
        Bytes::from(echoed(&request))
    }
}

/// Insecure mode over TCP: a repeated sequence number makes the server replace the peer's
/// channel (the peer restarted). A handler still running for the old channel must not seal
/// its response on the new one: that would answer the restarted peer's command with the same
/// sequence number with the old command's response (and leave the real one unanswerable).
#[tokio::test]
async fn insecure_restart_never_answers_with_an_old_commands_response() {
    within(
        180,
        "insecure_restart_never_answers_with_an_old_commands_response",
        async {
            let b = tcp(2, EndpointConfig::insecure(), Arc::new(Slow)).await;
            let peer = b.local_peer();
            // The old incarnation of node 1: its command seq 1 runs for 0.4 s.
            let old = tcp(1, EndpointConfig::insecure(), Arc::new(Echo::default())).await;
            let pending = {
                let old = old.clone();
                tokio::spawn(
                    async move { old.request(&peer, Bytes::from_static(b"\x04old")).await },
                )
            };
            eventually(5, "the old command runs in B's handler", || {
                b.metrics().handlers_running == 1
            })
            .await;
            pending.abort();
            // Node 1 "restarted" (same identity, new port): its first command is seq 1 again.
            let new = tcp(1, EndpointConfig::insecure(), Arc::new(Echo::default())).await;
            let r = new
                .request(&peer, Bytes::from_static(b"\x08new"))
                .await
                .unwrap();
            assert_eq!(&r[..], b"re:\x08new");
        },
    )
    .await;
}

/// A TCP transport that records the sequence numbers of the commands handed to it.
struct Recording {
    inner: themis_channel::TcpTransport,
    seqs: std::sync::Mutex<Vec<u64>>,
}

impl Recording {
    fn record(&self, frame: &[u8]) {
        if let Ok(themis_channel::FrameHeader::Insecure {
            seq, command: true, ..
        }) = themis_channel::peek_header(frame)
        {
            self.seqs.lock().unwrap().push(seq);
        }
    }
}

#[async_trait::async_trait]
impl themis_channel::Transport for Recording {
    fn local_addr(&self) -> std::net::SocketAddr {
        self.inner.local_addr()
    }
    fn is_reliable(&self) -> bool {
        self.inner.is_reliable()
    }
    fn max_frame_len(&self) -> usize {
        self.inner.max_frame_len()
    }
    async fn send(
        &self,
        to: std::net::SocketAddr,
        frame: Bytes,
    ) -> Result<(), themis_channel::TransportError> {
        self.record(&frame);
        self.inner.send(to, frame).await
    }
    fn try_send(&self, to: std::net::SocketAddr, frame: Bytes) -> Result<(), Bytes> {
        // Recorded before the attempt: a frame given back is handed over again, with `send`,
        // and its second record is ignored below.
        self.record(&frame);
        self.inner.try_send(to, frame)
    }
    async fn recv(
        &self,
    ) -> Result<(std::net::SocketAddr, bytes::BytesMut), themis_channel::TransportError> {
        self.inner.recv().await
    }
    fn set_sink(&self, sink: themis_channel::FrameSink) -> bool {
        self.inner.set_sink(sink)
    }
    fn set_refused_sink(&self, sink: themis_channel::RefusedSink) -> bool {
        self.inner.set_refused_sink(sink)
    }
    fn under_load(&self) -> bool {
        self.inner.under_load()
    }
    fn stats(&self) -> themis_channel::TransportStats {
        self.inner.stats()
    }
    async fn close(&self) {
        self.inner.close().await;
    }
}

/// Commands reach the transport in the order the core sealed them, whichever thread sends
/// them. They once did not: a thread preempted between releasing the core's lock and handing
/// its frame to the transport let the commands of other threads overtake it, thousands of them
/// on a loaded machine, and the server refused the overtaken command as too old (outside its
/// replay window of 2,048): a lost request. More worker threads than cores make preemption at
/// that point likely here; without the ordering, small overtakings show up in every run.
#[test]
fn commands_leave_in_the_order_they_were_sealed() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(6)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(within(180, "commands_leave_in_order", async {
        let mut cfg = EndpointConfig::insecure();
        cfg.request_timeout = LOSS_TIMEOUT;
        let b = tcp(2, cfg.clone(), Arc::new(Echo::default())).await;
        let transport = Arc::new(Recording {
            inner: themis_channel::TcpTransport::bind(
                "127.0.0.1:0".parse().unwrap(),
                themis_channel::TcpConfig::default(),
            )
            .await
            .unwrap(),
            seqs: std::sync::Mutex::new(Vec::new()),
        });
        let a = themis_channel::Endpoint::new(
            transport.clone(),
            themis_testkit::identity(1),
            themis_testkit::network(),
            cfg,
            Arc::new(Echo::default()),
        )
        .unwrap();
        let peer = b.local_peer();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..64 {
            let a = a.clone();
            set.spawn(async move {
                for _ in 0..1000 {
                    a.request(&peer, Bytes::from_static(b"ping")).await.unwrap();
                }
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
        let seqs = transport.seqs.lock().unwrap().clone();
        let (mut newest, mut overtaken) = (0u64, Vec::new());
        for seq in seqs {
            if seq > newest {
                newest = seq;
            } else if seq < newest {
                overtaken.push((seq, newest));
            }
        }
        assert_eq!(newest, 64_000);
        assert!(
            overtaken.is_empty(),
            "{} commands overtaken, the first (seq, newest before it): {:?}",
            overtaken.len(),
            &overtaken[..overtaken.len().min(10)]
        );
        a.shutdown().await;
        b.shutdown().await;
    }));
}
