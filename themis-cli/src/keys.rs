//! `themis keygen` and `themis id`, and loading the key of a node.

use std::path::Path;
use std::sync::Arc;

use themis_mesh::{IdentityKeypair, NetworkId};

use crate::error::Error;

/// Parses a network name (1-64 bytes of UTF-8, no control characters, no surrounding blanks).
pub(crate) fn network(name: &str) -> Result<NetworkId, Error> {
    NetworkId::new(name).map_err(|e| Error::Network(e.to_string()))
}

/// The library says what is wrong with a key file; the command says which flag changes it.
fn key_error(e: themis_crypto::Error) -> Error {
    use themis_crypto::KeyFileProblem as P;
    let hint = match &e {
        themis_crypto::Error::KeyFile { problem, .. } => match problem {
            P::Missing => " (create one with `themis keygen --out FILE`)",
            P::AlreadyExists => " (pass --force to replace the key)",
            _ => "",
        },
        _ => "",
    };
    Error::Key(format!("{e}{hint}"))
}

/// Reads an identity key file (mode 0600, written by `themis keygen`).
pub(crate) fn load(path: &Path) -> Result<Arc<IdentityKeypair>, Error> {
    IdentityKeypair::read_from_file(path)
        .map(Arc::new)
        .map_err(key_error)
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
    key.write_to_file(out, force).map_err(key_error)?;
    println!("{}", key.public());
    eprintln!(
        "wrote {} (mode 0600); node id on a network: `themis id --key {} --net NAME`",
        out.display(),
        out.display()
    );
    Ok(())
}

/// `themis id`: prints the node id of a key on a network (`H(public key, network)`, paper §4).
pub(crate) fn id(key: &Path, net: &str) -> Result<(), Error> {
    let net = network(net)?;
    let key = load(key)?;
    println!("{}", key.node_id(&net));
    Ok(())
}

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
    fn bad_network_names_are_refused_with_the_rule() {
        for bad in ["", " x", "a\nb", &"n".repeat(65)] {
            let e = network(bad).unwrap_err().to_string();
            assert!(e.contains("network id"), "{e}");
        }
        assert!(network("twiitr").is_ok());
    }
}
