#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! A provider calling its own service: the endpoint cannot send to itself, so the call runs
//! locally through the same checks (regression: it failed with "refusing to send a request to
//! this node itself").

use themis_mesh::{Bytes, Error, MeshConfig, MeshNode, NodeId, ServiceSpec};
use themis_testkit::{identity, network, within};

#[tokio::test]
async fn a_node_calls_the_service_it_provides() {
    within(30, "the self-call test", async {
        let node = MeshNode::start(
            network(),
            identity(1),
            MeshConfig::fast("127.0.0.1:0".parse().unwrap()),
        )
        .await
        .unwrap();
        let me = node.id();
        node.register(
            "echo",
            ServiceSpec::default(),
            move |caller: NodeId, body: Bytes| async move {
                assert_eq!(caller, me);
                Ok::<_, String>(Bytes::from([b"echo:".as_slice(), &body].concat()))
            },
        )
        .await
        .unwrap();
        let (answer, provider) = node
            .call_traced("echo", Bytes::from_static(b"hi"))
            .await
            .unwrap();
        assert_eq!(&answer[..], b"echo:hi");
        assert_eq!(provider, me);
        // The access policy applies to the node's own calls too.
        node.restrict("echo", [NodeId::from_bytes([7; 32])])
            .unwrap();
        let e = node.call("echo", Bytes::new()).await.unwrap_err();
        assert!(matches!(e, Error::AccessDenied { .. }), "{e}");
        node.shutdown().await;
    })
    .await;
}
