//! Counters of one node, read as a snapshot.

use super::record::Refusal;

/// Buckets of the hop histogram: `hops[i]` counts lookups that took `i` hops; the last bucket
/// counts `HOP_BUCKETS - 1` hops or more.
pub const HOP_BUCKETS: usize = 16;

/// A snapshot of a node's counters (all monotonic except `stored_records`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Lookups started (user finds, provider lookups, registrations, finger refreshes, joins
    /// served).
    pub lookups_started: u64,
    /// Lookups that found the target's successor.
    pub lookups_succeeded: u64,
    /// Lookups that ran out of peers or budget.
    pub lookups_failed: u64,
    /// Hop histogram of successful lookups.
    pub hops: [u64; HOP_BUCKETS],
    /// Lookups that opened to α queries in flight because their one query stalled (no answer
    /// within `Config::lookup_stall`).
    pub lookup_stalls: u64,
    /// Answers rejected because they made no progress toward the target (paper §6.2).
    pub lookup_bad_answers: u64,
    /// Records in the object table now.
    pub stored_records: u64,
    /// Records accepted by `store`.
    pub records_accepted: u64,
    /// Records dropped at expiry.
    pub expirations: u64,
    /// Records handed to another node (handoff or leave).
    pub handoff_records_sent: u64,
    /// Records received through handoff or leave.
    pub handoff_records_received: u64,
    /// Copies of handed records taken back because the predecessor that took them failed
    /// (PROTOCOL.md §6.9, "Handed records kept").
    pub records_taken_back: u64,
    /// Ring repairs: dead successor skipped, dead predecessor cleared.
    pub stabilization_repairs: u64,
    /// Successor changes.
    pub successor_changes: u64,
    /// Predecessor changes.
    pub predecessor_changes: u64,
    /// Address checks started: a known id sent a request from a new address (PROTOCOL.md
    /// §6.15).
    pub address_checks: u64,
    /// Address checks whose old address still answered with the id (a second instance with
    /// the same key, or a second address of the same node): the tables kept it.
    pub address_conflicts: u64,
    /// Address checks that moved a peer's table entries to its new address (a node restarted
    /// elsewhere with its key).
    pub peers_readdressed: u64,
    /// Requests refused or records rejected, by reason (indexed like [`Refusal::ALL`]).
    pub rejected: [u64; 17],
    /// Records received from a responder that failed the reader's verification.
    pub records_rejected_by_reader: u64,
    /// Messages that did not decode.
    pub malformed_messages: u64,
    /// Requests sent that timed out or failed.
    pub request_failures: u64,
    /// Record signatures found in the verified-record cache (`Config::verified_cache_size`):
    /// the Ed25519 verification was skipped, every other check ran.
    pub verify_cache_hits: u64,
    /// Record signatures not in the verified-record cache, so verified (counted only while the
    /// cache is enabled).
    pub verify_cache_misses: u64,
    /// Withdrawals started by `unregister` (tombstones signed and sent to the replicas).
    pub withdrawals: u64,
    /// Ring-unification probes sent to lost peers and bootstraps (PROTOCOL.md §6.14).
    pub unify_probes: u64,
    /// Probes answered by a node that did not look like a member of our ring.
    pub unify_foreign: u64,
    /// Successors adopted from another ring (a merge step here).
    pub unify_merges: u64,
    /// Lookups of this node's own successor through the rest of the ring, started when a
    /// walk back toward it was still going at its bound (PROTOCOL.md §6.9).
    pub successor_checks: u64,
    /// Re-stores of this node's registrations started early, after its neighbourhood changed.
    pub change_restores: u64,
    /// Requests sent (every kind), and their DHT payload bytes (the CBOR message, before the
    /// channel's framing).
    pub requests_sent: u64,
    /// Payload bytes of the requests sent.
    pub request_bytes_sent: u64,
    /// Payload bytes of the responses sent.
    pub response_bytes_sent: u64,
    /// `find` requests sent by lookups.
    pub finds_sent: u64,
    /// `find` requests sent by the replica lookups of registrations and withdrawals (part of
    /// `finds_sent`).
    pub replica_finds_sent: u64,
    /// `store` requests sent (registrations and withdrawals).
    pub stores_sent: u64,
    /// Provider records and tombstones this node signed.
    pub records_signed: u64,
    /// Replicas looked up a second time, up to the owner's own answer, because the owner
    /// their first lookup named refused the store as not responsible.
    pub replica_relookups: u64,
    /// Replica stores sent straight to an owner from the owner cache, without a lookup
    /// (`Config::owner_cache_size`).
    pub owner_cache_hits: u64,
}

impl Metrics {
    /// Rejections counted for `reason`.
    pub fn rejected_for(&self, reason: Refusal) -> u64 {
        self.rejected.get(reason.index()).copied().unwrap_or(0)
    }

    pub(crate) fn reject(&mut self, reason: Refusal) {
        if let Some(c) = self.rejected.get_mut(reason.index()) {
            *c += 1;
        }
    }

    pub(crate) fn hop(&mut self, hops: u32) {
        let i = (hops as usize).min(HOP_BUCKETS - 1);
        if let Some(c) = self.hops.get_mut(i) {
            *c += 1;
        }
    }

    /// Adds another snapshot to this one (for network-wide totals in simulations).
    pub fn add(&mut self, o: &Metrics) {
        self.lookups_started += o.lookups_started;
        self.lookups_succeeded += o.lookups_succeeded;
        self.lookups_failed += o.lookups_failed;
        for (a, b) in self.hops.iter_mut().zip(o.hops.iter()) {
            *a += b;
        }
        self.lookup_stalls += o.lookup_stalls;
        self.lookup_bad_answers += o.lookup_bad_answers;
        self.stored_records += o.stored_records;
        self.records_accepted += o.records_accepted;
        self.expirations += o.expirations;
        self.handoff_records_sent += o.handoff_records_sent;
        self.handoff_records_received += o.handoff_records_received;
        self.records_taken_back += o.records_taken_back;
        self.stabilization_repairs += o.stabilization_repairs;
        self.successor_changes += o.successor_changes;
        self.predecessor_changes += o.predecessor_changes;
        self.address_checks += o.address_checks;
        self.address_conflicts += o.address_conflicts;
        self.peers_readdressed += o.peers_readdressed;
        for (a, b) in self.rejected.iter_mut().zip(o.rejected.iter()) {
            *a += b;
        }
        self.records_rejected_by_reader += o.records_rejected_by_reader;
        self.malformed_messages += o.malformed_messages;
        self.request_failures += o.request_failures;
        self.verify_cache_hits += o.verify_cache_hits;
        self.verify_cache_misses += o.verify_cache_misses;
        self.withdrawals += o.withdrawals;
        self.unify_probes += o.unify_probes;
        self.unify_foreign += o.unify_foreign;
        self.unify_merges += o.unify_merges;
        self.successor_checks += o.successor_checks;
        self.change_restores += o.change_restores;
        self.requests_sent += o.requests_sent;
        self.request_bytes_sent += o.request_bytes_sent;
        self.response_bytes_sent += o.response_bytes_sent;
        self.finds_sent += o.finds_sent;
        self.replica_finds_sent += o.replica_finds_sent;
        self.stores_sent += o.stores_sent;
        self.records_signed += o.records_signed;
        self.replica_relookups += o.replica_relookups;
        self.owner_cache_hits += o.owner_cache_hits;
    }
}
