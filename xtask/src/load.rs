//! Load generators on tokio: an open-loop pacer and a closed-loop runner.
//!
//! Both read `tokio::time::Instant`, so tests drive them on paused virtual time.
//!
//! The open-loop pacer avoids coordinated omission: operation `i` is *due* at
//! `start + i / rate` whatever happened before, and its latency is measured from that due time,
//! not from when it was actually sent. A stalled system therefore shows up in the latencies of
//! every operation that should have been sent during the stall, as it would for real clients.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::{Error, Histogram, Progress};

/// What one operation reports besides its latency.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpOutcome {
    /// Overlay hops the operation took (DHT lookups), if the workload counts them.
    pub hops: Option<u32>,
}

/// The result of one load run.
#[derive(Clone, Debug, Default)]
pub struct RunStats {
    /// Latencies of the successful operations.
    pub latency: Histogram,
    /// Operations that succeeded.
    pub ok: u64,
    /// Operations that failed (their latency is not recorded).
    pub errors: u64,
    /// The first failure's message, to show the operator.
    pub first_error: Option<String>,
    /// From the first due time to the last completion.
    pub elapsed: Duration,
    /// Sum and count of reported hops.
    hops_sum: u64,
    hops_count: u64,
    /// Open loop only: operations sent more than [`LATE_THRESHOLD`] after their due time
    /// (the generator or the in-flight limit could not keep up).
    pub late_sends: u64,
    /// Open loop only: how far behind its due time each operation was sent (the pacer's own
    /// timing error plus any wait for the in-flight bound). Empty for a closed loop.
    pub send_lag: Histogram,
    /// Open loop only: the rate actually offered, operations per second of sending.
    pub offered_per_sec: Option<f64>,
}

/// An open-loop send later than this counts in [`RunStats::late_sends`].
pub const LATE_THRESHOLD: Duration = Duration::from_millis(1);

impl RunStats {
    fn record(&mut self, latency: Duration, result: Result<OpOutcome, String>) {
        match result {
            Ok(outcome) => {
                self.ok += 1;
                self.latency.record(latency);
                if let Some(h) = outcome.hops {
                    self.hops_sum += u64::from(h);
                    self.hops_count += 1;
                }
            }
            Err(e) => {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(e);
                }
            }
        }
    }

    fn merge(&mut self, other: RunStats) {
        self.latency.merge(&other.latency);
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.hops_sum += other.hops_sum;
        self.hops_count += other.hops_count;
        self.late_sends += other.late_sends;
        self.send_lag.merge(&other.send_lag);
    }

    /// Successful operations per second of elapsed time.
    pub fn ops_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        }
    }

    /// Mean hops over the operations that reported them.
    pub fn mean_hops(&self) -> Option<f64> {
        (self.hops_count > 0).then(|| self.hops_sum as f64 / self.hops_count as f64)
    }
}

/// Configuration of [`open_loop`].
#[derive(Clone, Copy, Debug)]
pub struct OpenLoop {
    /// Offered operations per second (> 0).
    pub rate_per_sec: f64,
    /// Operations to send (> 0).
    pub ops: u64,
    /// Bound on operations in flight (> 0). When reached, the pacer waits for one to finish;
    /// the wait counts in the latency of the operations it delays.
    pub max_in_flight: usize,
    /// How the pacer waits for the next due time.
    pub timer: Timer,
}

/// The pacer's way of waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// tokio's timer: 1 ms granularity, so at rates above 1000/s operations leave in bursts up
    /// to 1 ms late (and that lateness counts in their latency). Follows tokio's paused clock,
    /// which is what tests need.
    Tokio,
    /// tokio's timer up to 2 ms before the due time, then the operating system's
    /// high-resolution sleep on a blocking thread: sends are within tens of microseconds of
    /// their due time, and the pacer does not spin. Real time only.
    Precise,
}

/// Waits until `due` with the chosen timer.
async fn wait_until(due: Instant, timer: Timer) {
    let now = Instant::now();
    if due <= now {
        return;
    }
    match timer {
        Timer::Tokio => tokio::time::sleep_until(due).await,
        Timer::Precise => {
            const COARSE_MARGIN: Duration = Duration::from_millis(2);
            if due - now > COARSE_MARGIN {
                tokio::time::sleep_until(due - COARSE_MARGIN).await;
            }
            let rest = due.saturating_duration_since(Instant::now());
            if !rest.is_zero() {
                // The closure cannot panic; a join error only means the runtime is shutting down.
                let _ = tokio::task::spawn_blocking(move || std::thread::sleep(rest)).await;
            }
        }
    }
}

/// Sends `cfg.ops` operations at a constant offered rate, each as its own tokio task, and
/// records each latency from its due time. `op(i)` builds operation `i`.
pub async fn open_loop<F, Fut, E>(
    cfg: OpenLoop,
    progress: &Progress,
    mut op: F,
) -> Result<RunStats, Error>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<OpOutcome, E>> + Send + 'static,
    E: Display,
{
    if !(cfg.rate_per_sec.is_finite() && cfg.rate_per_sec > 0.0) {
        return Err(Error::Param("open-loop rate must be a positive number"));
    }
    if cfg.ops == 0 || cfg.max_in_flight == 0 {
        return Err(Error::Param(
            "open-loop ops and max_in_flight must be at least 1",
        ));
    }
    let mut stats = RunStats::default();
    let mut tasks: JoinSet<(Duration, Result<OpOutcome, String>, Instant)> = JoinSet::new();
    let start = Instant::now();
    let mut last_done = start;
    let mut last_sent = start;
    let mut on_done = |stats: &mut RunStats, joined: Result<_, tokio::task::JoinError>| {
        let (latency, result, done) = match joined {
            Ok(v) => v,
            Err(e) => (
                Duration::ZERO,
                Err(format!("operation task failed: {e}")),
                Instant::now(),
            ),
        };
        last_done = last_done.max(done);
        stats.record(latency, result);
        progress.inc(1);
    };
    for i in 0..cfg.ops {
        let due = start + Duration::from_secs_f64(i as f64 / cfg.rate_per_sec);
        wait_until(due, cfg.timer).await;
        while tasks.len() >= cfg.max_in_flight {
            if let Some(j) = tasks.join_next().await {
                on_done(&mut stats, j);
            }
        }
        while let Some(j) = tasks.try_join_next() {
            on_done(&mut stats, j);
        }
        let sent = Instant::now();
        stats.send_lag.record(sent.saturating_duration_since(due));
        if sent.saturating_duration_since(due) > LATE_THRESHOLD {
            stats.late_sends += 1;
        }
        last_sent = sent;
        let fut = op(i);
        tasks.spawn(async move {
            let result = fut.await.map_err(|e| e.to_string());
            let done = Instant::now();
            // Latency from the due time, not the send time: no coordinated omission.
            (done.saturating_duration_since(due), result, done)
        });
    }
    while let Some(j) = tasks.join_next().await {
        on_done(&mut stats, j);
    }
    stats.elapsed = last_done.saturating_duration_since(start);
    let send_window = last_sent.saturating_duration_since(start).as_secs_f64();
    stats.offered_per_sec = Some(if cfg.ops > 1 && send_window > 0.0 {
        (cfg.ops - 1) as f64 / send_window
    } else {
        cfg.rate_per_sec
    });
    Ok(stats)
}

/// Configuration of [`closed_loop`].
#[derive(Clone, Copy, Debug)]
pub struct ClosedLoop {
    /// Operations kept in flight (> 0): each of this many tasks sends its next operation as
    /// soon as its previous one completes.
    pub concurrency: usize,
    /// Operations in total (> 0), at least: see `min_duration`.
    pub ops: u64,
    /// The run goes on (operations `ops`, `ops + 1`, ...) until it has lasted at least this
    /// long. A point of a few milliseconds measures whatever else the machine did in those
    /// milliseconds (a page-fault burst, another process's time slice) more than the system
    /// under test; `Duration::ZERO` runs exactly `ops`.
    pub min_duration: Duration,
}

impl ClosedLoop {
    /// `ops` operations with `concurrency` in flight, no minimum duration.
    pub fn new(concurrency: usize, ops: u64) -> Self {
        Self {
            concurrency,
            ops,
            min_duration: Duration::ZERO,
        }
    }

    /// The same, lasting at least `min` (see [`ClosedLoop::min_duration`]).
    pub fn lasting(mut self, min: Duration) -> Self {
        self.min_duration = min;
        self
    }
}

/// Runs `cfg.ops` operations (more if they finish before `cfg.min_duration`) with
/// `cfg.concurrency` in flight and records each latency from its send.
pub async fn closed_loop<F, Fut, E>(
    cfg: ClosedLoop,
    progress: &Progress,
    op: F,
) -> Result<RunStats, Error>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<OpOutcome, E>> + Send + 'static,
    E: Display + 'static,
{
    if cfg.ops == 0 || cfg.concurrency == 0 {
        return Err(Error::Param(
            "closed-loop ops and concurrency must be at least 1",
        ));
    }
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..cfg.concurrency {
        let (op, next, progress) = (Arc::clone(&op), Arc::clone(&next), progress.clone());
        let (total, min) = (cfg.ops, cfg.min_duration);
        workers.spawn(async move {
            let mut stats = RunStats::default();
            let mut last_done = start;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total && start.elapsed() >= min {
                    break;
                }
                let sent = Instant::now();
                let result = op(i).await.map_err(|e| e.to_string());
                last_done = Instant::now();
                stats.record(last_done.saturating_duration_since(sent), result);
                progress.inc(1);
            }
            (stats, last_done)
        });
    }
    let mut stats = RunStats::default();
    let mut last_done = start;
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok((s, done)) => {
                stats.merge(s);
                last_done = last_done.max(done);
            }
            Err(e) => stats.record(Duration::ZERO, Err(format!("worker task failed: {e}"))),
        }
    }
    stats.elapsed = last_done.saturating_duration_since(start);
    Ok(stats)
}

/// A multi-threaded tokio runtime with one worker per available core, for a workload's run.
pub fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)
}

/// A current-thread tokio runtime driven by a thread of its own until [`RuntimeThread::stop`]:
/// the tasks spawned through its handle never move to another thread, as in a single-threaded
/// process of their own.
pub(crate) struct RuntimeThread {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RuntimeThread {
    /// Starts the thread and its runtime.
    pub(crate) fn start(name: &str) -> Result<Self, Error> {
        let rt = single_thread_runtime()?;
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                rt.block_on(async {
                    let _ = stopped.await;
                });
            })
            .map_err(Error::Runtime)?;
        Ok(Self {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where to spawn the tasks that run on this thread.
    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// Stops the runtime (its tasks are dropped) and waits for the thread.
    pub(crate) fn stop(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RuntimeThread {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A current-thread tokio runtime: every task of the workload on one thread, so that a figure
/// is the system's CPU per operation rather than the cost of moving tasks between threads.
pub(crate) fn single_thread_runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> u64 {
        v * 1_000_000
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_paces_and_measures_service_time() {
        let cfg = OpenLoop {
            rate_per_sec: 1000.0,
            ops: 100,
            max_in_flight: 1000,
            timer: Timer::Tokio,
        };
        let stats = open_loop(cfg, &Progress::hidden(), |_| async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok::<_, String>(OpOutcome::default())
        })
        .await
        .unwrap();
        assert_eq!(stats.ok, 100);
        assert_eq!(stats.late_sends, 0);
        // 100 sends 1 ms apart, the last one due at 99 ms and done 5 ms later.
        assert_eq!(stats.elapsed, Duration::from_millis(104));
        assert_eq!(stats.latency.min_ns(), ms(5));
        assert_eq!(stats.latency.max_ns(), ms(5));
        let offered = stats.offered_per_sec.unwrap();
        assert!((offered - 1000.0).abs() < 1e-6, "{offered}");
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_counts_queueing_from_the_due_time() {
        // One in flight at a time, 10 ms each, but due every 1 ms: operation i starts at
        // 10*i ms and completes at 10*(i+1) ms, though it was due at i ms. Its latency is
        // therefore 9*i + 10 ms, not the 10 ms a closed-loop measurement would report.
        let cfg = OpenLoop {
            rate_per_sec: 1000.0,
            ops: 20,
            max_in_flight: 1,
            timer: Timer::Tokio,
        };
        let stats = open_loop(cfg, &Progress::hidden(), |_| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok::<_, String>(OpOutcome { hops: Some(3) })
        })
        .await
        .unwrap();
        assert_eq!(stats.latency.min_ns(), ms(10));
        assert_eq!(stats.latency.max_ns(), ms(9 * 19 + 10));
        let mean_ms = stats.latency.mean_ns() / 1e6;
        let want = (0..20).map(|i| 9.0 * i as f64 + 10.0).sum::<f64>() / 20.0;
        assert!((mean_ms - want).abs() < 1e-6, "{mean_ms} vs {want}");
        assert_eq!(stats.late_sends, 19);
        assert_eq!(stats.mean_hops(), Some(3.0));
        assert_eq!(stats.elapsed, Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_counts_errors_apart() {
        let cfg = OpenLoop {
            rate_per_sec: 100.0,
            ops: 10,
            max_in_flight: 4,
            timer: Timer::Tokio,
        };
        let stats = open_loop(cfg, &Progress::hidden(), |i| async move {
            if i % 5 == 0 {
                Err(format!("op {i} refused"))
            } else {
                Ok(OpOutcome::default())
            }
        })
        .await
        .unwrap();
        assert_eq!((stats.ok, stats.errors), (8, 2));
        assert_eq!(stats.latency.len(), 8);
        assert_eq!(stats.first_error.as_deref(), Some("op 0 refused"));
    }

    #[tokio::test(start_paused = true)]
    async fn closed_loop_keeps_n_in_flight() {
        let cfg = ClosedLoop::new(4, 40);
        let stats = closed_loop(cfg, &Progress::hidden(), |_| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok::<_, String>(OpOutcome::default())
        })
        .await
        .unwrap();
        assert_eq!(stats.ok, 40);
        // 40 operations, 4 at a time, 10 ms each.
        assert_eq!(stats.elapsed, Duration::from_millis(100));
        assert!((stats.ops_per_sec() - 400.0).abs() < 1e-6);
        assert_eq!(stats.latency.value_at_quantile(0.99), ms(10));
    }

    #[tokio::test(start_paused = true)]
    async fn closed_loop_runs_on_until_its_minimum_duration() {
        let cfg = ClosedLoop::new(2, 4).lasting(Duration::from_millis(100));
        let stats = closed_loop(cfg, &Progress::hidden(), |_| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok::<_, String>(OpOutcome::default())
        })
        .await
        .unwrap();
        // 4 operations would take 20 ms; the run goes on to 100 ms: 2 workers x 10 rounds.
        assert_eq!(stats.elapsed, Duration::from_millis(100));
        assert_eq!(stats.ok, 20);
        let short = closed_loop(ClosedLoop::new(2, 4), &Progress::hidden(), |_| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok::<_, String>(OpOutcome::default())
        })
        .await
        .unwrap();
        assert_eq!((short.ok, short.elapsed), (4, Duration::from_millis(20)));
    }

    /// Real time, so only bounds that load cannot break: no operation leaves before its due
    /// time, and queueing behind the in-flight bound shows in the latencies.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn precise_timer_never_sends_early_and_keeps_queueing_in_latency() {
        let start = std::time::Instant::now();
        let cfg = OpenLoop {
            rate_per_sec: 500.0,
            ops: 20,
            max_in_flight: 1,
            timer: Timer::Precise,
        };
        let stats = open_loop(cfg, &Progress::hidden(), move |i| async move {
            let since_start = start.elapsed();
            std::thread::sleep(Duration::from_millis(5));
            // Due at i * 2 ms; sent no earlier.
            if since_start >= Duration::from_millis(2 * i) {
                Ok(OpOutcome::default())
            } else {
                Err(format!("op {i} sent early"))
            }
        })
        .await
        .unwrap();
        assert_eq!(stats.errors, 0, "{:?}", stats.first_error);
        // Operation i cannot finish before 5 * (i + 1) ms but was due at 2 * i ms: the last one's
        // latency is at least 5 * 20 - 2 * 19 = 62 ms, though each takes only 5 ms.
        assert!(stats.latency.max_ns() >= ms(62), "{:?}", stats.latency);
        assert_eq!(stats.send_lag.len(), 20);
    }

    #[tokio::test]
    async fn bad_parameters_are_refused() {
        let p = Progress::hidden();
        let op = |_| async { Ok::<_, String>(OpOutcome::default()) };
        for cfg in [
            OpenLoop {
                rate_per_sec: 0.0,
                ops: 1,
                max_in_flight: 1,
                timer: Timer::Tokio,
            },
            OpenLoop {
                rate_per_sec: f64::NAN,
                ops: 1,
                max_in_flight: 1,
                timer: Timer::Tokio,
            },
            OpenLoop {
                rate_per_sec: 1.0,
                ops: 0,
                max_in_flight: 1,
                timer: Timer::Tokio,
            },
            OpenLoop {
                rate_per_sec: 1.0,
                ops: 1,
                max_in_flight: 0,
                timer: Timer::Tokio,
            },
        ] {
            assert!(matches!(open_loop(cfg, &p, op).await, Err(Error::Param(_))));
        }
        let cfg = ClosedLoop::new(0, 1);
        assert!(matches!(
            closed_loop(cfg, &p, op).await,
            Err(Error::Param(_))
        ));
    }
}
