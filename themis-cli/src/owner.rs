//! `themis owner new` and `themis delegate`: owned service names (PROTOCOL.md §6.4 "Owned
//! names", beyond the paper). An owner key is an Ed25519 key in an identity key file (0600);
//! the names it owns are `LABEL~FINGERPRINT`; a delegation lets one provider node store
//! records for one such name on one network until a given time.

use std::path::{Path, PathBuf};
use std::time::Duration;

use themis_mesh::dht::{DELEGATION_LEN, Delegation, OwnerFingerprint, owned_name};
use themis_mesh::{IdentityKeypair, NodeId};

use crate::error::Error;
use crate::keys::{network, unix_now_ms, utc};

/// Longest delegation lifetime `themis delegate` signs: a delegation cannot be revoked before
/// it ends, so it is kept short and renewed.
pub(crate) const MAX_DELEGATION: Duration = Duration::from_secs(366 * 86_400);
/// A delegation file is a few comment lines and one line of hex: anything larger is refused
/// unread.
const MAX_FILE_LEN: u64 = 4096;

/// Parses a delegation lifetime: a whole number with a unit `s`, `m`, `h` or `d`, more than
/// zero and at most 366 days.
pub(crate) fn parse_lifetime(s: &str) -> Result<Duration, String> {
    let secs = crate::keys::parse_whole_secs(s, "30d, 12h or 90m")?;
    if secs == 0 || secs > MAX_DELEGATION.as_secs() {
        return Err(format!(
            "'{s}': a delegation lasts more than 0 and at most 366 days (renew it before it ends)"
        ));
    }
    Ok(Duration::from_secs(secs))
}

/// `themis owner new`: a new owner key file (0600; the key is wiped from memory when dropped)
/// and the owned form of a name.
pub(crate) fn new_owner(out: &Path, force: bool, label: Option<&str>) -> Result<(), Error> {
    if let Some(l) = label
        && (l.is_empty() || l.len() > themis_mesh::dht::MAX_OWNED_LABEL_LEN)
    {
        return Err(Error::Usage {
            what: "--label",
            reason: format!(
                "a label is 1 to {} bytes, got {}",
                themis_mesh::dht::MAX_OWNED_LABEL_LEN,
                l.len()
            ),
        });
    }
    let key = IdentityKeypair::generate();
    key.write_to_file(out, force).map_err(Error::Key)?;
    let fp = OwnerFingerprint::of(&key.public());
    let example = match label.and_then(|l| owned_name(l, &key.public())) {
        Some(n) => n,
        None => format!("LABEL~{fp}"),
    };
    println!("{example}");
    eprintln!(
        "wrote {} (mode 0600): the owner key of every name LABEL~{fp}. Keep it offline; give providers delegations: `themis delegate --owner-key {} --net NET --name {example} --provider NODE_ID --expires 30d --out FILE`",
        out.display(),
        out.display(),
    );
    Ok(())
}

/// `themis delegate`: the owner key signs that `provider` may provide `name` on `net` for
/// `lifetime`; written to `out` as comment lines and one line of hex.
pub(crate) fn delegate(
    owner_key: &Path,
    net: &str,
    name: &str,
    provider: &str,
    lifetime: Duration,
    out: &Path,
    force: bool,
) -> Result<(), Error> {
    let net_id = network(net)?;
    let provider: NodeId = provider.trim().parse().map_err(|e| Error::Usage {
        what: "--provider",
        reason: format!("not a node id ({e}); `themis id --key KEY --net NET` or `themis status` on the provider prints it"),
    })?;
    let key = crate::keys::load(owner_key)?;
    let not_after =
        unix_now_ms().saturating_add(u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX));
    let d =
        Delegation::sign(&key, &net_id, name, &provider, not_after).map_err(|p| Error::Usage {
            what: "--name",
            reason: format!("'{name}': {p}; `themis owner new` prints the owned form of a name"),
        })?;
    drop(key);
    let text = format!(
        "# themis delegation (PROTOCOL.md §6.4): owner {} lets provider {provider}\n# provide '{name}' on network '{net}' until {}\n{}\n",
        OwnerFingerprint::of(&d.owner()),
        utc(not_after),
        hex(&d.encode()),
    );
    write_new(out, text.as_bytes(), force)?;
    eprintln!(
        "wrote {}: on the provider's node, `themis register '{name}' --upstream URL --delegation {}` (valid until {})",
        out.display(),
        out.display(),
        utc(not_after),
    );
    Ok(())
}

/// Reads a delegation file (`themis delegate`'s): at most 4 KiB, comment lines (`#`), blank
/// lines, and exactly one line of [`DELEGATION_LEN`] bytes in hex. Returns that hex line.
pub(crate) fn read_file(path: &Path) -> Result<String, Error> {
    let bad = |reason: String| Error::Usage {
        what: "--delegation",
        reason: format!("{}: {reason}", path.display()),
    };
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() > MAX_FILE_LEN {
        return Err(bad(format!(
            "{} bytes; a delegation file is at most {MAX_FILE_LEN} (the file `themis delegate` writes)",
            meta.len()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let (Some(line), None) = (lines.next(), lines.next()) else {
        return Err(bad(
            "expected one line of hex besides comments (the file `themis delegate` writes)".into(),
        ));
    };
    match unhex(line) {
        Some(b) if Delegation::decode(&b).is_some() => Ok(line.to_ascii_lowercase()),
        _ => Err(bad(format!(
            "the delegation is {} hex digits (the file `themis delegate` writes)",
            2 * DELEGATION_LEN
        ))),
    }
}

/// Lowercase hex.
pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Hex (either case) to bytes; `None` for an odd length or a non-hex digit.
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// Writes `bytes` to a new file at `path` (refusing to replace one unless `force`).
fn write_new(path: &Path, bytes: &[u8], force: bool) -> Result<(), Error> {
    use std::io::Write as _;
    let io = |source| Error::Io {
        path: PathBuf::from(path),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delegation_file_round_trips_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("owner.key");
        new_owner(&key, false, Some("pay")).unwrap();
        assert!(
            new_owner(&key, false, None).is_err(),
            "an existing key is kept"
        );
        let owner = crate::keys::load(&key).unwrap();
        let name = owned_name("pay", &owner.public()).unwrap();
        let provider = IdentityKeypair::from_seed(&[3; 32]);
        let net = themis_mesh::NetworkId::new("t").unwrap();
        let pid = provider.node_id(&net).to_string();
        let out = dir.path().join("pay.delegation");
        delegate(
            &key,
            "t",
            &name,
            &pid,
            Duration::from_secs(3600),
            &out,
            false,
        )
        .unwrap();
        let hexline = read_file(&out).unwrap();
        let d = Delegation::decode(&unhex(&hexline).unwrap()).unwrap();
        d.check(&net, &name, &provider.node_id(&net), unix_now_ms())
            .unwrap();
        // another owner's name, an unowned name: refused with the reason
        let err = delegate(
            &key,
            "t",
            "pay",
            &pid,
            Duration::from_secs(60),
            &dir.path().join("x"),
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("not owned"), "{err}");
        let other = owned_name("pay", &IdentityKeypair::from_seed(&[9; 32]).public()).unwrap();
        let err = delegate(
            &key,
            "t",
            &other,
            &pid,
            Duration::from_secs(60),
            &dir.path().join("y"),
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("belongs to owner"), "{err}");
        for (body, what) in [
            ("# nothing\n", "one line"),
            ("abcd\n", "hex digits"),
            (&format!("{hexline}\n{hexline}\n"), "one line"),
        ] {
            let f = dir.path().join("bad");
            std::fs::write(&f, body).unwrap();
            let err = read_file(&f).unwrap_err().to_string();
            assert!(err.contains(what), "{err}");
        }
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'#'; 5000]).unwrap();
        assert!(read_file(&big).unwrap_err().to_string().contains("at most"));
    }

    #[test]
    fn lifetimes() {
        assert_eq!(
            parse_lifetime("30d").unwrap(),
            Duration::from_secs(30 * 86_400)
        );
        assert!(parse_lifetime("0s").is_err());
        assert!(parse_lifetime("367d").is_err());
        assert!(parse_lifetime("1w").is_err());
    }
}
