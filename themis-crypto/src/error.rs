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
    /// A key succession statement (PROTOCOL.md §2.9) or its file was refused.
    #[error("key succession statement{}: {problem}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Succession {
        /// The statement file, when it came from one.
        path: Option<PathBuf>,
        /// What is wrong, and what to do.
        problem: SuccessionProblem,
    },
    /// An admission certificate of a closed network (PROTOCOL.md §2.10) or its file was
    /// refused.
    #[error("admission certificate{}: {problem}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Admission {
        /// The certificate file, when it came from one.
        path: Option<PathBuf>,
        /// What is wrong, and what to do.
        problem: AdmissionProblem,
    },
}

/// Why an admission certificate or its file was refused (see [`Error::Admission`]); the
/// checks of PROTOCOL.md §2.10 in their order, then the file's problems.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdmissionProblem {
    /// Not exactly 136 bytes.
    #[error("is {len} bytes long; a certificate is exactly 136 bytes")]
    BadLength {
        /// Its length.
        len: usize,
    },
    /// Signed by another admission key than the network's (or the network is open).
    #[error(
        "is signed by another admission key than this network's (issued for another closed network, or this node runs with the wrong --admission-key)"
    )]
    WrongAdmissionKey,
    /// Issued for another node id.
    #[error(
        "admits another node, {found} (a certificate of another node, or issued for another key or network)"
    )]
    WrongSubject {
        /// The node id the certificate names.
        found: crate::NodeId,
    },
    /// Its validity ended.
    #[error(
        "expired at unix ms {not_after_ms} (now {now_ms}); ask the network's admission key holder for a new certificate (`themis admission issue`)"
    )]
    Expired {
        /// End of validity.
        not_after_ms: u64,
        /// The verifier's clock.
        now_ms: u64,
    },
    /// The admission key's signature does not verify.
    #[error("signature does not verify under the admission key (forged or damaged)")]
    BadSignature,
    /// The file does not exist.
    #[error("does not exist")]
    Missing,
    /// The file exists and `overwrite` was not requested.
    #[error("already exists; refusing to overwrite it")]
    AlreadyExists,
    /// An I/O error other than "not found".
    #[error("{0}")]
    Io(#[source] std::io::Error),
    /// Larger than any certificate file.
    #[error("is larger than {max} bytes; not a certificate file")]
    FileTooLarge {
        /// The limit.
        max: u64,
    },
    /// Not a certificate file at all.
    #[error(
        "is not a themis admission certificate file (first line must be `themis-admission-cert v1`)"
    )]
    NotACertFile,
    /// Another format version.
    #[error("has format version {found}, but this build reads only v1")]
    UnsupportedVersion {
        /// The version found.
        found: String,
    },
    /// A line could not be parsed.
    #[error("is corrupt at line {line}: {reason}")]
    Corrupt {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Why a key succession statement or its file was refused (see [`Error::Succession`]); one
/// variant per check of PROTOCOL.md §2.9, in its order, then the file's problems.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SuccessionProblem {
    /// Shorter than any statement.
    #[error("is {len} bytes long, shorter than the 211 of the smallest statement")]
    TooShort {
        /// Its length.
        len: usize,
    },
    /// Longer than any statement.
    #[error("is {len} bytes long, longer than the 274 of the largest statement")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// A format this build does not read.
    #[error("has format {found:#04x}; this build reads only format 0x01")]
    UnsupportedFormat {
        /// The format byte found.
        found: u8,
    },
    /// The length does not match the network id's length.
    #[error(
        "is {len} bytes long, which does not fit a network id of {net_len} bytes (210 + its length)"
    )]
    BadLength {
        /// The statement's length.
        len: usize,
        /// The network id length it gives.
        net_len: usize,
    },
    /// The network id breaks the naming rule.
    #[error("names an invalid network id")]
    BadNetworkId,
    /// The statement is for another network.
    #[error("is for network '{found}', not for '{expected}' (rotate with `--net {expected}`)")]
    WrongNetwork {
        /// The statement's network.
        found: String,
        /// The verifier's network.
        expected: String,
    },
    /// Both keys are the same.
    #[error("names the same key as old and new")]
    SameKey,
    /// The grace period is empty or longer than 90 days.
    #[error(
        "gives a grace period from unix ms {issued_ms} to {grace_end_ms}: it must end after it starts and last at most 90 days"
    )]
    BadGrace {
        /// Start (Unix ms).
        issued_ms: u64,
        /// End (Unix ms).
        grace_end_ms: u64,
    },
    /// A signature does not verify.
    #[error("does not verify (a signature is wrong: the statement was altered or forged)")]
    BadSignature,
    /// Issued in the future beyond the clock skew allowed.
    #[error(
        "was issued at unix ms {issued_ms}, after now ({now_ms}) plus the clock skew allowed: check this host's clock"
    )]
    NotYetValid {
        /// When it was issued.
        issued_ms: u64,
        /// The verifier's clock.
        now_ms: u64,
    },
    /// The grace period is over.
    #[error(
        "has expired: its grace period ended at unix ms {grace_end_ms} (now {now_ms}); the new id stands on its own now, so remove the statement (or rotate again with a longer --grace)"
    )]
    Expired {
        /// When the grace period ended.
        grace_end_ms: u64,
        /// The verifier's clock.
        now_ms: u64,
    },
    /// The statement names another key than the one it is used with.
    #[error(
        "names the successor key {named}, but this node's key is {actual} (a statement of another key: give the key file `themis key rotate --out` wrote)"
    )]
    NotThisKey {
        /// The statement's new key.
        named: String,
        /// The key it was used with.
        actual: String,
    },
    /// The file does not exist.
    #[error("does not exist")]
    Missing,
    /// The file exists and overwriting was not requested.
    #[error("already exists; refusing to overwrite it")]
    AlreadyExists,
    /// An I/O error.
    #[error("{0}")]
    Io(#[source] std::io::Error),
    /// The file is too large to be a statement file.
    #[error("is larger than the {max} bytes a statement file may have; is this the right file?")]
    FileTooLarge {
        /// The limit.
        max: u64,
    },
    /// Not a statement file.
    #[error("is not a themis key succession file (first line must be `themis-succession v1`)")]
    NotAStatementFile,
    /// Another version of the file format.
    #[error("has format version {found}, but this build reads only v1")]
    UnsupportedVersion {
        /// The version found.
        found: String,
    },
    /// A line could not be parsed.
    #[error("is corrupt at line {line}: {reason}")]
    Corrupt {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
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
