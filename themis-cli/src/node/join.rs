//! Joining and staying joined.
//!
//! **At start** ([`initial`]): each bootstrap contact is first asked who it is (a TCP connect,
//! then the mesh's node-info request, PROTOCOL.md §7.6, which runs the handshake): a contact
//! that answers is joined through; a contact that shows a *mismatch* stops the start at once
//! with what is wrong (network, identity, mode), instead of a join that times out; a contact
//! that is down is tried again for `--join-timeout` seconds (containers starting together).
//! A contact that turns out to be this node is skipped (every pod of a StatefulSet may list
//! every pod).
//!
//! **Afterwards** ([`maintain`]): a node alone in a ring of one, with peers it remembers (data
//! directory) or bootstrap contacts, asks them for their neighbours and joins through one of
//! them: a member of a ring of several first, else the lowest id among the lone ones that is
//! below its own (so that a whole cluster restarted at once builds one ring, around its lowest
//! node, without bootstrap nodes); the lowest lone node stays and waits to be joined. A node in
//! a ring of several checks, less often, that no contact runs a ring of several whose members
//! are below its own ring's lowest member (the owner of id 0): such a ring is another one (a
//! split), and the node joins it, so that split rings merge (Chord alone never merges them).
//! The decisions are the pure [`plan_alone`] and [`plan_merge`].
//!
//! **Identity collisions** ([`live_duplicate`], issue 11): a node id is one running node. Right
//! after the join, 1, 3, 7 and 15 s later (the ring may still be stabilizing), and at every
//! member check afterwards, the node asks the ring which node its lookups reach for its own id:
//! it finds the id just below its own, which its predecessor (or, while it has none, the node
//! its routing table reaches before the id) answers with its successor. That successor pointer
//! is the ring's authority: lookups and stores for the id go where it points, and a node never
//! replaces a live successor by another instance of the same id (it is not between them). If it
//! points at this id at another address, and a node there identifies with this node's key,
//! another live node runs with the same key and holds the place: this one stops (exit 1) and
//! names that address, without a leave (which would hand records to the other's neighbours).
//! If the answer is this node itself, it is the member and stays at that check, whatever its
//! successor's predecessor says: in a race of two instances started at once, the successor may
//! adopt the newcomer's notify first, and before this rule the member saw the newcomer there and
//! stopped (about 1 in 20 runs of `tests/collision.rs` on 2 busy cores). If the successor names
//! the same live instance again at the member's next check, the ring has split between the two
//! (some node before the id points at each), and the member gives way so that one of them
//! stops. When the ring has no answer for the id yet, the successor's predecessor decides.
//! Meanwhile each instance keeps a session of its own with every peer (sessions are per address,
//! themis-channel), so the member's requests and answers are not diverted to the newcomer. A
//! dead instance (a crash, then a restart with the same key elsewhere) does not answer and is
//! no duplicate: the successor's predecessor check replaces it within seconds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use themis_mesh::channel::Error as ChannelError;
use themis_mesh::dht::{NodeState, Peer};
use themis_mesh::{Contact, MeshNode, NetworkId, NodeId};

use super::parse_bootstrap;
use crate::agent::Readiness;
use crate::datadir::{DataDir, MAX_PEERS, RememberedPeer};
use crate::error::Error;

/// How long a TCP connection to a bootstrap contact may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Between two rounds over the bootstrap contacts while none answers.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// Between two rounds while alone with peers to rejoin.
const ALONE_EVERY: Duration = Duration::from_secs(2);
/// Most contacts one join is given.
const MAX_JOIN_CONTACTS: usize = 8;
/// Between two checks for a split ring (and two saves of the known peers).
const MEMBER_EVERY: Duration = Duration::from_secs(30);
/// The early checks for a live duplicate, 1, 3, 7 and 15 s after the start (see
/// [`sleep_watching`]), end with this step.
const EARLY_CHECKS_UNTIL: Duration = Duration::from_secs(8);
/// How long a node that may run with this node's key gets to identify itself.
const IDENTIFY_TIMEOUT: Duration = Duration::from_secs(3);

/// `addr` reaches this very node under another address than the one it advertises: its
/// listening port on an address of this host (a UDP peer records the datagrams' source, which
/// behind port forwarding is not the advertised address). Identifying it would find this
/// node's own key.
fn is_this_node(node: &MeshNode, addr: std::net::SocketAddr) -> bool {
    let bound = node.dht().endpoint().local_addr();
    addr.port() == bound.port()
        && (bound.ip().is_unspecified() || bound.ip() == addr.ip())
        // binding succeeds only on an address of this host
        && std::net::UdpSocket::bind((addr.ip(), 0)).is_ok()
}

/// The id just below `id` on the ring (`id - 1`, wrapping).
fn just_below(id: NodeId) -> NodeId {
    let mut b = *id.as_bytes();
    for byte in b.iter_mut().rev() {
        let (v, borrow) = byte.overflowing_sub(1);
        *byte = v;
        if !borrow {
            break;
        }
    }
    NodeId::from_bytes(b)
}

/// Another live node answering for this node's id, if there is one (see the module docs): the
/// address it runs at. `named_before` carries from one check to the next the other instance that
/// this node's successor named as its predecessor while the ring's answer for the id was this
/// node.
pub(crate) async fn live_duplicate(
    node: &MeshNode,
    named_before: &mut Option<SocketAddr>,
) -> Option<SocketAddr> {
    let me = node.id();
    let mine = node.contact().addr;
    let elsewhere = |p: Peer| p.id == me && p.addr != mine && !is_this_node(node, p.addr);
    // The ring's answer for this id: the successor of the id just below it.
    let ring_says_me = match node.dht().find(just_below(me)).await {
        Ok(f) if f.successor.id == me && elsewhere(f.successor) => {
            return same_key_at(node, f.successor.addr).await;
        }
        Ok(f) => f.successor.id == me,
        Err(_) => false,
    };
    let named = successor_names(node, &elsewhere).await;
    if !ring_says_me {
        return named;
    }
    // The ring's lookups reach this node, but its successor may name another live instance as
    // its predecessor: in a race of two instances started at once, the successor may adopt the
    // newcomer's notify first, and the newcomer, which finds this node as the ring's answer,
    // stops at its next check. Only if the same instance is still named at this node's next
    // check (the ring split between them) does this node give way, so that one of them does.
    match named {
        Some(addr) if *named_before == Some(addr) => Some(addr),
        named => {
            *named_before = named;
            None
        }
    }
}

/// The live instance of this node's id at another address that its successor names as its
/// predecessor, if any.
async fn successor_names(node: &MeshNode, elsewhere: &impl Fn(Peer) -> bool) -> Option<SocketAddr> {
    let me = node.id();
    let st = node.dht().status().await.ok()?;
    let succ = st.successors.first().copied().filter(|s| s.id != me)?;
    let n = node.dht().neighbors_of(succ).await.ok()?;
    let other = n.predecessor.filter(|p| elsewhere(*p))?;
    same_key_at(node, other.addr).await
}

/// `addr`, if a live node there identifies with this node's key.
async fn same_key_at(node: &MeshNode, addr: SocketAddr) -> Option<SocketAddr> {
    // A crashed instance refuses the connection: no need to wait out IDENTIFY's timeout
    // (`themis node` runs its endpoint on TCP).
    if let Ok(Err(_)) =
        tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await
    {
        return None;
    }
    // IDENTIFY (PROTOCOL.md §5.2) asks the node at that address for its key, no handshake
    // (this node cannot run one with its own id).
    match tokio::time::timeout(IDENTIFY_TIMEOUT, node.dht().endpoint().identify(addr)).await {
        Ok(Ok((id, _))) if id == node.id() => Some(addr),
        _ => None,
    }
}

/// What one bootstrap contact showed.
#[derive(Debug)]
enum Finding {
    /// It answered: join through it.
    Answered(Contact),
    /// It answered under the id that succeeds the one asked for (a key rotation, PROTOCOL.md
    /// §2.9): join through it; the note says so to the operator.
    Successor(Contact, String),
    /// It is this node.
    Myself,
    /// It cannot be joined, whatever the wait: network, identity or mode mismatch.
    Mismatch(String),
    /// It does not answer (yet).
    Down(String),
}

/// Asks the contact `input` who it is.
async fn probe(node: &MeshNode, network: &NetworkId, input: &str) -> Finding {
    let contact = match parse_bootstrap(input).await {
        Ok(c) => c,
        Err(e @ Error::BadBootstrap { .. }) if !e.to_string().contains("resolve") => {
            return Finding::Mismatch(e.to_string());
        }
        Err(e) => return Finding::Down(format!("{input}: {e}")),
    };
    let addr = contact.addr;
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Finding::Down(format!("{input}: unreachable ({e})")),
        Err(_) => {
            return Finding::Down(format!(
                "{input}: unreachable (no TCP answer within {CONNECT_TIMEOUT:?})"
            ));
        }
    }
    match node.node_info(contact).await {
        Ok(info) if info.id == node.id() => Finding::Myself,
        Ok(info) => Finding::Answered(Contact {
            addr,
            id: Some(info.id),
        }),
        // An older themis: the channel works, it just does not know node-info.
        Err(themis_mesh::Error::UnexpectedAnswer { peer, .. }) => Finding::Answered(Contact {
            addr,
            id: Some(peer),
        }),
        Err(themis_mesh::Error::Channel(e)) => match &*e {
            ChannelError::IdentityMismatch {
                expected, found, ..
            } => successor(node, input, network, addr, *expected, *found, &e).await,
            _ => classify(input, network, contact, &e),
        },
        Err(e) => Finding::Down(format!("{input}: {e}")),
    }
}

/// A contact dialed as `expected` answered as `found`: a node that rotated its key is joined
/// through if it presents a key succession statement naming it the successor of `expected`
/// (PROTOCOL.md §2.9, §7.7); anything else is the identity mismatch it seems.
async fn successor(
    node: &MeshNode,
    input: &str,
    network: &NetworkId,
    addr: std::net::SocketAddr,
    expected: NodeId,
    found: NodeId,
    e: &ChannelError,
) -> Finding {
    if found == node.id() {
        // This node itself, under the id it had before its key was rotated.
        if node.succession().is_some_and(|s| s.old_id() == expected) {
            return Finding::Myself;
        }
    } else {
        let contact = Contact {
            addr,
            id: Some(found),
        };
        match node.verify_successor(expected, contact).await {
            Ok(s) => {
                let note = format!(
                    "{input}: the node there rotated its key: it is now {found} and proves it succeeds {expected} until {}; joining through it (replace the id in the bootstrap list before then)",
                    crate::keys::utc(s.grace_end_ms())
                );
                return Finding::Successor(contact, note);
            }
            Err(why) => tracing::debug!(%why, "{input}: not a successor"),
        }
    }
    let contact = Contact {
        addr,
        id: Some(expected),
    };
    classify(input, network, contact, e)
}

/// Names what a channel error says about a bootstrap contact.
fn classify(input: &str, network: &NetworkId, contact: Contact, e: &ChannelError) -> Finding {
    match e {
        ChannelError::ModeMismatch { ours, .. } => {
            let (this, that) = if *ours == themis_mesh::Mode::Insecure {
                ("insecure", "secure")
            } else {
                ("secure", "insecure")
            };
            Finding::Mismatch(format!(
                "{input}: mode mismatch: that node runs {that} and this one {this}: pass --insecure to every node of the ring or to none"
            ))
        }
        ChannelError::IdentityMismatch {
            expected, found, ..
        } => Finding::Mismatch(format!(
            "{input}: identity mismatch: the node there is not {expected}; its key makes it {found} on network '{network}' (a wrong id in --bootstrap, a node with a new key, or a node of another network)"
        )),
        // Its certificate does not admit it (expired, for another id or key): no wait helps.
        e @ ChannelError::NotAdmitted { .. } => Finding::Mismatch(format!("{input}: {e}")),
        ChannelError::HandshakeTimeout { peer, after, .. }
            if *peer == NodeId::from_bytes([0; 32]) =>
        {
            Finding::Down(format!(
                "{input}: no themis node answers there (no answer to its identify request within {after:?}; another program on that port?)"
            ))
        }
        ChannelError::HandshakeTimeout { peer, after, .. } if contact.id.is_none() => {
            Finding::Mismatch(format!(
                "{input}: network mismatch (most likely): the node there answered with its key, but no handshake as {peer}, the id of that key on network {}, completed within {after:?}; it runs on another network (check --net on both), or one of the two networks is closed and the other is not, or they are closed under different admission keys, or its admission certificate or ours was refused (check --admission-key and --admission-cert on both, and the certificates' expiry)",
                network.describe()
            ))
        }
        other => Finding::Down(format!("{input}: {other}")),
    }
}

/// The outcome of the start's join.
#[derive(Debug, Default)]
pub(crate) struct Joined {
    /// The contacts that answered (the seeds of [`maintain`]).
    pub(crate) seeds: Vec<Contact>,
    /// Every bootstrap contact was this node: it is the ring's designated seed (it rejoins
    /// only rings of several, never a lone node, so that the others gather around it).
    pub(crate) anchor: bool,
}

/// Joins through the bootstrap contacts (see the module docs). No contacts: nothing to do.
pub(crate) async fn initial(
    node: &MeshNode,
    network: &NetworkId,
    bootstrap: &[String],
    join_timeout: Duration,
) -> Result<Joined, Error> {
    if bootstrap.is_empty() {
        return Ok(Joined::default());
    }
    let deadline = tokio::time::Instant::now() + join_timeout;
    loop {
        let mut answered = Vec::new();
        let mut notes = Vec::new();
        let mut mismatch = false;
        let mut all_me = true;
        for b in bootstrap {
            match probe(node, network, b).await {
                Finding::Answered(c) => {
                    answered.push(c);
                    all_me = false;
                }
                Finding::Successor(c, note) => {
                    tracing::info!("{note}");
                    answered.push(c);
                    all_me = false;
                }
                Finding::Myself => {}
                Finding::Mismatch(m) => {
                    mismatch = true;
                    all_me = false;
                    notes.push(m);
                }
                Finding::Down(m) => {
                    all_me = false;
                    notes.push(m);
                }
            }
        }
        if all_me {
            tracing::info!("every bootstrap contact is this node: starting a new ring");
            return Ok(Joined {
                seeds: Vec::new(),
                anchor: true,
            });
        }
        if !answered.is_empty() {
            match node.dht().join(answered.clone()).await {
                Ok(succ) => {
                    tracing::info!(successor = %succ.id, "joined the ring");
                    return Ok(Joined {
                        seeds: answered,
                        anchor: false,
                    });
                }
                Err(e) => notes.push(format!("the join through them failed: {e}")),
            }
        }
        if mismatch || tokio::time::Instant::now() >= deadline {
            return Err(Error::Bootstrap {
                bootstrap: bootstrap.join(", "),
                network: network.to_string(),
                findings: notes,
            });
        }
        tracing::warn!(
            "no bootstrap node answers yet ({}); trying again for up to {join_timeout:?}",
            notes.join("; ")
        );
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

/// The contacts a node keeps trying (see [`maintain`]).
#[derive(Debug, Clone)]
pub(crate) struct Candidates {
    peers: Vec<Peer>,
    bootstrap: Vec<String>,
    anchor: bool,
}

impl Candidates {
    /// The bootstrap contacts that answered, the remembered peers, and the bootstrap strings
    /// (resolved again at each round: names of containers may resolve later).
    pub(crate) fn new(
        joined: Joined,
        remembered: &[RememberedPeer],
        bootstrap: Vec<String>,
    ) -> Self {
        let mut peers: Vec<Peer> = joined
            .seeds
            .into_iter()
            .filter_map(|c| c.id.map(|id| Peer { id, addr: c.addr }))
            .collect();
        for r in remembered {
            if !peers.iter().any(|p| p.id == r.id) {
                peers.push(Peer {
                    id: r.id,
                    addr: r.addr,
                });
            }
        }
        peers.truncate(MAX_PEERS);
        Self {
            peers,
            bootstrap,
            anchor: joined.anchor,
        }
    }

    fn is_empty(&self) -> bool {
        self.peers.is_empty() && self.bootstrap.is_empty()
    }
}

/// Which contacts an alone node joins through: those in a ring of several (lowest id first),
/// then, as fallbacks (a node of a ring may be leaving and refuse), the lone ones below its own
/// id (lowest first); none when no contact is in a ring and none is lower (it is the lowest: it
/// stays, and is joined). `answers`: the contacts that answered, and whether each is alone.
pub(crate) fn plan_alone(me: NodeId, answers: &[(Peer, bool)]) -> Option<Vec<Contact>> {
    let mut in_ring: Vec<Peer> = answers
        .iter()
        .filter(|(p, alone)| !alone && p.id != me)
        .map(|(p, _)| *p)
        .collect();
    let mut lower: Vec<Peer> = answers
        .iter()
        .filter(|(p, alone)| *alone && p.id < me)
        .map(|(p, _)| *p)
        .collect();
    in_ring.sort();
    lower.sort();
    in_ring.extend(lower);
    in_ring.truncate(MAX_JOIN_CONTACTS);
    (!in_ring.is_empty()).then(|| in_ring.into_iter().map(Contact::from).collect())
}

/// Which contacts a node in a ring of several joins through to merge a split: those in a ring
/// of several whose id is below `my_lowest`, its own ring's lowest member (so not a member of
/// its ring), lowest first.
pub(crate) fn plan_merge(my_lowest: NodeId, answers: &[(Peer, bool)]) -> Option<Vec<Contact>> {
    let mut lower: Vec<Peer> = answers
        .iter()
        .filter(|(p, alone)| !alone && p.id < my_lowest)
        .map(|(p, _)| *p)
        .collect();
    lower.sort();
    (!lower.is_empty()).then(|| lower.into_iter().map(Contact::from).collect())
}

/// Asks every candidate for its neighbours: the ones that answer as members, and whether each
/// is alone.
async fn ask(node: &MeshNode, network: &NetworkId, c: &Candidates) -> Vec<(Peer, bool)> {
    let mut peers = c.peers.clone();
    for b in &c.bootstrap {
        if let Finding::Answered(Contact { addr, id: Some(id) })
        | Finding::Successor(Contact { addr, id: Some(id) }, _) = probe(node, network, b).await
            && !peers.iter().any(|p| p.id == id)
        {
            peers.push(Peer { id, addr });
        }
    }
    let mut answers = Vec::new();
    for mut p in peers.into_iter().filter(|p| p.id != node.id()) {
        let mut asked = node.dht().neighbors_of(p).await;
        if asked.is_err() {
            // A remembered peer that rotated its key answers with its new id: follow it if it
            // proves it is the successor (PROTOCOL.md §7.7).
            let at = Contact {
                addr: p.addr,
                id: None,
            };
            if let Ok(Ok(s)) =
                tokio::time::timeout(CONNECT_TIMEOUT, node.verify_successor(p.id, at)).await
            {
                p.id = s.new_id();
                asked = node.dht().neighbors_of(p).await;
            }
        }
        if let Ok(n) = asked {
            let alone = n.successors.iter().all(|s| s.id == p.id);
            answers.push((p, alone));
        }
    }
    answers
}

/// Whether the node is alone while it knows other possible members (remembered peers,
/// bootstrap contacts): then it is not joined yet, and [`maintain`] looks for their ring.
pub(crate) async fn looks_for_a_ring(node: &MeshNode, candidates: &Candidates) -> bool {
    !candidates.is_empty()
        && node
            .dht()
            .status()
            .await
            .is_ok_and(|st| st.state == NodeState::Member && st.successors.is_empty())
}

/// Keeps the node joined (see the module docs) and, with a data directory, saves the peers it
/// knows every [`MEMBER_EVERY`]. Runs until aborted.
pub(crate) async fn maintain(
    node: MeshNode,
    candidates: Candidates,
    readiness: Arc<Readiness>,
    data: Option<DataDir>,
    net: String,
) -> std::net::SocketAddr {
    let Ok(network) = crate::keys::network(&net) else {
        return std::future::pending().await;
    };
    // A split seen twice in a row is acted on (a ring still stabilizing can look split once).
    let mut split_seen = false;
    let mut named_before = None;
    let mut early_check = Duration::from_secs(1);
    loop {
        if looks_for_a_ring(&node, &candidates).await {
            let answers = ask(&node, &network, &candidates).await;
            // The designated seed waits for the others unless they run a ring of several.
            let answers: Vec<(Peer, bool)> = answers
                .into_iter()
                .filter(|(_, alone)| !(candidates.anchor && *alone))
                .collect();
            match plan_alone(node.id(), &answers) {
                Some(through) => match node.dht().join(through).await {
                    Ok(succ) => {
                        tracing::info!(successor = %succ.id, "rejoined the ring");
                        Readiness::set(&readiness.joined);
                    }
                    Err(e) => tracing::warn!(error = %e, "rejoining the ring failed; trying again"),
                },
                // The lowest node that answers: it stays, and the others join it.
                None => Readiness::set(&readiness.joined),
            }
            tokio::time::sleep(ALONE_EVERY).await;
            continue;
        }
        Readiness::set(&readiness.joined);
        if let Some(addr) = live_duplicate(&node, &mut named_before).await {
            tracing::error!(
                id = %node.id(),
                %addr,
                "ANOTHER LIVE NODE ANSWERS FOR THIS NODE'S ID at {addr}: the same key runs twice; this node stops"
            );
            return addr;
        }
        // Until the first save, soon again: a node stopped early must still know its peers.
        let saved = match &data {
            Some(d) => remember(&node, d, &net).await,
            None => true,
        };
        if !candidates.is_empty()
            && let Ok(lowest) = node.dht().find(NodeId::from_bytes([0; 32])).await
        {
            let answers = ask(&node, &network, &candidates).await;
            match plan_merge(lowest.successor.id, &answers) {
                Some(through) if split_seen => {
                    tracing::warn!(
                        "this node's ring is split from a ring with a lower member; joining that ring"
                    );
                    if let Err(e) = node.dht().join(through).await {
                        tracing::warn!(error = %e, "merging into the other ring failed");
                    }
                    split_seen = false;
                }
                Some(_) => split_seen = true,
                None => split_seen = false,
            }
        }
        let wait = if saved { MEMBER_EVERY } else { ALONE_EVERY };
        if let Some(addr) = sleep_watching(&node, wait, &mut early_check, &mut named_before).await {
            return addr;
        }
    }
}

/// Sleeps `wait`. While the node is new, it looks for a live duplicate on the way, after
/// `step`, which doubles each time up to [`EARLY_CHECKS_UNTIL`]: right after the start, the ring
/// may still be stabilizing, and the successor the join named may not be the other instance's
/// (a node started 50 ms after its ring formed met a successor whose predecessor was not the
/// other instance yet, and ran on until the check 30 s later). Returns that instance's address.
async fn sleep_watching(
    node: &MeshNode,
    wait: Duration,
    step: &mut Duration,
    named_before: &mut Option<SocketAddr>,
) -> Option<SocketAddr> {
    let end = tokio::time::Instant::now() + wait;
    while *step <= EARLY_CHECKS_UNTIL && tokio::time::Instant::now() + *step < end {
        tokio::time::sleep(*step).await;
        *step *= 2;
        if let Some(addr) = live_duplicate(node, named_before).await {
            return Some(addr);
        }
    }
    tokio::time::sleep_until(end).await;
    None
}

/// Saves the peers this node knows: its predecessor and successors, and the lowest members of
/// the ring (the owner of id 0 and its successors), then the ones saved before (a node stopped
/// after its neighbours still knows them), at most [`MAX_PEERS`]. Returns whether it saved any.
pub(crate) async fn remember(node: &MeshNode, data: &DataDir, net: &str) -> bool {
    let mut peers: Vec<RememberedPeer> = Vec::new();
    let mut add = |p: Peer| {
        if p.id != node.id() && !peers.iter().any(|r| r.id == p.id) && peers.len() < MAX_PEERS {
            peers.push(p.into());
        }
    };
    if let Ok(st) = node.dht().status().await {
        st.predecessor.into_iter().for_each(&mut add);
        st.successors.into_iter().for_each(&mut add);
    }
    if let Ok(f) = node.dht().find(NodeId::from_bytes([0; 32])).await {
        add(f.successor);
        if let Ok(n) = node.dht().neighbors_of(f.successor).await {
            n.successors.into_iter().for_each(&mut add);
        }
    }
    if peers.is_empty() {
        return false;
    }
    for old in data.load_peers(net).unwrap_or_default() {
        if old.id != node.id() && !peers.iter().any(|r| r.id == old.id) && peers.len() < MAX_PEERS {
            peers.push(old);
        }
    }
    if let Err(e) = data.save_peers(net, &peers) {
        tracing::warn!(error = %e, "the known peers could not be saved in the data directory");
        return false;
    }
    true
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn peer(i: u8) -> Peer {
        Peer {
            id: NodeId::from_bytes([i; 32]),
            addr: ([127, 0, 0, 1], 7000 + u16::from(i)).into(),
        }
    }

    fn ids(c: Option<Vec<Contact>>) -> Option<Vec<u8>> {
        c.map(|v| v.iter().map(|c| c.id.unwrap().as_bytes()[0]).collect())
    }

    #[test]
    fn just_below_is_the_id_minus_one_wrapping() {
        let mut b = [0u8; 32];
        b[31] = 1;
        assert_eq!(
            just_below(NodeId::from_bytes(b)),
            NodeId::from_bytes([0; 32])
        );
        b[30] = 7;
        b[31] = 0;
        let mut want = [0u8; 32];
        want[30] = 6;
        want[31] = 0xff;
        assert_eq!(just_below(NodeId::from_bytes(b)), NodeId::from_bytes(want));
        assert_eq!(
            just_below(NodeId::from_bytes([0; 32])),
            NodeId::from_bytes([0xff; 32])
        );
    }

    proptest! {
        #[test]
        fn just_below_precedes_the_id_with_nothing_between(b in any::<[u8; 32]>()) {
            let id = NodeId::from_bytes(b);
            let below = just_below(id);
            prop_assert_ne!(below, id);
            // the ring's order: below < id, except where id = 0 wraps to the top
            prop_assert_eq!(below < id, b != [0; 32]);
            prop_assert_eq!(plus_one(below), id);
        }
    }

    /// `id + 1`, wrapping (the inverse of `just_below`, written independently).
    fn plus_one(id: NodeId) -> NodeId {
        let (hi, lo) = id.as_bytes().split_at(16);
        let hi = u128::from_be_bytes(hi.try_into().unwrap());
        let lo = u128::from_be_bytes(lo.try_into().unwrap());
        let (lo, carry) = lo.overflowing_add(1);
        let hi = hi.wrapping_add(u128::from(carry));
        let mut out = [0u8; 32];
        out[..16].copy_from_slice(&hi.to_be_bytes());
        out[16..].copy_from_slice(&lo.to_be_bytes());
        NodeId::from_bytes(out)
    }

    #[test]
    fn an_alone_node_prefers_a_ring_then_a_lower_lone_node() {
        let me = NodeId::from_bytes([5; 32]);
        assert_eq!(
            ids(plan_alone(me, &[(peer(9), false), (peer(2), true)])),
            Some(vec![9, 2])
        );
        assert_eq!(
            ids(plan_alone(
                me,
                &[(peer(9), true), (peer(3), true), (peer(2), true)]
            )),
            Some(vec![2, 3])
        );
        // the lowest lone node stays
        assert_eq!(
            ids(plan_alone(me, &[(peer(9), true), (peer(7), true)])),
            None
        );
        assert_eq!(ids(plan_alone(me, &[])), None);
    }

    #[test]
    fn a_ring_merges_only_into_a_ring_with_a_lower_member() {
        let lowest = NodeId::from_bytes([4; 32]);
        assert_eq!(
            ids(plan_merge(lowest, &[(peer(2), false), (peer(1), true)])),
            Some(vec![2])
        );
        assert_eq!(
            ids(plan_merge(lowest, &[(peer(4), false), (peer(8), false)])),
            None
        );
    }

    proptest! {
        /// A whole cluster restarted at once: every node alone, every one answering. Exactly
        /// the lowest stays; every other joins through a lower node; so following "joins
        /// through" from any node ends at the lowest: one ring.
        #[test]
        fn a_cluster_restarted_at_once_gathers_around_its_lowest_node(
            raw in proptest::collection::btree_set(1u8..250, 1..20)
        ) {
            let nodes: Vec<u8> = raw.into_iter().collect();
            let lowest = nodes[0];
            for &n in &nodes {
                let answers: Vec<(Peer, bool)> = nodes.iter().filter(|&&o| o != n).map(|&o| (peer(o), true)).collect();
                let plan = ids(plan_alone(NodeId::from_bytes([n; 32]), &answers));
                if n == lowest {
                    prop_assert_eq!(plan, None);
                } else {
                    let through = plan.unwrap();
                    prop_assert_eq!(through[0], lowest);
                    prop_assert!(through.iter().all(|&t| t < n));
                }
            }
        }
    }
}
