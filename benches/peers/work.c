/*
 * Peer benchmark workload: one small leaf function called N times.
 *
 * Built by benches/benches/peers.rs with several tracers' instrumentation
 * (none, patchable-function-entry pads, -pg, XRay) and run under each tracer.
 * Prints the mean wall-clock cost of one loop iteration as `ns_per_call=<f>`,
 * and the loop thread's CPU time per iteration as `cpu_ns_per_call=<f>`.
 *
 * Usage: work [N]   (default N = 20000000)
 *
 * Built with -DWORK_XRAY_FDR (and -fxray-instrument), main starts XRay's
 * flight-data-recorder mode before the timed loop and finalizes and flushes it
 * after: FDR mode is not started by XRAY_OPTIONS alone (xray_mode=xray-fdr only
 * selects it, its handler then runs but records nothing).
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#ifdef WORK_XRAY_FDR
/* From <xray/xray_log_interface.h>, which is C++ only; the enums are ints. */
int __xray_log_init_mode(const char *mode, const char *config);
int __xray_log_finalize(void);
int __xray_log_flushLog(void);
#define WORK_XRAY_LOG_INITIALIZED 2
#define WORK_XRAY_LOG_FLUSHED 2
#endif

#ifdef WORK_FLOOR
/*
 * The floor of any function tracer that records each call: built with
 * -finstrument-functions, every entry and exit takes one rdtsc and stores
 * 16 bytes (the time and the function) into a thread-local ring. Nothing
 * else: no nesting, no drops counted, no way to turn it off.
 */
#include <x86intrin.h>
struct floor_ev {
    unsigned long long ts;
    void *fn;
};
static __thread struct floor_ev floor_ring[1 << 12];
static __thread unsigned floor_at;

__attribute__((no_instrument_function)) void __cyg_profile_func_enter(void *fn, void *site)
{
    (void)site;
    struct floor_ev *e = &floor_ring[floor_at++ & ((1 << 12) - 1)];
    e->ts = __rdtsc();
    e->fn = fn;
}

__attribute__((no_instrument_function)) void __cyg_profile_func_exit(void *fn, void *site)
{
    (void)site;
    struct floor_ev *e = &floor_ring[floor_at++ & ((1 << 12) - 1)];
    e->ts = __rdtsc();
    e->fn = (void *)((unsigned long)fn | 1);
}
#endif

__attribute__((noinline)) int leaf(int x)
{
    /* Keeps the call and its body from being folded into the loop. */
    __asm__ volatile("" ::: "memory");
    return x * 3 + 1;
}

#ifdef WORK_FLOOR
__attribute__((no_instrument_function))
#endif
int main(int argc, char **argv)
{
    long n = 20000000L;
    if (argc > 1) {
        n = strtol(argv[1], NULL, 10);
        if (n <= 0) {
            fprintf(stderr, "usage: %s [N>0]\n", argv[0]);
            return 2;
        }
    }

#ifdef WORK_XRAY_FDR
    if (__xray_log_init_mode("xray-fdr", "") != WORK_XRAY_LOG_INITIALIZED) {
        fprintf(stderr, "work: XRay FDR mode did not initialize\n");
        return 3;
    }
#endif

    struct timespec t0, t1, c0, c1;
    int acc = 0;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < n; i++)
        acc += leaf((int)i);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);

    double ns = (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec);
    double cpu = (double)(c1.tv_sec - c0.tv_sec) * 1e9 + (double)(c1.tv_nsec - c0.tv_nsec);
#ifdef WORK_XRAY_FDR
    __xray_log_finalize();
    if (__xray_log_flushLog() != WORK_XRAY_LOG_FLUSHED) {
        fprintf(stderr, "work: XRay FDR log not flushed\n");
        return 3;
    }
#endif
    printf("ns_per_call=%.3f\n", ns / (double)n);
    /* This thread's CPU time only: not inflated when a loaded machine
     * preempts the loop (nor does it count a tracer's other threads). */
    printf("cpu_ns_per_call=%.3f\n", cpu / (double)n);
    /* Print the result on stderr so the loop cannot be removed. */
    fprintf(stderr, "acc=%d\n", acc);
    return 0;
}
