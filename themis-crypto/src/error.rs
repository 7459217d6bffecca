use std::path::PathBuf;

/// Everything that can go wrong in `themis-crypto`.
///
/// Cryptographic failures ([`Error::BadSignature`], [`Error::Decrypt`], [`Error::BadMac`]) are
/// deliberately terse: they say *that* verification failed, never *why*, so that nothing about
/// keys or plaintexts leaks through an error message that might be logged or sent to a peer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A network id broke the naming rule.
    #[error(
        "invalid network id {shown:?}: {reason} (a network id is 1-64 bytes of UTF-8 with no control characters and no leading or trailing whitespace)"
    )]
    InvalidNetworkId {
        /// The offending input, truncated for display.
        shown: String,
        /// Which part of the rule it broke.
        reason: &'static str,
    },
    /// A hex string could not be parsed as the expected value.
    #[error("invalid {what}: expected {expected_len} hex digits, got {got:?}")]
    InvalidHex {
        /// What was being parsed ("node id", "public key", ...).
        what: &'static str,
        /// Number of hex digits expected.
        expected_len: usize,
        /// The input, truncated for display.
        got: String,
    },
    /// A signature did not verify.
    #[error("signature verification failed")]
    BadSignature,
    /// An X25519 exchange produced the all-zero (non-contributory) shared secret.
    #[error("key exchange rejected: the peer's ephemeral key is of low order")]
    NonContributory,
    /// An AEAD ciphertext failed authentication.
    #[error("decryption failed")]
    Decrypt,
    /// A MAC did not verify.
    #[error("message authentication failed")]
    BadMac,
    /// A message was larger than the primitive accepts.
    #[error("message of {len} bytes is larger than the {max}-byte limit of the primitive")]
    MessageTooLarge {
        /// The length offered.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A key file could not be read, written or parsed.
    #[error("key file {}: {problem}", path.display())]
    KeyFile {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it, and what to do.
        problem: KeyFileProblem,
    },
}

/// What is wrong with a key file (see [`Error::KeyFile`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileProblem {
    /// The file does not exist.
    #[error("does not exist (no identity key file at this path)")]
    Missing,
    /// The file exists and `overwrite` was not requested.
    #[error("already exists; refusing to overwrite an existing key without `overwrite`")]
    AlreadyExists,
    /// An I/O error other than "not found".
    #[error("{0}")]
    Io(#[source] std::io::Error),
    /// The path names a directory or another non-regular file.
    #[error("is not a regular file (give the path of the key file itself)")]
    NotARegularFile,
    /// The file is far larger than any key file, so it is not read at all.
    #[error(
        "is {len} bytes long, more than the {max} bytes a key file may have; is this the right file?"
    )]
    TooLarge {
        /// The file's length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The file is not a themis identity file at all.
    #[error("is not a themis identity key file (first line must be `{expected}`)")]
    NotAKeyFile {
        /// The header expected on the first line.
        expected: &'static str,
    },
    /// The file is a themis identity file of a version this build does not read.
    #[error("has format version {found}, but this build reads only version {supported}")]
    UnsupportedVersion {
        /// Version found in the file.
        found: String,
        /// Version this build supports.
        supported: u32,
    },
    /// The file ends before all required fields, or in the middle of one (its last line is an
    /// incomplete prefix of the expected line and has no line end).
    #[error("is truncated: the `{field}` line is missing or incomplete")]
    Truncated {
        /// The first missing field.
        field: &'static str,
    },
    /// A line could not be parsed.
    #[error("is corrupt at line {line}: {reason}")]
    Corrupt {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The stored public key does not match the stored secret seed.
    #[error("is corrupt: the public key does not match the secret key")]
    Mismatch,
    /// The file is accessible to group or others.
    #[error(
        "has permissions {mode:o}; a secret key file must not be accessible to group or others (run `chmod 600` on it)"
    )]
    InsecurePermissions {
        /// The file's mode bits.
        mode: u32,
    },
}
