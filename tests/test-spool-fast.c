/* test-spool-fast.c - the fast run allocator (spool_fast.c) against the reference
 * (spool_ref.c): the same placement, bit for bit.
 *
 * The randomised differential test drives both with the same trace (seed printed;
 * PTELAB_SEED=N replays one) for both policies and several pool sizes: small pools that
 * reach exhaustion and fragmentation often, and one of 33,554,432 indices for a shorter
 * run. It compares every allocation, every reserve_at and is_reserved answer and,
 * periodically, the full statistics and both ptl__spool_check. Over 10^6 operations in
 * all. The unit tests cover the edges of the bitmap: exact fits, runs across word and
 * tree boundaries, reserve_at, is_reserved. No timing is asserted anywhere.
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

typedef struct held {
    uint32_t start, n;
} held;

typedef struct runs_seen {
    uint32_t n, cap;
    held *r;
} runs_seen;

static int collect(void *ctx, uint32_t start, uint32_t len)
{
    runs_seen *rs = ctx;
    if (rs->n == rs->cap) {
        rs->cap = rs->cap ? 2 * rs->cap : 64;
        rs->r = realloc(rs->r, rs->cap * sizeof *rs->r);
    }
    rs->r[rs->n++] = (held){start, len};
    return 0;
}

/* Both spools hold the same state: statistics, invariants, free runs. */
static void compare_full(ptl__spool *ref, ptl__spool *fast, int with_runs)
{
    ptl__spool_stats s1, s2;
    ptl__spool_stats_get(ref, &s1);
    ptl__spool_stats_get(fast, &s2);
    assert_memory_equal(&s1, &s2, sizeof s1);
    assert_int_equal(ptl__spool_largest(ref), ptl__spool_largest(fast));
    assert_int_equal(ptl__spool_free_count(ref), ptl__spool_free_count(fast));
    assert_int_equal(ptl__spool_check(ref, stderr), 0);
    assert_int_equal(ptl__spool_check(fast, stderr), 0);
    if (with_runs) {
        runs_seen a = {0}, b = {0};
        ptl__spool_each_free(ref, collect, &a);
        ptl__spool_each_free(fast, collect, &b);
        assert_int_equal(a.n, b.n);
        if (a.n)
            assert_memory_equal(a.r, b.r, a.n * sizeof *a.r);
        free(a.r);
        free(b.r);
    }
}

/* A request size: mostly small, sometimes up to max_req, rarely up to big. */
static uint32_t req_size(uint32_t max_req, uint32_t big)
{
    uint32_t r = ptltest_rnd() % 64;
    if (r == 0 && big)
        return 1 + ptltest_rnd() % big;
    return 1 + ptltest_rnd() % ((r % 8) ? 8 : max_req);
}

static void differential(int policy, uint32_t total, uint32_t max_req, uint32_t big, long ops,
                         long full_every)
{
    uint64_t seed = ptltest_seed();
    printf("spool fast/ref: policy %d, %u indices, %ld operations, seed %llu "
           "(PTELAB_SEED=%llu replays)\n",
           policy, total, ops, (unsigned long long)seed, (unsigned long long)seed);
    ptltest_rng_state = seed * 2654435761u + (uint64_t)total * 31 + (uint64_t)policy + 1;
    ptl__spool *ref = ptl__spool_create(PTL_SPOOL_REF, total, policy);
    ptl__spool *fast = ptl__spool_create(PTL_SPOOL_FAST, total, policy);
    uint32_t cap = 1u << 16;
    held *h = malloc(cap * sizeof *h);
    uint32_t nheld = 0;
    long failures = 0, fragmented = 0;
    for (long op = 0; op < ops; op++) {
        uint32_t what = ptltest_rnd() % 100;
        if (nheld == 0 || what < 50) {
            uint32_t n = req_size(max_req, big);
            int64_t a = ptl__spool_alloc(ref, n), b = ptl__spool_alloc(fast, n);
            if (a != b) {
                fprintf(stderr, "op %ld: alloc(%u): ref %lld, fast %lld (seed %llu)\n", op, n,
                        (long long)a, (long long)b, (unsigned long long)seed);
                fail();
            }
            if (a >= 0) {
                if (nheld == cap) {
                    cap *= 2;
                    h = realloc(h, cap * sizeof *h);
                }
                h[nheld++] = (held){(uint32_t)a, n};
            } else {
                failures++;
                fragmented += ptl__spool_free_count(ref) >= n;
            }
        } else if (what < 96) {
            uint32_t k = ptltest_rnd() % nheld;
            held x = h[k];
            h[k] = h[--nheld];
            assert_true(ptl__spool_is_reserved(ref, x.start, x.n));
            assert_true(ptl__spool_is_reserved(fast, x.start, x.n));
            ptl__spool_free(ref, x.start, x.n);
            ptl__spool_free(fast, x.start, x.n);
        } else if (what < 98) {
            /* reserve_at anywhere: free or not, in range or not */
            uint32_t n = req_size(max_req, 0);
            uint32_t s = ptltest_rnd() % (total + 8);
            int a = ptl__spool_reserve_at(ref, s, n), b = ptl__spool_reserve_at(fast, s, n);
            if (a != b) {
                fprintf(stderr, "op %ld: reserve_at(%u, %u): ref %d, fast %d (seed %llu)\n", op, s,
                        n, a, b, (unsigned long long)seed);
                fail();
            }
            if (a == 0) {
                if (nheld == cap) {
                    cap *= 2;
                    h = realloc(h, cap * sizeof *h);
                }
                h[nheld++] = (held){s, n};
            }
        } else {
            /* is_reserved of an arbitrary range, around a held run or anywhere */
            uint32_t s, n;
            if (nheld && (ptltest_rnd() & 1)) {
                held x = h[ptltest_rnd() % nheld];
                s = x.start + (ptltest_rnd() % 3) - 1;
                n = x.n + (ptltest_rnd() % 3) - 1;
            } else {
                s = ptltest_rnd() % (total + 4);
                n = ptltest_rnd() % (max_req + 2);
            }
            assert_int_equal(ptl__spool_is_reserved(ref, s, n), ptl__spool_is_reserved(fast, s, n));
        }
        if (op % full_every == 0) {
            ptl__spool_stats s1, s2;
            ptl__spool_stats_get(ref, &s1);
            ptl__spool_stats_get(fast, &s2);
            assert_memory_equal(&s1, &s2, sizeof s1);
        }
        if (op % (full_every * 16) == 0)
            compare_full(ref, fast, 1);
    }
    compare_full(ref, fast, 1);
    printf("spool fast/ref: %ld requests refused, %ld of them with enough free in total\n",
           failures, fragmented);
    if (total <= 4096)
        assert_true(fragmented > 0); /* the trace reached fragmentation */
    ptl__spool_destroy(ref);
    ptl__spool_destroy(fast);
    free(h);
}

static void test_diff_small_low(void **state)
{
    (void)state;
    differential(0, 512, 64, 0, 400000, 997);
}

static void test_diff_small_high(void **state)
{
    (void)state;
    differential(1, 300, 40, 0, 300000, 997);
}

static void test_diff_words_low(void **state)
{
    (void)state;
    differential(0, 4096 + 37, 200, 1500, 200000, 997);
}

static void test_diff_words_high(void **state)
{
    (void)state;
    differential(1, 2000, 130, 700, 200000, 997);
}

static void test_diff_tiny(void **state)
{
    (void)state;
    differential(0, 63, 10, 0, 50000, 101);
    differential(1, 64, 10, 0, 50000, 101);
    differential(1, 65, 10, 0, 50000, 101);
}

static void test_diff_pool_50000(void **state)
{
    (void)state;
    differential(0, 50000, 100, 20000, 100000, 4999);
}

static void test_diff_huge(void **state)
{
    (void)state;
    /* 2^25 indices: the size of the issue; shorter, few O(n) checks */
    differential(0, 33554432u, 1024, 4000000, 30000, 2999);
    differential(1, 33554432u, 1024, 4000000, 30000, 2999);
}

/* ---- edge cases ------------------------------------------------------------------- */

static ptl__spool *both(ptl__spool **ref, uint32_t total, int policy)
{
    *ref = ptl__spool_create(PTL_SPOOL_REF, total, policy);
    return ptl__spool_create(PTL_SPOOL_FAST, total, policy);
}

#define ALLOC2(r, f, n, want)                           \
    do {                                                \
        assert_int_equal(ptl__spool_alloc(r, n), want); \
        assert_int_equal(ptl__spool_alloc(f, n), want); \
    } while (0)
#define FREE2(r, f, s, n)         \
    do {                          \
        ptl__spool_free(r, s, n); \
        ptl__spool_free(f, s, n); \
        compare_full(r, f, 1);    \
    } while (0)

static void test_exact_fit(void **state)
{
    (void)state;
    for (int policy = 0; policy < 2; policy++) {
        ptl__spool *r, *f = both(&r, 128, policy);
        ALLOC2(r, f, 128, 0); /* the whole pool, exactly */
        ALLOC2(r, f, 1, -1);
        compare_full(r, f, 1);
        FREE2(r, f, 0, 128);
        ptl__spool_destroy(r);
        ptl__spool_destroy(f);
        /* exact holes: 5 at 10, 7 at 40, 5 at 70; a 7 must take the one at 40 */
        f = both(&r, 100, policy);
        assert_int_equal(ptl__spool_reserve_at(r, 0, 100), 0);
        assert_int_equal(ptl__spool_reserve_at(f, 0, 100), 0);
        FREE2(r, f, 10, 5);
        FREE2(r, f, 40, 7);
        FREE2(r, f, 70, 5);
        ALLOC2(r, f, 6, 40 + (policy ? 1 : 0));
        ALLOC2(r, f, 5, 10);
        ALLOC2(r, f, 5, 70);
        ALLOC2(r, f, 1, policy ? 40 : 46);
        ALLOC2(r, f, 1, -1);
        compare_full(r, f, 1);
        ptl__spool_destroy(r);
        ptl__spool_destroy(f);
    }
}

static void test_word_boundaries(void **state)
{
    (void)state;
    for (int policy = 0; policy < 2; policy++) {
        ptl__spool *r, *f = both(&r, 64 * 40 + 3, policy);
        assert_int_equal(ptl__spool_reserve_at(r, 0, 64 * 40 + 3), 0);
        assert_int_equal(ptl__spool_reserve_at(f, 0, 64 * 40 + 3), 0);
        compare_full(r, f, 1);
        /* holes across word boundaries: [60,70), [127,129), [255,520), the tail */
        FREE2(r, f, 60, 10);
        FREE2(r, f, 127, 2);
        FREE2(r, f, 255, 265);
        FREE2(r, f, 64 * 40 - 1, 4);
        ALLOC2(r, f, 2, policy ? 68 : 60);
        ALLOC2(r, f, 200, policy ? 320 : 255);
        ALLOC2(r, f, 4, policy ? 64 : 62);
        compare_full(r, f, 1);
        /* merge on both sides across words */
        FREE2(r, f, policy ? 68 : 60, 2);
        FREE2(r, f, policy ? 320 : 255, 200);
        ALLOC2(r, f, 265, 255);
        ALLOC2(r, f, 266, -1);
        /* a run that spans a whole tree subtree (many words) */
        FREE2(r, f, 255, 265);
        FREE2(r, f, 600, 64 * 30);
        ALLOC2(r, f, 64 * 30, 600);
        ALLOC2(r, f, 64, 255 + (policy ? 265 - 64 : 0));
        compare_full(r, f, 1);
        ptl__spool_destroy(r);
        ptl__spool_destroy(f);
    }
}

static void test_reserve_at_and_is_reserved(void **state)
{
    (void)state;
    ptl__spool *r, *f = both(&r, 1000, 0);
    ptl__spool *sp[2] = {r, f};
    for (int k = 0; k < 2; k++) {
        ptl__spool *s = sp[k];
        assert_int_equal(ptl__spool_reserve_at(s, 63, 2), 0);  /* across a word */
        assert_int_equal(ptl__spool_reserve_at(s, 64, 1), -1); /* taken */
        assert_int_equal(ptl__spool_reserve_at(s, 60, 4), -1); /* its end is taken */
        assert_int_equal(ptl__spool_reserve_at(s, 999, 1), 0); /* the last index */
        assert_int_equal(ptl__spool_reserve_at(s, 999, 1), -1);
        assert_int_equal(ptl__spool_reserve_at(s, 1000, 1), -1); /* beyond the end */
        assert_int_equal(ptl__spool_reserve_at(s, 990, 11), -1); /* runs past the end */
        assert_int_equal(ptl__spool_reserve_at(s, 5, 0), -1);    /* empty */
        assert_int_equal(ptl__spool_reserve_at(s, 0, 1), 0);     /* the first index */
        assert_int_equal(ptl__spool_reserve_at(s, 128, 256), 0); /* whole words */
        assert_true(ptl__spool_is_reserved(s, 63, 2));
        assert_true(ptl__spool_is_reserved(s, 64, 1));
        assert_false(ptl__spool_is_reserved(s, 62, 2));
        assert_false(ptl__spool_is_reserved(s, 63, 3));
        assert_true(ptl__spool_is_reserved(s, 128, 256));
        assert_false(ptl__spool_is_reserved(s, 127, 257));
        assert_false(ptl__spool_is_reserved(s, 128, 257));
        assert_true(ptl__spool_is_reserved(s, 999, 1));
        assert_false(ptl__spool_is_reserved(s, 999, 2));
        assert_false(ptl__spool_is_reserved(s, 1000, 1));
        assert_false(ptl__spool_is_reserved(s, 0, 0));
        assert_true(ptl__spool_is_reserved(s, 0, 1));
        assert_false(ptl__spool_is_reserved(s, 0, 2));
    }
    compare_full(r, f, 1);
    ALLOC2(r, f, 62, 1);
    ALLOC2(r, f, 63, 65);
    FREE2(r, f, 128, 256);
    FREE2(r, f, 63, 2);
    compare_full(r, f, 1);
    ptl__spool_destroy(r);
    ptl__spool_destroy(f);
}

static void test_degenerate_sizes(void **state)
{
    (void)state;
    for (uint32_t total = 1; total <= 130; total++) {
        for (int policy = 0; policy < 2; policy++) {
            ptl__spool *r, *f = both(&r, total, policy);
            compare_full(r, f, 1);
            ALLOC2(r, f, total + 1, -1);
            ALLOC2(r, f, total, 0);
            compare_full(r, f, 1);
            FREE2(r, f, 0, total);
            int64_t a = ptl__spool_alloc(r, 1);
            assert_int_equal(ptl__spool_alloc(f, 1), a);
            assert_int_equal(a, policy ? total - 1 : 0);
            compare_full(r, f, 1);
            ptl__spool_destroy(r);
            ptl__spool_destroy(f);
        }
    }
    ptl__spool *f = ptl__spool_create(PTL_SPOOL_FAST, 0, 0);
    assert_int_equal(ptl__spool_alloc(f, 1), -1);
    assert_int_equal(ptl__spool_check(f, stderr), 0);
    ptl__spool_destroy(f);
}

static void test_huge_edges(void **state)
{
    (void)state;
    ptl__spool *f = ptl__spool_create(PTL_SPOOL_FAST, 33554432u, 1);
    assert_int_equal(ptl__spool_largest(f), 33554432u);
    assert_int_equal(ptl__spool_alloc(f, 1), 33554431);
    assert_int_equal(ptl__spool_reserve_at(f, 16777216, 1), 0);
    assert_int_equal(ptl__spool_alloc(f, 16777216), 0);
    assert_int_equal(ptl__spool_alloc(f, 16777215), -1);
    assert_int_equal(ptl__spool_alloc(f, 16777214), 16777217);
    assert_int_equal(ptl__spool_free_count(f), 0);
    assert_int_equal(ptl__spool_alloc(f, 1), -1);
    ptl__spool_free(f, 0, 16777216);
    ptl__spool_free(f, 16777216, 1);
    ptl__spool_free(f, 16777217, 16777214);
    ptl__spool_stats st;
    ptl__spool_stats_get(f, &st);
    assert_int_equal(st.runs, 1);
    assert_int_equal(st.largest, 33554431);
    assert_int_equal(st.hist[PTL_SPOOL_HIST - 1], 1);
    assert_int_equal(ptl__spool_check(f, stderr), 0);
    ptl__spool_destroy(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_fit),
        cmocka_unit_test(test_word_boundaries),
        cmocka_unit_test(test_reserve_at_and_is_reserved),
        cmocka_unit_test(test_degenerate_sizes),
        cmocka_unit_test(test_huge_edges),
        cmocka_unit_test(test_diff_tiny),
        cmocka_unit_test(test_diff_small_low),
        cmocka_unit_test(test_diff_small_high),
        cmocka_unit_test(test_diff_words_low),
        cmocka_unit_test(test_diff_words_high),
        cmocka_unit_test(test_diff_pool_50000),
        cmocka_unit_test(test_diff_huge),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
