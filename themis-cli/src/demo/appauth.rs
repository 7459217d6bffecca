//! The client's side of AppAuth in the demo: batches of logins from the shared mix
//! ([`themis_cli::appauth`]), run through `handler` and counted against the table.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use themis_cli::appauth::{self, Attempt, HANDLER, Login};
use themis_mesh::{Bytes, MeshNode};

use super::CONCURRENCY;

/// A batch of `count` logins of the mix (about 70 % valid, 15 % wrong passwords, 15 % unknown
/// users).
pub(super) fn logins(rng: &mut fastrand::Rng, users: &[Login], count: usize) -> Vec<Attempt> {
    (0..count as u64)
        .map_while(|i| appauth::attempt(rng, users, i))
        .collect()
}

/// Counts of one batch.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) ok: u64,
    pub(super) denied: u64,
    /// Answers that differ from what `check`'s table says.
    pub(super) wrong: u64,
    /// Logins that got no answer (an error from the mesh or from `handler`).
    pub(super) failed: u64,
    pub(super) first_error: Option<String>,
    pub(super) latencies: Vec<Duration>,
    pub(super) elapsed: Duration,
}

/// Runs `batch` from `client` through `handler`, [`CONCURRENCY`] logins in flight, and counts
/// the answers against what the table says.
pub(super) async fn run_batch(client: &MeshNode, batch: &Arc<Vec<Attempt>>) -> Batch {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (client, batch, next) = (client.clone(), batch.clone(), next.clone());
        tasks.spawn(async move {
            let mut b = Batch::default();
            while let Some(a) = batch.get(next.fetch_add(1, Ordering::Relaxed)) {
                let t = Instant::now();
                // A login is a read: idempotent, failed over whatever happened to an attempt.
                let r = client
                    .call_with(
                        HANDLER,
                        Bytes::from(a.login.encode()),
                        themis_mesh::CallOptions::default().idempotent(true),
                    )
                    .await
                    .map(|(body, _)| body);
                match r {
                    Ok(body) => {
                        b.latencies.push(t.elapsed());
                        match (a.valid, appauth::verdict(&body, a.login.user())) {
                            (true, Some(true)) => b.ok += 1,
                            (false, Some(false)) => b.denied += 1,
                            _ => {
                                b.wrong += 1;
                                b.first_error.get_or_insert_with(|| {
                                    format!(
                                        "login of '{}' answered {:?}",
                                        a.login.user(),
                                        String::from_utf8_lossy(&body)
                                    )
                                });
                            }
                        }
                    }
                    Err(e) => {
                        b.failed += 1;
                        b.first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            b
        });
    }
    let mut total = Batch::default();
    while let Some(r) = tasks.join_next().await {
        if let Ok(b) = r {
            total.ok += b.ok;
            total.denied += b.denied;
            total.wrong += b.wrong;
            total.failed += b.failed;
            total.latencies.extend(b.latencies);
            if total.first_error.is_none() {
                total.first_error = b.first_error;
            }
        }
    }
    total.latencies.sort_unstable();
    total.elapsed = started.elapsed();
    total
}
