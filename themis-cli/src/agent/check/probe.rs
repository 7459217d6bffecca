//! One HTTP or TCP probe, bounded by its timeout; the HTTP answer's body is read up to
//! [`MAX_OUTPUT`] bytes and the rest is never read (the connection is dropped).

use std::time::Duration;

use super::spec::Probe;
use super::state::{MAX_OUTPUT, cut};

/// The client of the HTTP checks: no proxy (checked services are local) and no redirects (a
/// 3xx is not 2xx: it fails, as the answer of the URL the check names).
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

/// Runs `probe` once within `timeout`: whether it passed, and what it found.
pub(crate) async fn run(
    http: &reqwest::Client,
    probe: &Probe,
    timeout: Duration,
) -> (bool, String) {
    let result = match probe {
        Probe::Http(url) => tokio::time::timeout(timeout, get(http, url)).await,
        Probe::Tcp(addr) => tokio::time::timeout(timeout, connect(addr)).await,
    };
    match result {
        Ok(r) => r,
        Err(_) => (
            false,
            format!("no answer within the check's timeout of {timeout:?}"),
        ),
    }
}

async fn get(http: &reqwest::Client, url: &reqwest::Url) -> (bool, String) {
    let mut resp = match http.get(url.clone()).send().await {
        Ok(r) => r,
        Err(e) => return (false, format!("GET {url}: {}", error_chain(&e))),
    };
    let status = resp.status();
    let mut body = Vec::new();
    while body.len() < MAX_OUTPUT {
        match resp.chunk().await {
            Ok(Some(c)) => {
                let room = MAX_OUTPUT.saturating_sub(body.len());
                body.extend_from_slice(c.get(..room.min(c.len())).unwrap_or_default());
            }
            Ok(None) => break,
            Err(e) => {
                return (
                    false,
                    format!("GET {url}: HTTP {status}, then the body failed: {e}"),
                );
            }
        }
    }
    let text = String::from_utf8_lossy(&body);
    let out = format!("HTTP GET {url}: {status}: {}", text.trim());
    (status.is_success(), cut(&out, MAX_OUTPUT).to_owned())
}

async fn connect(addr: &str) -> (bool, String) {
    match tokio::net::TcpStream::connect(addr).await {
        Ok(_) => (true, format!("TCP connect {addr}: success")),
        Err(e) => (false, format!("TCP connect {addr}: {e}")),
    }
}

/// `e` and its sources (reqwest's own message hides the cause, such as "connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::get as route_get;

    async fn serve(app: Router) -> std::net::SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        addr
    }

    #[tokio::test]
    async fn http_2xx_passes_anything_else_fails_and_bodies_are_capped() {
        let app = Router::new()
            .route("/ok", route_get(|| async { "fine" }))
            .route(
                "/bad",
                route_get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "down") }),
            )
            .route(
                "/moved",
                route_get(|| async { (StatusCode::FOUND, [("location", "/ok")]) }),
            )
            .route("/big", route_get(|| async { "x".repeat(10 * MAX_OUTPUT) }))
            .route(
                "/slow",
                route_get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            );
        let addr = serve(app).await;
        let c = client();
        let t = Duration::from_secs(2);
        let at = |p: &str| Probe::Http(format!("http://{addr}{p}").parse().unwrap());
        let (ok, out) = run(&c, &at("/ok"), t).await;
        assert!(ok && out.contains("200 OK: fine"), "{out}");
        let (ok, out) = run(&c, &at("/bad"), t).await;
        assert!(!ok && out.contains("503") && out.contains("down"), "{out}");
        let (ok, out) = run(&c, &at("/moved"), t).await;
        assert!(!ok && out.contains("302"), "{out}");
        let (ok, out) = run(&c, &at("/big"), t).await;
        assert!(ok && out.len() <= MAX_OUTPUT, "{}", out.len());
        let (ok, out) = run(&c, &at("/slow"), Duration::from_millis(100)).await;
        assert!(!ok && out.contains("timeout"), "{out}");
    }

    #[tokio::test]
    async fn tcp_passes_on_a_completed_connect() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = l.local_addr().unwrap().to_string();
        let c = client();
        let (ok, out) = run(&c, &Probe::Tcp(open), Duration::from_secs(2)).await;
        assert!(ok, "{out}");
        drop(l);
        let closed = themis_testkit::process::free_port();
        let (ok, out) = run(
            &c,
            &Probe::Tcp(format!("127.0.0.1:{closed}")),
            Duration::from_secs(2),
        )
        .await;
        assert!(!ok && out.contains("refused"), "{out}");
        let (ok, out) = run(
            &c,
            &Probe::Http(format!("http://127.0.0.1:{closed}/").parse().unwrap()),
            Duration::from_secs(2),
        )
        .await;
        assert!(!ok && out.contains("refused"), "{out}");
    }
}
