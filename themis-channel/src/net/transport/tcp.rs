//! TCP: length-delimited frames, one connection per peer pair reused in both directions.
//!
//! Life of a connection (PROTOCOL.md, "Transport / TCP" is the normative text):
//! - `send` to a peer without a connection inserts a handle at once and dials in the
//!   background; frames wait in the handle's bounded queue meanwhile. The dialer's first frame
//!   is a hello announcing its listening address, so the acceptor files the connection under
//!   the same key the dialer uses, and both directions share it.
//! - Both peers dialing at once: the connection dialed by the lower listening address wins on
//!   both sides; the other is retired gracefully (its queue is flushed, nothing is lost).
//! - The dialer sends nothing after its hello until the acceptor answers with a welcome, so a
//!   connection refused at the acceptor's socket limit loses no frame: the dialer retries with
//!   backoff, its frames still queued.
//! - Closing without loss and without TIME_WAIT. Whoever closes (idle or LRU reaping,
//!   retirement, shutdown) flushes its queue and sends a goodbye; a side that reads a goodbye
//!   answers with a goodbye-ack, flushes its own queue and sends its goodbye. A side resets the
//!   connection (`SO_LINGER = 0`, RST) once it has read both the peer's goodbye (it has read
//!   all the peer sent) and the peer's ack (the peer has read all it sent). Nobody ever sends
//!   FIN, so neither side enters TIME_WAIT, even when both close at once, and reconnect churn
//!   cannot pile up TIME_WAIT sockets and exhaust ephemeral ports. Aborts (garbage, oversize,
//!   stall, I/O error) and the close timeout reset at once.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        Arc, Mutex, MutexGuard, OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, BufWriter},
    net::{
        TcpListener, TcpSocket, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::{Notify, mpsc},
    time::{Instant, sleep_until, timeout, timeout_at},
};
use tokio_util::sync::CancellationToken;

use super::{
    FrameSink, RefusedSink, Transport, TransportError, TransportStats,
    frame::{check_incoming, check_outgoing_frame},
    stats::Counters,
};
use crate::proto::{PerSource, SourcePrefix};
use crate::wire::{
    DEFAULT_MAX_FRAME_LEN, TRANSPORT_GOODBYE, TRANSPORT_GOODBYE_ACK, TRANSPORT_HELLO,
    TRANSPORT_WELCOME, VERSION as FRAME_VERSION,
};

/// Length of the big-endian length prefix before every TCP frame.
const LEN_PREFIX: usize = 4;
/// Most bytes we ask the kernel for in one read while a large frame comes in, so memory grows
/// with the bytes a peer actually sends, not with the length it claims.
const READ_CHUNK: usize = 64 * 1024;
/// Hello: version, type, family, IPv6 address, port.
const HELLO_MAX: usize = 2 + 1 + 16 + 2;

/// Settings of a [`TcpTransport`]. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct TcpConfig {
    /// Largest frame sent or accepted (default [`DEFAULT_MAX_FRAME_LEN`]). A length prefix
    /// above it closes the connection before anything is allocated.
    pub max_frame_len: usize,
    /// Most peer connections kept open (default 256); opening one more closes the least
    /// recently used. Each loopback connection inside one process costs two descriptors.
    pub max_connections: usize,
    /// Most accepted connections still waiting for their hello (default 64). Beyond
    /// `max_connections + max_handshaking` open sockets, new connections are refused at accept.
    pub max_handshaking: usize,
    /// Most accepted sockets open at once from one source prefix (a /32 for IPv4, a /64 for
    /// IPv6; default 128, half of `max_connections`): established, waiting for their hello or
    /// closing. Beyond it a new connection from that prefix is reset at accept
    /// (`connections_refused_source`), so one host cannot hold the slots everyone shares.
    pub max_connections_per_source: usize,
    /// Most accepted sockets from one source prefix still waiting for their hello (default 32,
    /// half of `max_handshaking`).
    pub max_handshaking_per_source: usize,
    /// Frames queued per connection before `send` waits (default 256).
    pub queue_len: usize,
    /// Frames received and not yet taken by `recv` (default 1024). When full, connections stop
    /// reading and TCP flow control pushes back on the senders.
    pub recv_queue_len: usize,
    /// Longest `send` waits for room in a full queue before failing (default 5 s).
    pub send_timeout: Duration,
    /// Longest a dial may take (default 5 s).
    pub connect_timeout: Duration,
    /// Longest an accepted connection may take to send its hello (default 5 s).
    pub hello_timeout: Duration,
    /// Longest one frame may take to arrive once its first byte came in, and longest one batch
    /// of writes may block (default 30 s). Catches peers that send half a frame and stall.
    pub frame_timeout: Duration,
    /// Connections without traffic for this long are closed (default 60 s; `None` keeps them).
    pub idle_timeout: Option<Duration>,
    /// Longest data sent may stay unacknowledged by the peer (or unsent for a zero window)
    /// before the kernel aborts the connection (`TCP_USER_TIMEOUT`, Linux and Android only;
    /// default 15 s; `None` leaves the kernel's default of about 15 minutes). Without it a
    /// connection that carried data into a black hole (a partition, a dead host) stays
    /// established through the whole outage while its retransmission timer backs off
    /// exponentially, so after the heal nothing flows on it until the next retransmission:
    /// 47 s after a 60 s partition in a measurement. Aborted instead, the next frame dials a
    /// fresh connection, which works as soon as the network does.
    pub unacked_timeout: Option<Duration>,
    /// Longest a graceful close waits for the peer to go away, and `close` for all connections
    /// to finish (default 2 s).
    pub close_timeout: Duration,
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_connections: 256,
            max_handshaking: 64,
            max_connections_per_source: 128,
            max_handshaking_per_source: 32,
            queue_len: 256,
            recv_queue_len: 1024,
            send_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            hello_timeout: Duration::from_secs(5),
            frame_timeout: Duration::from_secs(30),
            idle_timeout: Some(Duration::from_secs(60)),
            unacked_timeout: Some(Duration::from_secs(15)),
            close_timeout: Duration::from_secs(2),
        }
    }
}

/// Frames over TCP: see the module documentation and PROTOCOL.md.
#[derive(Debug)]
pub struct TcpTransport {
    inner: Arc<Inner>,
    incoming: tokio::sync::Mutex<mpsc::Receiver<(SocketAddr, BytesMut)>>,
}

type Incoming = mpsc::Sender<(SocketAddr, BytesMut)>;

struct Sink(FrameSink);

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sink")
    }
}

struct Refused(RefusedSink);

impl std::fmt::Debug for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Refused")
    }
}

/// Why a dial attempt failed when nothing listens at the peer's address (`ECONNREFUSED`):
/// the dial gives up at once (no backoff) and the refused sink is told.
const CONNECTION_REFUSED: &str = "connection refused";

#[derive(Debug)]
struct Inner {
    local: SocketAddr,
    cfg: TcpConfig,
    stats: Counters,
    conns: Mutex<Conns>,
    /// Taken on close so that `recv` ends once every reader is gone.
    in_tx: Mutex<Option<Incoming>>,
    /// Where readers hand frames when set (instead of `in_tx`): see `Transport::set_sink`.
    sink: OnceLock<Sink>,
    /// Told the peers that refused a connection: see `Transport::set_refused_sink`.
    refused: OnceLock<Refused>,
    shutdown: CancellationToken,
    epoch: Instant,
    next_id: AtomicU64,
    /// Accepted sockets per source prefix: all open ones, and those still waiting for a hello.
    sources: Mutex<Sources>,
}

#[derive(Debug)]
struct Sources {
    open: PerSource<SourcePrefix>,
    handshaking: PerSource<SourcePrefix>,
}

#[derive(Debug, Default)]
struct Conns {
    map: HashMap<SocketAddr, Handle>,
    closed: bool,
}

/// What the table holds for one peer. Dropping it drops the queue's sender: the writer then
/// flushes what is queued and closes gracefully.
#[derive(Debug)]
struct Handle {
    id: u64,
    dialed_by_us: bool,
    tx: mpsc::Sender<Bytes>,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Milliseconds since `Inner::epoch` of the last frame sent or received.
    last_active: AtomicU64,
    /// Milliseconds since `Inner::epoch` of the last frame received: a writer about to write
    /// after a quiet spell first looks for the peer's end of stream (see `write_loop`).
    last_read: AtomicU64,
    /// The peer ended the connection without a goodbye (its process ended, or it reset the
    /// connection): what is still queued never leaves, and the refused sink is told.
    peer_gone: AtomicBool,
    /// The refused sink has been told about this connection (once).
    gone_reported: AtomicBool,
    /// The writer has ended: a reader that finds the peer gone afterwards tells the sink itself.
    writer_done: AtomicBool,
    /// Cancelled when we start a graceful close (child of the transport's shutdown token).
    graceful: CancellationToken,
    /// Cancelled to tear the connection down at once.
    abort: CancellationToken,
    /// The reader read the peer's goodbye: the writer must send a goodbye-ack.
    ack_wanted: Notify,
    /// Our goodbye / goodbye-ack has been written.
    goodbye_sent: AtomicBool,
    ack_sent: AtomicBool,
}

/// Counts an open socket; held by the reader and the writer of one connection. An accepted
/// socket is also charged to its source prefix until it closes.
#[derive(Debug)]
struct SocketGuard(Arc<Inner>, Option<SourcePrefix>);

impl SocketGuard {
    fn new(inner: &Arc<Inner>) -> Arc<Self> {
        Counters::inc(&inner.stats.connections_open);
        Arc::new(Self(inner.clone(), None))
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if let Some(prefix) = self.1 {
            self.0.sources().open.release(prefix);
        }
        Counters::dec(&self.0.stats.connections_open);
        Counters::inc(&self.0.stats.connections_closed);
    }
}

/// An accepted socket's claim on its prefix's `max_handshaking_per_source`, given back when
/// the hello has been read (or the socket is reset).
#[derive(Debug)]
struct HelloSlot(Arc<Inner>, SourcePrefix);

impl Drop for HelloSlot {
    fn drop(&mut self) {
        self.0.sources().handshaking.release(self.1);
        Counters::dec(&self.0.stats.connections_handshaking);
    }
}

/// Charges a socket just accepted from `source` to its prefix: `None` if the prefix already
/// holds `max_connections_per_source` sockets or `max_handshaking_per_source` waiting for a
/// hello (the connection is then reset at once).
fn admit(inner: &Arc<Inner>, source: IpAddr) -> Option<(Arc<SocketGuard>, HelloSlot)> {
    let prefix = SourcePrefix::of(source);
    {
        let mut s = inner.sources();
        if s.open.is_full(prefix) || s.handshaking.is_full(prefix) {
            return None;
        }
        s.open.acquire(prefix);
        s.handshaking.acquire(prefix);
    }
    Counters::inc(&inner.stats.connections_open);
    Counters::inc(&inner.stats.connections_handshaking);
    Some((
        Arc::new(SocketGuard(inner.clone(), Some(prefix))),
        HelloSlot(inner.clone(), prefix),
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadFail {
    Oversize,
    Stalled,
    /// EOF in the middle of a frame, or a socket error.
    Broken,
}

/// Incremental length-delimited decoder (u32 big-endian prefix, the layout of tokio-util's
/// `LengthDelimitedCodec` with its defaults). Written out rather than using the codec because
/// the codec reserves the whole claimed frame as soon as it has read the prefix; here memory
/// grows only with the bytes that actually arrive.
#[derive(Debug)]
struct FrameReader {
    buf: BytesMut,
    max: usize,
    frame_timeout: Duration,
    /// When we started waiting for the rest of a frame already begun.
    partial_since: Option<Instant>,
}

impl FrameReader {
    fn new(max: usize, frame_timeout: Duration) -> Self {
        Self {
            buf: BytesMut::new(),
            max,
            frame_timeout,
            partial_since: None,
        }
    }

    /// `Ok(Some(needed))` if more bytes are needed, `Ok(None)` with a frame split off.
    fn decode(&mut self) -> Result<Option<BytesMut>, ReadFail> {
        let Some(prefix) = self.buf.get(..LEN_PREFIX) else {
            return Ok(None);
        };
        let mut p = [0u8; LEN_PREFIX];
        p.copy_from_slice(prefix);
        let len = u32::from_be_bytes(p) as usize;
        // Checked before anything is reserved for the frame.
        if len > self.max {
            return Err(ReadFail::Oversize);
        }
        if self.buf.len() < LEN_PREFIX + len {
            return Ok(None);
        }
        self.buf.advance(LEN_PREFIX);
        Ok(Some(self.buf.split_to(len)))
    }

    fn want(&self) -> usize {
        match self.buf.get(..LEN_PREFIX) {
            Some(prefix) => {
                let mut p = [0u8; LEN_PREFIX];
                p.copy_from_slice(prefix);
                let total = LEN_PREFIX + u32::from_be_bytes(p) as usize;
                total.saturating_sub(self.buf.len()).clamp(1, READ_CHUNK)
            }
            None => 4096,
        }
    }

    /// Next frame; `Ok(None)` on a clean end of stream between frames. Cancel safe.
    async fn next(&mut self, r: &mut OwnedReadHalf) -> Result<Option<BytesMut>, ReadFail> {
        loop {
            if let Some(frame) = self.decode()? {
                self.partial_since = None;
                return Ok(Some(frame));
            }
            let want = self.want();
            self.buf.reserve(want);
            let n = if self.buf.is_empty() {
                // Between frames: read what is there; if nothing is, wait without a buffer, so
                // that an idle connection holds none (it kept its last one, 4 KiB or more, for
                // its whole life: the most memory a connection held). The readiness is
                // tokio's cached one, so this makes no more system calls than `read_buf`.
                match r.try_read_buf(&mut self.buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        self.buf = BytesMut::new();
                        r.readable().await.map_err(|_| ReadFail::Broken)?;
                        continue;
                    }
                    n => n,
                }
            } else {
                let since = *self.partial_since.get_or_insert_with(Instant::now);
                timeout_at(since + self.frame_timeout, r.read_buf(&mut self.buf))
                    .await
                    .map_err(|_| ReadFail::Stalled)?
            }
            .map_err(|_| ReadFail::Broken)?;
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadFail::Broken)
                };
            }
        }
    }
}

/// The TCP framing under arbitrary bytes, for fuzzing (`fuzz/`): `bytes[0]` picks the frame
/// size limit (times 16), `bytes[1]` the size of the reads (1..=256), the rest is the stream.
/// Feeds the stream to a [`FrameReader`] read by read and compares its frames with a one-shot
/// parse of the whole stream; runs the hello parser on every frame and checks that what it
/// accepts encodes back to the same bytes. `Err` names the check that failed (a bug).
pub(crate) fn fuzz_stream(bytes: &[u8]) -> Result<usize, String> {
    let [limit, read, stream @ ..] = bytes else {
        return Ok(0);
    };
    let max = usize::from(*limit) * 16;
    let read = usize::from(*read) + 1;

    // Reference: the whole stream at once.
    let (mut expected, mut rest, mut oversize) = (Vec::new(), stream, false);
    while let Some((prefix, body)) = rest.split_first_chunk::<LEN_PREFIX>() {
        let len = u32::from_be_bytes(*prefix) as usize;
        if len > max {
            oversize = true;
            break;
        }
        let Some((frame, tail)) = body.split_at_checked(len) else {
            break;
        };
        expected.push(frame);
        rest = tail;
    }

    let mut r = FrameReader::new(max, Duration::from_secs(1));
    let (mut got, mut failed) = (Vec::new(), false);
    'feed: for chunk in stream.chunks(read) {
        r.buf.extend_from_slice(chunk);
        loop {
            match r.decode() {
                Ok(Some(frame)) => {
                    if frame.len() > max {
                        return Err(format!(
                            "a frame of {} bytes above the limit {max}",
                            frame.len()
                        ));
                    }
                    got.push(frame);
                }
                Ok(None) => {
                    let want = r.want();
                    if want == 0 || want > READ_CHUNK.max(4096) {
                        return Err(format!("asks to read {want} bytes"));
                    }
                    break;
                }
                Err(ReadFail::Oversize) => {
                    failed = true;
                    break 'feed;
                }
                Err(e) => return Err(format!("decode failed with {e:?}")),
            }
        }
    }
    if failed != oversize {
        return Err(format!("oversize: reader {failed}, reference {oversize}"));
    }
    if got.len() != expected.len() || got.iter().zip(&expected).any(|(g, e)| &g[..] != *e) {
        return Err("the reader's frames differ from the reference's".to_owned());
    }
    if !oversize && r.buf.len() != rest.len() {
        return Err("the reader kept other bytes than the reference".to_owned());
    }

    let sources: [IpAddr; 2] = [Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()];
    for frame in &got {
        for source in sources {
            if let Some(addr) = parse_hello(frame, source)
                && parse_hello(&encode_hello(addr), source) != Some(addr)
            {
                return Err(format!("hello for {addr} does not round-trip"));
            }
        }
    }
    Ok(got.len())
}

/// Hello frame: `01 30 | family (4 or 6) | address (4 or 16) | port (u16 BE)`.
fn encode_hello(addr: SocketAddr) -> Bytes {
    let mut b = BytesMut::with_capacity(HELLO_MAX);
    b.put_u8(FRAME_VERSION);
    b.put_u8(TRANSPORT_HELLO);
    match addr.ip() {
        IpAddr::V4(ip) => {
            b.put_u8(4);
            b.put_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            b.put_u8(6);
            b.put_slice(&ip.octets());
        }
    }
    b.put_u16(addr.port());
    b.freeze()
}

/// Parses a hello and resolves the announced listening address against the connection's
/// source: the announced IP must be the source IP or unspecified (then the source IP is used),
/// so a peer cannot claim another host's address; the port must not be 0.
fn parse_hello(frame: &[u8], source: IpAddr) -> Option<SocketAddr> {
    let (ip, port) = match frame {
        [FRAME_VERSION, TRANSPORT_HELLO, 4, rest @ ..] => {
            let (ip, port) = rest.split_first_chunk::<4>()?;
            (IpAddr::V4(Ipv4Addr::from(*ip)), port)
        }
        [FRAME_VERSION, TRANSPORT_HELLO, 6, rest @ ..] => {
            let (ip, port) = rest.split_first_chunk::<16>()?;
            (IpAddr::V6(Ipv6Addr::from(*ip)), port)
        }
        _ => return None,
    };
    let port: [u8; 2] = port.try_into().ok()?;
    let port = u16::from_be_bytes(port);
    if port == 0 {
        return None;
    }
    let canon = |ip: IpAddr| ip.to_canonical();
    if ip.is_unspecified() || canon(ip) == canon(source) {
        Some(SocketAddr::new(source, port))
    } else {
        None
    }
}

impl TcpTransport {
    /// Listens on `addr` (port 0 picks a free port) with `cfg`.
    pub async fn bind(addr: SocketAddr, cfg: TcpConfig) -> Result<Self, TransportError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| TransportError::Bind { addr, source })?;
        let local = listener.local_addr().map_err(|source| TransportError::Io {
            context: "reading the listening address",
            source,
        })?;
        let (in_tx, in_rx) = mpsc::channel(cfg.recv_queue_len.max(1));
        let cfg_per_source = (
            cfg.max_connections_per_source.max(1),
            cfg.max_handshaking_per_source.max(1),
        );
        let inner = Arc::new(Inner {
            local,
            cfg,
            stats: Counters::default(),
            conns: Mutex::new(Conns::default()),
            in_tx: Mutex::new(Some(in_tx)),
            sink: OnceLock::new(),
            refused: OnceLock::new(),
            shutdown: CancellationToken::new(),
            epoch: Instant::now(),
            next_id: AtomicU64::new(1),
            sources: Mutex::new(Sources {
                open: PerSource::new(cfg_per_source.0),
                handshaking: PerSource::new(cfg_per_source.1),
            }),
        });
        tokio::spawn(accept_loop(inner.clone(), listener));
        if let Some(idle) = inner.cfg.idle_timeout {
            tokio::spawn(idle_sweeper(inner.clone(), idle));
        }
        Ok(Self {
            inner,
            incoming: tokio::sync::Mutex::new(in_rx),
        })
    }

    /// Number of peers with a connection in the table (dialing or established).
    pub fn connected_peers(&self) -> usize {
        self.inner.lock().map.len()
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        self.inner.begin_close();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Conns> {
        // A poisoned table only means another task panicked mid-update; the map itself is
        // still consistent (every update is a single insert/remove).
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sources(&self) -> MutexGuard<'_, Sources> {
        // Every update is a single acquire/release: a poisoned table is still consistent.
        self.sources.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the accepted sockets are near their limits (PROTOCOL.md §5.2, "Cookies"): half
    /// of `max_handshaking` sockets wait for a hello, or the open sockets leave less than half
    /// of `max_handshaking` free.
    fn under_load(&self) -> bool {
        let load = |c: &AtomicU64| usize::try_from(c.load(Ordering::Relaxed)).unwrap_or(usize::MAX);
        let half = self.cfg.max_handshaking / 2;
        load(&self.stats.connections_handshaking) >= half.max(1)
            || load(&self.stats.connections_open) >= self.cfg.max_connections.saturating_add(half)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn incoming(&self) -> Option<Incoming> {
        self.in_tx.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn new_shared(&self) -> Arc<Shared> {
        Arc::new(Shared {
            last_active: AtomicU64::new(self.now_ms()),
            last_read: AtomicU64::new(self.now_ms()),
            peer_gone: AtomicBool::new(false),
            gone_reported: AtomicBool::new(false),
            writer_done: AtomicBool::new(false),
            graceful: self.shutdown.child_token(),
            abort: CancellationToken::new(),
            ack_wanted: Notify::new(),
            goodbye_sent: AtomicBool::new(false),
            ack_sent: AtomicBool::new(false),
        })
    }

    fn touch(&self, shared: &Shared) {
        shared.last_active.store(self.now_ms(), Ordering::Relaxed);
    }

    /// The peer of connection `id` went away without a goodbye: its handle leaves the table
    /// first (so that a frame sent from now on dials anew, and a refused dial is reported as
    /// such), then the connection is torn down; the refused sink is told once, by the writer
    /// (with the frames it dropped unwritten) or, if the writer has already ended, by the
    /// caller.
    fn peer_gone(&self, peer: SocketAddr, id: u64, shared: &Shared) {
        self.remove_if(peer, id);
        if !shared.peer_gone.swap(true, Ordering::SeqCst) {
            Counters::inc(&self.stats.connections_lost);
        }
        shared.abort.cancel();
        if shared.writer_done.load(Ordering::SeqCst) {
            self.report_gone(peer, shared, Vec::new());
        }
    }

    /// Tells the refused sink (once per connection) that `peer` is gone, with `dropped`, the
    /// frames for it that were never written.
    fn report_gone(&self, peer: SocketAddr, shared: &Shared, dropped: Vec<Bytes>) {
        if shared.gone_reported.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::debug!(local = %self.local, %peer, unsent = dropped.len(), "peer closed the connection without a goodbye");
        if let Some(sink) = self.refused.get() {
            (sink.0)(peer, dropped);
        }
    }

    /// Removes `peer`'s handle if it is still connection `id`.
    fn remove_if(&self, peer: SocketAddr, id: u64) {
        let mut conns = self.lock();
        if conns.map.get(&peer).is_some_and(|h| h.id == id) {
            conns.map.remove(&peer);
        }
    }

    /// Inserts `handle` for `peer`, closing the least recently used connections if the table
    /// is over its cap. Called with the table locked.
    fn insert_capped(&self, conns: &mut Conns, peer: SocketAddr, handle: Handle) {
        if let Some(old) = conns.map.insert(peer, handle) {
            old.shared.graceful.cancel();
        }
        while conns.map.len() > self.cfg.max_connections.max(1) {
            let victim = conns
                .map
                .iter()
                .filter(|(addr, _)| **addr != peer)
                .min_by_key(|(_, h)| h.shared.last_active.load(Ordering::Relaxed))
                .map(|(addr, _)| *addr);
            let Some(victim) = victim else { break };
            if let Some(h) = conns.map.remove(&victim) {
                h.shared.graceful.cancel();
                Counters::inc(&self.stats.connections_reaped_lru);
                tracing::debug!(local = %self.local, peer = %victim, "connection cap reached: closing the least recently used connection");
            }
        }
    }

    fn begin_close(&self) {
        self.shutdown.cancel();
        let old = {
            let mut conns = self.lock();
            conns.closed = true;
            std::mem::take(&mut conns.map)
        };
        drop(old);
        self.in_tx.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    fn new_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

async fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    let limit = inner
        .cfg
        .max_connections
        .saturating_add(inner.cfg.max_handshaking);
    loop {
        let accepted = tokio::select! {
            biased;
            () = inner.shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, source)) => {
                let open = inner.stats.connections_open.load(Ordering::Relaxed);
                if usize::try_from(open).unwrap_or(usize::MAX) >= limit {
                    let _ = stream.set_zero_linger();
                    Counters::inc(&inner.stats.connections_refused);
                    tracing::debug!(local = %inner.local, %source, "socket limit reached: refusing a connection");
                    continue;
                }
                let Some((guard, hello_slot)) = admit(&inner, source.ip()) else {
                    let _ = stream.set_zero_linger();
                    Counters::inc(&inner.stats.connections_refused_source);
                    tracing::debug!(local = %inner.local, %source, "per-source socket limit reached: refusing a connection");
                    continue;
                };
                tokio::spawn(serve_accepted(
                    inner.clone(),
                    stream,
                    source,
                    guard,
                    hello_slot,
                ));
            }
            Err(e) => {
                // Usually EMFILE/ENFILE: back off instead of spinning.
                tracing::warn!(local = %inner.local, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Ends a connection with a reset and never a FIN (PROTOCOL.md §5.1: "no side ever sends
/// FIN"): `SO_LINGER = 0`, then the write half is forgotten rather than dropped (dropping an
/// `OwnedWriteHalf` shuts the write direction down, which sends a FIN) and the socket is closed
/// with the read half, which sends the RST.
fn reset(r: OwnedReadHalf, w: OwnedWriteHalf) {
    let _ = r.as_ref().set_zero_linger();
    w.forget();
    drop(r);
}

/// The socket options of every connection, dialed or accepted: `TCP_NODELAY`, and
/// `TCP_USER_TIMEOUT` from [`TcpConfig::unacked_timeout`] where the system has it.
fn tune(stream: &TcpStream, cfg: &TcpConfig) {
    let _ = stream.set_nodelay(true);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Some(t) = cfg.unacked_timeout {
        let ms = u32::try_from(t.as_millis()).unwrap_or(u32::MAX).max(1);
        let _ = rustix::net::sockopt::set_tcp_user_timeout(stream, ms);
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = cfg;
}

async fn serve_accepted(
    inner: Arc<Inner>,
    stream: TcpStream,
    source: SocketAddr,
    guard: Arc<SocketGuard>,
    hello_slot: HelloSlot,
) {
    tune(&stream, &inner.cfg);
    let (mut r, w) = stream.into_split();
    let mut reader = FrameReader::new(inner.cfg.max_frame_len, inner.cfg.frame_timeout);
    let hello = tokio::select! {
        biased;
        () = inner.shutdown.cancelled() => None,
        h = timeout(inner.cfg.hello_timeout, reader.next(&mut r)) => Some(h),
    };
    let peer = match hello {
        None => return reset(r, w),
        Some(Ok(Ok(Some(frame)))) => parse_hello(&frame, source.ip()),
        Some(Ok(Err(ReadFail::Oversize))) => {
            Counters::inc(&inner.stats.rejected_oversize);
            None
        }
        Some(Ok(Err(ReadFail::Stalled))) => {
            Counters::inc(&inner.stats.rejected_stalled);
            None
        }
        Some(_) => None,
    };
    drop(hello_slot);
    let Some(peer) = peer else {
        Counters::inc(&inner.stats.rejected_hello);
        tracing::debug!(local = %inner.local, %source, "closing a connection without a valid hello");
        return reset(r, w);
    };
    let shared = inner.new_shared();
    let id = inner.new_id();
    let writer = {
        let mut conns = inner.lock();
        if conns.closed {
            drop(conns);
            return reset(r, w);
        }
        // Tie-break (PROTOCOL.md): of two connections between the same pair, the one dialed by
        // the lower listening address wins. An older *accepted* connection from the same peer
        // is always replaced: the peer has given up on it.
        let keep_existing = conns
            .map
            .get(&peer)
            .is_some_and(|h| h.dialed_by_us && inner.local < peer);
        if keep_existing {
            Counters::inc(&inner.stats.connections_retired);
            None
        } else {
            if conns.map.get(&peer).is_some_and(|h| h.dialed_by_us) {
                Counters::inc(&inner.stats.connections_retired);
            }
            let (tx, rx) = mpsc::channel(inner.cfg.queue_len.max(1));
            inner.insert_capped(
                &mut conns,
                peer,
                Handle {
                    id,
                    dialed_by_us: false,
                    tx,
                    shared: shared.clone(),
                },
            );
            Some(rx)
        }
    };
    // Welcome first: from here on we read what the peer sends until it says goodbye.
    let mut w = w;
    let welcome = [0, 0, 0, 2, FRAME_VERSION, TRANSPORT_WELCOME];
    if !matches!(
        timeout(inner.cfg.frame_timeout, w.write_all(&welcome)).await,
        Ok(Ok(()))
    ) {
        reset(r, w);
        inner.remove_if(peer, id);
        return;
    }
    Counters::inc(&inner.stats.connections_accepted);
    Counters::inc(&inner.stats.connections_opened);
    if let Some(rx) = writer {
        tokio::spawn(write_loop(
            inner.clone(),
            (peer, id),
            w,
            rx,
            shared.clone(),
            guard.clone(),
        ));
    } else {
        // Retired at once: we send nothing on it but the goodbye (and the ack of the peer's),
        // and read until the peer, which applies the same rule, has flushed and said goodbye.
        let (_, rx) = mpsc::channel(1);
        shared.graceful.cancel();
        tokio::spawn(write_loop(
            inner.clone(),
            (peer, id),
            w,
            rx,
            shared.clone(),
            guard.clone(),
        ));
    }
    // A task of its own rather than awaited here: this task's state (1.5 KiB, the hello's
    // wait and the reader's) would otherwise stay for the connection's life, where the
    // reader's alone is 1.1 KiB.
    tokio::spawn(read_loop(inner, peer, id, shared, r, reader, guard));
}

/// Connects to `peer` from our listening IP when it is a specific address of the same family
/// (port chosen by the system), so that the connection's source IP is the IP the hello
/// announces, which the acceptor requires (PROTOCOL.md §5.1, setup step 2); from the address
/// the system picks otherwise.
async fn connect_from(local: SocketAddr, peer: SocketAddr) -> std::io::Result<TcpStream> {
    let ip = local.ip();
    if ip.is_unspecified() || ip.is_ipv4() != peer.is_ipv4() {
        return TcpStream::connect(peer).await;
    }
    let socket = if ip.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(peer).await
}

/// One dial attempt: connect, send the hello, wait for the welcome. On failure the socket is
/// reset and dropped.
async fn try_connect(
    inner: &Inner,
    peer: SocketAddr,
    deadline: Instant,
) -> Result<(OwnedReadHalf, OwnedWriteHalf, FrameReader), &'static str> {
    let stream = timeout_at(deadline, connect_from(inner.local, peer))
        .await
        .map_err(|_| "connect timed out")?
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                CONNECTION_REFUSED
            } else {
                "connect failed"
            }
        })?;
    tune(&stream, &inner.cfg);
    let (mut r, mut w) = stream.into_split();
    let hello = encode_hello(inner.local);
    let mut head = BytesMut::with_capacity(LEN_PREFIX + hello.len());
    head.put_u32(u32::try_from(hello.len()).unwrap_or(u32::MAX));
    head.put_slice(&hello);
    let mut reader = FrameReader::new(inner.cfg.max_frame_len, inner.cfg.frame_timeout);
    let welcomed = async {
        w.write_all(&head).await.map_err(|_| "hello not sent")?;
        match reader.next(&mut r).await {
            Ok(Some(f)) if f[..] == [FRAME_VERSION, TRANSPORT_WELCOME] => Ok(()),
            Ok(Some(_)) => Err("bad welcome"),
            _ => Err("refused"),
        }
    };
    match timeout_at(deadline, welcomed).await {
        Ok(Ok(())) => Ok((r, w, reader)),
        failed => {
            reset(r, w);
            Err(failed
                .unwrap_or(Err("no welcome in time"))
                .err()
                .unwrap_or("refused"))
        }
    }
}

/// Dials `peer` for the handle `id`, retrying with exponential backoff (20 ms, doubling, at
/// most 1 s) until `connect_timeout` when the peer refuses (for instance because it is at its
/// socket limit). Frames queued meanwhile are sent once the peer has welcomed us, so a refused
/// connection loses nothing; if every attempt fails they are dropped and counted. A connect
/// refused by the operating system (`ECONNREFUSED`: nothing listens at the address, the peer is
/// down) ends the dial at once: its frames are dropped and the refused sink is told, so the
/// endpoint fails what waits for them now rather than at its timeouts.
async fn dial(
    inner: Arc<Inner>,
    peer: SocketAddr,
    id: u64,
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Bytes>,
) {
    let deadline = Instant::now() + inner.cfg.connect_timeout;
    let mut backoff = Duration::from_millis(20);
    let (r, w, reader) = loop {
        let attempt = tokio::select! {
            biased;
            () = shared.abort.cancelled() => Err("aborted"),
            a = try_connect(&inner, peer, deadline) => a,
        };
        match attempt {
            Ok(conn) => break conn,
            Err(why) => {
                let retry_at = Instant::now() + backoff;
                let refused = why == CONNECTION_REFUSED;
                if why == "aborted" || refused || retry_at >= deadline {
                    tracing::debug!(local = %inner.local, %peer, why, "giving up dialing");
                    Counters::inc(&inner.stats.connect_failed);
                    inner.remove_if(peer, id);
                    let dropped = drop_queued(&inner, &mut rx);
                    if refused && let Some(sink) = inner.refused.get() {
                        (sink.0)(peer, dropped);
                    }
                    return;
                }
                tokio::select! {
                    biased;
                    () = shared.abort.cancelled() => {}
                    () = sleep_until(retry_at) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    };
    let guard = SocketGuard::new(&inner);
    Counters::inc(&inner.stats.connections_dialed);
    Counters::inc(&inner.stats.connections_opened);
    tokio::spawn(read_loop(
        inner.clone(),
        peer,
        id,
        shared.clone(),
        r,
        reader,
        guard.clone(),
    ));
    // A task of its own rather than awaited here, as `serve_accepted` does with the reader:
    // the dial's state (1.1 KiB) would otherwise stay for the connection's life, where the
    // writer's alone is 0.6 KiB.
    tokio::spawn(write_loop(inner, (peer, id), w, rx, shared, guard));
}

/// Drops the frames queued in `rx` (counted) and returns them (at most `queue_len`).
fn drop_queued(inner: &Inner, rx: &mut mpsc::Receiver<Bytes>) -> Vec<Bytes> {
    rx.close();
    let mut dropped = Vec::new();
    while let Ok(f) = rx.try_recv() {
        Counters::inc(&inner.stats.frames_dropped);
        dropped.push(f);
    }
    dropped
}

const GOODBYE_FRAME: [u8; 6] = [0, 0, 0, 2, FRAME_VERSION, TRANSPORT_GOODBYE];
const GOODBYE_ACK_FRAME: [u8; 6] = [0, 0, 0, 2, FRAME_VERSION, TRANSPORT_GOODBYE_ACK];

/// Most frames written with one flush.
const WRITE_BATCH: usize = 64;

/// Most frames a reader hands to the sink before it lets the other tasks run. A peer's
/// pipelined batch (64 requests in one read) was handled whole before any answer could be
/// written, so two busy nodes worked in turn, each idle while the other handled a batch; in
/// parts, the first answers leave while the rest are handled. `local_find` example (200K
/// finds, secure, idle 2-core machine), finds/s without the limit / with 16 / 32 / 64: both
/// nodes on one two-worker runtime 51-72K / 99-106K / 103-108K / 79-84K; each node on a thread
/// of its own (`NODE_THREADS=1`) 80K / 103-108K / 115-119K / 80-87K.
const READ_BURST: usize = 32;
/// Largest write buffer of one batch: frames beyond it go to the socket in more writes.
const WRITE_BUFFER: usize = 64 * 1024;

/// Moves queued frames into `batch` without waiting, up to [`WRITE_BATCH`].
fn drain_into(rx: &mut mpsc::Receiver<Bytes>, batch: &mut Vec<Bytes>) {
    while batch.len() < WRITE_BATCH {
        match rx.try_recv() {
            Ok(f) => batch.push(f),
            Err(_) => break,
        }
    }
}

/// Writes queued frames in batches. When the queue ends (the handle left the table), writes
/// the goodbye; writes the goodbye-ack when the reader asks for it. Ends once both are written
/// or on abort. Never sends FIN (`forget`): the connection ends with the reader's RST.
///
/// Each batch is copied into a buffer of its own size (at most [`WRITE_BUFFER`]) and written
/// with one flush; the buffer is freed once written, so an idle connection holds none (a
/// buffer kept for the connection's life cost every connection its full size, though nearly
/// every batch is a few hundred bytes).
async fn write_loop(
    inner: Arc<Inner>,
    (peer, id): (SocketAddr, u64),
    mut w: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Bytes>,
    shared: Arc<Shared>,
    _guard: Arc<SocketGuard>,
) {
    write_frames(&inner, (peer, id), &mut w, &mut rx, &shared).await;
    let dropped = drop_queued(&inner, &mut rx);
    shared.writer_done.store(true, Ordering::SeqCst);
    if shared.peer_gone.load(Ordering::SeqCst) {
        inner.report_gone(peer, &shared, dropped);
    }
    w.forget();
}

/// The peer's end of stream (or reset) is waiting in the socket, under no unread data: a
/// nonblocking `MSG_PEEK` of one byte, where the system has it.
fn peer_closed(w: &OwnedWriteHalf) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use rustix::net::{RecvFlags, recv};
        let mut byte = [0u8; 1];
        match recv(
            w.as_ref(),
            &mut byte[..],
            RecvFlags::PEEK | RecvFlags::DONTWAIT,
        ) {
            Ok((0, _)) => true,
            Ok(_) => false,
            Err(e) => e != rustix::io::Errno::AGAIN && e != rustix::io::Errno::INTR,
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = w;
        false
    }
}

/// Quiet spell (no frame read for this many milliseconds) after which a writer peeks for the
/// peer's end of stream before it writes (see [`write_frames`]).
const PEEK_AFTER_QUIET_MS: u64 = 2;

/// The body of [`write_loop`]; returns when the connection is done with.
///
/// A command written after the peer's process ended is lost, and its caller cannot tell
/// whether it ran: the peer may have read it before it ended. But a frame not yet written when
/// the peer's end of stream (our protocol never sends FIN: the process ended) is already in
/// our socket surely never reached it. The reader notices the end of stream only when it is
/// scheduled, which can be after we have written (a busy node, or a peer killed while the
/// connection was idle). So a batch is not written once the reader has found the peer gone,
/// and, after a quiet spell on the connection, not before one nonblocking peek for the end of
/// stream: such a batch is dropped unwritten and reported with the rest of the queue, so the
/// endpoint fails its commands as never sent (a non-idempotent call may then go to another
/// provider). The peek costs one system call, only on connections that read nothing for
/// [`PEEK_AFTER_QUIET_MS`].
async fn write_frames(
    inner: &Arc<Inner>,
    (peer, id): (SocketAddr, u64),
    w: &mut OwnedWriteHalf,
    rx: &mut mpsc::Receiver<Bytes>,
    shared: &Arc<Shared>,
) {
    let mut batch = Vec::new();
    let (mut queue_open, mut acked) = (true, false);
    // Made once, not per frame: each `cancelled()` registers with the token's waiter list.
    let abort = shared.abort.cancelled();
    tokio::pin!(abort);
    while queue_open || !acked {
        let first = tokio::select! {
            biased;
            () = &mut abort => break,
            () = shared.ack_wanted.notified(), if !acked => {
                acked = true;
                None
            }
            f = rx.recv(), if queue_open => {
                queue_open = f.is_some();
                f
            }
        };
        let control: &[u8] = match &first {
            Some(_) => &[],
            None if !queue_open && !shared.goodbye_sent.swap(true, Ordering::Relaxed) => {
                &GOODBYE_FRAME
            }
            None if acked && !shared.ack_sent.swap(true, Ordering::Relaxed) => &GOODBYE_ACK_FRAME,
            None => &[],
        };
        if let Some(first) = first {
            batch.push(first);
            drain_into(rx, &mut batch);
            if batch.len() < WRITE_BATCH {
                // Let the tasks that are about to send run once before the write: pipelined
                // requests then share one syscall instead of paying one each.
                tokio::task::yield_now().await;
                drain_into(rx, &mut batch);
            }
            let quiet = inner
                .now_ms()
                .saturating_sub(shared.last_read.load(Ordering::Relaxed))
                >= PEEK_AFTER_QUIET_MS;
            if shared.peer_gone.load(Ordering::SeqCst) || (quiet && peer_closed(w)) {
                // Never written: reported as unsent with what is still queued.
                let mut dropped = std::mem::take(&mut batch);
                Counters::add(&inner.stats.frames_dropped, dropped.len() as u64);
                inner.peer_gone(peer, id, shared);
                dropped.extend(drop_queued(inner, rx));
                inner.report_gone(peer, shared, dropped);
                return;
            }
        }
        let size = batch.iter().map(|f| LEN_PREFIX + f.len()).sum::<usize>() + control.len();
        let mut out = BufWriter::with_capacity(size.min(WRITE_BUFFER), &mut *w);
        let write = async {
            for f in &batch {
                let len = u32::try_from(f.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
                out.write_all(&len.to_be_bytes()).await?;
                out.write_all(f).await?;
            }
            out.write_all(control).await?;
            out.flush().await
        };
        match timeout(inner.cfg.frame_timeout, write).await {
            Ok(Ok(())) => {
                let bytes: usize = batch.iter().map(Bytes::len).sum();
                Counters::add(&inner.stats.frames_sent, batch.len() as u64);
                Counters::add(&inner.stats.bytes_sent, bytes as u64);
                batch.clear();
            }
            Ok(Err(_)) => {
                // The peer reset the connection or is gone (EPIPE, ECONNRESET): the batch may
                // have left in part; the rest of the queue surely did not.
                Counters::add(&inner.stats.frames_dropped, batch.len() as u64);
                let _ = w.as_ref().set_zero_linger();
                inner.peer_gone(peer, id, shared);
                return;
            }
            Err(_) => {
                Counters::inc(&inner.stats.rejected_stalled);
                Counters::add(&inner.stats.frames_dropped, batch.len() as u64);
                let _ = w.as_ref().set_zero_linger();
                shared.abort.cancel();
                return;
            }
        }
    }
}

async fn read_loop(
    inner: Arc<Inner>,
    peer: SocketAddr,
    id: u64,
    shared: Arc<Shared>,
    mut r: OwnedReadHalf,
    mut reader: FrameReader,
    _guard: Arc<SocketGuard>,
) {
    let Some(in_tx) = inner.incoming() else {
        shared.abort.cancel();
        return;
    };
    let mut grace: Option<Instant> = None;
    let (mut got_goodbye, mut got_ack) = (false, false);
    let mut burst = 0usize;
    // Made once, not per frame: each `cancelled()` registers with the token's waiter list.
    let abort = shared.abort.cancelled();
    let graceful = shared.graceful.cancelled();
    tokio::pin!(abort, graceful);
    let bad = loop {
        let grace_sleep = async {
            match grace {
                Some(deadline) => sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        let next = tokio::select! {
            biased;
            () = &mut abort => break None,
            () = &mut graceful, if grace.is_none() => {
                grace = Some(Instant::now() + inner.cfg.close_timeout);
                continue;
            }
            () = grace_sleep => break None,
            n = reader.next(&mut r) => n,
        };
        match next {
            Ok(Some(frame)) if frame[..] == [FRAME_VERSION, TRANSPORT_GOODBYE] && !got_goodbye => {
                // The peer sends nothing more: acknowledge, stop using the connection, let
                // our writer flush and say goodbye too.
                got_goodbye = true;
                shared.ack_wanted.notify_one();
                inner.remove_if(peer, id);
                shared.graceful.cancel();
                if got_ack {
                    break None;
                }
            }
            Ok(Some(frame))
                if frame[..] == [FRAME_VERSION, TRANSPORT_GOODBYE_ACK]
                    && shared.goodbye_sent.load(Ordering::Relaxed)
                    && !got_ack =>
            {
                // The peer has read everything we sent.
                got_ack = true;
                if got_goodbye {
                    break None;
                }
            }
            Ok(Some(frame)) => {
                if got_goodbye || check_incoming(&frame).is_err() {
                    break Some(&inner.stats.rejected_garbage);
                }
                let now = inner.now_ms();
                shared.last_active.store(now, Ordering::Relaxed);
                shared.last_read.store(now, Ordering::Relaxed);
                Counters::inc(&inner.stats.frames_received);
                Counters::add(&inner.stats.bytes_received, frame.len() as u64);
                if let Some(sink) = inner.sink.get() {
                    (sink.0)(peer, frame);
                    burst += 1;
                    if burst >= READ_BURST {
                        burst = 0;
                        tokio::task::yield_now().await;
                    }
                    continue;
                }
                let delivered = tokio::select! {
                    biased;
                    () = &mut abort => false,
                    r = in_tx.send((peer, frame)) => r.is_ok(),
                };
                if !delivered {
                    break None;
                }
            }
            Ok(None) | Err(ReadFail::Broken) => {
                // An end of stream or a reset without the peer's goodbye: the peer's process
                // ended (or it aborted the connection). What waits on it fails now.
                if !got_goodbye {
                    inner.peer_gone(peer, id, &shared);
                }
                break None;
            }
            Err(ReadFail::Oversize) => break Some(&inner.stats.rejected_oversize),
            Err(ReadFail::Stalled) => break Some(&inner.stats.rejected_stalled),
        }
    };
    if let Some(counter) = bad {
        Counters::inc(counter);
        tracing::debug!(local = %inner.local, %peer, "closing a connection after bad input");
    }
    // Every close is a reset: see the module docs.
    let _ = r.as_ref().set_zero_linger();
    shared.abort.cancel();
    inner.remove_if(peer, id);
}

async fn idle_sweeper(inner: Arc<Inner>, idle: Duration) {
    let period = (idle / 4).max(Duration::from_millis(10));
    let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
    loop {
        tokio::select! {
            biased;
            () = inner.shutdown.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
        let now = inner.now_ms();
        let mut conns = inner.lock();
        let stale: Vec<SocketAddr> = conns
            .map
            .iter()
            .filter(|(_, h)| {
                now.saturating_sub(h.shared.last_active.load(Ordering::Relaxed)) >= idle_ms
            })
            .map(|(a, _)| *a)
            .collect();
        for addr in stale {
            if let Some(h) = conns.map.remove(&addr) {
                h.shared.graceful.cancel();
                Counters::inc(&inner.stats.connections_reaped_idle);
            }
        }
    }
}

#[async_trait]
impl Transport for TcpTransport {
    fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    fn is_reliable(&self) -> bool {
        true
    }

    fn max_frame_len(&self) -> usize {
        self.inner.cfg.max_frame_len
    }

    fn under_load(&self) -> bool {
        self.inner.under_load()
    }

    async fn send(&self, to: SocketAddr, frame: Bytes) -> Result<(), TransportError> {
        let inner = &self.inner;
        check_outgoing_frame(&frame, inner.cfg.max_frame_len)?;
        if to == inner.local {
            // To ourselves: no socket needed.
            let tx = inner.incoming().ok_or(TransportError::Closed)?;
            let len = frame.len() as u64;
            tx.send((to, BytesMut::from(frame)))
                .await
                .map_err(|_| TransportError::Closed)?;
            Counters::inc(&inner.stats.frames_sent);
            Counters::inc(&inner.stats.frames_received);
            Counters::add(&inner.stats.bytes_sent, len);
            Counters::add(&inner.stats.bytes_received, len);
            return Ok(());
        }
        let deadline = Instant::now() + inner.cfg.send_timeout;
        let mut frame = frame;
        // Two attempts: the connection found in the table may close just as we queue on it.
        for _ in 0..2 {
            let tx = {
                let mut conns = inner.lock();
                if conns.closed {
                    return Err(TransportError::Closed);
                }
                match conns.map.get(&to) {
                    Some(h) => {
                        inner.touch(&h.shared);
                        h.tx.clone()
                    }
                    None => {
                        let (tx, rx) = mpsc::channel(inner.cfg.queue_len.max(1));
                        let shared = inner.new_shared();
                        let id = inner.new_id();
                        inner.insert_capped(
                            &mut conns,
                            to,
                            Handle {
                                id,
                                dialed_by_us: true,
                                tx: tx.clone(),
                                shared: shared.clone(),
                            },
                        );
                        tokio::spawn(dial(inner.clone(), to, id, shared, rx));
                        tx
                    }
                }
            };
            match timeout_at(deadline, tx.send(frame)).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(mpsc::error::SendError(f))) => frame = f,
                Err(_) => {
                    return Err(TransportError::Backpressure {
                        to,
                        waited: inner.cfg.send_timeout,
                    });
                }
            }
        }
        Counters::inc(&inner.stats.frames_dropped);
        Ok(())
    }

    fn try_send(&self, to: SocketAddr, frame: Bytes) -> Result<(), Bytes> {
        let inner = &self.inner;
        if to == inner.local || check_outgoing_frame(&frame, inner.cfg.max_frame_len).is_err() {
            return Err(frame);
        }
        let conns = inner.lock();
        if conns.closed {
            return Err(frame);
        }
        let Some(h) = conns.map.get(&to) else {
            return Err(frame);
        };
        match h.tx.try_send(frame) {
            Ok(()) => {
                inner.touch(&h.shared);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(f) | mpsc::error::TrySendError::Closed(f)) => {
                Err(f)
            }
        }
    }

    async fn recv(&self) -> Result<(SocketAddr, BytesMut), TransportError> {
        self.incoming
            .lock()
            .await
            .recv()
            .await
            .ok_or(TransportError::Closed)
    }

    fn set_sink(&self, sink: FrameSink) -> bool {
        self.inner.sink.set(Sink(sink)).is_ok()
    }

    fn set_refused_sink(&self, sink: RefusedSink) -> bool {
        self.inner.refused.set(Refused(sink)).is_ok()
    }

    fn stats(&self) -> TransportStats {
        self.inner.stats.snapshot()
    }

    async fn close(&self) {
        self.inner.begin_close();
        let deadline = Instant::now() + self.inner.cfg.close_timeout * 2;
        while self.inner.stats.connections_open.load(Ordering::Relaxed) > 0
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzz hook (fuzz/fuzz_targets/tcp_framing.rs) finds the frames of a stream read one
    /// byte at a time, and none after a prefix above the limit.
    #[test]
    fn fuzz_hook_reads_frames_and_stops_at_oversize() {
        let hello = encode_hello("127.0.0.1:7000".parse().unwrap());
        let mut input = vec![1, 0];
        for frame in [&hello[..], &[1, 0x10, 9][..]] {
            input.extend_from_slice(&u32::try_from(frame.len()).unwrap().to_be_bytes());
            input.extend_from_slice(frame);
        }
        assert_eq!(fuzz_stream(&input), Ok(2));
        // A 17-byte frame is above the 16-byte limit: nothing after its prefix is read.
        let mut oversize = vec![1, 0];
        oversize.extend_from_slice(&17u32.to_be_bytes());
        oversize.extend_from_slice(input.get(2..).unwrap());
        assert_eq!(fuzz_stream(&oversize), Ok(0));
    }

    /// Both ends of a connection get the unacknowledged-data timeout (so a black-holed
    /// connection is aborted, not kept with a backed-off retransmission timer), and `None`
    /// leaves the kernel's default.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[tokio::test]
    async fn connections_get_the_unacked_timeout() {
        use rustix::net::sockopt::tcp_user_timeout;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (dialed, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (dialed, (accepted, _)) = (dialed.unwrap(), accepted.unwrap());
        assert_eq!(tcp_user_timeout(&dialed).unwrap(), 0);
        let cfg = TcpConfig::default();
        assert_eq!(cfg.unacked_timeout, Some(Duration::from_secs(15)));
        tune(&dialed, &cfg);
        tune(&accepted, &cfg);
        assert_eq!(tcp_user_timeout(&dialed).unwrap(), 15_000);
        assert_eq!(tcp_user_timeout(&accepted).unwrap(), 15_000);
        assert!(dialed.nodelay().unwrap());
        let kept = TcpStream::connect(addr).await.unwrap();
        tune(
            &kept,
            &TcpConfig {
                unacked_timeout: None,
                ..TcpConfig::default()
            },
        );
        assert_eq!(tcp_user_timeout(&kept).unwrap(), 0);
    }

    #[test]
    fn hello_round_trip_and_checks() {
        let src: IpAddr = "127.0.0.1".parse().unwrap();
        let me: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let h = encode_hello(me);
        assert_eq!(&h[..], &[1, 0x30, 4, 127, 0, 0, 1, 0x0f, 0xa0]);
        assert_eq!(parse_hello(&h, src), Some(me));
        // Unspecified address: the source IP is used.
        let any: SocketAddr = "0.0.0.0:4000".parse().unwrap();
        assert_eq!(parse_hello(&encode_hello(any), src), Some(me));
        // Another host's address is refused.
        let other: SocketAddr = "10.0.0.1:4000".parse().unwrap();
        assert_eq!(parse_hello(&encode_hello(other), src), None);
        // Port 0, truncation, extension, wrong family are refused.
        assert_eq!(
            parse_hello(&encode_hello("127.0.0.1:0".parse().unwrap()), src),
            None
        );
        for cut in 0..h.len() {
            assert_eq!(parse_hello(&h[..cut], src), None);
        }
        let mut long = h.to_vec();
        long.push(0);
        assert_eq!(parse_hello(&long, src), None);
        let mut fam = h.to_vec();
        fam[2] = 5;
        assert_eq!(parse_hello(&fam, src), None);
        let v6: SocketAddr = "[::1]:9".parse().unwrap();
        assert_eq!(
            parse_hello(&encode_hello(v6), "::1".parse().unwrap()),
            Some(v6)
        );
    }

    #[test]
    fn decoder_checks_length_before_reserving() {
        let mut r = FrameReader::new(100, Duration::from_secs(1));
        r.buf.put_u32(u32::MAX);
        assert_eq!(r.decode(), Err(ReadFail::Oversize));
        assert!(r.buf.capacity() < 1024);

        let mut r = FrameReader::new(100, Duration::from_secs(1));
        r.buf.put_u32(3);
        r.buf.put_slice(&[1, 2]);
        assert_eq!(r.decode(), Ok(None));
        assert_eq!(r.want(), 1);
        r.buf.put_slice(&[3, 9]);
        assert_eq!(r.decode().unwrap().as_deref(), Some(&[1u8, 2, 3][..]));
        assert_eq!(&r.buf[..], &[9]);
    }

    /// A reader waiting between frames holds no buffer (an idle connection used to keep its
    /// last one), and reads on once bytes come.
    #[tokio::test(start_paused = true)]
    async fn an_idle_reader_holds_no_buffer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (dialed, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (mut w, accepted) = (dialed.unwrap(), accepted.unwrap().0);
        let (mut r, _w) = accepted.into_split();
        let mut reader = FrameReader::new(100, Duration::from_secs(1));
        for payload in [&b"one"[..], &b"two"[..]] {
            let mut frame = u32::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
            frame.extend_from_slice(payload);
            w.write_all(&frame).await.unwrap();
            let got = reader.next(&mut r).await.unwrap().unwrap();
            assert_eq!(&got[..], payload);
            drop(got);
            // Nothing more comes: the wait ends by the timeout, with the buffer given back.
            let waited = timeout(Duration::from_secs(5), reader.next(&mut r)).await;
            assert!(waited.is_err());
            assert_eq!(reader.buf.capacity(), 0);
        }
    }

    mod props {
        use proptest::prelude::*;

        use super::*;

        fn arb_addr() -> impl Strategy<Value = SocketAddr> {
            prop_oneof![
                (any::<[u8; 4]>(), 1u16..).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
                (any::<[u8; 16]>(), 1u16..).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
            ]
        }

        proptest! {
            #[test]
            fn hello_round_trips(addr in arb_addr()) {
                prop_assert_eq!(parse_hello(&encode_hello(addr), addr.ip()), Some(addr));
            }

            #[test]
            fn hello_parser_never_panics(data in proptest::collection::vec(any::<u8>(), 0..40), v6 in any::<bool>()) {
                let src: IpAddr = if v6 { "::1".parse().unwrap() } else { "127.0.0.1".parse().unwrap() };
                if let Some(a) = parse_hello(&data, src) {
                    prop_assert_eq!(a.ip(), src);
                    prop_assert!(data.len() == 9 || data.len() == 21);
                }
            }

            /// Frames cut into arbitrary chunks decode to the same frames.
            #[test]
            fn decoder_reassembles_any_chunking(
                frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20),
                cuts in proptest::collection::vec(1usize..64, 1..50),
            ) {
                let mut wire = Vec::new();
                for f in &frames {
                    wire.extend_from_slice(&(f.len() as u32).to_be_bytes());
                    wire.extend_from_slice(f);
                }
                let mut r = FrameReader::new(300, Duration::from_secs(1));
                let mut out = Vec::new();
                let mut pos = 0;
                let mut i = 0;
                while pos < wire.len() {
                    let n = cuts[i % cuts.len()].min(wire.len() - pos);
                    r.buf.extend_from_slice(&wire[pos..pos + n]);
                    pos += n;
                    i += 1;
                    while let Some(f) = r.decode().unwrap() {
                        out.push(f.to_vec());
                    }
                }
                prop_assert_eq!(out, frames);
                prop_assert!(r.buf.is_empty());
            }

            /// Arbitrary bytes never panic the decoder nor yield a frame above the limit.
            #[test]
            fn decoder_bounded_on_garbage(data in proptest::collection::vec(any::<u8>(), 0..600), max in 0usize..256) {
                let mut r = FrameReader::new(max, Duration::from_secs(1));
                r.buf.extend_from_slice(&data);
                loop {
                    match r.decode() {
                        Ok(Some(f)) => prop_assert!(f.len() <= max),
                        Ok(None) => { prop_assert!(r.want() >= 1 && r.want() <= READ_CHUNK.max(4096)); break }
                        Err(e) => { prop_assert_eq!(e, ReadFail::Oversize); break }
                    }
                }
            }
        }
    }
}
