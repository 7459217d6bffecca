//! Files written whole or not at all (key files and succession statements): a reader never sees
//! half a file, and without `overwrite` an existing file, even one a racing writer just made, is
//! never replaced.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why [`write`] failed.
pub(crate) enum WriteError {
    /// `path` exists and `overwrite` was not given.
    AlreadyExists,
    /// Any other I/O error.
    Io(std::io::Error),
}

/// Writes `body` to `path` with `mode`: under a temporary name in the same directory (`.NAME.tmp-`
/// and a random suffix; `fallback` names it when `path` has no file name), synced, then moved
/// into place, and the directory synced. With `overwrite` the file is renamed over `path`;
/// without it, it is hard-linked, which fails if `path` exists.
pub(crate) fn write(
    path: &Path,
    body: &[u8],
    mode: u32,
    overwrite: bool,
    fallback: &str,
) -> Result<(), WriteError> {
    if !overwrite && path.symlink_metadata().is_ok() {
        return Err(WriteError::AlreadyExists);
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| fallback.to_owned());
    let mut suffix = [0u8; 6];
    crate::random::fill(&mut suffix);
    let tmp = dir.join(format!(".{name}.tmp-{}", hex::encode(suffix)));
    // `create_new` never opens a file someone else made; only a file this call created is
    // removed on failure.
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(WriteError::Io)?;
    let written = f.write_all(body).and_then(|()| f.sync_all());
    drop(f);
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(WriteError::Io(e));
    }
    let placed = if overwrite {
        fs::rename(&tmp, path)
    } else {
        // A hard link fails if the target exists, so a racing writer is never clobbered.
        let r = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        r
    };
    match placed {
        Ok(()) => {
            if let Ok(d) = fs::File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok(())
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            if e.kind() == ErrorKind::AlreadyExists {
                Err(WriteError::AlreadyExists)
            } else {
                Err(WriteError::Io(e))
            }
        }
    }
}
