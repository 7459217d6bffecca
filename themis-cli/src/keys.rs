//! `themis keygen`, `themis id` and `themis key rotate`, and loading the key of a node and the
//! key succession statement it presents.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use themis_crypto::{MAX_GRACE_MS, Succession, SuccessionProblem};
use themis_mesh::{IdentityKeypair, NetworkId};

use crate::error::Error;

/// Parses a network name (1-64 bytes of UTF-8, no control characters, no surrounding blanks).
pub(crate) fn network(name: &str) -> Result<NetworkId, Error> {
    NetworkId::new(name).map_err(Error::Network)
}

/// Reads an identity key file (mode 0600, written by `themis keygen`).
pub(crate) fn load(path: &Path) -> Result<Arc<IdentityKeypair>, Error> {
    IdentityKeypair::read_from_file(path)
        .map(Arc::new)
        .map_err(Error::Key)
}

/// The key of a node: read from `path`, or a fresh one for this run only.
pub(crate) fn load_or_generate(path: Option<&Path>) -> Result<Arc<IdentityKeypair>, Error> {
    match path {
        Some(p) => load(p),
        None => {
            tracing::warn!(
                "no --key given: using a fresh identity for this run only (create a lasting one with `themis keygen --out FILE`)"
            );
            Ok(Arc::new(IdentityKeypair::generate()))
        }
    }
}

/// `themis keygen`: writes a new key file (0600, refusing to overwrite without `force`) and
/// prints the public key.
pub(crate) fn keygen(out: &Path, force: bool) -> Result<(), Error> {
    let key = IdentityKeypair::generate();
    key.write_to_file(out, force).map_err(Error::Key)?;
    println!("{}", key.public());
    eprintln!(
        "wrote {} (mode 0600); node id on a network: `themis id --key {} --net NAME`",
        out.display(),
        out.display()
    );
    Ok(())
}

/// `themis id`: prints the node id of a key on a network (`H(public key, network)`, paper §4).
/// On a closed network, `admission_key` is its admission public key (PROTOCOL.md §2.10).
pub(crate) fn id(key: &Path, net: &str, admission_key: Option<&str>) -> Result<(), Error> {
    let net = crate::admission::network(net, admission_key)?;
    let key = load(key)?;
    println!("{}", key.node_id(&net));
    Ok(())
}

/// Seconds in `s`: a whole number with a unit `s`, `m`, `h` or `d` (or none: seconds), as the
/// durations of the key, admission and delegation commands are written; `example` names a few
/// in the error. Bounds are the caller's.
pub(crate) fn parse_whole_secs(s: &str, example: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a duration such as {example}"))?;
    let unit_secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("'{s}': the unit is one of s, m, h, d")),
    };
    Ok(n.saturating_mul(unit_secs))
}

/// Default grace period of `themis key rotate`.
pub(crate) const DEFAULT_GRACE: &str = "7d";

/// Parses a grace period: a whole number with a unit `s`, `m`, `h` or `d` (or none: seconds),
/// more than zero and at most 90 days (PROTOCOL.md §2.9).
pub(crate) fn parse_grace(s: &str) -> Result<Duration, String> {
    let secs = parse_whole_secs(s, "7d, 36h, 90m or 3600s")?;
    if secs == 0 || secs.saturating_mul(1000) > MAX_GRACE_MS {
        return Err(format!(
            "'{s}': a grace period is more than 0 and at most 90 days"
        ));
    }
    Ok(Duration::from_secs(secs))
}

/// The statement file of a key file: `KEY.succession` beside it.
pub(crate) fn succession_path(key: &Path) -> PathBuf {
    let mut name = key
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".succession");
    key.with_file_name(name)
}

/// This host's wall clock in Unix milliseconds.
pub(crate) fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A Unix time in milliseconds as `YYYY-MM-DDTHH:MM:SSZ` (UTC; the proleptic Gregorian
/// calendar, H. Hinnant's `civil_from_days`).
pub(crate) fn utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `themis key rotate`: a new key, and the statement by which the old key names it its
/// successor on `net` for `grace` (PROTOCOL.md §2.9). Writes the new key file (0600) at `out`
/// and the statement beside it (`OUT.succession`); the old key file is left as it is, and the
/// old key's secret is wiped from memory as soon as it has signed.
pub(crate) fn rotate(
    key: &Path,
    out: &Path,
    net: &str,
    grace: Duration,
    force: bool,
) -> Result<(), Error> {
    let network = network(net)?;
    let same =
        key == out || matches!((key.canonicalize(), out.canonicalize()), (Ok(a), Ok(b)) if a == b);
    if same {
        return Err(Error::Usage {
            what: "key rotate --out",
            reason: format!(
                "{} is the old key file itself; write the new key to another file (the old one may be removed once the node runs with the new key)",
                out.display()
            ),
        });
    }
    let statement_path = succession_path(out);
    let new = IdentityKeypair::generate();
    let now = unix_now_ms();
    let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
    let statement = {
        // The old key lives only in this block: its secret is zeroized when it is dropped.
        let old = IdentityKeypair::read_from_file(key).map_err(Error::Key)?;
        Succession::sign(&old, &new, &network, now, now.saturating_add(grace_ms))
            .map_err(Error::Key)?
    };
    new.write_to_file(out, force).map_err(Error::Key)?;
    if let Err(e) = statement.write_to_file(&statement_path, force) {
        // A new key without its statement would only be a new identity: take it back.
        let _ = std::fs::remove_file(out);
        return Err(Error::Key(e));
    }
    println!("old id  {}", statement.old_id());
    println!("new id  {}", statement.new_id());
    println!("network {network}");
    println!(
        "grace   until {} ({}; unix ms {})",
        utc(statement.grace_end_ms()),
        humane(grace),
        statement.grace_end_ms()
    );
    eprintln!(
        "wrote {} (mode 0600) and {} (the statement, signed by both keys)",
        out.display(),
        statement_path.display()
    );
    eprintln!(
        "next: restart the node with --key {}; it presents the statement beside it, and until the grace period ends peers, allow-lists and bootstrap lists that name the old id accept the new one. Replace the old id with the new one where it is named before then.",
        out.display()
    );
    Ok(())
}

/// `7d`, `36h`, `90m`, `45s`.
fn humane(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The statement a node presents: `explicit` (`--succession FILE`), else `KEY.succession`
/// beside its key file when there is one. It must be for `network` and name `key` as the
/// successor; an explicit statement must also be in force (an expired one is refused); one
/// found beside the key whose grace period has ended is ignored, with a note in the log (the
/// node runs on with its own id).
pub(crate) fn load_succession(
    explicit: Option<&Path>,
    key_file: Option<&Path>,
    key: &IdentityKeypair,
    network: &NetworkId,
) -> Result<Option<Succession>, Error> {
    let (path, found_beside) = match (explicit, key_file) {
        (Some(p), _) => (p.to_path_buf(), false),
        (None, Some(k)) => {
            let p = succession_path(k);
            if p.symlink_metadata().is_err() {
                return Ok(None);
            }
            (p, true)
        }
        (None, None) => return Ok(None),
    };
    let named = |e: themis_crypto::Error| match e {
        themis_crypto::Error::Succession { problem, .. } => {
            Error::Key(themis_crypto::Error::Succession {
                path: Some(path.clone()),
                problem,
            })
        }
        other => Error::Key(other),
    };
    let s = Succession::read_from_file(&path, network).map_err(Error::Key)?;
    s.check_successor_key(&key.public()).map_err(named)?;
    match s.check_in_force(unix_now_ms(), MAX_CLOCK_SKEW_MS) {
        Ok(()) => {
            tracing::info!(old = %s.old_id(), until = %utc(s.grace_end_ms()), file = %path.display(), "presenting a key succession statement: the old id's peers accept this node until then");
            Ok(Some(s))
        }
        Err(themis_crypto::Error::Succession {
            problem: SuccessionProblem::Expired { .. },
            ..
        }) if found_beside => {
            tracing::info!(file = %path.display(), ended = %utc(s.grace_end_ms()), "the key succession statement beside the key file has expired; not presenting it (remove the file)");
            Ok(None)
        }
        Err(e) => Err(named(e)),
    }
}

/// The clock skew a statement's issue time is allowed (PROTOCOL.md §2.9).
const MAX_CLOCK_SKEW_MS: u64 = 60_000;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keygen_then_load_gives_the_same_identity_and_refuses_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        keygen(&path, false).unwrap();
        let a = load(&path).unwrap();
        assert!(
            keygen(&path, false)
                .unwrap_err()
                .to_string()
                .contains("--force")
        );
        let b = load(&path).unwrap();
        assert_eq!(a.public(), b.public());
        keygen(&path, true).unwrap();
        assert_ne!(load(&path).unwrap().public(), a.public());
    }

    #[test]
    fn grace_periods_and_dates() {
        assert_eq!(parse_grace("7d").unwrap(), Duration::from_secs(7 * 86_400));
        assert_eq!(parse_grace("36h").unwrap(), Duration::from_secs(36 * 3600));
        assert_eq!(parse_grace("90m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_grace("45").unwrap(), Duration::from_secs(45));
        for bad in ["0", "0d", "91d", "x", "7w", "", "-1d"] {
            assert!(parse_grace(bad).is_err(), "{bad}");
        }
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_800_000_000_000), "2027-01-15T08:00:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(humane(Duration::from_secs(7 * 86_400)), "7d");
    }

    #[test]
    fn rotate_writes_a_key_and_its_statement_and_refuses_mistakes() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (dir.path().join("old.key"), dir.path().join("new.key"));
        keygen(&old, false).unwrap();
        let net = network("twiitr").unwrap();
        rotate(&old, &new, "twiitr", Duration::from_secs(60), false).unwrap();
        let old_key = load(&old).unwrap();
        let new_key = load(&new).unwrap();
        let s = load_succession(None, Some(&new), &new_key, &net)
            .unwrap()
            .unwrap();
        assert_eq!(s.old_id(), old_key.node_id(&net));
        assert_eq!(s.new_id(), new_key.node_id(&net));
        // the same path, an existing output, another key, another network
        assert!(rotate(&old, &old, "twiitr", Duration::from_secs(60), false).is_err());
        let e = rotate(&old, &new, "twiitr", Duration::from_secs(60), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("already exists"), "{e}");
        let e = load_succession(Some(&succession_path(&new)), None, &old_key, &net)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("successor key") && e.contains("new.key.succession"),
            "{e}"
        );
        let e = load_succession(
            Some(&succession_path(&new)),
            None,
            &new_key,
            &network("other").unwrap(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("'twiitr'") && e.contains("'other'"), "{e}");
        // No statement beside a key: none presented.
        assert!(
            load_succession(None, Some(&old), &old_key, &net)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn an_expired_statement_is_refused_when_given_and_ignored_beside_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("new.key");
        let net = network("twiitr").unwrap();
        let (old, new) = (IdentityKeypair::generate(), IdentityKeypair::generate());
        new.write_to_file(&key_path, false).unwrap();
        let now = unix_now_ms();
        Succession::sign(&old, &new, &net, now - 10_000, now - 1)
            .unwrap()
            .write_to_file(&succession_path(&key_path), false)
            .unwrap();
        let e = load_succession(Some(&succession_path(&key_path)), None, &new, &net)
            .unwrap_err()
            .to_string();
        assert!(e.contains("expired"), "{e}");
        assert!(
            load_succession(None, Some(&key_path), &new, &net)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn bad_network_names_are_refused_with_the_rule() {
        for bad in ["", " x", "a\nb", &"n".repeat(65)] {
            let e = network(bad).unwrap_err().to_string();
            assert!(e.contains("network id"), "{e}");
        }
        assert!(network("twiitr").is_ok());
    }
}
