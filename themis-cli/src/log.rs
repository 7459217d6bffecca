//! Logging: `tracing` to stderr, as text (colours only on a terminal, never with `NO_COLOR`) or
//! as JSON lines (`--log-format json`, one object per event, for log shippers); `-v`, `-vv`,
//! `-vvv` raise themis's own level (info, debug, trace) without drowning it in the HTTP
//! libraries' debug output; `RUST_LOG` overrides them, and an invalid `RUST_LOG` is reported,
//! not silently ignored. Repeated warnings are limited by [`repeat`]: the first of a kind is
//! written, the copies within the next [`repeat::WINDOW`] are counted and summed up in one line.

pub(crate) mod repeat;

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::error::Error;

/// The log formats.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, message and fields).
    Json,
}

impl LogFormat {
    /// The name used on the command line and in the configuration file.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

/// The crates whose level `-v` raises (the binary's modules are `themis::*`).
const OURS: [&str; 7] = [
    "themis",
    "themis_cli",
    "themis_mesh",
    "themis_dht",
    "themis_channel",
    "themis_handshake",
    "themis_crypto",
];

/// The filter for `-v` repeated `verbose` times: themis's crates at info, debug or trace, the
/// others (HTTP, DNS libraries) at warn, and at debug only with `-vvv`.
pub(crate) fn directives(verbose: u8) -> String {
    let (ours, others) = match verbose {
        0 => ("warn", "warn"),
        1 => ("info", "warn"),
        2 => ("debug", "warn"),
        _ => ("trace", "debug"),
    };
    let mut d = others.to_owned();
    for c in OURS {
        d.push_str(&format!(",{c}={ours}"));
    }
    d
}

/// Whether colours may be written: stderr is a terminal and `NO_COLOR` is unset or empty
/// (<https://no-color.org>).
pub(crate) fn colour_allowed(no_color: Option<&std::ffi::OsStr>, terminal: bool) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Starts logging. An invalid `RUST_LOG` is reported (as a warning, in the chosen format) and
/// the `-v` level used instead.
pub(crate) fn init(verbose: u8, format: LogFormat) -> Result<(), Error> {
    let fallback = directives(verbose);
    let (filter, bad) = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => match EnvFilter::builder().parse(&v) {
            Ok(f) => (f, None),
            Err(e) => (EnvFilter::new(&fallback), Some((v, e.to_string()))),
        },
        _ => (EnvFilter::new(&fallback), None),
    };
    let ansi = colour_allowed(
        std::env::var_os("NO_COLOR").as_deref(),
        std::io::stderr().is_terminal(),
    );
    let registry = tracing_subscriber::registry().with(filter);
    let r = match format {
        LogFormat::Text => {
            let fmt = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(ansi);
            registry.with(repeat::Repeats::new(fmt)).try_init()
        }
        LogFormat::Json => {
            let fmt = tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_writer(std::io::stderr);
            registry.with(repeat::Repeats::new(fmt)).try_init()
        }
    };
    // Already initialised (a second call in one process): the first settings stay.
    drop(r);
    if let Some((value, reason)) = bad {
        tracing::warn!(
            rust_log = %value,
            "ignoring RUST_LOG: {reason}; using the level of -v instead (RUST_LOG takes directives such as `info` or `themis_mesh=debug,warn`)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_color_turns_colours_off_and_only_a_terminal_gets_them() {
        assert!(colour_allowed(None, true));
        assert!(!colour_allowed(None, false));
        assert!(!colour_allowed(Some("1".as_ref()), true));
        // an empty NO_COLOR does not count (no-color.org)
        assert!(colour_allowed(Some("".as_ref()), true));
    }

    #[test]
    fn verbosity_raises_themis_not_the_http_libraries() {
        let d = directives(2);
        assert!(d.starts_with("warn,"), "{d}");
        assert!(
            d.contains("themis=debug") && d.contains("themis_mesh=debug"),
            "{d}"
        );
        assert!(directives(3).starts_with("debug,"));
        for v in 0..4 {
            assert!(EnvFilter::builder().parse(directives(v)).is_ok());
        }
        assert!(EnvFilter::builder().parse("themis=loud").is_err());
    }
}
