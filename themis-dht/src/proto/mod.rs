//! The pure protocol core: ring arithmetic, messages and codec, signed records, the object
//! table, the iterative lookup and the node state machine. No I/O, no clock.

pub(crate) mod config;
pub(crate) mod lookup;
pub(crate) mod metrics;
pub(crate) mod node;
pub(crate) mod owner;
pub(crate) mod owners;
pub(crate) mod peers;
pub(crate) mod record;
pub(crate) mod ring;
pub(crate) mod rtt;
pub(crate) mod store;
pub(crate) mod verified;
pub(crate) mod wire;
