//! The node host's line protocol, pure: what the bench process writes to a host's standard
//! input and what the host answers on its standard output.
//!
//! - The host's first line: `ready CONTACT...`, the contacts of its nodes in index order.
//! - A command: `TAG VERB ARGS...`, where `TAG` is a number the bench chooses and the reply
//!   repeats, so that replies may come in any order (commands run concurrently).
//! - A reply: `TAG ok FIELDS...` or `TAG err MESSAGE`.
//!
//! Node indices are the ring's (0 ≤ i < N), not the host's own; a host answers only for its
//! slice.

use std::str::FromStr;

use themis_crypto::NodeId;
use themis_dht::Contact;

/// Longest line either side accepts: a successor list of 64 ids is about 4.2 KB.
pub(crate) const MAX_LINE: usize = 16 * 1024;

/// What the bench asks a host to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Command {
    /// Node `node` joins the ring through `contact`.
    Join { node: usize, contact: Contact },
    /// Node `node` finds the successor of `target`: replies the hops.
    Find { node: usize, target: NodeId },
    /// Node `node` registers the name on k + 1 replicas (the network default k).
    Store { node: usize, name: String },
    /// Node `node`'s id and successor list.
    Successors { node: usize },
    /// The host's counters summed over its nodes ([`HostMetrics`]).
    Metrics,
    /// Resets the host process's peak resident set size.
    ResetPeakRss,
    /// Shuts every node of the host down; the host exits after the reply.
    Shutdown,
}

/// A command with the tag its reply will carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) tag: u64,
    pub(crate) command: Command,
}

impl Request {
    /// The command line, without its newline.
    pub(crate) fn encode(&self) -> String {
        let tag = self.tag;
        match &self.command {
            Command::Join { node, contact } => format!("{tag} join {node} {contact}"),
            Command::Find { node, target } => format!("{tag} find {node} {target}"),
            Command::Store { node, name } => format!("{tag} store {node} {name}"),
            Command::Successors { node } => format!("{tag} succ {node}"),
            Command::Metrics => format!("{tag} metrics"),
            Command::ResetPeakRss => format!("{tag} reset-rss"),
            Command::Shutdown => format!("{tag} shutdown"),
        }
    }

    /// Parses a command line. On error, the tag when it could be read (to answer `err`), and
    /// what is wrong.
    pub(crate) fn parse(line: &str) -> Result<Self, (Option<u64>, String)> {
        if line.len() > MAX_LINE {
            return Err((None, format!("line longer than {MAX_LINE} bytes")));
        }
        let mut words = line.split_whitespace();
        let tag = words
            .next()
            .and_then(|t| t.parse::<u64>().ok())
            .ok_or((None, format!("no tag in {line:?}")))?;
        let bad = |what: &str| (Some(tag), format!("{what} in {line:?}"));
        let verb = words.next().ok_or_else(|| bad("no command"))?;
        let mut node = || -> Result<usize, (Option<u64>, String)> {
            words
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| bad("no node index"))
        };
        let command = match verb {
            "join" => {
                let node = node()?;
                let contact = words
                    .next()
                    .and_then(|c| Contact::from_str(c).ok())
                    .ok_or_else(|| bad("no contact"))?;
                Command::Join { node, contact }
            }
            "find" => {
                let node = node()?;
                let target = words
                    .next()
                    .and_then(|t| NodeId::from_str(t).ok())
                    .ok_or_else(|| bad("no target id"))?;
                Command::Find { node, target }
            }
            "store" => {
                let node = node()?;
                let name = words.next().ok_or_else(|| bad("no name"))?.to_owned();
                Command::Store { node, name }
            }
            "succ" => Command::Successors { node: node()? },
            "metrics" => Command::Metrics,
            "reset-rss" => Command::ResetPeakRss,
            "shutdown" => Command::Shutdown,
            _ => return Err(bad("unknown command")),
        };
        match words.next() {
            Some(_) => Err(bad("trailing words")),
            None => Ok(Self { tag, command }),
        }
    }
}

/// A host's answer to one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) tag: u64,
    /// The reply's fields, or what went wrong.
    pub(crate) result: Result<Vec<String>, String>,
}

impl Reply {
    /// The reply line, without its newline (line breaks in an error become spaces).
    pub(crate) fn encode(&self) -> String {
        match &self.result {
            Ok(fields) if fields.is_empty() => format!("{} ok", self.tag),
            Ok(fields) => format!("{} ok {}", self.tag, fields.join(" ")),
            Err(e) => format!("{} err {}", self.tag, e.replace(['\n', '\r'], " ")),
        }
    }

    /// Parses a reply line; `None` if it is not one.
    pub(crate) fn parse(line: &str) -> Option<Self> {
        if line.len() > MAX_LINE {
            return None;
        }
        let (tag, rest) = line.split_once(' ')?;
        let tag = tag.parse().ok()?;
        let result = if rest == "ok" {
            Ok(Vec::new())
        } else if let Some(fields) = rest.strip_prefix("ok ") {
            Ok(fields.split_whitespace().map(str::to_owned).collect())
        } else {
            Err(rest.strip_prefix("err ")?.to_owned())
        };
        Some(Self { tag, result })
    }
}

/// The host's first line: its nodes' contacts.
pub(crate) fn encode_ready(contacts: &[Contact]) -> String {
    let mut line = String::from("ready");
    for c in contacts {
        line.push(' ');
        line.push_str(&c.to_string());
    }
    line
}

/// Parses the host's first line; `None` if it is not one.
pub(crate) fn parse_ready(line: &str) -> Option<Vec<Contact>> {
    let mut words = line.split_whitespace();
    (words.next()? == "ready").then_some(())?;
    words.map(|w| Contact::from_str(w).ok()).collect()
}

/// The counters of one host, summed over its nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct HostMetrics {
    /// Key agreements completed, counted on the initiator's side.
    pub(crate) handshakes: u64,
    /// TCP connections dialed.
    pub(crate) dials: u64,
    /// DHT requests the nodes handed to their endpoints.
    pub(crate) requests: u64,
    /// The host process's peak resident set size since its last reset, KiB.
    pub(crate) peak_rss_kib: Option<u64>,
    /// The host process's open file descriptors.
    pub(crate) open_fds: Option<u64>,
}

impl HostMetrics {
    /// The reply fields: five numbers, `-` for an unknown one.
    pub(crate) fn fields(&self) -> Vec<String> {
        let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        vec![
            self.handshakes.to_string(),
            self.dials.to_string(),
            self.requests.to_string(),
            opt(self.peak_rss_kib),
            opt(self.open_fds),
        ]
    }

    /// From the reply fields.
    pub(crate) fn from_fields(fields: &[String]) -> Option<Self> {
        let opt = |s: &String| -> Option<Option<u64>> {
            if s == "-" {
                Some(None)
            } else {
                s.parse().ok().map(Some)
            }
        };
        match fields {
            [h, d, req, rss, fds] => Some(Self {
                handshakes: h.parse().ok()?,
                dials: d.parse().ok()?,
                requests: req.parse().ok()?,
                peak_rss_kib: opt(rss)?,
                open_fds: opt(fds)?,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(b: u8) -> NodeId {
        NodeId::from_bytes([b; 32])
    }

    fn contact(b: u8, port: u16) -> Contact {
        Contact::from_str(&format!("{}@127.0.0.1:{port}", id(b))).unwrap()
    }

    fn command() -> impl Strategy<Value = Command> {
        let node = 0usize..100_000;
        prop_oneof![
            (node.clone(), any::<u8>(), any::<u16>()).prop_map(|(node, b, port)| Command::Join {
                node,
                contact: contact(b, port)
            }),
            (node.clone(), any::<u8>()).prop_map(|(node, b)| Command::Find {
                node,
                target: id(b)
            }),
            (node.clone(), "[0-9a-f]{1,16}").prop_map(|(node, name)| Command::Store { node, name }),
            node.prop_map(|node| Command::Successors { node }),
            Just(Command::Metrics),
            Just(Command::ResetPeakRss),
            Just(Command::Shutdown),
        ]
    }

    #[test]
    fn lines_look_like_this() {
        let r = Request {
            tag: 7,
            command: Command::Find {
                node: 3,
                target: id(0xab),
            },
        };
        assert_eq!(r.encode(), format!("7 find 3 {}", "ab".repeat(32)));
        let ok = Reply {
            tag: 7,
            result: Ok(vec!["2".into()]),
        };
        assert_eq!(ok.encode(), "7 ok 2");
        let err = Reply {
            tag: 8,
            result: Err("timed out\nafter 10 s".into()),
        };
        assert_eq!(err.encode(), "8 err timed out after 10 s");
        assert_eq!(Reply::parse("8 err timed out after 10 s").unwrap().tag, 8);
        assert_eq!(Reply::parse("9 ok").unwrap().result, Ok(vec![]));
        assert_eq!(Reply::parse("ready"), None);
        assert_eq!(Reply::parse("9 maybe"), None);
        let contacts = [contact(1, 7000), contact(2, 7001)];
        assert_eq!(
            parse_ready(&encode_ready(&contacts)).unwrap(),
            contacts.to_vec()
        );
        assert_eq!(parse_ready("ready 1.2.3.4"), None);
        assert_eq!(parse_ready("7 ok"), None);
        let m = HostMetrics {
            handshakes: 5,
            dials: 2,
            requests: 70,
            peak_rss_kib: None,
            open_fds: Some(40),
        };
        assert_eq!(m.fields(), ["5", "2", "70", "-", "40"]);
        assert_eq!(HostMetrics::from_fields(&m.fields()), Some(m));
        assert_eq!(HostMetrics::from_fields(&m.fields()[..4]), None);
    }

    #[test]
    fn bad_commands_say_what_is_wrong_and_keep_their_tag() {
        assert_eq!(Request::parse("x find 1").unwrap_err().0, None);
        let (tag, why) = Request::parse("4 find 1 nothex").unwrap_err();
        assert_eq!(tag, Some(4));
        assert!(why.contains("no target id"), "{why}");
        assert!(Request::parse("5 fly 1").unwrap_err().1.contains("unknown"));
        assert!(
            Request::parse("6 metrics now")
                .unwrap_err()
                .1
                .contains("trailing")
        );
        assert!(Request::parse(&"7".repeat(MAX_LINE + 1)).is_err());
    }

    proptest! {
        #[test]
        fn requests_round_trip(tag in any::<u64>(), command in command()) {
            let r = Request { tag, command };
            prop_assert_eq!(Request::parse(&r.encode()), Ok(r));
        }

        #[test]
        fn replies_round_trip(
            tag in any::<u64>(),
            ok in any::<bool>(),
            fields in prop::collection::vec("[0-9a-z@.:-]{1,20}", 0..5),
            error in "[ -~]{1,40}",
        ) {
            let r = Reply { tag, result: if ok { Ok(fields) } else { Err(error) } };
            prop_assert_eq!(Reply::parse(&r.encode()), Some(r));
        }

        #[test]
        fn any_line_parses_without_panic(line in "\\PC{0,200}") {
            let _ = Request::parse(&line);
            let _ = Reply::parse(&line);
            let _ = parse_ready(&line);
        }
    }
}
