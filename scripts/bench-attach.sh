#!/usr/bin/env bash
# Issue 13's benchmark: time from `tracer attach` to the first enabled event
# for a program with 10,000 padded functions, and the pause its threads see.
#
#   scripts/bench-attach.sh [N_FUNCTIONS] [ROUNDS]
#
# Builds (release) the tracer and the preload library, generates a C program
# with N padded functions (clang-19 -fpatchable-function-entry=5), starts it
# plainly, then per round: attach, enable 'f*', wait for the first event of
# `tracer trace`, detach. The program has one thread calling every function
# in turn (with a 1 ms nap per sweep) and one spinning on
# clock_gettime(CLOCK_MONOTONIC) that reports the longest gap it saw between
# two readings (the pause a running thread sees; the longest gap with no
# attach is printed for comparison).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
ROUNDS=${2:-5}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build -q --release -p tracer-cli -p tracer-preload
T=$CARGO_TARGET_DIR/release/tracer
W=$(mktemp -d)
trap 'kill $PID 2>/dev/null || true; rm -rf "$W"' EXIT
python3 - "$N" > "$W/many.c" <<'PY'
import sys
n = int(sys.argv[1])
print('#include <stdio.h>\n#include <string.h>\n#include <pthread.h>\n#include <time.h>\n#include <unistd.h>')
for i in range(n):
    print(f'__attribute__((noinline)) int f{i}(int x) {{ __asm__ volatile("" : "+r"(x)); return x + {i}; }}')
print('typedef int (*fn)(int);\nstatic fn all[] = {' + ','.join(f'f{i}' for i in range(n)) + '};')
print(r'''
static volatile int stop;
static long long now_ns(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1000000000LL + t.tv_nsec; }
static volatile long long max_gap, reset_gap;
static void *spin(void *a) {
  (void)a; long long last = now_ns();
  while (!stop) { long long t = now_ns(); if (reset_gap) { reset_gap = 0; max_gap = 0; } if (t - last > max_gap) max_gap = t - last; last = t; }
  return NULL;
}
static void *call(void *a) {
  (void)a; long s = 0;
  while (!stop) { for (unsigned i = 0; i < sizeof all / sizeof *all; i++) s += all[i](1); usleep(1000); }
  return (void *)s;
}
int main(void) {
  pthread_t a, b; pthread_create(&a, NULL, spin, NULL); pthread_create(&b, NULL, call, NULL);
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("ready\n");
  char line[64];
  while (fgets(line, sizeof line, stdin)) {
    if (!strncmp(line, "gap", 3)) { printf("gap_us %lld\n", max_gap / 1000); reset_gap = 1; }
    if (!strncmp(line, "stop", 4)) break;
  }
  stop = 1; pthread_join(a, NULL); pthread_join(b, NULL); return 0;
}''')
PY
clang-19 -O1 -fpatchable-function-entry=5 -pthread -o "$W/many" "$W/many.c"
mkfifo "$W/in" "$W/out"
"$W/many" < "$W/in" > "$W/out" &
PID=$!
exec 3> "$W/in" 4< "$W/out"
read -r ready <&4
sleep 0.5
echo gap >&3; read -r _ <&4 # reset
sleep 1
echo gap >&3; read -r base <&4
echo "functions: $N; longest gap of the spinning thread over 1 s without attach: ${base#gap_us } us"
printf '%-6s %12s %12s %12s %14s %16s\n' round attach_ms stop_all_ms loader_ms first_event_ms spin_gap_us
for r in $(seq 1 "$ROUNDS"); do
  echo gap >&3; read -r _ <&4
  t0=$(date +%s%N)
  j=$($T attach -p "$PID" --json)
  t1=$(date +%s%N)
  $T enable -p "$PID" 'f*' > /dev/null
  $T trace -p "$PID" --duration 10s 2>/dev/null | grep -m1 -q ' f[0-9]' || true
  t2=$(date +%s%N)
  echo gap >&3; read -r gap <&4
  $T detach -p "$PID" > /dev/null
  python3 - "$j" "$t0" "$t1" "$t2" "$r" "${gap#gap_us }" <<'PY'
import json, sys
j = json.loads(sys.argv[1]); t0, t1, t2 = map(int, sys.argv[2:5])
print(f"{sys.argv[5]:<6} {(t1-t0)/1e6:12.1f} {j['pause_all_us']/1e3:12.1f} {j['pause_loader_us']/1e3:12.1f} {(t2-t0)/1e6:14.1f} {sys.argv[6]:>16}")
PY
done
echo stop >&3
wait "$PID"
