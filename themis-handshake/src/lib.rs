//! The THEMIS authenticated key agreement (paper §5.1.1, Figure 2) as a sans-I/O state machine.
#![forbid(unsafe_code)]

mod session;

pub use session::{Role, SESSION_ID_LEN, Session, SessionId};
