//! What the benchmark ran on, and what the process used.

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// The machine, toolchain and source a report was produced from (report.json's `machine`).
#[derive(Clone, Debug, Serialize)]
pub struct MachineInfo {
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// Cores this process may use (`available_parallelism`).
    pub cores: usize,
    /// Logical CPUs listed in /proc/cpuinfo.
    pub logical_cpus: usize,
    /// `MemTotal` from /proc/meminfo, in KiB.
    pub memory_kib: Option<u64>,
    /// 1-minute load average when the run started (/proc/loadavg): other load on the machine.
    pub load_avg_1m: Option<f64>,
    /// /proc/sys/kernel/osrelease.
    pub kernel: String,
    /// `rustc --version`.
    pub rustc: String,
    /// `git rev-parse HEAD` of the measured tree.
    pub git_commit: String,
    /// `true` when the tree had uncommitted changes.
    pub git_dirty: bool,
    /// When the run started, UTC, ISO 8601.
    pub date_utc: String,
    /// `quick` or `full` (or `tiny` in the test suite).
    pub profile: String,
    /// How the nodes ran (in-process, over loopback).
    pub harness: String,
    /// Runs of every point (`--runs`): each figure is the median over them.
    pub runs: u32,
}

impl MachineInfo {
    /// Collects the information; fields that cannot be read say `unknown`.
    pub fn collect(profile: &str, harness: &str) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let (git_commit, git_dirty) = git_state();
        Self {
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into()),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            logical_cpus: cpuinfo
                .lines()
                .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
                .count(),
            memory_kib: kib_field(&meminfo, "MemTotal"),
            load_avg_1m: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".into(), |s| s.trim().to_string()),
            rustc: command_line(
                std::env::var_os("RUSTC")
                    .as_deref()
                    .unwrap_or("rustc".as_ref()),
                &["--version"],
            )
            .unwrap_or_else(|| "unknown".into()),
            git_commit,
            git_dirty,
            date_utc: iso8601_utc(SystemTime::now()),
            profile: profile.into(),
            harness: harness.into(),
            runs: 1,
        }
    }
}

fn git_state() -> (String, bool) {
    let commit =
        command_line("git".as_ref(), &["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = command_line(
        "git".as_ref(),
        &["status", "--porcelain", "--untracked-files=no"],
    )
    .is_some_and(|s| !s.is_empty());
    (commit, dirty)
}

fn command_line(program: &std::ffi::OsStr, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The CPU model: `model name` on x86, `Model`/`Hardware` elsewhere.
pub(crate) fn cpu_model(cpuinfo: &str) -> Option<String> {
    ["model name", "Model", "Hardware", "cpu model"]
        .iter()
        .find_map(|key| {
            cpuinfo.lines().find_map(|line| {
                let (k, v) = line.split_once(':')?;
                (k.trim() == *key && !v.trim().is_empty()).then(|| v.trim().to_string())
            })
        })
}

/// A `Key:   1234 kB` field of /proc/meminfo or /proc/self/status, in KiB.
pub(crate) fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        if k.trim() != key {
            return None;
        }
        v.split_whitespace().next()?.parse().ok()
    })
}

/// The process's peak resident set size (VmHWM) in KiB.
pub fn peak_rss_kib() -> Option<u64> {
    kib_field(&std::fs::read_to_string("/proc/self/status").ok()?, "VmHWM")
}

/// Resets the peak RSS to the current RSS (writes `5` to /proc/self/clear_refs), so the next
/// [`peak_rss_kib`] covers only what follows. Returns `false` where the kernel does not allow it.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Open file descriptors of the process (entries of /proc/self/fd).
pub fn open_fds() -> Option<u64> {
    // The directory handle itself is one entry while we read: do not count it.
    count_entries(Path::new("/proc/self/fd")).map(|n| n.saturating_sub(1))
}

/// The host's connection-tracking table (netfilter's nf_conntrack, which Docker's iptables
/// rules switch on): `(entries in use, limit)`, or `None` where the kernel has no such table.
/// Every UDP flow between two loopback sockets takes an entry, so a ring of 1,000 nodes over
/// UDP can fill the default limit (262,144 on the bench machine).
pub(crate) fn conntrack() -> Option<(u64, u64)> {
    let read = |f: &str| -> Option<u64> {
        std::fs::read_to_string(format!("/proc/sys/net/netfilter/{f}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some((read("nf_conntrack_count")?, read("nf_conntrack_max")?))
}

/// A note for a figure measured while the connection-tracking table was at least 90 % full
/// (`fill`: [`conntrack`]'s answer). A full table makes the kernel drop the first datagrams
/// of new flows (`dmesg`: "nf_conntrack: table full, dropping packet"): operations then fail
/// or time out for a reason that is the host's, not the protocol's.
pub(crate) fn conntrack_note(fill: Option<(u64, u64)>) -> Option<String> {
    let (count, max) = fill?;
    (max > 0 && count.saturating_mul(10) >= max.saturating_mul(9)).then(|| {
        format!(
            "the host's connection-tracking table was {}% full ({count} of {max} entries): \
             the kernel drops packets of new flows when it is full, so failures here may be \
             the host's (raise net.netfilter.nf_conntrack_max, README's Transports section)",
            count * 100 / max
        )
    })
}

fn count_entries(dir: &Path) -> Option<u64> {
    Some(std::fs::read_dir(dir).ok()?.count() as u64)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a system time (before 1970 prints the epoch).
pub(crate) fn iso8601_utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_nearly_full_connection_table_gets_a_note() {
        assert_eq!(conntrack_note(None), None);
        assert_eq!(conntrack_note(Some((0, 0))), None);
        assert_eq!(conntrack_note(Some((235_000, 262_144))), None);
        let note = conntrack_note(Some((236_000, 262_144))).unwrap();
        assert!(note.contains("90% full (236000 of 262144"), "{note}");
        assert!(
            conntrack_note(Some((262_144, 262_144)))
                .unwrap()
                .contains("100% full")
        );
    }

    #[test]
    fn dates_are_iso8601() {
        let at = |s| iso8601_utc(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(at(1_795_609_257), "2026-11-25T12:20:57Z");
        assert_eq!(at(4_102_444_800), "2100-01-01T00:00:00Z");
    }

    #[test]
    fn cpuinfo_and_meminfo_fields() {
        let cpu = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) E7-8830 @ 2.13GHz\n";
        assert_eq!(
            cpu_model(cpu).as_deref(),
            Some("Intel(R) Xeon(R) E7-8830 @ 2.13GHz")
        );
        assert_eq!(cpu_model("processor : 0\n"), None);
        let status = "Name:\txtask\nVmHWM:\t   12345 kB\nVmRSS:\t 100 kB\n";
        assert_eq!(kib_field(status, "VmHWM"), Some(12_345));
        assert_eq!(kib_field(status, "VmSwap"), None);
    }

    #[test]
    fn process_figures_are_readable_here() {
        // Linux only, like the harness.
        assert!(peak_rss_kib().is_some_and(|k| k > 0));
        // stdin, stdout and stderr at least.
        assert!(open_fds().is_some_and(|n| n >= 3));
        let dir = tempfile::tempdir().unwrap();
        for name in ["a", "b", "c"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        assert_eq!(count_entries(dir.path()), Some(3));
    }
}
