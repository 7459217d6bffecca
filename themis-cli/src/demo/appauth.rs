//! AppAuth itself (paper §7): the `check` back-end, the `handler` ingress that calls it through
//! the mesh, the users, and the client's batches of logins.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use themis_mesh::{Bytes, MeshNode, NodeId, ServiceHandler};

use super::users::{Login, UserTable};
use super::{CONCURRENCY, USERS};

/// A login of the batch and whether `check` must accept it.
pub(super) struct Attempt {
    pub(super) login: Login,
    pub(super) valid: bool,
}

/// The users of `check`'s table (in plaintext here: the client plays them).
pub(super) fn users(rng: &mut fastrand::Rng) -> Vec<Login> {
    (0..USERS)
        .filter_map(|i| {
            let pw: String = std::iter::repeat_with(|| rng.alphanumeric())
                .take(12)
                .collect();
            Login::new(&format!("user{i:02}"), &pw)
        })
        .collect()
}

/// A batch of about 70 % valid logins, 15 % wrong passwords and 15 % unknown users.
pub(super) fn logins(rng: &mut fastrand::Rng, users: &[Login], count: usize) -> Vec<Attempt> {
    let mut batch = Vec::with_capacity(count);
    for i in 0..count {
        let Some(u) = users.get(rng.usize(..users.len())) else {
            break;
        };
        let roll = rng.u32(0..100);
        let (login, valid) = if roll < 70 {
            (Some(u.clone()), true)
        } else if roll < 85 {
            (Login::new(u.user(), &format!("{}?", rng.u32(..))), false)
        } else {
            (Login::new(&format!("mallory{i}"), "letmein"), false)
        };
        if let Some(login) = login {
            batch.push(Attempt { login, valid });
        }
    }
    batch
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

const OK_PREFIX: &[u8] = b"200 OK welcome ";
const DENIED: &[u8] = b"401 Unauthorized: unknown user or wrong password";

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
                let r = client.call("handler", Bytes::from(a.login.encode())).await;
                match r {
                    Ok(body) => {
                        b.latencies.push(t.elapsed());
                        let accepted =
                            body.strip_prefix(OK_PREFIX) == Some(a.login.user().as_bytes());
                        let denied = &body[..] == DENIED;
                        match (a.valid, accepted, denied) {
                            (true, true, _) => b.ok += 1,
                            (false, _, true) => b.denied += 1,
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

/// `check`: validates the pair in the request against the table; counts the calls it serves.
pub(super) fn check_service(table: Arc<UserTable>, served: Arc<AtomicU64>) -> impl ServiceHandler {
    move |_caller: NodeId, req: Bytes| {
        let (table, served) = (table.clone(), served.clone());
        async move {
            let login = Login::decode(&req)
                .ok_or("malformed login: expected u8 len, user, u8 len, password")?;
            served.fetch_add(1, Ordering::Relaxed);
            let verdict: &'static [u8] = if table.validate(&login) {
                b"valid"
            } else {
                b"invalid"
            };
            Ok::<_, String>(Bytes::from_static(verdict))
        }
    }
}

/// `handler`: the ingress of AppAuth (paper §7): parses the login, asks `check` through the
/// mesh and answers with a status code and message.
pub(super) fn handler_service(mesh: MeshNode, served: Arc<AtomicU64>) -> impl ServiceHandler {
    move |_caller: NodeId, req: Bytes| {
        let (mesh, served) = (mesh.clone(), served.clone());
        async move {
            let login = Login::decode(&req)
                .ok_or("400 Bad Request: expected u8 len, user, u8 len, password")?;
            served.fetch_add(1, Ordering::Relaxed);
            match mesh.call("check", req).await {
                Ok(v) if &v[..] == b"valid" => {
                    let mut out = OK_PREFIX.to_vec();
                    out.extend_from_slice(login.user().as_bytes());
                    Ok(Bytes::from(out))
                }
                Ok(v) if &v[..] == b"invalid" => Ok(Bytes::from_static(DENIED)),
                Ok(_) => Err("502 Bad Gateway: 'check' answered neither valid nor invalid".into()),
                Err(e) => Err(format!("503 Service Unavailable: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn the_mix_is_seeded_and_mostly_valid() {
        let mut rng = fastrand::Rng::with_seed(5);
        let users = users(&mut rng);
        assert_eq!(users.len(), USERS);
        let a = logins(&mut rng, &users, 2000);
        assert_eq!(a.len(), 2000);
        let valid = a.iter().filter(|x| x.valid).count();
        assert!((1300..1500).contains(&valid), "{valid}");
        let mut again = fastrand::Rng::with_seed(5);
        let users2 = super::users(&mut again);
        let b = logins(&mut again, &users2, 2000);
        assert!(
            a.iter()
                .zip(&b)
                .all(|(x, y)| x.login == y.login && x.valid == y.valid)
        );
    }

    #[tokio::test]
    async fn check_answers_from_the_table_and_counts() {
        let mut rng = fastrand::Rng::with_seed(6);
        let users = users(&mut rng);
        let table = Arc::new(UserTable::new(&users, &mut rng));
        let served = Arc::new(AtomicU64::new(0));
        let check = check_service(table, served.clone());
        let caller = NodeId::from_bytes([1; 32]);
        let good = Bytes::from(users[3].encode());
        assert_eq!(&check.call(caller, good).await.unwrap()[..], b"valid");
        let bad = Login::new(users[3].user(), "nope").unwrap();
        let r = check.call(caller, Bytes::from(bad.encode())).await.unwrap();
        assert_eq!(&r[..], b"invalid");
        let e = check
            .call(caller, Bytes::from_static(b"\xff"))
            .await
            .unwrap_err();
        assert!(e.contains("malformed login"), "{e}");
        assert_eq!(
            served.load(Ordering::Relaxed),
            2,
            "malformed requests are not served"
        );
    }
}
