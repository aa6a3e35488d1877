#!/usr/bin/env bash
# Set up cross-building and running of Rust tests for AArch64 and ARMv7
# (Thumb-2 and A32) on an x86-64 Debian 12 machine, as described in
# shared/CROSS-ARM.md. Run as root. Idempotent: work already done is skipped.
#
# Result:
#   /usr/bin/rustc                     Debian's rustc-web (1.85), pinned to the
#                                      version of the target std libraries
#   /usr/lib/rustlib/{aarch64-unknown-linux-gnu,armv7-unknown-linux-gnueabihf}
#   aarch64-linux-gnu-gcc, arm-linux-gnueabihf-gcc, qemu-aarch64, qemu-arm
#
# Only apt is used to download anything.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
TARGETS=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
RUSTLIB=/usr/lib/rustlib
STAMP=.tracer-cross-version   # records the Debian version unpacked into each target dir

log() { echo "setup-cross: $*"; }
die() { echo "setup-cross: error: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"

pkg_version() { # installed version of a package, or empty
  dpkg-query -W -f='${db:Status-Abbrev} ${Version}\n' "$1" 2>/dev/null |
    awk '$1 == "ii" {print $2}' || true
}

# Does /usr/bin/rustc accept the std library unpacked for target $1?
target_ok() {
  local t=$1 want=$2
  [ -d "$RUSTLIB/$t/lib" ] || return 1
  [ "$(cat "$RUSTLIB/$t/$STAMP" 2>/dev/null)" = "$want" ] || return 1
  # Never -o /dev/null: rustc renames its output into place and would replace
  # /dev/null with a regular file.
  local out rc=0
  out=$(mktemp -d)
  echo 'fn main() {}' |
    /usr/bin/rustc --edition 2021 --target "$t" --crate-type bin \
      --emit=metadata --out-dir "$out" - >/dev/null 2>&1 || rc=$?
  rm -rf "$out"
  return "$rc"
}

tools_ok() {
  local c p
  for c in aarch64-linux-gnu-gcc arm-linux-gnueabihf-gcc qemu-aarch64 qemu-arm; do
    command -v "$c" >/dev/null 2>&1 || return 1
  done
  for p in libc6-dev-arm64-cross libc6-dev-armhf-cross; do
    [ -n "$(pkg_version "$p")" ] || return 1
  done
}

# Fast path: everything already in place and consistent.
R=$(pkg_version rustc-web)
if [ -n "$R" ] && [ -x /usr/bin/rustc ] && tools_ok &&
   target_ok "${TARGETS[0]}" "$R" && target_ok "${TARGETS[1]}" "$R"; then
  log "already set up: rustc-web $R ($(/usr/bin/rustc -V)), targets ${TARGETS[*]}, cross gcc, qemu-user"
  exit 0
fi

# 1. Foreign architectures.
for a in arm64 armhf; do
  if grep -qx "$a" <<<"$(dpkg --print-foreign-architectures)"; then
    log "architecture $a already added"
  else
    log "adding architecture $a"
    dpkg --add-architecture "$a"
  fi
done

# 2. Package lists. A foreign arch's security index can be briefly out of sync
# with main; main is enough, so a partial failure is tolerated.
log "apt-get update"
apt-get update -qq || log "apt-get update reported errors (ignored)"

# 3. Version: that of the arm64 target std library; amd64 rustc-web is pinned to it.
V=$(apt-cache madison libstd-rust-web-dev:arm64 | awk 'NR==1 {print $3}')
[ -n "$V" ] || die "libstd-rust-web-dev:arm64 not found by apt-cache madison"
MAJ=$(echo "$V" | cut -d. -f1-2)
log "target std version $V (rustc $MAJ)"

# 4. Host packages: rustc-web pinned, cross linkers + libc, qemu-user.
if [ "$R" = "$V" ] && [ "$(pkg_version libstd-rust-web-dev)" = "$V" ] && tools_ok; then
  log "rustc-web $V, cross gcc and qemu-user already installed"
else
  log "installing rustc-web=$V, cross gcc, cross libc, qemu-user"
  apt-get install -y -qq --no-install-recommends --allow-downgrades \
    "rustc-web=$V" "libstd-rust-web-dev=$V" "libstd-rust-web-$MAJ=$V" \
    gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf \
    libc6-dev-arm64-cross libc6-dev-armhf-cross qemu-user >/dev/null
fi
/usr/bin/rustc -V | grep -q " $MAJ\." || die "/usr/bin/rustc is $(/usr/bin/rustc -V), expected $MAJ"

# 5. Target std libraries, unpacked without their runtime dependencies
# (installing them as packages drags in arm64 copies of LLVM and conflicts).
if target_ok "${TARGETS[0]}" "$V" && target_ok "${TARGETS[1]}" "$V"; then
  log "target std libraries $V already unpacked"
else
  log "unpacking libstd-rust-web-dev:arm64/armhf=$V into $RUSTLIB"
  d=$(mktemp -d)
  trap 'rm -rf "$d"' EXIT
  chown _apt "$d" 2>/dev/null || true   # lets apt download sandboxed, as its _apt user
  (cd "$d" && apt-get download -qq "libstd-rust-web-dev:arm64=$V" "libstd-rust-web-dev:armhf=$V")
  for f in "$d"/*.deb; do dpkg -x "$f" "$d/root"; done
  for t in "${TARGETS[@]}"; do
    [ -d "$d/root$RUSTLIB/$t" ] || die "$t missing from the downloaded packages"
    rm -rf "${RUSTLIB:?}/$t"   # an older version's rlibs would make std ambiguous
    cp -r "$d/root$RUSTLIB/$t" "$RUSTLIB/"
    echo "$V" > "$RUSTLIB/$t/$STAMP"
  done
fi

# 6. Check.
for t in "${TARGETS[@]}"; do
  target_ok "$t" "$V" || die "/usr/bin/rustc cannot build for $t"
done
tools_ok || die "cross gcc / qemu-user missing after install"
log "done: $(/usr/bin/rustc -V) with ${TARGETS[*]}; $(qemu-aarch64 --version | head -1)"
