//! The simulator's agenda: what is due when. Messages in flight and one timer per node come out
//! in `(time, scheduling order)` order, the order of one queue into which every message and
//! every change of a node's timer is pushed, with the superseded timer entries skipped.
//!
//! It is built for rings of 100,000 nodes. A node's wanted timeout changes at nearly every
//! request it sends or sees answered (the request's deadline comes and goes), and one queue
//! holding an entry per change keeps every superseded entry until its time comes: at 10,000
//! nodes most of the queue was such garbage, each entry a whole event of ~120 bytes moved at
//! every sift. Here the timers are an indexed heap with one entry per node, updated in place,
//! and the messages a heap of small keys whose events wait in a slab.
//!
//! The order is exactly the old single queue's, so a seed gives the same run as before: a
//! timer entry carries the scheduling order (`seq`) of the change that set it, and a node whose
//! timer comes back to a deadline it had asked for earlier, while that earlier entry was still
//! waiting (a request sent and answered before the maintenance deadline: `m`, then the
//! request's deadline, then `m` again), fires at the earlier entry's place, as the old queue
//! popped that entry first. Each node keeps the entries it set that are not yet due for that.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use super::events::Ev;

/// A place in the agenda's order: virtual time in nanoseconds, then scheduling order.
pub(super) type Key = (u64, u64);

/// Nanoseconds of `d` (virtual time stays far below the 584 years of a `u64`).
pub(super) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What comes out of the agenda.
pub(super) enum Due {
    /// A message (or a failure report) arriving.
    Event(Ev),
    /// Node `node`'s timer.
    Timer { node: usize },
}

/// A timer entry a node set and whose time has not come yet.
#[derive(Clone, Copy)]
struct Set {
    /// The deadline asked for (nanoseconds of virtual time).
    deadline: u64,
    key: Key,
}

const NONE: u32 = u32::MAX;

/// Messages in flight and the nodes' timers.
#[derive(Default)]
pub(super) struct Agenda {
    next_seq: u64,
    /// Key of the last item taken out: entries at or before it are past.
    last: Key,
    /// Messages: keys with the event's slot.
    messages: BinaryHeap<Reverse<(u64, u64, u32)>>,
    slab: Vec<Option<Ev>>,
    free: Vec<u32>,
    /// Armed timers, a binary min-heap of (key, node).
    timers: Vec<(Key, u32)>,
    /// Each node's place in `timers` (`NONE`: not armed).
    place: Vec<u32>,
    /// Each node's timer entries not yet past, in the order set.
    set: Vec<Vec<Set>>,
}

impl Agenda {
    fn seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// Schedules `ev` at `at`.
    pub(super) fn push(&mut self, at: Duration, ev: Ev) {
        let seq = self.seq();
        let slot = match self.free.pop() {
            Some(s) => {
                self.slab[s as usize] = Some(ev);
                s
            }
            None => {
                self.slab.push(Some(ev));
                u32::try_from(self.slab.len() - 1).unwrap_or(NONE)
            }
        };
        self.messages.push(Reverse((nanos(at), seq, slot)));
    }

    /// Node `node` wants its timer at `deadline` (`None`: no timer) instead of what it asked for
    /// before; `now` is the present. As the old queue did, the timer is due at
    /// `max(deadline, now)`, at the place of the first entry for this deadline not yet past.
    pub(super) fn set_timer(&mut self, node: usize, deadline: Option<Duration>, now: Duration) {
        if self.set.len() <= node {
            self.set.resize_with(node + 1, Vec::new);
            self.place.resize(node + 1, NONE);
        }
        let last = self.last;
        let set = &mut self.set[node];
        set.retain(|s| s.key > last);
        let Some(deadline) = deadline else {
            self.remove_timer(node);
            return;
        };
        let deadline = nanos(deadline);
        let key = (deadline.max(nanos(now)), self.seq());
        let set = &mut self.set[node];
        let first = set.iter().find(|s| s.deadline == deadline).map(|s| s.key);
        set.push(Set { deadline, key });
        self.arm(node, first.unwrap_or(key));
    }

    /// Forgets node `node`'s timer and the entries it set (a node that will never run again).
    pub(super) fn drop_timer(&mut self, node: usize) {
        self.remove_timer(node);
        if let Some(s) = self.set.get_mut(node) {
            *s = Vec::new();
        }
    }

    /// The next item if it is due at or before `until`, with its time.
    pub(super) fn pop_until(&mut self, until: Duration) -> Option<(Duration, Due)> {
        let m = self
            .messages
            .peek()
            .map(|Reverse((at, seq, _))| (*at, *seq));
        let t = self.timers.first().map(|(k, _)| *k);
        let timer_first = match (m, t) {
            (None, None) => return None,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (Some(m), Some(t)) => t < m,
        };
        let until = nanos(until);
        if timer_first {
            let (key, node) = self.timers[0];
            if key.0 > until {
                return None;
            }
            self.remove_timer(node as usize);
            self.last = key;
            Some((
                Duration::from_nanos(key.0),
                Due::Timer {
                    node: node as usize,
                },
            ))
        } else {
            let Reverse((at, seq, slot)) = *self.messages.peek()?;
            if at > until {
                return None;
            }
            self.messages.pop();
            self.last = (at, seq);
            let ev = self.slab[slot as usize].take()?;
            self.free.push(slot);
            Some((Duration::from_nanos(at), Due::Event(ev)))
        }
    }

    /// Messages in flight and timers armed.
    pub(super) fn len(&self) -> usize {
        self.messages.len() + self.timers.len()
    }

    // ----- the indexed heap of timers -----

    fn arm(&mut self, node: usize, key: Key) {
        let n = u32::try_from(node).unwrap_or(NONE);
        match self.place[node] {
            NONE => {
                self.timers.push((key, n));
                let i = self.timers.len() - 1;
                self.place[node] = i as u32;
                self.sift_up(i);
            }
            i => {
                let i = i as usize;
                let old = self.timers[i].0;
                self.timers[i].0 = key;
                if key < old {
                    self.sift_up(i);
                } else {
                    self.sift_down(i);
                }
            }
        }
    }

    fn remove_timer(&mut self, node: usize) {
        let Some(&i) = self.place.get(node) else {
            return;
        };
        if i == NONE {
            return;
        }
        let i = i as usize;
        self.place[node] = NONE;
        let last = self.timers.len() - 1;
        if i != last {
            self.timers.swap(i, last);
            self.timers.pop();
            self.place[self.timers[i].1 as usize] = i as u32;
            self.sift_down(i);
            self.sift_up(i);
        } else {
            self.timers.pop();
        }
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let p = (i - 1) / 2;
            if self.timers[p].0 <= self.timers[i].0 {
                break;
            }
            self.swap(i, p);
            i = p;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.timers.len();
        loop {
            let l = 2 * i + 1;
            if l >= n {
                break;
            }
            let r = l + 1;
            let c = if r < n && self.timers[r].0 < self.timers[l].0 {
                r
            } else {
                l
            };
            if self.timers[i].0 <= self.timers[c].0 {
                break;
            }
            self.swap(i, c);
            i = c;
        }
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.timers.swap(a, b);
        self.place[self.timers[a].1 as usize] = a as u32;
        self.place[self.timers[b].1 as usize] = b as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use themis_dht::RequestFailure;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn msg(id: u64) -> Ev {
        Ev::Failure {
            to: 0,
            request_id: id,
            failure: RequestFailure::Timeout,
        }
    }

    /// What comes out up to `until`: message ids and timers (as 1000 + node).
    fn drain(a: &mut Agenda, until: Duration) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        while let Some((at, due)) = a.pop_until(until) {
            let what = match due {
                Due::Event(Ev::Failure { request_id, .. }) => request_id,
                Due::Event(_) => unreachable!(),
                Due::Timer { node } => 1000 + node as u64,
            };
            out.push((nanos(at) / 1_000_000, what));
        }
        out
    }

    #[test]
    fn time_order_then_scheduling_order() {
        let mut a = Agenda::default();
        a.set_timer(0, Some(ms(5)), ms(0));
        a.push(ms(5), msg(1));
        a.set_timer(1, Some(ms(3)), ms(0));
        a.push(ms(1), msg(2));
        // a deadline in the past is due now
        a.set_timer(2, Some(ms(0)), ms(2));
        assert_eq!(a.len(), 5);
        assert_eq!(drain(&mut a, ms(4)), [(1, 2), (2, 1002), (3, 1001)]);
        assert_eq!(drain(&mut a, ms(9)), [(5, 1000), (5, 1)]);
        assert_eq!(a.len(), 0);
    }

    #[test]
    fn a_moved_timer_fires_once_at_its_new_time() {
        let mut a = Agenda::default();
        a.set_timer(0, Some(ms(2)), ms(0));
        a.set_timer(0, Some(ms(7)), ms(0));
        a.set_timer(1, Some(ms(4)), ms(0));
        a.set_timer(1, None, ms(0));
        assert_eq!(a.len(), 1);
        assert_eq!(drain(&mut a, ms(9)), [(7, 1000)]);
    }

    /// A node back at a deadline it asked for before (maintenance due at 5 ms, a request's
    /// deadline at 3 ms, answered) fires where its first entry stood: before a message
    /// scheduled for 5 ms in between, as in one queue with an entry per change.
    #[test]
    fn a_timer_back_at_an_earlier_deadline_keeps_its_first_place() {
        let mut a = Agenda::default();
        a.set_timer(0, Some(ms(5)), ms(0));
        a.push(ms(5), msg(1));
        a.set_timer(0, Some(ms(3)), ms(0));
        a.set_timer(0, Some(ms(5)), ms(1));
        assert_eq!(drain(&mut a, ms(9)), [(5, 1000), (5, 1)]);
        // cleared and set again before its time, it keeps that place too
        a.set_timer(1, Some(ms(12)), ms(9));
        a.push(ms(12), msg(2));
        assert_eq!(drain(&mut a, ms(11)), []);
        a.set_timer(1, None, ms(11));
        a.set_timer(1, Some(ms(12)), ms(11));
        assert_eq!(drain(&mut a, ms(12)), [(12, 1001), (12, 2)]);
        // the second entry for 12 ms is still ahead: it fires too, as the old queue popped it
        a.push(ms(12), msg(3));
        a.set_timer(1, Some(ms(12)), ms(12));
        assert_eq!(drain(&mut a, ms(12)), [(12, 1001), (12, 3)]);
        // once past, the place is gone: the same deadline again is scheduled anew
        a.set_timer(2, Some(ms(15)), ms(12));
        assert_eq!(drain(&mut a, ms(15)), [(15, 1002)]);
        a.push(ms(15), msg(4));
        a.set_timer(2, Some(ms(15)), ms(15));
        assert_eq!(drain(&mut a, ms(20)), [(15, 4), (15, 1002)]);
    }
}
