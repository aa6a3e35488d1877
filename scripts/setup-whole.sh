#!/usr/bin/env bash
# Compilers the whole-program tests build their C, C++ and Rust fixtures
# with, and the peers of the side-by-side benchmark. Idempotent; needs root
# to install (as a user it only checks).
#
#   gcc, g++               -fpatchable-function-entry=5 and -pg -mnop-mcount pads
#   clang-19, lld-19       -fpatchable-function-entry=5, a library linked by lld
#   libclang-rt-19-dev     LLVM XRay (benchmark only), llvm-19
#   uftrace                (benchmark only)
#   gdb                    a backtrace through hooked returns (whole_c test)
#   rustup nightly         -Z patchable-function-entry=5 (whole Rust program test)
set -euo pipefail
need=()
command -v g++ >/dev/null || need+=(g++)
command -v clang-19 >/dev/null || need+=(clang-19)
command -v ld.lld-19 >/dev/null || need+=(lld-19)
command -v uftrace >/dev/null || need+=(uftrace)
command -v gdb >/dev/null || need+=(gdb)
[ -e "$(clang-19 --print-file-name=libclang_rt.xray-x86_64.a 2>/dev/null || echo /nonexistent)" ] \
  || need+=(libclang-rt-19-dev llvm-19)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup-whole: missing ${need[*]}; run as root: apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  echo "setup-whole: apt-get install ${need[*]}"
  apt-get update -qq || echo "setup-whole: apt-get update reported errors (ignored)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
if command -v rustup >/dev/null && ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "setup-whole: installing the nightly toolchain (minimal profile)"
  rustup toolchain install nightly --profile minimal || echo "setup-whole: no nightly; the whole-Rust test will say it skipped"
fi
