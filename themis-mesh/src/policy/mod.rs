//! The mesh's traffic policies: pure, deterministic decision logic (no I/O, no clock reads; the
//! caller passes `now` and seeds the PRNG).

mod access;
mod balancer;
mod budget;
mod cache;
mod ewma;
mod provider;
mod search;

pub use access::{AccessPolicy, DEFAULT_MAX_ALLOWED_CALLERS, DEFAULT_MAX_RESTRICTED_SERVICES};
pub use balancer::{Balancer, BalancerConfig, Call, EjectionConfig, Pick, Policy, ProviderStatus};
pub use budget::{RetryBudget, RetryBudgetConfig};
pub use cache::{CacheConfig, CacheLookup, DiscoveryCache};
pub use provider::{DEFAULT_WEIGHT, Provider, ProviderRecord, merge_records};
pub use search::{MAX_REPLICA_K, ReplicaSearch, SearchConfig};
