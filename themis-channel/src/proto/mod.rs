//! The sans-I/O cores: frame codec, replay window, the channel state machine, and the
//! endpoint's protocol logic over them. No sockets, no clock reads, no randomness of their own:
//! bytes and `now` in, bytes out.

mod channel;
pub(crate) mod endpoint;
mod frame;
mod limit;
mod source;
mod window;

pub use channel::{Channel, ChannelConfig, ChannelStats, Incoming};
pub use frame::{FrameHeader, FrameKind, Mode, peek_header};
pub use limit::{KeyedLimiter, TokenBucket};
pub(crate) use source::PerSource;
pub use source::SourcePrefix;
