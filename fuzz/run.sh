#!/usr/bin/env bash
# Builds the fuzz targets with AFL++ instrumentation (`cargo afl build --release`) and runs each
# for a bounded time from its seeds (fuzz/seeds/TARGET, written by fuzz/seed.py from the
# known-answer vectors). Fails if AFL saved a crash, and lists the crash files.
#
#   fuzz/run.sh [--seconds N] [TARGET...]     N seconds per target (default 24); all targets
#                                             when none is named.
#
# Needs cargo-afl (`cargo install --locked cargo-afl@0.18.2`; its AFL++ is built on install,
# else run `cargo afl config --build`). Findings go to fuzz/out/TARGET/default/{crashes,hangs};
# reproduce one with `fuzz/target/release/TARGET < FILE`.
set -euo pipefail
cd "$(dirname "$0")"

ALL=(handshake channel_frame tcp_framing dht_cbor mesh_call)
seconds=24
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds|-s) seconds="$2"; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${ALL[@]}")
for t in "${targets[@]}"; do
  [ -d "seeds/$t" ] || { echo "unknown target '$t' (known: ${ALL[*]})" >&2; exit 2; }
done

bins=()
for t in "${targets[@]}"; do bins+=(--bin "$t"); done
echo "== cargo afl build --release ${bins[*]}"
cargo afl build --release --locked "${bins[@]}"

# No UI, no CPU binding (cores are shared with other jobs), no CPU-governor check; AFL
# refuses to start when core dumps go to a helper program: then say we do not care (crashes
# are still saved, by the forkserver's signal status).
export AFL_NO_UI=1 AFL_NO_AFFINITY=1 AFL_SKIP_CPUFREQ=1 AFL_FAST_CAL=1
if [ "$(cat /proc/sys/kernel/core_pattern 2>/dev/null || echo core)" != core ]; then
  if [ "$(id -u)" = 0 ] && echo core 2>/dev/null >/proc/sys/kernel/core_pattern; then :; else
    export AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
  fi
fi

stat() { sed -n "s/^$2 *: *//p" "$1" | head -1; }
failed=0
mkdir -p out
: > out/summary
for t in "${targets[@]}"; do
  rm -rf "out/$t"
  echo "== fuzz $t for ${seconds}s"
  # -t: a generous per-input limit, so that a loaded machine does not report hangs.
  if ! cargo afl fuzz -V "$seconds" -t 2000 -i "seeds/$t" -o "out/$t" -- "target/release/$t" \
    > "out/$t.log" 2>&1; then
    echo "afl-fuzz failed for $t; its log:" >&2
    tail -40 "out/$t.log" >&2
    failed=1
    continue
  fi
  s="out/$t/default/fuzzer_stats"
  line=$(printf '%-14s %6ss %12s %10s %8s %8s %6s' "$t" "$(stat "$s" run_time)" \
    "$(stat "$s" execs_done)" "$(stat "$s" execs_per_sec)" "$(stat "$s" corpus_count)" \
    "$(stat "$s" saved_crashes)" "$(stat "$s" saved_hangs)")
  echo "$line" | tee -a out/summary
  crashes=$(find "out/$t/default/crashes" -type f -name 'id:*' 2>/dev/null)
  if [ -n "$crashes" ]; then
    echo "CRASH: $t; reproduce with fuzz/target/release/$t < FILE:" >&2
    echo "$crashes" | sed 's|^|  fuzz/|' >&2
    failed=1
  fi
done
echo "== summary (target, run time, execs, execs/s, paths, crashes, hangs)"
cat out/summary
exit "$failed"
