/* test-plan.c - `ptelab plan` (src/plan.c): the simulation against hand computations, the
 * sweep's recommendation, determinism for a seed, --jobs and shards not changing results,
 * and the workload file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PAGE 4096.0

static ptl_plan_point pool_point(uint32_t seg0, uint32_t seg1)
{
    ptl_plan_point pt;
    memset(&pt, 0, sizeof pt);
    pt.seg0 = seg0;
    pt.seg1 = seg1;
    pt.fits = 1;
    pt.aperture_scale = pt.concurrency_scale = 1.0;
    return pt;
}

/* One 4 MB (1024-PTE) mapping a second, at t = 0, 1, ..., 99, each held exactly 10 s:
 * releases come before arrivals at the same time, so at most 10 are held: peak 10240. */
static void periodic_workload(ptl_plan_workload *w, const char *api)
{
    ptl_plan_workload_init(w);
    w->duration = 100;
    ptl_plan_stream *s = ptl_plan_workload_add(w, "blit", api);
    assert_non_null(s);
    s->rate = 1;
    s->periodic = 1;
    s->size.kind = PTL_DIST_CONST;
    s->size.a = 1024 * PAGE;
    s->lifetime.kind = PTL_DIST_CONST;
    s->lifetime.a = 10;
}

static void test_peak_exact(void **state)
{
    (void)state;
    ptl_plan_workload w;
    periodic_workload(&w, "other");
    ptl_plan_trial_result r;
    ptl_plan_point pt = pool_point(10240, 0);
    ptl_plan_trial(&w, &pt, 1, &r);
    assert_int_equal(r.peak, 10240);
    assert_int_equal(r.nofree + r.frag + r.stop, 0);
    assert_int_equal(r.requests, 100);
    /* arrivals at 0..89 are released before the end (t + 10 < 100) */
    assert_int_equal(r.ops, 100 + 90);

    /* one PTE less: the 10th mapping (t = 9) finds 1023 free; from then on every tenth
     * second (9, 19, ..., 99) a mapping finds the pool full: 10 failures, peak 9 runs */
    pt = pool_point(10239, 0);
    ptl_plan_trial(&w, &pt, 1, &r);
    assert_int_equal(r.peak, 9 * 1024);
    assert_int_equal(r.nofree, 1);
    assert_int_equal(r.frag, 0);
    assert_int_equal(r.stop, 0);
    assert_int_equal(r.failed_requests, 10);
    ptl_plan_workload_free(&w);

    /* the same with MmMapLockedPages(KernelMode): the first failure is the STOP */
    periodic_workload(&w, "MmMapLockedPages");
    ptl_plan_trial(&w, &pt, 1, &r);
    assert_int_equal(r.stop, 1);
    assert_int_equal(r.nofree, 1);
    assert_int_equal(r.requests, 10);
    assert_int_equal(r.failed_requests, 1);
    ptl_plan_workload_free(&w);
}

/* Pages handed out alternately to a keeper (forever) and a borrower (returned at ~t 500):
 * first fit fills a 100-PTE pool 0,1,2,...; afterwards every other PTE is free. A 2-page
 * MDL mapping then finds 50 free PTEs and no run of 2: fragmentation, and a STOP. */
static void frag_workload(ptl_plan_workload *w, double late_bytes)
{
    ptl_plan_workload_init(w);
    w->duration = 2000;
    ptl_plan_stream *a = ptl_plan_workload_add(w, "keeper", "other");
    a->rate = 0.5;
    a->periodic = 1;
    a->until = 100;
    ptl_plan_stream *b = ptl_plan_workload_add(w, "borrower", "other");
    b->rate = 0.5;
    b->periodic = 1;
    b->start = 1;
    b->until = 100;
    b->lifetime.kind = PTL_DIST_CONST;
    b->lifetime.a = 500;
    ptl_plan_stream *c = ptl_plan_workload_add(w, "late MDL", "MmGetSystemAddressForMdl");
    c->initial = 1;
    c->start = 1000;
    c->size.a = late_bytes;
}

static void test_fragmentation_exact(void **state)
{
    (void)state;
    ptl_plan_workload w;
    frag_workload(&w, 2 * PAGE);
    ptl_plan_point pt = pool_point(100, 0);
    ptl_plan_trial_result r;
    ptl_plan_trial(&w, &pt, 7, &r);
    assert_int_equal(r.peak, 100);
    assert_int_equal(r.frag, 1);
    assert_int_equal(r.nofree, 0);
    assert_int_equal(r.stop, 1);
    assert_int_equal(r.requests, 101);
    ptl_plan_workload_free(&w);

    /* 51 pages: more than the 50 free, a failure for lack of free PTEs */
    frag_workload(&w, 51 * PAGE);
    ptl_plan_trial(&w, &pt, 7, &r);
    assert_int_equal(r.frag, 0);
    assert_int_equal(r.nofree, 1);
    assert_int_equal(r.stop, 1);
    ptl_plan_workload_free(&w);

    /* /USERVA's two segments: 50 + junction + 50; a run of 51 never straddles them */
    frag_workload(&w, 1 * PAGE);
    w.streams[1].lifetime.kind = PTL_DIST_FOREVER; /* nothing returned: the pool is full */
    pt = pool_point(50, 50);
    ptl_plan_trial(&w, &pt, 7, &r);
    assert_int_equal(r.peak, 100);
    assert_int_equal(r.nofree, 1);
    ptl_plan_workload_free(&w);
}

/* Through the layout: the first SystemPages value whose pool holds 10 x 1024 PTEs is the
 * recommendation; every smaller pool fails in every trial, every larger never. */
static void test_sweep_failure_point(void **state)
{
    (void)state;
    ptl_plan_workload w;
    periodic_workload(&w, "MmMapLockedPages");
    w.ram_bytes = 64ull << 20;
    static const uint32_t values[] = {4000, 7000, 8000, 9000, 10000, 11000, 12000, 14000};
    ptl_plan_opts o = {.seed = 3, .trials = 5, .target = 1e-3, .values = values, .nvalues = 8};
    ptl_plan p;
    char err[256];
    assert_int_equal(ptl_plan_setup(&p, &w, &o, err, sizeof err), 0);
    ptl_plan_perf perf;
    assert_int_equal(ptl_plan_run(&p, &w, 1, 0, 1, NULL, NULL, &perf), 0);
    int rec = ptl_plan_recommend(&p);
    assert_true(rec >= 0);
    int below = 0, above = 0;
    for (int i = 0; i < p.npoints; i++) {
        const ptl_plan_point *pt = &p.points[i];
        if (pt->what_if)
            continue;
        assert_int_equal(pt->trials, 5);
        uint32_t pool = pt->seg0 + pt->seg1;
        if (pool < 10240) {
            below++;
            assert_true(i < rec);
            assert_int_equal(pt->stop, 5);
            assert_int_equal(pt->fail_any, 5);
        } else {
            above++;
            assert_true(i >= rec);
            assert_int_equal(pt->fail_any, 0);
            assert_int_equal(pt->peak_max, 10240);
            assert_int_equal(pt->peak_sum, 5 * 10240);
        }
    }
    assert_true(below > 0 && above > 0);
    assert_true(p.points[rec].seg0 + p.points[rec].seg1 >= 10240);
    assert_true(perf.ops > 0);
    ptl_plan_free(&p);
    ptl_plan_workload_free(&w);
}

/* A random workload: Poisson arrivals, exponential and lognormal lifetimes and sizes. */
static void random_workload(ptl_plan_workload *w)
{
    ptl_plan_workload_init(w);
    w->ram_bytes = 128ull << 20;
    w->duration = 20;
    snprintf(w->name, sizeof w->name, "random \"quoted\" workload");
    ptl_plan_stream *s = ptl_plan_workload_add(w, "adapter", "MmMapIoSpace");
    s->aperture = 1;
    s->initial = 2;
    s->size.a = 48.0 * 1024 * 1024;
    s = ptl_plan_workload_add(w, "threads", "stack");
    s->initial = 1000;
    s->rate = 20;
    s->lifetime.kind = PTL_DIST_EXP;
    s->lifetime.a = 5;
    s = ptl_plan_workload_add(w, "io", "MmGetSystemAddressForMdl");
    s->rate = 300;
    s->size.kind = PTL_DIST_LOGNORMAL;
    s->size.a = 256 * 1024;
    s->size.b = 1.0;
    s->lifetime.kind = PTL_DIST_EXP;
    s->lifetime.a = 0.3;
    s = ptl_plan_workload_add(w, "blits", "MmMapLockedPagesSpecifyCache");
    s->rate = 20;
    s->size.kind = PTL_DIST_UNIFORM;
    s->size.a = 64 * 1024;
    s->size.b = 4 * 1024 * 1024;
    s->lifetime.kind = PTL_DIST_EXP;
    s->lifetime.a = 0.5;
}

static void run_random(ptl_plan *p, ptl_plan_workload *w, uint64_t seed, int jobs, int shard_i,
                       int shard_n)
{
    ptl_plan_opts o = {.seed = seed, .trials = 12, .target = 1e-3, .steps = 5};
    char err[256];
    assert_int_equal(ptl_plan_setup(p, w, &o, err, sizeof err), 0);
    assert_int_equal(ptl_plan_run(p, w, jobs, shard_i, shard_n, NULL, NULL, NULL), 0);
}

static char *jsonl_text(const ptl_plan *p)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_int_equal(ptl_plan_write_jsonl(p, f), 0);
    fclose(f);
    return buf;
}

static int interesting(const ptl_plan *p)
{
    /* the workload should exercise both outcomes somewhere in the sweep */
    int fails = 0, passes = 0;
    for (int i = 0; i < p->npoints; i++) {
        fails += p->points[i].fail_any > 0;
        passes += p->points[i].fail_any < p->points[i].trials;
    }
    return fails && passes;
}

static void test_determinism(void **state)
{
    (void)state;
    ptl_plan_workload w;
    random_workload(&w);
    ptl_plan a, b, c;
    run_random(&a, &w, 42, 1, 0, 1);
    run_random(&b, &w, 42, 1, 0, 1);
    run_random(&c, &w, 43, 1, 0, 1);
    assert_true(interesting(&a));
    char *ta = jsonl_text(&a), *tb = jsonl_text(&b), *tc = jsonl_text(&c);
    assert_string_equal(ta, tb);
    assert_true(strcmp(ta, tc) != 0); /* another seed: other draws */
    free(ta);
    free(tb);
    free(tc);
    ptl_plan_free(&a);
    ptl_plan_free(&b);
    ptl_plan_free(&c);
    ptl_plan_workload_free(&w);
}

static void test_jobs(void **state)
{
    (void)state;
    ptl_plan_workload w;
    random_workload(&w);
    ptl_plan a, b, c;
    run_random(&a, &w, 9, 1, 0, 1);
    run_random(&b, &w, 9, 2, 0, 1);
    run_random(&c, &w, 9, 3, 0, 1);
    char *ta = jsonl_text(&a), *tb = jsonl_text(&b), *tc = jsonl_text(&c);
    assert_string_equal(ta, tb);
    assert_string_equal(ta, tc);
    free(ta);
    free(tb);
    free(tc);
    ptl_plan_free(&a);
    ptl_plan_free(&b);
    ptl_plan_free(&c);
    ptl_plan_workload_free(&w);
}

static void test_shards_merge(void **state)
{
    (void)state;
    ptl_plan_workload w;
    random_workload(&w);
    ptl_plan whole;
    run_random(&whole, &w, 5, 1, 0, 1);
    char *want = jsonl_text(&whole);

    enum { N = 3 };
    char paths[N][64];
    const char *argv[N];
    for (int i = 0; i < N; i++) {
        ptl_plan part;
        run_random(&part, &w, 5, 2, i, N);
        snprintf(paths[i], sizeof paths[i], "/tmp/test-plan-%d-shard%d.jsonl", (int)getpid(), i);
        FILE *f = fopen(paths[i], "w");
        assert_non_null(f);
        assert_int_equal(ptl_plan_write_jsonl(&part, f), 0);
        fclose(f);
        ptl_plan_free(&part);
        argv[N - 1 - i] = paths[i]; /* any order */
    }
    ptl_plan merged;
    char err[512];
    assert_int_equal(ptl_plan_merge(&merged, argv, N, err, sizeof err), 0);
    char *got = jsonl_text(&merged);
    assert_string_equal(got, want);
    assert_int_equal(ptl_plan_recommend(&merged), ptl_plan_recommend(&whole));
    free(got);
    ptl_plan_free(&merged);

    /* a missing shard, and a shard given twice, are refused */
    assert_int_equal(ptl_plan_merge(&merged, argv, N - 1, err, sizeof err), -1);
    assert_non_null(strstr(err, "missing"));
    const char *twice[N] = {paths[0], paths[1], paths[1]};
    assert_int_equal(ptl_plan_merge(&merged, twice, N, err, sizeof err), -1);
    assert_non_null(strstr(err, "twice"));
    /* a shard of another run (another seed) is refused */
    ptl_plan other;
    run_random(&other, &w, 6, 1, 2, N);
    FILE *f = fopen(paths[2], "w");
    assert_int_equal(ptl_plan_write_jsonl(&other, f), 0);
    fclose(f);
    ptl_plan_free(&other);
    assert_int_equal(ptl_plan_merge(&merged, argv, N, err, sizeof err), -1);
    assert_non_null(strstr(err, "different run"));
    for (int i = 0; i < N; i++)
        unlink(paths[i]);
    free(want);
    ptl_plan_free(&whole);
    ptl_plan_workload_free(&w);
}

static void test_workload_file(void **state)
{
    (void)state;
    const char *src = getenv("PTELAB_SOURCE_DIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/scenarios/plan-terminal-server.lua", src ? src : ".");
    ptl_plan_workload w;
    ptl_plan_workload_init(&w);
    char err[512] = "";
    if (ptl_plan_workload_load(&w, path, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_true(w.nstreams >= 6);
    assert_int_equal(w.ram_bytes, 1024ull << 20);
    int apertures = 0, must = 0;
    for (int i = 0; i < w.nstreams; i++) {
        apertures += w.streams[i].aperture;
        must += w.streams[i].must_succeed;
    }
    assert_true(apertures >= 1 && must >= 1);
    ptl_plan_workload_free(&w);

    char bad[64];
    snprintf(bad, sizeof bad, "/tmp/test-plan-%d.lua", (int)getpid());
    FILE *f = fopen(bad, "w");
    fputs("return { io = { { api = 'MmMapSomething', size = '4K', rate = 1 } } }\n", f);
    fclose(f);
    ptl_plan_workload_init(&w);
    assert_int_equal(ptl_plan_workload_load(&w, bad, err, sizeof err), -1);
    assert_non_null(strstr(err, "unknown api"));
    ptl_plan_workload_free(&w);
    f = fopen(bad, "w");
    fputs("return { threads = { initial = 10, lifetime = uniform('5s', '1s') } }\n", f);
    fclose(f);
    ptl_plan_workload_init(&w);
    assert_int_equal(ptl_plan_workload_load(&w, bad, err, sizeof err), -1);
    assert_non_null(strstr(err, "threads[1]"));
    ptl_plan_workload_free(&w);
    unlink(bad);

    /* sizes and times */
    double v;
    assert_int_equal(ptl_plan_parse_size("64K", &v), 0);
    assert_true(v == 65536.0);
    assert_int_equal(ptl_plan_parse_time("50ms", &v), 0);
    assert_true(v > 0.0499 && v < 0.0501);
    assert_int_equal(ptl_plan_cost(PTL_PLAN_NONCACHED, 4096), 2);
    assert_int_equal(ptl_plan_cost(PTL_PLAN_STACK, 1e9), 4);
    assert_int_equal(ptl_plan_cost(PTL_PLAN_MDL, 4097), 2);
}

/* Bad workloads are refused with the reason, whichever way they come: a trial that could
 * not end (an infinite or huge rate or duration), a number that would not fit (RAM beyond
 * 4 GB), a boolean given as "false" or 0 (true in Lua), a misspelt field, more streams
 * than the limit. */
static int load_text(const char *text, char *err, size_t errlen)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/test-plan-bad-%d.lua", (int)getpid());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    ptl_plan_workload w;
    ptl_plan_workload_init(&w);
    int rc = ptl_plan_workload_load(&w, path, err, errlen);
    if (rc == 0) { /* loaded: the run's setup is the second gate */
        ptl_plan_opts o;
        memset(&o, 0, sizeof o);
        o.trials = 1;
        ptl_plan p;
        rc = ptl_plan_setup(&p, &w, &o, err, errlen);
        if (rc == 0)
            ptl_plan_free(&p);
    }
    ptl_plan_workload_free(&w);
    unlink(path);
    return rc;
}

static void expect_refused(const char *text, const char *reason)
{
    char err[512] = "";
    if (load_text(text, err, sizeof err) == 0)
        fail_msg("accepted: %s", text);
    if (!strstr(err, reason))
        fail_msg("refused, but '%s' does not say '%s'", err, reason);
}

static void test_bad_workloads_are_refused(void **state)
{
    (void)state;
    expect_refused("return { io = { { size = '4K', rate = 1e300, lifetime = 0.001 } } }",
                   "rate 1e+300");
    expect_refused("return { io = { { size = '4K', rate = 1/0, lifetime = 0.001 } } }", "rate");
    expect_refused("return { duration = 'inf', io = { { rate = 1 } } }", "duration");
    expect_refused("return { duration = '1e400', io = { { rate = 1 } } }", "duration");
    expect_refused("return { duration = 0, io = { { rate = 1 } } }", "duration 0");
    expect_refused("return { ram = 1e30, io = { { rate = 1 } } }", "up to 4 GB");
    expect_refused("return { userva = 4294967297, io = { { rate = 1 } } }", "userva");
    expect_refused("return { boot_3gb = 'false', io = { { rate = 1 } } }",
                   "boot_3gb: 'false' is not true or false");
    expect_refused("return { io = { { rate = 1, must_succeed = 0 } } }", "must_succeed");
    expect_refused("return { drivers = { { count = 1e6, image = '4K', maps = { { size = '4K', "
                   "rate = 100 } } } } }",
                   "rate 1e+08");
    /* a misspelt field would plan for another workload */
    expect_refused("return { io = { { rates = 100, lifetmie = '1s' } } }",
                   "io[1]: unknown field '");
    expect_refused("return { durations = 5, io = { { rate = 1 } } }",
                   "workload: unknown field 'durations'");
    expect_refused(
        "return { drivers = { { image = '4K', maps = { { rate = 1, sizes = '8K' } } } } }",
        "drivers[1].maps[1]: unknown field 'sizes'");
    /* the limit on streams: refused by name, not mistaken for an unknown api */
    expect_refused("local io = {} for i = 1, 4097 do io[i] = { rate = 1 } end return { io = io }",
                   "more than 4096 streams");
    /* and what is fine stays fine */
    char err[512] = "";
    if (load_text("return { boot_3gb = false, duration = '1h', io = { { rate = 1e6, "
                  "[\"until\"] = 5, lifetime = 0.001 } } }",
                  err, sizeof err) != 0)
        fail_msg("refused: %s", err);
    double v;
    assert_int_equal(ptl_plan_parse_time("inf", &v), -1);
    assert_int_equal(ptl_plan_parse_time("400d", &v), -1);
    assert_int_equal(ptl_plan_parse_time("8760h", &v), 0);
    assert_int_equal(ptl_plan_parse_time("9000h", &v), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_peak_exact),
        cmocka_unit_test(test_fragmentation_exact),
        cmocka_unit_test(test_sweep_failure_point),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_jobs),
        cmocka_unit_test(test_shards_merge),
        cmocka_unit_test(test_workload_file),
        cmocka_unit_test(test_bad_workloads_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
