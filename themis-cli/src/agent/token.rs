//! The agent API's token (`--api-token-file`): read from a file checked like a key file (a
//! regular file, mode 0600 or stricter, small), compared in constant time, never logged or
//! printed (its `Debug` is redacted and its bytes are zeroized when dropped).
//!
//! The same file serves `themis node` (the token requests must carry) and the client commands
//! (`themis register`, `call`, ...: the token they send as `Authorization: Bearer TOKEN`).

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use crate::error::Error;

/// Shortest token accepted, in bytes (a guessable token is no token).
pub(crate) const MIN_TOKEN_LEN: usize = 16;
/// Longest token accepted, in bytes (it travels in a header).
pub(crate) const MAX_TOKEN_LEN: usize = 512;
/// How to make a token file, for the error messages.
pub(crate) const MAKE_ONE: &str = "(umask 077; head -c 32 /dev/urandom | base64 > FILE)";

/// A bearer token for the agent API.
pub(crate) struct ApiToken {
    token: Zeroizing<Vec<u8>>,
    path: PathBuf,
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("path", &self.path)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl ApiToken {
    /// Reads the token in `path`: its content without surrounding white space, 16 to 512
    /// visible ASCII characters. The file must be a regular file not accessible to group or
    /// others (like a key file); every refusal names the file and the fix.
    pub(crate) fn read(path: &Path) -> Result<Self, Error> {
        let bad = |reason: String| Error::TokenFile {
            path: path.to_owned(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(|e| {
            bad(format!(
                "cannot be opened ({e}); create one with `{MAKE_ONE}`"
            ))
        })?;
        // Checked on the open file, so that the file read is the file checked.
        let meta = file.metadata().map_err(|e| bad(e.to_string()))?;
        if !meta.is_file() {
            return Err(bad("is not a regular file".to_owned()));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(bad(format!(
                "has permissions {mode:o}; a token file must not be accessible to group or others (run `chmod 600 {}`)",
                path.display()
            )));
        }
        let limit = (MAX_TOKEN_LEN + 64) as u64;
        let mut raw = Zeroizing::new(Vec::new());
        file.take(limit + 1)
            .read_to_end(&mut raw)
            .map_err(|e| bad(e.to_string()))?;
        if raw.len() as u64 > limit {
            return Err(bad(format!(
                "is larger than a token (at most {MAX_TOKEN_LEN} characters)"
            )));
        }
        let token = Zeroizing::new(raw.trim_ascii().to_vec());
        if !token.iter().all(u8::is_ascii_graphic) {
            return Err(bad(
                "holds characters other than visible ASCII (a token is one line, such as base64 or hex)"
                    .to_owned(),
            ));
        }
        if token.len() < MIN_TOKEN_LEN || token.len() > MAX_TOKEN_LEN {
            return Err(bad(format!(
                "holds {} characters; a token has {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN}: make one with `{MAKE_ONE}`",
                token.len()
            )));
        }
        Ok(Self {
            token,
            path: path.to_owned(),
        })
    }

    /// [`ApiToken::read`], but a missing file is first created (mode 0600, never replacing
    /// one) with a fresh random token of 32 bytes from the OS, in hex: what `themis node` does,
    /// so that a container or a pod can keep its token in its data volume. Clients only read.
    pub(crate) fn read_or_create(path: &Path) -> Result<Self, Error> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        if !path.exists() {
            let mut raw = Zeroizing::new([0u8; 32]);
            themis_crypto::fill_random(raw.as_mut_slice());
            let mut text = Zeroizing::new(String::with_capacity(65));
            for b in raw.iter() {
                text.push_str(&format!("{b:02x}"));
            }
            text.push('\n');
            let created = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()));
            match created {
                Ok(()) => tracing::info!(
                    file = %path.display(),
                    "created a new API token file; clients pass the same file (--api-token-file)"
                ),
                // Another process made it meanwhile: read theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(Error::TokenFile {
                        path: path.to_owned(),
                        reason: format!("does not exist and cannot be created ({e})"),
                    });
                }
            }
        }
        Self::read(path)
    }

    /// The file the token came from.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// `true` if `presented` is the token (constant time in the token's content; the length
    /// of a token is not a secret worth hiding).
    pub(crate) fn matches(&self, presented: &[u8]) -> bool {
        bool::from(self.token.as_slice().ct_eq(presented))
    }

    /// The value of an `Authorization` header carrying the token (for the client), marked
    /// sensitive so that HTTP libraries do not log it.
    pub(crate) fn header_value(&self) -> Option<axum::http::HeaderValue> {
        let mut v = Zeroizing::new(b"Bearer ".to_vec());
        v.extend_from_slice(&self.token);
        let mut h = axum::http::HeaderValue::from_bytes(&v).ok()?;
        h.set_sensitive(true);
        Some(h)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn a_token_file_is_checked_like_a_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = write(dir.path(), "t", "c2VjcmV0LXRva2VuLWZvci10ZXN0cw==\n", 0o600);
        let t = ApiToken::read(&good).unwrap();
        assert!(t.matches(b"c2VjcmV0LXRva2VuLWZvci10ZXN0cw=="));
        assert!(!t.matches(b"c2VjcmV0LXRva2VuLWZvci10ZXN0cw="));
        assert!(!t.matches(b""));
        assert!(!format!("{t:?}").contains("c2Vj"), "{t:?}");
        let open = write(dir.path(), "o", "c2VjcmV0LXRva2VuLWZvci10ZXN0cw==", 0o644);
        let e = ApiToken::read(&open).unwrap_err().to_string();
        assert!(e.contains("644") && e.contains("chmod 600"), "{e}");
        let short = write(dir.path(), "s", "abc", 0o600);
        let e = ApiToken::read(&short).unwrap_err().to_string();
        assert!(e.contains("16 to 512") && !e.contains("abc"), "{e}");
        let two = write(dir.path(), "2", "aaaaaaaaaaaaaaaa bbbbbbbbbbbbbbbb", 0o600);
        assert!(ApiToken::read(&two).is_err());
        let e = ApiToken::read(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("urandom"), "{e}");
        assert!(ApiToken::read(dir.path()).is_err());
    }

    #[test]
    fn a_missing_token_file_is_created_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("api-token");
        assert!(ApiToken::read(&p).is_err());
        let a = ApiToken::read_or_create(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.trim().len(), 64);
        assert!(a.matches(text.trim().as_bytes()));
        // an existing file is read, not replaced
        let b = ApiToken::read_or_create(&p).unwrap();
        assert!(b.matches(text.trim().as_bytes()));
        let other = ApiToken::read_or_create(&dir.path().join("other")).unwrap();
        assert!(!other.matches(text.trim().as_bytes()));
    }
}
