//! `themis node --data-dir DIR`: what a node keeps across restarts.
//!
//! | file | what | written |
//! |---|---|---|
//! | `node.key` | the identity key (mode 0600), unless `--key` names another: the node id stays the same across restarts, so the peers that remember it still know it | once, at the first start |
//! | `services.json` | the definitions of the services provided through the agent (the registration bodies, `check` and all) | at every registration and deregistration |
//! | `peers.json` | the ring members this node knew (its neighbours and the lowest ids of the ring), with the network they belong to | every 30 s and at shutdown |
//!
//! Files are replaced atomically (written beside, synced, renamed), so a crash leaves the old
//! or the new content, never half of one. The directory is created with mode 0700.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use themis_mesh::dht::Peer;
use themis_mesh::{IdentityKeypair, NodeId};

use crate::agent::ServiceDefinition;
use crate::error::Error;

/// The format version of the JSON files.
const FORMAT: u32 = 1;
/// Most peers remembered.
pub(crate) const MAX_PEERS: usize = 64;

/// A node's data directory.
#[derive(Debug, Clone)]
pub(crate) struct DataDir {
    path: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServicesFile {
    format: u32,
    services: Vec<ServiceDefinition>,
}

/// A remembered ring member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RememberedPeer {
    /// Its node id (hex).
    pub(crate) id: NodeId,
    /// The address it listened on.
    pub(crate) addr: std::net::SocketAddr,
}

impl From<Peer> for RememberedPeer {
    fn from(p: Peer) -> Self {
        Self {
            id: p.id,
            addr: p.addr,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeersFile {
    format: u32,
    network: String,
    peers: Vec<RememberedPeer>,
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_owned(),
        source,
    }
}

impl DataDir {
    /// Opens (creating it, mode 0700) the data directory at `path`.
    pub(crate) fn open(path: &Path) -> Result<Self, Error> {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|e| io(path, e))?;
        let probe = path.join(".write-test");
        std::fs::write(&probe, b"").map_err(|e| io(path, e))?;
        let _ = std::fs::remove_file(&probe);
        Ok(Self {
            path: path.to_owned(),
        })
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Where the node's key lives when `--key` is not given.
    pub(crate) fn key_path(&self) -> PathBuf {
        self.path.join("node.key")
    }

    /// The node's key: read from `node.key`, or created there (mode 0600) at the first start.
    pub(crate) fn load_or_create_key(&self) -> Result<Arc<IdentityKeypair>, Error> {
        let path = self.key_path();
        if path.exists() {
            return crate::keys::load(&path);
        }
        let key = IdentityKeypair::generate();
        key.write_to_file(&path, false).map_err(Error::Key)?;
        tracing::info!(key = %path.display(), "created this node's identity key in the data directory");
        Ok(Arc::new(key))
    }

    /// Replaces `name` with `bytes`: written beside, synced, renamed.
    fn replace(&self, name: &str, bytes: &[u8]) -> Result<(), Error> {
        let path = self.path.join(name);
        let tmp = self.path.join(format!(".{name}.tmp"));
        let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))
    }

    /// Reads `name` as JSON of `T`; a missing file is `None`.
    fn read<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<Option<T>, Error> {
        let path = self.path.join(name);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path, e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::DataDir {
                path,
                reason: format!("{e}; move the file away to start afresh"),
            })
    }

    /// Saves the service definitions.
    pub(crate) fn save_services(&self, services: &[ServiceDefinition]) -> Result<(), Error> {
        let file = ServicesFile {
            format: FORMAT,
            services: services.to_vec(),
        };
        let bytes = serde_json::to_vec_pretty(&file).unwrap_or_default();
        self.replace("services.json", &bytes)
    }

    /// The saved service definitions (none if there is no file).
    pub(crate) fn load_services(&self) -> Result<Vec<ServiceDefinition>, Error> {
        let file: Option<ServicesFile> = self.read("services.json")?;
        Ok(file.map(|f| f.services).unwrap_or_default())
    }

    /// Saves the remembered peers of `network` (at most [`MAX_PEERS`]).
    pub(crate) fn save_peers(&self, network: &str, peers: &[RememberedPeer]) -> Result<(), Error> {
        let file = PeersFile {
            format: FORMAT,
            network: network.to_owned(),
            peers: peers.iter().take(MAX_PEERS).copied().collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).unwrap_or_default();
        self.replace("peers.json", &bytes)
    }

    /// The remembered peers of `network` (none if there is no file, or it is another
    /// network's: a node restarted on another network starts afresh).
    pub(crate) fn load_peers(&self, network: &str) -> Result<Vec<RememberedPeer>, Error> {
        let Some(file): Option<PeersFile> = self.read("peers.json")? else {
            return Ok(Vec::new());
        };
        if file.network != network {
            tracing::warn!(
                remembered = %file.network, network,
                "the data directory remembers peers of another network; ignoring them"
            );
            return Ok(Vec::new());
        }
        Ok(file.peers.into_iter().take(MAX_PEERS).collect())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn services_peers_and_key_survive_a_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(&tmp.path().join("d")).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path()).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o700);
        let key = dir.load_or_create_key().unwrap();
        let def = ServiceDefinition {
            name: Some("hello".into()),
            upstream: "http://127.0.0.1:8080/".into(),
            version: Some("1.0".into()),
            weight: None,
            tags: vec!["a".into()],
            allow: vec!["07".repeat(32)],
            check: Some(crate::agent::CheckDefinition {
                ttl: Some("30s".into()),
                ..Default::default()
            }),
            delegation: Some("ab".repeat(104)),
        };
        dir.save_services(std::slice::from_ref(&def)).unwrap();
        let peer = RememberedPeer {
            id: NodeId::from_bytes([7; 32]),
            addr: "127.0.0.1:7001".parse().unwrap(),
        };
        dir.save_peers("demo", &[peer]).unwrap();

        let again = DataDir::open(dir.path()).unwrap();
        assert_eq!(again.load_or_create_key().unwrap().public(), key.public());
        assert_eq!(again.load_services().unwrap(), vec![def]);
        assert_eq!(again.load_peers("demo").unwrap(), vec![peer]);
        assert!(again.load_peers("other").unwrap().is_empty());
    }

    #[test]
    fn a_damaged_file_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path()).unwrap();
        assert!(dir.load_services().unwrap().is_empty());
        std::fs::write(tmp.path().join("services.json"), "{not json").unwrap();
        let e = dir.load_services().unwrap_err().to_string();
        assert!(
            e.contains("services.json") && e.contains("move the file away"),
            "{e}"
        );
    }
}
