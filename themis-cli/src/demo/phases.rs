//! The six phases of the demo and its report: ring, services, discovery, logins, failure,
//! recovery. Each phase prints what it shows and checks it.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use themis_mesh::{
    Bytes, Error as MeshError, MeshConfig, MeshNode, Mode, NetworkId, NodeId, ServiceLocation,
    ServiceSpec, object_id,
};

use themis_cli::appauth::{self, Attempt, CHECK, Check, HANDLER, Handler, Login, UserTable};

use super::appauth::{Batch, logins, run_batch};
use super::plan::{Cast, Plan, Roles, plan};
use super::stats::{
    clockwise_after, ms, percentile, ring_predecessor, ring_successor, split_tolerance,
};
use super::{
    CONCURRENCY, DemoArgs, DemoError, K, MAX_FAILED_PERCENT, NETWORK, RECORD_TTL, RESTORE_PERIOD,
    RING_LIMIT, USERS, mesh_err,
};

/// The client's call timeout (the other nodes keep `MeshConfig::fast`'s 1 s).
const CLIENT_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Logins at least this slow are counted apart in the report.
const SLOW: Duration = Duration::from_millis(500);
/// Weights of the stable version and of the canary of `check`.
const STABLE_WEIGHT: u16 = 95;
const CANARY_WEIGHT: u16 = 5;

/// The running demo: its nodes (in join order), which are alive, and the claims checked.
#[derive(Default)]
pub(super) struct Demo {
    nodes: Vec<MeshNode>,
    ids: Vec<NodeId>,
    alive: Vec<bool>,
    quiet: bool,
    /// The DHT's successor list length.
    successor_list_len: usize,
    claims: AtomicU32,
}

/// What the services phase sets up and later phases use.
struct AppAuth {
    table: Arc<UserTable>,
    users: Vec<Login>,
    /// The stable `check` provider, the canary, and `handler`, each counting its calls.
    stable: Check,
    canary: Check,
    handler: Handler,
}

impl AppAuth {
    /// Calls served so far by `check` v1.0, `check` v1.1 and `handler`.
    fn served(&self) -> [u64; 3] {
        [
            self.stable.served(),
            self.canary.served(),
            self.handler.served(),
        ]
    }

    /// Calls served by each since `before`.
    fn served_since(&self, before: [u64; 3]) -> [u64; 3] {
        let now = self.served();
        [
            now[0].saturating_sub(before[0]),
            now[1].saturating_sub(before[1]),
            now[2].saturating_sub(before[2]),
        ]
    }
}

/// `1 hop`, `2 hops`.
fn hops(n: u32) -> String {
    if n == 1 {
        "1 hop".to_owned()
    } else {
        format!("{n} hops")
    }
}

/// Where the client finds `check` now (no cache); `what` names the step if it fails.
async fn locate_check(cast: &Cast, what: &'static str) -> Result<ServiceLocation, DemoError> {
    cast.client.locate(CHECK).await.map_err(mesh_err(what))
}

/// What a failed claim about `loc` saw: how many providers, under which replica.
fn found_detail(loc: &ServiceLocation) -> String {
    format!(
        "found {} provider(s) under replica {}",
        loc.providers.len(),
        loc.found_under
    )
}

impl Demo {
    /// Runs the six phases.
    pub(super) async fn run(&mut self, args: &DemoArgs) -> Result<(), DemoError> {
        self.quiet = args.quiet;
        let t0 = Instant::now();
        let n = usize::from(args.nodes);
        let network = NetworkId::new(NETWORK).map_err(DemoError::Network)?;
        let plan = plan(&network, n, args.seed).ok_or_else(|| DemoError::Claim {
            claim: "a ring with distinct nodes for each role",
            detail: format!("none drawn from seed {}; try another --seed", args.seed),
        })?;
        let roles = plan.roles;
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

        self.ring(&network, plan, roles.client, args).await?;
        let cast = self.cast(&roles)?;
        let mut rng = fastrand::Rng::with_seed(args.seed);
        let app = self.services(&cast, &mut rng).await?;
        let count = usize::try_from(args.logins).unwrap_or(usize::MAX);
        let batch1 = Arc::new(logins(&mut rng, &app.users, count));
        let batch2 = Arc::new(logins(&mut rng, &app.users, count));
        self.direct_call_refused(&cast, &app).await?;
        self.discovery(&cast).await?;
        self.logins(&cast, &app, &batch1).await?;
        self.failure(&cast, &roles, &app, &batch2).await?;
        self.recovery(&cast, &app).await?;

        println!();
        println!(
            "all {} claims hold: {n} nodes, {} logins, {:.2} s in total",
            self.claims.load(Ordering::Relaxed),
            batch1.len() + batch2.len(),
            t0.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Phase 1: every node joins through the first (the paper's bootstrapping point, §7), then
    /// the ring settles.
    async fn ring(
        &mut self,
        network: &NetworkId,
        plan: Plan,
        client: usize,
        args: &DemoArgs,
    ) -> Result<(), DemoError> {
        println!();
        println!("[1/6] ring");
        self.ids = plan.ids;
        let n = self.ids.len();
        let started = Instant::now();
        for (i, key) in plan.keys.into_iter().enumerate() {
            let mut cfg = MeshConfig::fast(([127, 0, 0, 1], 0).into());
            cfg.k = Some(K);
            cfg.mode = if args.insecure {
                Mode::Insecure
            } else {
                Mode::Secure
            };
            cfg.seed = Some(args.seed.wrapping_add(i as u64));
            cfg.driver.rng_seed = Some(args.seed.wrapping_mul(31).wrapping_add(i as u64));
            cfg.record_ttl = RECORD_TTL;
            cfg.driver.dht.restore_period = RESTORE_PERIOD;
            self.successor_list_len = cfg.driver.dht.successor_list_len;
            if i == client {
                // The client's call timeout covers the handler's own attempts at `check` (up to
                // 3 of 1 s each): a shorter one would make it retry work the handler still does.
                cfg.driver.endpoint.request_timeout = CLIENT_CALL_TIMEOUT;
            }
            if let Some(first) = self.nodes.first() {
                cfg.bootstrap = vec![first.contact()];
            }
            let node = MeshNode::start(network.clone(), key, cfg)
                .await
                .map_err(mesh_err(format!("starting node #{i}")))?;
            self.nodes.push(node);
            self.alive.push(true);
            if (i + 1) % (n / 8).max(1) == 0 || i + 1 == n {
                self.progress(&format!(
                    "joined {}/{n} nodes ({:.2} s)",
                    i + 1,
                    started.elapsed().as_secs_f64()
                ));
            }
        }
        let joined = started.elapsed();
        let settled = self.wait_ring().await?;
        println!(
            "  ring size {n}: all joined in {:.2} s through node {}; every successor list and predecessor right {:.2} s later",
            joined.as_secs_f64(),
            self.ids
                .first()
                .map_or_else(String::new, |id| self.name(id)),
            settled.as_secs_f64()
        );
        Ok(())
    }

    /// Phase 2: the providers register `check` (stable and canary) and `handler`.
    async fn services(&self, cast: &Cast, rng: &mut fastrand::Rng) -> Result<AppAuth, DemoError> {
        println!();
        println!("[2/6] services");
        let users = appauth::users(rng, USERS);
        let table = Arc::new(UserTable::new(&users, rng));
        let app = AppAuth {
            stable: Check::new(Arc::clone(&table)),
            canary: Check::new(Arc::clone(&table)),
            handler: Handler::new(),
            table,
            users,
        };
        let regs = [
            (CHECK, "1.0", STABLE_WEIGHT, &cast.stable),
            (CHECK, "1.1", CANARY_WEIGHT, &cast.canary),
            (HANDLER, "1.0", 100, &cast.handler),
        ];
        println!("    service  version  weight  provider");
        for (svc, version, weight, node) in regs {
            let spec = ServiceSpec::new(version, weight);
            let what = format!(
                "registering '{svc}' v{version} on {}",
                self.name(&node.id())
            );
            let stored = if svc == HANDLER {
                node.register(svc, spec, app.handler.service(node.clone()))
                    .await
            } else {
                let check = if version == "1.0" {
                    &app.stable
                } else {
                    &app.canary
                };
                node.register(svc, spec, check.service()).await
            }
            .map_err(mesh_err(what))?;
            println!(
                "    {svc:<7}  {version:<7}  {weight:<6}  {}  stored on {stored}/{} replicas",
                self.name(&node.id()),
                K + 1
            );
            self.claim(
                stored == K + 1,
                "every registration is stored on all k+1 replicas",
                || format!("'{svc}' v{version} was stored on {stored}"),
            )?;
            if svc == CHECK {
                // Beyond the paper: only the handler's node may call check.
                node.restrict(CHECK, [cast.handler.id()])
                    .map_err(mesh_err("restricting 'check'"))?;
            }
        }
        Ok(app)
    }

    /// Phase 2, end: `check` refuses the client (access policy, beyond the paper).
    async fn direct_call_refused(&self, cast: &Cast, app: &AppAuth) -> Result<(), DemoError> {
        println!(
            "    'check' holds {} users as salted BLAKE2b hashes and accepts calls from 'handler's node only",
            app.table.len()
        );
        let user = app.users.first().map(Login::user).unwrap_or_default();
        let direct = cast
            .client
            .call(CHECK, Bytes::copy_from_slice(user.as_bytes()))
            .await;
        let refused = matches!(direct, Err(MeshError::AccessDenied { .. }));
        let said = match &direct {
            Err(_) if refused => format!(
                "refused: {} is not on the allow-list of 'check'",
                self.name(&cast.client.id())
            ),
            Err(e) => format!("error: {e}"),
            Ok(_) => "ANSWERED".to_owned(),
        };
        println!("    the client calling 'check' directly: {said}");
        self.claim(
            refused,
            "'check' refuses callers outside its allow-list",
            || format!("the client's direct call gave {direct:?}"),
        )
    }

    /// Phase 3: where the client finds `check`: its k+1 replica object ids, the node
    /// responsible for each, and the replica the providers were found under.
    async fn discovery(&self, cast: &Cast) -> Result<(), DemoError> {
        println!();
        println!("[3/6] discovery: where 'check' lives");
        let loc = locate_check(cast, "locating 'check' from the client").await?;
        println!(
            "  the client {} found 'check' under replica {} ({}); object id = h(\"check\" || r), r = 0..={K}",
            self.name(&cast.client.id()),
            loc.found_under,
            hops(loc.lookup_hops)
        );
        self.print_location(&loc)?;
        let found: HashSet<NodeId> = loc.providers.iter().map(|p| p.id).collect();
        self.claim(
            loc.found_under == 0 && found == HashSet::from([cast.stable.id(), cast.canary.id()]),
            "both providers of 'check' are found under replica 0",
            || found_detail(&loc),
        )?;
        let owner0 = loc
            .replicas
            .first()
            .and_then(|p| p.responsible)
            .map(|(id, _)| id);
        self.claim(
            owner0 == Some(cast.owner0.id()),
            "the node planned as the owner of replica 0 owns it",
            || format!("the DHT says {owner0:?}"),
        )
    }

    /// Phase 4: a batch of logins; the answers, the latency and the canary split.
    async fn logins(
        &self,
        cast: &Cast,
        app: &AppAuth,
        batch: &Arc<Vec<Attempt>>,
    ) -> Result<(), DemoError> {
        println!();
        println!(
            "[4/6] batch 1: {} logins from the client through 'handler' -> 'check' ({CONCURRENCY} in flight)",
            batch.len()
        );
        let before = app.served();
        let b = run_batch(&cast.client, batch).await;
        let calls = app.served_since(before);
        self.print_batch(&b, batch, calls[2]);
        self.claim(
            b.failed == 0 && b.wrong == 0,
            "every login of batch 1 gets the answer the table gives",
            || {
                format!(
                    "{} failed, {} wrong; first: {}",
                    b.failed,
                    b.wrong,
                    b.first_error.clone().unwrap_or_default()
                )
            },
        )?;
        let total = calls[0] + calls[1];
        let share = if total == 0 {
            0.0
        } else {
            calls[1] as f64 * 100.0 / total as f64
        };
        let want = f64::from(CANARY_WEIGHT) / f64::from(STABLE_WEIGHT + CANARY_WEIGHT);
        let tol = split_tolerance(want, total);
        println!("  'check' calls per provider (load balancing and the canary split)");
        println!("    provider           version  weight  calls   share   expected");
        println!(
            "    {:<17}  1.0      {STABLE_WEIGHT:<6}  {:<6}  {:>5.1}%  {:>5.1}%",
            self.name(&cast.stable.id()),
            calls[0],
            100.0 - share,
            100.0 - want * 100.0
        );
        println!(
            "    {:<17}  1.1      {CANARY_WEIGHT:<6}  {:<6}  {:>5.1}%  {:>5.1}%   (within +-{tol:.1} points)",
            self.name(&cast.canary.id()),
            calls[1],
            share,
            want * 100.0
        );
        self.claim(
            (share - want * 100.0).abs() <= tol,
            "the canary gets its weight's share of the calls",
            || format!("{share:.1}% instead of {:.1}% +- {tol:.1}", want * 100.0),
        )
    }

    /// Phase 5: crash the stable provider and the node responsible for replica 0 of `check`;
    /// discovery falls back to a sibling replica, calls fail over to the canary.
    async fn failure(
        &mut self,
        cast: &Cast,
        roles: &Roles,
        app: &AppAuth,
        batch: &Arc<Vec<Attempt>>,
    ) -> Result<(), DemoError> {
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
        let loc = locate_check(cast, "locating 'check' after the crash").await?;
        let found = self.providers(&loc, Some(cast.stable.id()));
        println!(
            "  discovery from the client (no cache): found under sibling replica {} in {:.2} s: {}",
            loc.found_under,
            t.elapsed().as_secs_f64(),
            found
        );
        self.claim(
            loc.found_under >= 1 && loc.providers.iter().any(|p| p.id == cast.canary.id()),
            "with replica 0's node dead, discovery finds the providers under a sibling replica",
            || found_detail(&loc),
        )?;
        println!("  batch 2: {} logins right after the crash", batch.len());
        let before = app.served();
        let b = run_batch(&cast.client, batch).await;
        let calls = app.served_since(before);
        self.print_batch(&b, batch, calls[2]);
        if b.failed > 0 {
            println!(
                "    {} login(s) failed while the mesh repaired; first: {}",
                b.failed,
                b.first_error.clone().unwrap_or_default()
            );
        }
        println!(
            "  failover: 'check' now served by {} (v1.1): {} calls; the crashed v1.0 served {}",
            self.name(&cast.canary.id()),
            calls[1],
            calls[0]
        );
        self.claim(
            b.wrong == 0,
            "no login gets a wrong answer during failover",
            || b.first_error.clone().unwrap_or_default(),
        )?;
        let total = u64::try_from(batch.len()).unwrap_or(u64::MAX);
        self.claim(
            b.failed.saturating_mul(100) <= total.saturating_mul(MAX_FAILED_PERCENT),
            "at most 5% of the logins fail during failover",
            || {
                format!(
                    "{} of {total} failed; first: {}",
                    b.failed,
                    b.first_error.clone().unwrap_or_default()
                )
            },
        )?;
        self.claim(
            calls[0] == 0 && calls[1] >= b.ok + b.denied,
            "the surviving provider serves every answered login",
            || {
                format!(
                    "v1.0 served {}, v1.1 served {}, answered {}",
                    calls[0],
                    calls[1],
                    b.ok + b.denied
                )
            },
        )
    }

    /// Phase 6: the ring repairs; the surviving provider re-stores and replica 0 is back, on
    /// its new responsible node.
    async fn recovery(&self, cast: &Cast, app: &AppAuth) -> Result<(), DemoError> {
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
        // paper §6.2: "it is the responsibility of any node that stores data in the network to
        // regularly check and re-store the data"; the demo does it now instead of waiting.
        let stored = cast
            .canary
            .register(
                CHECK,
                ServiceSpec::new("1.1", CANARY_WEIGHT),
                app.canary.service(),
            )
            .await
            .map_err(mesh_err("re-storing 'check' from the canary"))?;
        println!(
            "  the surviving provider re-stores its records (the DHT does so every {} s; the demo does it now): {stored}/{} stored",
            RESTORE_PERIOD.as_secs(),
            K + 1
        );
        let loc = locate_check(cast, "locating 'check' after the re-store").await?;
        let found = self.providers(&loc, Some(cast.stable.id()));
        println!(
            "  the client finds 'check' under replica {} again ({}): {}",
            loc.found_under,
            hops(loc.lookup_hops),
            found
        );
        self.print_location(&loc)?;
        // Discovery merges every replica (issue 11): the crashed provider, which could not
        // withdraw its records, is still listed from replicas 1 and 2 until they expire.
        self.claim(
            loc.found_under == 0
                && loc.providers.iter().any(|p| p.id == cast.canary.id())
                && loc
                    .providers
                    .iter()
                    .all(|p| p.id == cast.canary.id() || p.id == cast.stable.id())
                && new_owner.is_some_and(|o| o != cast.owner0.id()),
            "after the re-store, replica 0 is back, on its new responsible node, with the live provider",
            || found_detail(&loc),
        )?;
        let login = app.users.first().map(Login::encode).unwrap_or_default();
        let after = cast
            .client
            .call_with(
                HANDLER,
                Bytes::from(login),
                themis_mesh::CallOptions::default().idempotent(true),
            )
            .await;
        self.claim(after.is_ok(), "logins work after recovery", || {
            format!("{after:?}")
        })
    }

    /// Counts a claim; fails with it unless `ok`.
    fn claim(
        &self,
        ok: bool,
        claim: &'static str,
        detail: impl FnOnce() -> String,
    ) -> Result<(), DemoError> {
        if ok {
            self.claims.fetch_add(1, Ordering::Relaxed);
            Ok(())
        } else {
            Err(DemoError::Claim {
                claim,
                detail: detail(),
            })
        }
    }

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

    /// The providers of `loc` by node and version, `crashed` marked as such.
    fn providers(&self, loc: &ServiceLocation, crashed: Option<NodeId>) -> String {
        let named: Vec<String> = loc
            .providers
            .iter()
            .map(|p| {
                let dead = if Some(p.id) == crashed {
                    " (crashed; listed until its record expires)"
                } else {
                    ""
                };
                format!("{} v{}{dead}", self.name(&p.id), p.version)
            })
            .collect();
        named.join(", ")
    }

    /// `id` with its node number, e.g. `3f2a1b0c (#7)`.
    fn name(&self, id: &NodeId) -> String {
        match self.ids.iter().position(|x| x == id) {
            Some(i) => format!("{} (#{i})", id.short()),
            None => format!("{} (not a demo node)", id.short()),
        }
    }

    fn cast(&self, r: &Roles) -> Result<Cast, DemoError> {
        let get = |i: usize| {
            self.nodes.get(i).cloned().ok_or_else(|| DemoError::Claim {
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
                    if s.state == themis_mesh::dht::NodeState::Member
                        && succs == want
                        && prev == want_prev
                    {
                        good += 1;
                    }
                }
            }
            if good == ids.len() {
                self.claims.fetch_add(1, Ordering::Relaxed);
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

    /// Prints a location's replica table and checks each responsible node against the ring
    /// successor computed from the live ids.
    fn print_location(&self, loc: &ServiceLocation) -> Result<(), DemoError> {
        let ids = self.alive_ids();
        println!(
            "    replica  object id  responsible node (DHT find)         ring successor (from ids)"
        );
        let mut all_match = true;
        let mut detail = String::new();
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
            if got != want && all_match {
                all_match = false;
                detail = format!(
                    "replica {}: DHT says {got_s}, the ids say {want_s}",
                    p.replica
                );
            }
        }
        self.claim(
            all_match,
            "the DHT names the ring successor of each object id as responsible",
            || detail,
        )
    }

    /// Prints a batch's answers and latency; `handled`: the calls `handler` served meanwhile.
    fn print_batch(&self, b: &Batch, batch: &[Attempt], handled: u64) {
        let want_ok = batch.iter().filter(|a| a.valid).count();
        let want_denied = batch.len() - want_ok;
        let answered = b.ok + b.denied + b.wrong;
        let wrong = if b.wrong > 0 {
            format!("; {} WRONG", b.wrong)
        } else {
            String::new()
        };
        println!(
            "  logins     {answered}/{} answered: {} ok (200), {} denied (401); the table says {want_ok} / {want_denied}{wrong}",
            batch.len(),
            b.ok,
            b.denied
        );
        let rate = if b.elapsed.is_zero() {
            0.0
        } else {
            answered as f64 / b.elapsed.as_secs_f64()
        };
        println!(
            "  latency    p50 {}   p99 {}   max {}   ({rate:.0} logins/s; client -> handler -> check -> back)",
            ms(percentile(&b.latencies, 0.50)),
            ms(percentile(&b.latencies, 0.99)),
            ms(b.latencies.last().copied().unwrap_or_default())
        );
        let slow = b.latencies.iter().filter(|l| **l >= SLOW).count();
        if slow > 0 {
            println!(
                "  slow       {slow} login(s) took {} ms or more: a call to a dead provider waits out the 1 s request timeout before failing over",
                SLOW.as_millis()
            );
        }
        let attempts = u64::try_from(batch.len()).unwrap_or(u64::MAX);
        if handled > attempts {
            println!(
                "  retries    'handler' served {handled} calls for {attempts} logins: the client's balancer retried {} after its request timeout",
                handled - attempts
            );
        }
    }

    /// Stops every live node (at once: the demo is over).
    pub(super) async fn stop(&mut self) {
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
}
