//! Workload 7: the transparent HTTP sidecar (issue 12 item 6). An HTTP client → the caller's
//! agent (`GET /v1/call/web/bench`) → the mesh → the provider's agent → an HTTP upstream, two
//! real `themis node` processes (release build) on loopback, against the same client on the
//! upstream directly (`direct`), and against the client through two relays that only copy
//! bytes (`relay`: the floor of any path with two processes in it). A minimal hyper server in a process of its own is the upstream
//! ([`http_upstream`]: a client and its service are never one process, and `direct` must cross
//! that boundary as wrk and nginx do); the client, in this process, is hyper's HTTP/1.1
//! connection, one keep-alive connection per request in flight
//! (reconnecting when the agent closes one after its 1,000 requests per connection), as wrk
//! does.
//!
//! Each run of the harness (`--runs`) starts both nodes afresh and measures each point (`c=1`,
//! `c=64`) once; the report gives the median and range over the runs.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

use crate::load::{self, ClosedLoop, OpOutcome};
use crate::report::fmt_num;
use crate::spread::Spread;
use crate::workload::{Figure, Goal, Measurement, Metric, Params, PlotAxis, PointSel, Workload};
use crate::{Error, Mode, Profile, Progress};

/// Name of this workload.
pub(crate) const NAME: &str = "sidecar";
/// The environment variable that sets the nodes' worker threads (see [`node_threads`]).
const THREADS_VAR: &str = "THEMIS_BENCH_SIDECAR_THREADS";
/// Requests in flight at the throughput point.
const IN_FLIGHT: usize = 64;
/// The upstream's answer (the size of a small JSON reply).
const ANSWER: &[u8] = b"{\"ok\":true,\"service\":\"bench\"}";
/// Bound on starting a node or reaching the service.
const START_TIMEOUT: Duration = Duration::from_secs(60);

fn werr(mode: Mode, reason: impl ToString) -> Error {
    super::werr(NAME, mode, reason)
}

/// The workspace root (xtask's parent).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Builds `themis` optimised (a no-op when it is up to date) and returns its path. The tiny
/// profile (the test suite's smoke run, inside `cargo test`, which holds the build lock) takes
/// the `themis` beside this executable when there is one, else a debug build.
fn themis_binary(mode: Mode, profile: Profile) -> Result<PathBuf, Error> {
    if profile == Profile::Tiny
        && let Some(beside) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join("themis")))
            .filter(|p| p.is_file())
    {
        return Ok(beside);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = workspace();
    let mut args = vec![
        "build",
        "--quiet",
        "--package",
        "themis-cli",
        "--bin",
        "themis",
    ];
    if profile != Profile::Tiny {
        args.push("--release");
    }
    let status = std::process::Command::new(cargo)
        .current_dir(&root)
        .args(&args)
        .status()
        .map_err(|e| werr(mode, format!("cargo build --release -p themis-cli: {e}")))?;
    if !status.success() {
        return Err(werr(mode, "cargo build --release -p themis-cli failed"));
    }
    Ok(std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join(if profile == Profile::Tiny {
            "debug/themis"
        } else {
            "release/themis"
        }))
}

/// The upstream, in this process: answers every request 200 with [`ANSWER`].
async fn serve_upstream() -> Result<SocketAddr, std::io::Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(ANSWER))))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// `xtask http-upstream`: the upstream in a process of its own (one thread, as an nginx with
/// one worker), so that `direct` crosses a process boundary as every client of a real service
/// does, and as the mesh's path does at each of its hops. Prints `addr=IP:PORT`, then serves
/// until its standard input closes (the bench ended or was killed).
pub fn http_upstream() -> Result<(), Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| werr(Mode::Direct, format!("upstream runtime: {e}")))?;
    rt.block_on(async {
        let addr = serve_upstream()
            .await
            .map_err(|e| werr(Mode::Direct, format!("upstream: {e}")))?;
        println!("addr={addr}");
        let mut stdin = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(_)) = stdin.next_line().await {}
        Ok(())
    })
}

/// `xtask tcp-relay --to ADDR`: the reference point `relay` of this workload, in a process of
/// its own with one thread (as the nodes run with `--threads 1`). It accepts connections and
/// copies the bytes of each, both ways, to a connection of its own to `to`: a proxy that does
/// nothing but move bytes (no HTTP parsing, no encryption, no multiplexing). Two of them in a
/// chain put two processes on the path of every request as the mesh does, so the pair's
/// throughput is what the operating system alone charges for such a path on this machine.
/// Prints `addr=IP:PORT`, then relays until its standard input closes.
pub fn tcp_relay(to: SocketAddr) -> Result<(), Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| werr(Mode::Relay, format!("relay runtime: {e}")))?;
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| werr(Mode::Relay, format!("relay: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| werr(Mode::Relay, format!("relay: {e}")))?;
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(to).await else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        });
        println!("addr={addr}");
        let mut stdin = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(_)) = stdin.next_line().await {}
        Ok(())
    })
}

/// The upstream process ([`http_upstream`]) and its address.
async fn upstream() -> Result<(Child, SocketAddr), String> {
    helper(&["http-upstream"]).await
}

/// A relay process ([`tcp_relay`]) to `to`, and its address.
async fn relay(to: SocketAddr) -> Result<(Child, SocketAddr), String> {
    helper(&["tcp-relay", "--to", &to.to_string()]).await
}

/// Starts this executable with `args` (a helper that prints `addr=IP:PORT` and runs until its
/// standard input closes), killed when dropped.
async fn helper(args: &[&str]) -> Result<(Child, SocketAddr), String> {
    let exe = std::env::current_exe().map_err(|e| format!("this executable: {e}"))?;
    let what = args.first().copied().unwrap_or_default();
    let mut child = Command::new(&exe)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {} {what}: {e}", exe.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let line = tokio::time::timeout(START_TIMEOUT, BufReader::new(stdout).lines().next_line())
        .await
        .map_err(|_| format!("{what} printed no address"))?
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{what} exited before printing its address"))?;
    let addr = line
        .strip_prefix("addr=")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("{what} printed '{line}', not addr=IP:PORT"))?;
    Ok((child, addr))
}

/// The nodes' `--threads`: [`THREADS_VAR`] if set, else 1 (a sidecar's usual share of a busy
/// host: four busy processes share the 2 cores here); `0` leaves the node's default, one
/// worker per core.
fn node_threads() -> String {
    std::env::var(THREADS_VAR)
        .ok()
        .filter(|v| v.parse::<u16>().is_ok_and(|n| n <= 1024))
        .unwrap_or_else(|| "1".to_owned())
}

/// One `themis node` process, killed when dropped.
struct Node {
    _child: Child,
    api: String,
    contact: String,
}

async fn spawn_node(
    bin: &Path,
    dir: &Path,
    name: &str,
    mode: Mode,
    extra: &[&str],
) -> Result<Node, String> {
    let mut args = vec![
        "node",
        "--net",
        "themis-bench",
        "--fast",
        "--api",
        "127.0.0.1:0",
        "--listen",
        "127.0.0.1:0",
    ];
    if mode == Mode::Insecure {
        args.push("--insecure");
    }
    let threads = node_threads();
    if threads != "0" {
        args.extend_from_slice(&["--threads", &threads]);
    }
    args.extend_from_slice(extra);
    let stderr =
        std::fs::File::create(dir.join(format!("{name}.stderr"))).map_err(|e| e.to_string())?;
    let mut child = Command::new(bin)
        .args(&args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(START_TIMEOUT, lines.next_line())
        .await
        .map_err(|_| format!("{name} printed no ready line"))?
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{name} exited before its ready line (see {name}.stderr)"))?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let field = |k: &str| {
        line.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .find(|(key, _)| *key == k)
            .map(|(_, v)| v.to_owned())
            .ok_or_else(|| format!("no {k} in the ready line '{line}'"))
    };
    Ok(Node {
        api: field("api")?.trim_start_matches("http://").to_owned(),
        contact: field("contact")?,
        _child: child,
    })
}

/// A pool of keep-alive HTTP/1.1 connections to one address.
struct Client {
    addr: SocketAddr,
    path: &'static str,
    idle: Mutex<Vec<SendRequest<Empty<Bytes>>>>,
}

impl Client {
    async fn connect(&self) -> Result<SendRequest<Empty<Bytes>>, String> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(send)
    }

    /// One GET, answered 200 with the upstream's body.
    async fn get(&self) -> Result<OpOutcome, String> {
        let idle = self.idle.lock().ok().and_then(|mut v| v.pop());
        let mut send = match idle {
            Some(s) if !s.is_closed() => s,
            _ => self.connect().await?,
        };
        send.ready().await.map_err(|e| e.to_string())?;
        let req = Request::get(self.path)
            .header("host", "127.0.0.1")
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        let keep = !resp
            .headers()
            .get("connection")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if status != 200 || body != ANSWER {
            return Err(format!(
                "answer {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        if keep && let Ok(mut v) = self.idle.lock() {
            v.push(send);
        }
        Ok(OpOutcome::default())
    }
}

/// Sizes of one mode's run.
struct Sizes {
    c1: u64,
    c64: u64,
    min: Duration,
}

fn sizes(p: &Params) -> Sizes {
    Sizes {
        c1: p.profile.pick(20_000, 500, 50),
        c64: p.profile.pick(200_000, 3_000, 200),
        min: p.profile.pick(
            Duration::from_secs(3),
            Duration::from_millis(250),
            Duration::ZERO,
        ),
    }
}

async fn measure(mode: Mode, p: &Params, progress: &Progress) -> Result<Vec<Measurement>, Error> {
    let s = sizes(p);
    let (_upstream, up) = upstream()
        .await
        .map_err(|e| werr(mode, format!("upstream: {e}")))?;
    let dir = std::env::temp_dir().join(format!("themis-bench-sidecar-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| werr(mode, e))?;
    let mut nodes = Vec::new();
    let mut relays = Vec::new();
    let client = if mode == Mode::Direct {
        Client {
            addr: up,
            path: "/bench",
            idle: Mutex::new(Vec::new()),
        }
    } else if mode == Mode::Relay {
        // client -> first relay -> second relay -> upstream.
        let (second, second_addr) = relay(up).await.map_err(|e| werr(mode, e))?;
        let (first, first_addr) = relay(second_addr).await.map_err(|e| werr(mode, e))?;
        relays.push(first);
        relays.push(second);
        Client {
            addr: first_addr,
            path: "/bench",
            idle: Mutex::new(Vec::new()),
        }
    } else {
        let bin = themis_binary(mode, p.profile)?;
        let provider = spawn_node(&bin, &dir, "provider", mode, &[])
            .await
            .map_err(|e| werr(mode, e))?;
        let contact = provider.contact.clone();
        let caller = spawn_node(&bin, &dir, "caller", mode, &["--bootstrap", &contact])
            .await
            .map_err(|e| werr(mode, e))?;
        let register = format!("http://{}/v1/services/web", provider.api);
        let api: SocketAddr = caller
            .api
            .parse()
            .map_err(|e| werr(mode, format!("api address: {e}")))?;
        let papi: SocketAddr = provider
            .api
            .parse()
            .map_err(|e| werr(mode, format!("api address: {e}")))?;
        nodes.push(provider);
        nodes.push(caller);
        register_upstream(papi, &register, up)
            .await
            .map_err(|e| werr(mode, e))?;
        Client {
            addr: api,
            path: "/v1/call/web/bench",
            idle: Mutex::new(Vec::new()),
        }
    };
    let client = Arc::new(client);
    // Reachable (the young ring's discovery), then warm.
    let started = tokio::time::Instant::now();
    while let Err(e) = client.get().await {
        if started.elapsed() > START_TIMEOUT {
            return Err(werr(mode, format!("the service never answered: {e}")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let op = {
        let client = Arc::clone(&client);
        move |_i: u64| {
            let client = Arc::clone(&client);
            async move { client.get().await }
        }
    };
    progress.add_len(IN_FLIGHT as u64 * 20);
    load::closed_loop(
        ClosedLoop::new(IN_FLIGHT, IN_FLIGHT as u64 * 20),
        progress,
        op.clone(),
    )
    .await?;
    let nodes_n = if matches!(mode, Mode::Direct | Mode::Relay) {
        0
    } else {
        2
    };
    let mut out = Vec::new();
    for (point, c, ops) in [("c=1", 1, s.c1), ("c=64", IN_FLIGHT, s.c64)] {
        progress.add_len(ops);
        progress.message(point);
        let run =
            load::closed_loop(ClosedLoop::new(c, ops).lasting(s.min), progress, op.clone()).await?;
        out.push(Measurement::from_stats(NAME, mode, point, nodes_n, &run).with_concurrency(c));
    }
    drop(nodes);
    drop(relays);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(out)
}

/// `PUT /v1/services/web {"upstream": …}` on the provider's agent.
async fn register_upstream(api: SocketAddr, url: &str, up: SocketAddr) -> Result<(), String> {
    let body = format!("{{\"upstream\":\"http://{up}/\"}}");
    let started = tokio::time::Instant::now();
    loop {
        let stream = TcpStream::connect(api).await.map_err(|e| e.to_string())?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = Request::put(url)
            .header("host", api.to_string())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.clone())))
            .map_err(|e| e.to_string())?;
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        // A young ring may store no replica yet (issue 11): try again.
        if started.elapsed() > START_TIMEOUT {
            let b = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            return Err(format!(
                "register: {status}: {}",
                String::from_utf8_lossy(&b)
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Workload 7.
#[derive(Debug, Default)]
pub(crate) struct Sidecar;

impl Workload for Sidecar {
    fn name(&self) -> &'static str {
        NAME
    }

    fn title(&self) -> &'static str {
        "7. transparent HTTP sidecar (issue 12)"
    }

    fn method(&self) -> String {
        format!(
            "An HTTP/1.1 client (hyper, one keep-alive connection per request in flight) sends \
             `GET /v1/call/web/bench` to a `themis node` agent (release build, `--fast --threads \
             {threads}`; set {THREADS_VAR}=0 for one worker per core), which \
             calls `web` through the mesh on a second `themis node` whose agent forwards the \
             request to an HTTP upstream (hyper, a process of its own with one thread, \
             `xtask http-upstream`, answering 200 with a \
             {}-byte body); `direct` is the same client on the upstream, and `relay` the same \
             client through two processes that only copy bytes (`xtask tcp-relay`, one thread \
             each, a connection onwards per connection accepted) on the way to the upstream: \
             two processes in the path as the mesh puts there, without HTTP, encryption or \
             the mesh, so what the operating system alone charges for such a path on this \
             machine. Loopback TCP, every process on the same cores. Closed loop at 1 request in flight (`c=1`, latency) and \
             at {IN_FLIGHT} (`c=64`, throughput); every run of the harness starts both nodes \
             afresh. Quick: 500 / 3K \
             requests per run (at least 0.25 s: a smoke figure, noisy); full: 20K / 200K (at least 3 s). Goal (issue 12): \
             at most 150 µs added at p50 at c=1 and at least 40K req/s through the mesh at \
             c=64. Measured before issue 12 with wrk and nginx on 2 cores: direct p50 25 µs, \
             mesh 252 µs; 102K vs 18K req/s.",
            ANSWER.len(),
            threads = node_threads(),
        )
    }

    fn figures(&self) -> Vec<Figure> {
        use Metric::*;
        use PointSel::Label;
        vec![
            Figure::new(
                "p50 latency, 1 in flight",
                Label("c=1"),
                P50Ms,
                "252 µs before issue 12",
            ),
            Figure::new("p99 latency, 1 in flight", Label("c=1"), P99Ms, ""),
            Figure::new(
                "throughput, 64 in flight",
                Label("c=64"),
                OpsPerSec,
                "18K req/s before issue 12",
            )
            .with_goal(Goal::SecureAtLeast(40_000.0)),
            Figure::new("p99 latency, 64 in flight", Label("c=64"), P99Ms, ""),
        ]
    }

    fn plot_axis(&self) -> Option<PlotAxis> {
        None
    }

    fn modes(&self) -> &'static [Mode] {
        &[Mode::Secure, Mode::Insecure, Mode::Direct, Mode::Relay]
    }

    fn expected_duration(&self, p: &Params) -> Duration {
        // Per mode, averaged: about 5K req/s at c=1 and 20K at c=64 through the mesh, 4x that
        // directly; a few seconds of start-up.
        let s = sizes(p);
        let per_run = (s.c1 as f64 / 5_000.0).max(s.min.as_secs_f64())
            + (s.c64 as f64 / 20_000.0).max(s.min.as_secs_f64());
        Duration::from_secs_f64(per_run * 2.0 / 3.0 + 1.0)
    }

    fn run(&self, mode: Mode, p: &Params, progress: &Progress) -> Result<Vec<Measurement>, Error> {
        let rt = load::runtime()?;
        let out = rt.block_on(measure(mode, p, progress))?;
        if let Some(m) = out.iter().find(|m| m.errors > 0 || m.ops == 0) {
            return Err(werr(
                mode,
                m.note
                    .clone()
                    .unwrap_or_else(|| format!("{}: no request succeeded", m.point)),
            ));
        }
        Ok(out)
    }

    fn extra_markdown(&self, results: &[Measurement]) -> Option<String> {
        added_table(results)
    }
}

/// The report's table of what the sidecar path adds to the client on the upstream directly.
/// The added p50 is the difference of the medians, and "within noise" where the mode's runs
/// and the direct runs overlap.
fn added_table(results: &[Measurement]) -> Option<String> {
    let get = |mode: Mode, point: &str| {
        results
            .iter()
            .find(|m| m.workload == NAME && m.mode == mode && m.point == point)
    };
    let us = |m: &Measurement, metric| m.spread(metric).map(|s| s.scaled(1e3));
    let show = |s: Option<Spread>, unit: &str| {
        s.map_or_else(
            || "—".to_owned(),
            |s| format!("{} {unit}", s.display()).trim_end().to_owned(),
        )
    };
    let direct = us(get(Mode::Direct, "c=1")?, Metric::P50Ms)?;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Added by the sidecar path against the client on the upstream directly (goal: at \
         most 150 µs at p50 at c=1, at least 40K req/s at c=64); medians over the runs, \
         their range in brackets:\n"
    );
    let _ = writeln!(
        s,
        "| mode | p50 c=1 | added p50 | p99 c=1 | req/s c=64 | p99 c=64 | goals |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for mode in [Mode::Direct, Mode::Relay, Mode::Insecure, Mode::Secure] {
        let (Some(a), Some(b)) = (get(mode, "c=1"), get(mode, "c=64")) else {
            continue;
        };
        let p50 = us(a, Metric::P50Ms);
        let added = p50.map(|p| (p.median - direct.median, p.overlaps(&direct)));
        let tput = b.spread(Metric::OpsPerSec);
        let goals = if matches!(mode, Mode::Direct | Mode::Relay) {
            "—".to_owned()
        } else {
            let latency = match added {
                Some((v, _)) if v <= 150.0 => "met",
                Some((_, true)) => "undecided (within noise)",
                Some((_, false)) => "missed",
                None => "not measured",
            };
            let throughput = match tput {
                Some(t) if t.median >= 40_000.0 => "met",
                Some(_) => "missed",
                None => "not measured",
            };
            format!("{latency} / {throughput}")
        };
        let added = match (mode, added, p50) {
            (Mode::Direct, ..) | (_, None, _) => "—".to_owned(),
            (_, Some((_, true)), Some(p)) => {
                format!("within noise ({} vs {} µs)", p.range(), direct.range())
            }
            (_, Some((v, _)), _) => format!("{} µs", fmt_num(v)),
        };
        let _ = writeln!(
            s,
            "| {mode} | {} | {added} | {} | {} | {} | {goals} |",
            show(p50, "µs"),
            show(us(a, Metric::P99Ms), "µs"),
            show(tput, ""),
            show(us(b, Metric::P99Ms), "µs"),
        );
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::RunStats;

    /// A point of `mode` over runs with these p50 latencies (µs) and throughputs.
    fn point(mode: Mode, label: &str, runs: &[(u64, f64)]) -> Measurement {
        let runs = runs
            .iter()
            .map(|&(p50_us, rps)| {
                let mut stats = RunStats::default();
                stats.ok = 1000;
                stats.elapsed = Duration::from_secs_f64(1000.0 / rps);
                for _ in 0..1000 {
                    stats.latency.record_ns(p50_us * 1000);
                }
                Measurement::from_stats(NAME, mode, label, 2, &stats)
            })
            .collect();
        Measurement::median_of(runs).unwrap()
    }

    #[test]
    fn the_added_latency_is_within_noise_where_the_runs_overlap() {
        let results = [
            point(Mode::Direct, "c=1", &[(20, 1.0), (25, 1.0), (30, 1.0)]),
            point(Mode::Direct, "c=64", &[(20, 9e4), (25, 1e5), (30, 1.1e5)]),
            // Apart from direct: 180 µs added, the goal missed.
            point(Mode::Secure, "c=1", &[(200, 1.0), (205, 1.0), (210, 1.0)]),
            point(Mode::Secure, "c=64", &[(20, 4e4), (25, 4.5e4), (30, 5e4)]),
            // Overlapping direct: no added latency can be told from the noise.
            point(Mode::Insecure, "c=1", &[(28, 1.0), (200, 1.0), (210, 1.0)]),
            point(Mode::Insecure, "c=64", &[(20, 3e4), (25, 3.5e4), (30, 5e4)]),
            // The reference point: its added latency is shown, and it has no goals.
            point(Mode::Relay, "c=1", &[(80, 1.0), (85, 1.0), (90, 1.0)]),
            point(Mode::Relay, "c=64", &[(20, 3e4), (25, 3.3e4), (30, 3.5e4)]),
        ];
        let md = added_table(&results).unwrap();
        let line = |mode: &str| {
            md.lines()
                .find(|l| l.starts_with(&format!("| {mode} |")))
                .unwrap()
                .to_owned()
        };
        assert_eq!(
            line("secure"),
            "| secure | 205 (200–210) µs | 180 µs | 205 (200–210) µs | 45,000 (40,000–50,000) \
             | 25.0 (20.0–30.0) µs | missed / met |"
        );
        assert_eq!(
            line("insecure"),
            "| insecure | 200 (28.0–210) µs | within noise (28.0–210 vs 20.0–30.0 µs) \
             | 200 (28.0–210) µs | 35,000 (30,000–50,000) | 25.0 (20.0–30.0) µs \
             | undecided (within noise) / missed |"
        );
        assert!(line("direct").contains("| — |"));
        assert_eq!(
            line("relay"),
            "| relay | 85.0 (80.0–90.0) µs | 60.0 µs | 85.0 (80.0–90.0) µs | 33,000 (30,000–35,000) \
             | 25.0 (20.0–30.0) µs | — |"
        );
        assert_eq!(added_table(&results[2..]), None, "no direct baseline");
    }
}
