//! The response cache of one session: the sealed responses, kept to answer a retransmitted
//! command byte for byte instead of running it (or sealing a response) twice (PROTOCOL.md §5.2,
//! "Incoming frames"). Unreliable transports only.

use std::collections::VecDeque;

use bytes::Bytes;

/// At most `capacity` sealed responses by the sequence number of the command they answer; the
/// oldest goes first.
#[derive(Debug, Default)]
pub(super) struct ResponseCache {
    entries: VecDeque<(u64, Bytes)>,
}

impl ResponseCache {
    /// Keeps `frame`, the response to command `seq`, evicting the oldest beyond `capacity`
    /// (nothing is kept with a capacity of 0).
    pub(super) fn insert(&mut self, capacity: usize, seq: u64, frame: Bytes) {
        if capacity == 0 {
            return;
        }
        while self.entries.len() >= capacity {
            self.entries.pop_front();
        }
        self.entries.push_back((seq, frame));
    }

    /// The response sealed for command `seq`, if still kept.
    pub(super) fn get(&self, seq: u64) -> Option<&Bytes> {
        self.entries.iter().find(|(s, _)| *s == seq).map(|(_, f)| f)
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

    #[test]
    fn keeps_the_newest_capacity_responses() {
        let mut c = ResponseCache::default();
        for seq in 1..=5 {
            c.insert(3, seq, Bytes::from(vec![seq as u8]));
        }
        assert_eq!(c.len(), 3);
        assert!(c.get(2).is_none());
        assert_eq!(c.get(5).map(|b| b[0]), Some(5));
        c.insert(0, 9, Bytes::new());
        assert!(c.get(9).is_none());
    }
}
