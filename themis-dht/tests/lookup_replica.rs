//! `DhtNode::lookup_replica`: the provider records of one replica of a name, no fallback to the
//! others (the mesh's replica search plans the fallback itself). Over the in-memory network in
//! virtual time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use themis_channel::Mode;
use themis_dht::{Error, ServiceSpec};
use themis_testkit::dht::{Kind, mem_network, ring};
use themis_testkit::within;

#[tokio::test(start_paused = true)]
async fn each_replica_answers_with_its_own_record() {
    within(600, "each_replica_answers_with_its_own_record", async {
        let nodes = ring(&Kind::Mem(mem_network(31)), Mode::Secure, 8, 31).await;
        let provider = &nodes[3];
        let r = provider
            .register(ServiceSpec::new("svc"), Some(2))
            .await
            .unwrap();
        assert_eq!((r.stored, r.failed), (3, 0));
        let reader = &nodes[6];
        for replica in 0..=2u8 {
            let p = reader.lookup_replica("svc", replica).await.unwrap();
            assert_eq!(p.replica, replica);
            assert_eq!(p.records.len(), 1, "replica {replica}");
            assert_eq!(p.records[0].provider(), provider.id());
        }
        // A replica nobody stored is an answer without records, not a fallback to another.
        let p = reader.lookup_replica("svc", 5).await.unwrap();
        assert_eq!(p.replica, 5);
        assert!(p.records.is_empty());
        // Beyond the network's maximum k, the lookup is refused.
        let e = reader.lookup_replica("svc", u8::MAX).await.unwrap_err();
        assert!(matches!(e, Error::ReplicationTooHigh { .. }), "{e}");
        for n in &nodes {
            n.shutdown().await;
        }
    })
    .await;
}
