//! The driver of one service's check: a tokio task that owns the [`CheckState`], runs the
//! probes on their interval (or waits for heartbeats within the TTL), and keeps the service's
//! announcement in line with the status: passing → the provider record is stored, critical →
//! it is withdrawn with the signed tombstone (PROTOCOL.md §6.10). A failed store or withdrawal
//! is tried again at the next result.
//!
//! The task ends when its [`CheckHandle`] drops (deregistration, replacement, shutdown).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};

use super::spec::{CheckKind, CheckSpec, Probe, show_duration};
use super::state::{CheckState, MAX_OUTPUT, Status, cut};
use crate::agent::metrics::AgentMetrics;

/// Heartbeats that may wait for the task (more are refused: the service sends too fast).
const HEARTBEAT_QUEUE: usize = 8;

/// What the runner does when the status changes: store or withdraw the service's record.
#[async_trait::async_trait]
pub(crate) trait Announce: Send + Sync + 'static {
    /// Stores the service's provider record (registers it on the mesh).
    async fn announce(&self, service: &str) -> Result<(), String>;
    /// Withdraws the record (tombstones) and stops serving calls for it.
    async fn withdraw(&self, service: &str) -> Result<(), String>;
}

/// A heartbeat of a TTL check (`PUT /v1/services/{name}/pass` or `/fail`).
pub(crate) struct Heartbeat {
    pub(crate) pass: bool,
    pub(crate) note: String,
    /// Answered with the check's view once the heartbeat is taken (and the record stored or
    /// withdrawn if the status changed).
    pub(crate) done: oneshot::Sender<View>,
}

/// What the runner publishes after each result.
#[derive(Debug, Clone)]
pub(crate) struct View {
    pub(crate) state: CheckState,
    /// Whether the service's record is stored now.
    pub(crate) announced: bool,
    /// Why the last store or withdrawal failed, if it did.
    pub(crate) error: Option<String>,
}

/// The agent's hold on a running check; dropping it ends the task.
pub(crate) struct CheckHandle {
    spec: CheckSpec,
    heartbeats: mpsc::Sender<Heartbeat>,
    view: watch::Receiver<View>,
    task: tokio::task::AbortHandle,
}

impl Drop for CheckHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why a heartbeat was not taken.
#[derive(Debug)]
pub(crate) enum HeartbeatError {
    /// The check is not a TTL check.
    NotTtl(&'static str),
    /// [`HEARTBEAT_QUEUE`] heartbeats wait already.
    Busy,
    /// The check's task has ended.
    Ended,
}

impl CheckHandle {
    /// The check's view now.
    pub(crate) fn view(&self) -> View {
        self.view.borrow().clone()
    }

    /// Hands a heartbeat to a TTL check; the answer comes once it is taken.
    pub(crate) fn heartbeat(
        &self,
        pass: bool,
        note: &str,
    ) -> Result<oneshot::Receiver<View>, HeartbeatError> {
        if !matches!(self.spec.kind, CheckKind::Ttl(_)) {
            return Err(HeartbeatError::NotTtl(self.spec.kind.name()));
        }
        let (done, rx) = oneshot::channel();
        let hb = Heartbeat {
            pass,
            note: cut(note, MAX_OUTPUT).to_owned(),
            done,
        };
        self.heartbeats.try_send(hb).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => HeartbeatError::Busy,
            mpsc::error::TrySendError::Closed(_) => HeartbeatError::Ended,
        })?;
        Ok(rx)
    }

    /// The check as JSON (`GET /v1/health/{name}`), at `now`.
    pub(crate) fn to_json(&self) -> Value {
        let v = self.view();
        let now = Instant::now();
        let ago = |t: Instant| now.saturating_duration_since(t);
        let wall_ms = |t: Instant| {
            SystemTime::now()
                .checked_sub(ago(t))
                .and_then(|w| w.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        };
        let (passes, failures) = v.state.counts();
        let (in_a_row_pass, in_a_row_fail) = v.state.streak();
        let th = v.state.thresholds();
        let (target, interval, timeout, ttl) = match &self.spec.kind {
            CheckKind::Probe {
                probe,
                interval,
                timeout,
            } => (
                Some(match probe {
                    Probe::Http(u) => u.to_string(),
                    Probe::Tcp(a) => a.clone(),
                }),
                Some(show_duration(*interval)),
                Some(show_duration(*timeout)),
                None,
            ),
            CheckKind::Ttl(ttl) => (None, None, None, Some(show_duration(*ttl))),
        };
        json!({
            "kind": self.spec.kind.name(),
            "target": target,
            "interval": interval,
            "timeout": timeout,
            "ttl": ttl,
            "status": v.state.status().as_str(),
            "output": v.state.output(),
            "since_unix_ms": wall_ms(v.state.since()),
            "since_secs": ago(v.state.since()).as_secs_f64(),
            "last_result_secs_ago": v.state.last_result().map(|t| ago(t).as_secs_f64()),
            "passes": passes,
            "failures": failures,
            "passes_in_a_row": in_a_row_pass,
            "failures_in_a_row": in_a_row_fail,
            "success_before_passing": th.successes_before_passing,
            "failures_before_critical": th.failures_before_critical,
            "announced": v.announced,
            "announce_error": v.error,
        })
    }
}

/// Starts the check of `service` from `state` (which may hold the result of a first probe
/// made at registration) with the record stored or not (`announced`). The first probe of the
/// task runs one interval from now; a TTL's first deadline is one TTL from now.
pub(crate) fn spawn(
    service: String,
    spec: CheckSpec,
    state: CheckState,
    announced: bool,
    announcer: Arc<dyn Announce>,
    http: reqwest::Client,
    metrics: AgentMetrics,
) -> CheckHandle {
    let (heartbeats, rx) = mpsc::channel(HEARTBEAT_QUEUE);
    let (view_tx, view) = watch::channel(View {
        state,
        announced,
        error: None,
    });
    let task = tokio::spawn(run(Runner {
        service,
        spec: spec.clone(),
        announcer,
        http,
        metrics,
        heartbeats: rx,
        view: view_tx,
    }))
    .abort_handle();
    CheckHandle {
        spec,
        heartbeats,
        view,
        task,
    }
}

struct Runner {
    service: String,
    spec: CheckSpec,
    announcer: Arc<dyn Announce>,
    http: reqwest::Client,
    metrics: AgentMetrics,
    heartbeats: mpsc::Receiver<Heartbeat>,
    view: watch::Sender<View>,
}

fn period(kind: &CheckKind) -> Duration {
    match kind {
        CheckKind::Probe { interval, .. } => *interval,
        CheckKind::Ttl(ttl) => *ttl,
    }
}

async fn run(mut r: Runner) {
    let period = period(&r.spec.kind);
    let mut next = tokio::time::Instant::now() + period;
    loop {
        let (pass, output, done) = tokio::select! {
            () = tokio::time::sleep_until(next) => {
                let found = match &r.spec.kind {
                    CheckKind::Probe { probe, timeout, .. } => {
                        super::probe::run(&r.http, probe, *timeout).await
                    }
                    CheckKind::Ttl(ttl) => (
                        false,
                        format!("no heartbeat within the TTL of {}", show_duration(*ttl)),
                    ),
                };
                // The cadence holds; a probe that ran late does not make the next one early.
                next = (next + period).max(tokio::time::Instant::now());
                (found.0, found.1, None)
            }
            hb = r.heartbeats.recv() => {
                let Some(hb) = hb else { return };
                // A heartbeat of either kind restarts the TTL.
                next = tokio::time::Instant::now() + period;
                let note = if hb.note.is_empty() {
                    if hb.pass { "pass (heartbeat)" } else { "fail (heartbeat)" }.to_owned()
                } else {
                    hb.note
                };
                (hb.pass, note, Some(hb.done))
            }
        };
        let mut v = r.view.borrow().clone();
        r.metrics.check_result(r.spec.kind.name(), pass);
        if let Some(to) = v.state.record(pass, &output, Instant::now()) {
            r.metrics.check_transition(to == Status::Passing);
            tracing::info!(service = %r.service, status = to.as_str(), output = %v.state.output(), "health check changed");
        }
        reconcile(&r.service, &*r.announcer, &mut v).await;
        r.view.send_replace(v.clone());
        if let Some(done) = done {
            let _ = done.send(v);
        }
    }
}

/// Stores or withdraws the record so that it follows the status.
pub(crate) async fn reconcile(service: &str, a: &dyn Announce, v: &mut View) {
    let want = v.state.status() == Status::Passing;
    if want == v.announced {
        return;
    }
    let done = if want {
        a.announce(service).await
    } else {
        a.withdraw(service).await
    };
    match done {
        Ok(()) => {
            v.announced = want;
            v.error = None;
        }
        Err(e) => {
            tracing::warn!(service = %service, error = %e, "the health check's {} failed; tried again at the next result", if want { "store" } else { "withdrawal" });
            v.error = Some(e);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::agent::check::state::Thresholds;
    use std::sync::Mutex;

    /// Records what the runner asked for; fails the first `fail_first` requests.
    #[derive(Default)]
    struct Fake {
        log: Mutex<Vec<&'static str>>,
        fail_first: Mutex<usize>,
    }

    #[async_trait::async_trait]
    impl Announce for Fake {
        async fn announce(&self, _: &str) -> Result<(), String> {
            self.act("announce")
        }
        async fn withdraw(&self, _: &str) -> Result<(), String> {
            self.act("withdraw")
        }
    }

    impl Fake {
        fn act(&self, what: &'static str) -> Result<(), String> {
            self.log.lock().unwrap().push(what);
            let mut f = self.fail_first.lock().unwrap();
            if *f > 0 {
                *f -= 1;
                return Err("the DHT is away".into());
            }
            Ok(())
        }
    }

    fn ttl(ms: u64) -> CheckSpec {
        CheckSpec {
            kind: CheckKind::Ttl(Duration::from_millis(ms)),
            thresholds: Thresholds::default(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_ttl_check_announces_on_a_heartbeat_and_withdraws_when_it_lapses() {
        let fake = Arc::new(Fake::default());
        let spec = ttl(1000);
        let h = spawn(
            "svc".into(),
            spec.clone(),
            CheckState::new(spec.thresholds, Instant::now()),
            false,
            fake.clone(),
            reqwest::Client::new(),
            AgentMetrics::default(),
        );
        let v = h.heartbeat(true, "").unwrap().await.unwrap();
        assert!(v.announced && v.state.status() == Status::Passing);
        assert_eq!(v.state.output(), "pass (heartbeat)");
        // a heartbeat within the TTL keeps it passing
        tokio::time::sleep(Duration::from_millis(900)).await;
        let v = h.heartbeat(true, "still here").unwrap().await.unwrap();
        assert_eq!(v.state.output(), "still here");
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(h.view().announced);
        // none within the TTL: critical, withdrawn
        tokio::time::sleep(Duration::from_millis(200)).await;
        let v = h.view();
        assert!(!v.announced && v.state.status() == Status::Critical);
        assert!(
            v.state
                .output()
                .contains("no heartbeat within the TTL of 1s")
        );
        assert_eq!(*fake.log.lock().unwrap(), ["announce", "withdraw"]);
        // an HTTP check takes no heartbeats
        let http = CheckSpec {
            kind: CheckKind::Probe {
                probe: Probe::Tcp("127.0.0.1:1".into()),
                interval: Duration::from_secs(1),
                timeout: Duration::from_millis(500),
            },
            thresholds: Thresholds::default(),
        };
        let h2 = spawn(
            "svc2".into(),
            http.clone(),
            CheckState::new(http.thresholds, Instant::now()),
            false,
            fake.clone(),
            reqwest::Client::new(),
            AgentMetrics::default(),
        );
        assert!(matches!(
            h2.heartbeat(true, ""),
            Err(HeartbeatError::NotTtl("tcp"))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_store_is_tried_again_at_the_next_result() {
        let fake = Arc::new(Fake::default());
        *fake.fail_first.lock().unwrap() = 1;
        let spec = ttl(1000);
        let h = spawn(
            "svc".into(),
            spec.clone(),
            CheckState::new(spec.thresholds, Instant::now()),
            false,
            fake.clone(),
            reqwest::Client::new(),
            AgentMetrics::default(),
        );
        let v = h.heartbeat(true, "").unwrap().await.unwrap();
        assert!(!v.announced && v.error.as_deref() == Some("the DHT is away"));
        let v = h.heartbeat(true, "").unwrap().await.unwrap();
        assert!(v.announced && v.error.is_none());
        assert_eq!(*fake.log.lock().unwrap(), ["announce", "announce"]);
        // the task ends with its handle
        drop(h);
    }
}
