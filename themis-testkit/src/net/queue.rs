//! A virtual-time event queue: items come out in `(time, insertion order)` order, so two items
//! due at the same time keep the order they were scheduled in. Shared by the in-memory network
//! (frames in flight) and the DHT simulator (every event).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::Duration;

/// Items scheduled at points of virtual time.
#[derive(Debug)]
pub(crate) struct TimedQueue<T> {
    heap: BinaryHeap<Reverse<Entry<T>>>,
    next_seq: u64,
}

#[derive(Debug)]
struct Entry<T> {
    at: Duration,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl<T> Default for TimedQueue<T> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
            next_seq: 0,
        }
    }
}

impl<T> TimedQueue<T> {
    /// Schedules `item` at `at`.
    pub(crate) fn push(&mut self, at: Duration, item: T) {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.heap.push(Reverse(Entry { at, seq, item }));
    }

    /// When the next item is due.
    pub(crate) fn next_at(&self) -> Option<Duration> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    /// The next item if it is due at or before `until`, with its time.
    pub(crate) fn pop_until(&mut self, until: Duration) -> Option<(Duration, T)> {
        if self.next_at()? > until {
            return None;
        }
        self.heap.pop().map(|Reverse(e)| (e.at, e.item))
    }

    /// Items scheduled.
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is scheduled.
    pub(crate) fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_order_then_insertion_order() {
        let mut q = TimedQueue::default();
        let ms = Duration::from_millis;
        q.push(ms(5), "c");
        q.push(ms(1), "a");
        q.push(ms(5), "d");
        q.push(ms(1), "b");
        assert_eq!(q.len(), 4);
        assert_eq!(q.next_at(), Some(ms(1)));
        assert_eq!(q.pop_until(ms(0)), None);
        let mut out = Vec::new();
        while let Some((_, x)) = q.pop_until(ms(5)) {
            out.push(x);
        }
        assert_eq!(out, ["a", "b", "c", "d"]);
        assert!(q.is_empty());
    }
}
