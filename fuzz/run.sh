#!/usr/bin/env bash
# Real fuzzing of one target: fuzz/run.sh TARGET SECONDS
# Needs cargo-fuzz (`cargo install cargo-fuzz`); works on the stable toolchain
# with RUSTC_BOOTSTRAP=1 (sanitizers need nightly features).
set -euo pipefail
target=${1:?usage: fuzz/run.sh TARGET SECONDS}
seconds=${2:-60}
cd "$(dirname "$0")"
# New inputs go to a scratch directory; the committed seeds stay as they are.
work=$(mktemp -d "/tmp/nap-fuzz-$target.XXXXXX")
echo "new corpus entries: $work"
RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "$work" "corpus/$target" -- -max_total_time="$seconds" -print_final_stats=1
