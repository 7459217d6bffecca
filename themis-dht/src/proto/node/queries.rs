//! Queries: the table of work started by a command or a peer (finds, provider lookups, finger
//! refreshes, lookups served for a joining node, registrations and their replicas), and what
//! each does with the end of its lookup (`lookups` drives the lookups themselves).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use themis_crypto::NodeId;

use super::Node;
use super::api::{Event, Found, Providers, QueryError, QueryId};
use crate::Error;
use crate::proto::lookup::Lookup;
use crate::proto::record::{ProviderRecord, Refusal, check_name, object_id};
use crate::proto::wire::{MAX_RECORDS, Peer, Response, WireRecord};

/// What a query is for.
#[derive(Debug)]
pub(super) enum Job {
    Find,
    Finger {
        bit: usize,
    },
    /// The lookup of our own successor through the rest of the ring, when walking back from a
    /// successor far past the true one would take many rounds (see
    /// [`Node::check_successor`](super::Node)).
    SuccessorCheck,
    ServeJoin {
        token: u64,
    },
    /// A registration: its k + 1 replicas run at once, each as a [`Job::Replica`] query
    /// (lookup, then store); this query has no lookup of its own and ends when `open` is 0.
    Register {
        name: String,
        records: Vec<ProviderRecord>,
        /// Replicas whose lookup or store has not ended yet.
        open: u8,
        stored: u8,
        failed: u8,
        user: bool,
        /// The records are tombstones: a withdrawal ([`Event::Withdrawn`]), off the schedule.
        withdraw: bool,
    },
    /// The lookup of replica `r` of registration `parent`. It ends at the first claim of the
    /// object id's successor (a peer's `successor` answer, or this node's own successor list),
    /// and the store sent there is the owner's confirmation: it refuses `not_responsible`
    /// otherwise. `confirm`: the lookup goes on to the owner's own `owner` answer instead (the
    /// second lookup of a replica whose first owner refused so).
    Replica {
        parent: QueryId,
        r: u8,
        confirm: bool,
    },
    Providers {
        name: String,
        k: u8,
        r: u8,
        any_answer: bool,
        /// Tombstones met on the replicas asked so far (at most `MAX_RECORDS`): a record
        /// found on a later replica that one of them supersedes is dropped.
        withdrawn: Vec<ProviderRecord>,
    },
}

/// A query and the lookup it runs, if any.
#[derive(Debug)]
pub(super) struct Query {
    pub(super) job: Job,
    lookup: Option<Lookup>,
    /// The lookup's stall time as indexed in [`Queries::stalls`].
    stall: Option<Instant>,
}

/// The queries in progress, bounded by `Config::max_queries` (replicas of a registration are
/// bounded by their registration, at most `max_k + 1` each).
#[derive(Debug, Default)]
pub(super) struct Queries {
    /// Boxed: a query with its lookup is about 320 bytes, and a B-tree node shifts its values on
    /// every insert and removal in its middle (those moves were about 3 % of a local find's
    /// CPU on the asking node).
    pub(super) map: BTreeMap<QueryId, Box<Query>>,
    next_id: u64,
    /// Queries that are one replica of a registration ([`Job::Replica`]).
    pub(super) replicas: usize,
    /// The lookups' stall times, earliest first: the index behind [`Queries::next_stall`].
    /// Each lookup decides when it stalls ([`Lookup::poll_timeout`]); this only mirrors it.
    stalls: BTreeSet<(Instant, QueryId)>,
}

impl Queries {
    /// Queries that count toward `max_queries`: all but the replicas of registrations.
    pub(super) fn counted(&self) -> usize {
        self.map.len().saturating_sub(self.replicas)
    }

    /// Adds a query for `job` (the caller checks the limit).
    fn insert(&mut self, job: Job) -> QueryId {
        self.next_id += 1;
        let id = QueryId(self.next_id);
        self.put_back(id, job);
        id
    }

    fn put_back(&mut self, id: QueryId, job: Job) {
        if matches!(job, Job::Replica { .. }) {
            self.replicas += 1;
        }
        self.map.insert(
            id,
            Box::new(Query {
                job,
                lookup: None,
                stall: None,
            }),
        );
    }

    /// Removes query `q` (and its stall time), keeping the replica count in step.
    pub(super) fn take(&mut self, q: QueryId) -> Option<Job> {
        let query = self.map.remove(&q)?;
        if let Some(t) = query.stall {
            self.stalls.remove(&(t, q));
        }
        if matches!(query.job, Job::Replica { .. }) {
            self.replicas = self.replicas.saturating_sub(1);
        }
        Some(query.job)
    }

    /// Removes every query.
    pub(super) fn take_all(&mut self) -> Vec<(QueryId, Job)> {
        self.stalls.clear();
        self.replicas = 0;
        std::mem::take(&mut self.map)
            .into_iter()
            .map(|(id, q)| (id, q.job))
            .collect()
    }

    pub(super) fn job(&self, q: QueryId) -> Option<&Job> {
        self.map.get(&q).map(|x| &x.job)
    }

    pub(super) fn job_mut(&mut self, q: QueryId) -> Option<&mut Job> {
        self.map.get_mut(&q).map(|x| &mut x.job)
    }

    /// Gives query `q` a new lookup (or none), replacing its old one.
    pub(super) fn set_lookup(&mut self, q: QueryId, lookup: Option<Lookup>) {
        if let Some(x) = self.map.get_mut(&q) {
            x.lookup = lookup;
        }
        self.sync_stall(q);
    }

    /// Runs `f` on the lookup of query `q`, then re-indexes its stall time.
    pub(super) fn with_lookup<R>(
        &mut self,
        q: QueryId,
        f: impl FnOnce(&mut Lookup) -> R,
    ) -> Option<R> {
        let r = f(self.map.get_mut(&q)?.lookup.as_mut()?);
        self.sync_stall(q);
        Some(r)
    }

    fn sync_stall(&mut self, q: QueryId) {
        let Some(x) = self.map.get_mut(&q) else {
            return;
        };
        let now = x.lookup.as_ref().and_then(Lookup::poll_timeout);
        if now == x.stall {
            return;
        }
        if let Some(t) = x.stall {
            self.stalls.remove(&(t, q));
        }
        if let Some(t) = now {
            self.stalls.insert((t, q));
        }
        x.stall = now;
    }

    /// The earliest stall time of a lookup.
    pub(super) fn next_stall(&self) -> Option<Instant> {
        self.stalls.first().map(|(t, _)| *t)
    }

    /// Removes and returns a query whose lookup's stall time is at or before `now`.
    pub(super) fn pop_stalled(&mut self, now: Instant) -> Option<QueryId> {
        let &(t, q) = self.stalls.first().filter(|(t, _)| *t <= now)?;
        self.stalls.pop_first();
        if let Some(x) = self.map.get_mut(&q)
            && x.stall == Some(t)
        {
            x.stall = None;
        }
        Some(q)
    }
}

impl Node {
    /// Starts a find of the successor of `target` (paper §6.1 find, iterative). The result comes
    /// as [`Event::Found`].
    pub fn find(&mut self, now: Instant, target: NodeId) -> Result<QueryId, Error> {
        self.check_member("find")?;
        let q = self.new_query(Job::Find).ok_or(Error::TooManyQueries {
            limit: self.cfg.max_queries,
        })?;
        self.start_lookup(now, q, target, false);
        Ok(q)
    }

    /// Looks up the providers of `name`, trying replicas `0..=k` in turn until one answers with
    /// records (paper §7). Every record is verified. The result comes as [`Event::Providers`].
    pub fn lookup_providers(
        &mut self,
        now: Instant,
        name: &str,
        k: Option<u8>,
    ) -> Result<QueryId, Error> {
        self.check_member("lookup providers")?;
        check_name(name).map_err(Error::InvalidRecord)?;
        let k = k.unwrap_or(self.cfg.default_k).min(self.cfg.max_k);
        let q = self
            .new_query(Job::Providers {
                name: name.to_owned(),
                k,
                r: 0,
                any_answer: false,
                withdrawn: Vec::new(),
            })
            .ok_or(Error::TooManyQueries {
                limit: self.cfg.max_queries,
            })?;
        self.start_lookup(now, q, object_id(name, 0), true);
        Ok(q)
    }

    /// Looks up the provider records of replica `r` of `name` only: no fallback to the other
    /// replicas, so that a caller can plan its own search over them (the mesh's replica
    /// search, paper §7). The result comes as [`Event::Providers`] (possibly with no record);
    /// a lookup that finds no responsible node fails with [`QueryError::Exhausted`].
    pub fn lookup_replica(&mut self, now: Instant, name: &str, r: u8) -> Result<QueryId, Error> {
        self.check_member("lookup providers")?;
        check_name(name).map_err(Error::InvalidRecord)?;
        if r > self.cfg.max_k {
            return Err(Error::ReplicationTooHigh {
                k: r,
                max: self.cfg.max_k,
            });
        }
        // A provider lookup whose last replica is its first.
        let q = self
            .new_query(Job::Providers {
                name: name.to_owned(),
                k: r,
                r,
                any_answer: false,
                withdrawn: Vec::new(),
            })
            .ok_or(Error::TooManyQueries {
                limit: self.cfg.max_queries,
            })?;
        self.start_lookup(now, q, object_id(name, r), true);
        Ok(q)
    }

    /// A query for `job`, if fewer than `max_queries` are in progress.
    pub(super) fn new_query(&mut self, job: Job) -> Option<QueryId> {
        if self.queries.counted() >= self.cfg.max_queries {
            return None;
        }
        Some(self.queries.insert(job))
    }

    /// The query of replica `r` of registration `parent` (`confirm`: see [`Job::Replica`]):
    /// bounded by its registration (at most `max_k + 1` each, and one second lookup each), so
    /// not by `max_queries`.
    pub(super) fn new_replica_query(&mut self, parent: QueryId, r: u8, confirm: bool) -> QueryId {
        self.queries.insert(Job::Replica { parent, r, confirm })
    }

    pub(super) fn lookup_failed(&mut self, now: Instant, q: QueryId) {
        self.metrics.lookups_failed += 1;
        let Some(job) = self.queries.take(q) else {
            return;
        };
        match job {
            Job::Replica { parent, .. } => self.store_result(now, parent, false),
            Job::Providers {
                name,
                k,
                r,
                any_answer,
                withdrawn,
            } if r < k => {
                let oid = object_id(&name, r + 1);
                self.queries.put_back(
                    q,
                    Job::Providers {
                        name,
                        k,
                        r: r + 1,
                        any_answer,
                        withdrawn,
                    },
                );
                self.start_lookup(now, q, oid, true);
            }
            Job::Finger { bit } => self.finger_done(now, bit, None),
            job => self.fail_job(q, job, QueryError::Exhausted),
        }
    }

    /// Query `q` ends without a result (`err`): its owner is told.
    pub(super) fn fail_job(&mut self, q: QueryId, job: Job, err: QueryError) {
        match job {
            Job::Find => self.event(Event::Found {
                query: q,
                result: Err(err),
            }),
            Job::Finger { .. } => self.maint.finger_sweep_running = false,
            Job::SuccessorCheck => self.maint.successor_check_running = false,
            Job::ServeJoin { token } => self.respond(
                token,
                &Response::Refused {
                    reason: Refusal::Busy,
                },
            ),
            // its registration is failed on its own
            Job::Replica { .. } => {}
            Job::Register {
                name,
                stored,
                failed,
                user,
                records,
                withdraw,
                ..
            } => {
                self.registration_failed(q, name, (stored, failed, records.len()), (user, withdraw))
            }
            Job::Providers {
                name,
                any_answer,
                r,
                withdrawn,
                ..
            } => {
                let result = if any_answer {
                    Ok(Providers {
                        name,
                        records: Vec::new(),
                        withdrawn,
                        hops: 0,
                        replica: r,
                    })
                } else {
                    Err(err)
                };
                self.event(Event::Providers { query: q, result });
            }
        }
    }

    /// The lookup of `q` found the target's successor `peer` (with the records it holds, for
    /// an owner lookup): the query's owner takes the result.
    pub(super) fn lookup_done(
        &mut self,
        now: Instant,
        q: QueryId,
        peer: Peer,
        hops: u32,
        records: Vec<WireRecord>,
    ) {
        self.metrics.lookups_succeeded += 1;
        self.metrics.hop(hops);
        // A registration query never runs a lookup itself (its replicas do).
        if matches!(self.queries.job(q), None | Some(Job::Register { .. })) {
            return;
        }
        let Some(job) = self.queries.take(q) else {
            return;
        };
        match job {
            Job::Find => self.event(Event::Found {
                query: q,
                result: Ok(Found {
                    successor: peer,
                    hops,
                }),
            }),
            Job::Finger { bit } => self.finger_done(now, bit, Some(peer)),
            Job::SuccessorCheck => self.successor_checked(now, peer),
            Job::ServeJoin { token } => {
                let successors = if peer.id == self.ring.me.id {
                    self.ring.wire_succs()
                } else {
                    Vec::new()
                };
                self.respond(
                    token,
                    &Response::Joined {
                        successor: peer.into(),
                        successors,
                    },
                );
            }
            Job::Register { .. } => {}
            Job::Replica { parent, r, confirm } => {
                self.replica_found(now, parent, r, peer, !confirm);
            }
            Job::Providers {
                name,
                k,
                r,
                withdrawn,
                ..
            } => {
                self.providers_found(now, q, (name, k, r), (hops, withdrawn), records);
            }
        }
    }

    /// A provider lookup reached the owner of replica `r`: its verified records end the
    /// query, or, with none, the next replica is tried. Tombstones are kept apart
    /// ([`Providers::withdrawn`]) and carried to the next replica, where they drop the
    /// records they supersede (same provider, lower sequence number).
    fn providers_found(
        &mut self,
        now: Instant,
        q: QueryId,
        (name, k, r): (String, u8, u8),
        (hops, mut withdrawn): (u32, Vec<ProviderRecord>),
        records: Vec<WireRecord>,
    ) {
        let wall = self.wall_ms(now);
        let mut good = Vec::new();
        for w in records {
            match self.verify_read(w, &name, r, wall) {
                Ok(rec) if rec.is_withdrawn() => {
                    if withdrawn.len() < MAX_RECORDS {
                        withdrawn.push(rec);
                    }
                }
                Ok(rec) => good.push(rec),
                Err(_) => self.metrics.records_rejected_by_reader += 1,
            }
        }
        // a record older than a tombstone of its provider (from another replica) is withdrawn
        good.retain(|rec| {
            !withdrawn
                .iter()
                .any(|t| t.provider == rec.provider && t.seq > rec.seq)
        });
        if good.is_empty() && r < k {
            let oid = object_id(&name, r + 1);
            self.queries.put_back(
                q,
                Job::Providers {
                    name,
                    k,
                    r: r + 1,
                    any_answer: true,
                    withdrawn,
                },
            );
            self.start_lookup(now, q, oid, true);
        } else {
            self.event(Event::Providers {
                query: q,
                result: Ok(Providers {
                    name,
                    records: good,
                    withdrawn,
                    hops,
                    replica: r,
                }),
            });
        }
    }
}
