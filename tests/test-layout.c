/* test-layout.c - the boot-time system address-space layout against hand-computed numbers.
 *
 * Every expected value below is worked out from the rules in the header comment of
 * src/layout.c (and docs/research/layout-and-sizing.md), not read back from the code:
 *
 *   system PTEs  7000 below 19 MB, else 11000; x2 above 32 MB; x2 again above 256 MB
 *                (not with /3GB); the pool ends where nonpaged pool expansion begins and
 *                its start is rounded down to a 4 MB boundary, never below 0xEB000000;
 *                count = (expansion start - pool start) / 4096 - 1.
 *   nonpaged     initial 256 KB + 32 KB per MB above 4 MB; maximum 1 MB + 400 KB per MB
 *                above 4 MB, at most 128 MB (64 MB with /3GB); the expansion region is
 *                maximum - initial and ends at MmNonPagedPoolEnd 0xFFBE0000.
 *   paged pool   2 x maximum nonpaged, rounded up to 4 MB, at most 192 MB (96 MB with
 *                /3GB), from 0xE1000000.
 *   boot region  0x80000000 (0xC1000000 with /3GB): 4 MB of images, then the PFN
 *                database (24 bytes per page), then the initial nonpaged pool.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "internal.h"
#include <ptelab/wdm.h>

#define MB (1024ull * 1024ull)

typedef struct expect {
    uint64_t ram_mb;
    uint32_t system_pages;
    int g3;
    uint32_t userva;
    /* expected */
    uint32_t user_hi, system_start;
    uint32_t pfn_va, inp_va, inp_bytes, max_npp;
    uint32_t paged_end;
    uint32_t syspte_va, syspte_count;
    uint32_t nppx_region_va;
    uint32_t extra_va, extra_count;
    uint32_t total; /* ptl_total_system_ptes */
} expect;

static ptl_machine *boot(uint64_t ram_mb, uint32_t system_pages, int g3, uint32_t userva)
{
    ptl_config cfg;
    ptl_config_init(&cfg);
    cfg.ram_bytes = ram_mb * MB;
    cfg.system_pages = system_pages;
    cfg.boot_3gb = g3;
    cfg.userva_mb = userva;
    ptl_machine *m = ptl_boot(&cfg);
    if (!m)
        fprintf(stderr, "boot of %llu MB failed: %s\n", (unsigned long long)ram_mb, ptl_error());
    assert_non_null(m);
    return m;
}

static const ptl_region *region_named(const ptl_machine *m, const char *name)
{
    const ptl_region *r;
    int n = ptl_layout_regions(m, &r);
    for (int i = 0; i < n; i++)
        if (strcmp(r[i].name, name) == 0)
            return &r[i];
    return NULL;
}

/* Regions are page aligned, in address order and disjoint; only the last may end at 4 GB. */
static void check_regions(const ptl_machine *m)
{
    const ptl_region *r = NULL;
    int n = ptl_layout_regions(m, &r);
    assert_true(n >= 10);
    assert_non_null(r);
    for (int i = 0; i < n; i++) {
        uint64_t end = r[i].end ? r[i].end : (1ull << 32);
        assert_int_equal(r[i].start & 0xFFFu, 0);
        assert_int_equal(end & 0xFFFu, 0);
        assert_true(end > r[i].start);
        if (r[i].end == 0)
            assert_int_equal(i, n - 1);
        if (i > 0) {
            assert_true(r[i - 1].end != 0);
            if (r[i - 1].end > r[i].start)
                fprintf(stderr, "%s [%08x,%08x) overlaps %s at %08x\n", r[i - 1].name,
                        r[i - 1].start, r[i - 1].end, r[i].name, r[i].start);
            assert_true(r[i - 1].end <= r[i].start);
        }
    }
}

static void check_layout(const expect *e)
{
    ptl_machine *m = boot(e->ram_mb, e->system_pages, e->g3, e->userva);
    const ptl__layout *l = &m->layout;
    assert_int_equal(l->user_lo, 0x10000u);
    assert_int_equal(l->user_hi, e->user_hi);
    assert_int_equal(l->system_start, e->system_start);
    assert_int_equal(l->pfn_va, e->pfn_va);
    assert_int_equal(l->inp_va, e->inp_va);
    assert_int_equal(l->inp_bytes, e->inp_bytes);
    assert_int_equal(l->max_npp_bytes, e->max_npp);
    assert_int_equal(l->paged_va, 0xE1000000u);
    assert_int_equal(l->paged_end, e->paged_end);
    assert_int_equal(l->syspte_va, e->syspte_va);
    assert_int_equal(l->syspte_count, e->syspte_count);
    assert_int_equal(l->nppx_region_va, e->nppx_region_va);
    assert_int_equal(l->nppx_va, e->nppx_region_va + 0x1000u);
    /* expansion PTEs: every page of the region but the first and the guard at the end */
    assert_int_equal(l->nppx_count, (0xFFBE0000u - e->nppx_region_va) / 4096u - 2u);
    assert_int_equal(l->npp_end, 0xFFBE0000u);
    assert_int_equal(l->extra_va, e->extra_va);
    assert_int_equal(l->extra_count, e->extra_count);
    assert_true(l->syspte_va >= 0xEB000000u);
    assert_int_equal(l->syspte_va & 0x3FFFFFu, 0); /* 4 MB aligned */

    /* the harness numbers agree with the layout */
    assert_int_equal(ptl_total_system_ptes(m), e->total);
    assert_int_equal(ptl_total_system_ptes(m), l->syspte_count + l->extra_count);
    assert_int_equal(ptl_free_system_ptes(m), e->total);
    assert_int_equal(ptl_largest_free_system_ptes(m),
                     l->extra_count > l->syspte_count ? l->extra_count : l->syspte_count);
    ptl_syspte_stats st;
    ptl_syspte_stats_get(m, &st);
    assert_int_equal(st.total, e->total);
    assert_int_equal(st.base_va, e->extra_count ? e->extra_va : e->syspte_va);

    /* the regions */
    check_regions(m);
    const ptl_region *r = region_named(m, "System PTEs");
    assert_non_null(r);
    assert_int_equal(r->start, e->syspte_va);
    assert_int_equal(r->end, e->nppx_region_va);
    r = region_named(m, "Nonpaged pool expansion");
    assert_non_null(r);
    assert_int_equal(r->start, e->nppx_region_va);
    assert_int_equal(r->end, 0xFFBE0000u);
    r = region_named(m, "Paged pool");
    assert_non_null(r);
    assert_int_equal(r->start, 0xE1000000u);
    assert_int_equal(r->end, e->paged_end);
    r = region_named(m, "User space");
    assert_non_null(r);
    assert_int_equal(r->start, 0x10000u);
    assert_int_equal(r->end, e->user_hi);
    r = region_named(m, "Initial nonpaged pool");
    assert_non_null(r);
    assert_int_equal(r->start, e->inp_va);
    assert_int_equal(r->end, e->inp_va + e->inp_bytes);
    r = region_named(m, "Process page tables");
    assert_non_null(r);
    assert_int_equal(r->start, 0xC0000000u);
    assert_int_equal(r->end, 0xC0400000u);
    r = region_named(m, "HAL");
    assert_non_null(r);
    assert_int_equal(r->start, 0xFFC00000u);
    assert_int_equal(r->end, 0);
    r = region_named(m, "Additional system PTEs (/USERVA)");
    if (e->extra_count) {
        assert_non_null(r);
        assert_int_equal(r->start, e->extra_va);
        assert_int_equal(r->end, 0xC0000000u);
    } else {
        assert_null(r);
    }
    int rc = ptl_check(m);
    if (rc)
        fprintf(stderr, "%s\n", ptl_error());
    assert_int_equal(rc, 0);
    ptl_shutdown(m);
}

/* 16 MB: 4096 pages, below 19 MB -> 7000 PTEs.
 *   initial NP = 256 KB + 12 * 32 KB = 640 KB = 0xA0000
 *   max NP     = 1 MB + 12 * 400 KB = 5824 KB = 0x5B0000
 *   expansion  = 5824 - 640 = 5184 KB = 0x510000 -> starts 0xFFBE0000 - 0x510000 = 0xFF6D0000
 *   PTE start  = 0xFF6D0000 - (7000 + 1) * 4096 = 0xFDB77000 -> 4 MB down 0xFD800000
 *   count      = (0xFF6D0000 - 0xFD800000) / 4096 - 1 = 0x1ED0 - 1 = 7887
 *   paged      = 2 * 5824 KB = 11648 KB -> 12 MB -> 0xE1000000 + 0xC00000 = 0xE1C00000
 *   PFN db     = 4096 * 24 = 0x18000 at 0x80400000 -> initial NP at 0x80418000 */
static void test_16mb(void **state)
{
    (void)state;
    const expect e = {
        .ram_mb = 16,
        .user_hi = 0x7FFF0000u,
        .system_start = 0x80000000u,
        .pfn_va = 0x80400000u,
        .inp_va = 0x80418000u,
        .inp_bytes = 0xA0000u,
        .max_npp = 0x5B0000u,
        .paged_end = 0xE1C00000u,
        .syspte_va = 0xFD800000u,
        .syspte_count = 7887,
        .nppx_region_va = 0xFF6D0000u,
        .total = 7887,
    };
    check_layout(&e);
}

/* 64 MB: 16384 pages, above 32 MB -> 11000 x 2 = 22000 PTEs.
 *   initial NP = 256 KB + 60 * 32 KB = 2176 KB = 0x220000
 *   max NP     = 1 MB + 60 * 400 KB = 25024 KB = 0x1870000
 *   expansion  = 25024 - 2176 = 22848 KB = 0x1650000 -> starts 0xFE590000
 *   PTE start  = 0xFE590000 - 22001 * 4096 = 0xF8F9F000 -> 0xF8C00000
 *   count      = (0xFE590000 - 0xF8C00000) / 4096 - 1 = 0x5990 - 1 = 22927
 *   paged      = 2 * 25024 KB = 50048 KB -> 52 MB -> 0xE4400000
 *   PFN db     = 16384 * 24 = 0x60000 -> initial NP at 0x80460000 */
static void test_64mb(void **state)
{
    (void)state;
    const expect e = {
        .ram_mb = 64,
        .user_hi = 0x7FFF0000u,
        .system_start = 0x80000000u,
        .pfn_va = 0x80400000u,
        .inp_va = 0x80460000u,
        .inp_bytes = 0x220000u,
        .max_npp = 0x1870000u,
        .paged_end = 0xE4400000u,
        .syspte_va = 0xF8C00000u,
        .syspte_count = 22927,
        .nppx_region_va = 0xFE590000u,
        .total = 22927,
    };
    check_layout(&e);
}

/* 512 MB: 131072 pages, above 256 MB -> 44000 PTEs.
 *   initial NP = 256 KB + 508 * 32 KB = 16512 KB = 0x1020000
 *   max NP     = 1 MB + 508 * 400 KB = 204224 KB > 128 MB -> 0x8000000
 *   expansion  = 0x8000000 - 0x1020000 = 0x6FE0000 -> starts 0xF8C00000
 *   PTE start  = 0xF8C00000 - 44001 * 4096 = 0xEE01F000 -> 0xEE000000
 *   count      = (0xF8C00000 - 0xEE000000) / 4096 - 1 = 0xAC00 - 1 = 44031
 *   paged      = 2 * 128 MB = 256 MB -> cap 192 MB -> 0xE1000000 + 0xC000000 = 0xED000000
 *   PFN db     = 131072 * 24 = 0x300000 -> initial NP at 0x80700000 */
static void test_512mb(void **state)
{
    (void)state;
    const expect e = {
        .ram_mb = 512,
        .user_hi = 0x7FFF0000u,
        .system_start = 0x80000000u,
        .pfn_va = 0x80400000u,
        .inp_va = 0x80700000u,
        .inp_bytes = 0x1020000u,
        .max_npp = 0x8000000u,
        .paged_end = 0xED000000u,
        .syspte_va = 0xEE000000u,
        .syspte_count = 44031,
        .nppx_region_va = 0xF8C00000u,
        .total = 44031,
    };
    check_layout(&e);
}

/* 3.5 GB = 3584 MB: 917504 pages -> 44000 PTEs.
 *   initial NP = 256 KB + 3580 * 32 KB = 114816 KB = 0x7020000 (below the 128 MB cap)
 *   max NP     = capped at 128 MB = 0x8000000
 *   expansion  = 0x8000000 - 0x7020000 = 0xFE0000 -> starts 0xFFBE0000 - 0xFE0000 = 0xFEC00000
 *   PTE start  = 0xFEC00000 - 44001 * 4096 = 0xF401F000 -> 0xF4000000
 *   count      = (0xFEC00000 - 0xF4000000) / 4096 - 1 = 0xAC00 - 1 = 44031
 *   paged      = 192 MB cap -> 0xED000000
 *   PFN db     = 917504 * 24 = 0x1500000 -> initial NP at 0x81900000 */
static void test_3584mb(void **state)
{
    (void)state;
    const expect e = {
        .ram_mb = 3584,
        .user_hi = 0x7FFF0000u,
        .system_start = 0x80000000u,
        .pfn_va = 0x80400000u,
        .inp_va = 0x81900000u,
        .inp_bytes = 0x7020000u,
        .max_npp = 0x8000000u,
        .paged_end = 0xED000000u,
        .syspte_va = 0xF4000000u,
        .syspte_count = 44031,
        .nppx_region_va = 0xFEC00000u,
        .total = 44031,
    };
    check_layout(&e);
}

/* 64 MB with SystemPages = 40000 (pools as for 64 MB):
 *   PTE start = 0xFE590000 - 40001 * 4096 = 0xFE590000 - 0x9C41000 = 0xF494F000 -> 0xF4800000
 *   count     = (0xFE590000 - 0xF4800000) / 4096 - 1 = 0x9D90 - 1 = 40335 */
static void test_system_pages_set(void **state)
{
    (void)state;
    const expect e = {
        .ram_mb = 64,
        .system_pages = 40000,
        .user_hi = 0x7FFF0000u,
        .system_start = 0x80000000u,
        .pfn_va = 0x80400000u,
        .inp_va = 0x80460000u,
        .inp_bytes = 0x220000u,
        .max_npp = 0x1870000u,
        .paged_end = 0xE4400000u,
        .syspte_va = 0xF4800000u,
        .syspte_count = 40335,
        .nppx_region_va = 0xFE590000u,
        .total = 40335,
    };
    check_layout(&e);
    /* the RAM-based default is still recorded */
    ptl_machine *m = boot(64, 40000, 0, 0);
    assert_int_equal(m->layout.computed_system_ptes, 22000);
    ptl_shutdown(m);
}

/* 64 MB with SystemPages = 0xFFFFFFFF: as many as fit between 0xEB000000 and the expansion:
 *   count = (0xFE590000 - 0xEB000000) / 4096 - 1 = 0x13590 - 1 = 79247, starting 0xEB000000 */
static void test_system_pages_max(void **state)
{
    (void)state;
    const expect e = {
        .ram_mb = 64,
        .system_pages = 0xFFFFFFFFu,
        .user_hi = 0x7FFF0000u,
        .system_start = 0x80000000u,
        .pfn_va = 0x80400000u,
        .inp_va = 0x80460000u,
        .inp_bytes = 0x220000u,
        .max_npp = 0x1870000u,
        .paged_end = 0xE4400000u,
        .syspte_va = 0xEB000000u,
        .syspte_count = 79247,
        .nppx_region_va = 0xFE590000u,
        .total = 79247,
    };
    check_layout(&e);
}

/* 512 MB with /3GB: user space to 0xBFFF0000, system space from 0xC0000000; the caps halve
 * (nonpaged 64 MB, paged 96 MB) and the 256 MB doubling of system PTEs is dropped:
 *   initial NP = 0x1020000 (as without /3GB)
 *   max NP     = 204224 KB -> cap 64 MB = 0x4000000
 *   expansion  = 0x4000000 - 0x1020000 = 0x2FE0000 -> starts 0xFFBE0000 - 0x2FE0000 = 0xFCC00000
 *   PTEs       = 22000: start 0xFCC00000 - 22001 * 4096 = 0xF760F000 -> 0xF7400000
 *   count      = (0xFCC00000 - 0xF7400000) / 4096 - 1 = 0x5800 - 1 = 22527
 *   paged      = 2 * 64 MB = 128 MB -> cap 96 MB -> 0xE1000000 + 0x6000000 = 0xE7000000
 *   boot       = 0xC1000000: PFN db at 0xC1400000 (0x300000), initial NP at 0xC1700000 */
static const expect e_512_3gb = {
    .ram_mb = 512,
    .g3 = 1,
    .user_hi = 0xBFFF0000u,
    .system_start = 0xC0000000u,
    .pfn_va = 0xC1400000u,
    .inp_va = 0xC1700000u,
    .inp_bytes = 0x1020000u,
    .max_npp = 0x4000000u,
    .paged_end = 0xE7000000u,
    .syspte_va = 0xF7400000u,
    .syspte_count = 22527,
    .nppx_region_va = 0xFCC00000u,
    .total = 22527,
};

static void test_3gb(void **state)
{
    (void)state;
    check_layout(&e_512_3gb);
    ptl_machine *m = boot(512, 0, 1, 0);
    /* the system cache starts at the 4 MB boundary after the boot region:
     * 0xC1700000 + 0x1020000 = 0xC2720000 -> 0xC2800000 */
    const ptl_region *r = region_named(m, "System cache");
    assert_non_null(r);
    assert_int_equal(r->start, 0xC2800000u);
    assert_int_equal(r->end, 0xE1000000u);
    /* a user process really gets the third gigabyte */
    ptl_process *p = ptl_process_create(m, "big.exe");
    assert_non_null(p);
    assert_int_equal(ptl__vad_find_free(p, 0xA0000000u, 0x10000u), 0xA0000000u);
    assert_int_equal(ptl__vad_find_free(p, 0xBFFE0000u, 0x20000u), 0); /* crosses 0xBFFF0000 */
    assert_int_equal(ptl_check(m), 0);
    ptl_shutdown(m);
}

/* 512 MB, /3GB /USERVA=2900: user space ends at 2900 MB = 0xB5400000 minus the 64 KB
 * no-access area; 0xB5400000..0xC0000000 becomes additional system PTEs:
 *   extra = (0xC0000000 - 0xB5400000) / 4096 = 0xAC00 = 44032
 *   total = 44032 + 22527 = 66559 (the junction between the segments is not counted) */
static void test_userva(void **state)
{
    (void)state;
    expect e = e_512_3gb;
    e.userva = 2900;
    e.user_hi = 0xB53F0000u;
    e.extra_va = 0xB5400000u;
    e.extra_count = 44032;
    e.total = 66559;
    check_layout(&e);
    assert_true(e.total > e_512_3gb.total);
}

typedef struct read_ctx {
    uint32_t va;
    ULONG value;
} read_ctx;

static void read_word(void *arg)
{
    read_ctx *c = arg;
    c->value = READ_REGISTER_ULONG((volatile ULONG *)(uintptr_t)c->va);
}

/* The additional system PTEs of /USERVA are system space: their page tables are shared by
 * every page directory, the invariants hold, and a driver loaded there can be read. */
static void test_userva_ptes_usable(void **state)
{
    (void)state;
    ptl_machine *m = boot(512, 0, 1, 2900);
    int rc = ptl_check(m);
    if (rc)
        fprintf(stderr, "after boot with /USERVA=2900: %s\n", ptl_error());
    /* the page table of 0xB5400000 is in the System page directory */
    uint32_t pde = ptl__pde_read(m, m->pte.master_pd, 0xB5400000u);
    printf("PDE of 0xB5400000 in the System page directory: %08x\n", pde);
    assert_true(pde & PTL_PTE_VALID);
    assert_false(pde & PTL_PTE_OWNER);
    assert_int_equal(rc, 0);

    /* fill the lower segment: the next run lands in the upper one, never across the
     * junction between the two */
    ptl_driver *big = ptl_driver_load(m, "big.sys", 44032u * 4096u);
    assert_non_null(big);
    assert_int_equal(ptl_driver_base(big), 0xB5400000u);
    ptl_driver *next = ptl_driver_load(m, "next.sys", 4096);
    assert_non_null(next);
    assert_int_equal(ptl_driver_base(next), 0xF7400000u);
    assert_int_equal(ptl_free_system_ptes(m), 66559u - 44032u - 1u);
    /* kernel code can read both images */
    ptl_stop stop;
    read_ctx c = {.va = ptl_driver_base(next)};
    assert_int_equal(ptl_call(m, NULL, next, read_word, &c, &stop), 0);
    c.va = ptl_driver_base(big) + 4096u;
    uint32_t code = ptl_call(m, NULL, big, read_word, &c, &stop);
    if (code)
        ptl_stop_print(&stop, stderr);
    assert_int_equal(code, 0);
    assert_int_equal(ptl_check(m), 0);
    ptl_shutdown(m);
}

static void expect_refused(uint64_t ram_bytes, uint32_t system_pages, int g3, uint32_t userva,
                           const char *why)
{
    ptl_config cfg;
    ptl_config_init(&cfg);
    cfg.ram_bytes = ram_bytes;
    cfg.system_pages = system_pages;
    cfg.boot_3gb = g3;
    cfg.userva_mb = userva;
    ptl_machine *m = ptl_boot(&cfg);
    if (m)
        fprintf(stderr, "booted although %s\n", why);
    assert_null(m);
    const char *err = ptl_error();
    assert_non_null(err);
    assert_true(err[0] != '\0');
    assert_string_not_equal(err, "no error");
    printf("refused (%s): %s\n", why, err);
}

static void test_refusals(void **state)
{
    (void)state;
    expect_refused(0, 0, 0, 0, "no RAM");
    expect_refused(64 * MB + 1, 0, 0, 0, "RAM not a page multiple");
    expect_refused(64 * MB + 2048, 0, 0, 0, "RAM not a page multiple");
    expect_refused(4096 * MB + 4096, 0, 0, 0, "more than 4 GB");
    expect_refused(8192 * MB, 0, 0, 0, "more than 4 GB");
    expect_refused(8 * MB, 0, 0, 0, "below 12 MB");
    expect_refused(12 * MB - 4096, 0, 0, 0, "below 12 MB");
    /* 64 MB fits at most 79247 system PTEs (test_system_pages_max) */
    expect_refused(64 * MB, 79248, 0, 0, "SystemPages too large");
    expect_refused(64 * MB, 0xFFFFFFFEu, 0, 0, "SystemPages too large");
    expect_refused(64 * MB, 0, 0, 2900, "/USERVA without /3GB");
    expect_refused(64 * MB, 0, 1, 1000, "/USERVA below 2048");

    /* the boundaries themselves boot */
    ptl_config cfg;
    ptl_config_init(&cfg);
    cfg.ram_bytes = 12 * MB;
    ptl_machine *m = ptl_boot(&cfg);
    assert_non_null(m);
    ptl_shutdown(m);
    cfg.ram_bytes = 64 * MB;
    cfg.system_pages = 79247;
    m = ptl_boot(&cfg);
    assert_non_null(m);
    assert_int_equal(ptl_total_system_ptes(m), 79247);
    assert_int_equal(m->layout.syspte_va, 0xEB000000u);
    ptl_shutdown(m);
    assert_null(ptl_boot(NULL));
    assert_true(ptl_error()[0] != '\0');
}

/* More RAM, more system PTEs: 16 MB < 64 MB < 512 MB (7887 < 22927 < 44031). */
static void test_grows_with_ram(void **state)
{
    (void)state;
    static const uint64_t sizes[] = {16, 64, 512};
    uint32_t prev = 0, prev_np = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        ptl_machine *m = boot(sizes[i], 0, 0, 0);
        uint32_t total = ptl_total_system_ptes(m);
        printf("%llu MB: %u system PTEs, %u KB maximum nonpaged pool\n",
               (unsigned long long)sizes[i], total, m->layout.max_npp_bytes >> 10);
        assert_true(total > prev);
        assert_true(m->layout.max_npp_bytes > prev_np);
        assert_int_equal(total, m->layout.syspte_count);
        prev = total;
        prev_np = m->layout.max_npp_bytes;
        ptl_shutdown(m);
    }
    /* between the thresholds the count only moves with the alignment slack: at 20 MB (above
     * 19 MB, not above 32 MB) it is 11000 stretched; check it against the rule:
     *   initial NP = 256 + 16 * 32 = 768 KB, max NP = 1024 + 16 * 400 = 7424 KB
     *   expansion  = 6656 KB = 0x680000 -> starts 0xFF560000
     *   start      = 0xFF560000 - 11001 * 4096 = 0xFCA67000 -> 0xFC800000
     *   count      = (0xFF560000 - 0xFC800000) / 4096 - 1 = 0x2D60 - 1 = 11615 */
    ptl_machine *m = boot(20, 0, 0, 0);
    assert_int_equal(m->layout.computed_system_ptes, 11000);
    assert_int_equal(ptl_total_system_ptes(m), 11615);
    assert_int_equal(m->layout.syspte_va, 0xFC800000u);
    ptl_shutdown(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_16mb),
        cmocka_unit_test(test_64mb),
        cmocka_unit_test(test_512mb),
        cmocka_unit_test(test_3584mb),
        cmocka_unit_test(test_system_pages_set),
        cmocka_unit_test(test_system_pages_max),
        cmocka_unit_test(test_3gb),
        cmocka_unit_test(test_userva),
        cmocka_unit_test(test_userva_ptes_usable),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_grows_with_ram),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
