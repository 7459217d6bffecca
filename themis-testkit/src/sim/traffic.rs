//! What the simulated nodes send, counted by kind of request: messages and bytes of requests,
//! and of the answers to them (an answer is counted under the kind of the request it answers).
//! The kind is read from the head of the CBOR data item (PROTOCOL.md §6: a request is a text
//! string such as `"ping"` or a one-entry map such as `{"find": {..}}`), without decoding it.

/// The kinds of request, in the order of [`Traffic`]'s arrays: the DHT's requests, then the
/// endpoint's `identify` (no DHT bytes), then anything unrecognised.
pub const KINDS: [&str; 12] = [
    "find",
    "store",
    "join",
    "get_neighbors",
    "notify",
    "ping",
    "handoff",
    "leave",
    "set_successors",
    "unify",
    "identify",
    "other",
];

/// Index of `identify` in [`KINDS`].
pub(super) const IDENTIFY: usize = 10;
/// Index of `other` in [`KINDS`].
const OTHER: usize = 11;

/// Messages and bytes sent so far, by kind ([`KINDS`]); taken at send time, whatever the
/// network model then does with them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Requests sent, by kind.
    pub requests: [u64; KINDS.len()],
    /// Bytes of those requests.
    pub request_bytes: [u64; KINDS.len()],
    /// Answers sent, by the kind of request answered.
    pub responses: [u64; KINDS.len()],
    /// Bytes of those answers.
    pub response_bytes: [u64; KINDS.len()],
}

impl Traffic {
    /// Messages (requests and answers) of every kind.
    pub fn messages(&self) -> u64 {
        self.requests.iter().chain(&self.responses).sum()
    }

    /// Bytes (requests and answers) of every kind.
    pub fn bytes(&self) -> u64 {
        self.request_bytes.iter().chain(&self.response_bytes).sum()
    }

    /// Messages and bytes (requests and answers) of kind `k` (an index into [`KINDS`]).
    pub fn of(&self, k: usize) -> (u64, u64) {
        (
            self.requests[k] + self.responses[k],
            self.request_bytes[k] + self.response_bytes[k],
        )
    }

    /// What was sent after `earlier` (a snapshot of the same counters).
    pub fn since(&self, earlier: &Traffic) -> Traffic {
        let sub = |a: &[u64; KINDS.len()], b: &[u64; KINDS.len()]| {
            std::array::from_fn(|i| a[i].saturating_sub(b[i]))
        };
        Traffic {
            requests: sub(&self.requests, &earlier.requests),
            request_bytes: sub(&self.request_bytes, &earlier.request_bytes),
            responses: sub(&self.responses, &earlier.responses),
            response_bytes: sub(&self.response_bytes, &earlier.response_bytes),
        }
    }

    pub(super) fn request(&mut self, kind: usize, len: usize) {
        self.requests[kind] += 1;
        self.request_bytes[kind] += len as u64;
    }

    pub(super) fn response(&mut self, kind: usize, len: usize) {
        let kind = kind.min(OTHER);
        self.responses[kind] += 1;
        self.response_bytes[kind] += len as u64;
    }
}

/// The kind of the request `bytes` (an index into [`KINDS`]).
pub(super) fn kind_of(bytes: &[u8]) -> usize {
    let name = match bytes {
        // a text string: a request without fields
        [h, rest @ ..] if h >> 5 == 3 => text(*h, rest),
        // a map of one entry whose key is the request's name
        [0xa1, h, rest @ ..] if h >> 5 == 3 => text(*h, rest),
        _ => None,
    };
    name.and_then(|n| KINDS[..IDENTIFY].iter().position(|k| k.as_bytes() == n))
        .unwrap_or(OTHER)
}

/// The bytes of a short CBOR text string whose head is `h` (lengths up to 23 are in the head;
/// every request name is shorter).
fn text(h: u8, rest: &[u8]) -> Option<&[u8]> {
    let len = usize::from(h & 0x1f);
    if len >= 24 {
        return None;
    }
    rest.get(..len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use themis_crypto::NodeId;

    #[test]
    fn kinds_from_the_cbor_head() {
        let find = themis_dht::fuzz::bench_find(NodeId::from_bytes([7; 32]));
        assert_eq!(KINDS[kind_of(&find)], "find");
        assert_eq!(KINDS[kind_of(b"\x64ping")], "ping");
        assert_eq!(KINDS[kind_of(b"\x6dget_neighbors")], "get_neighbors");
        assert_eq!(KINDS[kind_of(b"\x64pong")], "other");
        assert_eq!(KINDS[kind_of(b"")], "other");
        assert_eq!(KINDS[kind_of(b"\xa1")], "other");
    }
}
