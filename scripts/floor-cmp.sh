#!/bin/bash
# Interleaved per-call comparison of preload library builds against the
# floor, pinned to one CPU: the figures of README's "The hook at the floor".
#
#   scripts/floor-cmp.sh ROUNDS CALLS VARIANT...
#
# VARIANT is `floor` (target/peers/work-floor) or the path of a preload
# library, optionally followed by `:VAR=VALUE` for its environment. Each
# round runs every variant once (`work-clang-pfe CALLS` with
# TRACER_ENABLE=leaf); the medians and minima of the loop thread's CPU
# nanoseconds a call are printed at the end. Build the programs first with
# `cargo bench -p tracer-benches --bench peers` (or `cargo test --benches`),
# and the library with `cargo build --release -p tracer-preload`.
# FLOOR_CPU=N pins to CPU N (default 1); FLOOR_CPU= does not pin.
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 ROUNDS CALLS VARIANT... (VARIANT: floor | LIB.so[:VAR=VALUE])" >&2
    exit 2
fi
rounds=$1 calls=$2
shift 2
root=$(cd "$(dirname "$0")/.." && pwd)
peers=${CARGO_TARGET_DIR:-$root/target}/peers
for exe in work-floor work-clang-pfe; do
    if [ ! -x "$peers/$exe" ]; then
        echo "$0: $peers/$exe is missing: run cargo bench -p tracer-benches --bench peers first" >&2
        exit 2
    fi
done
pin=()
cpu=${FLOOR_CPU-1}
[ -n "$cpu" ] && pin=(taskset -c "$cpu")
declare -A results
for _ in $(seq "$rounds"); do
    for v in "$@"; do
        if [ "$v" = floor ]; then
            out=$("${pin[@]}" "$peers/work-floor" "$calls")
        else
            lib=${v%%:*} extra=()
            [[ "$v" == *:* ]] && extra=("${v#*:}")
            if [ ! -f "$lib" ]; then
                echo "$0: no library $lib" >&2
                exit 2
            fi
            out=$(env "${extra[@]}" LD_PRELOAD="$(realpath "$lib")" TRACER_ENABLE=leaf \
                "${pin[@]}" "$peers/work-clang-pfe" "$calls" 2>/dev/null)
        fi
        c=$(sed -n 's/^cpu_ns_per_call=\([0-9.]*\).*/\1/p' <<<"$out")
        if [ -z "$c" ]; then
            echo "$0: $v printed no cpu_ns_per_call" >&2
            exit 1
        fi
        results[$v]="${results[$v]:-} $c"
    done
done
for v in "$@"; do
    sorted=$(tr ' ' '\n' <<<"${results[$v]}" | sed '/^$/d' | sort -n)
    median=$(awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}' <<<"$sorted")
    echo "$v: median $median min $(head -1 <<<"$sorted") cpu ns/call; all:${results[$v]}"
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
