//! The tokio side of the crate: transports (and, later, the endpoint driving the cores).

pub(crate) mod transport;
