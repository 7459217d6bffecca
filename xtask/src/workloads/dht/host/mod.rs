//! Node hosts: a ring's nodes spread over several processes (issue 15 item 1).
//!
//! With every node of a ring in the bench process, all nodes share one runtime and its worker
//! threads, and the cost of a request depends on which worker each node's tasks land on (28–31
//! µs or 47–56 µs of CPU per request at 10 nodes, in either mode): the figures measured the
//! scheduler as much as the protocol. A node host is this same executable re-run as
//! `xtask node-host` (hidden): a current-thread tokio runtime in a process of its own holding a
//! contiguous slice of the ring's nodes, built exactly as the in-process ring builds them (same
//! identities, configuration and sockets on 127.0.0.1), so that the nodes of a host share one
//! thread and the hosts share the cores through the kernel's scheduler only.
//!
//! The bench process drives the hosts over their standard input and output, one line per
//! command and per reply ([`wire`]); [`client::Hosts`] multiplexes the commands of many
//! operations in flight over each host's pipes, [`serve`] is the host's side.

pub(crate) mod client;
pub(crate) mod serve;
pub(crate) mod wire;

pub(crate) use client::Hosts;
pub use serve::{NodeHostArgs, node_host};
