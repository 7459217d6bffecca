//! What a registration says about its health check: the `check` table of a service definition
//! (JSON body, configuration file, data directory) and the `themis register --check-*` flags,
//! checked into a [`CheckSpec`] with every contradiction and limit refused by name.
//!
//! ```toml
//! check = { http = "http://127.0.0.1:8080/health", interval = "10s", timeout = "2s" }
//! check = { tcp = "127.0.0.1:5432", interval = "5s", failures_before_critical = 3 }
//! check = { ttl = "30s" }  # heartbeats: PUT /v1/services/{name}/pass (or /fail)
//! ```

use std::time::Duration;

use super::state::Thresholds;

/// Default time between two HTTP or TCP checks.
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Longest default timeout of a check (otherwise half the interval).
pub(crate) const MAX_DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Shortest interval or TTL: checks are cheap, but not free.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Longest interval or TTL.
pub(crate) const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Shortest timeout.
pub(crate) const MIN_TIMEOUT: Duration = Duration::from_millis(10);
/// Largest threshold.
pub(crate) const MAX_THRESHOLD: u32 = 100;
/// Longest HTTP URL or TCP address.
const MAX_TARGET: usize = 2048;

/// The `check` of a service definition, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckDefinition {
    /// An HTTP check: `GET` this URL; a 2xx answer within the timeout passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) http: Option<String>,
    /// A TCP check: connect to this `HOST:PORT`; a completed connect within the timeout passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tcp: Option<String>,
    /// A TTL check: the service reports heartbeats; none within this time fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ttl: Option<String>,
    /// Time between two HTTP or TCP checks (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) interval: Option<String>,
    /// How long one HTTP or TCP check may take (default half the interval, at most 5s; must be
    /// below the interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) timeout: Option<String>,
    /// Passes in a row before a critical check turns passing (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) success_before_passing: Option<u32>,
    /// Failures in a row before a passing check turns critical (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) failures_before_critical: Option<u32>,
}

/// What a check probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Probe {
    /// `GET` the URL.
    Http(reqwest::Url),
    /// Connect to `HOST:PORT`.
    Tcp(String),
}

/// A checked check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CheckKind {
    /// The agent probes every `interval`, each probe bounded by `timeout` (< `interval`).
    Probe {
        probe: Probe,
        interval: Duration,
        timeout: Duration,
    },
    /// The service reports heartbeats; none within `ttl` is a failure.
    Ttl(Duration),
}

/// A check, checked: its kind and thresholds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckSpec {
    pub(crate) kind: CheckKind,
    pub(crate) thresholds: Thresholds,
}

impl CheckKind {
    /// `http`, `tcp` or `ttl`.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Probe {
                probe: Probe::Http(_),
                ..
            } => "http",
            Self::Probe {
                probe: Probe::Tcp(_),
                ..
            } => "tcp",
            Self::Ttl(_) => "ttl",
        }
    }
}

/// Parses a duration written with its unit: `250ms`, `10s`, `5m`, `1h` (a whole number).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let bad = || {
        format!(
            "'{s}' is not a duration: write a whole number with its unit, such as 500ms, 10s, 5m or 1h"
        )
    };
    let n: u64 = n.parse().map_err(|_| bad())?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs).ok_or_else(bad),
        "h" => n.checked_mul(3600).map(Duration::from_secs).ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// `d` written back as [`parse_duration`] reads it.
pub(crate) fn show_duration(d: Duration) -> String {
    if d.subsec_millis() != 0 || d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}

fn in_range(what: &str, d: Duration, min: Duration, max: Duration) -> Result<Duration, String> {
    if d < min || d > max {
        return Err(format!(
            "the check's {what} of {} is out of range: {} to {}",
            show_duration(d),
            show_duration(min),
            show_duration(max)
        ));
    }
    Ok(d)
}

impl CheckDefinition {
    /// Checks the definition: exactly one of `http`, `tcp`, `ttl`; `interval` and `timeout`
    /// only with `http` or `tcp`, the timeout below the interval; thresholds 1 to 100.
    pub(crate) fn spec(&self) -> Result<CheckSpec, String> {
        let kinds: Vec<&str> = [
            ("http", self.http.is_some()),
            ("tcp", self.tcp.is_some()),
            ("ttl", self.ttl.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect();
        if kinds.len() != 1 {
            return Err(format!(
                "a check is exactly one of http (URL), tcp (HOST:PORT) or ttl (duration); got {}",
                if kinds.is_empty() {
                    "none".to_owned()
                } else {
                    kinds.join(" and ")
                }
            ));
        }
        let threshold = |what: &str, v: Option<u32>| match v {
            None => Ok(1),
            Some(n) if (1..=MAX_THRESHOLD).contains(&n) => Ok(n),
            Some(n) => Err(format!(
                "the check's {what} is 1 to {MAX_THRESHOLD}, got {n}"
            )),
        };
        let thresholds = Thresholds {
            successes_before_passing: threshold(
                "success_before_passing",
                self.success_before_passing,
            )?,
            failures_before_critical: threshold(
                "failures_before_critical",
                self.failures_before_critical,
            )?,
        };
        if let Some(ttl) = &self.ttl {
            if self.interval.is_some() || self.timeout.is_some() {
                return Err("a TTL check has no interval or timeout: the service reports its heartbeats itself (PUT /v1/services/NAME/pass) and the TTL is how long one holds".to_owned());
            }
            let ttl = in_range("ttl", parse_duration(ttl)?, MIN_INTERVAL, MAX_INTERVAL)?;
            return Ok(CheckSpec {
                kind: CheckKind::Ttl(ttl),
                thresholds,
            });
        }
        let interval = match &self.interval {
            Some(i) => in_range("interval", parse_duration(i)?, MIN_INTERVAL, MAX_INTERVAL)?,
            None => DEFAULT_INTERVAL,
        };
        let timeout = match &self.timeout {
            Some(t) => parse_duration(t)?,
            None => (interval / 2).min(MAX_DEFAULT_TIMEOUT),
        };
        if timeout >= interval || timeout < MIN_TIMEOUT {
            return Err(format!(
                "the check's timeout ({}) must be at least {} and below its interval ({}): a check must end before the next one starts",
                show_duration(timeout),
                show_duration(MIN_TIMEOUT),
                show_duration(interval)
            ));
        }
        let probe = match (&self.http, &self.tcp) {
            (Some(url), _) => Probe::Http(parse_http(url)?),
            (_, Some(addr)) => Probe::Tcp(parse_tcp(addr)?),
            _ => return Err("a check needs http, tcp or ttl".to_owned()),
        };
        Ok(CheckSpec {
            kind: CheckKind::Probe {
                probe,
                interval,
                timeout,
            },
            thresholds,
        })
    }
}

fn parse_http(url: &str) -> Result<reqwest::Url, String> {
    let shown: String = url.chars().take(80).collect();
    if url.len() > MAX_TARGET {
        return Err(format!(
            "the check's URL is at most {MAX_TARGET} bytes, got {}",
            url.len()
        ));
    }
    match reqwest::Url::parse(url.trim()) {
        Ok(u) if u.scheme() == "http" && u.host_str().is_some() => Ok(u),
        Ok(u) if u.scheme() == "https" => Err(format!(
            "the check's URL '{shown}' is HTTPS: the agent checks plain HTTP services (its upstreams are local), use http://"
        )),
        Ok(_) => Err(format!(
            "the check's URL '{shown}' is not http://HOST:PORT/PATH"
        )),
        Err(e) => Err(format!("the check's URL '{shown}' does not parse: {e}")),
    }
}

fn parse_tcp(addr: &str) -> Result<String, String> {
    let a = addr.trim();
    let shown: String = a.chars().take(80).collect();
    if a.len() > MAX_TARGET {
        return Err(format!(
            "the check's TCP address is at most {MAX_TARGET} bytes, got {}",
            a.len()
        ));
    }
    match a.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(a.to_owned())
        }
        _ => Err(format!(
            "the check's TCP address '{shown}' is not HOST:PORT (such as 127.0.0.1:5432)"
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn def(json: &str) -> CheckDefinition {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn durations_need_their_unit() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        for bad in ["10", "s", "1.5s", "-1s", "10 s", "1d", ""] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("500ms, 10s"), "{bad}: {e}");
        }
    }

    #[test]
    fn checks_and_their_defaults() {
        let s = def(r#"{"http": "http://127.0.0.1:8080/health"}"#)
            .spec()
            .unwrap();
        assert_eq!(s.kind.name(), "http");
        assert_eq!(s.thresholds, Thresholds::default());
        match s.kind {
            CheckKind::Probe {
                interval, timeout, ..
            } => assert_eq!((interval, timeout), (DEFAULT_INTERVAL, MAX_DEFAULT_TIMEOUT)),
            CheckKind::Ttl(_) => panic!("not a TTL check"),
        }
        let s =
            def(r#"{"tcp": "localhost:5432", "interval": "200ms", "failures_before_critical": 3}"#)
                .spec()
                .unwrap();
        assert_eq!(
            s.kind,
            CheckKind::Probe {
                probe: Probe::Tcp("localhost:5432".into()),
                interval: Duration::from_millis(200),
                timeout: Duration::from_millis(100),
            }
        );
        assert_eq!(s.thresholds.failures_before_critical, 3);
        let s = def(r#"{"ttl": "30s", "success_before_passing": 2}"#)
            .spec()
            .unwrap();
        assert_eq!(s.kind, CheckKind::Ttl(Duration::from_secs(30)));
        assert_eq!(s.thresholds.successes_before_passing, 2);
    }

    #[test]
    fn contradictions_and_limits_are_refused_by_name() {
        let refused = |json: &str, needle: &str| {
            let e = def(json).spec().unwrap_err();
            assert!(e.contains(needle), "{json}: {e}");
        };
        refused(r#"{}"#, "got none");
        refused(
            r#"{"http": "http://a:1/", "tcp": "a:1"}"#,
            "got http and tcp",
        );
        refused(
            r#"{"ttl": "10s", "interval": "1s"}"#,
            "no interval or timeout",
        );
        refused(
            r#"{"ttl": "10s", "timeout": "1s"}"#,
            "no interval or timeout",
        );
        refused(
            r#"{"http": "http://a:1/", "interval": "1s", "timeout": "1s"}"#,
            "below its interval",
        );
        refused(
            r#"{"http": "http://a:1/", "timeout": "1ms"}"#,
            "at least 10ms",
        );
        refused(
            r#"{"http": "http://a:1/", "interval": "10ms"}"#,
            "out of range",
        );
        refused(r#"{"ttl": "2000h"}"#, "out of range");
        refused(r#"{"http": "https://a:1/"}"#, "use http://");
        refused(r#"{"http": "a:1"}"#, "not http://");
        refused(r#"{"tcp": "nope"}"#, "not HOST:PORT");
        refused(r#"{"tcp": "a:0"}"#, "not HOST:PORT");
        refused(
            r#"{"tcp": "a:1", "failures_before_critical": 0}"#,
            "1 to 100",
        );
        refused(
            r#"{"ttl": "1s", "success_before_passing": 101}"#,
            "1 to 100",
        );
        refused(r#"{"ttl": "10"}"#, "not a duration");
        let e = serde_json::from_str::<CheckDefinition>(r#"{"htp": "x"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `htp`"), "{e}");
    }

    proptest! {
        #[test]
        fn a_written_duration_reads_back(ms in 0u64..100_000_000) {
            let d = Duration::from_millis(ms);
            prop_assert_eq!(parse_duration(&show_duration(d)).unwrap(), d);
        }
    }
}
