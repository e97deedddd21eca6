/* test-format.c - the event formatter (src/perf.c) against the C library's vsnprintf.
 *
 * Events are formatted on every DDI's path by ptelab's own formatter; it must give the
 * same bytes and the same return value as snprintf for every conversion it handles, at
 * every buffer size (truncation included), and defer to snprintf for the rest. Values
 * are random (seed printed; PTELAB_SEED=N replays) plus the edges: 0, -1, the extremes.
 */
#include <limits.h>
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

/* Both formatters, every capacity from 0 to a little past the full length. */
#define SAME(...)                                                                             \
    do {                                                                                      \
        char want[256], got[256];                                                             \
        int n = snprintf(want, sizeof want, __VA_ARGS__);                                     \
        assert_true(n >= 0 && n < (int)sizeof want);                                          \
        for (size_t cap = 0; cap <= (size_t)n + 2; cap++) {                                   \
            char a[256], b[256];                                                              \
            memset(a, 'A', sizeof a);                                                         \
            memset(b, 'A', sizeof b);                                                         \
            int x = snprintf(a, cap, __VA_ARGS__), y = ptl__format(b, cap, __VA_ARGS__);      \
            if (x != y || memcmp(a, b, sizeof a) != 0)                                        \
                fprintf(stderr, "format mismatch at capacity %zu: \"%s\" vs \"%.*s\"\n", cap, \
                        want, (int)(cap ? cap : 1), b);                                       \
            assert_int_equal(x, y);                                                           \
            assert_memory_equal(a, b, sizeof a);                                              \
        }                                                                                     \
        assert_int_equal(ptl__format(got, sizeof got, __VA_ARGS__), n);                       \
        assert_string_equal(got, want);                                                       \
    } while (0)

static void one_round(uint64_t r)
{
    unsigned u = (unsigned)r;
    int d = (int)(r >> 7);
    unsigned long long ull = r * 0x9E3779B97F4A7C15ull;
    size_t z = (size_t)(r >> 3);
    const char *s = (r & 1) ? "MmMapIoSpace" : "";
    void *p = (void *)(uintptr_t)(r | 1);
    SAME("%u|%x|%X|%08x|%08X|%8x|%-8x|%d|%5d|%-5d|%05d", u, u, u, u, u, u, u, d, d, d, d);
    SAME("%llx|%08llx|%llu|%lld|%zx|%zu|%lu|%lx|%ld", ull, ull, ull, (long long)ull, z, z,
         (unsigned long)ull, (unsigned long)ull, (long)ull);
    SAME("%s|%.4s|%10s|%-10s|%.2s|%c|%3c|%%|%p|%20p", s, s, s, s, s, (int)(r & 0x7F) | 0x20, 'x', p,
         p);
    SAME("%hu|%hx|%hhu|%hhx|%hd|%hhd", u, u, u, u, d, d);
    SAME("MmUnmapIoSpace %08x (%u PTEs) by %s", u, u & 0xFFF, s);
}

static void test_matches_snprintf(void **state)
{
    (void)state;
    ptltest_seed_rng("format");
    static const uint64_t edges[] = {
        0,           1,           UINT64_MAX,           (uint64_t)INT_MIN, (uint64_t)INT_MAX,
        0x80000000u, 0xFFFFFFFFu, 0x7FFFFFFFFFFFFFFFull};
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++)
        one_round(edges[i]);
    for (int i = 0; i < 2000; i++)
        one_round(ptltest_rnd64());
}

static void test_precision_bounds_the_read(void **state)
{
    (void)state;
    /* a pool tag: four characters and no terminator; %.4s must read no further (ASan) */
    char *tag = malloc(4);
    memcpy(tag, "Tag1", 4);
    SAME("tag %.4s|%.2s|%-6.4s|%6.3s", tag, tag, tag, tag);
    free(tag);
}

static void test_defers_what_it_does_not_handle(void **state)
{
    (void)state;
    /* precision on integers, a NULL string or pointer, floating point: snprintf's answer */
    SAME("%.3d|%.5x", 7, 0xAB);
    const char *volatile no_string = NULL; /* hidden from the compiler's format checks */
    void *volatile no_pointer = NULL;
    SAME("%s|%p", no_string, no_pointer);
    SAME("%5.2f|%g|%+d|% d|%#x", 3.14159, 2.5, 42, 42, 0x2A);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_snprintf),
        cmocka_unit_test(test_precision_bounds_the_read),
        cmocka_unit_test(test_defers_what_it_does_not_handle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
