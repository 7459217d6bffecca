//! The transparent HTTP sidecar (issue 12 item 6), with real `themis node` processes: a request
//! to `/v1/call/{name}/{path…}` on one node's agent reaches the upstream of the provider on
//! another node with its method, raw path, query, headers (hop-by-hop ones removed,
//! `x-themis-caller` added) and body, and the upstream's status, headers and body come back; a
//! mesh error is told apart by `x-themis-error`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use themis_testkit::process::{Proc, run_until_ok, spawn_fast_node, text};
use themis_testkit::{eventually_ok, within};

const BIN: &str = env!("CARGO_BIN_EXE_themis");

async fn spawn_node(dir: &Path, name: &str, extra: &[&str]) -> Proc {
    spawn_fast_node(BIN, dir, name, "themis-test", extra).await
}

/// `/status/{code}` answers `code` with headers `x-up`, `x-multi` twice, a hop-by-hop
/// `x-secret` (named in `Connection`) and the body `body-{code}` (none for 204 and 304; a
/// `location` for 301). Any other path echoes the request as JSON: method, raw target,
/// header lines in order, body.
async fn upstream() -> String {
    let app = Router::new().fallback(|req: Request| async move {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        let target = parts.uri.path_and_query().unwrap().as_str().to_owned();
        if let Some(code) = target.strip_prefix("/base/status/") {
            let code: u16 = code.parse().unwrap();
            let empty = code == 204 || code == 304;
            let mut resp = Response::new(if empty {
                Body::empty()
            } else {
                Body::from(format!("body-{code}"))
            });
            *resp.status_mut() = StatusCode::from_u16(code).unwrap();
            let h = resp.headers_mut();
            h.insert("x-up", HeaderValue::from(code));
            h.append("x-multi", HeaderValue::from_static("a"));
            h.append("x-multi", HeaderValue::from_static("b"));
            h.insert("connection", HeaderValue::from_static("x-secret"));
            h.insert("x-secret", HeaderValue::from_static("hop"));
            if code == 301 {
                h.insert("location", HeaderValue::from_static("/elsewhere"));
            }
            return resp;
        }
        let headers: Vec<Value> = parts
            .headers
            .iter()
            .map(|(k, v)| json!([k.as_str(), v.to_str().unwrap_or("?")]))
            .collect();
        let v = json!({
            "method": parts.method.as_str(),
            "target": target,
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
        });
        Response::new(Body::from(v.to_string()))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/base/")
}

/// The header lines named `name` in an echo.
fn echoed(v: &Value, name: &str) -> Vec<String> {
    v["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l[0] == name)
        .map(|l| l[1].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_keeps_method_path_query_headers_and_status() {
    within(180, "sidecar table", async {
        let dir = tempfile::tempdir().unwrap();
        // The provider on a current-thread runtime (`--threads 1`, as sidecars run in the
        // bench), the caller on the default multi-thread one.
        let provider = spawn_node(dir.path(), "n0", &["--threads", "1"]).await;
        let contact = provider.get("contact").to_owned();
        let caller = spawn_node(dir.path(), "n1", &["--bootstrap", &contact]).await;
        let up = upstream().await;
        let out = run_until_ok(
            BIN,
            &[
                "register",
                "web",
                "--upstream",
                &up,
                "--api",
                &provider.api(),
            ],
            20,
            |e| e.contains("stored on 0 of"),
        )
        .await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let base = format!("http://{}/v1/call/web", caller.api());
        let me: Value = http
            .get(format!("http://{}/v1/status", caller.api()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let caller_id = me["id"].as_str().unwrap().to_owned();
        // Wait until the caller discovers the provider (a young ring).
        eventually_ok(30, "the sidecar reaches the upstream", || async {
            let r = http
                .get(format!("{base}/ping"))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if r.status() == 200 {
                Ok(())
            } else {
                Err(format!("{} {:?}", r.status(), r.text().await))
            }
        })
        .await;

        // Methods, raw paths and queries, repeated and hop-by-hop headers, bodies.
        let methods = [
            (Method::GET, ""),
            (Method::POST, "posted"),
            (Method::PUT, "put"),
            (Method::PATCH, "patched"),
            (Method::DELETE, ""),
            (Method::OPTIONS, ""),
        ];
        for (method, body) in methods {
            let target = "/a%20b/%E2%82%AC/c?x=1&y=%2F&timeout_ms=5";
            let r = http
                .request(method.clone(), format!("{base}{target}"))
                .header("x-rep", "1")
                .header("x-rep", "2")
                .header("connection", "x-hop")
                .header("x-hop", "gone")
                .header("keep-alive", "timeout=5")
                .header("te", "trailers")
                .header("x-themis-caller", "forged")
                .header("authorization", "Bearer upstream-token")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{method}");
            assert!(r.headers().contains_key("x-themis-provider"));
            assert!(!r.headers().contains_key("x-themis-error"));
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["method"], method.as_str());
            assert_eq!(v["target"], format!("/base{target}"), "{method}");
            assert_eq!(v["body"], body, "{method}");
            assert_eq!(echoed(&v, "x-rep"), ["1", "2"], "{method}");
            for gone in ["x-hop", "keep-alive", "te", "connection"] {
                assert!(
                    echoed(&v, gone).is_empty() || gone == "connection",
                    "{method}: {gone} forwarded: {v}"
                );
            }
            assert_eq!(echoed(&v, "x-themis-caller"), [caller_id.as_str()]);
            assert_eq!(echoed(&v, "x-themis-hops"), ["1"]);
            assert_eq!(echoed(&v, "authorization"), ["Bearer upstream-token"]);
        }

        // The upstream's statuses, headers and bodies come back as they are.
        for code in [200u16, 201, 204, 301, 401, 404, 500, 503] {
            let r = http
                .get(format!("{base}/status/{code}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), code);
            let h = r.headers().clone();
            assert!(!h.contains_key("x-themis-error"), "{code}");
            assert!(h.contains_key("x-themis-provider"), "{code}");
            assert_eq!(h["x-up"], code.to_string().as_str());
            let multi: Vec<_> = h.get_all("x-multi").iter().collect();
            assert_eq!(multi, ["a", "b"], "{code}");
            assert!(
                !h.contains_key("x-secret"),
                "{code}: a hop-by-hop header came back"
            );
            if code == 301 {
                assert_eq!(h["location"], "/elsewhere");
            }
            let body = r.bytes().await.unwrap();
            let want = if code == 204 {
                Bytes::new()
            } else {
                Bytes::from(format!("body-{code}"))
            };
            assert_eq!(body, want, "{code}");
        }

        // HEAD: the status and headers, the length of the body it would have, no body.
        let r = http
            .head(format!("{base}/status/200"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-up"], "200");
        assert_eq!(r.headers()["content-length"], "8");
        assert!(r.bytes().await.unwrap().is_empty());

        // A mesh error is the mesh's: x-themis-error and the JSON error. (In a ring this young
        // the search for the missing name can fail outright, 503, before it finds no provider.)
        let missing = format!("http://{}/v1/call/nothing-here/x?y=1", caller.api());
        eventually_ok(30, "the missing service is reported as such", || async {
            let r = http.get(&missing).send().await.map_err(|e| e.to_string())?;
            match r.status().as_u16() {
                404 => Ok(()),
                s => Err(format!("{s}: {}", r.text().await.unwrap_or_default())),
            }
        })
        .await;
        let r = http.get(&missing).send().await.unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(r.headers()["x-themis-error"], "no-provider");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().contains("nothing-here"), "{v}");

        // The old route is unchanged: POST /v1/call/web sends the body to the upstream URL.
        let r = http.post(&base).body("plain").send().await.unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            (v["method"].as_str(), v["target"].as_str()),
            (Some("POST"), Some("/base/"))
        );
        assert_eq!(v["body"], "plain");
    })
    .await;
}
