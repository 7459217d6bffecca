//! Provide a service and call it from Rust: two mesh nodes on loopback TCP, one providing
//! `hello`, the other calling it through the mesh (discovery in the DHT, a secure channel,
//! the provider's answer).
//!
//!     cargo run -p themis-mesh --example provide_and_call

use std::sync::Arc;

use themis_mesh::{Bytes, IdentityKeypair, MeshConfig, MeshNode, NetworkId, NodeId, ServiceSpec};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let net = NetworkId::new("example")?;
    let any_port: std::net::SocketAddr = "127.0.0.1:0".parse()?;
    let start = |bootstrap: Vec<themis_mesh::Contact>| {
        let mut config = MeshConfig::fast(any_port);
        config.bootstrap = bootstrap;
        MeshNode::start(net.clone(), Arc::new(IdentityKeypair::generate()), config)
    };
    let provider = start(vec![]).await?;
    let caller = start(vec![provider.contact()]).await?;

    // The handler gets the caller's id, authenticated by the secure channel, and the body.
    provider
        .register(
            "hello",
            ServiceSpec::new("1.0", 100),
            |caller: NodeId, body: Bytes| async move {
                Ok::<_, String>(Bytes::from(format!(
                    "hello {} from {}",
                    String::from_utf8_lossy(&body),
                    caller.short()
                )))
            },
        )
        .await?;

    // A fresh ring settles in a few stabilization rounds: retry while discovery finds nothing.
    let mut answer = caller.call("hello", Bytes::from_static(b"world")).await;
    for _ in 0..50 {
        if answer.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        answer = caller.call("hello", Bytes::from_static(b"world")).await;
    }
    println!("{}", String::from_utf8_lossy(&answer?));

    caller.shutdown().await;
    provider.shutdown().await;
    Ok(())
}
