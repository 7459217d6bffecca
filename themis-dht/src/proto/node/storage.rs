//! The object table's side of the node: which records it accepts (stores, hand-offs, leaves)
//! and which it believes when reading (strengthening paper §6.2: every record is signed by its
//! provider and verified by whoever stores or reads it, so no "ghost objects").

use std::time::Instant;

use themis_crypto::NodeId;

use super::{Node, ms};
use crate::proto::record::{ProviderRecord, Refusal};
use crate::proto::store::{Inserted, Quotas};
use crate::proto::wire::{Response, WireRecord};

impl Node {
    pub(super) fn quotas(&self) -> Quotas {
        Quotas {
            per_object: self.cfg.max_records_per_object,
            per_provider: self.cfg.max_records_per_provider,
            total: self.cfg.max_records_total,
        }
    }

    /// How far in the future an expiry may lie: the TTL plus the tolerated clock skew.
    fn max_ahead_ms(&self) -> u64 {
        ms(self.cfg.record_ttl).saturating_add(ms(self.cfg.max_clock_skew))
    }

    /// paper Table 1 `(store, obj)`, responder side.
    pub(super) fn serve_store(&mut self, now: Instant, sender: &NodeId, w: WireRecord) -> Response {
        match ProviderRecord::try_from(w).and_then(|rec| self.accept_store(now, sender, rec)) {
            Ok(()) => Response::Stored,
            Err(reason) => Response::Refused { reason },
        }
    }

    /// Checks a store in this order: sender is the provider, replica index, self-certifying
    /// identity, responsibility, expiry window, signature, then sequence number and quotas.
    pub(super) fn accept_store(
        &mut self,
        now: Instant,
        sender: &NodeId,
        rec: ProviderRecord,
    ) -> Result<(), Refusal> {
        let r = self.check_store(now, sender, rec);
        match &r {
            Ok(()) => self.metrics.records_accepted += 1,
            Err(reason) => {
                // the refusal is counted when the response is sent; count local ones here
                if sender == &self.ring.me.id {
                    self.metrics.reject(*reason);
                }
            }
        }
        r
    }

    fn check_store(
        &mut self,
        now: Instant,
        sender: &NodeId,
        rec: ProviderRecord,
    ) -> Result<(), Refusal> {
        // beyond the paper: only the provider itself may store its record
        if rec.provider != *sender {
            return Err(Refusal::NotProvider);
        }
        if rec.replica > self.cfg.max_k {
            return Err(Refusal::BadReplica);
        }
        if !rec.provider.is_derived_from(&rec.public_key, &self.network) {
            return Err(Refusal::BadIdentity);
        }
        let oid = rec.object_id();
        // paper §6.1: the successor of the object id is responsible for it
        let alone = self.ring.succs.is_empty();
        if !(alone || (self.ring.pred.is_some() && self.ring.responsible_for(&oid))) {
            return Err(Refusal::NotResponsible);
        }
        self.check_record(&rec, self.wall_ms(now))?;
        let q = self.quotas();
        self.store.insert(rec, q).map(|_: Inserted| ())
    }

    /// Records handed over (by a leaving predecessor or a successor's hand-off): each is
    /// checked for expiry and signature, then stored within the quotas. Returns how many.
    pub(super) fn accept_records(&mut self, now: Instant, records: Vec<WireRecord>) -> usize {
        let wall = self.wall_ms(now);
        let q = self.quotas();
        let mut n = 0;
        for w in records {
            let res = ProviderRecord::try_from(w).and_then(|rec| {
                self.check_record(&rec, wall)?;
                self.store.insert(rec, q)
            });
            match res {
                Ok(_) => n += 1,
                Err(reason) => self.metrics.reject(reason),
            }
        }
        self.metrics.handoff_records_received += n as u64;
        n
    }

    /// Copies of handed records whose object ids are ours again go back into the object table
    /// (PROTOCOL.md §6.9, "Handed records kept"): the predecessor that took them failed, and
    /// an earlier node is our predecessor now. They were checked when first stored here; the
    /// expired ones were swept.
    pub(super) fn take_back_kept(&mut self) {
        let Some(p) = self.ring.pred else { return };
        if self.kept.len() == 0 {
            return;
        }
        let q = self.quotas();
        let me = self.ring.me.id;
        for rec in self.kept.take_range(&p.id, &me, usize::MAX) {
            if matches!(
                self.store.insert(rec, q),
                Ok(Inserted::New | Inserted::Replaced)
            ) {
                self.metrics.records_taken_back += 1;
            }
        }
    }

    /// Readers verify every record they receive (strengthening paper §6.2 "ghost objects").
    pub(super) fn verify_read(
        &mut self,
        w: WireRecord,
        name: &str,
        r: u8,
        wall: u64,
    ) -> Result<ProviderRecord, Refusal> {
        let rec = ProviderRecord::try_from(w)?;
        if rec.name != name || rec.replica != r {
            return Err(Refusal::WrongName);
        }
        self.check_record(&rec, wall)?;
        // A succession statement that does not verify, or names another key, is dropped; the
        // record stands (the statement is outside its signature, PROTOCOL.md §6.4).
        let refused = rec.succession.is_some() && rec.succession(&self.network).is_none();
        Ok(if refused {
            rec.with_succession(None)
        } else {
            rec
        })
    }

    /// The checks every record gets wherever it comes from: its expiry window at `wall` (Unix
    /// ms), then its signature (skipped for a signature known to verify).
    fn check_record(&mut self, rec: &ProviderRecord, wall: u64) -> Result<(), Refusal> {
        rec.check_time(wall, self.max_ahead_ms())?;
        rec.verify_cached(
            &self.network,
            self.cfg.max_k,
            &mut self.verified,
            &mut self.metrics,
        )
    }
}
