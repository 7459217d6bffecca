//! The sans-I/O channel core: frame codec, replay window and the channel state machine.
//! No sockets, no clock reads, no randomness: bytes and `now` in, bytes out.

mod channel;
mod frame;
mod limit;
mod window;

pub use channel::{
    Channel, ChannelConfig, ChannelStats, Incoming, MAX_FRAME_LEN_LIMIT, MAX_MESSAGES_LIMIT,
    MAX_OUTSTANDING_LIMIT, MAX_REPLAY_WINDOW, MIN_REPLAY_WINDOW,
};
pub use frame::{
    DEFAULT_MAX_FRAME_LEN, FrameHeader, FrameKind, INSECURE_HEADER_LEN, Mode, SECURE_HEADER_LEN,
    TAG_LEN, TYPE_INSECURE_COMMAND, TYPE_INSECURE_RESPONSE, TYPE_SECURE_COMMAND,
    TYPE_SECURE_RESPONSE, VERSION, peek_header,
};
pub use limit::{KeyedLimiter, TokenBucket};
