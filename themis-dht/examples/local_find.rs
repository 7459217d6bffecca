//! The request path of one find, alone (issue 15 item 2): xtask's workload 1 ("find resolved
//! locally") without the rest of the bench. A ring of two nodes over loopback TCP in this
//! process; the client registers `NAMES` names whose replica 0 lives on the other node (not
//! timed), then looks up the providers of those names, closed loop with 64 in flight, and
//! prints the rate and the process CPU per find. Maintenance runs once a second (fingers every
//! 10 s) and nothing is re-stored, so that nearly all the work after the set-up is the finds.
//!
//! ```text
//! cargo run --release -p themis-dht --example local_find -- [FINDS] [secure|insecure]
//! ```
//!
//! `NODE_THREADS=1` runs each node on a current-thread runtime of its own thread (the client's
//! also runs the load) instead of both on one multi-threaded runtime.
//!
//! `FINDS=0` builds the ring and registers the names only: the difference between two runs
//! under `valgrind --tool=callgrind` (FINDS=0 and FINDS=N) divided by N is the instructions
//! of one find, a figure that does not depend on the machine's load. The allocations per find
//! (both nodes, counted by a counting global allocator, `stats_alloc`, in this example only)
//! are printed too; they do not depend on the load either.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::alloc::System;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use themis_channel::{Mode, TcpConfig};
use themis_crypto::{NetworkId, NodeId};
use themis_dht::{DhtNode, ServiceSpec, object_id};
use tokio::task::JoinSet;

use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use support::{IN_FLIGHT, cpu_secs, env_u64, identity, load_config, settle};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Names whose replica 0 falls in `(client, server]`, the server's arc on a ring of two.
fn server_names(count: usize, client: NodeId, server: NodeId) -> Vec<String> {
    let owned = |id: NodeId| {
        if client < server {
            client < id && id <= server
        } else {
            id > client || id <= server
        }
    };
    (0u64..)
        .map(|i| format!("local-{i:016x}"))
        .filter(|n| owned(object_id(n, 0)))
        .take(count)
        .collect()
}

/// Node `s` of the ring, bound on the current runtime (its tasks run there).
async fn bind(mode: Mode, s: u64) -> DhtNode {
    let mut c = load_config(mode, s);
    c.dht.stabilize_period = Duration::from_secs(1);
    c.dht.finger_period = Duration::from_secs(10);
    // No re-store during the finds (they would add signatures to the instructions counted).
    c.dht.record_ttl = Duration::from_secs(3600);
    c.dht.restore_period = Duration::from_secs(1200);
    DhtNode::bind_tcp(
        "127.0.0.1:0".parse().unwrap(),
        TcpConfig::default(),
        identity("local-find", s),
        NetworkId::new("local-find").unwrap(),
        c,
    )
    .await
    .unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let finds: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let mode = match args.get(1).map(String::as_str) {
        Some("insecure") => Mode::Insecure,
        _ => Mode::Secure,
    };
    if std::env::var("NODE_THREADS").is_ok_and(|v| v == "1") {
        // Each node on a current-thread runtime of its own thread (the client's also runs the
        // load), as two single-threaded processes would: no task moves between threads.
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = std::thread::spawn(move || {
            current_thread().block_on(async move {
                tx.send(bind(mode, 1).await).unwrap();
                let _ = stopped.await;
            });
        });
        let node = rx.recv().unwrap();
        current_thread().block_on(run(finds, mode, Some(node)));
        let _ = stop.send(());
        server.join().unwrap();
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(finds, mode, None));
    }
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Builds the ring (the serving node `server` made elsewhere, or here), registers the names,
/// runs the finds and prints the figures.
async fn run(finds: usize, mode: Mode, server: Option<DhtNode>) {
    let names = env_u64("NAMES").map_or(1_000, |v| v as usize);
    let client = bind(mode, 0).await;
    let server_node = match server {
        Some(s) => s,
        None => bind(mode, 1).await,
    };
    server_node.join([client.contact()]).await.unwrap();
    let nodes = vec![client, server_node];
    let (client, server) = (nodes[0].clone(), nodes[1].id());
    assert!(settle(&nodes).await, "the ring of two did not settle");
    let names = Arc::new(server_names(names, client.id(), server));
    for n in names.iter() {
        let r = client
            .register(ServiceSpec::new(n.clone()), Some(0))
            .await
            .unwrap();
        assert_eq!(r.stored, 1, "{n} not stored");
    }
    println!("{mode:?}: ring of two, {} names registered", names.len());
    if finds == 0 {
        return;
    }
    let next = Arc::new(AtomicUsize::new(0));
    let (c0, start, a0) = (cpu_secs(), Instant::now(), GLOBAL.stats());
    let mut set = JoinSet::new();
    for w in 0..IN_FLIGHT {
        let (next, names, client) = (Arc::clone(&next), Arc::clone(&names), client.clone());
        let mut rng = fastrand::Rng::with_seed(w as u64);
        set.spawn(async move {
            let mut failed = 0usize;
            while next.fetch_add(1, Ordering::Relaxed) < finds {
                let name = &names[rng.usize(..names.len())];
                match client.lookup_providers(name, Some(0)).await {
                    Ok(p) if !p.records.is_empty() => {}
                    _ => failed += 1,
                }
            }
            failed
        });
    }
    let mut failed = 0;
    while let Some(f) = set.join_next().await {
        failed += f.unwrap();
    }
    let (el, cpu, a1) = (
        start.elapsed().as_secs_f64(),
        cpu_secs() - c0,
        GLOBAL.stats(),
    );
    let per = |x: usize| x as f64 / finds as f64;
    println!(
        "{finds} finds in {el:.2} s: {:.0}/s, {failed} failed; CPU {cpu:.2} s = {:.1} us/find; \
         {:.1} allocations ({:.0} bytes) and {:.1} reallocations per find",
        finds as f64 / el,
        cpu * 1e6 / finds as f64,
        per(a1.allocations - a0.allocations),
        per(a1.bytes_allocated - a0.bytes_allocated),
        per(a1.reallocations - a0.reallocations),
    );
    let m = client.metrics().await.unwrap();
    println!(
        "client: requests sent {}, handshakes {}, verify cache hits {} misses {}",
        m.requests_sent,
        m.endpoint.handshakes_initiated_ok,
        m.dht.verify_cache_hits,
        m.dht.verify_cache_misses
    );
}
