/* bench.c - ptelab-bench: the numbers of the performance issue, in one table.
 *
 *   ptelab bench [--quick] [--only TEXT]    (also ptelab-bench, which make bench builds)
 *   --quick      shorter runs, same rows (about half a minute)
 *   --only TEXT  just the rows whose name contains TEXT
 *
 * Spool rows: the reference allocator (spool_ref.c) against the fast one (spool_fast.c)
 * on the same workload; ratio = ref / fast (higher is better). MMU, mapping rows: native
 * host code against the emulated path; ratio = emulated / native (lower is better).
 * Every time is the median over RUNS timed runs (after a calibration run that is also the
 * warm-up); a run's operation count is chosen so that it lasts about a target time, and
 * the reference's is capped where it is slow (the table shows both counts: a smaller
 * count for ref means it was capped; no number is extrapolated from another workload).
 * Time: clock_gettime(CLOCK_MONOTONIC). No result depends on timing.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "internal.h"
#include "spool.h"
#include <ptelab/wdm.h>

#define RUNS 5

static int quick;
static double run_ns;    /* target duration of one timed run */
static const char *only; /* --only TEXT: run just the rows whose name contains TEXT */

static int wanted(const char *name)
{
    return !only || strstr(name, only) != NULL;
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

static void sink(uint64_t v)
{
    __asm__ volatile("" : : "r"(v) : "memory");
}

/* ---- the table ---------------------------------------------------------------------- */

typedef struct row {
    char name[96];
    double a, b;        /* ns per operation: ref/native, fast/emulated */
    long a_ops, b_ops;  /* operations per timed run */
    int ratio_is_speed; /* 1: a/b (speed-up), 0: b/a (cost) */
    char note[80];
    char target[64];
} row;

static row rows[64];
static int nrows;

static row *add_row(const char *name)
{
    row *r = &rows[nrows++];
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "%s", name);
    return r;
}

static double ratio_of(const row *r)
{
    if (r->a <= 0 || r->b <= 0)
        return 0;
    return r->ratio_is_speed ? r->a / r->b : r->b / r->a;
}

static void print_table(void)
{
    printf("| %-52s | %12s | %12s | %8s | %-19s | %-44s | %-46s |\n", "workload", "ref/native",
           "fast/emul.", "ratio", "ops/run ref, fast", "notes", "target");
    printf("|%.54s|%.14s|%.14s|%.10s|%.21s|%.46s|%.48s|\n",
           "------------------------------------------------------------",
           "------------------------------------------------------------",
           "------------------------------------------------------------",
           "------------------------------------------------------------",
           "------------------------------------------------------------",
           "------------------------------------------------------------",
           "------------------------------------------------------------");
    for (int i = 0; i < nrows; i++) {
        if (!wanted(rows[i].name))
            continue; /* measured alongside a wanted one */
        const row *r = &rows[i];
        char a[24] = "", b[24] = "", ra[24] = "", ops[40] = "";
        if (r->a > 0)
            snprintf(a, sizeof a, r->a < 100 ? "%.1f" : "%.0f", r->a);
        if (r->b > 0)
            snprintf(b, sizeof b, r->b < 100 ? "%.1f" : "%.0f", r->b);
        if (ratio_of(r) > 0)
            snprintf(ra, sizeof ra, "%.2fx", ratio_of(r));
        if (r->a_ops || r->b_ops)
            snprintf(ops, sizeof ops, "%ld%s, %ld", r->a_ops, r->a_ops < r->b_ops ? " (cap)" : "",
                     r->b_ops);
        printf("| %-52s | %12s | %12s | %8s | %-19s | %-44s | %-46s |\n", r->name, a, b, ra, ops,
               r->note, r->target);
    }
}

/* ---- spool workloads ---------------------------------------------------------------- */

typedef enum wl_kind {
    WL_LIFO1,    /* alloc(1), free it */
    WL_RAND100,  /* alloc(1..100), free it */
    WL_FULLFIT,  /* every other index a 1-page hole; then 1-page pairs */
    WL_LONGBUSY, /* 15,000 1-page runs held with 1-page holes between; then 100 + 1 pairs */
    WL_EMPTY101, /* the long-busy pairs on an empty pool: its baseline */
    WL_CHURN,    /* steady occupancy, sizes log-uniform */
} wl_kind;

typedef struct held {
    uint32_t start, n;
} held;

#define SIZES 65536u

typedef struct wl {
    wl_kind kind;
    ptl__spool *sp;
    uint32_t total, used, target_used;
    uint16_t *sizes;
    uint32_t si;
    held *h;
    size_t nheld, cap;
    long failed, failed_frag, steps;
} wl;

static void make_sizes(wl *w, uint32_t max)
{
    w->sizes = malloc(SIZES * sizeof *w->sizes);
    for (uint32_t i = 0; i < SIZES; i++) {
        double u = (rnd() & 0xFFFFFF) / 16777216.0;
        uint32_t n = (uint32_t)exp(u * log((double)max + 1));
        w->sizes[i] = (uint16_t)(n < 1 ? 1 : n > max ? max : n);
    }
}

static void hold(wl *w, uint32_t start, uint32_t n)
{
    if (w->nheld == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 1024;
        w->h = realloc(w->h, w->cap * sizeof *w->h);
    }
    w->h[w->nheld++] = (held){start, n};
}

static void wl_setup(wl *w, ptl__spool_impl impl, wl_kind kind, uint32_t total, int occupancy,
                     uint32_t max_size)
{
    memset(w, 0, sizeof *w);
    rng = 0x9E3779B97F4A7C15ull ^ total ^ ((uint64_t)kind << 40) ^ ((uint64_t)max_size << 20) ^
          (uint64_t)occupancy; /* the same trace for both implementations */
    w->kind = kind;
    w->total = total;
    w->sp = ptl__spool_create(impl, total, 0);
    if (kind == WL_RAND100 || kind == WL_CHURN)
        make_sizes(w, kind == WL_RAND100 ? 100 : max_size);
    if (kind == WL_RAND100) /* uniform 1..100 */
        for (uint32_t i = 0; i < SIZES; i++)
            w->sizes[i] = (uint16_t)(1 + rnd() % 100);
    if (kind == WL_FULLFIT) {
        /* reserve everything, release every other index in address order (cheap for both) */
        ptl__spool_reserve_at(w->sp, 0, total);
        for (uint32_t i = 0; i < total; i += 2)
            ptl__spool_free(w->sp, i, 1);
    } else if (kind == WL_LONGBUSY) {
        ptl__spool_reserve_at(w->sp, 0, 30000);
        for (uint32_t i = 1; i < 30000; i += 2)
            ptl__spool_free(w->sp, i, 1);
    } else if (kind == WL_CHURN) {
        /* fill from the bottom, then release a random subset in address order down to the
         * occupancy: a fragmented steady state, reached in O(n log n) by both */
        for (;;) {
            uint32_t n = w->sizes[w->si++ & (SIZES - 1)];
            int64_t s = ptl__spool_alloc(w->sp, n);
            if (s < 0)
                break;
            hold(w, (uint32_t)s, n);
            w->used += n;
        }
        w->target_used = (uint32_t)((uint64_t)total * (uint64_t)occupancy / 100);
        double p = 1.0 - (double)w->target_used / w->used;
        size_t k = 0;
        for (size_t i = 0; i < w->nheld; i++) {
            if ((rnd() & 0xFFFFFF) < p * 16777216.0) {
                ptl__spool_free(w->sp, w->h[i].start, w->h[i].n);
                w->used -= w->h[i].n;
            } else {
                w->h[k++] = w->h[i];
            }
        }
        w->nheld = k;
    }
}

static void wl_teardown(wl *w)
{
    ptl__spool_destroy(w->sp);
    free(w->sizes);
    free(w->h);
}

/* Run ops operations (alloc+free pairs); returns the elapsed ns. */
static double wl_run(wl *w, long ops)
{
    ptl__spool *sp = w->sp;
    double t0 = now_ns();
    switch (w->kind) {
    case WL_LIFO1:
    case WL_FULLFIT:
        for (long i = 0; i < ops; i++) {
            int64_t s = ptl__spool_alloc(sp, 1);
            ptl__spool_free(sp, (uint32_t)s, 1);
        }
        break;
    case WL_RAND100:
        for (long i = 0; i < ops; i++) {
            uint32_t n = w->sizes[w->si++ & (SIZES - 1)];
            int64_t s = ptl__spool_alloc(sp, n);
            if (s >= 0)
                ptl__spool_free(sp, (uint32_t)s, n);
        }
        break;
    case WL_LONGBUSY:
    case WL_EMPTY101:
        for (long i = 0; i < ops; i += 2) {
            int64_t a = ptl__spool_alloc(sp, 100), b = ptl__spool_alloc(sp, 1);
            ptl__spool_free(sp, (uint32_t)a, 100);
            ptl__spool_free(sp, (uint32_t)b, 1);
        }
        break;
    case WL_CHURN:
        for (long i = 0; i < 2 * ops; i++) {
            if (w->used < w->target_used || w->nheld == 0) {
                uint32_t n = w->sizes[w->si++ & (SIZES - 1)];
                int64_t s = ptl__spool_alloc(sp, n);
                if (s >= 0) {
                    hold(w, (uint32_t)s, n);
                    w->used += n;
                } else {
                    w->failed++;
                    w->failed_frag += w->total - w->used >= n;
                }
            } else {
                size_t k = (size_t)(((uint64_t)rnd() * w->nheld) >> 32); /* no division */
                ptl__spool_free(sp, w->h[k].start, w->h[k].n);
                w->used -= w->h[k].n;
                w->h[k] = w->h[--w->nheld];
            }
            w->steps++;
        }
        break;
    }
    return now_ns() - t0;
}

/* Calibrate (also the warm-up), then RUNS timed runs: the median ns per operation. */
static double measure(wl *w, long cap, long *ops_out)
{
    long ops = 2;
    double t;
    for (;;) {
        t = wl_run(w, ops);
        if (t >= run_ns / 8 || ops >= cap)
            break;
        ops *= 4;
    }
    double per = t / (double)ops;
    long want = (long)(run_ns / (per > 0.1 ? per : 0.1));
    if (want > cap)
        want = cap;
    if (want < 2)
        want = 2;
    double v[RUNS];
    for (int r = 0; r < RUNS; r++)
        v[r] = wl_run(w, want) / (double)want;
    *ops_out = want;
    return median(v, RUNS);
}

typedef struct spool_result {
    double ns;
    long ops;
    double frag;
    long failed, failed_frag, steps;
} spool_result;

static spool_result spool_one(ptl__spool_impl impl, wl_kind kind, uint32_t total, int occ,
                              uint32_t max_size, long cap)
{
    wl w;
    spool_result r;
    memset(&r, 0, sizeof r);
    wl_setup(&w, impl, kind, total, occ, max_size);
    r.ns = measure(&w, cap, &r.ops);
    ptl__spool_stats st;
    ptl__spool_stats_get(w.sp, &st);
    r.frag = st.free ? 1.0 - (double)st.largest / st.free : 0;
    r.failed = w.failed;
    r.failed_frag = w.failed_frag;
    r.steps = w.steps;
    wl_teardown(&w);
    return r;
}

static row *spool_row(const char *name, wl_kind kind, uint32_t total, int occ, uint32_t max_size,
                      long ref_cap)
{
    static row skipped;
    if (!wanted(name)) {
        memset(&skipped, 0, sizeof skipped);
        return &skipped;
    }
    fprintf(stderr, "  %s ...\n", name);
    long cap = 1L << 24;
    spool_result a = spool_one(PTL_SPOOL_REF, kind, total, occ, max_size, ref_cap);
    spool_result b = spool_one(PTL_SPOOL_FAST, kind, total, occ, max_size, cap);
    row *r = add_row(name);
    r->a = a.ns;
    r->b = b.ns;
    r->a_ops = a.ops;
    r->b_ops = b.ops;
    r->ratio_is_speed = 1;
    if (kind == WL_CHURN)
        snprintf(r->note, sizeof r->note, "frag %.3f; %ld/%ld refused (fragmented)", b.frag,
                 b.failed_frag, b.steps);
    return r;
}

static void spool_rows(uint32_t total)
{
    char name[96], pool[32];
    int big = total > 1000000;
    snprintf(pool, sizeof pool, "%u", total);
    /* the reference is O(runs) per operation: cap its runs at the big pool */
    long ref_cap_frag = big ? (quick ? 8 : 40) : (1L << 24);
    double target_pair = big ? 200 : 60;

    snprintf(name, sizeof name, "spool %s: 1-page LIFO pairs", pool);
    row *lifo = spool_row(name, WL_LIFO1, total, 0, 0, 1L << 24);
    snprintf(name, sizeof name, "spool %s: random 1-100 pages, freed at once", pool);
    spool_row(name, WL_RAND100, total, 0, 0, 1L << 24);
    snprintf(name, sizeof name, "spool %s: full-fit (1-page holes), 1-page pairs", pool);
    row *ff = spool_row(name, WL_FULLFIT, total, 0, 0, ref_cap_frag);
    snprintf(name, sizeof name, "spool %s: 100+1-page pairs, empty pool", pool);
    row *e101 = spool_row(name, WL_EMPTY101, total, 0, 0, 1L << 24);
    snprintf(name, sizeof name, "spool %s: long-busy (15,000 held), 100+1 pairs", pool);
    row *lb = spool_row(name, WL_LONGBUSY, total, 0, 0, 1L << 24);
    snprintf(ff->target, sizeof ff->target, "fast <= 2x empty (1-page pairs): %.2fx %s",
             ff->b / lifo->b, ff->b <= 2 * lifo->b ? "met" : "MISSED");
    snprintf(lb->target, sizeof lb->target, "fast <= 2x empty (100+1 pairs): %.2fx %s",
             lb->b / e101->b, lb->b <= 2 * e101->b ? "met" : "MISSED");
    static const int occ[2] = {50, 90};
    static const uint32_t maxs[2] = {16, 1024};
    for (int o = 0; o < 2; o++) {
        for (int s = 0; s < 2; s++) {
            snprintf(name, sizeof name, "spool %s: churn %d%%, sizes 1-%u (log-uniform)", pool,
                     occ[o], maxs[s]);
            row *r = spool_row(name, WL_CHURN, total, occ[o], maxs[s], ref_cap_frag);
            int pair_ok = r->b <= target_pair;
            if (occ[o] == 90)
                snprintf(r->target, sizeof r->target, "pair <= %.0f ns %s; >= 10x ref %s",
                         target_pair, pair_ok ? "met" : "MISSED",
                         ratio_of(r) >= 10 ? "met" : "MISSED");
            else
                snprintf(r->target, sizeof r->target, "pair <= %.0f ns %s", target_pair,
                         pair_ok ? "met" : "MISSED");
        }
    }
}

/* ---- the differential run: the same placement, bit for bit --------------------------
 * Both allocators take the same random trace (allocations of log-uniform sizes, frees of
 * random held runs, a few reserve_at of random ranges) and must answer every call alike;
 * the bench runs 10^7 operations in all (10^6 with --quick), over both policies and pools
 * from 4,133 to 50,000 indices. A mismatch is printed and fails the bench. */
static long diff_run(uint32_t total, int policy, long ops, long *mismatches)
{
    ptl__spool *ref = ptl__spool_create(PTL_SPOOL_REF, total, policy);
    ptl__spool *fast = ptl__spool_create(PTL_SPOOL_FAST, total, policy);
    held *h = malloc((size_t)total * sizeof *h);
    size_t nh = 0;
    long done = 0;
    for (; done < ops; done++) {
        uint32_t r = rnd();
        if (nh && (r & 3) == 0) { /* free a random held run */
            size_t k = (size_t)(((uint64_t)rnd() * nh) >> 32);
            ptl__spool_free(ref, h[k].start, h[k].n);
            ptl__spool_free(fast, h[k].start, h[k].n);
            h[k] = h[--nh];
        } else if ((r & 63) == 1) { /* reserve a random exact range */
            uint32_t n = 1 + rnd() % 64, at = rnd() % total;
            int a = ptl__spool_reserve_at(ref, at, n), b = ptl__spool_reserve_at(fast, at, n);
            if (a != b) {
                fprintf(stderr, "differential: reserve_at(%u, %u): ref %d, fast %d\n", at, n, a, b);
                ++*mismatches;
                break;
            }
            if (a == 0)
                h[nh++] = (held){at, n};
        } else { /* allocate; when the pool is full, free instead next time */
            double u = (rnd() & 0xFFFFFF) / 16777216.0;
            uint32_t n = (uint32_t)exp(u * log(1025.0));
            n = n < 1 ? 1 : n;
            int64_t a = ptl__spool_alloc(ref, n), b = ptl__spool_alloc(fast, n);
            if (a != b) {
                fprintf(stderr, "differential: alloc(%u): ref %lld, fast %lld\n", n, (long long)a,
                        (long long)b);
                ++*mismatches;
                break;
            }
            if (a >= 0)
                h[nh++] = (held){(uint32_t)a, n};
            else if (nh) { /* full: drop a random run from both */
                size_t k = (size_t)(((uint64_t)rnd() * nh) >> 32);
                ptl__spool_free(ref, h[k].start, h[k].n);
                ptl__spool_free(fast, h[k].start, h[k].n);
                h[k] = h[--nh];
            }
        }
    }
    ptl__spool_stats x, y;
    ptl__spool_stats_get(ref, &x);
    ptl__spool_stats_get(fast, &y);
    if (memcmp(&x, &y, sizeof x) != 0 || ptl__spool_check(fast, stderr) != 0) {
        fprintf(stderr, "differential: the statistics differ at the end (pool %u)\n", total);
        ++*mismatches;
    }
    free(h);
    ptl__spool_destroy(ref);
    ptl__spool_destroy(fast);
    return done;
}

static void diff_row(void)
{
    static const uint32_t pools[] = {4133, 12000, 50000, 50000};
    long want = quick ? 1000000 : 10000000, total_ops = 0, mismatches = 0;
    double t0 = now_ns();
    fprintf(stderr, "  differential ...\n");
    rng = 0xD1FF5EEDull;
    for (int i = 0; i < 4 && !mismatches; i++)
        total_ops += diff_run(pools[i], i & 1, want / 4, &mismatches);
    row *r = add_row("spool: differential, fast vs reference placement");
    snprintf(r->note, sizeof r->note, "%ld operations, %ld mismatches, %.1f s", total_ops,
             mismatches, (now_ns() - t0) / 1e9);
    snprintf(r->target, sizeof r->target, "same placement bit for bit: %s",
             mismatches ? "MISSED" : "met");
    if (mismatches) {
        print_table();
        exit(1);
    }
}

/* ---- MMU and mapping rows, inside driver code --------------------------------------- */

#define ADAPTER  0xE0000000ull
#define MAPPAGES 1024u

typedef struct mmu_ctx {
    double hit_dep_ddi, hit_dep_copy, hit_ind_ddi, miss, copy_emul;
    double native_dep, native_ind, native_miss, native_copy;
    long n_hit, n_miss, n_copy;
    double map_ns[4], store_ns[4];
    long map_ops[4], store_ops[4];
    double map_native_ns[4]; /* the same mapping work with native mode on */
    long map_native_ops[4];
    int native;     /* the MMU machine runs in native mode */
    double raw_dep; /* native mode: dependent reads through the mapped pointer */
    int failed;
} mmu_ctx;

static const uint32_t map_pages[4] = {1, 16, 256, 4096};

/* The MMU and mapping rows, named in one place: mmu_rows adds them under these names, and
 * --only runs the one measurement behind them when it names any of them. */
enum { MMU_HIT_DEP, MMU_HIT_COPY, MMU_NATIVE_DEP, MMU_HIT_IND, MMU_MISS, MMU_COPY, MMU_FIXED };
static const char *const mmu_names[MMU_FIXED] = {
    "MMU: TLB hit, dependent 4-byte reads (READ_REGISTER)",
    "MMU: TLB hit, dependent 4-byte reads (ptl__mmu_copy)",
    "Native: dependent 4-byte reads through the mapped pointer",
    "MMU: TLB hit, independent 4-byte reads (READ_REGISTER)",
    "MMU: TLB miss + page walk, 4-byte read (READ_REGISTER)",
    "MMU: RtlCopyMemory 1 MB from MmMapIoSpace vs memcpy",
};

static void mapping_row_name(char *buf, size_t n, int native_mode, uint32_t pages)
{
    snprintf(buf, n, "Mapping%s: MmMapIoSpace+MmUnmapIoSpace, %u page%s",
             native_mode ? ", native mode" : "", pages, pages > 1 ? "s" : "");
}

static int mmu_rows_wanted(void)
{
    char name[96];
    for (int i = 0; i < MMU_FIXED; i++)
        if (wanted(mmu_names[i]))
            return 1;
    for (int k = 0; k < 4; k++)
        for (int native_mode = 0; native_mode < 2; native_mode++) {
            mapping_row_name(name, sizeof name, native_mode, map_pages[k]);
            if (wanted(name))
                return 1;
        }
    return 0;
}

static uint32_t *chain_perm(void)
{
    /* a random cyclic permutation of the 1024 words of a page: next = p[cur] */
    uint32_t order[1024], *next = malloc(1024 * sizeof *next);
    for (uint32_t i = 0; i < 1024; i++)
        order[i] = i;
    for (uint32_t i = 1023; i > 0; i--) {
        uint32_t j = rnd() % (i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (uint32_t i = 0; i < 1024; i++)
        next[order[i]] = order[(i + 1) % 1024];
    return next;
}

static void mmu_driver(void *arg)
{
    mmu_ctx *c = arg;
    ptl_machine *m = ptl_current();
    PHYSICAL_ADDRESS pa;
    pa.QuadPart = (LONGLONG)ADAPTER;
    volatile ULONG *base = MmMapIoSpace(pa, MAPPAGES * PAGE_SIZE, MmNonCached);
    if (!base) {
        c->failed = 1;
        return;
    }
    uint32_t *next = chain_perm();
    RtlCopyMemory((void *)base, next, PAGE_SIZE);
    double v[RUNS], w[RUNS];
    long n = quick ? 200000 : 2000000;
    c->n_hit = n;

    /* TLB hit, dependent chain: each address comes from the value read */
    for (int r = 0; r < RUNS; r++) {
        uint32_t idx = 0;
        double t0 = now_ns();
        for (long i = 0; i < n; i++)
            idx = READ_REGISTER_ULONG(base + idx);
        v[r] = (now_ns() - t0) / n;
        sink(idx);
        idx = 0;
        t0 = now_ns();
        for (long i = 0; i < n; i++)
            idx = next[idx];
        w[r] = (now_ns() - t0) / n;
        sink(idx);
    }
    c->hit_dep_ddi = median(v, RUNS);
    c->native_dep = median(w, RUNS);
    c->native = ptl_native(m);
    if (c->native) { /* the driver's own pointer: the host MMU does the translation */
        for (int r = 0; r < RUNS; r++) {
            uint32_t idx = 0;
            double t0 = now_ns();
            for (long i = 0; i < n; i++)
                idx = base[idx];
            v[r] = (now_ns() - t0) / n;
            sink(idx);
        }
        c->raw_dep = median(v, RUNS);
    }
    for (int r = 0; r < RUNS; r++) {
        uint32_t idx = 0, va = (uint32_t)(uintptr_t)base;
        double t0 = now_ns();
        for (long i = 0; i < n; i++)
            ptl__mmu_copy(m, va + idx * 4, &idx, 4, 0, 0, 1);
        v[r] = (now_ns() - t0) / n;
        sink(idx);
    }
    c->hit_dep_copy = median(v, RUNS);

    /* TLB hit, independent reads */
    volatile uint32_t *vnext = next;
    for (int r = 0; r < RUNS; r++) {
        uint64_t sum = 0;
        double t0 = now_ns();
        for (long i = 0; i < n; i++)
            sum += READ_REGISTER_ULONG(base + (i & 1023));
        v[r] = (now_ns() - t0) / n;
        sink(sum);
        sum = 0;
        t0 = now_ns();
        for (long i = 0; i < n; i++)
            sum += vnext[i & 1023];
        w[r] = (now_ns() - t0) / n;
        sink(sum);
    }
    c->hit_ind_ddi = median(v, RUNS);
    c->native_ind = median(w, RUNS);

    /* TLB miss: 512 pages cycled; pages p and p+256 share a direct-mapped slot */
    long nm = quick ? 50000 : 500000;
    c->n_miss = nm;
    uint32_t *host = calloc(512 * 1024, sizeof *host);
    volatile uint32_t *vhost = host;
    for (int r = 0; r < RUNS; r++) {
        uint64_t sum = 0;
        double t0 = now_ns();
        for (long i = 0; i < nm; i++)
            sum += READ_REGISTER_ULONG(base + (size_t)(i & 511) * 1024);
        v[r] = (now_ns() - t0) / nm;
        sink(sum);
        sum = 0;
        t0 = now_ns();
        for (long i = 0; i < nm; i++)
            sum += vhost[(size_t)(i & 511) * 1024];
        w[r] = (now_ns() - t0) / nm;
        sink(sum);
    }
    c->miss = median(v, RUNS);
    c->native_miss = median(w, RUNS);

    /* RtlCopyMemory of 1 MB out of the mapping, against memcpy between host buffers */
    long nc = quick ? 20 : 100;
    c->n_copy = nc;
    uint8_t *dst = malloc(1u << 20), *src = malloc(1u << 20);
    memset(src, 0x5A, 1u << 20);
    memset(dst, 0, 1u << 20);
    for (int r = 0; r < RUNS; r++) {
        double t0 = now_ns();
        for (long i = 0; i < nc; i++)
            RtlCopyMemory(dst, (const void *)base, 1u << 20);
        v[r] = (now_ns() - t0) / nc;
        sink(dst[rnd() & 0xFFFFF]);
        t0 = now_ns();
        for (long i = 0; i < nc; i++) {
            memcpy(dst, src, 1u << 20);
            sink((uint64_t)(uintptr_t)dst);
        }
        w[r] = (now_ns() - t0) / nc;
    }
    c->copy_emul = median(v, RUNS);
    c->native_copy = median(w, RUNS);
    free(dst);
    free(src);
    MmUnmapIoSpace((PVOID)base, MAPPAGES * PAGE_SIZE);

    free(host);
    free(next);
}

/* MmMapIoSpace + MmUnmapIoSpace of n pages, against a loop storing n 32-bit words. Each
 * size runs on a freshly booted machine with a bounded count: the machine's cost per map
 * grows with its history (see docs/performance.md). */
typedef struct map_ctx {
    int native_pass;
    mmu_ctx *c;
    int k;
} map_ctx;

/* it MmMapIoSpace+MmUnmapIoSpace pairs of `pages` pages: the elapsed ns (failed set when a
 * map returned NULL). */
static double map_unmap_pairs(PHYSICAL_ADDRESS pa, uint32_t pages, long it, int *failed)
{
    double t0 = now_ns();
    for (long i = 0; i < it; i++) {
        PVOID va = MmMapIoSpace(pa, (SIZE_T)pages * PAGE_SIZE, MmNonCached);
        if (!va) {
            *failed = 1;
            break;
        }
        MmUnmapIoSpace(va, (SIZE_T)pages * PAGE_SIZE);
    }
    return now_ns() - t0;
}

static void map_driver(void *arg)
{
    map_ctx *mc = arg;
    mmu_ctx *c = mc->c;
    int k = mc->k;
    PHYSICAL_ADDRESS pa;
    pa.QuadPart = (LONGLONG)ADAPTER;
    uint32_t *host = calloc(4096, sizeof *host);
    double v[RUNS], w[RUNS];
    uint32_t pages = map_pages[k];
    /* Calibrated like the spool rows: a run long enough (run_ns / 8 or more) that the
     * timer and an interrupt do not decide the median. A fixed 19 pairs of 4096 pages
     * (about 0.1 ms) gave ratios from 1.3x to 3.8x in back-to-back runs. */
    long it = 2;
    while (map_unmap_pairs(pa, pages, it, &c->failed) < run_ns / 8 && it < (1L << 24))
        it *= 2;
    for (int r = 0; r < RUNS; r++)
        v[r] = map_unmap_pairs(pa, pages, it, &c->failed) / it;
    if (mc->native_pass) {
        c->map_native_ns[k] = median(v, RUNS);
        c->map_native_ops[k] = it;
        free(host);
        return;
    }
    c->map_ns[k] = median(v, RUNS);
    c->map_ops[k] = it;
    long is = 2; /* the store loop, calibrated the same way */
    for (;;) {
        double t0 = now_ns();
        for (long i = 0; i < is; i++) {
            for (uint32_t j = 0; j < pages; j++)
                host[j] = (uint32_t)j | 1u;
            sink((uint64_t)(uintptr_t)host);
        }
        if (now_ns() - t0 >= run_ns / 8 || is >= (1L << 26))
            break;
        is *= 2;
    }
    for (int r = 0; r < RUNS; r++) {
        double t0 = now_ns();
        for (long i = 0; i < is; i++) {
            for (uint32_t j = 0; j < pages; j++)
                host[j] = (uint32_t)j | 1u;
            sink((uint64_t)(uintptr_t)host);
        }
        w[r] = (now_ns() - t0) / is;
    }
    c->store_ns[k] = median(w, RUNS);
    c->store_ops[k] = is;
    free(host);
}

static ptl_machine *bench_boot(ptl_driver **d, int native)
{
    ptl_config cfg;
    ptl_config_init(&cfg);
    cfg.native = native;
    ptl_machine *m = ptl_boot(&cfg);
    if (!m || ptl_adapter_add(m, PCIBus, 0, ADAPTER, 16u << 20) != 0) {
        fprintf(stderr, "ptelab-bench: boot failed: %s\n", ptl_error());
        exit(1);
    }
    *d = ptl_driver_load(m, "bench.sys", 8192);
    return m;
}

static void mmu_rows(void)
{
    fprintf(stderr, "  MMU and mapping ...\n");
    ptl_driver *d;
    ptl_machine *m = bench_boot(&d, PTL_NATIVE_AUTO);
    mmu_ctx c;
    memset(&c, 0, sizeof c);
    ptl_stop stop;
    if (ptl_call(m, NULL, d, mmu_driver, &c, &stop) != 0 || c.failed) {
        fprintf(stderr, "ptelab-bench: the MMU driver stopped (0x%x)\n", stop.code);
        exit(1);
    }
    ptl_shutdown(m);
    for (int pass = 0; pass < 2; pass++) { /* software MMU, then native mode */
        for (int k = 0; k < 4; k++) {
            map_ctx mc = {pass, &c, k};
            m = bench_boot(&d, pass ? PTL_NATIVE_AUTO : PTL_NATIVE_OFF);
            if (pass && !ptl_native(m)) {
                ptl_shutdown(m);
                break;
            }
            if (ptl_call(m, NULL, d, map_driver, &mc, &stop) != 0 || c.failed) {
                fprintf(stderr, "ptelab-bench: the mapping driver stopped (0x%x)\n", stop.code);
                exit(1);
            }
            ptl_shutdown(m);
        }
    }

    row *r = add_row(mmu_names[MMU_HIT_DEP]);
    r->a = c.native_dep, r->b = c.hit_dep_ddi, r->a_ops = r->b_ops = c.n_hit;
    snprintf(r->target, sizeof r->target, "<= 3.5x native dependent load: %s",
             ratio_of(r) <= 3.5 ? "met" : "MISSED");
    r = add_row(mmu_names[MMU_HIT_COPY]);
    r->a = c.native_dep, r->b = c.hit_dep_copy, r->a_ops = r->b_ops = c.n_hit;
    snprintf(r->note, sizeof r->note, "ptelab's internal bulk path, for comparison");
    if (c.native) {
        r = add_row(mmu_names[MMU_NATIVE_DEP]);
        r->a = c.native_dep, r->b = c.raw_dep, r->a_ops = r->b_ops = c.n_hit;
        snprintf(r->note, sizeof r->note,
                 "plain host memory vs a native-mode MmMapIoSpace pointer");
    }
    r = add_row(mmu_names[MMU_HIT_IND]);
    r->a = c.native_ind, r->b = c.hit_ind_ddi, r->a_ops = r->b_ops = c.n_hit;
    r = add_row(mmu_names[MMU_MISS]);
    r->a = c.native_miss, r->b = c.miss, r->a_ops = r->b_ops = c.n_miss;
    snprintf(r->note, sizeof r->note, "native: same 4 KB stride over 2 MB of host memory");
    r = add_row(mmu_names[MMU_COPY]);
    r->a = c.native_copy, r->b = c.copy_emul, r->a_ops = r->b_ops = c.n_copy;
    snprintf(r->note, sizeof r->note, "%.1f GB/s emulated, %.1f GB/s memcpy",
             (double)(1u << 20) / c.copy_emul, (double)(1u << 20) / c.native_copy);
    snprintf(r->target, sizeof r->target, ">= 50%% of memcpy bandwidth: %.0f%% %s",
             100 * c.native_copy / c.copy_emul,
             c.copy_emul <= 2 * c.native_copy ? "met" : "MISSED");
    for (int k = 0; k < 4; k++) {
        char name[96];
        mapping_row_name(name, sizeof name, 0, map_pages[k]);
        r = add_row(name);
        r->a = c.store_ns[k], r->b = c.map_ns[k];
        r->a_ops = c.store_ops[k], r->b_ops = c.map_ops[k];
        snprintf(r->note, sizeof r->note,
                 "software MMU; native: store loop of %u words; %.1f ns/page", map_pages[k],
                 c.map_ns[k] / map_pages[k]);
        if (map_pages[k] == 4096)
            snprintf(r->target, sizeof r->target, "<= 3x the store loop: %s",
                     ratio_of(r) <= 3 ? "met" : "MISSED");
    }
    for (int k = 0; k < 4 && c.map_native_ops[k]; k++) {
        char name[96];
        mapping_row_name(name, sizeof name, 1, map_pages[k]);
        r = add_row(name);
        r->a = c.map_ns[k], r->b = c.map_native_ns[k];
        r->a_ops = c.map_ops[k], r->b_ops = c.map_native_ops[k];
        snprintf(r->note, sizeof r->note, "vs the software MMU; %.1f ns/page native",
                 c.map_native_ns[k] / map_pages[k]);
    }
}

/* ---- memory ------------------------------------------------------------------------- */

static double rss_mb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, res = 0;
    if (f) {
        if (fscanf(f, "%lu %lu", &size, &res) != 2)
            res = 0;
        fclose(f);
    }
    return (double)res * (double)sysconf(_SC_PAGESIZE) / (1024.0 * 1024.0);
}

static void memory_row(void)
{
    fprintf(stderr, "  memory ...\n");
    double before = rss_mb();
    ptl_config cfg;
    ptl_config_init(&cfg);
    cfg.ram_bytes = 3584ull << 20;
    ptl_machine *m = ptl_boot(&cfg);
    if (!m) {
        fprintf(stderr, "ptelab-bench: boot of 3.5 GB failed: %s\n", ptl_error());
        exit(1);
    }
    double after = rss_mb();
    row *r = add_row("Memory: host RSS after booting a 3.5 GB machine");
    snprintf(r->note, sizeof r->note, "%.1f MB RSS (%.1f MB before boot, +%.1f MB)", after, before,
             after - before);
    ptl_shutdown(m);
}

/* The host's memory latency: a dependent chain over a random cycle through `bytes`. It
 * bounds what the 2^25-index spool rows can do (their structures and the held-run array
 * are tens of MB, touched at random). */
static double chase_ns(size_t bytes, long steps)
{
    size_t n = bytes / sizeof(uint32_t);
    uint32_t *next = malloc(n * sizeof *next), *order = malloc(n * sizeof *order);
    for (size_t i = 0; i < n; i++)
        order[i] = (uint32_t)i;
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)(((uint64_t)rnd() * (i + 1)) >> 32);
        uint32_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (size_t i = 0; i < n; i++)
        next[order[i]] = order[(i + 1) % n];
    free(order);
    uint32_t x = 0;
    double v[RUNS];
    for (int r = 0; r < RUNS; r++) {
        double t0 = now_ns();
        for (long i = 0; i < steps; i++)
            x = next[x];
        v[r] = (now_ns() - t0) / (double)steps;
    }
    sink(x);
    free(next);
    return median(v, RUNS);
}

/* A lower bound for any allocator on the 2^25 churn rows: the churn loop itself (pick a
 * random held run, swap it out of the held array, push one back) plus one read of the
 * freed run's bitmap word, which any allocator must look at to merge the run. Nothing
 * here depends on the previous pair, so the processor overlaps the misses of successive
 * pairs; an allocator whose next search depends on the last update gets less of that.
 * The bitmap is allocated as spool_fast's is; the held array is malloc'd, as the churn
 * rows' is. */
static double churn_floor_ns(uint32_t total, long pairs)
{
    size_t words = total / 64, cap = total / 2;
    uint64_t *bits = ptl__xcalloc_huge(words, sizeof *bits); /* as spool_fast's bitmap */
    held *h = malloc(cap * sizeof *h);
    size_t nheld = 0;
    /* the held runs of a 90% churn: log-uniform sizes 1-16 tiling the space, 90% kept */
    for (uint32_t at = 0; at < total && nheld < cap;) {
        uint32_t n = (uint32_t)exp((rnd() & 0xFFFFFF) / 16777216.0 * log(17.0));
        n = n < 1 ? 1 : n > 16 ? 16 : n;
        if (rnd() % 10)
            h[nheld++] = (held){at, n};
        at += n;
    }
    uint64_t x = 0;
    double v[RUNS];
    for (int r = 0; r < RUNS; r++) {
        double t0 = now_ns();
        for (long i = 0; i < pairs; i++) {
            size_t k = (size_t)(((uint64_t)rnd() * nheld) >> 32);
            held victim = h[k];
            x += bits[(victim.start >> 6) % words]; /* the freed run's word */
            h[k] = h[--nheld];
            h[nheld++] = victim; /* the allocation: the run comes back, at the end */
        }
        v[r] = (now_ns() - t0) / (double)pairs;
    }
    sink(x);
    free(h);
    free(bits);
    return median(v, RUNS);
}

static void latency_rows(void)
{
    fprintf(stderr, "  host memory latency ...\n");
    static const size_t sizes[] = {1u << 20, 8u << 20, 32u << 20};
    for (int i = 0; i < 3; i++) {
        char name[96];
        snprintf(name, sizeof name, "Host: dependent load, random over %zu MB", sizes[i] >> 20);
        row *r = add_row(name);
        r->a = chase_ns(sizes[i], quick ? 200000 : 2000000);
        r->a_ops = quick ? 200000 : 2000000;
        snprintf(r->note, sizeof r->note, "what a cache miss costs on this host");
    }
    row *r = add_row("Host: churn floor at 2^25 (loop + freed run's word)");
    r->a_ops = quick ? 200000 : 2000000;
    r->a = churn_floor_ns(33554432u, r->a_ops);
    snprintf(r->note, sizeof r->note, "lower bound for any allocator on the 2^25 churn rows");
}

static void machine_line(void)
{
    char model[256] = "unknown";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f)) {
            if (strncmp(line, "model name", 10) == 0) {
                char *p = strchr(line, ':');
                if (p) {
                    p++;
                    while (*p == ' ')
                        p++;
                    snprintf(model, sizeof model, "%s", p);
                    model[strcspn(model, "\n")] = 0;
                }
                break;
            }
        }
        fclose(f);
    }
#ifndef PTELAB_LIB_BUILD_TYPE
#define PTELAB_LIB_BUILD_TYPE ""
#endif
    /* the table's code is -O2 always, the library's is its build type: say which */
    const char *type = PTELAB_LIB_BUILD_TYPE[0] ? PTELAB_LIB_BUILD_TYPE : "no build type (-O0)";
    printf("machine: %s, %ld cores online; %s run, median of %d runs per cell, "
           "CLOCK_MONOTONIC; library built as %s\n",
           model, sysconf(_SC_NPROCESSORS_ONLN), quick ? "quick" : "full", RUNS, type);
    if (!PTELAB_LIB_BUILD_TYPE[0] || strcmp(PTELAB_LIB_BUILD_TYPE, "Debug") == 0)
        printf("warning: the library is not optimised; these figures are not the ones "
               "docs/performance.md compares (make bench builds Release)\n");
    printf("\n");
}

int ptl_bench_main(int argc, char **argv)
{
    quick = 0; /* the tool's own state: one table per call */
    only = NULL;
    nrows = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            quick = 1;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: %s [--quick] [--only TEXT]\n"
                   "  one table: the system PTE allocator's reference against the fast one,\n"
                   "  the MMU and the mapping DDIs against native code (docs/performance.md)\n"
                   "  --quick      shorter runs, the same rows\n"
                   "  --only TEXT  just the rows whose name contains TEXT\n",
                   argv[0]);
            return fflush(stdout) == 0 && !ferror(stdout) ? 0 : 70;
        } else if (strcmp(argv[i], "--only") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "%s: --only needs the text of a row's name\n", argv[0]);
                return 64;
            }
            only = argv[++i];
        } else {
            fprintf(stderr, "%s: unknown option '%s'\nusage: %s [--quick] [--only TEXT]\n", argv[0],
                    argv[i], argv[0]);
            return 64;
        }
    }
    run_ns = quick ? 5e6 : 4e7;
    double t0 = now_ns();
    machine_line();
    fflush(stdout);
    if (wanted("Memory: host RSS"))
        memory_row(); /* first: a fresh heap */
    if (wanted("Host: dependent load") || wanted("Host: churn floor"))
        latency_rows();
    if (wanted("spool: differential"))
        diff_row();
    spool_rows(50000);
    spool_rows(33554432u);
    if (mmu_rows_wanted())
        mmu_rows(); /* one machine measures every MMU and mapping row */
    int shown = 0;
    for (int i = 0; i < nrows; i++)
        shown += wanted(rows[i].name);
    if (only && !shown) {
        fprintf(stderr, "%s: --only '%s' names no row\n", argv[0], only);
        return 64;
    }
    print_table();
    printf("\nratio: spool rows ref/fast (speed-up); MMU and mapping rows emulated/native "
           "(cost). ops/run: operations per timed run, \"(cap)\": the reference's count was "
           "capped because it is slow there. spool times are per alloc+free pair.\n");
    printf("total bench time %.1f s\n", (now_ns() - t0) / 1e9);
    return 0;
}
