#!/usr/bin/env bash
# The tests, on a machine that has only the Rust toolchain, gcc, Python and
# git: installs what they need, then checks formatting and lints and runs
# `cargo test --workspace`, the loom models, Miri over tracer-core and the
# fuzz targets. `.ci/run` is exactly `scripts/test.sh --arm`.
#
#   scripts/test.sh          host tests
#   scripts/test.sh --arm    also the ARM tests under qemu-user
#                            (scripts/setup-cross.sh + scripts/cross-test.sh)
#
# What it installs (each step skipped when already there; apt needs root,
# as a user it says what to install):
#   scripts/setup-whole.sh   clang-19, lld-19, gdb, uftrace, nightly Rust:
#                            the whole-program tests' compilers
#   perfetto, protobuf       Perfetto's trace schema (pip): decodes the
#                            --perfetto export in the tests
#   prometheus_client        Prometheus's parser (pip): parses /metrics
#   prometheus               Debian's Prometheus server (apt): scrapes
#                            /metrics in the tests (classic and native
#                            histograms)
set -euo pipefail
cd "$(dirname "$0")/.."

arm=0
for a in "$@"; do
  case "$a" in
    --arm) arm=1 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "test.sh: unknown argument '$a' (only --arm)" >&2; exit 2 ;;
  esac
done

# One build from a clean clone gains nothing from incremental compilation,
# and its caches doubled the size of every target directory (CI's disk is
# bounded: a full run with --arm builds five of them). Set it to 1 to keep
# incremental builds between runs.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

echo "== toolchain"
cargo --version
df -h . | awk 'NR == 2 { print "disk: " $4 " free of " $2 }'
rustc --version

echo "== format and lints"
rustup component add rustfmt clippy >/dev/null 2>&1 || true
if cargo fmt --version >/dev/null 2>&1; then
  cargo fmt --all -- --check
fi
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --workspace --all-targets -- -D warnings
fi

echo "== compilers for the whole-program tests"
scripts/setup-whole.sh

# pip into the Python the tests run (`python3` on PATH); a Python that is
# managed by the system (PEP 668) gets a user install.
pip_install() { # module-to-import package...
  local module=$1
  shift
  python3 -c "import $module" 2>/dev/null && return 0
  echo "test.sh: pip install $*"
  python3 -m pip install --quiet "$@" 2>/dev/null \
    || python3 -m pip install --quiet --user --break-system-packages "$@"
}

echo "== Perfetto's trace schema (decodes the --perfetto export in the tests)"
pip_install perfetto.protos.perfetto.trace.perfetto_trace_pb2 perfetto protobuf

echo "== Prometheus's Python client (parses the /metrics exposition in the tests)"
pip_install prometheus_client.parser prometheus_client

echo "== Prometheus server (scrapes /metrics in the tests: tests/it/prometheus.rs)"
if ! command -v prometheus >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: prometheus is missing; run as root: apt-get install -y prometheus" >&2
    exit 1
  fi
  echo "test.sh: apt-get install prometheus"
  apt-get update -qq || echo "test.sh: apt-get update reported errors (ignored)"
  # The package's service is not started (no init here; the tests start
  # their own servers).
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
fi
prometheus --version 2>&1 | head -1

echo "== loom models of the event ring and the trap table (core/tests/loom.rs)"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
  cargo test -p tracer-core --release --test loom

echo "== Miri over tracer-core"
rustup run nightly rustc --version >/dev/null 2>&1 || rustup toolchain install nightly --profile minimal
rustup component add --toolchain nightly miri rust-src
cargo +nightly miri test -p tracer-core

echo "== fuzz targets (fuzz/): agent requests, ring memory, recordings; 20 s each"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
(cd fuzz && for t in wire_request ring_attach recording; do
  cargo +nightly fuzz run "$t" -- -max_total_time=20 -rss_limit_mb=2048
done)

echo "== tests (host)"
cargo test --workspace

if [ "$arm" -eq 1 ]; then
  echo "== tests (ARM, under qemu-user; sets up the cross toolchain first)"
  scripts/cross-test.sh
fi
