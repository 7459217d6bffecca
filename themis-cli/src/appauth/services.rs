//! The two services of AppAuth (paper §7), and the client's reading of their answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use themis_mesh::{Bytes, MeshNode, NodeId, ServiceHandler};

use super::CHECK;
use super::users::{Login, UserTable, record_matches};

/// The start of an accepted login's answer; the user name follows.
const OK_PREFIX: &[u8] = b"200 OK welcome ";
/// The answer to a wrong password or an unknown user (the same for both).
const DENIED: &[u8] = b"401 Unauthorized: unknown user or wrong password";
/// What `handler` says about a request that is not a [`Login`].
const BAD_LOGIN: &str = "400 Bad Request: expected u8 len, user, u8 len, password";

/// `handler`'s answer to `login` given the credential record `check` returned.
fn answer(login: &Login, record: &[u8]) -> Bytes {
    if record_matches(record, login) {
        let mut out = OK_PREFIX.to_vec();
        out.extend_from_slice(login.user().as_bytes());
        Bytes::from(out)
    } else {
        Bytes::from_static(DENIED)
    }
}

/// What the client reads in `handler`'s answer to a login of `user`: `Some(true)` accepted,
/// `Some(false)` denied, `None` anything else (a wrong answer).
pub fn verdict(answer: &[u8], user: &str) -> Option<bool> {
    if answer.strip_prefix(OK_PREFIX) == Some(user.as_bytes()) {
        Some(true)
    } else if answer == DENIED {
        Some(false)
    } else {
        None
    }
}

/// `handler` calling `check` as a plain function, no mesh: the bench's direct baseline.
pub fn handle_direct(table: &UserTable, request: &[u8]) -> Result<Bytes, String> {
    let login = Login::decode(request).ok_or(BAD_LOGIN)?;
    Ok(answer(&login, &table.record(login.user().as_bytes())?))
}

/// The `check` back-end over a [`UserTable`], counting the calls it serves. Clones share the
/// table and the count.
#[derive(Clone)]
pub struct Check {
    table: Arc<UserTable>,
    served: Arc<AtomicU64>,
}

impl Check {
    /// `check` over `table`, having served no call.
    pub fn new(table: Arc<UserTable>) -> Self {
        Self {
            table,
            served: Arc::default(),
        }
    }

    /// Calls answered so far (malformed requests are not counted).
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// The service to register: a user name in, that user's credential record out.
    pub fn service(&self) -> impl ServiceHandler {
        let this = self.clone();
        move |_caller: NodeId, req: Bytes| {
            let this = this.clone();
            async move {
                let record = this.table.record(&req)?;
                this.served.fetch_add(1, Ordering::Relaxed);
                Ok::<_, String>(Bytes::copy_from_slice(&record))
            }
        }
    }
}

/// The `handler` ingress, counting the calls it serves. Clones share the count.
#[derive(Clone, Default)]
pub struct Handler {
    served: Arc<AtomicU64>,
}

impl Handler {
    /// `handler`, having served no call.
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls served so far (malformed logins are not counted).
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// The service to register on `mesh`: parses the login, fetches the user's record from
    /// [`CHECK`] through the mesh (paper §7: "uses check to fetch ... credentials"), validates
    /// the pair and answers with a status code and message.
    pub fn service(&self, mesh: MeshNode) -> impl ServiceHandler {
        let served = Arc::clone(&self.served);
        move |_caller: NodeId, req: Bytes| {
            let (mesh, served) = (mesh.clone(), Arc::clone(&served));
            async move {
                let login = Login::decode(&req).ok_or(BAD_LOGIN)?;
                served.fetch_add(1, Ordering::Relaxed);
                let user = Bytes::copy_from_slice(login.user().as_bytes());
                // A read: idempotent, so it fails over whatever happened to an attempt.
                let read = themis_mesh::CallOptions::default().idempotent(true);
                match mesh.call_with(CHECK, user, read).await {
                    Ok((record, _)) => Ok(answer(&login, &record)),
                    Err(e) => Err(format!("503 Service Unavailable: {e}")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::appauth::{RECORD_LEN, attempt, users};

    fn table(seed: u64) -> (Vec<Login>, Arc<UserTable>) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let users = users(&mut rng, 64);
        let table = Arc::new(UserTable::new(&users, &mut rng));
        (users, table)
    }

    #[tokio::test]
    async fn check_answers_from_the_table_and_counts() {
        let (users, table) = table(6);
        let check = Check::new(Arc::clone(&table));
        let service = check.service();
        let caller = NodeId::from_bytes([1; 32]);
        let user = Bytes::copy_from_slice(users[3].user().as_bytes());
        let record = service.call(caller, user).await.unwrap();
        assert_eq!(record.len(), RECORD_LEN);
        assert!(record_matches(&record, &users[3]));
        let wrong = Login::new(users[3].user(), "nope").unwrap();
        assert!(!record_matches(&record, &wrong));
        let unknown = service
            .call(caller, Bytes::from_static(b"nobody"))
            .await
            .unwrap();
        assert_eq!(
            unknown.len(),
            RECORD_LEN,
            "unknown users get a decoy record"
        );
        assert!(!record_matches(&unknown, &users[3]));
        let e = service
            .call(caller, Bytes::from_static(b"\xff"))
            .await
            .unwrap_err();
        assert!(e.contains("malformed user name"), "{e}");
        assert_eq!(check.served(), 2, "malformed requests are not served");
        assert_eq!(check.clone().served(), 2, "clones share the count");
    }

    #[test]
    fn the_direct_handler_accepts_right_passwords_only() {
        let (users, table) = table(5);
        let mut rng = fastrand::Rng::with_seed(9);
        for i in 0..200 {
            let a = attempt(&mut rng, &users, i).unwrap();
            let got = handle_direct(&table, &a.login.encode()).unwrap();
            assert_eq!(verdict(&got, a.login.user()), Some(a.valid), "login {i}");
        }
        let unknown = Login::new("nobody", "x").unwrap().encode();
        let got = handle_direct(&table, &unknown).unwrap();
        assert_eq!(verdict(&got, "nobody"), Some(false));
        assert!(handle_direct(&table, &[9, b'a']).is_err());
        assert!(handle_direct(&table, &[]).is_err());
    }

    #[test]
    fn verdicts_name_the_user() {
        assert_eq!(verdict(b"200 OK welcome alice", "alice"), Some(true));
        assert_eq!(verdict(b"200 OK welcome alice", "bob"), None);
        assert_eq!(verdict(DENIED, "bob"), Some(false));
        assert_eq!(verdict(b"500", "bob"), None);
    }
}
