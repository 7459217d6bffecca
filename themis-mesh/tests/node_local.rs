#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! A provider calling its own service: the endpoint cannot send to itself, so the call runs
//! locally through the same checks (regression: it failed with "refusing to send a request to
//! this node itself").

use std::sync::{Arc, Mutex};
use std::time::Duration;

use themis_mesh::{
    Bytes, CallContext, CallOptions, Error, HandlerError, MAX_HOPS, MeshConfig, MeshNode, NodeId,
    RemoteErrorKind, ServiceHandler, ServiceSpec,
};
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

/// A handler that records the context it was given, then takes `delay`.
struct Slow {
    delay: Duration,
    seen: Arc<Mutex<Vec<CallContext>>>,
}

#[async_trait::async_trait]
impl ServiceHandler for Slow {
    async fn call(&self, _caller: NodeId, _request: Bytes) -> Result<Bytes, String> {
        Err("serve is the entry point".into())
    }

    async fn serve(&self, context: CallContext, _request: Bytes) -> Result<Bytes, HandlerError> {
        self.seen.lock().unwrap().push(context);
        tokio::time::sleep(self.delay).await;
        Ok(Bytes::from_static(b"late"))
    }
}

#[tokio::test]
async fn the_callers_deadline_travels_and_ends_the_call() {
    within(30, "the deadline test", async {
        let node = MeshNode::start(
            network(),
            identity(2),
            MeshConfig::fast("127.0.0.1:0".parse().unwrap()),
        )
        .await
        .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let slow = Slow {
            delay: Duration::from_secs(20),
            seen: seen.clone(),
        };
        node.register("slow", ServiceSpec::default(), slow)
            .await
            .unwrap();
        let t = std::time::Instant::now();
        let options = CallOptions::default()
            .timeout(Duration::from_millis(300))
            .hops(2);
        let e = node
            .call_with("slow", Bytes::new(), options)
            .await
            .unwrap_err();
        // Ended by the caller's deadline or by the provider's cut at the budget it was sent,
        // both at 300 ms; the provider's own limit (handler_timeout) is 10 s.
        assert!(
            matches!(
                &e,
                Error::DeadlineExceeded { .. }
                    | Error::Remote {
                        kind: RemoteErrorKind::Timeout,
                        ..
                    }
            ),
            "{e}"
        );
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        let ctx = seen.lock().unwrap()[0];
        assert_eq!(ctx.hops, 2);
        let budget = ctx.budget.unwrap();
        assert!(
            budget <= Duration::from_millis(300) && budget > Duration::ZERO,
            "{budget:?}"
        );
        // Past the hop bound, refused before anything is sent.
        let e = node
            .call_with(
                "slow",
                Bytes::new(),
                CallOptions::default().hops(MAX_HOPS + 1),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::HopLimit {
                    hops: 9,
                    limit: 8,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(seen.lock().unwrap().len(), 1);
        node.shutdown().await;
    })
    .await;
}
