//! `themis members` (the ring walked from the agent's node) and `themis check` (the doctor).

use std::io::Write;

use serde_json::Value;

use super::{Agent, plural, pretty, s};
use crate::cli::{CheckArgs, MembersArgs};
use crate::error::Error;

/// `themis members`: the ring walked from the agent's node.
pub(crate) async fn members(a: MembersArgs) -> Result<(), Error> {
    let agent = Agent::new(&a.api)?;
    let url = agent.url(&format!("/v1/members?max={}", a.max));
    let v = agent.json(agent.http.get(url)).await?;
    if a.json {
        println!("{}", pretty(&v));
        return Ok(());
    }
    let empty = Vec::new();
    let list = v.get("members").and_then(Value::as_array).unwrap_or(&empty);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{:<16}  {:<22}  {:<7}  {:>8}  {:<8}  {:>9}  {:>10}",
        "NODE", "ADDRESS", "STATE", "SERVICES", "VERSION", "UPTIME", "CLOCK"
    );
    for m in list {
        let id = s(m, "id");
        let short: String = id.chars().take(16).collect();
        let clock = m
            .get("clock_offset_ms")
            .and_then(Value::as_i64)
            .map_or_else(|| "-".to_owned(), |o| format!("{o:+} ms"));
        let uptime = m
            .get("uptime_secs")
            .and_then(Value::as_u64)
            .map_or_else(|| "-".to_owned(), human_secs);
        let _ = writeln!(
            out,
            "{short:<16}  {:<22}  {:<7}  {:>8}  {:<8}  {uptime:>9}  {clock:>10}",
            s(m, "address"),
            s(m, "state"),
            s(m, "services"),
            s(m, "version"),
        );
    }
    let complete = v.get("complete").and_then(Value::as_bool).unwrap_or(false);
    let alive = list.iter().filter(|m| s(m, "state") == "alive").count();
    let _ = writeln!(
        out,
        "{} ({alive} alive){}",
        plural(list.len() as u64, "member"),
        if complete {
            ""
        } else if v.get("limited").and_then(Value::as_bool) == Some(true) {
            "; the walk stopped at --max: more members follow"
        } else {
            "; the walk did not come back to this node: the ring is broken or repairing (see the failed members)"
        }
    );
    Ok(())
}

/// `3 d 4 h`, `5 h 2 min`, `7 min`, `12 s`.
fn human_secs(s: u64) -> String {
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// `themis check`: the doctor. Exit code 1 when a check fails.
pub(crate) async fn check(a: CheckArgs) -> Result<(), Error> {
    let agent = Agent::new(&a.api)?;
    let v = match agent.json(agent.http.get(agent.url("/v1/doctor"))).await {
        Ok(v) => v,
        Err(e) => {
            if !a.json {
                println!("fail  agent         {e}");
            }
            return Err(e);
        }
    };
    if a.json {
        println!("{}", pretty(&v));
    } else {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "ok    agent         answers at {}", agent.shown);
        for c in v
            .get("checks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let _ = writeln!(
                out,
                "{:<5} {:<13} {}",
                s(c, "status"),
                s(c, "check"),
                s(c, "detail")
            );
        }
    }
    let failed: Vec<String> = v
        .get("checks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| s(c, "status") == "fail")
        .map(|c| s(c, "check"))
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    Err(Error::Agent {
        status: 0,
        message: format!(
            "{} failed: {}",
            plural(failed.len() as u64, "check"),
            failed.join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_a_person_says_them() {
        assert_eq!(human_secs(59), "59 s");
        assert_eq!(human_secs(3_700), "1 h 1 min");
        assert_eq!(human_secs(200_000), "2 d 7 h");
    }
}
