//! Network namespaces for real-process tests of partitions and black holes (Linux, root).
//!
//! [`Netns::new`] makes N namespaces with names unique to the test process
//! (`PREFIX-PID-COUNTER-I`), one Linux bridge in a namespace of its own (`PREFIX-PID-COUNTER-br`,
//! so the host's network is never touched), and one veth pair per namespace: `eth0` inside,
//! with one or more addresses in the private 10.200.0.0/24, and `lo` up. Every namespace of a
//! kit reaches every other one over the bridge; nothing reaches the host or another kit.
//!
//! - Processes: [`Netns::spawn_ready`] starts a `themis node` (any binary printing a `ready`
//!   line) inside namespace `i` through `ip netns exec` (which execs the binary, so the
//!   [`Proc`]'s pid, signals and kill-on-drop are the binary's own); [`Netns::run`] runs one to
//!   completion; [`Netns::command`] is the plain `std::process::Command`.
//! - The test process itself: [`Netns::forward`] makes a port of the test's loopback lead to an
//!   address inside a namespace (for HTTP clients of an agent's API that listens on 127.0.0.1
//!   there); [`Netns::run_in`] runs a closure on a thread moved into a namespace (sockets made
//!   there stay in it).
//! - Faults: [`Netns::cut`] turns a namespace into a black hole: every IP packet to or from it is
//!   silently dropped at the bridge (an nftables `bridge` table in the bridge's namespace), so
//!   a sender sees a timeout, never a refusal or "host unreachable" (ARP still passes, so the
//!   neighbour entries stay valid); [`Netns::heal`] removes the rule.
//! - Teardown: everything is removed on drop (a panicking test too); at creation, namespaces of
//!   the same prefix left by a test process that no longer runs (killed before its drop) are
//!   removed, and the processes still running in them killed.
//!
//! A test first calls [`skip_unless_root`]: it prints `SKIPPED: <reason>` and returns `true`
//! when the kit cannot run here (not root, `ip` or `nft` missing, no namespace allowed).
//!
//! ```no_run
//! # async fn t() {
//! use themis_testkit::netns::{Netns, skip_unless_root};
//! if skip_unless_root() {
//!     return;
//! }
//! let net = Netns::new("mytest", &[1, 1]);
//! let dir = std::env::temp_dir();
//! let listen = format!("{}:7000", net.addr(0));
//! let node = net
//!     .spawn_ready(0, "themis", &dir, "a", &["node", "--listen", &listen], &[])
//!     .await;
//! net.cut(0); // node 0 is a black hole now
//! net.heal(0);
//! # }
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::process::{Proc, run, spawn_ready, text};

/// The private /24 of every kit (kits never share a bridge, so they may share the addresses).
pub const SUBNET: [u8; 3] = [10, 200, 0];

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Why the kit cannot run here, or `None` when it can: root, `ip` and `nft` present, and a
/// network namespace can be made. Found out once per test process.
pub fn unavailable() -> Option<String> {
    static FOUND: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    FOUND.get_or_init(find_unavailable).clone()
}

fn find_unavailable() -> Option<String> {
    let uid = Command::new("id").arg("-u").output();
    match uid {
        Ok(o) if String::from_utf8_lossy(&o.stdout).trim() == "0" => {}
        Ok(_) => return Some("network namespace tests need root".into()),
        Err(e) => return Some(format!("cannot run `id -u`: {e}")),
    }
    for (tool, arg) in [("ip", "-V"), ("nft", "--version")] {
        let ok = Command::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Some(format!(
                "`{tool}` is missing (Debian: apt-get install -y iproute2 nftables)"
            ));
        }
    }
    let probe = format!("themis-probe-{}", std::process::id());
    let made = Command::new("ip").args(["netns", "add", &probe]).output();
    match made {
        Ok(o) if o.status.success() => {
            let _ = Command::new("ip").args(["netns", "del", &probe]).output();
            None
        }
        Ok(o) => Some(format!(
            "cannot make a network namespace: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("cannot run `ip netns add`: {e}")),
    }
}

/// `true` (after printing `SKIPPED: <reason>`) when the kit cannot run here; a test returns
/// at once then: `if skip_unless_root() { return; }`.
pub fn skip_unless_root() -> bool {
    match unavailable() {
        Some(why) => {
            println!("SKIPPED: {why}");
            eprintln!("SKIPPED: {why}");
            true
        }
        None => false,
    }
}

/// N network namespaces on one bridge, torn down on drop. See the module documentation.
pub struct Netns {
    names: Vec<String>,
    bridge_ns: String,
    addrs: Vec<Vec<Ipv4Addr>>,
    /// Namespaces made so far (the bridge's first), deleted on drop.
    made: Vec<String>,
    /// Port forwards: dropping a sender stops its thread.
    forwards: Vec<tokio::sync::oneshot::Sender<()>>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

fn nft(ns: &str, script: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Removes the namespaces named `PREFIX-PID-...` whose PID no longer runs, killing what still
/// runs in them.
fn remove_stale(prefix: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    let head = format!("{prefix}-");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(&head)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Ok(pids) = Command::new("ip").args(["netns", "pids", name]).output() {
            for p in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", p]).output();
            }
        }
        let _ = Command::new("ip").args(["netns", "del", name]).output();
    }
}

impl Netns {
    /// Makes `addrs_per_ns.len()` namespaces, namespace `i` with `addrs_per_ns[i]` addresses
    /// (at least one), named `PREFIX-PID-COUNTER-I` (`prefix`: letters, digits and `_` only, so
    /// that stale namespaces of this prefix can be told apart). Panics with the failing `ip`
    /// command; what was made by then is removed on drop.
    pub fn new(prefix: &str, addrs_per_ns: &[usize]) -> Netns {
        assert!(
            !prefix.is_empty()
                && prefix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "the prefix {prefix:?} must be letters, digits or _"
        );
        let total: usize = addrs_per_ns.iter().map(|&k| k.max(1)).sum();
        assert!(total <= 253, "at most 253 addresses in the /24");
        remove_stale(prefix);
        let base = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut net = Netns {
            names: Vec::new(),
            bridge_ns: format!("{base}-br"),
            addrs: Vec::new(),
            made: Vec::new(),
            forwards: Vec::new(),
        };
        let br = net.bridge_ns.clone();
        ip(&["netns", "add", &br]);
        net.made.push(br.clone());
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &br, "link", "set", "br0", "up"]);
        let mut next = 1u8;
        for (i, &k) in addrs_per_ns.iter().enumerate() {
            let name = format!("{base}-{i}");
            ip(&["netns", "add", &name]);
            net.made.push(name.clone());
            let port = format!("v{i}");
            ip(&[
                "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &name,
            ]);
            ip(&["-n", &br, "link", "set", &port, "master", "br0", "up"]);
            let mut mine = Vec::new();
            for _ in 0..k.max(1) {
                let a = Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], next);
                next += 1;
                ip(&[
                    "-n",
                    &name,
                    "addr",
                    "add",
                    &format!("{a}/24"),
                    "dev",
                    "eth0",
                ]);
                mine.push(a);
            }
            ip(&["-n", &name, "link", "set", "eth0", "up"]);
            ip(&["-n", &name, "link", "set", "lo", "up"]);
            net.names.push(name);
            net.addrs.push(mine);
        }
        net
    }

    /// How many namespaces.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// No namespace at all.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The name of namespace `i` (for `ip netns exec NAME`).
    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// The first address of namespace `i`.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        self.addrs[i][0]
    }

    /// Every address of namespace `i`.
    pub fn addrs(&self, i: usize) -> &[Ipv4Addr] {
        &self.addrs[i]
    }

    /// `program` to be run inside namespace `i` (`ip netns exec NAME program`); add its
    /// arguments.
    pub fn command(&self, i: usize, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.names[i], program]);
        cmd
    }

    /// [`crate::process::spawn_ready`] inside namespace `i`: waits for the `ready` line; the
    /// returned [`Proc`] is the binary itself (`ip netns exec` execs it), killed on drop.
    pub async fn spawn_ready(
        &self,
        i: usize,
        bin: &str,
        dir: &Path,
        name: &str,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Proc {
        let all = self.wrapped(i, bin, args);
        spawn_ready("ip", dir, name, &all, envs).await
    }

    /// `bin node --net NET --fast --listen ADDR:0 --api 127.0.0.1:0 EXTRA…` in namespace `i`:
    /// a `themis node` with the fast test profile listening on the namespace's address, its
    /// API on the namespace's loopback, spawned and ready as [`Netns::spawn_ready`] does.
    #[allow(clippy::too_many_arguments)] // the node's arguments, as spawn_ready's plus two
    pub async fn spawn_fast_node(
        &self,
        i: usize,
        bin: &str,
        dir: &Path,
        name: &str,
        net: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Proc {
        let listen = format!("{}:0", self.addr(i));
        let mut args = vec![
            "node",
            "--net",
            net,
            "--fast",
            "--listen",
            &listen,
            "--api",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        self.spawn_ready(i, bin, dir, name, &args, envs).await
    }

    /// `bin register SERVICE --upstream URL --api API` in namespace `i`, again every 250 ms
    /// (at most `tries` times) while the node answers that it is joining or that no replica
    /// stored the record; any other failure panics.
    pub async fn register(
        &self,
        i: usize,
        bin: &str,
        api: &str,
        service: &str,
        upstream: &str,
        tries: usize,
    ) {
        let args = ["register", service, "--upstream", upstream, "--api", api];
        let mut last = String::new();
        for _ in 0..tries {
            let out = self.run(i, bin, &args, &[]).await;
            if out.status.success() {
                return;
            }
            last = text(&out.stderr);
            assert!(
                last.contains("stored on 0 of") || last.contains("the node is joining"),
                "{last}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        panic!("{service} never registered: {last}");
    }

    /// [`crate::process::run`] inside namespace `i`.
    pub async fn run(&self, i: usize, bin: &str, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let all = self.wrapped(i, bin, args);
        run("ip", &all, envs).await
    }

    fn wrapped<'a>(&'a self, i: usize, bin: &'a str, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["netns", "exec", self.names[i].as_str(), bin];
        all.extend_from_slice(args);
        all
    }

    /// Runs `f` on a thread moved into namespace `i` and returns its result; sockets `f`
    /// makes belong to that namespace (and may be used from any thread afterwards).
    pub fn run_in<T: Send>(&self, i: usize, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.names[i]);
        std::thread::scope(|s| {
            s.spawn(|| {
                enter(&path);
                f()
            })
            .join()
            .unwrap()
        })
    }

    /// A port on the test's 127.0.0.1 that leads to `target` as seen from inside namespace
    /// `i` (e.g. an agent's API at 127.0.0.1:PORT there): every connection accepted on it is
    /// relayed to a connection made inside the namespace. Stops when the kit drops.
    pub fn forward(&mut self, i: usize, target: SocketAddr) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let local = listener.local_addr().unwrap();
        let path = format!("/run/netns/{}", self.names[i]);
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            enter(&path);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        accepted = listener.accept() => {
                            let Ok((mut outside, _)) = accepted else { continue };
                            tokio::spawn(async move {
                                if let Ok(mut inside) = tokio::net::TcpStream::connect(target).await {
                                    let _ = tokio::io::copy_bidirectional(&mut outside, &mut inside).await;
                                }
                            });
                        }
                    }
                }
            });
        });
        self.forwards.push(stop);
        local
    }

    /// Makes namespace `i` a black hole: every IPv4 and IPv6 packet to or from it is silently
    /// dropped at the bridge, both ways (senders see timeouts, not refusals). ARP passes.
    pub fn cut(&self, i: usize) {
        let script = format!(
            "table bridge themis_cut_{i} {{\n chain drop_ip {{\n  type filter hook forward priority 0;\n  iifname \"v{i}\" ether type {{ ip, ip6 }} drop\n  oifname \"v{i}\" ether type {{ ip, ip6 }} drop\n }}\n}}\n"
        );
        let out = nft(&self.bridge_ns, &script);
        assert!(
            out.status.success(),
            "nft (cutting namespace {i}): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    /// Ends [`Netns::cut`] of namespace `i` (nothing if it is not cut).
    pub fn heal(&self, i: usize) {
        if self.is_cut(i) {
            let out = nft(
                &self.bridge_ns,
                &format!("delete table bridge themis_cut_{i}\n"),
            );
            assert!(
                out.status.success(),
                "nft (healing namespace {i}): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }

    /// Whether namespace `i` is cut.
    pub fn is_cut(&self, i: usize) -> bool {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.bridge_ns,
                "nft",
                "list",
                "table",
                "bridge",
                &format!("themis_cut_{i}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

/// Moves the calling thread into the network namespace mounted at `path`.
fn enter(path: &str) {
    let ns = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    rustix::thread::move_into_link_name_space(
        ns.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .unwrap_or_else(|e| panic!("setns {path}: {e}"));
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.forwards.clear();
        // Bridge namespace last: deleting a namespace removes its veth ends.
        for name in self.made.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}
