//! The container image and the compose cluster of `deploy/`, for real: builds the image
//! (`deploy/build-image.sh`), starts `deploy/compose.yaml` (five nodes bootstrapping by
//! container name, and an upstream), registers a service on two nodes, discovers and calls it
//! from a third, kills the container of the provider that answered, and calls again: the other
//! provider answers (failover). The whole project is removed at the end, whatever happens.
//!
//! Needs Docker (the daemon and compose): `.ci/run` runs it where they are
//! (`cargo test -p themis-cli --test compose -- --ignored`); elsewhere it prints why it skips.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use themis_testkit::process::{run, text};
use themis_testkit::within;

const BIN: &str = env!("CARGO_BIN_EXE_themis");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `docker compose` (v2) or `docker-compose` (v1), whichever runs.
fn compose_command() -> Option<Vec<String>> {
    let ok = |cmd: &[&str]| {
        Command::new(cmd[0])
            .args(&cmd[1..])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if ok(&["docker", "compose", "version"]) {
        Some(vec!["docker".into(), "compose".into()])
    } else if ok(&["docker-compose", "version"]) {
        Some(vec!["docker-compose".into()])
    } else {
        None
    }
}

/// Why this machine cannot run the test, if it cannot.
fn skip_reason() -> Option<String> {
    match Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
    {
        Err(e) => return Some(format!("no docker command ({e})")),
        Ok(o) if !o.status.success() => {
            return Some(format!(
                "the Docker daemon does not answer: {}",
                text(&o.stderr).trim()
            ));
        }
        Ok(_) => {}
    }
    compose_command()
        .is_none()
        .then(|| "neither `docker compose` nor `docker-compose` runs".into())
}

/// One compose project; `down -v` when dropped.
struct Project {
    cmd: Vec<String>,
    name: String,
    file: PathBuf,
    image: String,
}

impl Project {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.cmd[0]);
        c.args(&self.cmd[1..])
            .args(["-p", &self.name, "-f", self.file.to_str().unwrap()])
            .args(args)
            .env("THEMIS_IMAGE", &self.image);
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.command(args).output().unwrap();
        assert!(
            out.status.success(),
            "compose {args:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// The host address of a node's agent API (published on the loopback).
    fn api(&self, node: &str) -> String {
        self.ok(&["port", node, "7070"]).trim().to_owned()
    }

    /// A copy in `dir` of the API token the node created in its volume (its API listens beyond
    /// the container's loopback, so it requires one), once it exists.
    async fn token(&self, node: &str, dir: &Path) -> String {
        let id = self.ok(&["ps", "-q", node]).trim().to_owned();
        let dest = dir.join(format!("{node}.token"));
        until(120, "the node's API token file", || async {
            let copied = Command::new("docker")
                .args([
                    "cp",
                    &format!("{id}:/data/api-token"),
                    dest.to_str().unwrap(),
                ])
                .output()
                .ok()?;
            copied.status.success().then_some(())
        })
        .await;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600)).unwrap();
        dest.to_str().unwrap().to_owned()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self
                .command(&["logs", "--no-color", "--tail", "40"])
                .output();
            if let Ok(l) = logs {
                eprintln!("compose logs:\n{}", text(&l.stdout));
            }
        }
        let _ = self.command(&["down", "-v", "--timeout", "5"]).output();
    }
}

/// `themis ARGS`; an `--api` value `ADDR TOKEN_FILE` becomes `--api ADDR --api-token-file
/// TOKEN_FILE`.
async fn themis(args: &[&str]) -> std::process::Output {
    let mut all: Vec<&str> = Vec::new();
    let mut next_is_api = false;
    for a in args {
        match (next_is_api, a.split_once(' ')) {
            (true, Some((api, token))) => all.extend([api, "--api-token-file", token]),
            _ => all.push(a),
        }
        next_is_api = *a == "--api";
    }
    run(BIN, &all, &[]).await
}

async fn json(args: &[&str]) -> Option<Value> {
    let out = themis(args).await;
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// Retries `f` (every 500 ms, at most `secs`) until it gives `Some`.
async fn until<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "builds the container image and runs five containers: .ci/run runs it where Docker is present"]
async fn the_compose_cluster_registers_discovers_calls_and_fails_over() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED the compose test: {why}");
        return;
    }
    let image = std::env::var("THEMIS_IMAGE").unwrap_or_else(|_| "themis:local".into());
    let built = Command::new(repo().join("deploy/build-image.sh"))
        .env("THEMIS_IMAGE", &image)
        .status()
        .unwrap();
    assert!(built.success(), "deploy/build-image.sh failed");
    let project = Project {
        cmd: compose_command().unwrap(),
        name: format!("themis-test-{}", std::process::id()),
        file: repo().join("deploy/compose.yaml"),
        image,
    };
    project.ok(&["up", "-d"]);
    within(240, "the compose scenario", scenario(&project)).await;
}

async fn scenario(project: &Project) {
    let nodes: Vec<String> = (1..=5).map(|i| format!("themis-{i}")).collect();
    let dir = tempfile::tempdir().unwrap();
    let mut apis = Vec::new();
    for n in &nodes {
        // `--api HOST:PORT --api-token-file FILE` as one string is not one argument: keep the
        // token beside the address and split them where the command is made.
        apis.push(format!(
            "{} {}",
            project.api(n),
            project.token(n, dir.path()).await
        ));
    }
    // Every node ready (joined, through themis-1 by its container name).
    for api in &apis {
        until(120, "a node ready", || async {
            json(&["status", "--json", "--api", api])
                .await
                .filter(|v| v["state"] == "member")
        })
        .await;
    }
    let members = until(120, "five members", || async {
        json(&["members", "--json", "--api", &apis[4]])
            .await
            .filter(|v| {
                v["complete"] == true
                    && v["members"]
                        .as_array()
                        .is_some_and(|l| l.len() == 5 && l.iter().all(|m| m["state"] == "alive"))
            })
    })
    .await;
    eprintln!("compose ring: {members}");
    // Two providers of `hello`, both forwarding to the upstream container.
    for api in &apis[..2] {
        let out = themis(&[
            "register",
            "hello",
            "--upstream",
            "http://upstream:8080/",
            "--api",
            api,
        ])
        .await;
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    until(60, "both providers discovered", || async {
        json(&["discover", "hello", "--json", "--api", &apis[4]])
            .await
            .filter(|v| v["providers"].as_array().is_some_and(|p| p.len() == 2))
    })
    .await;
    let call = |api: String| async move {
        let out = themis(&["call", "hello", "ping", "-v", "--api", &api]).await;
        let err = text(&out.stderr);
        let provider = err
            .lines()
            .find_map(|l| l.strip_prefix("provider: "))
            .map(str::to_owned);
        (out.status.success() && text(&out.stdout) == "upstream: ping")
            .then_some(provider)
            .flatten()
    };
    let first = until(60, "a call", || call(apis[4].clone())).await;
    // The container of the provider that answered crashes.
    let mut victim = None;
    for (i, api) in apis[..2].iter().enumerate() {
        let v = json(&["status", "--json", "--api", api]).await.unwrap();
        if v["id"] == first.as_str() {
            victim = Some(i);
        }
    }
    let victim = victim.expect("the provider is node 1 or 2");
    project.ok(&["kill", &nodes[victim]]);
    let second = until(90, "a call after the failover", || async {
        call(apis[4].clone()).await.filter(|p| *p != first)
    })
    .await;
    let survivor = json(&["status", "--json", "--api", &apis[1 - victim]])
        .await
        .unwrap();
    assert_eq!(survivor["id"], second.as_str());
}
