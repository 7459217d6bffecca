//! Tunables of a node. Every table, queue and rate has a limit here.

use std::time::Duration;

/// Largest lost-peer table a configuration may ask for.
const MAX_UNIFY_TABLE: usize = 1024;
/// Most probes per round a configuration may ask for.
const MAX_UNIFY_PROBES: usize = 16;

/// Configuration of a DHT node. Defaults suit a real network; simulations shorten the periods.
///
/// Values below 1 for counts are raised to 1 where zero would make the node useless.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Length `r` of the successor list (Zave). Default 8.
    pub successor_list_len: usize,
    /// Most queries in flight per lookup (α). Default 3. A lookup asks one peer at a time (the
    /// paper's iterative find) and opens to α only when a query fails, is answered without
    /// progress, or stays unanswered for `lookup_stall`.
    pub alpha: usize,
    /// The longest a lookup waits for its one outstanding query before asking up to α peers
    /// at once (a hedge against slow or dead peers). Default 500 ms; `Duration::ZERO` asks α
    /// at once from the start (three times the requests of a healthy lookup). Once the node has
    /// seen 8 answers to its lookup queries it waits less: their smoothed round-trip time plus
    /// four mean deviations (as TCP's retransmission timeout, RFC 6298), at least
    /// `lookup_stall_min`.
    pub lookup_stall: Duration,
    /// The shortest stall the round-trip estimate may give (see `lookup_stall`). Default 20 ms;
    /// a value at or above `lookup_stall` keeps the stall fixed at `lookup_stall`.
    pub lookup_stall_min: Duration,
    /// How many closest preceding nodes a responder returns. Default 3.
    pub closer_count: usize,
    /// Replication factor `k` used when a caller gives none (paper §6.1: k+1 object ids). Default 2.
    pub default_k: u8,
    /// The network's maximum `k`: stores with replica index above it are refused. Default 8.
    pub max_k: u8,
    /// Period of stabilize (Zave's stabilize + notify). Default 1 s.
    pub stabilize_period: Duration,
    /// Period of a full finger-table refresh sweep. Default 5 s.
    pub finger_period: Duration,
    /// Period of the predecessor liveness check. Default 2 s.
    pub check_predecessor_period: Duration,
    /// How long a request may stay unanswered before the core counts it as timed out. Default 5 s.
    pub request_timeout: Duration,
    /// Lifetime `t` of a provider record (paper §6.1: responsible nodes drop values after `t`).
    /// Default 10 min.
    pub record_ttl: Duration,
    /// How often owners re-store their records (default `t/3` = 200 s).
    pub restore_period: Duration,
    /// Delay before a failed replica store is retried. Default 10 s.
    pub retry_delay: Duration,
    /// Tolerated wall-clock difference between nodes when checking record expiry. Default 60 s.
    pub max_clock_skew: Duration,
    /// Period of the expiry sweep of the object table. Default 1 s.
    pub expiry_sweep_period: Duration,
    /// Largest DHT message accepted, checked before decoding. Default 64 KiB.
    pub max_message_size: usize,
    /// Records per handoff/leave message (larger tables are sent in chunks). Default 64.
    pub max_records_per_message: usize,
    /// Provider records per object id. Default 64.
    pub max_records_per_object: usize,
    /// Records one provider may have stored on this node (all objects together). Default 256.
    pub max_records_per_provider: usize,
    /// Records in the object table. Default 100 000.
    pub max_records_total: usize,
    /// Outstanding requests this node has sent. Default 1024.
    pub max_pending_requests: usize,
    /// Queries (finds, registrations, lookups, joins served) in progress. Default 256.
    pub max_queries: usize,
    /// Requests one lookup may send before it gives up. Default 64.
    pub max_lookup_requests: usize,
    /// Candidates one lookup remembers. Default 32.
    pub max_lookup_candidates: usize,
    /// Names this node may register. Default 64.
    pub max_registrations: usize,
    /// Sustained requests per second accepted from one peer. Default 200.
    pub peer_rate_per_sec: u32,
    /// Burst of requests accepted from one peer. Default 400.
    pub peer_rate_burst: u32,
    /// Peers whose request rate is tracked. Default 4096.
    pub max_rate_tracked_peers: usize,
    /// Events and messages waiting in the output queue before new requests are refused as busy.
    /// Default 65 536.
    pub max_outputs: usize,
    /// Provider-record signatures remembered as verified (least recently used evicted), so a
    /// record read, stored or handed over again skips only its Ed25519 check; expiry, identity,
    /// replica range, sequence and quotas are checked every time. Default 4096; 0 disables.
    pub verified_cache_size: usize,
    /// Owners of object ids remembered from the lookups that ended (PROTOCOL.md §6.8): a
    /// registration stores a replica whose object id one of them covers straight at its owner,
    /// without a lookup (the owner's responsibility check confirms it). Each is kept
    /// `owner_cache_ttl`. Default 1024; 0 disables.
    pub owner_cache_size: usize,
    /// How long an owner stays in the owner cache after its first claim. Default 1 minute: an
    /// entry that outlived the ring (a node joined inside its range unseen by the routing
    /// table) costs one store refused `not_responsible` and the lookup after it, while one
    /// forgotten too early costs every later replica of its range a lookup (PROTOCOL.md §6.8
    /// step 6).
    pub owner_cache_ttl: Duration,
    /// Peers remembered from the answers to this node's lookup queries (PROTOCOL.md §6.8 step
    /// 2): they seed later lookups beside the fingers and the successor list, so that a ring
    /// of a few hundred nodes is looked up in one hop, at peers this node has a session with.
    /// Each is kept `peer_cache_ttl` after its last answer and forgotten when a request to it
    /// fails. Default 1024 (about 200 bytes each when full); 0 disables.
    pub peer_cache_size: usize,
    /// How long a peer stays in the peer cache after its last answer. Default 10 minutes: an
    /// entry that outlived its peer costs the one lookup that asks it a stall (and is then
    /// forgotten), while one forgotten too early sends lookups to peers met for the first
    /// time, each a key agreement (PROTOCOL.md §6.8 step 2).
    pub peer_cache_ttl: Duration,
    /// Peers a node remembers after losing contact with them (failed successors, predecessor
    /// and fingers) and its bootstrap contacts, probed at a low rate to find a ring it was
    /// split from (PROTOCOL.md §6.14, ring unification). Default 32; 0 turns probing off.
    pub unify_table_len: usize,
    /// How long a lost peer (or a bootstrap not seen on our ring) is probed before it is
    /// forgotten. Default 24 h.
    pub unify_retention: Duration,
    /// Period of the probe round. Default 10 s (`Config::fast`: 2 s).
    pub unify_probe_period: Duration,
    /// Probes sent per round (the least recently probed entries first). Default 2.
    pub unify_probes_per_period: usize,
    /// Delay before a node re-stores its own registrations after its neighbourhood changed
    /// (a successor or the predecessor failed, or two rings merged here): later changes within
    /// it are folded in, and such re-stores are at least 10 × this apart. Default 3 s
    /// (`Config::fast`: 1 s).
    pub change_restore_delay: Duration,
    /// The key succession statement (PROTOCOL.md §2.9, encoded) this node attaches to the
    /// provider records it signs (§6.4 `succ`), so that discovery maps its old id to its new
    /// one. Default none.
    pub succession: Option<Vec<u8>>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            successor_list_len: 8,
            alpha: 3,
            lookup_stall: Duration::from_millis(500),
            lookup_stall_min: Duration::from_millis(20),
            closer_count: 3,
            default_k: 2,
            max_k: 8,
            stabilize_period: Duration::from_secs(1),
            finger_period: Duration::from_secs(5),
            check_predecessor_period: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            record_ttl: Duration::from_secs(600),
            restore_period: Duration::from_secs(200),
            retry_delay: Duration::from_secs(10),
            max_clock_skew: Duration::from_secs(60),
            expiry_sweep_period: Duration::from_secs(1),
            max_message_size: 64 * 1024,
            max_records_per_message: 64,
            max_records_per_object: 64,
            max_records_per_provider: 256,
            max_records_total: 100_000,
            max_pending_requests: 1024,
            max_queries: 256,
            max_lookup_requests: 64,
            max_lookup_candidates: 32,
            max_registrations: 64,
            peer_rate_per_sec: 200,
            peer_rate_burst: 400,
            max_rate_tracked_peers: 4096,
            max_outputs: 65_536,
            verified_cache_size: 4096,
            owner_cache_size: 1024,
            owner_cache_ttl: Duration::from_secs(60),
            peer_cache_size: 1024,
            peer_cache_ttl: Duration::from_secs(600),
            unify_table_len: 32,
            unify_retention: Duration::from_secs(24 * 3600),
            unify_probe_period: Duration::from_secs(10),
            unify_probes_per_period: 2,
            change_restore_delay: Duration::from_secs(3),
            succession: None,
        }
    }
}

impl Config {
    /// Periods scaled for simulations: stabilize 500 ms, fingers 10 s, predecessor check 1 s,
    /// request timeout 1 s, lookup stall 200 ms, TTL 60 s (re-store 20 s), retry 2 s, no clock
    /// skew, unification probes every 2 s, re-store 1 s after a neighbourhood change.
    pub fn fast() -> Self {
        Self {
            lookup_stall: Duration::from_millis(200),
            stabilize_period: Duration::from_millis(500),
            finger_period: Duration::from_secs(10),
            check_predecessor_period: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            record_ttl: Duration::from_secs(60),
            restore_period: Duration::from_secs(20),
            retry_delay: Duration::from_secs(2),
            max_clock_skew: Duration::ZERO,
            unify_probe_period: Duration::from_secs(2),
            change_restore_delay: Duration::from_secs(1),
            ..Self::default()
        }
    }

    pub(crate) fn sanitized(mut self) -> Self {
        self.successor_list_len = self
            .successor_list_len
            .clamp(1, crate::proto::wire::MAX_PEERS);
        self.alpha = self.alpha.max(1);
        self.closer_count = self.closer_count.clamp(1, crate::proto::wire::MAX_PEERS);
        self.max_records_per_message = self
            .max_records_per_message
            .clamp(1, crate::proto::wire::MAX_RECORDS);
        self.default_k = self.default_k.min(self.max_k);
        self.max_lookup_requests = self.max_lookup_requests.max(1);
        self.max_lookup_candidates = self.max_lookup_candidates.max(self.alpha);
        self.unify_table_len = self.unify_table_len.min(MAX_UNIFY_TABLE);
        self.unify_probes_per_period = self.unify_probes_per_period.clamp(1, MAX_UNIFY_PROBES);
        self.unify_probe_period = self.unify_probe_period.max(Duration::from_millis(100));
        self
    }
}
