//! The one network model of the test kit: what happens to a frame between two addresses.
//!
//! Sans-I/O, like the cores it tests: no clock, no task, no socket. Time is a [`Duration`]
//! since the start of the network, passed in by the caller; every random choice comes from
//! one seeded PRNG, drawn in the order of the calls. So the model's decisions are a function
//! of its seed and the sequence of calls, whoever drives it: the in-memory transport
//! ([`super::MemNetwork`], in tokio's virtual time), the DHT simulator ([`crate::sim::Sim`],
//! with its own event queue) or the fault wrapper over real sockets
//! ([`super::FaultyTransport`]).
//!
//! What it models, per direction of each link ([`LinkConfig`]): a fixed latency, a uniform
//! jitter on top (which is also what reorders frames), loss and duplication. And partitions,
//! first-class: the addresses split into any number of groups, frames passing only within a
//! group, until the partition is healed, now or at a given time. A frame in flight when a
//! partition starts is dropped on arrival ([`NetModel::arrives`]). A one-way cut is a link
//! with [`LinkConfig::CUT`] in one direction.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::identity::Rng;

/// Behaviour of one direction of a link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConfig {
    /// Fixed one-way delay.
    pub latency: Duration,
    /// Extra delay drawn uniformly from `[0, jitter]` per frame; frames overtake each other
    /// when it exceeds their spacing, so this is also the reordering knob.
    pub jitter: Duration,
    /// Probability that a frame is lost.
    pub loss: f64,
    /// Probability that a frame is delivered twice (each copy with its own jitter).
    pub duplicate: f64,
}

impl LinkConfig {
    /// A perfect link: no delay, no loss.
    pub const PERFECT: Self = Self {
        latency: Duration::ZERO,
        jitter: Duration::ZERO,
        loss: 0.0,
        duplicate: 0.0,
    };

    /// A link that loses everything: set on one direction, a one-way cut.
    pub const CUT: Self = Self {
        loss: 1.0,
        ..Self::PERFECT
    };
}

impl Default for LinkConfig {
    /// [`LinkConfig::PERFECT`].
    fn default() -> Self {
        Self::PERFECT
    }
}

/// What the model does with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Dropped: the partition puts the two ends in different groups.
    Partitioned,
    /// Dropped by the link's loss rate.
    Lost,
    /// Delivered after `delay`, and a second time after `copy` if the link duplicated it.
    Delivered {
        /// Delay of the frame.
        delay: Duration,
        /// Delay of its duplicate, if any.
        copy: Option<Duration>,
    },
}

impl Fate {
    /// The delay of every copy delivered: none, one or two.
    pub fn delays(self) -> impl Iterator<Item = Duration> {
        let (first, copy) = match self {
            Fate::Delivered { delay, copy } => (Some(delay), copy),
            Fate::Partitioned | Fate::Lost => (None, None),
        };
        first.into_iter().chain(copy)
    }
}

/// Counters of a [`NetModel`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelStats {
    /// Frames offered to [`NetModel::send`].
    pub sent: u64,
    /// Frames dropped by the loss rate.
    pub lost: u64,
    /// Frames dropped by a partition, when sent or on arrival.
    pub partitioned: u64,
    /// Extra copies made by duplication.
    pub duplicated: u64,
}

/// Groups of addresses; frames pass only within a group.
#[derive(Debug, Default)]
struct Partition {
    /// Group of each named address (1, 2, ...); unnamed addresses are in group 0 together.
    group: HashMap<SocketAddr, u32>,
    /// When the partition ends by itself.
    heal_at: Option<Duration>,
}

impl Partition {
    fn active(&self, now: Duration) -> bool {
        !self.group.is_empty() && self.heal_at.is_none_or(|at| now < at)
    }

    fn separates(&self, now: Duration, a: SocketAddr, b: SocketAddr) -> bool {
        self.active(now)
            && self.group.get(&a).copied().unwrap_or(0) != self.group.get(&b).copied().unwrap_or(0)
    }
}

/// The seeded network model: links, partitions and the PRNG behind every fault.
#[derive(Debug)]
pub struct NetModel {
    rng: Rng,
    default_link: LinkConfig,
    links: HashMap<(SocketAddr, SocketAddr), LinkConfig>,
    partition: Partition,
    stats: ModelStats,
}

impl NetModel {
    /// A model of a network whose links all behave like `default_link`, drawing from a PRNG
    /// seeded with `seed`.
    pub fn new(seed: u64, default_link: LinkConfig) -> Self {
        Self {
            rng: Rng::with_seed(seed),
            default_link,
            links: HashMap::new(),
            partition: Partition::default(),
            stats: ModelStats::default(),
        }
    }

    /// Sets the behaviour of the link from `from` to `to` (one direction).
    pub fn set_link(&mut self, from: SocketAddr, to: SocketAddr, link: LinkConfig) {
        self.links.insert((from, to), link);
    }

    /// Sets the behaviour of every link without a [`NetModel::set_link`] override.
    pub fn set_default_link(&mut self, link: LinkConfig) {
        self.default_link = link;
    }

    /// The behaviour of the link from `from` to `to`.
    pub fn link(&self, from: SocketAddr, to: SocketAddr) -> LinkConfig {
        if self.links.is_empty() {
            return self.default_link;
        }
        self.links
            .get(&(from, to))
            .copied()
            .unwrap_or(self.default_link)
    }

    /// Splits the network into `groups`: from now on frames pass only between addresses of
    /// the same group; addresses named in no group form one more group together. Replaces any
    /// earlier partition, and lasts until [`NetModel::heal`] or the time set by
    /// [`NetModel::heal_at`].
    pub fn partition(&mut self, groups: &[&[SocketAddr]]) {
        self.partition = Partition::default();
        for (i, group) in groups.iter().enumerate() {
            let tag = u32::try_from(i + 1).unwrap_or(u32::MAX);
            for addr in *group {
                self.partition.group.insert(*addr, tag);
            }
        }
    }

    /// Ends the current partition at `at` (network time): frames sent or arriving from then
    /// on pass again.
    pub fn heal_at(&mut self, at: Duration) {
        self.partition.heal_at = Some(at);
    }

    /// Ends any partition now.
    pub fn heal(&mut self) {
        self.partition = Partition::default();
    }

    /// Whether a partition is in force at `now`.
    pub fn is_partitioned(&self, now: Duration) -> bool {
        self.partition.active(now)
    }

    /// Whether a frame from `from` reaches `to` at `now` as far as partitions go.
    pub fn connected(&self, now: Duration, from: SocketAddr, to: SocketAddr) -> bool {
        !self.partition.separates(now, from, to)
    }

    /// Decides the fate of a frame sent from `from` to `to` at `now`. The draws, in this
    /// order and only where the link needs them: loss, duplication, the jitter of each copy.
    pub fn send(&mut self, now: Duration, from: SocketAddr, to: SocketAddr) -> Fate {
        self.stats.sent += 1;
        if !self.connected(now, from, to) {
            self.stats.partitioned += 1;
            return Fate::Partitioned;
        }
        let link = self.link(from, to);
        if chance(&mut self.rng, link.loss) {
            self.stats.lost += 1;
            return Fate::Lost;
        }
        let duplicated = chance(&mut self.rng, link.duplicate);
        let delay = self.delay(&link);
        let copy = duplicated.then(|| {
            self.stats.duplicated += 1;
            self.delay(&link)
        });
        Fate::Delivered { delay, copy }
    }

    /// Whether a frame sent from `from` is let through to `to` when it arrives at `at`: not if
    /// a partition started while it was in flight (counted as partitioned).
    pub fn arrives(&mut self, at: Duration, from: SocketAddr, to: SocketAddr) -> bool {
        let through = self.connected(at, from, to);
        if !through {
            self.stats.partitioned += 1;
        }
        through
    }

    /// The counters so far.
    pub fn stats(&self) -> ModelStats {
        self.stats
    }

    fn delay(&mut self, link: &LinkConfig) -> Duration {
        let jitter = u64::try_from(link.jitter.as_nanos()).unwrap_or(u64::MAX);
        let extra = if jitter == 0 {
            0
        } else {
            self.rng.u64(..=jitter)
        };
        link.latency.saturating_add(Duration::from_nanos(extra))
    }
}

/// `true` with probability `p` (clamped to `[0, 1]`); draws nothing when `p <= 0`, so a
/// link without faults consumes no randomness.
fn chance(rng: &mut Rng, p: f64) -> bool {
    p > 0.0 && rng.f64() < p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], 7000))
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn same_seed_same_fates() {
        let link = LinkConfig {
            latency: ms(1),
            jitter: ms(5),
            loss: 0.2,
            duplicate: 0.2,
        };
        let run = |seed| {
            let mut m = NetModel::new(seed, link);
            (0..200)
                .map(|i| m.send(ms(i), addr(1), addr(2)))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
        let fates = run(1);
        assert!(fates.contains(&Fate::Lost));
        assert!(
            fates
                .iter()
                .any(|f| matches!(f, Fate::Delivered { copy: Some(_), .. }))
        );
        for d in fates.iter().flat_map(|f| f.delays()) {
            assert!(d >= ms(1) && d <= ms(6), "{d:?}");
        }
    }

    #[test]
    fn a_perfect_link_draws_nothing() {
        let mut m = NetModel::new(3, LinkConfig::PERFECT);
        let f = m.send(ms(0), addr(1), addr(2));
        assert_eq!(
            f,
            Fate::Delivered {
                delay: Duration::ZERO,
                copy: None
            }
        );
        assert_eq!(m.rng.u64(..), Rng::with_seed(3).u64(..), "no draw was made");
    }

    #[test]
    fn partitions_in_any_number_of_groups_heal_at_a_given_time() {
        let mut m = NetModel::new(0, LinkConfig::PERFECT);
        m.partition(&[&[addr(1), addr(2)], &[addr(3)], &[addr(4)]]);
        m.heal_at(ms(100));
        assert!(m.is_partitioned(ms(99)));
        assert!(m.connected(ms(0), addr(1), addr(2)));
        assert!(!m.connected(ms(0), addr(1), addr(3)));
        assert!(!m.connected(ms(0), addr(3), addr(4)));
        // unnamed addresses are one more group
        assert!(m.connected(ms(0), addr(5), addr(6)));
        assert!(!m.connected(ms(0), addr(5), addr(1)));
        assert_eq!(m.send(ms(10), addr(1), addr(4)), Fate::Partitioned);
        // in flight across the cut at 99 ms: dropped; at 100 ms the partition is over
        assert!(!m.arrives(ms(99), addr(4), addr(1)));
        assert!(m.arrives(ms(100), addr(4), addr(1)));
        assert!(!m.is_partitioned(ms(100)));
        assert!(matches!(
            m.send(ms(100), addr(1), addr(4)),
            Fate::Delivered { .. }
        ));
        assert_eq!(m.stats().partitioned, 2);
        m.partition(&[&[addr(1)]]);
        assert!(!m.connected(ms(200), addr(1), addr(2)), "a new partition");
        m.heal();
        assert!(m.connected(ms(200), addr(1), addr(2)));
    }

    #[test]
    fn one_way_cut() {
        let mut m = NetModel::new(0, LinkConfig::PERFECT);
        m.set_link(addr(1), addr(2), LinkConfig::CUT);
        assert_eq!(m.send(ms(0), addr(1), addr(2)), Fate::Lost);
        assert!(matches!(
            m.send(ms(0), addr(2), addr(1)),
            Fate::Delivered { .. }
        ));
    }
}
