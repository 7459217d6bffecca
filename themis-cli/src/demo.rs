//! `themis demo`: the paper's AppAuth (§7) on a local THEMIS service mesh.
//!
//! About 32 mesh nodes in this process over real loopback TCP join the network `twiitr`. Two of
//! them provide `check` (version 1.0 at weight 95 and a canary 1.1 at weight 5), which validates
//! a username/password pair against a table of salted hashes; a third provides `handler`, which
//! validates a login by calling `check` through the mesh (a provider that is also a caller). A
//! client node runs a batch of logins through `handler`, then the demo crashes the stable
//! `check` provider and the node responsible for replica 0 of `check`, runs a second batch
//! (failover), lets the ring repair and has the surviving provider re-store (recovery).
//!
//! Every claim the report makes is checked; a claim that does not hold ends the demo with a
//! non-zero exit and a message naming it.

mod stats;
mod users;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use themis_crypto::Transcript;
use themis_mesh::{
    Bytes, Error as MeshError, IdentityKeypair, MeshConfig, MeshNode, Mode, NetworkId, NodeId,
    ServiceLocation, ServiceSpec, object_id,
};
use zeroize::Zeroizing;

use stats::{clockwise_after, ms, percentile, ring_predecessor, ring_successor, split_tolerance};
use users::{Login, UserTable};

/// The paper's example network (§7).
const NETWORK: &str = "twiitr";
/// Replication factor: `check` is stored under `k + 1 = 3` object ids (paper §7, `k = 2`).
const K: u8 = 2;
/// Users in `check`'s table.
const USERS: usize = 64;
/// Logins in flight at once from the client.
const CONCURRENCY: usize = 16;
/// Record lifetime and re-store period of the demo: longer than the demo, so that the records
/// of the crashed provider are still listed and the re-store happens when the demo says so.
const RECORD_TTL: Duration = Duration::from_secs(300);
const RESTORE_PERIOD: Duration = Duration::from_secs(120);
/// Bound on the whole demo.
const TIME_LIMIT: Duration = Duration::from_secs(150);
/// Bound on the ring forming (or repairing) once every node has joined.
const RING_LIMIT: Duration = Duration::from_secs(30);
/// Most logins a batch may lose while the mesh repairs after the crash, in percent.
const MAX_FAILED_PERCENT: u64 = 5;

/// Options of `themis demo`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct DemoArgs {
    /// Mesh nodes to start in this process (5..=256).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(5..=256))]
    nodes: u16,
    /// Logins per batch (one batch before the crash, one after).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    logins: u32,
    /// Seed of the node identities, the user table, the login mix and the balancers.
    #[arg(long, default_value_t = 2022)]
    seed: u64,
    /// Use plaintext channels instead of the paper's secure ones (to compare the latency).
    #[arg(long)]
    insecure: bool,
    /// Print the report only, without progress lines.
    #[arg(long)]
    quiet: bool,
}

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum DemoError {
    /// A mesh operation failed.
    #[error("{what}: {source}")]
    Mesh {
        /// What the demo was doing.
        what: String,
        /// The mesh's error.
        #[source]
        source: MeshError,
    },
    /// Something the report claims does not hold.
    #[error("demo claim failed: {claim}: {detail}")]
    Claim {
        /// The claim.
        claim: &'static str,
        /// What was observed instead.
        detail: String,
    },
    /// The demo ran over its time limit.
    #[error(
        "the demo did not finish within {secs} s; the machine may be overloaded: try fewer --nodes or --logins"
    )]
    Timeout {
        /// The limit.
        secs: u64,
    },
}

fn mesh_err(what: impl Into<String>) -> impl FnOnce(MeshError) -> DemoError {
    let what = what.into();
    move |source| DemoError::Mesh { what, source }
}

/// Fails with `claim` unless `ok`.
fn claim(ok: bool, claim: &'static str, detail: impl FnOnce() -> String) -> Result<(), DemoError> {
    if ok {
        Ok(())
    } else {
        Err(DemoError::Claim {
            claim,
            detail: detail(),
        })
    }
}

/// Runs the demo; `Ok` when every claim of the report held.
pub(crate) async fn run(args: DemoArgs) -> Result<(), DemoError> {
    let mut demo = Demo::default();
    let res = match tokio::time::timeout(TIME_LIMIT, demo.run(&args)).await {
        Ok(r) => r,
        Err(_) => Err(DemoError::Timeout {
            secs: TIME_LIMIT.as_secs(),
        }),
    };
    demo.stop().await;
    res
}

/// The nodes' roles, as indices into the node list.
#[derive(Debug, Clone, Copy)]
struct Roles {
    stable: usize,
    canary: usize,
    handler: usize,
    client: usize,
    /// The node responsible for replica 0 of `check`: crashed in the failure phase.
    owner0: usize,
}

/// The nodes playing the roles.
struct Cast {
    stable: MeshNode,
    canary: MeshNode,
    handler: MeshNode,
    client: MeshNode,
    owner0: MeshNode,
}

/// Identities and roles, fixed before any node starts.
struct Plan {
    keys: Vec<Arc<IdentityKeypair>>,
    ids: Vec<NodeId>,
    roles: Roles,
}

/// Draws `n` identities from `seed` and gives the roles: the node responsible for replica 0 of
/// `check` plays no role (it is crashed), the stable provider is responsible for no replica of
/// `check` (so that a live replica remains after both crashes). Redraws the identities in the
/// rare case where one node is responsible for every replica.
fn plan(network: &NetworkId, n: usize, seed: u64) -> Option<Plan> {
    for epoch in 0u32..64 {
        let keys: Vec<Arc<IdentityKeypair>> = (0..n)
            .map(|i| {
                let s = Zeroizing::new(Transcript::digest(
                    "themis/demo/identity",
                    &[
                        &seed.to_be_bytes(),
                        &epoch.to_be_bytes(),
                        &(i as u64).to_be_bytes(),
                    ],
                ));
                Arc::new(IdentityKeypair::from_seed(&s))
            })
            .collect();
        let ids: Vec<NodeId> = keys.iter().map(|k| k.node_id(network)).collect();
        let owners: Vec<NodeId> = (0..=K)
            .filter_map(|r| ring_successor(&ids, &object_id("check", r)))
            .collect();
        let owner0_id = *owners.first()?;
        if owners.iter().all(|o| *o == owner0_id) {
            continue;
        }
        let owner0 = ids.iter().position(|id| *id == owner0_id)?;
        let mut cands: Vec<usize> = (0..n)
            .filter(|&i| ids.get(i).is_some_and(|id| !owners.contains(id)))
            .collect();
        let rest: Vec<usize> = (0..n)
            .filter(|&i| i != owner0 && !cands.contains(&i))
            .collect();
        cands.extend(rest);
        if let [stable, canary, handler, client, ..] = cands[..] {
            return Some(Plan {
                keys,
                ids,
                roles: Roles {
                    stable,
                    canary,
                    handler,
                    client,
                    owner0,
                },
            });
        }
    }
    None
}

/// A login of the batch and whether `check` must accept it.
struct Attempt {
    login: Login,
    valid: bool,
}

/// The users of `check`'s table (in plaintext here: the client plays them).
fn users(rng: &mut fastrand::Rng) -> Vec<Login> {
    (0..USERS)
        .filter_map(|i| {
            let pw: String = std::iter::repeat_with(|| rng.alphanumeric())
                .take(12)
                .collect();
            Login::new(&format!("user{i:02}"), &pw)
        })
        .collect()
}

/// A batch of about 70 % valid logins, 15 % wrong passwords and 15 % unknown users.
fn logins(rng: &mut fastrand::Rng, users: &[Login], count: usize) -> Vec<Attempt> {
    let mut batch = Vec::with_capacity(count);
    for i in 0..count {
        let Some(u) = users.get(rng.usize(..users.len())) else {
            break;
        };
        let roll = rng.u32(0..100);
        let (login, valid) = if roll < 70 {
            (Some(u.clone()), true)
        } else if roll < 85 {
            (Login::new(u.user(), &format!("{}?", rng.u32(..))), false)
        } else {
            (Login::new(&format!("mallory{i}"), "letmein"), false)
        };
        if let Some(login) = login {
            batch.push(Attempt { login, valid });
        }
    }
    batch
}

/// Counts of one batch.
#[derive(Default)]
struct Batch {
    ok: u64,
    denied: u64,
    /// Answers that differ from what `check`'s table says.
    wrong: u64,
    /// Logins that got no answer (an error from the mesh or from `handler`).
    failed: u64,
    first_error: Option<String>,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

const OK_PREFIX: &[u8] = b"200 OK welcome ";
const DENIED: &[u8] = b"401 Unauthorized: unknown user or wrong password";

async fn run_batch(client: &MeshNode, batch: &Arc<Vec<Attempt>>) -> Batch {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (client, batch, next) = (client.clone(), batch.clone(), next.clone());
        tasks.spawn(async move {
            let mut b = Batch::default();
            while let Some(a) = batch.get(next.fetch_add(1, Ordering::Relaxed)) {
                let t = Instant::now();
                let r = client.call("handler", Bytes::from(a.login.encode())).await;
                match r {
                    Ok(body) => {
                        b.latencies.push(t.elapsed());
                        let accepted =
                            body.strip_prefix(OK_PREFIX) == Some(a.login.user().as_bytes());
                        let denied = &body[..] == DENIED;
                        match (a.valid, accepted, denied) {
                            (true, true, _) => b.ok += 1,
                            (false, _, true) => b.denied += 1,
                            _ => {
                                b.wrong += 1;
                                b.first_error.get_or_insert_with(|| {
                                    format!(
                                        "login of '{}' answered {:?}",
                                        a.login.user(),
                                        String::from_utf8_lossy(&body)
                                    )
                                });
                            }
                        }
                    }
                    Err(e) => {
                        b.failed += 1;
                        b.first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            b
        });
    }
    let mut total = Batch::default();
    while let Some(r) = tasks.join_next().await {
        if let Ok(b) = r {
            total.ok += b.ok;
            total.denied += b.denied;
            total.wrong += b.wrong;
            total.failed += b.failed;
            total.latencies.extend(b.latencies);
            if total.first_error.is_none() {
                total.first_error = b.first_error;
            }
        }
    }
    total.latencies.sort_unstable();
    total.elapsed = started.elapsed();
    total
}

/// `check`: validates the pair in the request against the table; counts the calls it serves.
fn check_service(
    table: Arc<UserTable>,
    served: Arc<AtomicU64>,
) -> impl themis_mesh::ServiceHandler {
    move |_caller: NodeId, req: Bytes| {
        let (table, served) = (table.clone(), served.clone());
        async move {
            let login = Login::decode(&req)
                .ok_or("malformed login: expected u8 len, user, u8 len, password")?;
            served.fetch_add(1, Ordering::Relaxed);
            let verdict: &'static [u8] = if table.validate(&login) {
                b"valid"
            } else {
                b"invalid"
            };
            Ok::<_, String>(Bytes::from_static(verdict))
        }
    }
}

/// `handler`: the ingress of AppAuth (paper §7): parses the login, asks `check` through the
/// mesh and answers with a status code and message.
fn handler_service(mesh: MeshNode) -> impl themis_mesh::ServiceHandler {
    move |_caller: NodeId, req: Bytes| {
        let mesh = mesh.clone();
        async move {
            let login = Login::decode(&req)
                .ok_or("400 Bad Request: expected u8 len, user, u8 len, password")?;
            match mesh.call("check", req).await {
                Ok(v) if &v[..] == b"valid" => {
                    let mut out = OK_PREFIX.to_vec();
                    out.extend_from_slice(login.user().as_bytes());
                    Ok(Bytes::from(out))
                }
                Ok(v) if &v[..] == b"invalid" => Ok(Bytes::from_static(DENIED)),
                Ok(_) => Err("502 Bad Gateway: 'check' answered neither valid nor invalid".into()),
                Err(e) => Err(format!("503 Service Unavailable: {e}")),
            }
        }
    }
}

/// The running demo: its nodes, which are alive, and the plan.
#[derive(Default)]
struct Demo {
    nodes: Vec<MeshNode>,
    ids: Vec<NodeId>,
    alive: Vec<bool>,
    quiet: bool,
    /// The DHT's successor list length.
    successor_list_len: usize,
}

impl Demo {
    fn progress(&self, msg: &str) {
        if !self.quiet {
            eprintln!("  .. {msg}");
        }
    }

    fn alive_ids(&self) -> Vec<NodeId> {
        self.ids
            .iter()
            .zip(&self.alive)
            .filter(|(_, a)| **a)
            .map(|(id, _)| *id)
            .collect()
    }

    /// `id` with its node number, e.g. `3f2a1b0c (#7)`.
    fn name(&self, id: &NodeId) -> String {
        match self.ids.iter().position(|x| x == id) {
            Some(i) => format!("{} (#{i})", id.short()),
            None => format!("{} (not a demo node)", id.short()),
        }
    }

    /// Waits until every live node's successor list and predecessor are the ones the ids say
    /// (the successor list too: the DHT's `find` answers from it).
    async fn wait_ring(&self) -> Result<Duration, DemoError> {
        let started = Instant::now();
        let ids = self.alive_ids();
        let mut last_report = Instant::now();
        loop {
            let mut good = 0usize;
            for (node, alive) in self.nodes.iter().zip(&self.alive) {
                if !*alive {
                    continue;
                }
                let me = node.id();
                let want = clockwise_after(&ids, &me, self.successor_list_len);
                let want_prev = ring_predecessor(&ids, &me);
                if let Ok(s) = node.dht().status().await {
                    let succs: Vec<NodeId> = s.successors.iter().map(|p| p.id).collect();
                    let prev = s.predecessor.map(|p| p.id);
                    if s.state == "member" && succs == want && prev == want_prev {
                        good += 1;
                    }
                }
            }
            if good == ids.len() {
                return Ok(started.elapsed());
            }
            if started.elapsed() > RING_LIMIT {
                return Err(DemoError::Claim {
                    claim: "every node knows its true successors and predecessor",
                    detail: format!(
                        "only {good} of {} nodes did after {} s",
                        ids.len(),
                        RING_LIMIT.as_secs()
                    ),
                });
            }
            if last_report.elapsed() > Duration::from_secs(1) {
                self.progress(&format!(
                    "ring: {good}/{} nodes see their true successors and predecessor",
                    ids.len()
                ));
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Prints a location's replica table and checks it against the ring of live ids.
    fn print_location(&self, loc: &ServiceLocation) -> Result<(), DemoError> {
        let ids = self.alive_ids();
        println!(
            "    replica  object id  responsible node (DHT find)         ring successor (from ids)"
        );
        for p in &loc.replicas {
            let want = ring_successor(&ids, &p.object_id);
            let (got, addr) = match p.responsible {
                Some((id, addr)) => (Some(id), addr.to_string()),
                None => (None, "find failed".to_owned()),
            };
            let got_s = got.map_or_else(|| "-".to_owned(), |g| self.name(&g));
            let want_s = want.map_or_else(|| "-".to_owned(), |w| self.name(&w));
            let mark = if got == want { "match" } else { "MISMATCH" };
            println!(
                "    {:<7}  {:<9}  {:<16} {:<19} {:<17} {mark}",
                p.replica,
                p.object_id.short().to_string(),
                got_s,
                addr,
                want_s
            );
            claim(
                got == want,
                "the DHT names the ring successor of each object id as responsible",
                || {
                    format!(
                        "replica {}: DHT says {got_s}, the ids say {want_s}",
                        p.replica
                    )
                },
            )?;
        }
        Ok(())
    }

    fn cast(&self, r: &Roles) -> Result<Cast, DemoError> {
        let get = |i: usize| {
            self.nodes.get(i).cloned().ok_or(DemoError::Claim {
                claim: "every planned node started",
                detail: format!("node #{i} is missing"),
            })
        };
        Ok(Cast {
            stable: get(r.stable)?,
            canary: get(r.canary)?,
            handler: get(r.handler)?,
            client: get(r.client)?,
            owner0: get(r.owner0)?,
        })
    }

    async fn stop(&mut self) {
        let mut set = tokio::task::JoinSet::new();
        for (n, a) in self.nodes.iter().zip(&self.alive) {
            if *a {
                let n = n.clone();
                set.spawn(async move { n.crash().await });
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while set.join_next().await.is_some() {}
        })
        .await;
    }

    #[allow(clippy::too_many_lines)]
    async fn run(&mut self, args: &DemoArgs) -> Result<(), DemoError> {
        self.quiet = args.quiet;
        let t0 = Instant::now();
        let n = usize::from(args.nodes);
        let network = NetworkId::new(NETWORK).map_err(|e| DemoError::Mesh {
            what: format!("network id '{NETWORK}'"),
            source: MeshError::Network(e.to_string()),
        })?;
        let mode = if args.insecure {
            Mode::Insecure
        } else {
            Mode::Secure
        };
        let mut rng = fastrand::Rng::with_seed(args.seed);
        let plan = plan(&network, n, args.seed).ok_or(DemoError::Claim {
            claim: "a ring with distinct nodes for each role",
            detail: format!(
                "no such ring drawn from seed {}; try another --seed",
                args.seed
            ),
        })?;
        let roles = plan.roles;
        self.ids = plan.ids.clone();

        println!("themis demo: AppAuth (paper §7) on a local THEMIS service mesh");
        println!(
            "  network '{NETWORK}', {n} nodes in this process on 127.0.0.1 (TCP), {} channels, k = {K} ({} replicas per name), seed {}",
            if args.insecure {
                "INSECURE plaintext"
            } else {
                "secure (paper Fig. 2/3)"
            },
            K + 1,
            args.seed
        );

        // 1. The ring: every node joins through the first (the paper's bootstrapping point).
        println!();
        println!("[1/6] ring");
        let join_started = Instant::now();
        for (i, key) in plan.keys.iter().enumerate() {
            let mut cfg = MeshConfig::fast(([127, 0, 0, 1], 0).into());
            cfg.k = Some(K);
            cfg.mode = mode;
            cfg.seed = Some(args.seed.wrapping_add(i as u64));
            cfg.driver.rng_seed = Some(args.seed.wrapping_mul(31).wrapping_add(i as u64));
            cfg.record_ttl = RECORD_TTL;
            cfg.driver.dht.restore_period = RESTORE_PERIOD;
            self.successor_list_len = cfg.driver.dht.successor_list_len;
            if let Some(first) = self.nodes.first() {
                cfg.bootstrap = vec![first.contact()];
            }
            let node = MeshNode::start(network.clone(), key.clone(), cfg)
                .await
                .map_err(mesh_err(format!("starting node #{i}")))?;
            self.nodes.push(node);
            self.alive.push(true);
            let step = (n / 8).max(1);
            if (i + 1) % step == 0 || i + 1 == n {
                self.progress(&format!(
                    "joined {}/{n} nodes ({:.2} s)",
                    i + 1,
                    join_started.elapsed().as_secs_f64()
                ));
            }
        }
        let joined = join_started.elapsed();
        let settled = self.wait_ring().await?;
        println!(
            "  ring size {n}: all joined in {:.2} s through node {}; every successor and predecessor correct {:.2} s later",
            joined.as_secs_f64(),
            self.ids
                .first()
                .map_or_else(String::new, |id| self.name(id)),
            settled.as_secs_f64()
        );

        // 2. The services of AppAuth.
        println!();
        println!("[2/6] services");
        let users = users(&mut rng);
        let batch1 = logins(&mut rng, &users, args.logins as usize);
        let batch2 = logins(&mut rng, &users, args.logins as usize);
        let table = Arc::new(UserTable::new(&users, &mut rng));
        let served_stable = Arc::new(AtomicU64::new(0));
        let served_canary = Arc::new(AtomicU64::new(0));
        let cast = self.cast(&roles)?;
        let handler_id = cast.handler.id();
        let regs = [
            ("check", "1.0", 95u16, &cast.stable, &served_stable),
            ("check", "1.1", 5, &cast.canary, &served_canary),
            ("handler", "1.0", 100, &cast.handler, &served_stable),
        ];
        println!("    service  version  weight  provider");
        for (svc, version, weight, node, served) in regs {
            let spec = ServiceSpec::new(version, weight);
            let what = format!(
                "registering '{svc}' v{version} on {}",
                self.name(&node.id())
            );
            let stored = if svc == "check" {
                node.register(svc, spec, check_service(table.clone(), served.clone()))
                    .await
            } else {
                node.register(svc, spec, handler_service(node.clone()))
                    .await
            }
            .map_err(mesh_err(what))?;
            println!(
                "    {svc:<7}  {version:<7}  {weight:<6}  {}  stored on {stored}/{} replicas",
                self.name(&node.id()),
                K + 1
            );
            claim(
                stored == K + 1,
                "every registration is stored on all k+1 replicas",
                || format!("'{svc}' v{version} was stored on {stored}"),
            )?;
            if svc == "check" {
                // Beyond the paper: only the handler may call check.
                node.restrict("check", [handler_id])
                    .map_err(mesh_err("restricting 'check'"))?;
            }
        }
        println!(
            "    'check' holds {} users as salted BLAKE2b hashes; it accepts calls from 'handler's node only (access policy)",
            table.len()
        );
        let direct = cast
            .client
            .call(
                "check",
                Bytes::from(batch1.first().map(|a| a.login.encode()).unwrap_or_default()),
            )
            .await;
        let refused = matches!(direct, Err(MeshError::AccessDenied { .. }));
        println!(
            "    the client calling 'check' directly: {}",
            match &direct {
                Err(_) if refused => format!(
                    "refused: {} is not on the allow-list of 'check'",
                    self.name(&cast.client.id())
                ),
                Err(e) => format!("error: {e}"),
                Ok(_) => "ANSWERED".to_owned(),
            }
        );
        claim(
            refused,
            "'check' refuses callers outside its allow-list",
            || format!("the client's direct call gave {direct:?}"),
        )?;

        // 3. Where check lives.
        println!();
        println!("[3/6] discovery: where 'check' lives");
        let loc = cast
            .client
            .locate("check")
            .await
            .map_err(mesh_err("locating 'check' from the client"))?;
        println!(
            "  the client {} found 'check' under replica {} ({} hops); object id = h(\"check\" || r), r = 0..={K}",
            self.name(&cast.client.id()),
            loc.found_under,
            loc.lookup_hops
        );
        self.print_location(&loc)?;
        let found: HashSet<NodeId> = loc.providers.iter().map(|p| p.id).collect();
        claim(
            loc.found_under == 0 && found == HashSet::from([cast.stable.id(), cast.canary.id()]),
            "both providers of 'check' are found under replica 0",
            || {
                format!(
                    "found {} provider(s) under replica {}",
                    found.len(),
                    loc.found_under
                )
            },
        )?;
        let owner0 = loc
            .replicas
            .first()
            .and_then(|p| p.responsible)
            .map(|(id, _)| id);
        claim(
            owner0 == Some(cast.owner0.id()),
            "the node planned as the owner of replica 0 owns it",
            || format!("the DHT says {owner0:?}"),
        )?;

        // 4. Logins.
        println!();
        let batch1 = Arc::new(batch1);
        let want_ok = batch1.iter().filter(|a| a.valid).count() as u64;
        let want_denied = batch1.len() as u64 - want_ok;
        println!(
            "[4/6] batch 1: {} logins from the client through 'handler' -> 'check' ({CONCURRENCY} in flight)",
            batch1.len()
        );
        let before = (
            served_stable.load(Ordering::Relaxed),
            served_canary.load(Ordering::Relaxed),
        );
        let b1 = run_batch(&cast.client, &batch1).await;
        let calls = (
            served_stable.load(Ordering::Relaxed) - before.0,
            served_canary.load(Ordering::Relaxed) - before.1,
        );
        self.print_batch(&b1, want_ok, want_denied);
        claim(
            b1.failed == 0 && b1.wrong == 0,
            "every login of batch 1 gets the right answer",
            || {
                format!(
                    "{} failed, {} wrong; first: {}",
                    b1.failed,
                    b1.wrong,
                    b1.first_error.clone().unwrap_or_default()
                )
            },
        )?;
        claim(
            b1.ok == want_ok && b1.denied == want_denied,
            "logins accepted and denied as the table says",
            || {
                format!(
                    "{} ok / {} denied, expected {want_ok} / {want_denied}",
                    b1.ok, b1.denied
                )
            },
        )?;
        let total = calls.0 + calls.1;
        let share = if total == 0 {
            0.0
        } else {
            calls.1 as f64 * 100.0 / total as f64
        };
        let tol = split_tolerance(0.05, total);
        println!("  'check' calls per provider (load balancing and the canary split)");
        println!("    provider           version  weight  calls   share   expected");
        println!(
            "    {:<17}  1.0      95      {:<6}  {:>5.1}%  95.0%",
            self.name(&cast.stable.id()),
            calls.0,
            100.0 - share
        );
        println!(
            "    {:<17}  1.1      5       {:<6}  {:>5.1}%   5.0%   (within +-{tol:.1} points)",
            self.name(&cast.canary.id()),
            calls.1,
            share
        );
        claim(
            (share - 5.0).abs() <= tol,
            "the canary gets its weight's share of the calls",
            || format!("{share:.1}% instead of 5% +- {tol:.1}"),
        )?;

        // 5. Failure.
        println!();
        println!(
            "[5/6] failure: crash provider {} (check v1.0) and node {} (responsible for replica 0 of 'check'), without warning",
            self.name(&cast.stable.id()),
            self.name(&cast.owner0.id())
        );
        for (node, i) in [(&cast.stable, roles.stable), (&cast.owner0, roles.owner0)] {
            node.crash().await;
            if let Some(a) = self.alive.get_mut(i) {
                *a = false;
            }
        }
        let t = Instant::now();
        let loc = cast
            .client
            .locate("check")
            .await
            .map_err(mesh_err("locating 'check' after the crash"))?;
        let found: Vec<String> = loc
            .providers
            .iter()
            .map(|p| {
                let dead = if p.id == cast.stable.id() {
                    " (crashed)"
                } else {
                    ""
                };
                format!("{} v{}{dead}", self.name(&p.id), p.version)
            })
            .collect();
        println!(
            "  discovery from the client (no cache): found under sibling replica {} in {:.2} s: {}",
            loc.found_under,
            t.elapsed().as_secs_f64(),
            found.join(", ")
        );
        claim(
            loc.found_under >= 1 && loc.providers.iter().any(|p| p.id == cast.canary.id()),
            "with replica 0's node dead, discovery finds the providers under a sibling replica",
            || {
                format!(
                    "found {} provider(s) under replica {}",
                    loc.providers.len(),
                    loc.found_under
                )
            },
        )?;
        let batch2 = Arc::new(batch2);
        let want_ok2 = batch2.iter().filter(|a| a.valid).count() as u64;
        let want_denied2 = batch2.len() as u64 - want_ok2;
        println!("  batch 2: {} logins right after the crash", batch2.len());
        let before = (
            served_stable.load(Ordering::Relaxed),
            served_canary.load(Ordering::Relaxed),
        );
        let b2 = run_batch(&cast.client, &batch2).await;
        let calls2 = (
            served_stable.load(Ordering::Relaxed) - before.0,
            served_canary.load(Ordering::Relaxed) - before.1,
        );
        self.print_batch(&b2, want_ok2, want_denied2);
        if b2.failed > 0 {
            println!(
                "    {} login(s) failed while the mesh repaired; first: {}",
                b2.failed,
                b2.first_error.clone().unwrap_or_default()
            );
        }
        println!(
            "  failover: 'check' now served by {} (v1.1): {} calls; the crashed v1.0 served {}",
            self.name(&cast.canary.id()),
            calls2.1,
            calls2.0
        );
        claim(
            b2.wrong == 0,
            "no login gets a wrong answer during failover",
            || b2.first_error.clone().unwrap_or_default(),
        )?;
        claim(
            b2.failed * 100 <= batch2.len() as u64 * MAX_FAILED_PERCENT,
            "at most 5% of the logins fail during failover",
            || {
                format!(
                    "{} of {} failed; first: {}",
                    b2.failed,
                    batch2.len(),
                    b2.first_error.clone().unwrap_or_default()
                )
            },
        )?;
        claim(
            calls2.0 == 0 && calls2.1 >= b2.ok + b2.denied,
            "the surviving provider serves every answered login",
            || {
                format!(
                    "v1.0 served {}, v1.1 served {}, answered {}",
                    calls2.0,
                    calls2.1,
                    b2.ok + b2.denied
                )
            },
        )?;

        // 6. Recovery.
        println!();
        println!("[6/6] recovery");
        let repaired = self.wait_ring().await?;
        let ids = self.alive_ids();
        let new_owner = ring_successor(&ids, &object_id("check", 0));
        println!(
            "  ring repaired ({} live nodes) {:.2} s after batch 2; replica 0 of 'check' now belongs to {}",
            ids.len(),
            repaired.as_secs_f64(),
            new_owner.map_or_else(|| "-".to_owned(), |o| self.name(&o))
        );
        let stored = cast
            .canary
            .register(
                "check",
                ServiceSpec::new("1.1", 5),
                check_service(table.clone(), served_canary.clone()),
            )
            .await
            .map_err(mesh_err("re-storing 'check' from the canary"))?;
        println!(
            "  the surviving provider re-stores its records (the DHT does so every {} s; the demo does it now): {stored}/{} stored",
            RESTORE_PERIOD.as_secs(),
            K + 1
        );
        let loc = cast
            .client
            .locate("check")
            .await
            .map_err(mesh_err("locating 'check' after the re-store"))?;
        println!(
            "  the client finds 'check' under replica {} again ({} hops): {}",
            loc.found_under,
            loc.lookup_hops,
            loc.providers
                .iter()
                .map(|p| format!("{} v{}", self.name(&p.id), p.version))
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.print_location(&loc)?;
        claim(
            loc.found_under == 0
                && loc.providers.iter().map(|p| p.id).collect::<Vec<_>>() == vec![cast.canary.id()]
                && new_owner.is_some_and(|o| o != cast.owner0.id()),
            "after the re-store, replica 0 is back on its new responsible node with the live provider",
            || {
                format!(
                    "found {} provider(s) under replica {}",
                    loc.providers.len(),
                    loc.found_under
                )
            },
        )?;
        let after = cast
            .client
            .call(
                "handler",
                Bytes::from(users.first().map(Login::encode).unwrap_or_default()),
            )
            .await;
        claim(after.is_ok(), "logins work after recovery", || {
            format!("{after:?}")
        })?;

        println!();
        println!(
            "all claims hold: {n} nodes, {} logins, {:.2} s in total",
            batch1.len() + batch2.len(),
            t0.elapsed().as_secs_f64()
        );
        Ok(())
    }

    fn print_batch(&self, b: &Batch, want_ok: u64, want_denied: u64) {
        let answered = b.ok + b.denied + b.wrong;
        let total = answered + b.failed;
        let mut line = format!(
            "  logins     {answered}/{total} answered: {} ok (200), {} denied (401)",
            b.ok, b.denied
        );
        let _ = write!(line, "; the table says {want_ok} / {want_denied}");
        if b.wrong > 0 {
            let _ = write!(line, "; {} WRONG", b.wrong);
        }
        println!("{line}");
        let rate = if b.elapsed.is_zero() {
            0.0
        } else {
            answered as f64 / b.elapsed.as_secs_f64()
        };
        println!(
            "  latency    p50 {}   p99 {}   ({rate:.0} logins/s; client -> handler -> check -> back)",
            ms(percentile(&b.latencies, 0.50)),
            ms(percentile(&b.latencies, 0.99))
        );
    }
}
