//! The one error type of the harness.

use std::path::PathBuf;

/// Everything that can stop `cargo xtask` before it has written its report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The report directory or one of its files could not be written.
    #[error(
        "cannot write {path}: {source} (check that the directory is writable, or pass --out DIR)"
    )]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The JSON report could not be encoded.
    #[error("cannot encode report.json: {0}")]
    Json(#[from] serde_json::Error),
    /// `--only` named a workload that does not exist.
    #[error("unknown workload {name:?}; known workloads: {known}")]
    UnknownWorkload {
        /// The name given.
        name: String,
        /// The names that exist, comma-separated.
        known: String,
    },
    /// The tokio runtime could not be started.
    #[error("cannot start the tokio runtime: {0}")]
    Runtime(std::io::Error),
    /// A child process (`cargo bench`) could not be started.
    #[error("cannot run `{command}`: {source} (is cargo on PATH?)")]
    Spawn {
        /// The command line.
        command: String,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A child process ran but failed.
    #[error("`{command}` failed with {status}; its output above says why")]
    ChildFailed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
    },
    /// A workload's own operation failed; the measurement is not trustworthy.
    #[error("workload {workload} ({mode}) failed: {reason}")]
    Workload {
        /// The workload's name.
        workload: String,
        /// Secure or insecure.
        mode: crate::Mode,
        /// What went wrong.
        reason: String,
    },
    /// A parameter is out of range (zero rate, zero operations, ...).
    #[error("invalid benchmark parameter: {0}")]
    Param(&'static str),
}
