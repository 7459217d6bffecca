//! Bounded waits: a test never sleeps and hopes, and never hangs. Every wait has a limit and a
//! name; past the limit the test fails with that name.
//!
//! Limits are measured on tokio's clock: virtual time under a paused clock
//! (`#[tokio::test(start_paused = true)]`), where a wait costs no real time.

use std::future::Future;
use std::time::Duration;

/// How often [`eventually`] evaluates its condition (a cheap, synchronous check).
const POLL: Duration = Duration::from_millis(10);

/// How often [`eventually_ok`] runs its check (an asynchronous one, typically asking every node
/// of a ring for its status, so less often).
const POLL_ASYNC: Duration = Duration::from_millis(50);

/// Runs `fut`, failing the test with the step's name if it takes longer than `secs`. A hang in
/// the code under test becomes a failure with a message, never a stuck CI.
pub async fn within<T>(secs: u64, step: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("step '{step}' did not finish within {secs} s"),
    }
}

/// Waits until `cond` holds, evaluating it every 10 ms; fails the test naming `what` if it
/// does not hold within `secs`.
pub async fn eventually(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "'{what}' did not come to hold within {secs} s"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the asynchronous `check` returns `Ok`, running it every 50 ms; fails the test
/// naming `what`, with the check's last explanation, if that does not happen within `secs`.
pub async fn eventually_ok<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let why = match tokio::time::timeout_at(deadline, check()).await {
            Ok(Ok(())) => return,
            Ok(Err(why)) => why,
            Err(_) => "the check itself did not finish".to_string(),
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "'{what}' did not come to hold within {secs} s: {why}"
        );
        tokio::time::sleep(POLL_ASYNC).await;
    }
}

/// A current-thread runtime with tokio's clock paused: a whole simulation (in-memory network,
/// endpoints, DHT drivers) runs in virtual time, deterministically (see
/// [`crate::net::MemNetwork`]).
pub fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap_or_else(|e| panic!("a paused current-thread runtime: {e}"))
}
