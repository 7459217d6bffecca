//! The command's errors: each message says what went wrong and what to do.

use std::path::PathBuf;

/// Everything that can make a `themis` command fail (exit code 1).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum Error {
    /// A key file could not be read or written (the message names the file, the problem and,
    /// where a `themis` command helps, that command).
    #[error("{}", key_message(.0))]
    Key(#[source] themis_crypto::Error),
    /// The network name is not a valid network id.
    #[error(transparent)]
    Network(themis_crypto::Error),
    /// A bootstrap address does not parse or does not resolve.
    #[error(
        "invalid bootstrap address '{input}': {reason} (expected HOST:PORT or NODE_ID_HEX@HOST:PORT)"
    )]
    BadBootstrap {
        /// What was given.
        input: String,
        /// Why it is refused.
        reason: String,
    },
    /// A socket could not be bound (the detail names the address and the OS error).
    #[error("{detail}")]
    Listen {
        /// What failed.
        detail: String,
    },
    /// Joining the ring through the bootstrap nodes failed.
    #[error(
        "cannot join the ring through {bootstrap}: {reason}; check that a `themis node` runs there, on network '{network}', in the same mode (secure/insecure), and is reachable"
    )]
    Join {
        /// The bootstrap addresses, comma separated.
        bootstrap: String,
        /// The network name.
        network: String,
        /// The mesh's error.
        reason: String,
    },
    /// A mesh operation failed.
    #[error(transparent)]
    Mesh(#[from] themis_mesh::Error),
    /// `themis demo` failed or one of its claims did not hold.
    #[error(transparent)]
    Demo(#[from] crate::demo::DemoError),
    /// No agent answers at the API address.
    #[error(
        "no themis agent at {api}: is `themis node` running? (start one, or point --api / THEMIS_API at it)"
    )]
    AgentDown {
        /// The API address.
        api: String,
    },
    /// The agent answered with an error.
    #[error("{message}")]
    Agent {
        /// The HTTP status.
        status: u16,
        /// The agent's message.
        message: String,
    },
    /// Reading or writing a file or a stream failed.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file ("-" for stdin).
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A command-line value (or the same setting from the environment or the configuration
    /// file) is invalid: bad usage, exit code 2 like clap's own errors.
    #[error("invalid {what}: {reason}")]
    Usage {
        /// Which value.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The configuration file cannot be used (the message names the file, the line and the key).
    #[error("configuration file {}: {reason}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file of the data directory cannot be used.
    #[error("data directory file {}: {reason}", path.display())]
    DataDir {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The bootstrap nodes answered, but not as nodes of this ring can (another network,
    /// another identity, the other mode), or did not answer at all: each one's finding.
    #[error(
        "cannot join the ring through {bootstrap} (network '{network}'): {}",
        findings.join("; ")
    )]
    Bootstrap {
        /// The bootstrap contacts, comma separated.
        bootstrap: String,
        /// The network name.
        network: String,
        /// What each bootstrap contact showed.
        findings: Vec<String>,
    },
    /// Another live node runs with this node's id (the same key file started twice).
    #[error(
        "another live node already runs as {id} at {addr} (the same key file started twice?); this node stopped without disturbing it: stop one of them, or give this one another key (`themis keygen`)"
    )]
    DuplicateId {
        /// The node id.
        id: String,
        /// Where the other node runs.
        addr: String,
    },
    /// A registration was stored on none of its replicas (`themis register`).
    #[error(
        "'{service}' is registered on the agent's node but stored on 0 of its {replicas} replicas, so no one can discover it yet; the node retries the stores every few seconds: check the ring with `themis check`, then run `themis discover {service}`"
    )]
    NotStored {
        /// The service name.
        service: String,
        /// How many replicas the registration has (k + 1).
        replicas: String,
    },
    /// The agent API's token file cannot be used (the message names the file and the fix;
    /// never the token).
    #[error("API token file {}: {reason}", path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The agent API would listen beyond the loopback without a token.
    #[error(
        "the agent API would listen on {addr}, beyond the loopback, without a token: anyone who reaches it could register, deregister and call services as this node. Either keep it on the loopback (--api 127.0.0.1:7070) or give it a token: --api-token-file FILE (or THEMIS_API_TOKEN_FILE, or `api-token-file` in the --config file; a missing FILE is created with a random token, mode 0600); clients pass the same file"
    )]
    ApiWithoutToken {
        /// The API's address.
        addr: std::net::SocketAddr,
    },
    /// The ring did not come together in time (`themis cluster`).
    #[error("{0}")]
    NotReady(String),
}

impl Error {
    /// The exit code: 2 for bad usage (as clap's), 1 for everything else.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::Usage { .. }
            | Self::Network(_)
            | Self::Config { .. }
            | Self::ApiWithoutToken { .. } => 2,
            _ => 1,
        }
    }
}

/// The message of a key-file error, with the `themis` command that fixes it where there is
/// one (the crypto library names no command-line flags).
fn key_message(e: &themis_crypto::Error) -> String {
    use themis_crypto::{Error as E, KeyFileProblem as P};
    match e {
        E::KeyFile {
            path,
            problem: P::Missing,
        } => format!(
            "key file {} does not exist: create one with `themis keygen --out FILE`",
            path.display()
        ),
        E::KeyFile {
            path,
            problem: P::AlreadyExists,
        } => format!(
            "key file {} already exists; refusing to overwrite it: pass --force to replace it",
            path.display()
        ),
        other => other.to_string(),
    }
}
