//! The identity key file.
//!
//! Format (UTF-8 text, `\n` line ends, documented in PROTOCOL.md §2.8):
//!
//! ```text
//! themis-identity v1
//! public-key <64 lowercase hex digits>
//! secret-seed <64 lowercase hex digits>
//! ```
//!
//! Lines starting with `#` and blank lines are ignored. The public key is redundant and checked
//! against the seed, so a corrupted file is detected rather than silently giving another identity.

use std::fs;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use zeroize::Zeroizing;

use crate::atomic_file::{self, WriteError};
use crate::error::KeyFileProblem;
use crate::identity::SEED_LEN;
use crate::{Error, IdentityKeypair, PublicKey};

/// First line of every key file, without the version.
pub const KEY_FILE_MAGIC: &str = "themis-identity";
/// The format version this build writes and reads.
pub const KEY_FILE_VERSION: u32 = 1;
/// Key files larger than this are rejected before being read into memory (a key file written
/// by this crate is 172 bytes; the rest leaves room for comments).
const MAX_KEY_FILE_LEN: u64 = 4096;

fn err(path: &Path, problem: KeyFileProblem) -> Error {
    Error::KeyFile {
        path: path.to_owned(),
        problem,
    }
}

impl IdentityKeypair {
    /// Writes the key pair to `path` atomically with mode 0600.
    ///
    /// The file is written under a temporary name in the same directory, synced, then moved into
    /// place. Without `overwrite`, an existing file is left untouched and
    /// [`KeyFileProblem::AlreadyExists`] is returned.
    pub fn write_to_file(&self, path: &Path, overwrite: bool) -> Result<(), Error> {
        // Every copy of the seed's hex is wiped when dropped.
        let seed_hex = Zeroizing::new(hex::encode(self.seed()));
        let body = Zeroizing::new(format!(
            "{KEY_FILE_MAGIC} v{KEY_FILE_VERSION}\npublic-key {}\nsecret-seed {}\n",
            hex::encode(self.public().as_bytes()),
            seed_hex.as_str(),
        ));
        atomic_file::write(path, body.as_bytes(), 0o600, overwrite, "key").map_err(|e| match e {
            WriteError::AlreadyExists => err(path, KeyFileProblem::AlreadyExists),
            WriteError::Io(e) => err(path, KeyFileProblem::Io(e)),
        })
    }

    /// Reads a key pair written by [`IdentityKeypair::write_to_file`].
    ///
    /// Every failure names the file and the problem, checked in this order: missing, unreadable,
    /// not a regular file, accessible to group or others, larger than 4096 bytes, not a key file,
    /// another format version, truncated, corrupt (with the line number), or a public key that
    /// does not match the seed. No message shows secret material.
    pub fn read_from_file(path: &Path) -> Result<Self, Error> {
        let io = |e: std::io::Error| err(path, KeyFileProblem::Io(e));
        let file = match fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(err(path, KeyFileProblem::Missing));
            }
            Err(e) => return Err(io(e)),
        };
        // Checks are made on the open file, not on the path, so that the file read is the file
        // checked.
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(err(path, KeyFileProblem::NotARegularFile));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(err(path, KeyFileProblem::InsecurePermissions { mode }));
        }
        if meta.len() > MAX_KEY_FILE_LEN {
            return Err(err(
                path,
                KeyFileProblem::TooLarge {
                    len: meta.len(),
                    max: MAX_KEY_FILE_LEN,
                },
            ));
        }
        // Read at most one byte past the limit, even if the file grew after the check above.
        let mut raw = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE_LEN as usize + 1));
        file.take(MAX_KEY_FILE_LEN + 1)
            .read_to_end(&mut raw)
            .map_err(io)?;
        if raw.len() as u64 > MAX_KEY_FILE_LEN {
            return Err(err(
                path,
                KeyFileProblem::TooLarge {
                    len: raw.len() as u64,
                    max: MAX_KEY_FILE_LEN,
                },
            ));
        }
        let text = std::str::from_utf8(&raw)
            .map_err(|_| err(path, KeyFileProblem::NotAKeyFile { expected: HEADER }))?;
        parse(text).map_err(|p| err(path, p))
    }
}

const HEADER: &str = "themis-identity v1";

/// `true` if `content` could be the start of a `name <64 hex digits>` line cut short.
fn is_cut_field(content: &str, name: &str) -> bool {
    match content.strip_prefix(name) {
        None => name.starts_with(content),
        Some("") => true,
        Some(rest) => rest.strip_prefix(' ').is_some_and(|hex| {
            let hex = hex.trim_start();
            hex.len() < 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
        }),
    }
}

fn parse(text: &str) -> Result<IdentityKeypair, KeyFileProblem> {
    // A file that does not end with a line end and whose last line is an incomplete prefix of
    // the line expected there was cut short (a partial copy, a full disk): say "truncated" rather
    // than "corrupt". Every file this crate writes ends with `\n`.
    let cut_line = if text.ends_with('\n') {
        0
    } else {
        text.lines().count()
    };
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));

    let (line, header) = lines
        .next()
        .ok_or(KeyFileProblem::Truncated { field: HEADER })?;
    if line == cut_line && header != HEADER && HEADER.starts_with(header) {
        return Err(KeyFileProblem::Truncated { field: HEADER });
    }
    let version = header
        .strip_prefix(KEY_FILE_MAGIC)
        .and_then(|rest| rest.strip_prefix(' '))
        .ok_or(KeyFileProblem::NotAKeyFile { expected: HEADER })?;
    if version != format!("v{KEY_FILE_VERSION}") {
        return Err(KeyFileProblem::UnsupportedVersion {
            found: version.chars().take(16).collect(),
            supported: KEY_FILE_VERSION,
        });
    }

    let mut field = |name: &'static str| -> Result<[u8; 32], KeyFileProblem> {
        let (line, content) = lines
            .next()
            .ok_or(KeyFileProblem::Truncated { field: name })?;
        let mut out = [0u8; 32];
        let value = content.strip_prefix(name).and_then(|r| r.strip_prefix(' '));
        match value.map(|v| hex::decode_to_slice(v.trim(), &mut out)) {
            Some(Ok(())) => Ok(out),
            _ if line == cut_line && is_cut_field(content, name) => {
                Err(KeyFileProblem::Truncated { field: name })
            }
            None => Err(KeyFileProblem::Corrupt {
                line,
                reason: format!("expected `{name} <64 hex digits>`"),
            }),
            Some(Err(_)) => Err(KeyFileProblem::Corrupt {
                line,
                reason: format!("`{name}` is not 64 hex digits"),
            }),
        }
    };
    let public = PublicKey::from_bytes(field("public-key")?);
    let seed: Zeroizing<[u8; SEED_LEN]> = Zeroizing::new(field("secret-seed")?);
    if let Some((line, _)) = lines.next() {
        return Err(KeyFileProblem::Corrupt {
            line,
            reason: "unexpected content after the secret seed".to_owned(),
        });
    }
    let kp = IdentityKeypair::from_seed(&seed);
    if kp.public() != public {
        return Err(KeyFileProblem::Mismatch);
    }
    Ok(kp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_each_problem() {
        let kp = IdentityKeypair::from_seed(&[5; 32]);
        let good = format!(
            "themis-identity v1\npublic-key {}\nsecret-seed {}\n",
            hex::encode(kp.public().as_bytes()),
            hex::encode([5u8; 32])
        );
        assert_eq!(parse(&good).unwrap().public(), kp.public());
        let commented = format!("# my key\n\n{good}");
        assert!(parse(&commented).is_ok());

        assert!(matches!(parse(""), Err(KeyFileProblem::Truncated { .. })));
        assert!(matches!(
            parse("ssh-rsa AAAA"),
            Err(KeyFileProblem::NotAKeyFile { .. })
        ));
        assert!(matches!(
            parse("themis-identity v2\n"),
            Err(KeyFileProblem::UnsupportedVersion { .. })
        ));
        let truncated: String = good.lines().take(2).collect::<Vec<_>>().join("\n");
        assert!(matches!(
            parse(&truncated),
            Err(KeyFileProblem::Truncated {
                field: "secret-seed"
            })
        ));
        let corrupt = good.replace("secret-seed 05", "secret-seed zz");
        assert!(matches!(
            parse(&corrupt),
            Err(KeyFileProblem::Corrupt { line: 3, .. })
        ));
        let mismatch = good.replace("secret-seed 05", "secret-seed 06");
        assert!(matches!(parse(&mismatch), Err(KeyFileProblem::Mismatch)));
        let extra = format!("{good}junk\n");
        assert!(matches!(
            parse(&extra),
            Err(KeyFileProblem::Corrupt { line: 4, .. })
        ));
    }
}
