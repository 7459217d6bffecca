//! `GET /v1/doctor`: the checks `themis check` prints, run by the agent where the node is.
//!
//! | check | ok | warn | fail |
//! |---|---|---|---|
//! | `ring` | a member whose successor's predecessor and predecessor's successor are this node (or a ring of one) | a neighbour does not answer, or names another node (the ring is repairing) | not a member |
//! | `clock` | the clocks of the neighbours are within 1 s of this node's | 1 s or more | 30 s or more (records expire by the wall clock; the DHT tolerates 60 s by default) |
//! | `descriptors` | at least 20 % of the open-file limit is left | less than 20 % | less than 5 % |
//! | `key file` | mode 0600 (or stricter) | no key file: a fresh identity each start | readable or writable by others |
//!
//! The answer is `{"checks": [{"check", "status", "detail"}], "ok": bool}` (`ok`: no check
//! failed), always with status 200: the checks ran.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use themis_mesh::dht::{NodeState, Peer};
use themis_mesh::{Contact, MeshNode};

use super::AppState;

/// A clock offset from which the doctor warns.
const CLOCK_WARN: Duration = Duration::from_secs(1);
/// A clock offset from which the doctor fails.
const CLOCK_FAIL: Duration = Duration::from_secs(30);

/// The routes of this module.
pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/v1/doctor", get(doctor))
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Ok,
    Warn,
    Fail,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }
}

/// One check: its name, outcome and what it found.
struct Check {
    name: &'static str,
    verdict: Verdict,
    detail: String,
}

impl Check {
    fn new(name: &'static str, verdict: Verdict, detail: impl Into<String>) -> Self {
        Self {
            name,
            verdict,
            detail: detail.into(),
        }
    }
}

async fn doctor(State(s): State<Arc<AppState>>) -> Json<Value> {
    let (ring, neighbours) = ring_check(&s.node).await;
    let checks = [
        ring,
        clock_check(&s.node, &neighbours).await,
        descriptors_check(),
        key_check(s.config.key_file.as_deref()),
    ];
    let ok = checks.iter().all(|c| c.verdict != Verdict::Fail);
    let list: Vec<Value> = checks
        .iter()
        .map(|c| json!({ "check": c.name, "status": c.verdict.as_str(), "detail": c.detail }))
        .collect();
    Json(json!({ "checks": list, "ok": ok }))
}

/// The ring around this node: its successor's predecessor and its predecessor's successor
/// must be this node (paper §6: the invariant stabilization restores). Returns the neighbours
/// for the clock check.
async fn ring_check(node: &MeshNode) -> (Check, Vec<Peer>) {
    let name = "ring";
    let st = match node.dht().status().await {
        Ok(st) => st,
        Err(e) => return (Check::new(name, Verdict::Fail, e.to_string()), Vec::new()),
    };
    if st.state != NodeState::Member {
        let detail = format!("the node is {}, not a ring member", st.state);
        return (Check::new(name, Verdict::Fail, detail), Vec::new());
    }
    let (Some(succ), Some(pred)) = (st.successors.first().copied(), st.predecessor) else {
        if st.successors.is_empty() {
            return (
                Check::new(name, Verdict::Ok, "a ring of one: no other member"),
                Vec::new(),
            );
        }
        let detail = "no predecessor yet (the ring is stabilizing)";
        return (Check::new(name, Verdict::Warn, detail), Vec::new());
    };
    let me = node.id();
    let mut problems = Vec::new();
    match node.dht().neighbors_of(succ).await {
        Ok(n) if n.predecessor.map(|p| p.id) == Some(me) => {}
        Ok(n) => problems.push(format!(
            "successor {} names {} as its predecessor",
            succ.id.short(),
            n.predecessor
                .map_or_else(|| "none".to_owned(), |p| p.id.short().to_string())
        )),
        Err(e) => problems.push(format!(
            "successor {} does not answer: {e}",
            succ.id.short()
        )),
    }
    match node.dht().neighbors_of(pred).await {
        Ok(n) if n.successors.first().map(|p| p.id) == Some(me) => {}
        Ok(n) => problems.push(format!(
            "predecessor {} names {} as its successor",
            pred.id.short(),
            n.successors
                .first()
                .map_or_else(|| "none".to_owned(), |p| p.id.short().to_string())
        )),
        Err(e) => problems.push(format!(
            "predecessor {} does not answer: {e}",
            pred.id.short()
        )),
    }
    let check = if problems.is_empty() {
        Check::new(
            name,
            Verdict::Ok,
            format!(
                "consistent around this node: predecessor {} -> this node -> successor {}",
                pred.id.short(),
                succ.id.short()
            ),
        )
    } else {
        Check::new(
            name,
            Verdict::Warn,
            format!("{} (the ring may be repairing)", problems.join("; ")),
        )
    };
    (check, vec![pred, succ])
}

/// The clock offset to each neighbour, from its node-info answer.
async fn clock_check(node: &MeshNode, neighbours: &[Peer]) -> Check {
    let name = "clock";
    if neighbours.is_empty() {
        return Check::new(name, Verdict::Ok, "no neighbour to compare with");
    }
    let mut worst = Verdict::Ok;
    let mut parts = Vec::new();
    for p in neighbours {
        match node.node_info(Contact::from(*p)).await {
            Ok(info) => {
                let off = info.clock_offset_ms();
                let abs = Duration::from_millis(off.unsigned_abs());
                let v = if abs >= CLOCK_FAIL {
                    Verdict::Fail
                } else if abs >= CLOCK_WARN {
                    Verdict::Warn
                } else {
                    Verdict::Ok
                };
                worst = worst.max_with(v);
                parts.push(format!(
                    "{} {off:+} ms (rtt {:.1} ms)",
                    p.id.short(),
                    info.rtt.as_secs_f64() * 1000.0
                ));
            }
            Err(e) => {
                worst = worst.max_with(Verdict::Warn);
                parts.push(format!("{} did not say: {e}", p.id.short()));
            }
        }
    }
    Check::new(name, worst, parts.join("; "))
}

impl Verdict {
    fn max_with(self, other: Self) -> Self {
        match (self, other) {
            (Self::Fail, _) | (_, Self::Fail) => Self::Fail,
            (Self::Warn, _) | (_, Self::Warn) => Self::Warn,
            _ => Self::Ok,
        }
    }
}

/// Open descriptors of this process against its soft limit (Linux `/proc`).
fn descriptors_check() -> Check {
    let name = "descriptors";
    let open = std::fs::read_dir("/proc/self/fd").map(Iterator::count);
    let limits = std::fs::read_to_string("/proc/self/limits");
    let (Ok(open), Ok(limits)) = (open, limits) else {
        return Check::new(name, Verdict::Ok, "not measured (no /proc on this system)");
    };
    let Some(limit) = soft_open_files(&limits) else {
        return Check::new(name, Verdict::Ok, format!("{open} open; no limit"));
    };
    descriptors_verdict(open, limit)
}

/// The soft "Max open files" of `/proc/self/limits` (`None`: unlimited or not found).
fn soft_open_files(limits: &str) -> Option<usize> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn descriptors_verdict(open: usize, limit: usize) -> Check {
    let left = limit.saturating_sub(open);
    let verdict = if left * 20 < limit {
        Verdict::Fail
    } else if left * 5 < limit {
        Verdict::Warn
    } else {
        Verdict::Ok
    };
    let mut detail = format!("{open} open of a limit of {limit} ({left} left)");
    if verdict != Verdict::Ok {
        detail.push_str(
            "; every peer connection takes one: raise the limit (ulimit -n, LimitNOFILE= in the systemd unit)",
        );
    }
    Check::new("descriptors", verdict, detail)
}

/// The key file's mode: no one but its owner may read or write it.
fn key_check(key: Option<&Path>) -> Check {
    let name = "key file";
    let Some(key) = key else {
        return Check::new(
            name,
            Verdict::Warn,
            "none: this node runs with a fresh identity, its id changes at each start (create one with `themis keygen`, or give --data-dir)",
        );
    };
    match std::fs::metadata(key) {
        Ok(m) => {
            let mode = std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777;
            if mode & 0o077 == 0 {
                Check::new(
                    name,
                    Verdict::Ok,
                    format!("{} mode {mode:04o}", key.display()),
                )
            } else {
                Check::new(
                    name,
                    Verdict::Fail,
                    format!(
                        "{} mode {mode:04o}: others may read the private key; `chmod 600 {}`",
                        key.display(),
                        key.display()
                    ),
                )
            }
        }
        Err(e) => Check::new(name, Verdict::Fail, format!("{}: {e}", key.display())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_open_file_limit_is_read_from_proc_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        assert_eq!(soft_open_files(text), Some(1024));
        assert_eq!(
            soft_open_files(
                "Max open files            unlimited            unlimited            files"
            ),
            None
        );
        assert_eq!(descriptors_verdict(100, 1024).verdict, Verdict::Ok);
        assert_eq!(descriptors_verdict(900, 1024).verdict, Verdict::Warn);
        assert_eq!(descriptors_verdict(1000, 1024).verdict, Verdict::Fail);
    }

    #[test]
    fn a_key_readable_by_others_fails() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("k");
        std::fs::write(&k, "x").unwrap();
        let set = |mode| {
            std::fs::set_permissions(&k, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .unwrap();
        };
        set(0o600);
        assert_eq!(key_check(Some(&k)).verdict, Verdict::Ok);
        set(0o644);
        let c = key_check(Some(&k));
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(c.detail.contains("chmod 600"), "{}", c.detail);
        assert_eq!(key_check(None).verdict, Verdict::Warn);
        assert_eq!(
            key_check(Some(&dir.path().join("none"))).verdict,
            Verdict::Fail
        );
    }
}
