//! The tokio side of the crate: transports, and the endpoint driving the cores over them.

pub(crate) mod endpoint;
pub(crate) mod transport;
