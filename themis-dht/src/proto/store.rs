//! The object table (paper §6.1 `OT_id`): object id → provider records, with quotas.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound::{Excluded, Included, Unbounded};
use std::time::Instant;

use themis_crypto::NodeId;

use super::record::{ProviderRecord, Refusal};

#[derive(Clone, Copy, Debug)]
pub(crate) struct Quotas {
    pub(crate) per_object: usize,
    pub(crate) per_provider: usize,
    pub(crate) total: usize,
}

#[derive(Debug, Default)]
pub(crate) struct ObjectStore {
    objects: BTreeMap<NodeId, Vec<ProviderRecord>>,
    per_provider: BTreeMap<NodeId, usize>,
    /// `(expiry, object id, provider)` of every stored record, so the expiry sweep visits only
    /// the expired records rather than the whole table.
    by_expiry: BTreeSet<(u64, NodeId, NodeId)>,
    total: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Inserted {
    New,
    Replaced,
    Unchanged,
}

impl ObjectStore {
    pub(crate) fn len(&self) -> usize {
        self.total
    }

    /// Stores `rec` (already verified). A newer sequence number from the same provider replaces
    /// the older record; an older or conflicting equal one is `Stale`.
    pub(crate) fn insert(&mut self, rec: ProviderRecord, q: Quotas) -> Result<Inserted, Refusal> {
        let oid = rec.object_id();
        let list = self.objects.get(&oid);
        if let Some(old) = list.and_then(|l| l.iter().find(|r| r.provider == rec.provider)) {
            if rec.seq < old.seq || (rec.seq == old.seq && *old != rec) {
                return Err(Refusal::Stale);
            }
            if *old == rec {
                return Ok(Inserted::Unchanged);
            }
            if let Some(slot) = self
                .objects
                .get_mut(&oid)
                .and_then(|l| l.iter_mut().find(|r| r.provider == rec.provider))
            {
                self.by_expiry
                    .remove(&(slot.expires_unix_ms, oid, slot.provider));
                self.by_expiry
                    .insert((rec.expires_unix_ms, oid, rec.provider));
                *slot = rec;
            }
            return Ok(Inserted::Replaced);
        }
        let per_object = list.map_or(0, Vec::len);
        let per_provider = self.per_provider.get(&rec.provider).copied().unwrap_or(0);
        if per_object >= q.per_object || per_provider >= q.per_provider || self.total >= q.total {
            return Err(Refusal::OverQuota);
        }
        *self.per_provider.entry(rec.provider).or_insert(0) += 1;
        self.total += 1;
        self.by_expiry
            .insert((rec.expires_unix_ms, oid, rec.provider));
        // Most objects hold one provider's record: room for exactly one (a `Vec`'s first push
        // makes room for four, 1.6 KB for one record of about 400 bytes).
        self.objects
            .entry(oid)
            .or_insert_with(|| Vec::with_capacity(1))
            .push(rec);
        Ok(Inserted::New)
    }

    /// Records stored for `oid` (paper: "the value it stores for this object").
    pub(crate) fn get(&self, oid: &NodeId) -> &[ProviderRecord] {
        self.objects.get(oid).map_or(&[], Vec::as_slice)
    }

    fn forget(&mut self, provider: &NodeId) {
        if let Some(c) = self.per_provider.get_mut(provider) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                self.per_provider.remove(provider);
            }
        }
        self.total = self.total.saturating_sub(1);
    }

    /// Drops every record whose expiry is at or before `now_ms` (paper §6.1: values are dropped
    /// after the interval `t`). Returns how many were dropped.
    pub(crate) fn expire(&mut self, now_ms: u64) -> usize {
        let mut dropped = 0;
        while let Some(&(exp, oid, provider)) = self.by_expiry.first() {
            if exp > now_ms {
                break;
            }
            self.by_expiry.pop_first();
            let mut hit = false;
            if let Some(list) = self.objects.get_mut(&oid) {
                let before = list.len();
                list.retain(|r| !(r.provider == provider && r.expires_unix_ms == exp));
                hit = list.len() != before;
                if list.is_empty() {
                    self.objects.remove(&oid);
                }
            }
            if hit {
                dropped += 1;
                self.forget(&provider);
            }
        }
        dropped
    }

    /// Up to `max` records whose object id is not in `(pred, me]`: they belong to a node before us.
    pub(crate) fn not_in_range(
        &self,
        pred: &NodeId,
        me: &NodeId,
        max: usize,
    ) -> Vec<ProviderRecord> {
        if pred == me {
            return Vec::new();
        }
        // not in (pred, me] is the arc (me, pred]
        self.in_range(me, pred, max)
    }

    /// Up to `max` records whose object id is in `(pred, me]` (everything when `pred == me`).
    /// The arc is one or two ranges of the ordered table, so a stabilize round with nothing to
    /// hand off costs O(log n), not a full scan.
    fn in_range(&self, pred: &NodeId, me: &NodeId, max: usize) -> Vec<ProviderRecord> {
        let arc: Box<dyn Iterator<Item = (&NodeId, &Vec<ProviderRecord>)>> = if pred == me {
            Box::new(self.objects.iter())
        } else if pred < me {
            Box::new(self.objects.range((Excluded(*pred), Included(*me))))
        } else {
            Box::new(
                self.objects
                    .range((Excluded(*pred), Unbounded))
                    .chain(self.objects.range((Unbounded, Included(*me)))),
            )
        };
        arc.flat_map(|(_, l)| l.iter().cloned()).take(max).collect()
    }

    /// Removes the record of `provider` under `oid` if it still has sequence number `seq`.
    pub(crate) fn remove_exact(&mut self, oid: &NodeId, provider: &NodeId, seq: u64) -> bool {
        let mut removed = false;
        if let Some(list) = self.objects.get_mut(oid) {
            let before = list.len();
            list.retain(|r| {
                let hit = r.provider == *provider && r.seq == seq;
                if hit {
                    self.by_expiry
                        .remove(&(r.expires_unix_ms, *oid, r.provider));
                }
                !hit
            });
            removed = list.len() != before;
            if list.is_empty() {
                self.objects.remove(oid);
            }
        }
        if removed {
            self.forget(provider);
        }
        removed
    }

    /// Every record (for a graceful leave).
    pub(crate) fn all(&self) -> Vec<ProviderRecord> {
        self.objects
            .values()
            .flat_map(|l| l.iter().cloned())
            .collect()
    }

    /// Drops everything (after a completed leave).
    pub(crate) fn clear(&mut self) {
        self.objects.clear();
        self.per_provider.clear();
        self.by_expiry.clear();
        self.total = 0;
    }
}

/// Copies of the records this node handed to a new predecessor (PROTOCOL.md §6.9, "Handed
/// records kept"): never served; taken back when the node is responsible for them again (the
/// predecessor that took them failed) until the time given to [`Kept::keep`] (the node keeps
/// each for `restore_period` after the hand-off), dropped after it or at their expiry. Bounded by the object table's quotas.
#[derive(Debug, Default)]
pub(crate) struct Kept {
    store: ObjectStore,
    /// `(drop at, object id, provider, seq)` of each copy kept, the oldest first.
    order: VecDeque<(Instant, NodeId, NodeId, u64)>,
}

impl Kept {
    /// Copies kept now.
    pub(crate) fn len(&self) -> usize {
        self.store.len()
    }

    /// Keeps a copy of `rec` until `until` (or its expiry); false if over quota.
    pub(crate) fn keep(&mut self, rec: ProviderRecord, until: Instant, q: Quotas) -> bool {
        let key = (until, rec.object_id(), rec.provider, rec.seq);
        if self.store.insert(rec, q).is_err() {
            return false;
        }
        self.order.push_back(key);
        // a copy replaced by a newer one leaves a stale entry behind: bound those too
        while self.order.len() > q.total.saturating_mul(2) {
            if let Some((_, oid, provider, seq)) = self.order.pop_front() {
                self.store.remove_exact(&oid, &provider, seq);
            }
        }
        true
    }

    /// Drops the copies kept past their time, and those expired (`now_ms`, Unix ms).
    pub(crate) fn sweep(&mut self, now: Instant, now_ms: u64) {
        while let Some(&(until, oid, provider, seq)) = self.order.front() {
            if until > now {
                break;
            }
            self.order.pop_front();
            self.store.remove_exact(&oid, &provider, seq);
        }
        self.store.expire(now_ms);
    }

    /// Takes out up to `max` copies whose object id is in `(pred, me]`.
    pub(crate) fn take_range(
        &mut self,
        pred: &NodeId,
        me: &NodeId,
        max: usize,
    ) -> Vec<ProviderRecord> {
        let recs = self.store.in_range(pred, me, max);
        for r in &recs {
            self.store.remove_exact(&r.object_id(), &r.provider, r.seq);
        }
        recs
    }

    /// Drops every copy (the node left).
    pub(crate) fn clear(&mut self) {
        self.store.clear();
        self.order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ServiceSpec;
    use themis_crypto::{IdentityKeypair, NetworkId};

    fn rec(seed: u8, name: &str, seq: u64, exp: u64) -> ProviderRecord {
        ProviderRecord::sign(
            &IdentityKeypair::from_seed(&[seed; 32]),
            &NetworkId::new("t").unwrap(),
            &ServiceSpec::new(name),
            "1.1.1.1:1".parse().unwrap(),
            0,
            exp,
            seq,
        )
    }

    const Q: Quotas = Quotas {
        per_object: 2,
        per_provider: 2,
        total: 3,
    };

    #[test]
    fn newer_replaces_older_is_stale() {
        let mut s = ObjectStore::default();
        assert_eq!(s.insert(rec(1, "a", 5, 10), Q), Ok(Inserted::New));
        assert_eq!(s.insert(rec(1, "a", 5, 10), Q), Ok(Inserted::Unchanged));
        assert_eq!(s.insert(rec(1, "a", 4, 10), Q), Err(Refusal::Stale));
        assert_eq!(s.insert(rec(1, "a", 5, 11), Q), Err(Refusal::Stale));
        assert_eq!(s.insert(rec(1, "a", 6, 10), Q), Ok(Inserted::Replaced));
        assert_eq!(s.len(), 1);
        assert_eq!(s.get(&crate::object_id("a", 0))[0].seq, 6);
    }

    #[test]
    fn quotas() {
        let mut s = ObjectStore::default();
        s.insert(rec(1, "a", 1, 10), Q).unwrap();
        s.insert(rec(2, "a", 1, 10), Q).unwrap();
        assert_eq!(s.insert(rec(3, "a", 1, 10), Q), Err(Refusal::OverQuota)); // per object
        s.insert(rec(1, "b", 1, 10), Q).unwrap();
        assert_eq!(s.insert(rec(4, "c", 1, 10), Q), Err(Refusal::OverQuota)); // total
        let mut s = ObjectStore::default();
        s.insert(rec(1, "a", 1, 10), Q).unwrap();
        s.insert(rec(1, "b", 1, 10), Q).unwrap();
        assert_eq!(s.insert(rec(1, "c", 1, 10), Q), Err(Refusal::OverQuota)); // per provider
    }

    #[test]
    fn expiry_and_removal_free_quota() {
        let mut s = ObjectStore::default();
        s.insert(rec(1, "a", 1, 10), Q).unwrap();
        s.insert(rec(1, "b", 1, 20), Q).unwrap();
        assert_eq!(s.expire(10), 1);
        assert_eq!(s.len(), 1);
        s.insert(rec(1, "c", 1, 20), Q).unwrap();
        let oid = crate::object_id("c", 0);
        let p = IdentityKeypair::from_seed(&[1; 32]).node_id(&NetworkId::new("t").unwrap());
        assert!(!s.remove_exact(&oid, &p, 2));
        assert!(s.remove_exact(&oid, &p, 1));
        assert_eq!(s.len(), 1);
        assert_eq!(s.all().len(), 1);
    }

    /// The derived indexes (expiry, per-provider counts, total) match the table.
    fn consistent(s: &ObjectStore) -> Result<(), String> {
        let recs: Vec<&ProviderRecord> = s.objects.values().flatten().collect();
        let exp: BTreeSet<(u64, NodeId, NodeId)> = recs
            .iter()
            .map(|r| (r.expires_unix_ms, r.object_id(), r.provider))
            .collect();
        let mut per: BTreeMap<NodeId, usize> = BTreeMap::new();
        for r in &recs {
            *per.entry(r.provider).or_insert(0) += 1;
        }
        if exp != s.by_expiry || per != s.per_provider || recs.len() != s.total {
            return Err(format!(
                "{} records, {} in the expiry index, total {}",
                recs.len(),
                s.by_expiry.len(),
                s.total
            ));
        }
        if s.objects.values().any(Vec::is_empty) {
            return Err("empty object list kept".into());
        }
        Ok(())
    }

    const BIG: Quotas = Quotas {
        per_object: 100,
        per_provider: 100,
        total: 100,
    };

    proptest::proptest! {
        /// Inserts, replacements, exact removals and expiry sweeps keep the indexes in step;
        /// a sweep drops exactly the expired records; the handoff selection is exactly the
        /// records outside `(pred, me]`.
        #[test]
        fn indexes_follow_the_table(
            ops in proptest::collection::vec((0u8..4, 1u8..4, 0u8..4, 1u64..3, 1u64..4), 1..40),
            pred in proptest::array::uniform32(proptest::prelude::any::<u8>()),
            me in proptest::array::uniform32(proptest::prelude::any::<u8>()),
            max in 1usize..50,
        ) {
            let mut s = ObjectStore::default();
            for (op, provider, name, seq, exp) in ops {
                let name = format!("n{name}");
                match op {
                    0 | 1 => { let _ = s.insert(rec(provider, &name, seq, exp * 10), BIG); }
                    2 => {
                        let before = s.len();
                        let n = s.expire(exp * 10);
                        proptest::prop_assert_eq!(before - s.len(), n);
                        proptest::prop_assert!(s.all().iter().all(|r| r.expires_unix_ms > exp * 10));
                    }
                    _ => {
                        let p = IdentityKeypair::from_seed(&[provider; 32])
                            .node_id(&NetworkId::new("t").unwrap());
                        s.remove_exact(&crate::object_id(&name, 0), &p, seq);
                    }
                }
                proptest::prop_assert_eq!(consistent(&s), Ok(()));
            }
            let (pred, me) = (NodeId::from_bytes(pred), NodeId::from_bytes(me));
            let want: Vec<ProviderRecord> = s
                .all()
                .into_iter()
                .filter(|r| !crate::proto::ring::in_half_open(&pred, &r.object_id(), &me))
                .collect();
            let got = s.not_in_range(&pred, &me, max);
            proptest::prop_assert_eq!(got.len(), want.len().min(max));
            proptest::prop_assert!(got.iter().all(|r| want.contains(r)));
            // the arc as seen from one of the stored ids, so that it is not always empty
            if let Some(first) = s.all().first().map(ProviderRecord::object_id) {
                let want = s
                    .all()
                    .into_iter()
                    .filter(|r| !crate::proto::ring::in_half_open(&first, &r.object_id(), &me))
                    .count();
                proptest::prop_assert_eq!(s.not_in_range(&first, &me, 1000).len(), want);
            }
        }
    }

    /// Kept copies: taken back only in the range asked for, dropped at their time or expiry,
    /// within the quotas.
    #[test]
    fn kept_copies_are_taken_back_in_range_and_dropped_in_time() {
        let q = Quotas {
            per_object: 4,
            per_provider: 8,
            total: 8,
        };
        let t0 = Instant::now();
        let later = t0 + std::time::Duration::from_secs(200);
        let mut k = Kept::default();
        let (a, b) = (rec(1, "a", 1, 1_000), rec(1, "b", 1, 50));
        assert!(k.keep(a.clone(), later, q));
        assert!(k.keep(b.clone(), later, q));
        assert_eq!(k.len(), 2);
        // an arc that holds only a's object id
        let (oa, ob) = (a.object_id(), b.object_id());
        let (lo, hi) = if oa < ob { (oa, ob) } else { (ob, oa) };
        let before = |x: &NodeId| {
            let mut bytes = *x.as_bytes();
            for byte in bytes.iter_mut().rev() {
                let (v, borrow) = byte.overflowing_sub(1);
                *byte = v;
                if !borrow {
                    break;
                }
            }
            NodeId::from_bytes(bytes)
        };
        let got = k.take_range(&before(&oa), &oa, usize::MAX);
        assert_eq!(got, vec![a.clone()]);
        assert!(
            k.take_range(&before(&oa), &oa, usize::MAX).is_empty(),
            "taken once"
        );
        assert_eq!(k.len(), 1);
        // the whole ring: pred == me
        assert!(k.keep(a.clone(), later, q));
        assert_eq!(k.take_range(&lo, &lo, usize::MAX).len(), 2);
        assert_eq!(k.len(), 0);
        // the arc (lo, hi] holds the upper of the two ids only
        assert!(k.keep(a.clone(), later, q));
        assert!(k.keep(b.clone(), later, q));
        let upper = if oa < ob { b.clone() } else { a.clone() };
        assert_eq!(k.take_range(&lo, &hi, usize::MAX), vec![upper]);
        assert_eq!(k.len(), 1);
        assert_eq!(k.take_range(&lo, &lo, usize::MAX).len(), 1);
        // expiry (b expires at 50 ms) and the keep time (200 s)
        assert!(k.keep(a.clone(), later, q));
        assert!(k.keep(b, later, q));
        k.sweep(t0, 50);
        assert_eq!(k.len(), 1, "the expired copy went");
        k.sweep(later, 50);
        assert_eq!(k.len(), 0, "kept no longer than asked");
        // quotas
        let small = Quotas {
            per_object: 1,
            per_provider: 1,
            total: 1,
        };
        assert!(k.keep(a, later, small));
        assert!(!k.keep(rec(2, "c", 1, 1_000), later, small));
        k.clear();
        assert_eq!(k.len(), 0);
    }
}
