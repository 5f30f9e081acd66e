#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 30) and fails if any finds a crash.
#
# Usage: deploy/fuzz.sh [SECONDS] [TARGET...]
# Crashes are kept under fuzz/artifacts/TARGET/ (git-ignored) with the input that caused them;
# the corpus grows in $HOME/.cache/tdsvip/fuzz-corpus so later runs start where earlier ones
# stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
shift || true
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tdsvip/target}
fuzz_target_dir="$HOME/.cache/tdsvip/fuzz-target"
corpus_root="$HOME/.cache/tdsvip/fuzz-corpus"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir fuzz)
fi
for t in "${targets[@]}"; do
  mkdir -p "$corpus_root/$t"
  echo "fuzz: $t for ${seconds}s"
  log="$HOME/.cache/tdsvip/fuzz-$t.log"
  status=0
  cargo +nightly fuzz run --fuzz-dir fuzz --target-dir "$fuzz_target_dir" "$t" "$corpus_root/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E '^(stat::number_of_executed_units|stat::new_units_added|==[0-9]+== ERROR|SUMMARY)' "$log" || true
  if [ $status -ne 0 ]; then
    tail -n 40 "$log" >&2
    echo "fuzz: $t failed (exit $status); full log: $log; inputs: fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
echo "fuzz: all targets ran ${seconds}s without a failure"
