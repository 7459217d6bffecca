#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! Key rotation without a CA (PROTOCOL.md §2.9, §7.7), on real TCP endpoints: a caller that
//! rotated its key is let in by an allow-list naming its old id while its statement is in
//! force, and not after; a node dialed by its old id proves it is the successor.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use themis_mesh::crypto::Succession;
use themis_mesh::{Bytes, Contact, Error, IdentityKeypair, MeshConfig, MeshNode, ServiceSpec};
use themis_testkit::{eventually_ok, network, within};

fn unix_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn config() -> MeshConfig {
    MeshConfig::fast("127.0.0.1:0".parse().unwrap())
}

#[tokio::test]
async fn an_allow_list_naming_the_old_id_lets_the_successor_in_until_the_grace_period_ends() {
    within(60, "the rotation test", async {
        let net = network();
        let provider =
            MeshNode::start(net.clone(), Arc::new(IdentityKeypair::generate()), config())
                .await
                .unwrap();
        let old = IdentityKeypair::generate();
        let new = Arc::new(IdentityKeypair::generate());
        let stranger = Arc::new(IdentityKeypair::generate());
        provider
            .register("s", ServiceSpec::default(), |_, b: Bytes| async move {
                Ok::<_, String>(b)
            })
            .await
            .unwrap();
        provider.restrict("s", [old.node_id(&net)]).unwrap();

        let now = unix_ms();
        let statement = Succession::sign(&old, &new, &net, now, now + 8_000).unwrap();
        let mut c = config();
        c.bootstrap = vec![provider.contact()];
        c.succession = Some(statement.clone());
        let caller = MeshNode::start(net.clone(), new.clone(), c).await.unwrap();
        assert_eq!(caller.succession(), Some(&statement));
        eventually_ok(20, "the successor's call answered", || {
            let caller = caller.clone();
            async move {
                match caller.call("s", Bytes::from_static(b"hi")).await {
                    Ok(b) if &b[..] == b"hi" => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            }
        })
        .await;

        // The statement travels in the caller's provider records: discovery maps old -> new.
        caller
            .register("c", ServiceSpec::default(), |_, b: Bytes| async move {
                Ok::<_, String>(b)
            })
            .await
            .unwrap();
        let old_id = old.node_id(&net);
        eventually_ok(
            20,
            "discovery shows the old id the provider succeeds",
            || {
                let provider = provider.clone();
                async move {
                    match provider.discover("c").await {
                        Ok(r) if r.len() == 1 && r[0].succeeds == Some(old_id) => Ok(()),
                        other => Err(format!("{other:?}")),
                    }
                }
            },
        )
        .await;

        // A node without a statement is refused as before.
        let mut c = config();
        c.bootstrap = vec![provider.contact()];
        let other = MeshNode::start(net.clone(), stranger, c).await.unwrap();
        eventually_ok(20, "a stranger refused", || {
            let other = other.clone();
            async move {
                match other.call("s", Bytes::new()).await {
                    Err(Error::AccessDenied { .. }) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            }
        })
        .await;

        // The provider dialed by the caller's old id: it answers with its new id, and proves it.
        let dialed = Contact {
            addr: caller.contact().addr,
            id: Some(caller.id()),
        };
        let s = provider
            .verify_successor(old.node_id(&net), dialed)
            .await
            .unwrap();
        assert_eq!(s.new_id(), caller.id());
        let e = provider
            .verify_successor(other.id(), dialed)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::NotASuccessor { .. }), "{e}");
        let e = other
            .verify_successor(old.node_id(&net), provider.contact())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::NotASuccessor { .. }), "{e}");

        // After the grace period: refused.
        eventually_ok(20, "the successor refused after the grace period", || {
            let caller = caller.clone();
            async move {
                match caller.call("s", Bytes::new()).await {
                    Err(Error::AccessDenied { .. }) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            }
        })
        .await;
        assert!(
            provider
                .verify_successor(old.node_id(&net), dialed)
                .await
                .is_err()
        );
        for n in [caller, other, provider] {
            n.shutdown().await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_statement_of_another_key_or_network_is_refused_at_start() {
    let net = network();
    let (old, new) = (IdentityKeypair::generate(), IdentityKeypair::generate());
    let now = unix_ms();
    let s = Succession::sign(&old, &new, &net, now, now + 60_000).unwrap();
    let mut c = config();
    c.succession = Some(s);
    let e = MeshNode::start(
        net.clone(),
        Arc::new(IdentityKeypair::generate()),
        c.clone(),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("successor key"), "{e}");
    let other = themis_mesh::NetworkId::new("another").unwrap();
    let e = MeshNode::start(other, Arc::new(new), c).await.unwrap_err();
    assert!(e.to_string().contains("not for"), "{e}");
}
