//! The mesh's traffic policies: pure, deterministic decision logic (no I/O, no clock reads; the
//! caller passes `now` and seeds the PRNG).

mod access;
mod balancer;
mod budget;
mod cache;
mod ewma;
mod provider;
mod refusals;
mod search;
mod succession;

pub use access::AccessPolicy;
pub use balancer::{Balancer, BalancerConfig, Call, EjectionConfig, Pick, Policy, ProviderStatus};
pub use budget::{RetryBudget, RetryBudgetConfig};
pub use cache::{CacheConfig, CacheLookup, DiscoveryCache};
pub use provider::{DEFAULT_WEIGHT, Provider, ProviderRecord, merge_records};
pub use refusals::RecentRefusals;
pub use search::{ReplicaSearch, SearchConfig};
pub use succession::Successions;
