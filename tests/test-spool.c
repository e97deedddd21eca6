/* test-spool.c - the run allocator behind the system PTE pool, against a byte map.
 *
 * The oracle is the most obvious allocator there is: one byte per index, first fit by a
 * linear scan. The randomised differential test drives both with the same trace of at
 * least 10^6 operations (seed printed; PTELAB_SEED=N replays one) and compares every
 * answer and, periodically, the statistics and the invariants.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "internal.h"
#include "ptltest.h"
#include "spool.h"

typedef struct oracle {
    uint32_t total;
    int policy;
    uint8_t *used;
} oracle;

static int64_t oracle_alloc(oracle *o, uint32_t n)
{
    uint32_t run = 0;
    for (uint32_t i = 0; i < o->total; i++) {
        run = o->used[i] ? 0 : run + 1;
        if (run == n) {
            uint32_t start = i + 1 - n;
            if (o->policy == 1) { /* the high end of the same maximal run */
                uint32_t end = i + 1;
                while (end < o->total && !o->used[end])
                    end++;
                start = end - n;
            }
            memset(o->used + start, 1, n);
            return start;
        }
    }
    return -1;
}

static void oracle_stats(const oracle *o, ptl__spool_stats *st)
{
    memset(st, 0, sizeof *st);
    st->total = o->total;
    uint32_t run = 0;
    for (uint32_t i = 0; i <= o->total; i++) {
        if (i < o->total && !o->used[i]) {
            run++;
            st->free++;
            continue;
        }
        if (run) {
            st->runs++;
            if (run > st->largest)
                st->largest = run;
            st->hist[ptl__spool_hist_bucket(run)]++;
        }
        run = 0;
    }
}

typedef struct held {
    uint32_t start, n;
} held;

static void differential(int policy, uint32_t total, uint32_t max_req, long ops)
{
    uint64_t seed = ptltest_seed();
    printf("spool differential: policy %d, %u indices, %ld operations, seed %llu "
           "(PTELAB_SEED=%llu replays)\n",
           policy, total, ops, (unsigned long long)seed, (unsigned long long)seed);
    ptltest_rng_state = seed * 2654435761u + 1;
    ptl__spool *sp = ptl__spool_create(PTL_SPOOL_REF, total, policy);
    oracle o = {total, policy, calloc(total, 1)};
    held *h = calloc(total, sizeof *h);
    uint32_t nheld = 0;
    long failures = 0;
    for (long op = 0; op < ops; op++) {
        int do_alloc = nheld == 0 || (ptltest_rnd() % 100) < 52;
        if (do_alloc) {
            uint32_t n = 1 + ptltest_rnd() % ((ptltest_rnd() % 8) ? 8 : max_req);
            int64_t a = ptl__spool_alloc(sp, n), b = oracle_alloc(&o, n);
            if (a != b) {
                fprintf(stderr, "op %ld: alloc(%u): spool %lld, oracle %lld (seed %llu)\n", op, n,
                        (long long)a, (long long)b, (unsigned long long)seed);
                fail();
            }
            if (a >= 0)
                h[nheld++] = (held){(uint32_t)a, n};
            else
                failures++;
        } else {
            uint32_t k = ptltest_rnd() % nheld;
            held x = h[k];
            h[k] = h[--nheld];
            assert_true(ptl__spool_is_reserved(sp, x.start, x.n));
            ptl__spool_free(sp, x.start, x.n);
            memset(o.used + x.start, 0, x.n);
        }
        if (op % 997 == 0) {
            ptl__spool_stats s1, s2;
            ptl__spool_stats_get(sp, &s1);
            oracle_stats(&o, &s2);
            assert_memory_equal(&s1, &s2, sizeof s1);
            assert_int_equal(ptl__spool_largest(sp), s2.largest);
            assert_int_equal(ptl__spool_check(sp, stderr), 0);
        }
    }
    printf("spool differential: %ld requests refused for lack of a run\n", failures);
    assert_true(failures > 0); /* the trace did reach exhaustion and fragmentation */
    ptl__spool_destroy(sp);
    free(o.used);
    free(h);
}

static void test_differential_low(void **state)
{
    (void)state;
    differential(0, 512, 64, 1000000);
}

static void test_differential_high(void **state)
{
    (void)state;
    differential(1, 300, 40, 300000);
}

static void test_basic_placement(void **state)
{
    (void)state;
    ptl__spool *sp = ptl__spool_create(PTL_SPOOL_REF, 100, 0);
    assert_int_equal(ptl__spool_alloc(sp, 10), 0);
    assert_int_equal(ptl__spool_alloc(sp, 10), 10);
    assert_int_equal(ptl__spool_alloc(sp, 10), 20);
    ptl__spool_free(sp, 10, 10);
    /* a hole of 10 at 10: a request of 11 must skip it, one of 5 must use it */
    assert_int_equal(ptl__spool_alloc(sp, 11), 30);
    assert_int_equal(ptl__spool_alloc(sp, 5), 10);
    ptl__spool_stats st;
    ptl__spool_stats_get(sp, &st);
    assert_int_equal(st.free, 100 - 10 - 5 - 10 - 11);
    assert_int_equal(st.runs, 2); /* [15,20) and [41,100) */
    assert_int_equal(st.largest, 59);
    /* fragmentation: 64 free in total but no run of 60 */
    assert_int_equal(ptl__spool_alloc(sp, 60), -1);
    assert_int_equal(ptl__spool_check(sp, stderr), 0);
    ptl__spool_destroy(sp);
}

static void test_high_policy(void **state)
{
    (void)state;
    ptl__spool *sp = ptl__spool_create(PTL_SPOOL_REF, 100, 1);
    assert_int_equal(ptl__spool_alloc(sp, 10), 90);
    assert_int_equal(ptl__spool_alloc(sp, 1), 89);
    ptl__spool_free(sp, 90, 10);
    assert_int_equal(ptl__spool_alloc(sp, 5), 84); /* lowest run [0,89): its high end */
    ptl__spool_destroy(sp);
}

static void test_reserve_at(void **state)
{
    (void)state;
    ptl__spool *sp = ptl__spool_create(PTL_SPOOL_REF, 50, 0);
    assert_int_equal(ptl__spool_reserve_at(sp, 20, 5), 0);
    assert_int_equal(ptl__spool_reserve_at(sp, 22, 1), -1);  /* already reserved */
    assert_int_equal(ptl__spool_reserve_at(sp, 45, 10), -1); /* beyond the end */
    assert_true(ptl__spool_is_reserved(sp, 20, 5));
    assert_false(ptl__spool_is_reserved(sp, 19, 2));
    assert_int_equal(ptl__spool_alloc(sp, 21), 25);
    assert_int_equal(ptl__spool_free_count(sp), 50 - 5 - 21);
    assert_int_equal(ptl__spool_check(sp, stderr), 0);
    ptl__spool_destroy(sp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic_placement),   cmocka_unit_test(test_high_policy),
        cmocka_unit_test(test_reserve_at),        cmocka_unit_test(test_differential_low),
        cmocka_unit_test(test_differential_high),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
