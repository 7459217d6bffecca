//! The library part of `themis-cli`: the paper's example application, AppAuth (§7), which
//! `themis demo` runs on a local mesh and the benchmark harness (`cargo xtask bench`,
//! workload 6) measures. One implementation, so that the demo and the bench run the same
//! application with the same messages.
//!
//! The `themis` command itself (keys, node agent, cluster, client, demo) is the binary target
//! of this package.
#![forbid(unsafe_code)]

pub mod appauth;
