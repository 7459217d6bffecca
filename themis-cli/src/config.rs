//! The settings of `themis node`: every flag is also an environment variable `THEMIS_<FLAG>`
//! (upper case, `-` as `_`) and a key of the TOML configuration file (`--config FILE`, the flag's
//! name without `--`), which also holds `[[service]]` definitions registered at start.
//! Precedence: flag > environment > file > default. `--print-config` prints the result, each
//! value with where it came from.
//!
//! One struct, [`NodeFlags`], is both the clap arguments and the file's schema, so a new flag is
//! a new key of the file and a new variable with no more code.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use serde::{Deserialize, Serialize};

use crate::agent::ServiceDefinition;
use crate::cli::DEFAULT_API;
use crate::error::Error;
use crate::log::LogFormat;

/// Largest configuration file read.
const MAX_FILE: u64 = 1 << 20;
/// The default `--max-body`.
const DEFAULT_MAX_BODY: usize = 1 << 20;
/// The shortest `--record-ttl`, in seconds (re-stores then run every 3 s).
const MIN_RECORD_TTL: u64 = 10;
/// The longest `--record-ttl`, in seconds: one day.
const MAX_RECORD_TTL: u64 = 86_400;
/// The longest `--lost-peer-hours`: 30 days.
const MAX_LOST_PEER_HOURS: u64 = 720;
/// The default `--upstream-timeout`, in seconds.
const DEFAULT_UPSTREAM_TIMEOUT: u64 = 4;

/// `themis node`.
#[derive(Debug, Args, Default)]
pub(crate) struct NodeArgs {
    /// A TOML configuration file: any flag below as `name = value` (e.g. `listen =
    /// "0.0.0.0:7946"`, `bootstrap = ["seed:7946"]`) and `[[service]]` tables registered at
    /// start (`name`, `upstream`, `version`, `weight`, `tags`). Flags and THEMIS_* variables
    /// override it.
    #[arg(long, env = "THEMIS_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Print the settings this node would run with (flags > THEMIS_* environment > file >
    /// defaults), each with where it came from, and exit.
    #[arg(long)]
    pub(crate) print_config: bool,
    #[command(flatten)]
    pub(crate) flags: NodeFlags,
}

/// The settings of a node: flags, environment variables and keys of the configuration file.
#[derive(Debug, Args, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct NodeFlags {
    /// The network name (1-64 bytes of UTF-8); node ids are H(public key, network). Required.
    #[arg(long, env = "THEMIS_NET")]
    pub(crate) net: Option<String>,
    /// The address the mesh endpoint listens on (TCP), e.g. 0.0.0.0:7946 or 127.0.0.1:0.
    /// Required.
    #[arg(long, env = "THEMIS_LISTEN")]
    pub(crate) listen: Option<String>,
    /// The address other nodes reach this one at: HOST or HOST:PORT (no port: the listening
    /// port). It goes into this node's provider records and ring answers. Default: the
    /// listening address; when that is 0.0.0.0 or ::, the address of the interface that routes
    /// to the first bootstrap node (or to the default route), printed at start.
    #[arg(long, env = "THEMIS_ADVERTISE")]
    pub(crate) advertise: Option<String>,
    /// A node to join through: HOST:PORT or NODE_ID_HEX@HOST:PORT (then its identity is
    /// checked). Repeatable (THEMIS_BOOTSTRAP: comma separated); a contact that is this node
    /// itself is skipped. None: start a new ring (or rejoin the peers the data directory
    /// remembers).
    #[arg(long, env = "THEMIS_BOOTSTRAP", value_delimiter = ',')]
    pub(crate) bootstrap: Option<Vec<String>>,
    /// Seconds to keep trying the bootstrap nodes while none answers (containers starting
    /// together); 0: fail at once. A mismatch (network, identity, mode) fails at once anyway.
    #[arg(long, env = "THEMIS_JOIN_TIMEOUT", value_name = "SECS")]
    pub(crate) join_timeout: Option<u64>,
    /// The address the agent's HTTP API listens on [default: 127.0.0.1:7070]. Beyond the
    /// loopback it requires --api-token-file.
    #[arg(long, env = "THEMIS_API")]
    pub(crate) api: Option<String>,
    /// A file (mode 0600) holding the token every API request must carry as `Authorization:
    /// Bearer TOKEN` (except the health probes and /metrics); the client commands read the same
    /// file. A missing file is created with a fresh random token.
    #[arg(long, env = "THEMIS_API_TOKEN_FILE", value_name = "FILE")]
    pub(crate) api_token_file: Option<PathBuf>,
    /// The identity key file (from `themis keygen`). Default: DIR/node.key with --data-dir,
    /// else a fresh identity for this run.
    #[arg(long, env = "THEMIS_KEY")]
    pub(crate) key: Option<PathBuf>,
    /// The key succession statement this node presents after `themis key rotate` (peers,
    /// allow-lists and bootstrap lists that name the old id accept this node for the grace
    /// period). Default: KEY.succession beside the key file, when it exists.
    #[arg(long, env = "THEMIS_SUCCESSION", value_name = "FILE")]
    pub(crate) succession: Option<PathBuf>,
    /// The admission public key of a closed network (hex, from `themis admission keygen`).
    /// Node ids then bind it, and only nodes with a certificate signed by it are admitted
    /// (PROTOCOL.md §2.10). Requires --admission-cert. Default: an open network.
    #[arg(long, env = "THEMIS_ADMISSION_KEY", value_name = "HEX")]
    pub(crate) admission_key: Option<String>,
    /// This node's admission certificate on the closed network (from `themis admission
    /// issue`). A missing, foreign or expired certificate refuses the start.
    #[arg(long, env = "THEMIS_ADMISSION_CERT", value_name = "FILE")]
    pub(crate) admission_cert: Option<PathBuf>,
    /// Keep the node's key, its services and the peers it knew in DIR, so that a restarted
    /// node (or a whole restarted cluster) comes back with its id and services and rejoins
    /// without bootstrap nodes.
    #[arg(long, env = "THEMIS_DATA_DIR", value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Serve DNS on ADDR (UDP and TCP): NAME.service.themis answers A/AAAA and SRV records of
    /// the providers of NAME, from a fresh discovery.
    #[arg(long, env = "THEMIS_DNS", value_name = "ADDR")]
    pub(crate) dns: Option<String>,
    /// Replication factor k: every provider record is stored on k + 1 replicas [default: 2].
    #[arg(long, env = "THEMIS_REPLICAS", value_parser = clap::value_parser!(u8).range(0..=8))]
    pub(crate) replicas: Option<u8>,
    /// Lifetime of this node's provider records, in seconds (10 to 86400) [default: 600; 60
    /// with --fast]. A record whose provider vanished without a leave (a crash) is discovered
    /// until then; the node re-stores its records every third of it. Give every node of a
    /// network the same value: a node refuses records that expire further ahead than its own
    /// TTL (plus 60 s of clock skew).
    #[arg(long, env = "THEMIS_RECORD_TTL", value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(MIN_RECORD_TTL..=MAX_RECORD_TTL))]
    pub(crate) record_ttl: Option<u64>,
    /// How long, in hours, the node keeps probing peers it lost contact with (and its
    /// bootstraps), so that the two sides of a network partition find each other and merge
    /// into one ring when it heals (0 to 720; 0 turns it off) [default: 24]. PROTOCOL.md §6.14.
    #[arg(long, env = "THEMIS_LOST_PEER_HOURS", value_name = "HOURS",
          value_parser = clap::value_parser!(u64).range(0..=MAX_LOST_PEER_HOURS))]
    pub(crate) lost_peer_hours: Option<u64>,
    /// Plaintext channels (measurement and trusted networks only; every node must agree).
    #[arg(long, env = "THEMIS_INSECURE", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub(crate) insecure: Option<bool>,
    /// Short DHT periods (stabilization, re-store, record TTL): for tests and demos on one
    /// machine.
    #[arg(long, env = "THEMIS_FAST", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub(crate) fast: Option<bool>,
    /// Largest request body the agent accepts and largest upstream answer, in bytes [default:
    /// 1048576].
    #[arg(long, env = "THEMIS_MAX_BODY")]
    pub(crate) max_body: Option<usize>,
    /// Seconds the sidecar waits for an upstream's answer [default: 4].
    #[arg(long, env = "THEMIS_UPSTREAM_TIMEOUT", value_name = "SECS")]
    pub(crate) upstream_timeout: Option<u64>,
    /// Calls that may run at one upstream at once; more are answered busy, unrun, and the
    /// caller tries another provider [default: 256].
    #[arg(long, env = "THEMIS_UPSTREAM_CONCURRENCY", value_name = "N")]
    pub(crate) upstream_concurrency: Option<usize>,
    /// Worker threads of the node's runtime, 1 to 1024 [default: one per core]. A sidecar
    /// beside busy services does more per core with fewer (1 or 2, as service-mesh proxies
    /// run by default); 1 runs the node on a single-threaded runtime.
    #[arg(long, env = "THEMIS_THREADS", value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub(crate) threads: Option<u16>,
    /// Log format on stderr: text or json (one object per line) [default: text].
    #[arg(long, env = "THEMIS_LOG_FORMAT", value_enum)]
    pub(crate) log_format: Option<LogFormat>,
    /// Services registered at start (configuration file only).
    #[arg(skip)]
    #[serde(default, rename = "service", skip_serializing_if = "Vec::is_empty")]
    pub(crate) services: Vec<ServiceDefinition>,
}

/// The resolved settings of a node.
#[derive(Debug, Clone)]
pub(crate) struct NodeSettings {
    pub(crate) net: String,
    pub(crate) listen: String,
    pub(crate) advertise: Option<String>,
    pub(crate) bootstrap: Vec<String>,
    pub(crate) join_timeout: Duration,
    pub(crate) api: String,
    pub(crate) api_token_file: Option<PathBuf>,
    pub(crate) key: Option<PathBuf>,
    pub(crate) succession: Option<PathBuf>,
    pub(crate) admission_key: Option<String>,
    pub(crate) admission_cert: Option<PathBuf>,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) dns: Option<String>,
    pub(crate) replicas: Option<u8>,
    pub(crate) record_ttl: Option<Duration>,
    pub(crate) lost_peer_hours: Option<u64>,
    pub(crate) insecure: bool,
    pub(crate) fast: bool,
    pub(crate) max_body: usize,
    pub(crate) upstream_timeout: Duration,
    pub(crate) upstream_concurrency: usize,
    /// `None`: one per core.
    pub(crate) threads: Option<u16>,
    pub(crate) log_format: LogFormat,
    pub(crate) services: Vec<ServiceDefinition>,
}

/// Reads and parses a configuration file; errors name the file, the line and the key.
pub(crate) fn read_file(path: &Path) -> Result<NodeFlags, Error> {
    use std::io::Read as _;
    let bad = |reason: String| Error::Config {
        path: path.to_owned(),
        reason,
    };
    let f = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut text = String::new();
    f.take(MAX_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| bad(e.to_string()))?;
    if text.len() as u64 > MAX_FILE {
        return Err(bad(format!("larger than {MAX_FILE} bytes")));
    }
    let flags: NodeFlags = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    for (i, s) in flags.services.iter().enumerate() {
        if s.name.as_deref().is_none_or(str::is_empty) {
            return Err(bad(format!(
                "[[service]] number {} (upstream {}) has no `name`",
                i + 1,
                s.upstream
            )));
        }
    }
    Ok(flags)
}

/// `flag` (command line or environment) if given, else `file`'s.
fn pick<T: Clone>(flag: &Option<T>, file: &Option<T>) -> Option<T> {
    flag.clone().or_else(|| file.clone())
}

fn required(v: Option<String>, flag: &'static str) -> Result<String, Error> {
    v.filter(|s| !s.trim().is_empty()).ok_or(Error::Usage {
        what: flag,
        reason: format!(
            "missing: pass {flag}, set THEMIS_{}, or set `{}` in the configuration file",
            flag.trim_start_matches("--")
                .replace('-', "_")
                .to_uppercase(),
            flag.trim_start_matches("--")
        ),
    })
}

/// The settings: flags (and their environment variables) over `file` over the defaults.
pub(crate) fn resolve(flags: &NodeFlags, file: &NodeFlags) -> Result<NodeSettings, Error> {
    let f = flags;
    let mut services = file.services.clone();
    services.extend(f.services.iter().cloned());
    Ok(NodeSettings {
        net: required(pick(&f.net, &file.net), "--net")?,
        listen: required(pick(&f.listen, &file.listen), "--listen")?,
        advertise: pick(&f.advertise, &file.advertise),
        bootstrap: pick(&f.bootstrap, &file.bootstrap).unwrap_or_default(),
        join_timeout: Duration::from_secs(pick(&f.join_timeout, &file.join_timeout).unwrap_or(0)),
        api: pick(&f.api, &file.api).unwrap_or_else(|| DEFAULT_API.to_owned()),
        api_token_file: pick(&f.api_token_file, &file.api_token_file),
        key: pick(&f.key, &file.key),
        succession: pick(&f.succession, &file.succession),
        admission_key: pick(&f.admission_key, &file.admission_key),
        admission_cert: pick(&f.admission_cert, &file.admission_cert),
        data_dir: pick(&f.data_dir, &file.data_dir),
        dns: pick(&f.dns, &file.dns),
        replicas: match pick(&f.replicas, &file.replicas) {
            Some(k) if k > 8 => {
                return Err(Error::Usage {
                    what: "replicas",
                    reason: format!("{k} is not in 0..=8"),
                });
            }
            k => k,
        },
        record_ttl: match pick(&f.record_ttl, &file.record_ttl) {
            Some(t) if !(MIN_RECORD_TTL..=MAX_RECORD_TTL).contains(&t) => {
                return Err(Error::Usage {
                    what: "record-ttl",
                    reason: format!("{t} s is not in {MIN_RECORD_TTL}..={MAX_RECORD_TTL} seconds"),
                });
            }
            t => t.map(Duration::from_secs),
        },
        lost_peer_hours: match pick(&f.lost_peer_hours, &file.lost_peer_hours) {
            Some(h) if h > MAX_LOST_PEER_HOURS => {
                return Err(Error::Usage {
                    what: "lost-peer-hours",
                    reason: format!("{h} is not in 0..={MAX_LOST_PEER_HOURS} hours"),
                });
            }
            h => h,
        },
        insecure: pick(&f.insecure, &file.insecure).unwrap_or(false),
        fast: pick(&f.fast, &file.fast).unwrap_or(false),
        max_body: match pick(&f.max_body, &file.max_body) {
            Some(0) => {
                return Err(Error::Usage {
                    what: "max-body",
                    reason: "0 would refuse every request body and every upstream answer: give at least 1 (bytes)".into(),
                });
            }
            m => m.unwrap_or(DEFAULT_MAX_BODY),
        },
        upstream_timeout: {
            let fast = pick(&f.fast, &file.fast).unwrap_or(false);
            let given = pick(&f.upstream_timeout, &file.upstream_timeout);
            check_upstream_timeout(given, fast)?;
            Duration::from_secs(given.unwrap_or(DEFAULT_UPSTREAM_TIMEOUT).max(1))
        },
        upstream_concurrency: match pick(&f.upstream_concurrency, &file.upstream_concurrency) {
            None => crate::agent::DEFAULT_UPSTREAM_CONCURRENCY,
            Some(0) => {
                return Err(Error::Usage {
                    what: "upstream-concurrency",
                    reason: "0 would refuse every call: give at least 1 (calls that may run at one upstream at once)".into(),
                });
            }
            Some(n) => n,
        },
        threads: match pick(&f.threads, &file.threads) {
            Some(n) if !(1..=1024).contains(&n) => {
                return Err(Error::Usage {
                    what: "threads",
                    reason: format!("{n} worker threads: give 1 to 1024"),
                });
            }
            t => t,
        },
        log_format: pick(&f.log_format, &file.log_format).unwrap_or_default(),
        services,
    })
}

/// Refuses an `--upstream-timeout` the mesh cannot honour: above the mesh's request timeout
/// (5 s; 1 s with `--fast`), the caller gives up before the provider can report the upstream's
/// failure, and the timed-out call looks like a dead provider.
fn check_upstream_timeout(given: Option<u64>, fast: bool) -> Result<(), Error> {
    let driver = if fast {
        themis_mesh::DriverConfig::fast()
    } else {
        themis_mesh::DriverConfig::default()
    };
    let limit = driver.endpoint.request_timeout;
    match given {
        Some(secs) if Duration::from_secs(secs) > limit => Err(Error::Usage {
            what: "upstream-timeout",
            reason: format!(
                "{secs} s is above the mesh's request timeout of {limit:?}{}: callers would give up before the upstream's answer or error comes back; give at most {} s",
                if fast { " (--fast)" } else { "" },
                limit.as_secs().max(1)
            ),
        }),
        _ => Ok(()),
    }
}

/// Loads the file named by `args` (if any) and resolves the settings.
pub(crate) fn load(args: &NodeArgs) -> Result<NodeSettings, Error> {
    let file = match &args.config {
        Some(p) => read_file(p)?,
        None => NodeFlags::default(),
    };
    resolve(&args.flags, &file)
}

/// Where a setting came from, for `--print-config`.
fn origin(m: Option<&ArgMatches>, id: &str, in_file: bool, file: Option<&Path>) -> String {
    match m.and_then(|m| m.value_source(id)) {
        Some(ValueSource::CommandLine) => format!("--{}", id.replace('_', "-")),
        Some(ValueSource::EnvVariable) => format!("THEMIS_{}", id.to_uppercase()),
        _ if in_file => format!(
            "file {}",
            file.map(Path::display)
                .map_or(String::new(), |d| d.to_string())
        ),
        _ => "default".to_owned(),
    }
}

fn toml_value(v: impl Serialize) -> String {
    toml::Value::try_from(v).map_or_else(|_| "?".to_owned(), |v| v.to_string())
}

/// `--print-config`: the resolved settings as a configuration file, each line saying where its
/// value came from.
pub(crate) fn render(
    s: &NodeSettings,
    file: &NodeFlags,
    matches: Option<&ArgMatches>,
    path: Option<&Path>,
) -> String {
    let mut out = String::from(
        "# themis node settings: flags > THEMIS_* environment > configuration file > defaults\n",
    );
    let mut line = |key: &str, id: &str, value: Option<String>, in_file: bool| {
        let from = origin(matches, id, in_file, path);
        let _ = match value {
            Some(v) => writeln!(out, "{key} = {v}  # {from}"),
            None => writeln!(out, "# {key} (not set)"),
        };
    };
    let opt = |v: &Option<String>| v.as_ref().map(toml_value);
    line("net", "net", Some(toml_value(&s.net)), file.net.is_some());
    line(
        "listen",
        "listen",
        Some(toml_value(&s.listen)),
        file.listen.is_some(),
    );
    line(
        "advertise",
        "advertise",
        opt(&s.advertise),
        file.advertise.is_some(),
    );
    line(
        "bootstrap",
        "bootstrap",
        Some(toml_value(&s.bootstrap)),
        file.bootstrap.is_some(),
    );
    line(
        "join-timeout",
        "join_timeout",
        Some(s.join_timeout.as_secs().to_string()),
        file.join_timeout.is_some(),
    );
    line("api", "api", Some(toml_value(&s.api)), file.api.is_some());
    line(
        "api-token-file",
        "api_token_file",
        s.api_token_file.as_ref().map(toml_value),
        file.api_token_file.is_some(),
    );
    line(
        "key",
        "key",
        s.key.as_ref().map(toml_value),
        file.key.is_some(),
    );
    line(
        "succession",
        "succession",
        s.succession.as_ref().map(toml_value),
        file.succession.is_some(),
    );
    line(
        "admission-key",
        "admission_key",
        opt(&s.admission_key),
        file.admission_key.is_some(),
    );
    line(
        "admission-cert",
        "admission_cert",
        s.admission_cert.as_ref().map(toml_value),
        file.admission_cert.is_some(),
    );
    line(
        "data-dir",
        "data_dir",
        s.data_dir.as_ref().map(toml_value),
        file.data_dir.is_some(),
    );
    line("dns", "dns", opt(&s.dns), file.dns.is_some());
    line(
        "replicas",
        "replicas",
        s.replicas.map(|k| k.to_string()),
        file.replicas.is_some(),
    );
    line(
        "record-ttl",
        "record_ttl",
        s.record_ttl.map(|t| t.as_secs().to_string()),
        file.record_ttl.is_some(),
    );
    line(
        "lost-peer-hours",
        "lost_peer_hours",
        s.lost_peer_hours.map(|h| h.to_string()),
        file.lost_peer_hours.is_some(),
    );
    line(
        "insecure",
        "insecure",
        Some(s.insecure.to_string()),
        file.insecure.is_some(),
    );
    line(
        "fast",
        "fast",
        Some(s.fast.to_string()),
        file.fast.is_some(),
    );
    line(
        "max-body",
        "max_body",
        Some(s.max_body.to_string()),
        file.max_body.is_some(),
    );
    line(
        "upstream-timeout",
        "upstream_timeout",
        Some(s.upstream_timeout.as_secs().to_string()),
        file.upstream_timeout.is_some(),
    );
    line(
        "upstream-concurrency",
        "upstream_concurrency",
        Some(s.upstream_concurrency.to_string()),
        file.upstream_concurrency.is_some(),
    );
    line(
        "threads",
        "threads",
        s.threads.map(|t| t.to_string()),
        file.threads.is_some(),
    );
    line(
        "log-format",
        "log_format",
        Some(toml_value(s.log_format.as_str())),
        file.log_format.is_some(),
    );
    #[derive(Serialize)]
    struct Services<'a> {
        service: &'a [ServiceDefinition],
    }
    if !s.services.is_empty() {
        out.push('\n');
        out.push_str(
            &toml::to_string(&Services {
                service: &s.services,
            })
            .unwrap_or_default(),
        );
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn file(text: &str) -> Result<NodeFlags, Error> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("themis.toml");
        std::fs::write(&p, text).unwrap();
        read_file(&p)
    }

    #[test]
    fn a_file_holds_every_flag_and_services() {
        let f = file(
            r#"
net = "demo"
listen = "0.0.0.0:7946"
bootstrap = ["seed:7946", "other:7946"]
join-timeout = 30
api-token-file = "/etc/themis/api-token"
max-body = 3000000
insecure = false
log-format = "json"

[[service]]
name = "hello"
upstream = "http://127.0.0.1:8080/"
version = "1.0"
weight = 5
"#,
        )
        .unwrap();
        let s = resolve(&NodeFlags::default(), &f).unwrap();
        assert_eq!(s.net, "demo");
        assert_eq!(s.bootstrap, ["seed:7946", "other:7946"]);
        assert_eq!(s.join_timeout, Duration::from_secs(30));
        assert_eq!(s.max_body, 3_000_000);
        assert_eq!(
            s.api_token_file.as_deref(),
            Some(Path::new("/etc/themis/api-token"))
        );
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.api, DEFAULT_API);
        assert_eq!(s.services.len(), 1);
        assert_eq!(s.services[0].spec().weight, 5);
        // a flag (or its variable) wins over the file
        let flags = NodeFlags {
            listen: Some("127.0.0.1:0".into()),
            insecure: Some(true),
            ..NodeFlags::default()
        };
        let s = resolve(&flags, &f).unwrap();
        assert_eq!(s.listen, "127.0.0.1:0");
        assert!(s.insecure);
        assert_eq!(s.net, "demo");
    }

    #[test]
    fn contradictory_settings_are_refused() {
        let file = NodeFlags {
            net: Some("demo".into()),
            listen: Some("127.0.0.1:0".into()),
            ..NodeFlags::default()
        };
        let with = |f: NodeFlags| resolve(&f, &file);
        let e = with(NodeFlags {
            max_body: Some(0),
            ..NodeFlags::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("max-body") && e.contains("at least 1"), "{e}");
        let e = with(NodeFlags {
            upstream_timeout: Some(10),
            ..NodeFlags::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("upstream-timeout") && e.contains("at most 5 s"),
            "{e}"
        );
        let e = with(NodeFlags {
            upstream_timeout: Some(2),
            fast: Some(true),
            ..NodeFlags::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("--fast") && e.contains("at most 1 s"), "{e}");
        // The defaults, and a timeout within the mesh's, are fine (with --fast too).
        assert!(with(NodeFlags::default()).is_ok());
        assert!(
            with(NodeFlags {
                upstream_timeout: Some(5),
                ..NodeFlags::default()
            })
            .is_ok()
        );
        assert!(
            with(NodeFlags {
                fast: Some(true),
                ..NodeFlags::default()
            })
            .is_ok()
        );
    }

    #[test]
    fn mistakes_in_the_file_name_the_line_and_key() {
        let e = file("net = \"demo\"\nlisten = \"x\"\nlisen = \"y\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("themis.toml") && e.contains("lisen") && e.contains("line 3"),
            "{e}"
        );
        let e = file("max-body = \"big\"\n").unwrap_err().to_string();
        assert!(e.contains("max-body"), "{e}");
        let f = file("net = \"n\"\nlisten = \"x\"\nrecord-ttl = 5\n").unwrap();
        let e = resolve(&NodeFlags::default(), &f).unwrap_err().to_string();
        assert!(e.contains("record-ttl") && e.contains("10..=86400"), "{e}");
        let f = file("net = \"n\"\nlisten = \"x\"\nrecord-ttl = 90\n").unwrap();
        let s = resolve(&NodeFlags::default(), &f).unwrap();
        assert_eq!(s.record_ttl, Some(Duration::from_secs(90)));
        let f = file("net = \"n\"\nlisten = \"x\"\nlost-peer-hours = 721\n").unwrap();
        let e = resolve(&NodeFlags::default(), &f).unwrap_err().to_string();
        assert!(
            e.contains("lost-peer-hours") && e.contains("0..=720"),
            "{e}"
        );
        let f = file("net = \"n\"\nlisten = \"x\"\nlost-peer-hours = 0\n").unwrap();
        let s = resolve(&NodeFlags::default(), &f).unwrap();
        assert_eq!(s.lost_peer_hours, Some(0));
        let e = file("max-body = \"big\"\n").unwrap_err().to_string();
        assert!(e.contains("max-body"), "{e}");
        let e = file("[[service]]\nupstream = \"http://x/\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("has no `name`"), "{e}");
        let e = file("[[service]]\nname = \"a\"\nupstream = \"http://x/\"\nwieght = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("wieght"), "{e}");
        let e = resolve(&NodeFlags::default(), &NodeFlags::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("--net") && e.contains("THEMIS_NET"), "{e}");
    }

    #[test]
    fn the_printed_configuration_reads_back_as_the_same_settings() {
        let f = file(
            "net = \"demo\"\nlisten = \"127.0.0.1:7001\"\nbootstrap = [\"a:1\"]\n[[service]]\nname = \"s\"\nupstream = \"http://127.0.0.1:1/\"\n",
        )
        .unwrap();
        let s = resolve(&NodeFlags::default(), &f).unwrap();
        let text = render(&s, &f, None, Some(Path::new("t.toml")));
        assert!(text.contains("net = \"demo\"  # file t.toml"), "{text}");
        assert!(text.contains("max-body = 1048576  # default"), "{text}");
        let back: NodeFlags = toml::from_str(&text).unwrap();
        let again = resolve(&NodeFlags::default(), &back).unwrap();
        assert_eq!(format!("{again:?}"), format!("{s:?}"));
    }
}
