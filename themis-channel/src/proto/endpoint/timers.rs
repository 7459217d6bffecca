//! Retransmission deadlines: one timer per request, handshake and identify call, and the
//! exponential backoff they share (PROTOCOL.md §5.2, "Outgoing request").

use std::collections::BTreeSet;

use foldhash::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::RequestId;

/// What a timer belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum TimerKey {
    /// A request: its retransmission, handshake wait or deadline, whichever comes first.
    Request(RequestId),
    /// Our handshake with nonce `N_A`: message 1's retransmission or the handshake's deadline.
    Handshake([u8; 32]),
    /// An identify call: its retransmission or its deadline.
    Identify(RequestId),
    /// The next expiry in the sessions' response caches (unreliable transports).
    CacheSweep,
}

/// At most one pending instant per key; the earliest first.
#[derive(Debug, Default)]
pub(super) struct Timers {
    queue: BTreeSet<(Instant, TimerKey)>,
    at: HashMap<TimerKey, Instant>,
}

impl Timers {
    /// Sets (or moves) `key`'s timer to `when`.
    pub(super) fn set(&mut self, key: TimerKey, when: Instant) {
        if let Some(old) = self.at.insert(key, when) {
            self.queue.remove(&(old, key));
        }
        self.queue.insert((when, key));
    }

    /// Whether `key` has a timer.
    pub(super) fn is_set(&self, key: TimerKey) -> bool {
        self.at.contains_key(&key)
    }

    /// Removes `key`'s timer, if any.
    pub(super) fn clear(&mut self, key: TimerKey) {
        if let Some(old) = self.at.remove(&key) {
            self.queue.remove(&(old, key));
        }
    }

    /// The earliest pending instant.
    pub(super) fn next(&self) -> Option<Instant> {
        self.queue.first().map(|(t, _)| *t)
    }

    /// Takes the earliest timer due at `now`.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<TimerKey> {
        let &(when, key) = self.queue.first()?;
        if when > now {
            return None;
        }
        self.queue.pop_first();
        self.at.remove(&key);
        Some(key)
    }

    /// Timers pending.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }
}

/// The retransmission timeout of one exchange: `initial_rto`, doubled after each
/// retransmission up to `max_rto`. Reliable transports never retransmit: their next wake-up is
/// the deadline.
#[derive(Clone, Copy, Debug)]
pub(super) struct Backoff {
    rto: Duration,
    max: Duration,
    reliable: bool,
}

impl Backoff {
    pub(super) fn new(initial: Duration, max: Duration, reliable: bool) -> Self {
        Self {
            rto: initial,
            max,
            reliable,
        }
    }

    /// When to wake up next: at the deadline (reliable), or at the next retransmission if
    /// that comes first.
    pub(super) fn wake(&self, now: Instant, deadline: Instant) -> Instant {
        if self.reliable {
            deadline
        } else {
            deadline.min(now + self.rto)
        }
    }

    /// After a retransmission: the timeout doubles, up to the maximum.
    pub(super) fn back_off(&mut self) {
        self.rto = (self.rto * 2).min(self.max);
    }
}

/// One frame sent again, as is, with backoff until a deadline: message 1, IDENTIFY, a sealed
/// command (PROTOCOL.md §5.2).
pub(super) struct Resend {
    frame: Bytes,
    deadline: Instant,
    backoff: Backoff,
}

impl Resend {
    /// The frame it (re-)sends.
    pub(super) fn frame(&self) -> &Bytes {
        &self.frame
    }

    pub(super) fn new(frame: Bytes, deadline: Instant, backoff: Backoff) -> Self {
        Self {
            frame,
            deadline,
            backoff,
        }
    }

    /// Replaces the frame sent from now on (a message 1 by its cookie echo).
    pub(super) fn set_frame(&mut self, frame: Bytes) {
        self.frame = frame;
    }

    /// When its timer fires first, the frame having gone out at `now`.
    pub(super) fn first_wake(&self, now: Instant) -> Instant {
        self.backoff.wake(now, self.deadline)
    }

    /// Its timer fired at `now`: `None` once the deadline has come, else the frame to send
    /// again and when the timer fires next.
    pub(super) fn fire(&mut self, now: Instant) -> Option<(Bytes, Instant)> {
        if now >= self.deadline {
            return None;
        }
        self.backoff.back_off();
        Some((self.frame.clone(), self.backoff.wake(now, self.deadline)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_and_moving_a_timer_replaces_it() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        let (a, b) = (
            TimerKey::Request(RequestId(1)),
            TimerKey::Request(RequestId(2)),
        );
        t.set(a, t0 + Duration::from_secs(2));
        t.set(b, t0 + Duration::from_secs(1));
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(1)));
        t.set(b, t0 + Duration::from_secs(3));
        assert_eq!(t.len(), 2);
        assert_eq!(t.pop_due(t0 + Duration::from_secs(1)), None);
        assert_eq!(t.pop_due(t0 + Duration::from_secs(5)), Some(a));
        t.clear(b);
        assert_eq!((t.next(), t.len()), (None, 0));
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum_and_reliable_waits_for_the_deadline() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let deadline = t0 + ms(1000);
        let mut b = Backoff::new(ms(200), ms(500), false);
        assert_eq!(b.wake(t0, deadline), t0 + ms(200));
        b.back_off();
        assert_eq!(b.wake(t0, deadline), t0 + ms(400));
        b.back_off();
        assert_eq!(b.wake(t0, deadline), t0 + ms(500));
        assert_eq!(b.wake(t0 + ms(900), deadline), deadline);
        assert_eq!(
            Backoff::new(ms(200), ms(500), true).wake(t0, deadline),
            deadline
        );
    }
}
