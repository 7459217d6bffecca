//! Project automation for themis, in the `cargo xtask` pattern. Its one job today is
//! `cargo xtask bench`: run the paper's §9 workloads against the real implementation, in secure
//! and insecure mode in the same run, and write `report.md`, `report.json` and SVG plots.
//!
//! A workload plugs in behind the [`Workload`] trait and drives load with [`open_loop`]
//! (constant offered rate, latency from the scheduled send time) or [`closed_loop`]
//! (N operations in flight); latencies go into a bounded [`Histogram`].
//!
//! ```
//! use std::time::Duration;
//! use xtask::{OpOutcome, OpenLoop, Progress, Timer, open_loop};
//!
//! let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build()?;
//! let stats = rt.block_on(open_loop(
//!     OpenLoop { rate_per_sec: 1000.0, ops: 50, max_in_flight: 100, timer: Timer::Tokio },
//!     &Progress::hidden(),
//!     |_| async {
//!         tokio::time::sleep(Duration::from_millis(2)).await;
//!         Ok::<_, String>(OpOutcome::default())
//!     },
//! ))?;
//! assert_eq!(stats.ok, 50);
//! assert_eq!(stats.latency.value_at_quantile(0.99), 2_000_000); // ns
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod bench;
mod error;
mod histogram;
mod load;
mod machine;
mod progress;
mod report;
mod search;
mod spread;
mod svg;
mod workload;
mod workloads;

pub use bench::{
    BenchOptions, BenchOutcome, expected_duration, harness, run_bench, run_micro, workload_names,
};
pub use error::Error;
pub use histogram::Histogram;
pub use load::{
    ClosedLoop, LATE_THRESHOLD, OpOutcome, OpenLoop, RunStats, Timer, closed_loop, open_loop,
    runtime,
};
pub use machine::{MachineInfo, open_fds, peak_rss_kib, reset_peak_rss};
pub use progress::Progress;
pub use search::RateSearch;
pub use spread::{Comparison, Spread};
pub use workload::{
    Figure, Goal, Measurement, Metric, Mode, Params, Phase, PlotAxis, PointSel, Profile, RunValues,
    Verdict, Workload,
};
pub use workloads::dht::host::{NodeHostArgs, node_host};
pub use workloads::sidecar::{http_upstream, tcp_relay};
