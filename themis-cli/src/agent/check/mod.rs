//! Health checks of the services provided through the agent, as in Consul (HTTP, TCP, TTL),
//! with the health following the provider's own signed record: a service whose check is
//! critical is withdrawn from the DHT (the tombstone of PROTOCOL.md §6.10), and stored again
//! when it passes.
//!
//! - [`spec`]: the `check` of a definition and its validation;
//! - [`state`]: the pure pass/fail threshold state machine;
//! - [`probe`]: one HTTP or TCP probe, bounded;
//! - [`runner`]: the tokio task per check that drives them.
//!
//! Limits: one check per service, at most [`MAX_CHECKS`] per agent; a probe's timeout is below
//! its interval; an HTTP check reads at most 4 KiB of the answer.

pub(crate) mod probe;
pub(crate) mod runner;
pub(crate) mod spec;
pub(crate) mod state;

pub(crate) use runner::{Announce, CheckHandle, HeartbeatError};
pub(crate) use spec::{CheckDefinition, CheckKind, CheckSpec};
pub(crate) use state::{CheckState, Status};

/// Most checks one agent runs (one per provided service; the agent's service limit).
pub(crate) const MAX_CHECKS: usize = super::MAX_UPSTREAMS;
