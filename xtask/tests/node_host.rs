//! The node host process (`xtask node-host`, which find-scaling starts) on its own: its ready
//! line, its answers to each command by tag, a refused command, and its exit on `shutdown`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::Command;

/// Bound on every wait: a hung host fails the test rather than hanging it.
const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_node_host_answers_each_command_by_tag_and_exits_on_shutdown() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "node-host",
            "--mode",
            "secure",
            "--seed",
            "7",
            "--total",
            "4",
        ])
        .args(["--first", "2", "--count", "2", "--records", "100"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || {
        tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("the host answers in time")
            .unwrap()
            .expect("the host's output goes on")
    };

    // Two nodes, `ID@127.0.0.1:PORT` each.
    let ready = next().await;
    let contacts: Vec<&str> = ready.strip_prefix("ready ").unwrap().split(' ').collect();
    assert_eq!(contacts.len(), 2, "{ready}");
    let ids: Vec<&str> = contacts
        .iter()
        .map(|c| c.split_once("@127.0.0.1:").unwrap().0)
        .collect();
    assert!(ids.iter().all(|id| id.len() == 64), "{ready}");

    // Node 3 joins through node 2 (the ring's indices: this host holds 2 and 3); then each
    // node's successor is the other, a find from node 2 answers, and node 0 is elsewhere.
    let join = format!("10 join 3 {}\n", contacts[0]);
    input.write_all(join.as_bytes()).await.unwrap();
    assert_eq!(next().await, "10 ok");
    let mut settled = false;
    for _ in 0..100 {
        input.write_all(b"11 succ 2\n").await.unwrap();
        let succ = next().await;
        if succ == format!("11 ok {} {}", ids[0], ids[1]) {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(settled, "node 2's successor never became node 3");
    let find = format!(
        "12 find 2 {}\n13 find 0 {}\n14 metrics\n15 fly 2\n",
        ids[1], ids[1]
    );
    input.write_all(find.as_bytes()).await.unwrap();
    let mut replies = Vec::new();
    for _ in 0..4 {
        replies.push(next().await);
    }
    // Replies come as commands complete: sort them by tag.
    replies.sort();
    assert!(replies[0].starts_with("12 ok "), "{replies:?}");
    assert_eq!(replies[1], "13 err node 0 is not on this host");
    let metrics: Vec<&str> = replies[2].split(' ').collect();
    assert_eq!(&metrics[..2], ["14", "ok"], "{replies:?}");
    assert!(
        metrics[2].parse::<u64>().unwrap() >= 1,
        "the join ran a key agreement"
    );
    assert!(
        replies[3].starts_with("15 err unknown command"),
        "{replies:?}"
    );

    input.write_all(b"16 shutdown\n").await.unwrap();
    assert_eq!(next().await, "16 ok");
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}
