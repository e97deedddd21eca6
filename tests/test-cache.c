/* test-cache.c - the cache-attribute tracker's conflict scan against its frame-by-frame
 * definition.
 *
 * ptl__cache_conflict answers "does mapping [pfn, pfn+n) with this attribute meet a frame
 * already mapped with another?" by cutting the span at the boundaries of the ranges that
 * overlap it. Its plain twin is the definition: ask ptl__cache_current about every frame,
 * in order, and stop at the first whose attribute is set and differs. Random runs and
 * per-frame records over RAM in use, free RAM and device memory, made and taken back in
 * any order, must give both the same verdict, the same first frame and the same attribute
 * there. The scan used to search every range for every frame; this test is what lets it
 * do less.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "internal.h"
#include "ptltest.h"

typedef struct made {
    uint32_t pfn, n;
    int attr, per_frame;
} made;

/* the definition: the first frame whose current attribute is set and is not attr */
static int conflict_by_frame(ptl_machine *m, uint32_t pfn, uint32_t n, int attr, uint32_t *at,
                             int *existing)
{
    for (uint32_t i = 0; i < n; i++) {
        int cur = ptl__cache_current(m, pfn + i);
        if (cur >= 0 && cur != attr) {
            *at = pfn + i;
            *existing = cur;
            return 1;
        }
    }
    return 0;
}

static void test_conflict_matches_frame_by_frame(void **state)
{
    (void)state;
    uint64_t seed = ptltest_seed();
    printf("seed %llu (PTELAB_SEED=%llu replays it)\n", (unsigned long long)seed,
           (unsigned long long)seed);
    ptltest_rng_state = seed | 1;
    ptl_config cfg;
    ptl_config_init(&cfg);
    cfg.ram_bytes = 16u << 20;
    ptl_machine *m = ptl_boot(&cfg);
    assert_non_null(m);
    uint32_t ram = m->phys.ram_pages;
    /* the span the records and questions fall in: the top of RAM (in use below the
     * high-water mark, never used above it) and the device memory just past it */
    uint32_t lo = ram - 512, span = 1024;
    made live[256];
    uint32_t nlive = 0, conflicts = 0, questions = 0;
    for (int step = 0; step < 20000; step++) {
        uint32_t what = ptltest_rnd() % 8;
        if (what < 2 && nlive < 256) { /* a new record */
            made r = {lo + ptltest_rnd() % span, 1 + ptltest_rnd() % 300, (int)(ptltest_rnd() % 6),
                      (int)(ptltest_rnd() % 2)};
            if (r.per_frame)
                ptl__cache_ref(m, r.pfn, r.n, r.attr);
            else
                ptl__cache_ref_run(m, r.pfn, r.n, r.attr);
            live[nlive++] = r;
        } else if (what < 3 && nlive) { /* one taken back, any of them */
            uint32_t k = ptltest_rnd() % nlive;
            if (live[k].per_frame)
                ptl__cache_unref(m, live[k].pfn, live[k].n);
            else
                ptl__cache_unref_run(m, live[k].pfn, live[k].n, live[k].attr);
            live[k] = live[--nlive];
        } else { /* a question */
            uint32_t pfn = lo - 16 + ptltest_rnd() % (span + 32), n = 1 + ptltest_rnd() % 400;
            int attr = (int)(ptltest_rnd() % 6);
            uint32_t at = 0, at_ref = 0;
            int ex = -2, ex_ref = -2;
            int got = ptl__cache_conflict(m, pfn, n, attr, &at, &ex);
            int want = conflict_by_frame(m, pfn, n, attr, &at_ref, &ex_ref);
            if (got != want || (got && (at != at_ref || ex != ex_ref)))
                fail_msg("step %d: [%#x, +%u) as %d: scan says %d at %#x (%d), frame by frame "
                         "%d at %#x (%d)",
                         step, pfn, n, attr, got, at, ex, want, at_ref, ex_ref);
            conflicts += (uint32_t)got;
            questions++;
        }
        if (step % 1000 == 0)
            assert_int_equal(ptl__cache_check(m, stderr), 0);
    }
    /* both kinds of answer were exercised */
    printf("%u conflicts in %u questions\n", conflicts, questions);
    assert_true(conflicts > 100 && questions - conflicts > 100);
    ptl_shutdown(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conflict_matches_frame_by_frame),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
