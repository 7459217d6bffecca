//! The channel state machine: sealing and opening command and response frames of one session.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use themis_crypto::{AeadKey, NodeId, PrefixedAeadKey};
use themis_handshake::{Session, SessionId};

use super::frame::{
    FrameHeader, FrameKind, Mode, associated_data, nonce_prefix, nonce_tail, peek_header,
};
use super::window::{Check, ReplayWindow};
use crate::error::{Error, Result};
use crate::wire::{
    DEFAULT_MAX_FRAME_LEN, INSECURE_HEADER_LEN, SECURE_HEADER_LEN, TAG_LEN, TYPE_SECURE_COMMAND,
    TYPE_SECURE_RESPONSE,
};

/// Limits of a channel. Start from [`ChannelConfig::default`] and change fields; values are
/// checked when a channel is created.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelConfig {
    /// Largest whole frame sealed or opened, in bytes. Default 16 MiB; at least 58 (the largest
    /// header, 42 bytes, plus 16), at most [`ChannelConfig::MAX_FRAME_LEN_LIMIT`]. Both peers need the same value.
    pub max_frame_len: usize,
    /// Positions of the anti-replay window for incoming commands, and the most accepted
    /// commands awaiting their response (beyond, the oldest can no longer be answered).
    /// Rounded up to a multiple of 64. Default 2048 (twice the default `max_outstanding`, so a
    /// full pipeline arriving in any order fits); between [`ChannelConfig::MIN_REPLAY_WINDOW`]
    /// and [`ChannelConfig::MAX_REPLAY_WINDOW`].
    pub replay_window: u64,
    /// Commands that may await their response at once. Default 1024; 1 to
    /// [`ChannelConfig::MAX_OUTSTANDING_LIMIT`].
    pub max_outstanding: usize,
    /// Soft limit: after this many sealed frames [`Channel::needs_rekey`] turns true.
    /// Default 2^60.
    pub rekey_after_messages: u64,
    /// Hard limit: after this many sealed frames sealing is refused. Default 2^63; at most
    /// [`ChannelConfig::MAX_MESSAGES_LIMIT`], at least `rekey_after_messages`.
    pub reject_after_messages: u64,
    /// Soft limit (secure mode): past this session age [`Channel::needs_rekey`] turns true.
    /// Default 1 hour.
    pub rekey_after: Duration,
    /// Hard limit (secure mode): past this session age every seal and open is refused.
    /// Default 1 hour 10 minutes (ten minutes to finish a rekey); at least `rekey_after`.
    pub reject_after: Duration,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            replay_window: 2048,
            max_outstanding: 1024,
            rekey_after_messages: 1 << 60,
            reject_after_messages: 1 << 63,
            rekey_after: Duration::from_secs(3600),
            reject_after: Duration::from_secs(4200),
        }
    }
}

impl ChannelConfig {
    /// Largest accepted [`ChannelConfig::max_frame_len`] (1 GiB).
    pub const MAX_FRAME_LEN_LIMIT: usize = 1 << 30;
    /// Smallest accepted [`ChannelConfig::replay_window`].
    pub const MIN_REPLAY_WINDOW: u64 = 64;
    /// Largest accepted [`ChannelConfig::replay_window`] (2^24 positions, 2 MiB of bitmap per
    /// window; a channel holds two).
    pub const MAX_REPLAY_WINDOW: u64 = 1 << 24;
    /// Largest accepted [`ChannelConfig::max_outstanding`].
    pub const MAX_OUTSTANDING_LIMIT: usize = 1 << 20;
    /// Largest accepted [`ChannelConfig::reject_after_messages`]: the sequence counter stays
    /// below `u64::MAX` and so never wraps.
    pub const MAX_MESSAGES_LIMIT: u64 = u64::MAX - 1;

    /// Checks every field against its documented range.
    pub fn validate(&self) -> Result<()> {
        let bad = |s: String| Err(Error::InvalidConfig(s));
        let min_frame = INSECURE_HEADER_LEN + TAG_LEN;
        if !(min_frame..=Self::MAX_FRAME_LEN_LIMIT).contains(&self.max_frame_len) {
            return bad(format!(
                "max_frame_len {} is outside {min_frame}..={}",
                self.max_frame_len,
                Self::MAX_FRAME_LEN_LIMIT
            ));
        }
        if !(Self::MIN_REPLAY_WINDOW..=Self::MAX_REPLAY_WINDOW).contains(&self.replay_window) {
            return bad(format!(
                "replay_window {} is outside {}..={}",
                self.replay_window,
                Self::MIN_REPLAY_WINDOW,
                Self::MAX_REPLAY_WINDOW
            ));
        }
        if !(1..=Self::MAX_OUTSTANDING_LIMIT).contains(&self.max_outstanding) {
            return bad(format!(
                "max_outstanding {} is outside 1..={}",
                self.max_outstanding,
                Self::MAX_OUTSTANDING_LIMIT
            ));
        }
        if self.reject_after_messages > Self::MAX_MESSAGES_LIMIT
            || self.rekey_after_messages > self.reject_after_messages
        {
            return bad(format!(
                "need rekey_after_messages ({}) <= reject_after_messages ({}) <= {}",
                self.rekey_after_messages,
                self.reject_after_messages,
                Self::MAX_MESSAGES_LIMIT
            ));
        }
        if self.rekey_after > self.reject_after {
            return bad(format!(
                "need rekey_after ({:?}) <= reject_after ({:?})",
                self.rekey_after, self.reject_after
            ));
        }
        Ok(())
    }
}

/// What [`Channel::open`] delivers: an authentic, fresh command, or the response to an
/// outstanding request. The payload is the frame's own buffer, decrypted in place.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A command from the peer; answer it with [`Channel::seal_response`] and this `seq`.
    Command {
        /// The peer's sequence number for it.
        seq: u64,
        /// The command bytes.
        payload: BytesMut,
    },
    /// The response to our command `seq` (which is no longer outstanding).
    Response {
        /// The sequence number of our command it answers.
        seq: u64,
        /// The response bytes.
        payload: BytesMut,
    },
}

impl Incoming {
    /// The sequence number.
    pub fn seq(&self) -> u64 {
        match self {
            Self::Command { seq, .. } | Self::Response { seq, .. } => *seq,
        }
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        match self {
            Self::Command { payload, .. } | Self::Response { payload, .. } => payload,
        }
    }

    /// The payload, by value.
    pub fn into_payload(self) -> BytesMut {
        match self {
            Self::Command { payload, .. } | Self::Response { payload, .. } => payload,
        }
    }
}

/// Counters of one channel. Rejections are counted by reason; a rejection changes these
/// counters and nothing else.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelStats {
    /// Commands sealed.
    pub sealed_commands: u64,
    /// Responses sealed.
    pub sealed_responses: u64,
    /// Commands opened and delivered.
    pub opened_commands: u64,
    /// Responses opened and delivered.
    pub opened_responses: u64,
    /// Frames too short, too large, of an unknown version or type.
    pub rejected_malformed: u64,
    /// Frames of the other mode.
    pub rejected_wrong_mode: u64,
    /// Frames of another session (secure) or another sender (insecure).
    pub rejected_wrong_route: u64,
    /// Frames that failed authentication.
    pub rejected_auth: u64,
    /// Duplicate commands.
    pub rejected_duplicate: u64,
    /// Commands older than the replay window.
    pub rejected_too_old: u64,
    /// Responses to nothing ever sent.
    pub rejected_unsolicited: u64,
    /// Responses to requests already answered or cancelled.
    pub rejected_duplicate_response: u64,
    /// Frames refused because the session is past its hard age limit.
    pub rejected_expired: u64,
}

impl ChannelStats {
    fn count_reject(&mut self, e: &Error) {
        let c = match e {
            Error::FrameTooShort { .. }
            | Error::FrameTooLarge { .. }
            | Error::UnsupportedVersion { .. }
            | Error::UnknownFrameType { .. } => &mut self.rejected_malformed,
            Error::WrongMode { .. } => &mut self.rejected_wrong_mode,
            Error::UnknownSession { .. } | Error::WrongSender { .. } => {
                &mut self.rejected_wrong_route
            }
            Error::AuthenticationFailed => &mut self.rejected_auth,
            Error::DuplicateCommand { .. } => &mut self.rejected_duplicate,
            Error::CommandTooOld { .. } => &mut self.rejected_too_old,
            Error::UnsolicitedResponse { .. } => &mut self.rejected_unsolicited,
            Error::DuplicateResponse { .. } => &mut self.rejected_duplicate_response,
            Error::SessionExpired { .. } => &mut self.rejected_expired,
            _ => return,
        };
        *c = c.saturating_add(1);
    }
}

/// Per-mode state.
enum Keys {
    Secure {
        session_id: SessionId,
        send_key: DirectionKey,
        recv_key: DirectionKey,
    },
    Insecure,
}

/// One direction's key, made ready for the two nonce prefixes a channel seals under (a nonce is
/// `type ‖ 15 zero bytes ‖ seq`, PROTOCOL.md §4.1): XChaCha20's HChaCha20 step done once per
/// session and frame type instead of at every frame (about 4 % of a local find's
/// instructions). The frames are byte for byte what the session key gives.
struct DirectionKey {
    command: PrefixedAeadKey,
    response: PrefixedAeadKey,
}

impl DirectionKey {
    fn new(key: &AeadKey) -> Self {
        Self {
            command: key.for_nonce_prefix(&nonce_prefix(TYPE_SECURE_COMMAND)),
            response: key.for_nonce_prefix(&nonce_prefix(TYPE_SECURE_RESPONSE)),
        }
    }

    /// The key for frames of type `type_byte` (`None`: not a secure frame type).
    fn for_type(&self, type_byte: u8) -> Option<&PrefixedAeadKey> {
        match type_byte {
            TYPE_SECURE_COMMAND => Some(&self.command),
            TYPE_SECURE_RESPONSE => Some(&self.response),
            _ => None,
        }
    }
}

/// One side of the sequenced cmd/rsp channel of paper Fig. 3, over one handshake session
/// (secure mode) or in plaintext (insecure mode). Sans-I/O: bytes and `now` in, bytes out.
///
/// Both peers may send commands: each side numbers its own commands 1, 2, 3, ... (the paper's
/// `S_B`, incremented before each send) and a response carries the number of the command it
/// answers. Many commands may be outstanding at once; responses are matched by number.
pub struct Channel {
    config: ChannelConfig,
    keys: Keys,
    local_id: NodeId,
    peer_id: NodeId,
    established_at: Instant,
    /// Sequence number of the last command sealed (0: none yet).
    last_command_seq: u64,
    /// Frames sealed (commands and responses): the rekey message counter.
    sealed: u64,
    /// Our commands awaiting a response.
    outstanding: BTreeSet<u64>,
    /// Commands received (anti-replay): each is accepted at most once.
    recv_window: ReplayWindow,
    /// Accepted commands not answered yet, at most `replay_window` (the oldest go first). A
    /// response is sealed only for one of them, which leaves the set: each command is answered
    /// at most once, so no response nonce repeats, however long its handler takes.
    unanswered: BTreeSet<u64>,
    stats: ChannelStats,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("mode", &self.mode())
            .field("session_id", &self.session_id())
            .field("local_id", &self.local_id)
            .field("peer_id", &self.peer_id)
            .field("last_command_seq", &self.last_command_seq)
            .field("outstanding", &self.outstanding.len())
            .field("keys", &"<redacted>")
            .finish()
    }
}

impl Channel {
    /// A secure channel over a finished handshake. The session's keys move into the channel and
    /// are wiped when it is dropped.
    pub fn secure(session: Session, config: ChannelConfig) -> Result<Self> {
        let (local_id, peer_id, session_id, established_at) = (
            session.local_id,
            session.peer_id,
            session.session_id,
            session.established_at,
        );
        let (send_key, recv_key) = session.into_keys();
        Self::new(
            Keys::Secure {
                session_id,
                send_key: DirectionKey::new(&send_key),
                recv_key: DirectionKey::new(&recv_key),
            },
            local_id,
            peer_id,
            established_at,
            config,
        )
    }

    /// An insecure (plaintext) channel between `local_id` and `peer_id`: same framing,
    /// sequencing, replay window and request matching, no confidentiality and no integrity.
    /// For measurement and trusted networks only. Age limits do not apply (there is no key to
    /// age); the message limits do.
    pub fn insecure(
        local_id: NodeId,
        peer_id: NodeId,
        config: ChannelConfig,
        now: Instant,
    ) -> Result<Self> {
        Self::new(Keys::Insecure, local_id, peer_id, now, config)
    }

    fn new(
        keys: Keys,
        local_id: NodeId,
        peer_id: NodeId,
        established_at: Instant,
        config: ChannelConfig,
    ) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            recv_window: ReplayWindow::new(config.replay_window),
            unanswered: BTreeSet::new(),
            config,
            keys,
            local_id,
            peer_id,
            established_at,
            last_command_seq: 0,
            sealed: 0,
            outstanding: BTreeSet::new(),
            stats: ChannelStats::default(),
        })
    }

    /// Secure or insecure.
    pub fn mode(&self) -> Mode {
        match self.keys {
            Keys::Secure { .. } => Mode::Secure,
            Keys::Insecure => Mode::Insecure,
        }
    }

    /// The session id frames of this channel carry (secure mode only).
    pub fn session_id(&self) -> Option<SessionId> {
        match self.keys {
            Keys::Secure { session_id, .. } => Some(session_id),
            Keys::Insecure => None,
        }
    }

    /// This node's id.
    pub fn local_id(&self) -> &NodeId {
        &self.local_id
    }

    /// The peer's id.
    pub fn peer_id(&self) -> &NodeId {
        &self.peer_id
    }

    /// The limits in force.
    pub fn config(&self) -> &ChannelConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> ChannelStats {
        self.stats
    }

    /// Sequence number of the last command sealed (0: none yet).
    pub(crate) fn last_command_seq(&self) -> u64 {
        self.last_command_seq
    }

    /// Commands sent and not yet answered or cancelled.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Bytes a frame adds around its payload in this channel's mode (34 secure, 42 insecure).
    pub fn frame_overhead(&self) -> usize {
        FrameKind::new(self.mode(), true).overhead()
    }

    /// Largest payload one frame can carry.
    pub fn max_payload_len(&self) -> usize {
        self.config
            .max_frame_len
            .saturating_sub(self.frame_overhead())
    }

    /// Soft limit reached: start a new handshake now, keep using this channel meanwhile.
    pub fn needs_rekey(&self, now: Instant) -> bool {
        self.sealed >= self.config.rekey_after_messages
            || (self.mode() == Mode::Secure && self.age(now) >= self.config.rekey_after)
    }

    /// Hard limit reached: this channel refuses to seal (and, past the age limit, to open).
    pub fn is_expired(&self, now: Instant) -> bool {
        self.sealed >= self.config.reject_after_messages || self.check_age(now).is_err()
    }

    /// Forgets outstanding request `seq` (after a timeout): a late response to it is then
    /// rejected as [`Error::DuplicateResponse`]. Returns whether it was outstanding.
    pub fn cancel(&mut self, seq: u64) -> bool {
        self.outstanding.remove(&seq)
    }

    /// Gives up answering the peer's command `seq` (refused, or its handler dropped it): no
    /// response to it can be sealed any more. Returns whether it awaited one.
    pub fn forget_command(&mut self, seq: u64) -> bool {
        self.unanswered.remove(&seq)
    }

    /// Accepted commands awaiting their response.
    pub fn unanswered(&self) -> usize {
        self.unanswered.len()
    }

    fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.established_at)
    }

    fn check_age(&self, now: Instant) -> Result<()> {
        if self.mode() == Mode::Secure {
            let age = self.age(now);
            if age >= self.config.reject_after {
                return Err(Error::SessionExpired {
                    age,
                    limit: self.config.reject_after,
                });
            }
        }
        Ok(())
    }

    fn check_can_seal(&self, payload_len: usize, now: Instant) -> Result<()> {
        let max = self.max_payload_len();
        if payload_len > max {
            return Err(Error::PayloadTooLarge {
                len: payload_len,
                max,
            });
        }
        self.check_age(now)?;
        if self.sealed >= self.config.reject_after_messages {
            return Err(Error::SessionExhausted {
                sent: self.sealed,
                limit: self.config.reject_after_messages,
            });
        }
        Ok(())
    }

    /// Seals `payload` as the next command and appends the frame to `out`. Returns its
    /// sequence number, now outstanding until its response is opened or it is cancelled.
    ///
    /// On error nothing is appended and nothing changes.
    pub fn seal_command(
        &mut self,
        payload: &[u8],
        out: &mut BytesMut,
        now: Instant,
    ) -> Result<u64> {
        self.check_can_seal(payload.len(), now)?;
        if self.outstanding.len() >= self.config.max_outstanding {
            return Err(Error::TooManyOutstanding {
                limit: self.config.max_outstanding,
            });
        }
        // paper §5.1.2: A increments S_B before each send. Cannot overflow: seq <= sealed + 1
        // and sealed < reject_after_messages <= u64::MAX - 1.
        let seq = self
            .last_command_seq
            .checked_add(1)
            .ok_or(Error::SessionExhausted {
                sent: self.sealed,
                limit: self.config.reject_after_messages,
            })?;
        self.write_frame(true, seq, payload, out)?;
        self.last_command_seq = seq;
        self.sealed += 1;
        self.outstanding.insert(seq);
        self.stats.sealed_commands += 1;
        Ok(seq)
    }

    /// Seals `payload` as the response to the peer's command `seq` and appends the frame to
    /// `out`. A command is answered at most once (a second response would reuse its nonce);
    /// to answer a retransmitted command, resend the frame produced the first time.
    ///
    /// On error nothing is appended and nothing changes.
    pub fn seal_response(
        &mut self,
        seq: u64,
        payload: &[u8],
        out: &mut BytesMut,
        now: Instant,
    ) -> Result<()> {
        self.check_can_seal(payload.len(), now)?;
        if !self.unanswered.contains(&seq) {
            let reason = match self.recv_window.check(seq) {
                Check::Fresh => "no command with this sequence number was received",
                Check::Duplicate | Check::TooOld => {
                    "it was answered already (resend that frame instead), given up, or more than \
                     the replay window of newer commands awaited an answer since"
                }
            };
            return Err(Error::CannotRespond { seq, reason });
        }
        self.write_frame(false, seq, payload, out)?;
        self.unanswered.remove(&seq);
        self.sealed += 1;
        self.stats.sealed_responses += 1;
        Ok(())
    }

    /// Appends one frame; on error `out` is restored to its previous length.
    fn write_frame(
        &self,
        command: bool,
        seq: u64,
        payload: &[u8],
        out: &mut BytesMut,
    ) -> Result<()> {
        let header = match &self.keys {
            Keys::Secure { session_id, .. } => FrameHeader::Secure {
                command,
                session_id: *session_id,
                seq,
            },
            Keys::Insecure => FrameHeader::Insecure {
                command,
                sender: self.local_id,
                seq,
            },
        };
        let start = out.len();
        out.reserve(header.kind().overhead() + payload.len());
        header.encode(out);
        out.put_slice(payload);
        if let Keys::Secure { send_key, .. } = &self.keys {
            let sealed = out.get_mut(start..).and_then(|frame| {
                let (head, body) = frame.split_first_chunk_mut::<SECURE_HEADER_LEN>()?;
                // paper §5.1.2: E_K(cmd, B, S_B), MAC_K(everything). The receiver id B is
                // bound as associated data instead of being encrypted (it is known to both).
                let ad = associated_data(head, &self.peer_id);
                let key = send_key.for_type(head[1])?;
                Some(key.seal_in_place(&nonce_tail(seq), &ad, body))
            });
            match sealed {
                Some(Ok(tag)) => out.put_slice(&tag),
                Some(Err(_)) | None => {
                    out.truncate(start);
                    return Err(Error::PayloadTooLarge {
                        len: payload.len(),
                        max: self.max_payload_len(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Opens one frame: checks, in order, size, header, mode, session (or sender), age,
    /// authentication, then freshness (commands: replay window; responses: outstanding set).
    /// Only an accepted frame changes state (verify-then-update); a rejected one only bumps a
    /// [`ChannelStats`] counter.
    pub fn open(&mut self, frame: BytesMut, now: Instant) -> Result<Incoming> {
        let r = self.open_inner(frame, now);
        match &r {
            Ok(Incoming::Command { .. }) => self.stats.opened_commands += 1,
            Ok(Incoming::Response { .. }) => self.stats.opened_responses += 1,
            Err(e) => self.stats.count_reject(e),
        }
        r
    }

    fn open_inner(&mut self, mut frame: BytesMut, now: Instant) -> Result<Incoming> {
        if frame.len() > self.config.max_frame_len {
            return Err(Error::FrameTooLarge {
                len: frame.len(),
                max: self.config.max_frame_len,
            });
        }
        let header = peek_header(&frame)?;
        let kind = header.kind();
        if kind.mode() != self.mode() {
            return Err(Error::WrongMode {
                expected: self.mode(),
                found: kind.mode(),
            });
        }
        match (&self.keys, &header) {
            (
                Keys::Secure {
                    session_id,
                    recv_key,
                    ..
                },
                FrameHeader::Secure {
                    session_id: found, ..
                },
            ) => {
                // paper §5.1.2: B looks up K_AB by A. Here the endpoint looked the channel up by
                // session id; a frame of another (e.g. replaced) session must not be tried.
                if found != session_id {
                    return Err(Error::UnknownSession {
                        expected: *session_id,
                        found: *found,
                    });
                }
                self.check_age(now)?;
                // paper §5.1.2: B verifies the MAC and decrypts; the receiver id ("the identity
                // inside is his") is in the associated data.
                let tag_at = frame
                    .len()
                    .checked_sub(TAG_LEN)
                    .ok_or(Error::AuthenticationFailed)?;
                let (head, tag) = frame
                    .split_at_mut_checked(tag_at)
                    .ok_or(Error::AuthenticationFailed)?;
                let (hdr, body) = head
                    .split_first_chunk_mut::<SECURE_HEADER_LEN>()
                    .ok_or(Error::AuthenticationFailed)?;
                let tag: &[u8; TAG_LEN] = (&*tag)
                    .try_into()
                    .map_err(|_| Error::AuthenticationFailed)?;
                let ad = associated_data(hdr, &self.local_id);
                recv_key
                    .for_type(kind.type_byte())
                    .ok_or(Error::AuthenticationFailed)?
                    .open_in_place(&nonce_tail(header.seq()), &ad, body, tag)
                    .map_err(|_| Error::AuthenticationFailed)?;
                frame.truncate(tag_at);
            }
            (Keys::Insecure, FrameHeader::Insecure { sender, .. }) => {
                // The paper's cleartext `A`: in insecure mode it is all the "authentication"
                // there is (it also stops a frame reflected back to its sender).
                if *sender != self.peer_id {
                    return Err(Error::WrongSender {
                        expected: self.peer_id,
                        found: *sender,
                    });
                }
            }
            _ => {
                return Err(Error::WrongMode {
                    expected: self.mode(),
                    found: kind.mode(),
                });
            }
        }
        let seq = header.seq();
        if kind.is_command() {
            // paper §5.1.2: B checks that S_B is new. Strengthened for out-of-order delivery:
            // a sliding window instead of "higher than the last" (see PROTOCOL.md).
            match self.recv_window.check(seq) {
                Check::Fresh => {
                    self.recv_window.mark(seq);
                    self.unanswered.insert(seq);
                    if self.unanswered.len() as u64 > self.recv_window.size() {
                        self.unanswered.pop_first();
                    }
                }
                Check::Duplicate => return Err(Error::DuplicateCommand { seq }),
                Check::TooOld => {
                    return Err(Error::CommandTooOld {
                        seq,
                        newest: self.recv_window.newest(),
                        window: self.recv_window.size(),
                    });
                }
            }
        } else if !self.outstanding.remove(&seq) {
            // paper §5.1.2: A checks that S_B equals the number she sent.
            return Err(if seq == 0 || seq > self.last_command_seq {
                Error::UnsolicitedResponse { seq }
            } else {
                Error::DuplicateResponse { seq }
            });
        }
        frame.advance(kind.header_len());
        Ok(if kind.is_command() {
            Incoming::Command {
                seq,
                payload: frame,
            }
        } else {
            Incoming::Response {
                seq,
                payload: frame,
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pair(window: u64) -> (Channel, Channel, Instant) {
        let now = Instant::now();
        let (a, b) = (NodeId::from_bytes([1; 32]), NodeId::from_bytes([2; 32]));
        let cfg = ChannelConfig {
            replay_window: window,
            ..ChannelConfig::default()
        };
        let mk = |me, peer| Channel::insecure(me, peer, cfg.clone(), now).unwrap();
        (mk(a, b), mk(b, a), now)
    }

    fn command(a: &mut Channel, b: &mut Channel, now: Instant) -> u64 {
        let mut f = BytesMut::new();
        let seq = a.seal_command(b"c", &mut f, now).unwrap();
        b.open(f, now).unwrap();
        seq
    }

    #[test]
    fn a_slow_command_is_answered_however_many_newer_ones_came_since() {
        let (mut a, mut b, now) = pair(64);
        let slow = command(&mut a, &mut b, now);
        for _ in 0..1000 {
            let seq = command(&mut a, &mut b, now);
            let mut out = BytesMut::new();
            b.seal_response(seq, b"r", &mut out, now).unwrap();
            a.open(out, now).unwrap();
        }
        let mut out = BytesMut::new();
        b.seal_response(slow, b"late", &mut out, now).unwrap();
        assert_eq!(a.open(out, now).unwrap().payload(), b"late");
        // Once, and never after it was given up.
        assert!(
            b.seal_response(slow, b"again", &mut BytesMut::new(), now)
                .is_err()
        );
        let other = command(&mut a, &mut b, now);
        assert!(b.forget_command(other));
        assert!(
            b.seal_response(other, b"r", &mut BytesMut::new(), now)
                .is_err()
        );
        assert_eq!(b.unanswered(), 0);
    }

    #[test]
    fn at_most_a_window_of_commands_await_an_answer() {
        let (mut a, mut b, now) = pair(64);
        let seqs: Vec<u64> = (0..65).map(|_| command(&mut a, &mut b, now)).collect();
        assert_eq!(b.unanswered(), 64);
        // The oldest was let go; the others can still be answered.
        assert!(matches!(
            b.seal_response(seqs[0], b"r", &mut BytesMut::new(), now),
            Err(Error::CannotRespond { .. })
        ));
        b.seal_response(seqs[1], b"r", &mut BytesMut::new(), now)
            .unwrap();
    }
}
