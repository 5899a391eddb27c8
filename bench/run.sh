#!/usr/bin/env bash
# Builds the benchmark (Release) and runs it; what `make bench` does.
#   bench/run.sh [BUILD_DIR] [SCRATCH_DIR] [modelport_bench flags...]
# Defaults: build-release, /tmp/modelport-bench (needs ~4 GiB free; emptied at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-release}
dir=${2:-/tmp/modelport-bench}
shift $(( $# < 2 ? $# : 2 ))
if [[ ! -f "$build/CMakeCache.txt" ]]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
fi
cmake --build "$build" --target modelport_bench
exec "./$build/bench/modelport_bench" --dir "$dir" "$@"
