//! The response cache of one session: the sealed responses, kept to answer a retransmitted
//! command byte for byte instead of running it (or sealing a response) twice (PROTOCOL.md §5.2,
//! "Incoming frames"). Unreliable transports only.
//!
//! Bounded twice: at most `capacity` responses, and none older than the cache's TTL (a
//! retransmission comes within the sender's request deadline, so an older response can only
//! sit in memory; an idle session would otherwise hold its last `capacity` responses for as long
//! as the session lives).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// At most `capacity` sealed responses by the sequence number of the command they answer, with
/// the instant each was kept; the oldest goes first.
#[derive(Debug, Default)]
pub(super) struct ResponseCache {
    entries: VecDeque<(u64, Instant, Bytes)>,
}

impl ResponseCache {
    /// Keeps `frame`, the response to command `seq`, evicting what is older than `ttl` and the
    /// oldest beyond `capacity` (nothing is kept with a capacity of 0).
    pub(super) fn insert(
        &mut self,
        now: Instant,
        capacity: usize,
        ttl: Duration,
        seq: u64,
        frame: Bytes,
    ) {
        self.expire(now, ttl);
        if capacity == 0 {
            return;
        }
        while self.entries.len() >= capacity {
            self.entries.pop_front();
        }
        self.entries.push_back((seq, now, frame));
    }

    /// The response sealed for command `seq`, if still kept and younger than `ttl`.
    pub(super) fn get(&self, now: Instant, ttl: Duration, seq: u64) -> Option<&Bytes> {
        self.entries
            .iter()
            .find(|(s, at, _)| *s == seq && now.saturating_duration_since(*at) < ttl)
            .map(|(_, _, f)| f)
    }

    /// Drops the responses `ttl` old or older; returns the instant the oldest one left was
    /// kept, if any (it expires at that instant plus `ttl`).
    pub(super) fn expire(&mut self, now: Instant, ttl: Duration) -> Option<Instant> {
        // Kept in the order they came, so the old ones are at the front.
        while self
            .entries
            .front()
            .is_some_and(|(_, at, _)| now.saturating_duration_since(*at) >= ttl)
        {
            self.entries.pop_front();
        }
        if self.entries.is_empty() && self.entries.capacity() > 0 {
            // An idle session keeps no buffer either.
            self.entries = VecDeque::new();
        }
        self.entries.front().map(|(_, at, _)| *at)
    }

    /// Responses kept.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(30);

    #[test]
    fn keeps_the_newest_capacity_responses() {
        let now = Instant::now();
        let mut c = ResponseCache::default();
        for seq in 1..=5 {
            c.insert(now, 3, TTL, seq, Bytes::from(vec![seq as u8]));
        }
        assert_eq!(c.len(), 3);
        assert!(c.get(now, TTL, 2).is_none());
        assert_eq!(c.get(now, TTL, 5).map(|b| b[0]), Some(5));
        c.insert(now, 0, TTL, 9, Bytes::new());
        assert!(c.get(now, TTL, 9).is_none());
    }

    #[test]
    fn forgets_responses_older_than_the_ttl() {
        let t0 = Instant::now();
        let mut c = ResponseCache::default();
        c.insert(t0, 8, TTL, 1, Bytes::from_static(b"a"));
        let t1 = t0 + Duration::from_secs(20);
        c.insert(t1, 8, TTL, 2, Bytes::from_static(b"b"));
        // Just before the TTL it still answers; at the TTL, it does not, even before a sweep.
        assert!(c.get(t0 + TTL - Duration::from_millis(1), TTL, 1).is_some());
        let late = t0 + TTL;
        assert!(c.get(late, TTL, 1).is_none());
        assert!(c.get(late, TTL, 2).is_some());
        // The sweep drops it and says when the next one expires.
        assert_eq!(c.expire(late, TTL), Some(t1));
        assert_eq!(c.len(), 1);
        assert_eq!(c.expire(t1 + TTL, TTL), None);
        assert_eq!(c.len(), 0);
    }
}
