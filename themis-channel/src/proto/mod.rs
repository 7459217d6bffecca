//! The sans-I/O channel core: frame codec, replay window and the channel state machine.
//! No sockets, no clock reads, no randomness: bytes and `now` in, bytes out.

mod channel;
mod frame;
mod limit;
mod window;

pub use channel::{Channel, ChannelConfig, ChannelStats, Incoming};
pub use frame::{FrameHeader, FrameKind, Mode, peek_header};
pub use limit::{KeyedLimiter, TokenBucket};
