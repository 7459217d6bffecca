//! Closed networks (PROTOCOL.md §2.10): `themis admission keygen` and `themis admission issue`,
//! and what `themis node --admission-key --admission-cert` loads and checks before it starts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use themis_crypto::{AdmissionCert, PublicKey};
use themis_handshake::{Admission, WallClock};
use themis_mesh::{IdentityKeypair, NetworkId, NodeId};

use crate::error::Error;
use crate::keys::{unix_now_ms, utc};

/// Longest validity `themis admission issue` gives a certificate: about ten years.
const MAX_VALIDITY: Duration = Duration::from_secs(3650 * 86_400);
/// A node whose certificate has less than this left says so at start (7 days).
const RENEW_WARNING_MS: u64 = 7 * 86_400_000;
/// Default validity of a certificate.
pub(crate) const DEFAULT_VALIDITY: &str = "90d";

/// The network `name`, closed under `admission_key` (hex) when one is given.
pub(crate) fn network(name: &str, admission_key: Option<&str>) -> Result<NetworkId, Error> {
    let open = crate::keys::network(name)?;
    match admission_key {
        None => Ok(open),
        Some(hex) => Ok(open.closed(parse_key(hex)?)),
    }
}

fn parse_key(hex: &str) -> Result<PublicKey, Error> {
    hex.parse::<PublicKey>().map_err(|e| Error::Usage {
        what: "--admission-key",
        reason: format!(
            "{e}; give the admission public key that `themis admission keygen` printed"
        ),
    })
}

/// Parses a validity: a whole number with a unit `s`, `m`, `h` or `d` (or none: seconds), more
/// than zero and at most 3650 days.
pub(crate) fn parse_validity(s: &str) -> Result<Duration, String> {
    let d = Duration::from_secs(crate::keys::parse_whole_secs(s, "90d, 36h or 3600s")?);
    if d.is_zero() || d > MAX_VALIDITY {
        return Err(format!(
            "'{s}': a validity is more than 0 and at most 3650d"
        ));
    }
    Ok(d)
}

/// `themis admission keygen`: a new admission key file (0600, the identity key file format) and
/// its public key on stdout.
pub(crate) fn keygen(out: &Path, force: bool) -> Result<(), Error> {
    let key = IdentityKeypair::generate();
    key.write_to_file(out, force).map_err(Error::Key)?;
    println!("{}", key.public());
    eprintln!(
        "wrote {} (mode 0600): the admission key of a closed network; keep it offline. Nodes run with `--admission-key {}` and a certificate from `themis admission issue`",
        out.display(),
        key.public()
    );
    Ok(())
}

/// `themis admission issue`: a certificate for `node_id` on the closed network `net`, signed
/// with the admission key in `key_file`, valid for `validity`, written to `out` (0644).
pub(crate) fn issue(
    key_file: &Path,
    net: &str,
    node_id: &str,
    validity: Duration,
    out: &Path,
    force: bool,
) -> Result<(), Error> {
    let subject: NodeId = node_id.parse().map_err(|e| Error::Usage {
        what: "--node-id",
        reason: format!(
            "{e}; give the node's id on the closed network (`themis id --key NODE.key --net NAME --admission-key KEY`)"
        ),
    })?;
    let not_after = unix_now_ms().saturating_add(u64::try_from(validity.as_millis()).unwrap_or(0));
    let (cert, network) = {
        // The admission key lives only in this block: its secret is zeroized on drop.
        let key = IdentityKeypair::read_from_file(key_file).map_err(Error::Key)?;
        let network = crate::keys::network(net)?.closed(key.public());
        let cert = AdmissionCert::issue(&key, &network, subject, not_after).map_err(Error::Key)?;
        (cert, network)
    };
    cert.write_to_file(out, &network, force)
        .map_err(Error::Key)?;
    println!("node    {subject}");
    println!("network {}", network.describe());
    println!("valid   until {} (unix ms {not_after})", utc(not_after));
    eprintln!(
        "wrote {}: run the node with --admission-key {} --admission-cert {}",
        out.display(),
        cert.admission_key(),
        out.display()
    );
    Ok(())
}

/// What a node of a closed network runs with: its certificate, checked now against its own id.
/// A missing, unreadable, foreign or expired certificate refuses the start.
pub(crate) fn load(
    network: &NetworkId,
    cert_file: Option<&PathBuf>,
    identity: &IdentityKeypair,
) -> Result<Option<Admission>, Error> {
    let Some(_) = network.admission_key() else {
        if cert_file.is_some() {
            return Err(Error::Usage {
                what: "--admission-cert",
                reason: "given without --admission-key: the network is open and needs no certificate; pass the network's admission key too".into(),
            });
        }
        return Ok(None);
    };
    let Some(path) = cert_file else {
        return Err(Error::Usage {
            what: "--admission-cert",
            reason: format!(
                "missing: network {} is closed, and this node ({}) needs a certificate for its id from the admission key's holder (`themis admission issue --node-id {}`)",
                network.describe(),
                identity.node_id(network),
                identity.node_id(network)
            ),
        });
    };
    let certificate = AdmissionCert::read_from_file(path).map_err(Error::Key)?;
    let now = unix_now_ms();
    certificate
        .verify(network, &identity.node_id(network), now)
        .map_err(|problem| {
            Error::Key(themis_crypto::Error::Admission {
                path: Some(path.clone()),
                problem,
            })
        })?;
    tracing::info!(
        network = %network.describe(),
        until = %utc(certificate.not_after_ms()),
        "closed network: presenting the admission certificate"
    );
    let left = certificate.not_after_ms().saturating_sub(now);
    if left < RENEW_WARNING_MS {
        tracing::warn!(
            file = %path.display(),
            until = %utc(certificate.not_after_ms()),
            hours_left = left / 3_600_000,
            "the admission certificate expires soon: peers refuse this node from then on; ask the admission key's holder for a new one (`themis admission issue`) and restart with it"
        );
    }
    Ok(Some(Admission {
        certificate,
        clock: WallClock::system(),
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keygen_issue_load() {
        let dir = tempfile::tempdir().unwrap();
        let ak = dir.path().join("ak.key");
        keygen(&ak, false).unwrap();
        let ak_pub = IdentityKeypair::read_from_file(&ak).unwrap().public();
        let node = IdentityKeypair::generate();
        let net = network("twiitr", Some(&ak_pub.to_string())).unwrap();
        let cert = dir.path().join("node.cert");
        let id = node.node_id(&net).to_string();
        issue(&ak, "twiitr", &id, Duration::from_secs(3600), &cert, false).unwrap();
        let a = load(&net, Some(&cert), &node).unwrap().unwrap();
        assert_eq!(a.certificate.subject(), node.node_id(&net));
        // Another node's certificate, no certificate, a certificate on an open network.
        let other = IdentityKeypair::generate();
        let e = load(&net, Some(&cert), &other).unwrap_err().to_string();
        assert!(
            e.contains("node.cert") && e.contains("admits another node"),
            "{e}"
        );
        let e = load(&net, None, &node).unwrap_err().to_string();
        assert!(e.contains("is closed") && e.contains(&id), "{e}");
        let open = network("twiitr", None).unwrap();
        assert!(load(&open, Some(&cert), &node).is_err());
        assert!(load(&open, None, &node).unwrap().is_none());
        // An existing certificate is not overwritten without --force.
        assert!(issue(&ak, "twiitr", &id, Duration::from_secs(1), &cert, false).is_err());
    }

    #[test]
    fn an_expired_certificate_refuses_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let ak = IdentityKeypair::generate();
        let net = network("twiitr", Some(&ak.public().to_string())).unwrap();
        let node = IdentityKeypair::generate();
        let cert = dir.path().join("old.cert");
        AdmissionCert::issue(&ak, &net, node.node_id(&net), unix_now_ms() - 1)
            .unwrap()
            .write_to_file(&cert, &net, false)
            .unwrap();
        let e = load(&net, Some(&cert), &node).unwrap_err().to_string();
        assert!(e.contains("expired") && e.contains("old.cert"), "{e}");
    }

    #[test]
    fn validities_and_keys() {
        assert_eq!(
            parse_validity("90d").unwrap(),
            Duration::from_secs(90 * 86_400)
        );
        assert_eq!(parse_validity("2h").unwrap(), Duration::from_secs(7200));
        for bad in ["0", "3651d", "x", "1w", ""] {
            assert!(parse_validity(bad).is_err(), "{bad}");
        }
        let e = network("twiitr", Some("abc")).unwrap_err().to_string();
        assert!(e.contains("admission"), "{e}");
    }
}
