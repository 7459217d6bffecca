//! Who plays which part: identities drawn from the seed before any node starts, and the roles
//! given so that the crash of the failure phase leaves a replica of `check` alive.

use std::sync::Arc;

use themis_crypto::Transcript;
use themis_mesh::{IdentityKeypair, MeshNode, NetworkId, NodeId, object_id};
use zeroize::Zeroizing;

use super::K;
use super::stats::ring_successor;

/// The nodes' roles, as indices into the node list.
#[derive(Debug, Clone, Copy)]
pub(super) struct Roles {
    pub(super) stable: usize,
    pub(super) canary: usize,
    pub(super) handler: usize,
    pub(super) client: usize,
    /// The node responsible for replica 0 of `check`: crashed in the failure phase.
    pub(super) owner0: usize,
}

/// The nodes playing the roles.
pub(super) struct Cast {
    pub(super) stable: MeshNode,
    pub(super) canary: MeshNode,
    pub(super) handler: MeshNode,
    pub(super) client: MeshNode,
    pub(super) owner0: MeshNode,
}

/// Identities and roles, fixed before any node starts.
pub(super) struct Plan {
    pub(super) keys: Vec<Arc<IdentityKeypair>>,
    pub(super) ids: Vec<NodeId>,
    pub(super) roles: Roles,
}

/// Draws `n` identities from `seed` and gives the roles: the node responsible for replica 0 of
/// `check` plays no role (it is crashed), the stable provider is responsible for no replica of
/// `check` (so that a live replica remains after both crashes). Redraws the identities in the
/// rare case where one node is responsible for every replica.
pub(super) fn plan(network: &NetworkId, n: usize, seed: u64) -> Option<Plan> {
    for epoch in 0u32..64 {
        let keys: Vec<Arc<IdentityKeypair>> = (0..n)
            .map(|i| {
                let s = Zeroizing::new(Transcript::digest(
                    "themis/demo/identity",
                    &[
                        &seed.to_be_bytes(),
                        &epoch.to_be_bytes(),
                        &(i as u64).to_be_bytes(),
                    ],
                ));
                Arc::new(IdentityKeypair::from_seed(&s))
            })
            .collect();
        let ids: Vec<NodeId> = keys.iter().map(|k| k.node_id(network)).collect();
        let owners: Vec<NodeId> = (0..=K)
            .filter_map(|r| ring_successor(&ids, &object_id("check", r)))
            .collect();
        let owner0_id = *owners.first()?;
        if owners.iter().all(|o| *o == owner0_id) {
            continue;
        }
        let owner0 = ids.iter().position(|id| *id == owner0_id)?;
        let mut cands: Vec<usize> = (0..n)
            .filter(|&i| ids.get(i).is_some_and(|id| !owners.contains(id)))
            .collect();
        let rest: Vec<usize> = (0..n)
            .filter(|&i| i != owner0 && !cands.contains(&i))
            .collect();
        cands.extend(rest);
        if let [stable, canary, handler, client, ..] = cands[..] {
            return Some(Plan {
                keys,
                ids,
                roles: Roles {
                    stable,
                    canary,
                    handler,
                    client,
                    owner0,
                },
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn roles_are_distinct_and_leave_a_replica_alive() {
        let net = NetworkId::new("twiitr").unwrap();
        for (n, seed) in [(5, 1), (5, 2), (6, 7), (12, 2022), (32, 2022), (32, 9)] {
            let p = plan(&net, n, seed).unwrap();
            let r = p.roles;
            let all = [r.stable, r.canary, r.handler, r.client, r.owner0];
            for (i, a) in all.iter().enumerate() {
                assert!(*a < n);
                assert!(!all[i + 1..].contains(a), "roles overlap: {all:?}");
            }
            let owners: Vec<NodeId> = (0..=K)
                .map(|k| ring_successor(&p.ids, &object_id("check", k)).unwrap())
                .collect();
            assert_eq!(owners[0], p.ids[r.owner0]);
            assert!(!owners.contains(&p.ids[r.stable]));
            assert!(owners.iter().any(|o| *o != p.ids[r.owner0]));
            // Same seed, same identities.
            assert_eq!(plan(&net, n, seed).unwrap().ids, p.ids);
        }
    }
}
