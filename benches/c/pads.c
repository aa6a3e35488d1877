/* Compiler-padded twins for the capture benchmark (benches/capture.rs):
   the same small function three times, so each can be enabled its own way. */
#define BODY(x) return (long)((unsigned long)(x) * 0x9e3779b97f4a7c15ul >> 7) + n
__attribute__((noinline)) long cp_disabled(long x, int n) { BODY(x); }
__attribute__((noinline)) long cp_enabled(long x, int n) { BODY(x); }
__attribute__((noinline)) long cp_capture(long x, int n) { BODY(x); }
