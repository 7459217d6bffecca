//! The bench's side: starts the node hosts, and sends each of them the commands of the
//! operations in flight. One task per host owns its pipes and the table of commands awaiting
//! their reply (by tag); operations reach it through a bounded channel, each with a oneshot
//! for its reply.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use themis_crypto::NodeId;
use themis_dht::Contact;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command as Process};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::wire::{self, Command, HostMetrics, Reply, Request};
use crate::Mode;

/// Bound on a host's start (binding its nodes) and on any one command: a hung host is a
/// failure with a message, not a hung bench.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Commands awaiting their reply from one host, at most; beyond, a command fails at once.
const MAX_PENDING: usize = 4096;
/// Commands queued for one host's task.
const QUEUE: usize = 256;

type ReplyTx = oneshot::Sender<Result<Vec<String>, String>>;

/// One command and where its reply goes.
struct Call {
    command: Command,
    reply: ReplyTx,
}

/// One host process.
struct Host {
    calls: mpsc::Sender<Call>,
    child: Child,
    io: JoinHandle<()>,
}

/// A ring's nodes spread over node host processes, contiguous slices of the ring's indices.
pub(crate) struct Hosts {
    hosts: Vec<Host>,
    /// Ring index of each host's first node, ascending.
    firsts: Vec<usize>,
    /// Every node's contact, by ring index.
    contacts: Vec<Contact>,
}

/// The sizes of `hosts` contiguous slices of `total` nodes (the first ones one larger).
pub(crate) fn slices(total: usize, hosts: usize) -> Vec<usize> {
    let hosts = hosts.clamp(1, total.max(1));
    (0..hosts)
        .map(|h| total / hosts + usize::from(h < total % hosts))
        .collect()
}

impl Hosts {
    /// Starts `hosts` processes of `exe` (this executable) holding the `total` nodes of a ring
    /// in `mode`, and waits until each has bound its nodes.
    pub(crate) async fn start(
        exe: &Path,
        mode: Mode,
        seed: u64,
        total: usize,
        hosts: usize,
        records: usize,
    ) -> Result<Self, String> {
        let mut out = Self {
            hosts: Vec::new(),
            firsts: Vec::new(),
            contacts: Vec::new(),
        };
        let mut first = 0;
        for count in slices(total, hosts) {
            let mut child = Process::new(exe)
                .arg("node-host")
                .args(["--mode", &mode.to_string()])
                .args(["--seed", &seed.to_string()])
                .args(["--total", &total.to_string()])
                .args(["--first", &first.to_string()])
                .args(["--count", &count.to_string()])
                .args(["--records", &records.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot start {} node-host: {e}", exe.display()))?;
            let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                return Err("node host without pipes".into());
            };
            let mut lines = BufReader::new(stdout).lines();
            let ready = tokio::time::timeout(TIMEOUT, lines.next_line())
                .await
                .map_err(|_| format!("node host {first}.. did not bind its nodes in {TIMEOUT:?}"))?
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("node host {first}.. exited before it was ready"))?;
            let contacts = wire::parse_ready(&ready)
                .filter(|c| c.len() == count)
                .ok_or_else(|| format!("node host {first}..: not a ready line: {ready:?}"))?;
            let (calls, rx) = mpsc::channel(QUEUE);
            let io = tokio::spawn(drive(stdin, lines, rx));
            out.hosts.push(Host { calls, child, io });
            out.firsts.push(first);
            out.contacts.extend(contacts);
            first += count;
        }
        Ok(out)
    }

    /// Nodes in the ring.
    pub(crate) fn len(&self) -> usize {
        self.contacts.len()
    }

    /// Node `i`'s contact.
    pub(crate) fn contact(&self, i: usize) -> Option<Contact> {
        self.contacts.get(i).copied()
    }

    /// Every node's id, by ring index.
    pub(crate) fn ids(&self) -> Vec<NodeId> {
        self.contacts.iter().filter_map(|c| c.id).collect()
    }

    /// Sends `command` to host `h` and waits for the reply.
    async fn call(&self, h: usize, command: Command) -> Result<Vec<String>, String> {
        let host = self.hosts.get(h).ok_or("no such host")?;
        let (reply, rx) = oneshot::channel();
        host.calls
            .send(Call { command, reply })
            .await
            .map_err(|_| "the node host has exited (its error is above)")?;
        tokio::time::timeout(TIMEOUT, rx)
            .await
            .map_err(|_| format!("no reply from the node host in {TIMEOUT:?}"))?
            .map_err(|_| "the node host has exited (its error is above)".to_owned())?
    }

    /// The host holding node `i`.
    fn host_of(&self, i: usize) -> usize {
        self.firsts.partition_point(|&f| f <= i).saturating_sub(1)
    }

    /// Node `i` joins the ring through `contact`.
    pub(crate) async fn join(&self, i: usize, contact: Contact) -> Result<(), String> {
        let node = i;
        self.call(self.host_of(i), Command::Join { node, contact })
            .await
            .map(drop)
    }

    /// Node `i` finds the successor of `target`; returns the hops.
    pub(crate) async fn find(&self, i: usize, target: NodeId) -> Result<u32, String> {
        let fields = self
            .call(self.host_of(i), Command::Find { node: i, target })
            .await?;
        fields
            .first()
            .and_then(|h| h.parse().ok())
            .ok_or_else(|| format!("bad find reply {fields:?}"))
    }

    /// Node `i` registers `name`.
    pub(crate) async fn store(&self, i: usize, name: String) -> Result<(), String> {
        self.call(self.host_of(i), Command::Store { node: i, name })
            .await
            .map(drop)
    }

    /// Node `i`'s id and successor list; `None` if it could not be read.
    pub(crate) async fn successors(&self, i: usize) -> Option<(NodeId, Vec<NodeId>)> {
        let fields = self
            .call(self.host_of(i), Command::Successors { node: i })
            .await
            .ok()?;
        let mut ids = fields.iter().map(|f| f.parse::<NodeId>().ok());
        let id = ids.next()??;
        Some((id, ids.collect::<Option<Vec<_>>>()?))
    }

    /// The hosts' counters, summed (peak RSS and open fds over all host processes).
    pub(crate) async fn metrics(&self) -> Result<HostMetrics, String> {
        let mut sum = HostMetrics::default();
        for h in 0..self.hosts.len() {
            let fields = self.call(h, Command::Metrics).await?;
            let m = HostMetrics::from_fields(&fields)
                .ok_or_else(|| format!("bad metrics reply {fields:?}"))?;
            sum.handshakes += m.handshakes;
            sum.dials += m.dials;
            sum.requests += m.requests;
            let add = |a: Option<u64>, b: Option<u64>| Some(a.unwrap_or(0) + b?);
            sum.peak_rss_kib = add(sum.peak_rss_kib, m.peak_rss_kib);
            sum.open_fds = add(sum.open_fds, m.open_fds);
        }
        Ok(sum)
    }

    /// Resets every host's peak RSS; `false` if one could not.
    pub(crate) async fn reset_peak_rss(&self) -> bool {
        let mut ok = true;
        for h in 0..self.hosts.len() {
            ok &= self.call(h, Command::ResetPeakRss).await.is_ok();
        }
        ok
    }

    /// Shuts every host's nodes down and waits for the processes to exit (killing one that
    /// does not within the timeout).
    pub(crate) async fn shutdown(self) {
        let mut set = tokio::task::JoinSet::new();
        for h in 0..self.hosts.len() {
            let host = self.hosts.get(h).map(|h| h.calls.clone());
            set.spawn(async move {
                let (reply, rx) = oneshot::channel();
                if let Some(calls) = host
                    && calls
                        .send(Call {
                            command: Command::Shutdown,
                            reply,
                        })
                        .await
                        .is_ok()
                {
                    let _ = tokio::time::timeout(TIMEOUT, rx).await;
                }
            });
        }
        while set.join_next().await.is_some() {}
        for mut host in self.hosts {
            drop(host.calls);
            let _ = tokio::time::timeout(TIMEOUT, &mut host.io).await;
            if tokio::time::timeout(TIMEOUT, host.child.wait())
                .await
                .is_err()
            {
                let _ = host.child.kill().await;
            }
        }
    }
}

/// One host's task: writes the commands it receives, tagged, to the host's input; hands each
/// reply to the command with its tag. Ends when the host's output ends; a command still
/// waiting then fails.
async fn drive(
    stdin: ChildStdin,
    mut lines: Lines<BufReader<ChildStdout>>,
    mut calls: mpsc::Receiver<Call>,
) {
    let mut stdin = Some(stdin);
    let mut pending: HashMap<u64, ReplyTx> = HashMap::new();
    let mut next_tag = 0u64;
    loop {
        tokio::select! {
            // Both branches are cancel-safe: `recv` and `next_line` lose nothing when the
            // other completes first.
            call = calls.recv(), if stdin.is_some() => {
                let Some(call) = call else {
                    // The bench is done with this host: end its input, so that it exits.
                    stdin = None;
                    continue;
                };
                let mut batch = String::new();
                for call in std::iter::once(call).chain(std::iter::from_fn(|| calls.try_recv().ok())) {
                    if pending.len() >= MAX_PENDING {
                        let _ = call.reply.send(Err(format!(
                            "{MAX_PENDING} commands already wait for this node host"
                        )));
                        continue;
                    }
                    let tag = next_tag;
                    next_tag += 1;
                    batch.push_str(&Request { tag, command: call.command }.encode());
                    batch.push('\n');
                    pending.insert(tag, call.reply);
                }
                if let Some(w) = stdin.as_mut()
                    && w.write_all(batch.as_bytes()).await.is_err()
                {
                    break;
                }
            }
            line = lines.next_line() => {
                let Ok(Some(line)) = line else { break };
                if let Some(Reply { tag, result }) = Reply::parse(&line)
                    && let Some(tx) = pending.remove(&tag)
                {
                    let _ = tx.send(result);
                }
            }
        }
    }
    for (_, tx) in pending.drain() {
        let _ = tx.send(Err("the node host has exited (its error is above)".into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_the_ring_contiguously() {
        assert_eq!(slices(10, 3), [4, 3, 3]);
        assert_eq!(slices(1, 2), [1]);
        assert_eq!(slices(4, 4), [1, 1, 1, 1]);
        assert_eq!(slices(5, 0), [5]);
        for (n, h) in [(1000, 2), (100, 7), (3, 3)] {
            assert_eq!(slices(n, h).iter().sum::<usize>(), n);
        }
    }
}
