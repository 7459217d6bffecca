//! The progress bar (indicatif), or nothing when the harness runs under a test.

use std::borrow::Cow;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A handle the harness and the workloads advance as operations complete. Cheap to clone
/// (every clone drives the same bar) and safe to use from many tasks at once.
#[derive(Clone, Debug)]
pub struct Progress {
    bar: ProgressBar,
    /// `false` for [`Progress::hidden`]: messages are dropped too.
    speak: bool,
}

impl Progress {
    /// A bar drawn on standard error (hidden automatically when stderr is not a terminal).
    pub fn stderr() -> Self {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{prefix:>24.bold} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg} (eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        Self { bar, speak: true }
    }

    /// A bar that draws and prints nothing (tests, library callers).
    pub fn hidden() -> Self {
        Self {
            bar: ProgressBar::hidden(),
            speak: false,
        }
    }

    /// Starts a new stage: `prefix` names the workload and mode, `len` is the number of
    /// operations the stage will count.
    pub fn stage(&self, prefix: impl Into<Cow<'static, str>>, len: u64) {
        self.bar.reset();
        self.bar.set_prefix(prefix);
        self.bar.set_length(len);
        self.bar.set_message("");
    }

    /// Sets the message shown after the counter (the point being measured).
    pub fn message(&self, msg: impl Into<Cow<'static, str>>) {
        self.bar.set_message(msg);
    }

    /// Grows the expected total of the current stage by `n`.
    pub fn add_len(&self, n: u64) {
        self.bar.inc_length(n);
    }

    /// Counts `n` finished operations.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    /// Prints a line above the bar without tearing it (plain stderr when the bar is not drawn,
    /// nothing for a hidden one).
    pub fn println(&self, line: impl AsRef<str>) {
        if !self.speak {
            return;
        }
        if self.bar.is_hidden() {
            eprintln!("{}", line.as_ref());
        } else {
            self.bar.println(line);
        }
    }

    /// Clears the bar at the end of the run.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
