//! AppAuth, the example application of paper §7: "an ingress point, *i.e.*, handler, and a
//! processing back-end, *i.e.*, check. When the handler microservice receives a web request
//! carrying a username and a password, [it] uses check to fetch a dictionary of known users'
//! credentials, validates the received pair, and then handles it appropriately by sending a
//! response message and associated code."
//!
//! The messages, all plain bytes in the mesh's call payloads:
//! - a client calls [`HANDLER`] with a [`Login`] (`u8 len ‖ user ‖ u8 len ‖ password`);
//! - `handler` calls [`CHECK`] with the user name; `check` answers that user's credential
//!   record, [`RECORD_LEN`] bytes: a 16-byte salt then `BLAKE2b-256(label, salt, password)`.
//!   An unknown user gets a decoy record that no password matches, so that `handler` does
//!   the same work, and answers the same way, for an unknown user as for a wrong password;
//! - `handler` recomputes the salted hash of the password it received, compares it in
//!   constant time, and answers `200 OK welcome <user>` or
//!   `401 Unauthorized: unknown user or wrong password` ([`verdict`] reads the answer).
//!
//! [`handle_direct`] is the same handler calling `check` as a plain function: the bench's
//! baseline without the mesh.

mod services;
mod users;

pub use services::{Check, Handler, handle_direct, verdict};
pub use users::{
    Attempt, Login, MAX_PASSWORD, MAX_USERNAME, MAX_USERS, RECORD_LEN, UserTable, attempt, users,
};

/// Service name of the back-end that answers credential records.
pub const CHECK: &str = "check";
/// Service name of the ingress that validates logins.
pub const HANDLER: &str = "handler";
