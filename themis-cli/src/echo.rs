//! `themis echo`: a small HTTP upstream for smoke tests of a deployment (the compose file's
//! upstream, a first service to register by hand). Every `POST` (any path) is answered `200`
//! with `NAME: BODY`; `GET` answers `NAME ok`. Bodies are limited to 1 MiB.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::get;
use clap::Args;

use crate::error::Error;

/// Largest body accepted.
const MAX_BODY: usize = 16 << 20;

/// `themis echo`.
#[derive(Debug, Args)]
pub(crate) struct EchoArgs {
    /// The address to listen on (HTTP).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub(crate) listen: String,
    /// The name the answers start with.
    #[arg(long, default_value = "echo")]
    pub(crate) name: String,
}

async fn post(State(name): State<Arc<str>>, body: axum::body::Bytes) -> Vec<u8> {
    let mut out = format!("{name}: ").into_bytes();
    out.extend_from_slice(&body);
    out
}

async fn get_ok(State(name): State<Arc<str>>) -> String {
    format!("{name} ok\n")
}

/// Serves until Ctrl-C / SIGTERM.
pub(crate) async fn run(a: EchoArgs) -> Result<(), Error> {
    let addr = crate::cli::bind_addr("--listen address", &a.listen).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Listen {
            detail: format!("cannot listen on {addr} for `themis echo`: {e}"),
        })?;
    let local = listener.local_addr().map_err(|e| Error::Listen {
        detail: format!("the echo socket has no address: {e}"),
    })?;
    let name: Arc<str> = Arc::from(a.name.as_str());
    let app = Router::new()
        .fallback(axum::routing::post(post).get(get_ok))
        .route("/", get(get_ok).post(post))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(name);
    println!("ready echo=http://{local}/ name={}", a.name);
    axum::serve(listener, app)
        .with_graceful_shutdown(crate::node::shutdown_signal())
        .await
        .map_err(|e| Error::Listen {
            detail: format!("the echo server stopped: {e}"),
        })
}
