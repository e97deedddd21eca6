/* test-pte.c - page tables and the self-map against hand-computed addresses and bits.
 *
 * The x86 non-PAE self-map (PDE 0x300 maps the page directory itself):
 *     PTE of VA at 0xC0000000 + (VA >> 12) * 4
 *     PDE of VA at 0xC0300000 + (VA >> 22) * 4
 * MmMapIoSpace writes valid kernel PTEs: V|W|A, plus CD|WT for MmNonCached. The tests read
 * PTEs three ways (the page-table frames directly, a page walk, and through the self-map
 * with the emulated MMU) and expect the same value.
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
#include <ptelab/wdm.h>

#define APERTURE 0xE0000000ull

static ptl_machine *boot64(void)
{
    ptl_config cfg;
    ptl_config_init(&cfg);
    cfg.ram_bytes = 64ull << 20;
    ptl_machine *m = ptl_boot(&cfg);
    if (!m)
        fprintf(stderr, "boot failed: %s\n", ptl_error());
    assert_non_null(m);
    assert_int_equal(ptl_adapter_add(m, PCIBus, 0, APERTURE, 1u << 20), 0);
    return m;
}

/* ---- the self-map formula ----------------------------------------------------------- */

static void test_selfmap_formula(void **state)
{
    (void)state;
    static const struct {
        uint32_t va, pte, pde;
    } cases[] = {
        /* 0x00010000 >> 12 = 0x10, * 4 = 0x40; >> 22 = 0 */
        {0x00010000u, 0xC0000040u, 0xC0300000u},
        /* 0x7FFEFFFF >> 12 = 0x7FFEF, * 4 = 0x1FFFBC; >> 22 = 0x1FF, * 4 = 0x7FC */
        {0x7FFEFFFFu, 0xC01FFFBCu, 0xC03007FCu},
        /* 0x80000000 >> 12 = 0x80000, * 4 = 0x200000; >> 22 = 0x200, * 4 = 0x800 */
        {0x80000000u, 0xC0200000u, 0xC0300800u},
        /* 0xC0000000 >> 12 = 0xC0000, * 4 = 0x300000 (the PTE of PTE_BASE is PDE_BASE);
         * >> 22 = 0x300, * 4 = 0xC00 (the self-map entry) */
        {0xC0000000u, 0xC0300000u, 0xC0300C00u},
        /* 0xF8C00000 >> 12 = 0xF8C00, * 4 = 0x3E3000; >> 22 = 0x3E3, * 4 = 0xF8C */
        {0xF8C00000u, 0xC03E3000u, 0xC0300F8Cu},
        /* 0xFFFFFFFF >> 12 = 0xFFFFF, * 4 = 0x3FFFFC; >> 22 = 0x3FF, * 4 = 0xFFC */
        {0xFFFFFFFFu, 0xC03FFFFCu, 0xC0300FFCu},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(PTL_PTE_VA(cases[i].va), cases[i].pte);
        assert_int_equal(PTL_PDE_VA(cases[i].va), cases[i].pde);
        assert_int_equal(PTL_VA_OF_PTE(cases[i].pte), cases[i].va & ~0xFFFu);
        /* the PTE of a PTE is the PDE */
        assert_int_equal(PTL_PTE_VA(PTL_PTE_VA(cases[i].va)), cases[i].pde);
    }
}

/* The same identities for random addresses (seed printed; PTELAB_SEED=N replays). */
static void test_selfmap_random(void **state)
{
    (void)state;
    uint64_t seed = ptltest_seed();
    printf("selfmap random: seed %llu (PTELAB_SEED=%llu replays)\n", (unsigned long long)seed,
           (unsigned long long)seed);
    ptltest_rng_state = seed * 2654435761u + 1;
    for (int i = 0; i < 100000; i++) {
        uint32_t va = ptltest_rnd() ^ (ptltest_rnd() << 21);
        uint32_t pte = PTL_PTE_VA(va), pde = PTL_PDE_VA(va);
        assert_true(pte >= 0xC0000000u && pte < 0xC0400000u);
        assert_true(pde >= 0xC0300000u && pde < 0xC0301000u);
        assert_int_equal(pte & 3u, 0);
        assert_int_equal(pte, 0xC0000000u + (va / 4096u) * 4u);
        assert_int_equal(pde, 0xC0300000u + (va / 0x400000u) * 4u);
        assert_int_equal(PTL_VA_OF_PTE(pte), va & 0xFFFFF000u);
        assert_int_equal(PTL_PTE_VA(pte), pde);
    }
}

/* ---- I/O-space mappings ---------------------------------------------------------------- */

typedef struct map_ctx {
    uint64_t pa;
    uint32_t bytes;
    MEMORY_CACHING_TYPE cache;
    uint32_t va;
    uint32_t pte_via_selfmap, pde_via_selfmap;
    ULONG value;
} map_ctx;

static void do_map(void *arg)
{
    map_ctx *c = arg;
    PHYSICAL_ADDRESS pa;
    pa.QuadPart = (LONGLONG)c->pa;
    PVOID v = MmMapIoSpace(pa, c->bytes, c->cache);
    c->va = (uint32_t)(uintptr_t)v;
    if (!v)
        return;
    c->value = READ_REGISTER_ULONG((volatile ULONG *)v);
    /* driver code reading its own PTE and PDE through the self-map */
    RtlCopyMemory(&c->pte_via_selfmap, (PVOID)(uintptr_t)PTL_PTE_VA(c->va), 4);
    RtlCopyMemory(&c->pde_via_selfmap, (PVOID)(uintptr_t)PTL_PDE_VA(c->va), 4);
}

static void do_unmap(void *arg)
{
    map_ctx *c = arg;
    MmUnmapIoSpace((PVOID)(uintptr_t)c->va, c->bytes);
}

static void do_read(void *arg)
{
    map_ctx *c = arg;
    c->value = READ_REGISTER_ULONG((volatile ULONG *)(uintptr_t)c->va);
}

static uint32_t read_selfmap_kernel(ptl_machine *m, uint32_t at)
{
    uint32_t v = 0xDEADBEEFu;
    assert_int_equal(ptl__mmu_copy(m, at, &v, sizeof v, 0, 0, 0), PTL_FAULT_NONE);
    return v;
}

static void check_mapping(ptl_machine *m, const map_ctx *c, uint32_t expect_pte)
{
    uint32_t base = c->va & ~0xFFFu;
    uint32_t pte = 0, pde, walk_pde = 0, walk_pte = 0;
    uint64_t pa = 0;
    assert_int_equal(ptl__pte_read(m, m->pte.master_pd, base, &pte), 0);
    assert_int_equal(pte, expect_pte);
    pde = ptl__pde_read(m, m->pte.master_pd, base);
    assert_true(pde & PTL_PTE_VALID);
    assert_true(pde & PTL_PTE_WRITE);
    assert_false(pde & PTL_PTE_OWNER); /* system page table: kernel only */
    assert_int_equal(ptl__mmu_walk(m, m->pte.master_pd, c->va, &pa, &walk_pde, &walk_pte), 0);
    assert_int_equal(pa, c->pa);
    assert_int_equal(walk_pte, expect_pte);
    assert_int_equal(walk_pde, pde);
    /* through the self-map: from driver code and from kernel-mode MMU reads */
    assert_int_equal(c->pte_via_selfmap, expect_pte);
    assert_int_equal(c->pde_via_selfmap, pde);
    assert_int_equal(read_selfmap_kernel(m, PTL_PTE_VA(base)), pte);
    assert_int_equal(read_selfmap_kernel(m, PTL_PDE_VA(base)), pde);
    /* the page table's frame is the one the PDE names */
    assert_int_equal(m->phys.pfn[pde >> 12].Use, PTL_USE_PAGE_TABLE);
    /* the self-map entry itself */
    assert_int_equal(read_selfmap_kernel(m, 0xC0300C00u) >> 12, m->pte.master_pd);
}

static void test_map_noncached(void **state)
{
    (void)state;
    ptl_machine *m = boot64();
    uint32_t word = 0x12345678u;
    assert_int_equal(ptl_phys_write(m, APERTURE + 0x3000, &word, 4), 0);
    uint32_t free0 = ptl_free_system_ptes(m);
    map_ctx c = {.pa = APERTURE + 0x3000, .bytes = 0x1000, .cache = MmNonCached};
    ptl_stop stop;
    assert_int_equal(ptl_call(m, NULL, NULL, do_map, &c, &stop), 0);
    /* the first run of the pool, FIRST_FIT_LOW: 0xF8C00000 on 64 MB (test-layout.c) */
    assert_int_equal(c.va, 0xF8C00000u);
    assert_int_equal(c.value, word);
    assert_int_equal(ptl_free_system_ptes(m), free0 - 1);
    /* 0xE0003000 | Valid 0x1 | Write 0x2 | WriteThrough 0x8 | CacheDisable 0x10 |
     * Accessed 0x20 = 0xE000303B; no Dirty: the page was only read */
    check_mapping(m, &c, 0xE000303Bu);
    char flags[16];
    ptl__pte_flags(0xE000303Bu, 0, flags);
    assert_string_equal(flags, "----ANTKWEV");
    assert_int_equal(ptl_check(m), 0);

    /* unmap: the PTE is zero again and a kernel read of the address is a STOP 0x50 */
    assert_int_equal(ptl_call(m, NULL, NULL, do_unmap, &c, &stop), 0);
    assert_int_equal(ptl_free_system_ptes(m), free0);
    uint32_t pte = 0xFFFFFFFFu;
    assert_int_equal(ptl__pte_read(m, m->pte.master_pd, c.va, &pte), 0);
    assert_int_equal(pte, 0);
    assert_int_equal(read_selfmap_kernel(m, PTL_PTE_VA(c.va)), 0);
    uint64_t pa;
    assert_int_equal(ptl__mmu_walk(m, m->pte.master_pd, c.va, &pa, NULL, NULL), -1);
    assert_int_equal(ptl_check(m), 0);
    assert_int_equal(ptl_call(m, NULL, NULL, do_read, &c, &stop), 0x50);
    assert_int_equal(stop.code, 0x50);
    assert_string_equal(stop.name, "PAGE_FAULT_IN_NONPAGED_AREA");
    assert_int_equal(stop.param[0], 0xF8C00000u);
    assert_int_equal(stop.param[1], 0); /* a read */
    ptl_shutdown(m);
}

static void test_map_cached(void **state)
{
    (void)state;
    ptl_machine *m = boot64();
    ptl_stop stop;
    map_ctx c = {.pa = APERTURE, .bytes = 0x1000, .cache = MmCached};
    assert_int_equal(ptl_call(m, NULL, NULL, do_map, &c, &stop), 0);
    assert_int_equal(c.va, 0xF8C00000u);
    assert_int_equal(c.value, 0); /* untouched aperture memory */
    /* 0xE0000000 | V | W | A = 0xE0000023: neither CD nor WT */
    check_mapping(m, &c, 0xE0000023u);
    char flags[16];
    ptl__pte_flags(0xE0000023u, 0, flags);
    assert_string_equal(flags, "----A--KWEV");
    /* a PDE of a user page table with Dirty would print U and D */
    ptl__pte_flags(0x00123067u, 1, flags);
    assert_string_equal(flags, "---DA--UWEV");
    assert_int_equal(ptl_check(m), 0);
    ptl_shutdown(m);
}

/* A mapping that does not start on a page: the VA carries the byte offset and the run
 * covers every page the range touches. 0xE0000100 + 0x2000 spans 3 pages. */
static void test_map_offset(void **state)
{
    (void)state;
    ptl_machine *m = boot64();
    uint32_t word = 0xCAFEF00Du;
    assert_int_equal(ptl_phys_write(m, APERTURE + 0x100, &word, 4), 0);
    uint32_t free0 = ptl_free_system_ptes(m);
    ptl_stop stop;
    map_ctx c = {.pa = APERTURE + 0x100, .bytes = 0x2000, .cache = MmNonCached};
    assert_int_equal(ptl_call(m, NULL, NULL, do_map, &c, &stop), 0);
    assert_int_equal(c.va, 0xF8C00100u);
    assert_int_equal(c.value, word);
    assert_int_equal(ptl_free_system_ptes(m), free0 - 3);
    for (uint32_t i = 0; i < 3; i++) {
        uint32_t pte = 0;
        assert_int_equal(ptl__pte_read(m, m->pte.master_pd, 0xF8C00000u + i * 4096u, &pte), 0);
        assert_int_equal(pte & 0xFFFFF000u, (uint32_t)APERTURE + i * 4096u);
        assert_int_equal(pte & (PTL_PTE_VALID | PTL_PTE_WRITE | PTL_PTE_CACHEDISABLE |
                                PTL_PTE_WRITETHROUGH | PTL_PTE_OWNER),
                         PTL_PTE_VALID | PTL_PTE_WRITE | PTL_PTE_CACHEDISABLE |
                             PTL_PTE_WRITETHROUGH);
        /* the self-map PTE addresses of consecutive pages are 4 bytes apart */
        assert_int_equal(read_selfmap_kernel(m, 0xC03E3000u + i * 4u), pte);
    }
    uint32_t after = 0;
    assert_int_equal(ptl__pte_read(m, m->pte.master_pd, 0xF8C03000u, &after), 0);
    assert_int_equal(after, 0);
    assert_int_equal(ptl_call(m, NULL, NULL, do_unmap, &c, &stop), 0);
    assert_int_equal(ptl_free_system_ptes(m), free0);
    assert_int_equal(ptl_check(m), 0);
    ptl_shutdown(m);
}

/* ---- user pages ------------------------------------------------------------------------ */

static void test_user_pte(void **state)
{
    (void)state;
    ptl_machine *m = boot64();
    ptl_process *p = ptl_process_create(m, "app.exe");
    assert_non_null(p);
    uint32_t pd = ptl_process_dirbase(p) >> 12;
    uint32_t va = ptl_user_alloc(p, 2 * 4096);
    assert_int_equal(va, 0x10000u); /* the lowest allocation of a fresh process */
    /* committed, not yet touched: a demand-zero software PTE, protection MM_READWRITE (4)
     * in bits 5-9: 4 << 5 = 0x80 */
    uint32_t pte = 0;
    assert_int_equal(ptl__pte_read(m, pd, va, &pte), 0);
    assert_int_equal(pte, 0x80u);
    uint64_t pa;
    assert_int_equal(ptl__mmu_walk(m, pd, va, &pa, NULL, NULL), -1);

    uint32_t data = 0xA1B2C3D4u;
    assert_int_equal(ptl_user_write(p, va + 8, &data, 4), 0);
    assert_int_equal(ptl__pte_read(m, pd, va, &pte), 0);
    /* valid, writable, user, accessed, dirty; cached */
    assert_int_equal(pte & 0xFFFu, PTL_PTE_VALID | PTL_PTE_WRITE | PTL_PTE_OWNER |
                                       PTL_PTE_ACCESSED | PTL_PTE_DIRTY);
    uint32_t pde = ptl__pde_read(m, pd, va);
    assert_true((pde & (PTL_PTE_VALID | PTL_PTE_OWNER | PTL_PTE_WRITE)) ==
                (PTL_PTE_VALID | PTL_PTE_OWNER | PTL_PTE_WRITE));
    uint32_t wpde = 0, wpte = 0;
    assert_int_equal(ptl__mmu_walk(m, pd, va + 8, &pa, &wpde, &wpte), 0);
    assert_int_equal(wpte, pte);
    assert_int_equal(wpde, pde);
    assert_int_equal(pa, (uint64_t)(pte & 0xFFFFF000u) + 8);
    assert_int_equal(m->phys.pfn[pte >> 12].Use, PTL_USE_PRIVATE);
    assert_int_equal(m->phys.pfn[pte >> 12].PteAddress, PTL_PTE_VA(va));
    uint32_t back = 0;
    assert_int_equal(ptl_phys_read(m, pa, &back, 4), 0);
    assert_int_equal(back, data);
    /* the process is current (CR3): its self-map shows its own PTE and PDE */
    assert_int_equal(m->mmu.cr3, pd);
    assert_int_equal(read_selfmap_kernel(m, PTL_PTE_VA(va)), pte);
    assert_int_equal(read_selfmap_kernel(m, PTL_PDE_VA(va)), pde);
    char flags[16];
    ptl__pte_flags(pte, 0, flags);
    assert_string_equal(flags, "---DA--UWEV");
    /* user mode cannot read the page tables */
    assert_int_equal(ptl_user_read(p, PTL_PTE_VA(va), &back, 4), STATUS_ACCESS_VIOLATION);
    /* the System process's directory has no user page table there */
    assert_int_equal(ptl__pde_read(m, m->pte.master_pd, va) & PTL_PTE_VALID, 0);
    assert_int_equal(ptl_check(m), 0);

    /* swapped out: a page-file PTE (slot in bits 12-31) with the protection kept */
    assert_int_equal(ptl_process_swap_out(p), 1);
    assert_int_equal(ptl__pte_read(m, pd, va, &pte), 0);
    assert_int_equal(pte & PTL_PTE_VALID, 0);
    assert_int_equal(PTL_SWPTE_GET_PROT(pte), MM_READWRITE);
    assert_true((pte >> 12) != 0);
    assert_int_equal(ptl_check(m), 0);
    back = 0;
    assert_int_equal(ptl_user_read(p, va + 8, &back, 4), 0);
    assert_int_equal(back, data);
    assert_int_equal(ptl_check(m), 0);
    ptl_shutdown(m);
}

/* ---- the run writer against its reference twin ---------------------------------------
 * ptl__pte_write_run must leave exactly what the same n ptl__pte_write calls leave: the
 * PTEs, the PFN database's counts and first mappings, the write counter, a TLB with no
 * entry of the run, and (on the machine that can be native) the host mirror, which
 * ptl_check compares with the page tables. Runs cross page-table boundaries and mix RAM
 * frames, device memory, overwrites and clears. */
static void test_write_run_twin(void **state)
{
    (void)state;
    ptltest_seed_rng("pte run twin");
    ptl_config cfg;
    ptl_config_init(&cfg);
    ptl_machine *fast = ptl_boot(&cfg); /* native when the host allows */
    cfg.native = PTL_NATIVE_OFF;
    ptl_machine *ref = ptl_boot(&cfg);
    assert_true(fast && ref);
    const uint32_t span = 3000; /* about three page tables */
    uint32_t va = ptl__syspte_reserve(fast, PTL_SYSTEM_PTE_SPACE, span, PTL_KIND_OTHER, 0);
    assert_int_equal(ptl__syspte_reserve(ref, PTL_SYSTEM_PTE_SPACE, span, PTL_KIND_OTHER, 0), va);
    assert_true(va != 0);
    uint32_t frames[64];
    for (int i = 0; i < 64; i++) {
        frames[i] = ptl__phys_alloc(&fast->phys, PTL_USE_NONPAGED_POOL, 0);
        assert_int_equal(ptl__phys_alloc(&ref->phys, PTL_USE_NONPAGED_POOL, 0), frames[i]);
    }
    for (int op = 0; op < 400; op++) {
        uint32_t n = 1 + ptltest_rnd() % (ptltest_rnd() % 4 == 0 ? span : 40);
        uint32_t at = ptltest_rnd() % (span - n + 1), first, step;
        switch (ptltest_rnd() % 4) {
        case 0: /* device memory, contiguous */
            first = ptl__pte_make((uint32_t)(APERTURE >> 12) + ptltest_rnd() % 256, 1, 0,
                                  ptltest_rnd() % 3);
            step = PTL_PAGE_SIZE;
            break;
        case 1: /* RAM frames in use, contiguous from one of ours */
            n = n > 32 ? 32 : n;
            at = at > span - n ? span - n : at;
            first = ptl__pte_make(frames[ptltest_rnd() % 32], ptltest_rnd() & 1, 0, 1);
            step = PTL_PAGE_SIZE;
            break;
        case 2: /* the same RAM frame n times */
            first = ptl__pte_make(frames[ptltest_rnd() % 64], 1, 0, 1);
            step = 0;
            break;
        default: /* clear */
            first = 0;
            step = 0;
            break;
        }
        uint32_t v = va + at * PTL_PAGE_SIZE;
        /* fill the fast machine's TLB with some of the run first */
        for (uint32_t i = 0; i < n && i < 8; i++) {
            uint32_t pte;
            if (ptl__pte_read(fast, 0, v + i * PTL_PAGE_SIZE, &pte) == 0 && (pte & PTL_PTE_VALID)) {
                uint8_t byte;
                ptl__mmu_copy(fast, v + i * PTL_PAGE_SIZE, &byte, 1, 0, 0, 0);
            }
        }
        ptl__pte_write_run(fast, 0, v, n, first, step);
        for (uint32_t i = 0; i < n; i++)
            ptl__pte_write(ref, 0, v + i * PTL_PAGE_SIZE, first + i * step);
        for (uint32_t i = 0; i < PTL_TLB_ENTRIES; i++) {
            uint32_t tag = fast->mmu.tlb[i].tag;
            assert_false(tag && tag - 1 - (v >> 12) < n); /* nothing of the run is cached */
        }
        if (op % 50 == 49 || op == 399) {
            for (uint32_t i = 0; i < span; i++) {
                uint32_t a = 0, b = 0;
                assert_int_equal(ptl__pte_read(fast, 0, va + i * PTL_PAGE_SIZE, &a), 0);
                assert_int_equal(ptl__pte_read(ref, 0, va + i * PTL_PAGE_SIZE, &b), 0);
                assert_int_equal(a, b);
            }
            for (int i = 0; i < 64; i++) {
                const ptl__pfn *x = &fast->phys.pfn[frames[i]], *y = &ref->phys.pfn[frames[i]];
                assert_int_equal(x->ShareCount, y->ShareCount);
                assert_int_equal(x->ReferenceCount, y->ReferenceCount);
                assert_int_equal(x->PteAddress, y->PteAddress);
                assert_int_equal(x->PteFrame, y->PteFrame);
            }
            assert_int_equal(fast->pte.writes, ref->pte.writes);
            assert_int_equal(ptl_check(fast), 0);
            assert_int_equal(ptl_check(ref), 0);
        }
    }
    ptl_shutdown(fast);
    ptl_shutdown(ref);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_selfmap_formula), cmocka_unit_test(test_selfmap_random),
        cmocka_unit_test(test_map_noncached),   cmocka_unit_test(test_map_cached),
        cmocka_unit_test(test_map_offset),      cmocka_unit_test(test_user_pte),
        cmocka_unit_test(test_write_run_twin),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
