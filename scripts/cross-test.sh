#!/usr/bin/env bash
# Build the tests for AArch64 and ARMv7 (Thumb-2 and A32) and run them under
# qemu-user on this x86-64 machine. See shared/CROSS-ARM.md.
#
#   scripts/cross-test.sh            all three targets
#   scripts/cross-test.sh aarch64    only some: aarch64, thumb2, a32
#
# Sets up the cross toolchain first (scripts/setup-cross.sh, idempotent; needs
# root the first time). Each target builds into its own directory under
# target/cross-*, so the runs never rebuild each other, and the host build in
# target/ is untouched. Debian's rustc 1.85 (/usr/bin/rustc) builds; the
# runners come from .cargo/config.toml.
#
# `--tests`: doctests cannot run cross (rustdoc would run them on the host).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then
  scripts/setup-cross.sh
elif ! [ -x /usr/bin/rustc ] || ! [ -d /usr/lib/rustlib/aarch64-unknown-linux-gnu ]; then
  echo "cross-test: the cross toolchain is missing; run scripts/setup-cross.sh as root" >&2
  exit 1
fi

PACKAGES=(-p tracer-core -p tracer-arch-arm -p tracer -p tracer-tests)
export RUSTC=/usr/bin/rustc
# Each target builds once; incremental caches would double its directory.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# The test harness's own parallelism is kept: qemu-user runs threads on host
# threads. Integration tests that toggle live run one at a time anyway.

# The runner .cargo/config.toml gives each target: the runtime's tests start
# each test in a fresh process of their binary through it
# (tracer_tests::fresh_process!).
runner_of() { # target
  case "$1" in
    aarch64-*) echo "qemu-aarch64 -L /usr/aarch64-linux-gnu" ;;
    armv7-*) echo "qemu-arm -L /usr/arm-linux-gnueabihf" ;;
  esac
}

run() { # name target rustflags
  local name=$1 target=$2 flags=$3 t0 rc=0
  t0=$(date +%s)
  echo "== cross-test: $name ($target${flags:+, RUSTFLAGS=$flags})"
  TRACER_TEST_RUNNER="$(runner_of "$target")" RUSTFLAGS="$flags" CARGO_TARGET_DIR="target/cross-$name" \
    cargo test --no-fail-fast --tests --target "$target" "${PACKAGES[@]}" || rc=$?
  # The tracer program: its unit tests, and the agent + shared-memory reader
  # in one process (its other integration tests spawn ARM programs, which
  # qemu-user cannot run from inside a guest without binfmt_misc).
  RUSTFLAGS="$flags" CARGO_TARGET_DIR="target/cross-$name" \
    cargo test --no-fail-fast --target "$target" -p tracer-cli --lib --test self_attach || rc=$?
  echo "== cross-test: $name: $([ "$rc" -eq 0 ] && echo ok || echo FAILED) in $(( $(date +%s) - t0 ))s"
  free_if_short "target/cross-$name"
  return "$rc"
}

# Each target's build directory takes 1-3 GiB. When the disk runs short
# (below $TRACER_CROSS_MIN_FREE_GIB, 12 by default), a finished target's
# directory is removed so the next one can build: CI's disk is bounded.
# A developer's machine with room keeps them warm for the next run.
free_if_short() { # dir
  local dir=$1 free_kib min_gib=${TRACER_CROSS_MIN_FREE_GIB:-12}
  free_kib=$(df -Pk . | awk 'NR == 2 { print $4 }')
  echo "cross-test: $dir takes $(du -sh "$dir" 2>/dev/null | cut -f1); $((free_kib / 1048576)) GiB free"
  if [ "$free_kib" -lt $((min_gib * 1048576)) ]; then
    echo "cross-test: less than $min_gib GiB free: removing $dir"
    rm -rf "$dir"
  fi
}

want=("$@")
[ ${#want[@]} -gt 0 ] || want=(aarch64 thumb2 a32)
failed=()
for w in "${want[@]}"; do
  case "$w" in
    aarch64) run aarch64 aarch64-unknown-linux-gnu "" || failed+=("$w") ;;
    # rustc warns that thumb-mode is an unstable feature; the warning is harmless.
    thumb2) run armv7-thumb armv7-unknown-linux-gnueabihf "-C target-feature=+thumb-mode" || failed+=("$w") ;;
    a32) run armv7-a32 armv7-unknown-linux-gnueabihf "" || failed+=("$w") ;;
    *) echo "cross-test: unknown target '$w' (aarch64, thumb2, a32)" >&2; exit 2 ;;
  esac
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "cross-test: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "cross-test: all passed: ${want[*]}"
