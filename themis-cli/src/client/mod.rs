//! The client side of the agent API: `register`, `deregister`, `discover`, `call`, `status`,
//! `members` and `check`. With `-vv`, each request to the agent is logged (method, URL, status,
//! time, the provider of a call).

use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::agent::{ApiToken, PROVIDER_HEADER};
mod cluster_view;

pub(crate) use cluster_view::{check, members};

use crate::agent::CheckDefinition;
use crate::cli::{
    ApiArgs, CallArgs, DiscoverArgs, HealthCheckArgs, NameArgs, RegisterArgs, StatusArgs,
};
use crate::error::Error;

/// How long a request to the agent may take (a call may fail over across providers).
const TIMEOUT: Duration = Duration::from_secs(60);
/// Largest request body read from a file or stdin when the agent does not say its own limit
/// (an agent older than `GET /v1/agent/self`): the agent's default.
const DEFAULT_MAX_BODY: u64 = 1 << 20;

pub(super) struct Agent {
    base: String,
    pub(super) shown: String,
    pub(super) http: reqwest::Client,
    /// The token file whose token is sent, if any (named in a 401's message).
    token_file: Option<std::path::PathBuf>,
}

/// The base URL of the agent at `api` (`HOST:PORT` or `http://HOST:PORT`); the agent speaks
/// plain HTTP (it is bound to the loopback), so `https://` is refused with that reason.
fn agent_base(api: &str) -> Result<String, Error> {
    let a = api.trim().trim_end_matches('/');
    if a.starts_with("https://") {
        return Err(Error::Usage {
            what: "agent API address",
            reason: format!(
                "'{a}': the agent API speaks plain HTTP on the loopback, not HTTPS: use http://{} or just HOST:PORT",
                a.trim_start_matches("https://")
            ),
        });
    }
    let base = if a.starts_with("http://") {
        a.to_owned()
    } else {
        format!("http://{a}")
    };
    match reqwest::Url::parse(&base) {
        Ok(u) if u.host_str().is_some() && u.path() == "/" => Ok(base),
        _ => Err(Error::Usage {
            what: "agent API address",
            reason: format!("'{a}' is not HOST:PORT or http://HOST:PORT"),
        }),
    }
}

impl Agent {
    pub(super) fn new(api: &ApiArgs) -> Result<Self, Error> {
        let base = agent_base(&api.api)?;
        let shown = base.trim_start_matches("http://").to_owned();
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(path) = &api.api_token_file {
            let token = ApiToken::read(path)?;
            let value = token.header_value().ok_or_else(|| Error::TokenFile {
                path: path.clone(),
                reason: "does not hold a valid header value".to_owned(),
            })?;
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(TIMEOUT)
            .default_headers(headers)
            .build()
            .unwrap_or_default();
        Ok(Self {
            base,
            shown,
            http,
            token_file: api.api_token_file.clone(),
        })
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends the request; a connection failure is "no agent"; an error status becomes
    /// [`Error::Agent`] with the agent's message.
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, Error> {
        let started = std::time::Instant::now();
        let req = req.build().map_err(|e| Error::Agent {
            status: 0,
            message: format!(
                "cannot build the request to the agent at {}: {e}",
                self.shown
            ),
        })?;
        let (method, url) = (req.method().clone(), req.url().to_string());
        let size = req
            .body()
            .and_then(reqwest::Body::as_bytes)
            .map(<[u8]>::len);
        tracing::debug!(%method, %url, body_bytes = ?size, "request to the agent");
        let resp = self.http.execute(req).await.map_err(|e| {
            tracing::debug!(%method, %url, error = %e, "the agent did not answer");
            if e.is_connect() || e.is_builder() {
                Error::AgentDown {
                    api: self.shown.clone(),
                }
            } else if e.is_timeout() {
                Error::Agent {
                    status: 504,
                    message: format!(
                        "the agent at {} did not answer within {TIMEOUT:?}",
                        self.shown
                    ),
                }
            } else {
                Error::Agent {
                    status: 0,
                    message: format!("talking to the agent at {}: {e}", self.shown),
                }
            }
        })?;
        let status = resp.status();
        tracing::debug!(
            %method, %url, %status,
            took_ms = started.elapsed().as_secs_f64() * 1000.0,
            provider = resp.headers().get(PROVIDER_HEADER).and_then(|v| v.to_str().ok()),
            "the agent answered"
        );
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| format!("the agent answered HTTP {status}: {text}"));
        if status == reqwest::StatusCode::UNAUTHORIZED {
            let message = match &self.token_file {
                None => format!(
                    "the agent at {} requires an API token: pass --api-token-file FILE (or set THEMIS_API_TOKEN_FILE), the file its `themis node --api-token-file` reads",
                    self.shown
                ),
                Some(p) => format!(
                    "the agent at {} refused the API token of {}: it is not the token the agent was started with ({message})",
                    self.shown,
                    p.display()
                ),
            };
            return Err(Error::Agent {
                status: status.as_u16(),
                message,
            });
        }
        Err(Error::Agent {
            status: status.as_u16(),
            message,
        })
    }

    pub(super) async fn json(&self, req: reqwest::RequestBuilder) -> Result<Value, Error> {
        let resp = self.send(req).await?;
        resp.json::<Value>().await.map_err(|e| Error::Agent {
            status: 0,
            message: format!(
                "the agent at {} sent a body that is not JSON: {e}",
                self.shown
            ),
        })
    }
}

fn path_segment(name: &str) -> String {
    // Percent-encode everything outside the unreserved set, so any service name is one
    // path segment.
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub(super) fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

pub(super) fn s(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) if s.is_empty() => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".to_owned(),
        Some(other) => other.to_string(),
    }
}

/// The health check the `--check-*` flags describe, checked as the agent checks it (a
/// contradiction is refused here, before anything is sent). `None` without check flags.
pub(crate) fn check_of(c: &HealthCheckArgs) -> Result<Option<CheckDefinition>, Error> {
    let kind = c.check_http.is_some() || c.check_tcp.is_some() || c.check_ttl.is_some();
    let usage = |reason: String| Error::Usage {
        what: "health check",
        reason,
    };
    if !kind {
        let stray = [
            ("--check-interval", c.check_interval.is_some()),
            ("--check-timeout", c.check_timeout.is_some()),
            (
                "--check-success-before-passing",
                c.check_success_before_passing.is_some(),
            ),
            (
                "--check-failures-before-critical",
                c.check_failures_before_critical.is_some(),
            ),
        ]
        .into_iter()
        .find_map(|(flag, set)| set.then_some(flag));
        return match stray {
            Some(flag) => Err(usage(format!(
                "{flag} needs a check: --check-http URL, --check-tcp HOST:PORT or --check-ttl DURATION"
            ))),
            None => Ok(None),
        };
    }
    if c.check_ttl.is_some() && (c.check_interval.is_some() || c.check_timeout.is_some()) {
        return Err(usage(
            "--check-ttl takes no --check-interval or --check-timeout: the service reports its heartbeats itself (PUT /v1/services/NAME/pass) and the TTL is how long one holds".to_owned(),
        ));
    }
    let def = CheckDefinition {
        http: c.check_http.clone(),
        tcp: c.check_tcp.clone(),
        ttl: c.check_ttl.clone(),
        interval: c.check_interval.clone(),
        timeout: c.check_timeout.clone(),
        success_before_passing: c.check_success_before_passing,
        failures_before_critical: c.check_failures_before_critical,
    };
    def.spec().map_err(usage)?;
    Ok(Some(def))
}

/// `themis register`.
pub(crate) async fn register(a: RegisterArgs) -> Result<(), Error> {
    let check = check_of(&a.check)?;
    let delegation = a
        .delegation
        .as_deref()
        .map(crate::owner::read_file)
        .transpose()?;
    let agent = Agent::new(&a.api)?;
    let mut body = json!({
        "upstream": a.upstream,
        "version": a.version,
        "weight": a.weight,
        "tags": a.tags,
        "allow": a.allow,
    });
    // Only with a check: an agent without health checks refuses the unknown field.
    if let (Some(c), Some(o)) = (&check, body.as_object_mut()) {
        o.insert("check".to_owned(), json!(c));
    }
    // Only with a delegation: an agent before owned names refuses the unknown field.
    if let (Some(d), Some(o)) = (&delegation, body.as_object_mut()) {
        o.insert("delegation".to_owned(), json!(d));
    }
    let url = agent.url(&format!("/v1/services/{}", path_segment(&a.name)));
    let v = agent.json(agent.http.put(url).json(&body)).await?;
    let stored = v.get("replicas_stored").and_then(Value::as_u64);
    let replicas = v.get("replicas").and_then(Value::as_u64);
    let checked = v.get("check").filter(|c| !c.is_null());
    if let Some(c) = checked
        && c.get("status").and_then(Value::as_str) != Some("passing")
    {
        // Held back by its check (as Consul, a check starts critical): not an error.
        println!(
            "registered '{}' -> {} (provider {}); its {} check is {}: announced once it passes ({}). Its state: GET /v1/health/service/{}",
            a.name,
            s(&v, "upstream"),
            s(&v, "provider"),
            s(c, "kind"),
            s(c, "status"),
            if c.get("kind").and_then(Value::as_str) == Some("ttl") {
                format!("PUT /v1/services/{}/pass", path_segment(&a.name))
            } else {
                s(c, "output")
            },
            path_segment(&a.name),
        );
        return Ok(());
    }
    if stored == Some(0) {
        return Err(Error::NotStored {
            service: a.name,
            replicas: s(&v, "replicas"),
        });
    }
    let callers = v.get("allow").and_then(Value::as_array).map_or(0, Vec::len);
    println!(
        "registered '{}' -> {} (stored on {} of {} replicas; provider {}; {}{})",
        a.name,
        s(&v, "upstream"),
        s(&v, "replicas_stored"),
        s(&v, "replicas"),
        s(&v, "provider"),
        if callers == 0 {
            "every node may call it".to_owned()
        } else {
            format!(
                "only {} may call it",
                plural(callers as u64, "allowed node")
            )
        },
        checked.map_or_else(String::new, |c| format!(
            "; its {} check passes",
            s(c, "kind")
        )),
    );
    if let (Some(stored), Some(replicas)) = (stored, replicas)
        && stored < replicas
    {
        eprintln!(
            "warning: '{}' is stored on only {stored} of its {replicas} replicas; the node retries the others every few seconds (`themis check` shows the ring's health)",
            a.name
        );
    }
    Ok(())
}

/// `themis deregister`.
pub(crate) async fn deregister(a: NameArgs) -> Result<(), Error> {
    let agent = Agent::new(&a.api)?;
    let url = agent.url(&format!("/v1/services/{}", path_segment(&a.name)));
    let v = agent.json(agent.http.delete(url)).await?;
    let withdrawn = v.get("replicas_withdrawn").and_then(Value::as_u64);
    let replicas = v.get("replicas").and_then(Value::as_u64);
    match (withdrawn, replicas) {
        (Some(w), Some(r)) if r > 0 && w == r => println!(
            "deregistered '{}': withdrawn from all {r} replicas (discovery no longer returns this provider)",
            a.name
        ),
        (Some(w), Some(r)) if r > 0 => {
            println!(
                "deregistered '{}': withdrawn from {w} of {r} replicas",
                a.name
            );
            eprintln!(
                "warning: the replicas that missed the withdrawal return this provider until its record expires (the node's --record-ttl)"
            );
        }
        _ => println!(
            "deregistered '{}' (no live record to withdraw: none was stored, or it expired)",
            a.name
        ),
    }
    Ok(())
}

/// `themis discover`.
pub(crate) async fn discover(a: DiscoverArgs) -> Result<(), Error> {
    let agent = Agent::new(&a.api)?;
    let url = agent.url(&format!("/v1/services/{}", path_segment(&a.name)));
    let v = agent.json(agent.http.get(url)).await?;
    if a.json {
        println!("{}", pretty(&v));
        return Ok(());
    }
    let empty = Vec::new();
    let providers = v
        .get("providers")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let replicas = v
        .get("replicas")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let found = v.get("found_on_replica").and_then(Value::as_u64);
    let mut out = std::io::stdout().lock();
    let hops = v.get("hops").and_then(Value::as_u64);
    let _ = writeln!(
        out,
        "service '{}': {}, found on replica {} in {}",
        a.name,
        plural(providers.len() as u64, "provider"),
        s(&v, "found_on_replica"),
        hops.map_or_else(|| "? hops".to_owned(), |h| plural(h, "hop")),
    );
    let _ = writeln!(out, "replicas (object id = H(name, r)):");
    for r in replicas {
        let mark = if r.get("replica").and_then(Value::as_u64) == found {
            "  <- answered"
        } else {
            ""
        };
        let _ = writeln!(out, "  r={} {}{mark}", s(r, "replica"), s(r, "object_id"));
    }
    let _ = writeln!(out, "providers:");
    for p in providers {
        let tags = p
            .get("tags")
            .and_then(Value::as_array)
            .map(|t| {
                t.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {} {} version={} weight={}{}{}",
            s(p, "node"),
            s(p, "address"),
            s(p, "version"),
            s(p, "weight"),
            if tags.is_empty() {
                String::new()
            } else {
                format!(" tags={tags}")
            },
            match p.get("succeeds").and_then(Value::as_str) {
                Some(old) => format!(" succeeds={old}"),
                None => String::new(),
            },
        );
    }
    Ok(())
}

/// `n thing` or `n things`.
pub(super) fn plural(n: u64, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// Reads a request body of at most `max` bytes (the agent's own limit).
fn read_limited(mut r: impl Read, path: &Path, max: u64) -> Result<Vec<u8>, Error> {
    let mut buf = Vec::new();
    r.by_ref()
        .take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
    if buf.len() as u64 > max {
        return Err(Error::Usage {
            what: "request body",
            reason: format!(
                "{} is larger than {max} bytes, the agent's limit (themis node --max-body)",
                path.display()
            ),
        });
    }
    Ok(buf)
}

impl Agent {
    /// The agent's body limit, from `GET /v1/agent/self` (the default for an agent that does
    /// not say).
    async fn max_body(&self) -> Result<u64, Error> {
        match self.json(self.http.get(self.url("/v1/agent/self"))).await {
            Ok(v) => Ok(v
                .get("max_body")
                .and_then(Value::as_u64)
                .unwrap_or(DEFAULT_MAX_BODY)),
            Err(e @ Error::AgentDown { .. }) => Err(e),
            Err(_) => Ok(DEFAULT_MAX_BODY),
        }
    }
}

/// `themis call`: the response body goes to stdout as it is; the provider to stderr with -v.
pub(crate) async fn call(a: CallArgs, verbose: u8) -> Result<(), Error> {
    let agent = Agent::new(&a.api)?;
    let from_stdin = a.data.is_none() && a.data_file.is_none() && !std::io::stdin().is_terminal();
    let max = if a.data_file.is_some() || from_stdin {
        agent.max_body().await?
    } else {
        DEFAULT_MAX_BODY
    };
    let body = match (&a.data, &a.data_file) {
        (Some(d), _) => d.clone().into_bytes(),
        (None, Some(p)) if p.as_os_str() == "-" => read_limited(std::io::stdin().lock(), p, max)?,
        (None, Some(p)) => {
            let f = std::fs::File::open(p).map_err(|source| Error::Io {
                path: p.clone(),
                source,
            })?;
            read_limited(f, p, max)?
        }
        (None, None) if from_stdin => read_limited(std::io::stdin().lock(), Path::new("-"), max)?,
        (None, None) => Vec::new(),
    };
    let url = agent.url(&format!("/v1/call/{}", path_segment(&a.name)));
    let resp = agent.send(agent.http.post(url).body(body)).await?;
    let provider = resp
        .headers()
        .get(PROVIDER_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_owned();
    let answer = resp.bytes().await.map_err(|e| Error::Agent {
        status: 0,
        message: format!("reading the answer from the agent at {}: {e}", agent.shown),
    })?;
    if verbose > 0 {
        eprintln!("provider: {provider}");
    }
    let mut out = std::io::stdout().lock();
    out.write_all(&answer)
        .and_then(|()| out.flush())
        .map_err(|source| Error::Io {
            path: "stdout".into(),
            source,
        })?;
    Ok(())
}

/// `themis status`.
pub(crate) async fn status(a: StatusArgs) -> Result<(), Error> {
    let agent = Agent::new(&a.api)?;
    let v = agent.json(agent.http.get(agent.url("/v1/status"))).await?;
    if a.json {
        println!("{}", pretty(&v));
        return Ok(());
    }
    let peer = |p: &Value| format!("{}@{}", s(p, "id"), s(p, "address"));
    let pred = v
        .get("predecessor")
        .filter(|p| !p.is_null())
        .map_or_else(|| "-".to_owned(), peer);
    let succ: Vec<String> = v
        .get("successors")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(peer).collect())
        .unwrap_or_default();
    let services: Vec<&str> = v
        .get("services")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "node          {}", s(&v, "id"));
    let _ = writeln!(
        out,
        "network       {} ({})",
        s(&v, "network"),
        s(&v, "mode")
    );
    let _ = writeln!(out, "contact       {}", s(&v, "contact"));
    let _ = writeln!(out, "state         {}", s(&v, "state"));
    let _ = writeln!(out, "predecessor   {pred}");
    let _ = writeln!(
        out,
        "successors    {}",
        if succ.is_empty() {
            "-".to_owned()
        } else {
            succ.join("\n              ")
        }
    );
    let _ = writeln!(out, "fingers       {}", s(&v, "fingers"));
    let _ = writeln!(out, "sessions      {}", s(&v, "sessions"));
    let _ = writeln!(out, "stored        {} records", s(&v, "stored_records"));
    let _ = writeln!(
        out,
        "services      {}",
        if services.is_empty() {
            "-".to_owned()
        } else {
            services.join(", ")
        }
    );
    let _ = writeln!(out, "replicas      {}", s(&v, "replicas"));
    let _ = writeln!(out, "uptime        {} s", s(&v, "uptime_secs"));
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_address_is_plain_http() {
        assert_eq!(
            agent_base("127.0.0.1:7070").unwrap(),
            "http://127.0.0.1:7070"
        );
        assert_eq!(
            agent_base("http://localhost:7070/").unwrap(),
            "http://localhost:7070"
        );
        let e = agent_base("https://127.0.0.1:48073")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("plain HTTP") && e.contains("http://127.0.0.1:48073"),
            "{e}"
        );
        assert!(agent_base("http://x:1/path").is_err());
    }

    #[test]
    fn counts_agree_with_their_nouns() {
        assert_eq!(plural(1, "hop"), "1 hop");
        assert_eq!(plural(0, "hop"), "0 hops");
        assert_eq!(plural(3, "provider"), "3 providers");
    }

    fn check_flags(args: &[&str]) -> Result<Option<CheckDefinition>, String> {
        use clap::Parser;
        let mut all = vec![
            "themis",
            "register",
            "svc",
            "--upstream",
            "http://127.0.0.1:1/",
        ];
        all.extend_from_slice(args);
        let cli = crate::cli::Cli::try_parse_from(all).map_err(|e| e.to_string())?;
        match cli.command {
            crate::cli::Command::Register(a) => check_of(&a.check).map_err(|e| e.to_string()),
            _ => Err("not register".into()),
        }
    }

    #[test]
    fn check_flags_make_one_check_and_contradictions_are_refused() {
        assert_eq!(check_flags(&[]).unwrap(), None);
        let c = check_flags(&[
            "--check-http",
            "http://127.0.0.1:8080/health",
            "--check-interval",
            "2s",
            "--check-timeout",
            "500ms",
            "--check-failures-before-critical",
            "3",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.http.as_deref(), Some("http://127.0.0.1:8080/health"));
        assert_eq!(
            (
                c.interval.as_deref(),
                c.timeout.as_deref(),
                c.failures_before_critical
            ),
            (Some("2s"), Some("500ms"), Some(3))
        );
        let c = check_flags(&["--check-ttl", "30s", "--check-success-before-passing", "2"])
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.ttl.as_deref(), c.success_before_passing),
            (Some("30s"), Some(2))
        );
        assert!(
            check_flags(&["--check-tcp", "127.0.0.1:5432"])
                .unwrap()
                .is_some()
        );
        for (args, needle) in [
            (
                &["--check-http", "http://a:1/", "--check-tcp", "a:1"][..],
                "cannot be used with",
            ),
            (
                &["--check-tcp", "a:1", "--check-ttl", "5s"][..],
                "cannot be used with",
            ),
            (
                &["--check-http", "http://a:1/", "--check-ttl", "5s"][..],
                "cannot be used with",
            ),
            (
                &["--check-interval", "5s"][..],
                "--check-interval needs a check",
            ),
            (
                &["--check-failures-before-critical", "2"][..],
                "needs a check",
            ),
            (
                &["--check-ttl", "5s", "--check-interval", "1s"][..],
                "takes no --check-interval",
            ),
            (
                &["--check-ttl", "5s", "--check-timeout", "1s"][..],
                "takes no --check-interval",
            ),
            (
                &[
                    "--check-http",
                    "http://a:1/",
                    "--check-interval",
                    "1s",
                    "--check-timeout",
                    "2s",
                ][..],
                "below its interval",
            ),
            (
                &["--check-tcp", "a:1", "--check-interval", "10"][..],
                "not a duration",
            ),
            (&["--check-tcp", "nope"][..], "not HOST:PORT"),
            (
                &["--check-ttl", "5s", "--check-success-before-passing", "0"][..],
                "1 to 100",
            ),
        ] {
            let e = check_flags(args).unwrap_err();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }

    #[test]
    fn names_become_one_path_segment() {
        assert_eq!(path_segment("check"), "check");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(path_segment("é"), "%C3%A9");
    }
}
